//! `lethe.toml`: parsed strictly, validated against the connector definitions
//! and workflows, with errors that name the file, the key and the reason.
//!
//! Secrets never appear in the file, only the names of environment variables.

use crate::connectors::http::ProcessorSpec;
use crate::connectors::{Category, Registry};
use crate::domain::workflow::Workflows;
use crate::domain::HumanDuration;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config that failed to load. Always exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The key (may be a line number for syntax errors).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: `{}`: {}", self.file, self.key, self.reason)
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://lethe.db` or `postgres://…`.
    #[serde(default = "d_url")]
    pub url: String,
    /// The env var holding the identity encryption key (32 bytes, base64).
    #[serde(default = "d_key_env")]
    pub key_env: String,
    /// How long the sealed identities of a closed request are kept once no
    /// step needs them; then they are destroyed (crypto-shredding).
    #[serde(default = "d_identity_retention")]
    pub identity_retention: HumanDuration,
    /// Env vars of older master keys, still accepted to open (and re-wrap,
    /// `lethe key rotate`) data keys they wrapped.
    #[serde(default)]
    pub old_key_envs: Vec<String>,
    /// The age recipient (`age1…`) export files are encrypted to.
    #[serde(default)]
    pub export_recipient: Option<String>,
    /// Write export files as plaintext JSON (only if no recipient is set).
    #[serde(default)]
    pub export_plaintext: bool,
    /// How long export files are kept after their request closed; then deleted.
    #[serde(default = "d_export_retention")]
    pub export_retention: HumanDuration,
}

fn d_url() -> String {
    "sqlite://lethe.db".into()
}
fn d_key_env() -> String {
    "LETHE_KEY".into()
}
fn d_identity_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}
fn d_export_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: d_url(),
            key_env: d_key_env(),
            identity_retention: d_identity_retention(),
            old_key_envs: vec![],
            export_recipient: None,
            export_plaintext: false,
            export_retention: d_export_retention(),
        }
    }
}

/// `[intake]` (the HTTP server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSection {
    /// Listen address.
    #[serde(default = "d_listen")]
    pub listen: String,
    /// Env var with the webhook HMAC secret.
    #[serde(default = "d_webhook")]
    pub webhook_secret_env: String,
    /// Env var with the API bearer token.
    #[serde(default = "d_token")]
    pub api_token_env: String,
    /// The `controller_id` lethe answers OpenDSR controllers with.
    #[serde(default = "d_controller")]
    pub opendsr_controller_id: String,
    /// How undelivered status callbacks are retried (backoff from `backon`).
    #[serde(default)]
    pub callback_retry: crate::domain::retry::RetryPolicy,
    /// Env var with the Ed25519 key (32 bytes, base64) that signs status
    /// callbacks; `lethe intake key` prints the public key receivers pin.
    #[serde(default = "d_callback_key")]
    pub callback_signing_key_env: String,
    /// Origins (`scheme://host[:port|:*]`) callbacks may go to although they
    /// are plain http or internal addresses (see `intake::target`).
    #[serde(default)]
    pub callback_allow: Vec<String>,
}

fn d_callback_key() -> String {
    "LETHE_CALLBACK_KEY".into()
}

fn d_controller() -> String {
    "default".into()
}

fn d_listen() -> String {
    "127.0.0.1:8080".into()
}
fn d_webhook() -> String {
    "LETHE_WEBHOOK_SECRET".into()
}
fn d_token() -> String {
    "LETHE_API_TOKEN".into()
}

impl Default for IntakeSection {
    fn default() -> Self {
        IntakeSection {
            listen: d_listen(),
            webhook_secret_env: d_webhook(),
            api_token_env: d_token(),
            opendsr_controller_id: d_controller(),
            callback_retry: Default::default(),
            callback_signing_key_env: d_callback_key(),
            callback_allow: Vec::new(),
        }
    }
}

/// `[dashboard]`: the web dashboard that `lethe daemon` serves beside the
/// intake (only with `[intake]`). Logging in takes the password whose hash is
/// here, or the API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSection {
    /// Argon2 hash (PHC string) of the dashboard password, from
    /// `lethe dashboard hash-password`; without it only the API token logs in.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only):
    /// set it when the dashboard is reached through a TLS proxy.
    #[serde(default)]
    pub secure_cookie: bool,
    /// How long a login lasts.
    #[serde(default = "d_session_ttl")]
    pub session_ttl: HumanDuration,
    /// Env var with the key (at least 32 bytes of text) that signs session
    /// cookies; without it a random key is made at each start, so a restart
    /// logs everyone out and daemons behind one address do not share logins.
    #[serde(default)]
    pub session_key_env: Option<String>,
}

fn d_session_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(8 * 3600))
}

impl Default for DashboardSection {
    fn default() -> Self {
        DashboardSection {
            password_hash: None,
            secure_cookie: false,
            session_ttl: d_session_ttl(),
            session_key_env: None,
        }
    }
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Most steps in flight at once in this process.
    #[serde(default = "d_conc")]
    pub concurrency: u32,
    /// How long a claimed step is leased before another worker may take it
    /// over. Must be at least twice the longest call timeout of any processor,
    /// so a call is only ever sent while the lease covers all of it (a stalled
    /// worker's call has ended before another can start). Unset (or `"0s"`):
    /// the larger of 60 s and twice the longest call timeout.
    #[serde(default = "d_lease")]
    pub lease: HumanDuration,
    /// Longest sleep when nothing is due (new requests from other processes are seen within it).
    #[serde(default = "d_idle")]
    pub idle_poll: HumanDuration,
    /// Pause a processor after this many transient failures in a row (across requests).
    #[serde(default = "d_pause_after")]
    pub pause_after: u32,
    /// How long a paused processor is left alone before one call probes it again.
    #[serde(default = "d_pause_for")]
    pub pause_for: HumanDuration,
}

fn d_pause_after() -> u32 {
    10
}
fn d_pause_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn d_conc() -> u32 {
    64
}
/// `lease` unset: chosen from the processors' timeouts at load.
fn d_lease() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

/// The longest processor name (it names export files and metric labels).
const MAX_PROCESSOR_NAME: usize = 64;

/// The shortest lease chosen when `lease` is unset.
const MIN_AUTO_LEASE: Duration = Duration::from_secs(60);
fn d_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            concurrency: d_conc(),
            lease: d_lease(),
            idle_poll: d_idle(),
            pause_after: d_pause_after(),
            pause_for: d_pause_for(),
        }
    }
}

/// `[audit]`: signed checkpoints of the audit chains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How often the elected daemon writes a checkpoint (a signed Merkle root
    /// over the chain heads that changed).
    #[serde(default = "d_checkpoint_every")]
    pub checkpoint_every: HumanDuration,
    /// Env var holding a base64 Ed25519 seed (32 bytes) that signs
    /// checkpoints; unset: a key derived from the master key (`[store] key_env`).
    #[serde(default)]
    pub signing_key_env: Option<String>,
}

fn d_checkpoint_every() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            checkpoint_every: d_checkpoint_every(),
            signing_key_env: None,
        }
    }
}

/// One `[[processor]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// The name used in reports (`newsletter`).
    pub name: String,
    /// A connector definition name.
    pub connector: String,
    /// The API base URL (defaults to the connector's).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Connector settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Secret name → env var name.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Override the connector's concurrency limit.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Override the connector's soft-delete window (e.g. Dropbox plans differ).
    #[serde(default)]
    pub soft_delete_window: Option<HumanDuration>,
    /// Override the connector's rate limit (calls per second).
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// Override the connector's category (e.g. a `manual` processor that is an SMS provider).
    #[serde(default)]
    pub category: Option<Category>,
    /// Override the connector's call timeout (`[limits] timeout`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    connectors_dir: Option<PathBuf>,
    #[serde(default)]
    workflows_dir: Option<PathBuf>,
    #[serde(default)]
    export_dir: Option<PathBuf>,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    intake: Option<IntakeSection>,
    #[serde(default)]
    dashboard: DashboardSection,
    #[serde(default)]
    worker: WorkerSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default, rename = "processor")]
    processors: Vec<ProcessorConfig>,
    #[serde(default)]
    sla: SlaSection,
    #[serde(default)]
    suppression: SuppressionSection,
}

/// `[sla]`: reporting requests that near their deadline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSection {
    /// A request is reported (once) this long before its `due_at`.
    #[serde(default = "d_warn_before")]
    pub warn_before: HumanDuration,
    /// Optional: the report is also POSTed here (signed like status callbacks, via the outbox).
    #[serde(default)]
    pub webhook_url: Option<String>,
}

fn d_warn_before() -> HumanDuration {
    HumanDuration(Duration::from_secs(2 * 86_400))
}

impl Default for SlaSection {
    fn default() -> Self {
        SlaSection {
            warn_before: d_warn_before(),
            webhook_url: None,
        }
    }
}

/// `[suppression]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionSection {
    /// How often the daemon runs `lethe suppression check` (a durable
    /// schedule). Absent: never (run it from the CLI).
    #[serde(default)]
    pub check_every: Option<HumanDuration>,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub path: PathBuf,
    /// `[store]`.
    pub store: StoreSection,
    /// `[intake]`.
    pub intake: IntakeSection,
    /// Whether the file has an `[intake]` section: only then does `lethe daemon` serve HTTP.
    pub intake_enabled: bool,
    /// `[dashboard]` (served with the intake).
    pub dashboard: DashboardSection,
    /// `[worker]`.
    pub worker: WorkerSection,
    /// `[audit]`.
    pub audit: AuditSection,
    /// Processors, in file order.
    pub processors: Vec<ProcessorConfig>,
    /// Where export files go.
    pub export_dir: PathBuf,
    /// Known connectors.
    pub registry: Registry,
    /// Known workflows.
    pub workflows: Workflows,
    /// `[sla]`.
    pub sla: SlaSection,
    /// `[suppression]`.
    pub suppression: SuppressionSection,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            reason: format!("cannot read: {e} (run `lethe init` to write an example)"),
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate config text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, reason: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            err(
                &line.map(|l| format!("line {l}")).unwrap_or_default(),
                e.message().trim().to_string(),
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let registry = Registry::load(raw.connectors_dir.as_ref().map(resolve).as_deref())
            .map_err(|e| ConfigError {
                file: e.file,
                key: e.key,
                reason: e.reason,
            })?;
        let workflows = Workflows::load(raw.workflows_dir.as_ref().map(resolve).as_deref())
            .map_err(|e| ConfigError {
                file: e.file,
                key: e.key,
                reason: e.reason,
            })?;

        if !(raw.store.url.starts_with("sqlite:")
            || raw.store.url.starts_with("postgres://")
            || raw.store.url.starts_with("postgresql://"))
        {
            return Err(err(
                "store.url",
                format!(
                    "`{}` is neither sqlite://FILE nor postgres://…",
                    raw.store.url
                ),
            ));
        }
        let mut raw = raw;
        // A relative SQLite file is relative to this file's directory, like the
        // directory settings: `lethe --config /srv/x/lethe.toml list` run from
        // anywhere opens /srv/x/lethe.db.
        raw.store.url = resolve_sqlite_url(&raw.store.url, &base);
        check_env_name(&raw.store.key_env).map_err(|r| err("store.key_env", r))?;
        for v in &raw.store.old_key_envs {
            check_env_name(v).map_err(|r| err("store.old_key_envs", r))?;
        }
        if let Some(r) = &raw.store.export_recipient {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(err(
                    "store.export_recipient",
                    "not an age X25519 recipient (age1…): generate one with `age-keygen` and paste its public key".to_string(),
                ));
            }
            if raw.store.export_plaintext {
                return Err(err(
                    "store.export_plaintext",
                    "export_plaintext = true contradicts export_recipient: keep one".to_string(),
                ));
            }
        }
        if let Some(u) = &raw.sla.webhook_url {
            match url::Url::parse(u) {
                Ok(p) if p.scheme() == "https" || p.scheme() == "http" => {}
                _ => {
                    return Err(err(
                        "sla.webhook_url",
                        format!("`{u}` is not an http(s) URL"),
                    ))
                }
            }
        }
        if raw
            .suppression
            .check_every
            .is_some_and(|d| d.get().is_zero())
        {
            return Err(err(
                "suppression.check_every",
                "must be longer than 0s (remove it to turn the schedule off)".into(),
            ));
        }
        if let Some(h) = &raw.dashboard.password_hash {
            if let Err(why) = check_password_hash(h) {
                return Err(err("dashboard.password_hash", why));
            }
        }
        if let Some(var) = &raw.dashboard.session_key_env {
            check_env_name(var).map_err(|r| err("dashboard.session_key_env", r))?;
        }
        if let Some(var) = &raw.audit.signing_key_env {
            check_env_name(var).map_err(|r| err("audit.signing_key_env", r))?;
        }
        if raw.audit.checkpoint_every.get() < Duration::from_millis(100) {
            return Err(err(
                "audit.checkpoint_every",
                "at least 100ms (e.g. \"5s\")".to_string(),
            ));
        }
        if raw.dashboard.session_ttl.get() < Duration::from_secs(60) {
            return Err(err(
                "dashboard.session_ttl",
                "at least 1m (a login must outlast filling in a form)".to_string(),
            ));
        }
        if let Some(intake) = &raw.intake {
            check_env_name(&intake.webhook_secret_env)
                .map_err(|r| err("intake.webhook_secret_env", r))?;
            check_env_name(&intake.api_token_env).map_err(|r| err("intake.api_token_env", r))?;
            check_env_name(&intake.callback_signing_key_env)
                .map_err(|r| err("intake.callback_signing_key_env", r))?;
            crate::intake::target::AllowList::parse(&intake.callback_allow)
                .map_err(|r| err("intake.callback_allow", r))?;
            if intake.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(err(
                    "intake.listen",
                    format!(
                        "`{}` is not an address:port such as 127.0.0.1:8080",
                        intake.listen
                    ),
                ));
            }
            if intake.callback_retry.max_attempts == 0 {
                return Err(err(
                    "intake.callback_retry.max_attempts",
                    "must be at least 1".into(),
                ));
            }
        }
        if raw.worker.concurrency == 0 {
            return Err(err("worker.concurrency", "must be at least 1".into()));
        }
        let auto_lease = raw.worker.lease.get().is_zero();
        if !auto_lease && raw.worker.lease.get() < Duration::from_millis(200) {
            return Err(err("worker.lease", "must be at least 200ms".into()));
        }
        if raw.worker.pause_after == 0 {
            return Err(err("worker.pause_after", "must be at least 1".into()));
        }

        let mut names = BTreeSet::new();
        let mut longest_timeout = Duration::ZERO;
        for (i, p) in raw.processors.iter().enumerate() {
            let key = |k: &str| format!("processor[{i}].{k}");
            if p.name.is_empty()
                || p.name.len() > MAX_PROCESSOR_NAME
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    &key("name"),
                    format!(
                        "`{}` cannot be a file name (export files are named after the processor): use 1 to {MAX_PROCESSOR_NAME} letters, digits, `_` or `-`",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(err(
                    &key("name"),
                    format!("`{}` is used by two processors", p.name),
                ));
            }
            let Some(def) = registry.get(&p.connector) else {
                return Err(err(
                    &key("connector"),
                    format!(
                        "unknown connector `{}` (known: {})",
                        p.connector,
                        registry.names().join(", ")
                    ),
                ));
            };
            for s in &def.settings {
                if !p.settings.contains_key(s) {
                    return Err(err(
                        &key("settings"),
                        format!("connector `{}` needs setting `{s}`", def.name),
                    ));
                }
            }
            for s in &def.secrets {
                if !p.secrets.contains_key(s) {
                    return Err(err(
                        &key("secrets"),
                        format!("connector `{}` needs secret `{s}` (the name of an env var, e.g. {s} = \"{}\")", def.name, s.to_uppercase()),
                    ));
                }
            }
            for (k, v) in &p.secrets {
                check_env_name(v).map_err(|r| err(&key(&format!("secrets.{k}")), r))?;
            }
            // A setting may be a template over the subject: it must compile now,
            // not fail on the first request.
            let env = crate::connectors::template::environment();
            for (k, v) in &p.settings {
                if v.contains("{{") || v.contains("{%") {
                    env.template_from_str(v).map_err(|e| {
                        err(
                            &key(&format!("settings.{k}")),
                            format!("template does not compile: {e}"),
                        )
                    })?;
                }
            }
            let url = p.base_url.clone().or_else(|| def.default_base_url.clone());
            let Some(url) = url else {
                return Err(err(
                    &key("base_url"),
                    format!("missing, and connector `{}` has no default", def.name),
                ));
            };
            let mail = def.native.as_deref() == Some("manual");
            match url::Url::parse(&url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                // A manual processor's tasks may go by email instead of a webhook.
                Ok(u) if mail && (u.scheme() == "smtp" || u.scheme() == "smtps") => {}
                _ => {
                    return Err(err(
                        &key("base_url"),
                        format!("`{url}` is not an http(s) URL"),
                    ))
                }
            }
            if p.concurrency == Some(0) {
                return Err(err(&key("concurrency"), "must be at least 1".into()));
            }
            let timeout = p
                .timeout
                .map(|t| t.get())
                .unwrap_or(def.limits.timeout.get());
            if timeout.is_zero() {
                return Err(err(&key("timeout"), "must be more than 0s".into()));
            }
            if !auto_lease && raw.worker.lease.get() < timeout * 2 {
                return Err(err(
                    "worker.lease",
                    format!(
                        "{} is shorter than twice the call timeout of processor `{}` ({}): a stalled worker's call could still be running when another worker takes the step over. Set [worker] lease to at least {}, or the processor's `timeout` to at most {}",
                        humantime::format_duration(raw.worker.lease.get()),
                        p.name,
                        humantime::format_duration(timeout),
                        humantime::format_duration(timeout * 2),
                        humantime::format_duration(raw.worker.lease.get() / 2),
                    ),
                ));
            }
            longest_timeout = longest_timeout.max(timeout);
            if p.rate_per_second
                .is_some_and(|r| !(r > 0.0 && r.is_finite()))
            {
                return Err(err(
                    &key("rate_per_second"),
                    "must be a positive number".into(),
                ));
            }
            if let Some(native) = &def.native {
                crate::connectors::validate_native(native, &url, &p.settings, &p.secrets)
                    .map_err(|(k, r)| err(&key(&k), r))?;
            }
        }
        for (wname, wf) in &workflows.by_name {
            for (k, name) in wf.named_processors() {
                if !names.contains(&name) {
                    return Err(ConfigError {
                        file: format!("workflow `{wname}`"),
                        key: k,
                        reason: format!("no processor named `{name}` in {file}"),
                    });
                }
            }
        }

        // Retention schedules: names unique across workflow files, and each
        // selects at least one processor whose connector can sweep (one it
        // names must be able to).
        let mut schedule_files: BTreeMap<String, String> = BTreeMap::new();
        for (wname, wf) in &workflows.by_name {
            let wfile = workflows
                .files
                .get(wname)
                .cloned()
                .unwrap_or_else(|| format!("workflow `{wname}`"));
            for (i, sc) in wf.schedules.iter().enumerate() {
                let serr = |k: String, reason: String| ConfigError {
                    file: wfile.clone(),
                    key: k,
                    reason,
                };
                if let Some(other) = schedule_files.insert(sc.name.clone(), wfile.clone()) {
                    return Err(serr(
                        format!("schedule[{i}].name"),
                        format!("schedule `{}` is also defined in {other}", sc.name),
                    ));
                }
                let mut any = false;
                for p in &raw.processors {
                    let Some(def) = registry.get(&p.connector) else {
                        continue;
                    };
                    let category = p.category.unwrap_or(def.category);
                    if !sc.selects(&p.name, category) {
                        continue;
                    }
                    if def.can_sweep() {
                        any = true;
                    } else if sc.select.iter().any(|s| s == &p.name) {
                        return Err(serr(
                            format!("schedule[{i}].select"),
                            format!(
                                "processor `{}` (connector `{}`) has no retention sweep (connectors that sweep: s3, and those with `sweep = …`)",
                                p.name, p.connector
                            ),
                        ));
                    }
                }
                if !any {
                    return Err(serr(
                        format!("schedule[{i}].select"),
                        format!("selects no processor of {file} whose connector can sweep"),
                    ));
                }
            }
        }

        if auto_lease {
            raw.worker.lease = HumanDuration(MIN_AUTO_LEASE.max(longest_timeout * 2));
        }
        Ok(Config {
            path: path.to_path_buf(),
            store: raw.store,
            intake_enabled: raw.intake.is_some(),
            intake: raw.intake.unwrap_or_default(),
            dashboard: raw.dashboard,
            worker: raw.worker,
            audit: raw.audit,
            processors: raw.processors,
            export_dir: raw
                .export_dir
                .as_ref()
                .map(resolve)
                .unwrap_or_else(|| base.join("exports")),
            registry,
            workflows,
            sla: raw.sla,
            suppression: raw.suppression,
        })
    }

    /// The SQLite file of `[store] url` (already resolved against this file's
    /// directory), or None for PostgreSQL and in-memory databases.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        sqlite_file(&self.store.url)
    }

    /// For commands that only read or act on what exists: refuse a SQLite
    /// store whose file does not exist, naming the path, instead of creating
    /// an empty database (exit code 2).
    pub fn require_existing_store(&self) -> Result<(), ConfigError> {
        match self.sqlite_file() {
            Some(f) if !f.exists() => Err(ConfigError {
                file: self.path.display().to_string(),
                key: "store.url".into(),
                reason: format!(
                    "the SQLite store {} does not exist (a relative path is relative to this file's directory; `lethe request`, `lethe run` or `lethe daemon` create it)",
                    f.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The connector-facing description of a processor.
    pub fn spec(&self, p: &ProcessorConfig) -> ProcessorSpec {
        let def = self.registry.get(&p.connector);
        ProcessorSpec {
            name: p.name.clone(),
            config_file: self.path.display().to_string(),
            base_url: p
                .base_url
                .clone()
                .or_else(|| def.and_then(|d| d.default_base_url.clone()))
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            settings: p.settings.clone(),
            secrets: p.secrets.clone(),
            concurrency: p
                .concurrency
                .or(def.map(|d| d.limits.concurrency))
                .unwrap_or(4),
            soft_delete_window: p
                .soft_delete_window
                .map(|w| w.get())
                .or(def.and_then(|d| d.soft_delete_window.map(|w| w.get()))),
            rate_per_second: p
                .rate_per_second
                .or(def.and_then(|d| d.limits.rate_per_second)),
            category: self.category(p),
            timeout: p.timeout.map(|t| t.get()),
        }
    }

    /// Every (schedule, processor) pair of the workflows' `[[schedule]]`s:
    /// the processors each selects whose connector can sweep.
    pub fn schedules(
        &self,
    ) -> Vec<(
        &crate::domain::workflow::ScheduleDef,
        &ProcessorConfig,
        &str,
    )> {
        let mut out = Vec::new();
        for (wname, wf) in &self.workflows.by_name {
            for sc in &wf.schedules {
                for p in &self.processors {
                    let sweeps = self
                        .registry
                        .get(&p.connector)
                        .is_some_and(|d| d.can_sweep());
                    if sweeps && sc.selects(&p.name, self.category(p)) {
                        out.push((sc, p, wname.as_str()));
                    }
                }
            }
        }
        out
    }

    /// A processor's category.
    pub fn category(&self, p: &ProcessorConfig) -> Category {
        p.category.unwrap_or_else(|| {
            self.registry
                .get(&p.connector)
                .map(|d| d.category)
                .unwrap_or(Category::Other)
        })
    }
}

/// The file part of a `sqlite:` URL, split from its `?query`; None for an
/// in-memory database.
fn sqlite_parts(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    let memory = file.is_empty()
        || file == ":memory:"
        || query.is_some_and(|q| q.split('&').any(|kv| kv == "mode=memory"));
    (!memory).then_some((file, query))
}

/// The SQLite file a `sqlite:` URL names (percent-decoded as sqlx decodes
/// it), or None for PostgreSQL and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let (file, _) = sqlite_parts(url)?;
    Some(PathBuf::from(percent_decode(file)))
}

/// `url` with a relative SQLite file made relative to `base` (the config
/// file's directory); other URLs unchanged.
pub fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some((file, query)) = sqlite_parts(url) else {
        return url.to_string();
    };
    let path = PathBuf::from(percent_decode(file));
    if path.is_absolute() || base.as_os_str().is_empty() {
        return url.to_string();
    }
    let joined = base.join(&path).display().to_string();
    // sqlx percent-decodes the file part: keep `%`, `?` and `#` in the directory literal.
    let encoded = joined
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    match query {
        Some(q) => format!("sqlite://{encoded}?{q}"),
        None => format!("sqlite://{encoded}"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_env_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{v}` is not an environment variable name (secrets go in the environment, not in this file)"))
    }
}

/// Whether `hash` is an Argon2 PHC string (`[dashboard] password_hash`).
/// The reason never quotes the value (it may be a password pasted by mistake).
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::PasswordHash::new(hash).map_err(|e| {
        format!("not a password hash ({e}): make one with `lethe dashboard hash-password`")
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(
            "not an Argon2 hash: make one with `lethe dashboard hash-password`".to_string(),
        );
    }
    Ok(())
}

/// The example written by `lethe init`.
pub const EXAMPLE: &str = r#"# lethe configuration. Secrets are never written here: only the names of the
# environment variables that hold them.

[store]
url = "sqlite://lethe.db"            # or "postgres://user@localhost/lethe"
key_env = "LETHE_KEY"                # 32 random bytes, base64: openssl rand -base64 32
# identity_retention = "30d"         # then a closed request's sealed identities are destroyed
# old_key_envs = ["LETHE_KEY_2025"]  # older master keys, until `lethe key rotate` re-wrapped all
# export_recipient = "age1…"         # export requests need it: files are encrypted to this age key (age-keygen)
# export_plaintext = true            # or, knowingly: plaintext export files (0600)
# export_retention = "30d"           # export files are deleted this long after the request closed

[intake]
listen = "127.0.0.1:8080"
webhook_secret_env = "LETHE_WEBHOOK_SECRET"
api_token_env = "LETHE_API_TOKEN"
callback_signing_key_env = "LETHE_CALLBACK_KEY"  # Ed25519 seed: openssl rand -base64 32
# callback_allow = ["http://127.0.0.1:9000"]     # internal/plain-http callback origins

# [dashboard]                        # the web dashboard at http://127.0.0.1:8080/dashboard
# password_hash = "$argon2id$…"      # from `lethe dashboard hash-password`; else only the API token logs in
# secure_cookie = true               # when reached over HTTPS

# [sla]                              # report requests nearing their deadline (a workflow's `deadline`, else a month)
# warn_before = "2d"                 # once per request: event, log line, metric lethe_requests_due_soon
# webhook_url = "https://ops.example.com/lethe-sla"  # and a signed `deadline_near` callback

# [suppression]                      # erased subjects that come back (re-imported lists, syncs)
# check_every = "1d"                 # the daemon runs `lethe suppression check` (default: off)

[[processor]]
name = "newsletter"                  # used in reports
connector = "mailchimp"              # a file in connectors/
base_url = "https://us21.api.mailchimp.com/3.0"
settings = { list_id = "a1b2c3" }
secrets = { api_key = "MAILCHIMP_API_KEY" }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_and_suppression_sections_are_validated() {
        let c = Config::parse(Path::new("lethe.toml"), EXAMPLE).unwrap();
        assert_eq!(c.sla.warn_before.get(), Duration::from_secs(2 * 86_400));
        assert!(c.suppression.check_every.is_none());
        let t = format!("{EXAMPLE}\n[sla]\nwebhook_url = \"ftp://x\"\n");
        let e = Config::parse(Path::new("lethe.toml"), &t).unwrap_err();
        assert_eq!(e.key, "sla.webhook_url");
        let t = format!("{EXAMPLE}\n[suppression]\ncheck_every = \"0s\"\n");
        let e = Config::parse(Path::new("lethe.toml"), &t).unwrap_err();
        assert_eq!(e.key, "suppression.check_every");
        let t = format!(
            "{EXAMPLE}\n[suppression]\ncheck_every = \"12h\"\n[sla]\nwarn_before = \"1d\"\n"
        );
        let c = Config::parse(Path::new("lethe.toml"), &t).unwrap();
        assert_eq!(
            c.suppression.check_every.unwrap().get(),
            Duration::from_secs(43_200)
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let c = Config::parse(Path::new("lethe.toml"), EXAMPLE).unwrap();
        assert_eq!(c.processors.len(), 1);
        assert_eq!(c.spec(&c.processors[0]).concurrency, 8);
    }

    #[test]
    fn an_unknown_connector_names_the_key() {
        let t = EXAMPLE.replace("connector = \"mailchimp\"", "connector = \"mailchimpp\"");
        let e = Config::parse(Path::new("lethe.toml"), &t).unwrap_err();
        assert_eq!(e.key, "processor[0].connector");
        assert!(e.reason.contains("mailchimpp"));
    }

    #[test]
    fn a_secret_value_in_the_file_is_refused() {
        let t = EXAMPLE.replace("\"MAILCHIMP_API_KEY\"", "\"0123abcd-us21\"");
        let e = Config::parse(Path::new("lethe.toml"), &t).unwrap_err();
        assert_eq!(e.key, "processor[0].secrets.api_key");
    }

    #[test]
    fn identity_retention_defaults_to_30_days_and_takes_human_durations() {
        let c = Config::parse(Path::new("lethe.toml"), EXAMPLE).unwrap();
        assert_eq!(
            c.store.identity_retention.get(),
            Duration::from_secs(30 * 86_400)
        );
        let t = EXAMPLE.replace(
            "# identity_retention = \"30d\"",
            "identity_retention = \"1s\"",
        );
        let c = Config::parse(Path::new("lethe.toml"), &t).unwrap();
        assert_eq!(c.store.identity_retention.get(), Duration::from_secs(1));
        let t = EXAMPLE.replace(
            "# identity_retention = \"30d\"",
            "identity_retention = \"forever\"",
        );
        let e = Config::parse(Path::new("lethe.toml"), &t).unwrap_err();
        assert!(e.reason.contains("forever"), "{e}");
    }

    #[test]
    fn a_relative_sqlite_file_is_relative_to_the_config_files_directory() {
        let c = Config::parse(Path::new("/srv/x/lethe.toml"), EXAMPLE).unwrap();
        assert_eq!(c.store.url, "sqlite:///srv/x/lethe.db");
        assert_eq!(c.sqlite_file(), Some(PathBuf::from("/srv/x/lethe.db")));
        let base = Path::new("/srv/x");
        for (url, want) in [
            ("sqlite:///var/lib/l.db", "sqlite:///var/lib/l.db"),
            (
                "sqlite:db/l.db?mode=rwc",
                "sqlite:///srv/x/db/l.db?mode=rwc",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ] {
            assert_eq!(resolve_sqlite_url(url, base), want, "{url}");
        }
        let odd = resolve_sqlite_url("sqlite://l.db", Path::new("/a b/50%?#"));
        assert_eq!(sqlite_file(&odd), Some(PathBuf::from("/a b/50%?#/l.db")));
    }

    #[test]
    fn a_dashboard_password_hash_must_be_argon2() {
        assert!(check_password_hash("plain text").is_err());
        assert!(check_password_hash("$5$rounds=5000$salt$hash").is_err());
        let t = format!(
            "{EXAMPLE}\n[dashboard]\npassword_hash = \"{}\"\n",
            crate::web::auth::hash_password("long enough").unwrap()
        );
        let c = Config::parse(Path::new("lethe.toml"), &t).unwrap();
        assert!(c.dashboard.password_hash.is_some());
        let e = Config::parse(
            Path::new("lethe.toml"),
            &format!("{EXAMPLE}\n[dashboard]\npassword_hash = \"hunter22\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.key, "dashboard.password_hash");
        assert!(!e.reason.contains("hunter22"), "{e}");
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let e = Config::parse(Path::new("lethe.toml"), "[store]\nurl = \n").unwrap_err();
        assert!(e.key.starts_with("line 2"), "{e}");
    }
}
