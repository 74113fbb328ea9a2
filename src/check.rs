//! `lethe check`: everything that can be found wrong without a request.
//!
//! Loading the config already refuses what makes it unusable (an unknown
//! connector, a missing setting, a lease shorter than twice a call timeout, a
//! processor name that cannot be a file name…). This module finds the rest,
//! each as one [`Problem`] naming the file, the processor and what is wrong:
//!
//! - templates (connector calls, auth, processor settings) that read a
//!   variable the call will not have (`{{ subject.emial }}`, a setting the
//!   processor does not give, a `vars.x` no call extracts), found statically
//!   with minijinja's undeclared-variables analysis, so branches not taken
//!   are checked too; and an unknown filter, test or function, found by
//!   rendering against a sample context;
//! - a setting (or secret) the processor gives that its connector does not use;
//! - a workflow that selects no processor, or whose `kind` is not the kind its
//!   file is named after (`export.toml` with `kind = "erasure"`);
//! - `[intake]` configured while its environment variables are unset.
//!
//! Then it reaches each processor ([`probe`]) with a short timeout per probe,
//! saying on stderr which processors it is still waiting on.

use crate::config::{Config, ProcessorConfig};
use crate::connectors::definition::{Auth, Call, ConnectorDef};
use crate::connectors::template;
use crate::connectors::{ConnectorError, Evidence};
use crate::engine::Engine;
use minijinja::ErrorKind;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// One thing `lethe check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    /// The file it is in (config, connector or workflow file).
    pub file: String,
    /// The processor it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// The key in that file (`actions.erase.calls[0].path`), if known.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = &self.processor {
            write!(f, ": processor `{p}`")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// The identities a template may read as `subject.*`.
const SUBJECT_FIELDS: [&str; 5] = ["email", "email_as_given", "phone", "customer_id", "name"];
/// `request.*`.
const REQUEST_FIELDS: [&str; 2] = ["id", "idempotency_key"];

/// Settings native connectors read besides the ones their file declares.
fn native_settings(native: &str) -> &'static [&'static str] {
    match native {
        "s3" => &[
            "bucket",
            "prefix_template",
            "region",
            "export_inline_max_bytes",
        ],
        "manual" => &[
            "contact",
            "remind_every",
            "instructions",
            "smtp_from",
            "smtp_tls",
        ],
        _ => &[],
    }
}

/// What a template can see where it is rendered.
struct Scope<'a> {
    /// `subject.*` and `request.*` (not in auth headers and signing keys).
    subject: bool,
    /// `settings.*`: the processor's settings.
    settings: Option<&'a BTreeSet<String>>,
    /// `secrets.*`: the processor's secrets.
    secrets: Option<&'a BTreeSet<String>>,
    /// `vars.*`: what the connector's calls extract.
    vars: Option<&'a BTreeSet<String>>,
    /// `item` (a `for_each` element: any shape).
    item: bool,
    /// `set.*`: a rectification's new values (only in `rectify` calls).
    set: bool,
}

impl Scope<'_> {
    fn roots(&self) -> Vec<&'static str> {
        let mut r = vec![];
        if self.subject {
            r.extend(["subject", "request"]);
        }
        if self.settings.is_some() {
            r.push("settings");
        }
        if self.secrets.is_some() {
            r.push("secrets");
        }
        if self.vars.is_some() {
            r.push("vars");
        }
        if self.item {
            r.push("item");
        }
        if self.set {
            r.push("set");
        }
        r
    }

    /// Why `path` (`subject.emial`) is not defined here, or None if it is.
    fn problem(&self, path: &str) -> Option<String> {
        let mut parts = path.splitn(3, '.');
        let root = parts.next().unwrap_or("");
        let field = parts.next();
        let listed = |names: &mut dyn Iterator<Item = &str>| {
            let v: Vec<&str> = names.collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let within = |set: &BTreeSet<String>, what: &str| match field {
            Some(f) if !set.contains(f) => Some(format!(
                "uses `{root}.{f}`, which is undefined: {what} (defined: {})",
                listed(&mut set.iter().map(String::as_str))
            )),
            _ => None,
        };
        match root {
            "subject" | "request" if self.subject => {
                let known: &[&str] = if root == "subject" {
                    &SUBJECT_FIELDS
                } else {
                    &REQUEST_FIELDS
                };
                match field {
                    Some(f) if !known.contains(&f) => Some(format!(
                        "uses `{root}.{f}`, which is undefined (defined: {})",
                        listed(&mut known.iter().copied())
                    )),
                    _ => None,
                }
            }
            "settings" => self
                .settings
                .map(|s| within(s, "the processor gives no such setting"))
                .unwrap_or_else(|| Some(self.not_here(root))),
            "secrets" => self
                .secrets
                .map(|s| within(s, "the processor gives no such secret"))
                .unwrap_or_else(|| Some(self.not_here(root))),
            "vars" => self
                .vars
                .map(|s| within(s, "no call of the connector extracts it"))
                .unwrap_or_else(|| Some(self.not_here(root))),
            "item" if self.item => None,
            "set" if self.set => match field {
                Some(f) if !crate::connectors::definition::IDENTITY_NAMES.contains(&f) => {
                    Some(format!(
                        "uses `set.{f}`, which is undefined (defined: {})",
                        crate::connectors::definition::IDENTITY_NAMES.join(", ")
                    ))
                }
                _ => None,
            },
            _ => Some(self.not_here(path)),
        }
    }

    fn not_here(&self, path: &str) -> String {
        format!(
            "uses `{path}`, which is undefined here (defined: {})",
            self.roots().join(", ")
        )
    }

    /// A context holding every variable `vars` names (each `"sample"`), to
    /// render against to find unknown filters, tests and functions.
    fn sample(&self, vars: &BTreeSet<String>) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for path in vars {
            if self.problem(path).is_some() {
                continue;
            }
            let segs: Vec<&str> = path.split('.').collect();
            let mut at = &mut root;
            for (i, seg) in segs.iter().enumerate() {
                let last = i + 1 == segs.len();
                let entry = at.entry(seg.to_string()).or_insert_with(|| {
                    if last {
                        serde_json::Value::String("sample".into())
                    } else {
                        serde_json::Value::Object(Default::default())
                    }
                });
                if last {
                    break;
                }
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                match entry {
                    serde_json::Value::Object(m) => at = m,
                    _ => break,
                }
            }
        }
        serde_json::Value::Object(root)
    }
}

/// Which environment renders a template.
#[derive(Clone, Copy)]
enum Kind {
    /// Headers, query values, bodies, settings.
    Text,
    /// A call's URL path.
    Path,
    /// A `for_each_if` expression.
    Expression,
}

/// The problems of one template (or expression) `source` at `key`.
fn check_template(
    source: &str,
    kind: Kind,
    scope: &Scope<'_>,
    at: &dyn Fn(&str, String) -> Problem,
    key: &str,
    out: &mut Vec<Problem>,
) {
    let env = match kind {
        Kind::Path => template::path_environment(),
        _ => template::environment(),
    };
    let expression = matches!(kind, Kind::Expression);
    let vars = template::variables(&env, source, expression);
    for v in &vars {
        if let Some(p) = scope.problem(v) {
            out.push(at(key, p));
        }
    }
    // Filters, tests and functions are looked up when rendering: render
    // against a sample context to find the unknown ones.
    let ctx = scope.sample(&vars);
    let result = if expression {
        env.compile_expression(source)
            .and_then(|e| e.eval(&ctx))
            .map(|_| ())
    } else {
        env.render_str(source, &ctx).map(|_| ())
    };
    if let Err(e) = result {
        let what = match e.kind() {
            ErrorKind::UnknownFilter => "filter",
            ErrorKind::UnknownTest => "test",
            ErrorKind::UnknownFunction => "function",
            _ => return,
        };
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        out.push(at(
            key,
            format!(
                "uses an unknown {what}{detail} (filters: lower, upper, urlencode, md5, sha256, base64, tojson, raw_path, checked_path and minijinja's built-ins)"
            ),
        ));
    }
}

/// Every template of a connector's calls, with its key.
fn call_templates(prefix: &str, c: &Call) -> Vec<(String, String, Kind)> {
    let mut out = vec![(format!("{prefix}.path"), c.path.clone(), Kind::Path)];
    for (k, v) in &c.query {
        out.push((format!("{prefix}.query.{k}"), v.clone(), Kind::Text));
    }
    for (k, v) in &c.headers {
        out.push((format!("{prefix}.headers.{k}"), v.clone(), Kind::Text));
    }
    if let Some(j) = &c.json {
        out.push((format!("{prefix}.json"), j.clone(), Kind::Text));
    }
    for (k, v) in c.form.iter().flatten() {
        out.push((format!("{prefix}.form.{k}"), v.clone(), Kind::Text));
    }
    if let Some(x) = &c.for_each_if {
        out.push((format!("{prefix}.for_each_if"), x.clone(), Kind::Expression));
    }
    out
}

/// The problems of one processor and its connector.
fn processor_problems(config: &Config, p: &ProcessorConfig, def: &ConnectorDef) -> Vec<Problem> {
    let mut out = vec![];
    let config_file = config.path.display().to_string();
    let in_config = |key: &str, problem: String| Problem {
        file: config_file.clone(),
        processor: Some(p.name.clone()),
        key: key.to_string(),
        problem,
    };
    let idx = config
        .processors
        .iter()
        .position(|q| q.name == p.name)
        .unwrap_or(0);

    // Settings and secrets the connector does not use: most often a typo.
    let mut used_settings: BTreeSet<&str> = def.settings.iter().map(String::as_str).collect();
    let mut check_secrets = true;
    if let Some(native) = &def.native {
        used_settings.extend(native_settings(native));
        // Native connectors take optional secrets of their own.
        check_secrets = false;
    }
    for k in p.settings.keys() {
        if !used_settings.contains(k.as_str()) {
            out.push(in_config(
                &format!("processor[{idx}].settings.{k}"),
                format!(
                    "connector `{}` has no setting `{k}` (its settings: {})",
                    def.name,
                    used_settings.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if check_secrets {
        for k in p.secrets.keys() {
            if !def.secrets.contains(k) {
                out.push(in_config(
                    &format!("processor[{idx}].secrets.{k}"),
                    format!(
                        "connector `{}` has no secret `{k}` (its secrets: {})",
                        def.name,
                        def.secrets.join(", ")
                    ),
                ));
            }
        }
    }

    // A setting may be a template over the subject.
    let subject_only = Scope {
        subject: true,
        settings: None,
        secrets: None,
        vars: None,
        item: false,
        set: false,
    };
    for (k, v) in &p.settings {
        if v.contains("{{") || v.contains("{%") {
            check_template(
                v,
                Kind::Text,
                &subject_only,
                &in_config,
                &format!("processor[{idx}].settings.{k}"),
                &mut out,
            );
        }
    }

    if def.native.is_some() {
        return out;
    }
    let settings: BTreeSet<String> = p.settings.keys().cloned().collect();
    let secrets: BTreeSet<String> = p.secrets.keys().cloned().collect();
    let mut vars = BTreeSet::new();
    let actions = [
        ("lookup", &def.actions.lookup),
        ("export", &def.actions.export),
        ("erase", &def.actions.erase),
        ("verify", &def.actions.verify),
        ("purge", &def.actions.purge),
        ("object", &def.actions.object),
        ("rectify", &def.actions.rectify),
    ];
    for (_, a) in &actions {
        for c in a.iter().flat_map(|a| a.calls.iter()) {
            vars.extend(c.extract.keys().cloned());
        }
    }
    let in_connector = |key: &str, problem: String| Problem {
        file: def.file.clone(),
        processor: Some(p.name.clone()),
        key: key.to_string(),
        problem,
    };
    // Auth and signing see only the processor's settings and secrets.
    let auth_scope = Scope {
        subject: false,
        settings: Some(&settings),
        secrets: Some(&secrets),
        vars: None,
        item: false,
        set: false,
    };
    let mut auth: Vec<(String, String)> = match &def.auth {
        Auth::None => vec![],
        Auth::Basic { username, password } => vec![
            ("auth.username".into(), username.clone()),
            ("auth.password".into(), password.clone()),
        ],
        Auth::Bearer { token } => vec![("auth.token".into(), token.clone())],
        Auth::Header { headers } => headers
            .iter()
            .map(|(k, v)| (format!("auth.headers.{k}"), v.clone()))
            .collect(),
    };
    if let Some(s) = &def.sign {
        auth.push(("sign.secret".into(), s.secret.clone()));
    }
    for (key, t) in &auth {
        check_template(t, Kind::Text, &auth_scope, &in_connector, key, &mut out);
    }
    let call_scope = Scope {
        subject: true,
        settings: Some(&settings),
        secrets: Some(&secrets),
        vars: Some(&vars),
        item: true,
        set: false,
    };
    let mut calls: Vec<(String, &Call)> = vec![];
    if let Some(c) = &def.check {
        calls.push(("check".into(), c));
    }
    for (name, a) in &actions {
        for (i, c) in a.iter().flat_map(|a| a.calls.iter()).enumerate() {
            calls.push((format!("actions.{name}.calls[{i}]"), c));
        }
    }
    let rectify_scope = Scope {
        set: true,
        ..call_scope
    };
    for (prefix, c) in calls {
        let scope = if prefix.starts_with("actions.rectify.") {
            &rectify_scope
        } else {
            &call_scope
        };
        for (key, t, kind) in call_templates(&prefix, c) {
            check_template(&t, kind, scope, &in_connector, &key, &mut out);
        }
    }
    out
}

/// Everything `lethe check` can find wrong without a request or a network.
pub fn static_problems(config: &Config) -> Vec<Problem> {
    let mut out = vec![];
    for p in &config.processors {
        if let Some(def) = config.registry.get(&p.connector) {
            out.extend(processor_problems(config, p, def));
        }
    }
    let config_file = config.path.display().to_string();
    for (name, wf) in &config.workflows.by_name {
        let file = config
            .workflows
            .files
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("workflow `{name}`"));
        let selected = config
            .processors
            .iter()
            .any(|p| wf.wave_of(&p.name, config.category(p)).is_some());
        if !selected {
            out.push(Problem {
                file: file.clone(),
                processor: None,
                key: "phase".into(),
                problem: format!(
                    "workflow `{name}` selects no processor of {config_file}: its requests would do nothing"
                ),
            });
        }
        for kind in crate::domain::RequestKind::ALL {
            if name == kind.as_str() && wf.kind != kind {
                out.push(Problem {
                    file: file.clone(),
                    processor: None,
                    key: "kind".into(),
                    problem: format!(
                        "kind = \"{}\" in the file of the default {kind} workflow: {kind} requests could not be filed (rename the file, or set kind = \"{kind}\")",
                        wf.kind
                    ),
                });
            }
        }
    }
    if config.intake_enabled {
        let i = &config.intake;
        let mut unset = false;
        for (key, var) in [
            ("intake.webhook_secret_env", &i.webhook_secret_env),
            ("intake.api_token_env", &i.api_token_env),
            (
                "intake.callback_signing_key_env",
                &i.callback_signing_key_env,
            ),
        ] {
            if std::env::var(var).map_or(true, |v| v.trim().is_empty()) {
                unset = true;
                out.push(Problem {
                    file: config_file.clone(),
                    processor: None,
                    key: key.into(),
                    problem: format!(
                        "environment variable {var} is not set: `lethe daemon` will refuse to start while [intake] is configured"
                    ),
                });
            }
        }
        if !unset {
            if let Err(e) = crate::intake::callback_key(config) {
                out.push(Problem {
                    file: e.file,
                    processor: None,
                    key: e.key,
                    problem: e.reason,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The result of reaching one processor.
#[derive(Debug)]
pub struct Probe {
    /// The processor.
    pub processor: String,
    /// Whether it is a manual processor (no API to reach).
    pub manual: bool,
    /// What its check call answered.
    pub result: Result<Evidence, ConnectorError>,
    /// The probe got no answer within the timeout.
    pub timed_out: bool,
}

/// Reach every processor at once, each with at most `timeout`; on stderr,
/// which ones are being checked and, every `tick`, which are still awaited.
pub async fn probe(engine: &Arc<Engine>, timeout: Duration, tick: Duration) -> Vec<Probe> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let config = Arc::clone(&engine.config);
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut running = FuturesUnordered::new();
    for p in &config.processors {
        let manual = config
            .registry
            .get(&p.connector)
            .is_some_and(|d| d.native.as_deref() == Some("manual"));
        let connector = engine.connector(&p.name).cloned();
        let name = p.name.clone();
        eprintln!(
            "checking {name} ({})…",
            if manual {
                "manual: no API".to_string()
            } else {
                format!("at most {}", humantime::format_duration(timeout))
            }
        );
        pending.insert(name.clone());
        running.push(async move {
            let Some(c) = connector else {
                let result = Err(ConnectorError::permanent(format!(
                    "processor `{name}` has no connector"
                )));
                return Probe {
                    processor: name,
                    manual,
                    result,
                    timed_out: false,
                };
            };
            match tokio::time::timeout(timeout, c.check()).await {
                Ok(result) => Probe {
                    processor: name,
                    manual,
                    result,
                    timed_out: false,
                },
                Err(_) => Probe {
                    result: Err(ConnectorError::transient(format!(
                        "no answer within {} (the probe's timeout): is base_url reachable?",
                        humantime::format_duration(timeout)
                    ))),
                    processor: name,
                    manual,
                    timed_out: true,
                },
            }
        });
    }
    let mut done: BTreeMap<String, Probe> = BTreeMap::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.tick().await;
    while !running.is_empty() {
        tokio::select! {
            Some(p) = running.next() => {
                pending.remove(&p.processor);
                done.insert(p.processor.clone(), p);
            }
            _ = ticker.tick() => {
                let names: Vec<&str> = pending.iter().map(String::as_str).collect();
                eprintln!("waiting on {}…", names.join(", "));
            }
        }
    }
    // In the config's order.
    config
        .processors
        .iter()
        .filter_map(|p| done.remove(&p.name))
        .collect()
}

/// How one probe reads in the text report.
pub fn describe(p: &Probe) -> String {
    match &p.result {
        Ok(ev) => match (ev.status, &ev.note) {
            (Some(s), Some(n)) => format!("ok (HTTP {s}; {n})"),
            (Some(s), None) => format!("ok (HTTP {s})"),
            (None, Some(n)) => format!("ok ({n})"),
            (None, None) if p.manual => "ok (manual: no API to reach)".into(),
            (None, None) => "ok".into(),
        },
        Err(e) => format!("{}: {}", e.class.as_str(), e.message),
    }
}

/// The `--json` entry of one probe (the fields `processor`, `ok`, `status`,
/// `error_class`, `error` are stable; `manual`, `note` and `timed_out` were added).
pub fn probe_json(p: &Probe) -> serde_json::Value {
    match &p.result {
        Ok(ev) => serde_json::json!({
            "processor": p.processor,
            "ok": true,
            "status": ev.status,
            "note": ev.note,
            "manual": p.manual,
        }),
        Err(e) => serde_json::json!({
            "processor": p.processor,
            "ok": false,
            "error_class": e.class.as_str(),
            "error": e.message,
            "status": e.status,
            "manual": p.manual,
            "timed_out": p.timed_out,
        }),
    }
}

/// `lethe check`: the config was validated by loading; report the
/// [`static_problems`], the store, the identity key, then reach every
/// processor. Exit code 2 when a problem was found, 1 when the store, the key
/// or a processor is not right, else 0.
pub async fn run(config: Config, json: bool, timeout: Duration) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    let problems = static_problems(&config);
    // A SQLite file that does not exist yet is not created by a check: the
    // first command that writes creates it.
    let missing = config.sqlite_file().filter(|f| !f.exists());
    let store_note = missing.as_ref().map(|f| {
        format!(
            "{} does not exist yet: the first `lethe request`, `lethe run` or `lethe daemon` creates it",
            f.display()
        )
    });
    let url = if missing.is_some() {
        "sqlite::memory:".to_string()
    } else {
        config.store.url.clone()
    };
    let store = crate::store::open(&url)
        .await
        .context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    let keys = crate::crypto::Keys::from_env(&config.store.key_env)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let e = Engine::new(
        Arc::new(config),
        store,
        crate::crypto::Keys::from_base64("check", &crate::crypto::Keys::generate_base64())?,
    )?;
    let probes = probe(&e, timeout, Duration::from_secs(2)).await;
    let reached = probes.iter().all(|p| p.result.is_ok());
    let ok = problems.is_empty() && reached && keys.is_ok();
    if json {
        let v = serde_json::json!({
            "ok": ok,
            "store": serde_json::Value::Null,
            "store_note": store_note,
            "key": keys.as_ref().err(),
            "processors": probes.iter().map(probe_json).collect::<Vec<_>>(),
            "problems": problems,
            "schedules": schedules_json(&e.config),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("config loaded: {}", e.config.path.display());
        match &store_note {
            Some(n) => println!("store: {n}"),
            None => println!("store ok"),
        }
        match &keys {
            Ok(()) => println!("identity key ok ({})", e.config.store.key_env),
            Err(m) => println!("identity key: {m}"),
        }
        for p in &probes {
            println!("{:<18} {}", p.processor, describe(p));
        }
        for (sc, p, wf) in e.config.schedules() {
            println!(
                "schedule {} @ {}: every {}, removes what is older than {} (workflow `{wf}`)",
                sc.name,
                p.name,
                crate::report::human_ms(duration_ms(sc.every.get())),
                crate::report::human_ms(duration_ms(sc.older_than.get())),
            );
        }
        for p in &problems {
            println!("problem: {p}");
        }
        if !problems.is_empty() {
            println!(
                "{} problem(s): fix them before filing requests",
                problems.len()
            );
        }
    }
    Ok(if !problems.is_empty() {
        2
    } else if ok {
        0
    } else {
        1
    })
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The retention schedules (already validated at load), for `check --json`.
fn schedules_json(config: &Config) -> serde_json::Value {
    config
        .schedules()
        .into_iter()
        .map(|(sc, p, wf)| {
            serde_json::json!({
                "name": sc.name,
                "processor": p.name,
                "workflow": wf,
                "older_than_ms": duration_ms(sc.older_than.get()),
                "every_ms": duration_ms(sc.every.get()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn no_built_in_connector_has_a_problem_with_exactly_its_declared_settings() {
        let config = Config::parse(Path::new("lethe.toml"), crate::config::EXAMPLE).unwrap();
        for name in config.registry.names() {
            let def = config.registry.get(name).unwrap();
            let p = ProcessorConfig {
                name: "p".into(),
                connector: name.to_string(),
                base_url: None,
                settings: def
                    .settings
                    .iter()
                    .map(|s| (s.clone(), "x".to_string()))
                    .collect(),
                secrets: def
                    .secrets
                    .iter()
                    .map(|s| (s.clone(), "X".to_string()))
                    .collect(),
                concurrency: None,
                soft_delete_window: None,
                rate_per_second: None,
                category: None,
                timeout: None,
            };
            let problems = processor_problems(&config, &p, def);
            assert!(problems.is_empty(), "{name}: {problems:#?}");
        }
    }

    #[test]
    fn a_misspelt_identity_in_a_branch_not_taken_is_found() {
        let settings = BTreeSet::new();
        let scope = Scope {
            subject: true,
            settings: Some(&settings),
            secrets: None,
            vars: None,
            item: true,
            set: false,
        };
        let mut out = vec![];
        let at = |k: &str, p: String| Problem {
            file: "f".into(),
            processor: None,
            key: k.into(),
            problem: p,
        };
        check_template(
            "{% if false %}{{ subject.emial }}{% endif %}{{ item.id | lower }}",
            Kind::Text,
            &scope,
            &at,
            "k",
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(out[0].problem.contains("subject.emial"), "{out:#?}");
    }
}
