//! `lethe demo`: one erasure, end to end, against local simulated processors,
//! told as the story a privacy officer wants.
//!
//! Everything but the processors is real: the config is parsed and validated,
//! the store is a SQLite file, identities are sealed, the engine plans, leases,
//! calls the connector over HTTP, retries a processor that answers 503, and
//! writes the audit chain — which the demo verifies at the end.
//!
//! What it prints is drawn from the store, never from what the demo set up: each
//! processor's story (including why it took several attempts) is read from the
//! audit events the engine recorded. It prints no secret: the commands it
//! suggests (status, report, audit verify) need neither the master key nor the
//! processors' API key, and run exactly as printed (the running executable's
//! absolute path, `--config` with the demo's absolute config path).

use crate::config::Config;
use crate::crypto::Keys;
use crate::domain::{RequestKind, RequestStatus, StepState, Subject};
use crate::engine::{Engine, SubmitOptions};
use crate::report::human_ms;
use crate::sim::mailchimp::Mailchimp;
use crate::store::{from_ms, EventRow, RequestRow, StepRow};
use anyhow::Context;
use chrono::Utc;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBJECT: &str = "jane.doe@example.com";

/// The demo's directory: `$TMPDIR/lethe-demo-XXXXXXXX`, mode 0700 (it holds the
/// database with the sealed identities).
fn make_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "lethe-demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir.join("workflows"))
        .with_context(|| format!("creating the demo directory {}", dir.display()))?;
    // Absolute, so that the printed paths work from any working directory.
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Run the demo; returns the exit code.
pub async fn run() -> anyhow::Result<u8> {
    let dir = make_dir()?;

    // Two simulated Mailchimp accounts: one healthy, one that fails twice with
    // 503 first. Their API key is random and lives only in this process.
    let api_key = format!("{}-us21", uuid::Uuid::new_v4().simple());
    let healthy = Mailchimp::new(&api_key);
    healthy.add_member("customers", SUBJECT);
    healthy.add_member("customers", "someone.else@example.com");
    let flaky = Mailchimp::new(&api_key);
    flaky.add_member("events", SUBJECT);
    flaky.fail_next.store(2, Ordering::Relaxed);
    let s1 = crate::sim::serve(healthy.router())
        .await
        .context("starting a simulated processor")?;
    let s2 = crate::sim::serve(flaky.router())
        .await
        .context("starting a simulated processor")?;

    // The secret is in this process's environment only, as a real one would be.
    std::env::set_var("DEMO_MAILCHIMP_KEY", &api_key);
    let config_text = format!(
        r#"# Written by `lethe demo`. The processors were simulated on 127.0.0.1 and are
# gone; `status`, `report` and `audit verify` read only the store and need no key.
workflows_dir = "workflows"

[store]
url = "sqlite://{db}"
key_env = "LETHE_KEY"

[[processor]]
name = "newsletter"
connector = "mailchimp"
base_url = "{u1}/3.0"
settings = {{ list_id = "customers" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}

[[processor]]
name = "product-updates"
connector = "mailchimp"
base_url = "{u1}/3.0"
settings = {{ list_id = "product-updates" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}

[[processor]]
name = "event-invites"
connector = "mailchimp"
base_url = "{u2}/3.0"
settings = {{ list_id = "events" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}
"#,
        db = dir.join("lethe.db").display(),
        u1 = s1.url(),
        u2 = s2.url(),
    );
    let workflow = r#"kind = "erasure"
description = "demo: the default erasure policy, with retries in milliseconds instead of minutes"
[retry]
initial = "150ms"
factor = 2.0
cap = "1s"
max_attempts = 5
jitter = false
[[phase]]
name = "stop mail"
select = ["category:mailing_list"]
"#;
    std::fs::write(dir.join("workflows/erasure.toml"), workflow)?;
    let config_path = dir.join("lethe.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::load(&config_path)?;
    // The master key is used for this run only and never shown: the demo's
    // identities stay sealed under a key that no longer exists once it exits.
    let keys = Keys::from_base64("LETHE_KEY", &Keys::generate_base64())?;
    let signing = keys.audit_signing_key();
    let store = crate::store::open(&config.store.url).await?;
    store.migrate().await?;
    let engine = Engine::new(Arc::new(config), store, keys)?;

    let started = Instant::now();
    let sub = engine
        .submit(
            RequestKind::Erasure,
            Subject::parse(Some(SUBJECT), None, None, None)?,
            SubmitOptions::default(),
        )
        .await?;
    let id = sub.request.id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let req = loop {
        engine.run_until_idle().await?;
        let req = engine.request(&id).await?;
        if req.status.is_closed()
            || req.status == RequestStatus::Failed
            || Instant::now() > deadline
        {
            break req;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    // Sign a checkpoint over what the run appended, as `lethe run
    // --until-idle` does, so the certificate carries its inclusion proof.
    let checkpointer = crate::audit::checkpointer::Checkpointer::new(
        Arc::clone(&engine.store),
        signing,
        engine.worker_id().to_string(),
        Duration::from_secs(5),
    );
    checkpointer
        .tick()
        .await
        .context("writing the demo's audit checkpoint")?;
    checkpointer.resign().await;
    let steps = engine.store.steps(&id).await?;
    let events = engine.store.request_events(&id).await?;
    let audit = crate::audit::verify(engine.store.as_ref()).await?;

    // The certificate, as `lethe report ID --format html` writes it.
    let now = crate::store::ms(Utc::now());
    let certificate = crate::report::certificate::build(engine.store.as_ref(), &id, now)
        .await?
        .context("the demo's request vanished from the store")?;
    let html =
        crate::report::html::certificate(&certificate).context("rendering the certificate")?;
    let certificate_path = dir.join("certificate.html");
    std::fs::write(&certificate_path, html)
        .with_context(|| format!("writing {}", certificate_path.display()))?;

    // Asked directly, after the fact: does any simulated processor still hold the subject?
    let mut still_held = vec![];
    if healthy.has_member("customers", SUBJECT) {
        still_held.push("newsletter");
    }
    if flaky.has_member("events", SUBJECT) {
        still_held.push("event-invites");
    }

    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding the path of the running lethe executable")?;
    let story = Story {
        request: &req,
        steps: &steps,
        events: &events,
        elapsed,
        still_held: &still_held,
        certificate: &certificate_path,
        chain_checked: audit.checked,
        chain_head: audit.head.as_deref(),
        chain_broken_at: audit.broken.as_ref().map(|b| b.seq),
        exe: &exe,
        config: &config_path,
    };
    print!("{}", story.render());
    let ok =
        req.status == RequestStatus::Completed && audit.broken.is_none() && still_held.is_empty();
    Ok(if ok { 0 } else { 1 })
}

/// Everything the demo's story is told from.
struct Story<'a> {
    request: &'a RequestRow,
    steps: &'a [StepRow],
    events: &'a [EventRow],
    elapsed: Duration,
    still_held: &'a [&'a str],
    certificate: &'a Path,
    chain_checked: u64,
    chain_head: Option<&'a str>,
    chain_broken_at: Option<i64>,
    exe: &'a Path,
    config: &'a Path,
}

impl Story<'_> {
    fn render(&self) -> String {
        let r = self.request;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("lethe demo — one erasure request, carried out end to end.".into());
        line(
            "Everything is the real lethe (config, SQLite store, sealed identities, engine,".into(),
        );
        line("connector, audit chain) except the processors: three Mailchimp audiences".into());
        line("simulated on 127.0.0.1 for the length of the demo. Its retry policy waits".into());
        line("milliseconds where the default one waits minutes.".into());
        line(String::new());

        line("What was asked".into());
        line(format!(
            "  Erase all personal data about {} (GDPR Art. 17, the right to erasure)",
            r.subject_masked
        ));
        line(format!(
            "  at each processor: {}.",
            self.steps
                .iter()
                .map(|s| s.processor.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        line(format!(
            "  Request {}, received {}.",
            r.id,
            minute(r.received_at)
        ));
        line(format!(
            "  Legal deadline: {}, one month after receipt (Art. 12(3)).",
            minute(r.due_at)
        ));
        line(String::new());

        line("What each processor did, and why".into());
        for s in self.steps {
            line(format!(
                "  {} ({}): {}",
                s.processor,
                s.category.replace('_', " "),
                result_word(s)
            ));
            for l in wrap(&explain_step(s, self.events), 78) {
                line(format!("    {l}"));
            }
        }
        line(String::new());

        line("Outcome".into());
        match r.completed_at {
            Some(done) if r.status == RequestStatus::Completed => {
                let spare_days = (r.due_at - done) / 86_400_000;
                line(format!(
                    "  Completed {}, {} after it was filed: {} days before the deadline.",
                    minute(done),
                    human_ms(self.elapsed.as_millis().min(i64::MAX as u128) as i64),
                    spare_days
                ));
            }
            _ => line(format!(
                "  Not completed: the request is {} (see `status` below).",
                r.status.as_str().replace('_', " ")
            )),
        }
        if self.still_held.is_empty() {
            line(
                "  Asked directly afterwards, no simulated audience lists the subject any more."
                    .into(),
            );
        } else {
            line(format!(
                "  Asked directly afterwards, these still list the subject: {}.",
                self.still_held.join(", ")
            ));
        }
        line(String::new());

        line("Certificate of erasure (HTML, one printable page)".into());
        line(format!("  {}", self.certificate.display()));
        line(String::new());

        line("Audit trail".into());
        let request_events = self.events.len();
        line(format!(
            "  {request_events} events recorded for this request, each chained to the previous one by its SHA-256."
        ));
        match self.chain_broken_at {
            None => line(format!(
                "  The whole chain ({} events) recomputes: verified (head {}).",
                self.chain_checked,
                self.chain_head
                    .map(|h| &h[..h.len().min(16)])
                    .unwrap_or("-")
            )),
            Some(seq) => line(format!(
                "  The chain is BROKEN at event {seq}: `audit verify` below says why."
            )),
        }
        line(String::new());

        line("Next: run these exactly as printed (no key needed)".into());
        let exe = shell_quote(&self.exe.display().to_string());
        let cfg = shell_quote(&self.config.display().to_string());
        for (what, args) in [
            ("the request and every step", format!("status {}", r.id)),
            ("the certificate as text", format!("report {}", r.id)),
            ("recompute the audit chain", "audit verify".to_string()),
        ] {
            line(format!("  # {what}"));
            line(format!("  {exe} --config {cfg} {args}"));
        }
        out
    }
}

/// `2026-12-04 18:14 UTC`.
fn minute(m: crate::store::Millis) -> String {
    from_ms(m).format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The step's result in words: `erased`, `held no data`, `failed`, …
fn result_word(s: &StepRow) -> String {
    match s.outcome.map(|o| o.as_str()) {
        Some("not_found") => "held no data".into(),
        Some(o) => o.into(),
        None => s.state.as_str().replace('_', " "),
    }
}

/// `503 Service Unavailable`, or `HTTP 599` for a code without a reason phrase.
fn status_words(status: u64) -> String {
    u16::try_from(status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .map(|reason| format!("{status} {reason}"))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

fn ordinal_attempt(a: i64) -> String {
    if a == 1 {
        "on the first attempt".into()
    } else {
        format!("on attempt {a}")
    }
}

fn http_of(detail: &Value) -> Option<u64> {
    detail
        .get("evidence")
        .and_then(|e| e.get("status"))
        .and_then(Value::as_u64)
}

/// What a processor did and why, read from its step's audit events: the
/// failures that made lethe wait (grouped: "answered 503 Service Unavailable
/// twice"), the back-off, and how the step ended.
fn explain_step(step: &StepRow, events: &[EventRow]) -> String {
    let mine: Vec<&EventRow> = events
        .iter()
        .filter(|e| e.step_id == Some(step.id))
        .collect();
    // Consecutive waits for the same reason, as (reason, count).
    let mut troubles: Vec<(String, usize)> = vec![];
    let mut waits: Vec<i64> = vec![];
    let mut throttled = false;
    for e in mine.iter().filter(|e| e.kind == "step.retry_wait") {
        let d = &e.detail;
        let class = d.get("error_class").and_then(Value::as_str).unwrap_or("");
        let reason = match (class, http_of(d)) {
            ("throttled", Some(s)) => {
                throttled = true;
                format!("asked lethe to slow down ({})", status_words(s))
            }
            ("throttled", None) => {
                throttled = true;
                "asked lethe to slow down".into()
            }
            ("paused", _) => "was paused after failing every recent call".into(),
            (_, Some(s)) => format!("answered {}", status_words(s)),
            (_, None) => "did not answer in time".into(),
        };
        match troubles.last_mut() {
            Some((last, n)) if *last == reason => *n += 1,
            _ => troubles.push((reason, 1)),
        }
        if let Some(w) = d.get("retry_in_ms").and_then(Value::as_i64) {
            waits.push(w);
        }
    }
    let end = mine
        .iter()
        .rev()
        .find(|e| matches!(e.kind.as_str(), "step.done" | "step.failed"));
    let attempt = end
        .and_then(|e| e.detail.get("attempt").and_then(Value::as_i64))
        .unwrap_or(step.attempts.max(1));
    let status = end.and_then(|e| http_of(&e.detail));
    let answered = status
        .map(|s| format!(" ({})", status_words(s)))
        .unwrap_or_default();
    let ending = match (step.state, step.outcome.map(|o| o.as_str())) {
        (StepState::Done, Some("not_found")) => format!(
            "answered {} {}: it held no data on the subject, so there was nothing to erase",
            status
                .map(status_words)
                .unwrap_or_else(|| "not found".into()),
            ordinal_attempt(attempt)
        ),
        (StepState::Done, Some("erased")) => {
            format!("erased {}{answered}", ordinal_attempt(attempt))
        }
        (StepState::Done, Some(o)) => format!("{o} {}{answered}", ordinal_attempt(attempt)),
        (StepState::Failed, _) => format!(
            "failed {}{answered}: {}",
            ordinal_attempt(attempt),
            step.last_error.as_deref().unwrap_or("no message")
        ),
        (state, _) => format!("is {}", state.as_str().replace('_', " ")),
    };
    if troubles.is_empty() {
        return upper_first(&ending);
    }
    let what: Vec<String> = troubles
        .iter()
        .map(|(reason, n)| format!("{reason} {}", times(*n)))
        .collect();
    let backoff = match waits.as_slice() {
        [] => String::new(),
        [one] => format!(" (waited {})", human_ms(*one)),
        [init @ .., last] => format!(
            " (waited {}, then {})",
            init.iter()
                .map(|w| human_ms(*w))
                .collect::<Vec<_>>()
                .join(", "),
            human_ms(*last)
        ),
    };
    let how = if throttled {
        "lethe waited as asked"
    } else {
        "lethe retried with back-off"
    };
    upper_first(&format!(
        "{}; {how}{backoff}, then {ending}",
        what.join(", then ")
    ))
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![];
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Quote `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Action, Outcome, Phase};
    use serde_json::json;

    fn step(state: StepState, outcome: Option<Outcome>, attempts: i64) -> StepRow {
        StepRow {
            id: 7,
            request_id: "r".into(),
            processor: "p".into(),
            connector: "mailchimp".into(),
            category: "mailing_list".into(),
            action: Action::Erase,
            wave: 0,
            state,
            phase: Phase::Act,
            outcome,
            attempts,
            run_at: 0,
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            error_class: None,
            evidence: None,
            hold_basis: None,
            hold_until: None,
            grace_until: None,
            started_at: None,
            finished_at: None,
            updated_at: 0,
            lease_token: 0,
            maybe_acted: false,
        }
    }

    fn event(seq: i64, kind: &str, detail: Value) -> EventRow {
        EventRow {
            seq,
            chain: "request:r".into(),
            chain_seq: seq,
            at: seq,
            request_id: Some("r".into()),
            step_id: Some(7),
            kind: kind.into(),
            detail,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn two_503s_then_success_are_told_as_retries_with_back_off() {
        let events = [
            event(
                1,
                "step.retry_wait",
                json!({"attempt": 1, "error_class": "transient", "evidence": {"status": 503}, "retry_in_ms": 150}),
            ),
            event(
                2,
                "step.retry_wait",
                json!({"attempt": 2, "error_class": "transient", "evidence": {"status": 503}, "retry_in_ms": 300}),
            ),
            event(
                3,
                "step.done",
                json!({"attempt": 3, "outcome": "erased", "evidence": {"status": 204}}),
            ),
        ];
        assert_eq!(
            explain_step(&step(StepState::Done, Some(Outcome::Erased), 3), &events),
            "Answered 503 Service Unavailable twice; lethe retried with back-off \
             (waited 150ms, then 300ms), then erased on attempt 3 (204 No Content)"
        );
    }

    #[test]
    fn a_throttled_processor_is_told_as_lethe_waiting_as_asked() {
        let events = [
            event(
                1,
                "step.retry_wait",
                json!({"error_class": "throttled", "evidence": {"status": 429}, "retry_in_ms": 2000}),
            ),
            event(
                2,
                "step.done",
                json!({"attempt": 1, "outcome": "erased", "evidence": {"status": 204}}),
            ),
        ];
        assert_eq!(
            explain_step(&step(StepState::Done, Some(Outcome::Erased), 1), &events),
            "Asked lethe to slow down (429 Too Many Requests) once; lethe waited as asked \
             (waited 2.0s), then erased on the first attempt (204 No Content)"
        );
    }

    #[test]
    fn a_404_is_told_as_holding_no_data() {
        let events = [event(
            1,
            "step.done",
            json!({"attempt": 1, "outcome": "not_found", "evidence": {"status": 404}}),
        )];
        assert_eq!(
            explain_step(&step(StepState::Done, Some(Outcome::NotFound), 1), &events),
            "Answered 404 Not Found on the first attempt: it held no data on the subject, \
             so there was nothing to erase"
        );
    }

    #[test]
    fn paths_with_spaces_or_quotes_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quote("/tmp/lethe-demo-1/lethe.toml"),
            "/tmp/lethe-demo-1/lethe.toml"
        );
        assert_eq!(shell_quote("/tmp/my dir/x"), "'/tmp/my dir/x'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
