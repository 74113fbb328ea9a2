//! The same five situations for every built-in declarative connector, through
//! the CLI against its fake: a known subject is erased (or retained, or
//! soft-deleted then purged after its window); an unknown one ends `not_found`;
//! a transient failure is retried; throttling waits without using up an
//! attempt; rejected credentials fail at once, naming the env var. And an
//! export collects the subject's data into `exports/<id>/<processor>.json`.
//!
//! One test per connector runs on both backends; the rest on SQLite (the store
//! itself is conformance-tested on both).

use crate::connectors_fakes::{
    inject, Api, Dropbox, Ended, Mailgun, OneDrive, Stripe, Twilio, Webhook, Whm, Xero, Zendesk,
    ZendeskPermanent, ZohoDesk, SUBJECT_ARGS,
};
use crate::helpers::{show, Backend, TestEnv};
use serde_json::Value;

/// Retries in milliseconds, so tests do not wait minutes.
pub const FAST_ERASURE: &str = r#"kind = "erasure"
[retry]
initial = "300ms"
factor = 2.0
cap = "2s"
max_attempts = 5
jitter = false
[[phase]]
name = "all"
select = ["*"]
"#;

/// The same for exports.
pub const FAST_EXPORT: &str = r#"kind = "export"
[retry]
initial = "300ms"
factor = 2.0
cap = "2s"
max_attempts = 5
jitter = false
[[phase]]
name = "all"
select = ["*"]
"#;

/// A world with `processors` (lethe.toml blocks) and fast workflows.
pub async fn env_with(backend: Backend, processors: &str) -> TestEnv {
    let env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"\nconnectors_dir = \"connectors\"",
        processors,
    )
    .await;
    let wf = env.dir.path().join("workflows");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(wf.join("erasure.toml"), FAST_ERASURE).unwrap();
    std::fs::write(wf.join("export.toml"), FAST_EXPORT).unwrap();
    fast_rechecks(&env.dir.path().join("connectors"));
    env
}

/// The built-in definitions whose lagging searches are re-checked, with the
/// lag they wait (a minute or more) cut to a second, so tests do not wait it
/// out; everything else in them is the built-in text.
pub fn fast_rechecks(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (file, text) in lethe::connectors::definition::BUILTIN {
        if !text.contains("recheck_after") {
            continue;
        }
        let fast: String = text
            .lines()
            .map(|l| {
                if l.starts_with("recheck_after = ") {
                    "recheck_after = \"1s\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join(file), fast).unwrap();
    }
}

/// A world for one fake, with its good secret set.
pub async fn env_for<A: Api>(backend: Backend, api: &A) -> TestEnv {
    let mut env = env_with(backend, &api.processor_toml()).await;
    env.set_env(A::SECRET_VAR, A::SECRET);
    env
}

/// File a request (`erase` or `export`) for the test subject; returns its id.
pub async fn file(env: &TestEnv, kind: &str) -> String {
    let mut args = vec!["request", kind];
    args.extend(SUBJECT_ARGS);
    args.push("--json");
    let v = env.json(&args).await;
    v["id"].as_str().expect("id").to_string()
}

/// Run until the request closes (completed or failed); returns the status.
pub async fn finish(env: &TestEnv, id: &str) -> Value {
    env.run_until_status(
        id,
        &["completed", "completed_with_exceptions", "failed"],
        30,
    )
    .await
}

/// `run --until-idle` once; returns the status.
pub async fn run_once(env: &TestEnv, id: &str) -> Value {
    let out = env.lethe(&["run", "--until-idle"]).await;
    // Exit 1: a step failed in this run (the status says which).
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", show(&out));
    env.status(id).await
}

/// A soft delete is verified after its window: one more call.
fn verify_calls<A: Api>() -> u64 {
    u64::from(A::ENDED == Ended::Grace)
}

/// The step ended the way a successful erase ends at this processor.
fn assert_success<A: Api>(st: &Value) {
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(st, A::PROCESSOR);
    assert_eq!(step["state"], "done", "{st:#}");
    assert_eq!(step["connector"], A::CONNECTOR);
    assert_eq!(step["category"], A::CATEGORY);
    match A::ENDED {
        Ended::Erased => assert_eq!(step["outcome"], "erased", "{st:#}"),
        Ended::Grace => assert_eq!(step["outcome"], "purged", "{st:#}"),
        Ended::Retained(reason) => {
            assert_eq!(step["outcome"], "retained", "{st:#}");
            let note = step["evidence"]["note"].as_str().unwrap_or_default();
            assert!(
                note.contains(reason),
                "the reason is kept as evidence: {st:#}"
            );
        }
    }
}

/// A known subject: erased / retained / soft-deleted, then purged after the window.
pub async fn success<A: Api>(backend: Backend) {
    let api = A::start(true).await;
    let env = env_for(backend, &api).await;
    let id = file(&env, "erase").await;

    if A::ENDED == Ended::Grace {
        let st = run_once(&env, &id).await;
        let step = TestEnv::step(&st, A::PROCESSOR);
        assert_eq!(
            step["state"], "grace",
            "soft-deleted, waiting out the window: {st:#}"
        );
        assert!(step["grace_until"].is_string(), "{st:#}");
        assert_eq!(st["status"], "waiting", "{st:#}");
        assert!(api.erased_as_expected(), "the erase call reached the fake");
    }
    let st = finish(&env, &id).await;
    assert_success::<A>(&st);
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["attempts"], 1 + verify_calls::<A>(), "{st:#}");
    let shown = st.to_string();
    assert!(
        !shown.contains(crate::connectors_fakes::EMAIL)
            && !shown.contains("7946")
            && !shown.contains(crate::connectors_fakes::CUSTOMER),
        "identities are masked in status: {shown}"
    );
    assert!(
        api.erased_as_expected(),
        "the fake no longer holds what was erased"
    );
    assert_eq!(
        crate::connectors_fakes::decoy_writes(api.server()).await,
        0,
        "a similar address found by a fuzzy search is never touched"
    );
}

/// An unknown subject ends `not_found`, the request completed.
pub async fn not_found<A: Api>(backend: Backend) {
    let api = A::start(false).await;
    let env = env_for(backend, &api).await;
    let id = file(&env, "erase").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["outcome"], "not_found", "{st:#}");
    // A "not found" from a lagging search index is searched again once.
    assert_eq!(step["attempts"], 1 + u64::from(A::LAGGING_SEARCH), "{st:#}");
    let note = step["evidence"]["note"].as_str().unwrap_or_default();
    assert_eq!(
        note.contains("a search whose index lags"),
        A::LAGGING_SEARCH,
        "{st:#}"
    );
    let (m, p) = api.erase_call();
    assert_eq!(
        crate::connectors_fakes::count(api.server(), m, p).await,
        if A::CONNECTOR == "mailgun" || A::CONNECTOR == "dropbox" || A::CONNECTOR == "webhook" {
            1 // the erase call itself answers "not found"
        } else {
            0 // a search found nothing, so nothing was deleted
        },
        "{st:#}"
    );
}

/// Two transient failures on the decisive call, then success after three attempts.
pub async fn transient_then_success<A: Api>(backend: Backend) {
    let api = A::start(true).await;
    let (m, p) = api.erase_call();
    inject(api.server(), m, p, api.transient(), 2).await;
    let env = env_for(backend, &api).await;
    let id = file(&env, "erase").await;

    let st = run_once(&env, &id).await;
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient");
    assert_eq!(step["attempts"], 1);
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(err.contains(&format!("`{}`", A::PROCESSOR)), "{err}");

    let st = finish(&env, &id).await;
    assert_success::<A>(&st);
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["attempts"], 3 + verify_calls::<A>(), "{st:#}");
    assert!(api.erased_as_expected());
}

/// A throttled answer waits (honouring Retry-After where sent) and does not use up an attempt.
pub async fn throttled_then_success<A: Api>(backend: Backend) {
    let api = A::start(true).await;
    let (m, p) = api.erase_call();
    let Some(throttled) = api.throttled() else {
        panic!("{} has no throttling signal to test", A::CONNECTOR)
    };
    inject(api.server(), m, p, throttled, 1).await;
    let env = env_for(backend, &api).await;
    let id = file(&env, "erase").await;

    let before = chrono::Utc::now();
    let st = run_once(&env, &id).await;
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "throttled");
    if A::RETRY_AFTER {
        // Retry-After: 1 wins over the 300ms back-off of the test workflow.
        let run_at = chrono::DateTime::parse_from_rfc3339(step["run_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert!(
            run_at >= before + chrono::Duration::seconds(1),
            "Retry-After honoured: run_at {run_at}, before {before}"
        );
    }
    assert_eq!(step["attempts"], 0, "throttling does not use up an attempt");
    assert!(
        step["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("429"),
        "{st:#}"
    );

    let st = finish(&env, &id).await;
    assert_success::<A>(&st);
    assert_eq!(
        TestEnv::step(&st, A::PROCESSOR)["attempts"],
        1 + verify_calls::<A>(),
        "{st:#}"
    );
    assert!(api.erased_as_expected());
}

/// Rejected credentials: failed at once, permanent, naming the processor and the env var.
pub async fn rejected_credentials_fail<A: Api>(backend: Backend) {
    let api = A::start(true).await;
    let mut env = env_for(backend, &api).await;
    env.set_env(A::SECRET_VAR, "not-the-right-secret");
    let id = file(&env, "erase").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["state"], "failed");
    assert_eq!(step["error_class"], "permanent");
    assert_eq!(step["attempts"], 1, "a permanent error is not retried");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "credentials rejected by processor `{}`",
            A::PROCESSOR
        )),
        "{err}"
    );
    assert!(err.contains(A::SECRET_VAR), "{err}");
    assert!(!err.contains("not-the-right-secret"), "{err}");
    assert!(!api.erased_as_expected(), "nothing was erased");
}

/// An export writes the subject's data and erases nothing.
pub async fn export_collects<A: Api>(backend: Backend) {
    let api = A::start(true).await;
    let env = env_for(backend, &api).await;
    let id = file(&env, "export").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, A::PROCESSOR);
    assert_eq!(step["action"], "export");
    assert_eq!(step["outcome"], "exported", "{st:#}");
    let path = env
        .dir
        .path()
        .join("exports")
        .join(&id)
        .join(format!("{}.json", A::PROCESSOR));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["processor"], A::PROCESSOR);
    assert_eq!(doc["category"], A::CATEGORY);
    api.check_export(&doc["data"]);
    let shown = st.to_string();
    assert!(
        !shown.contains(crate::connectors_fakes::EMAIL)
            && !shown.contains("7946")
            && !shown.contains(crate::connectors_fakes::CUSTOMER),
        "identities are masked in status (evidence included): {shown}"
    );
    assert!(!api.erased_as_expected(), "an export never erases");
}

/// Five (or six) tests for one connector.
macro_rules! connector_suite {
    ($m:ident, $api:ty $(, $extra:ident)*) => {
        mod $m {
            use super::*;
            type A = $api;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_known_subject_is_erased_on_sqlite() {
                success::<A>(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_known_subject_is_erased_on_postgres() {
                success::<A>(Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unknown_subject_ends_not_found() {
                not_found::<A>(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_transient_failures_are_retried_then_succeed() {
                transient_then_success::<A>(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rejected_credentials_fail_naming_the_env_var() {
                rejected_credentials_fail::<A>(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_export_collects_the_subjects_data() {
                export_collects::<A>(Backend::Sqlite).await
            }
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $extra() {
                    super::$extra::<A>(Backend::Sqlite).await
                }
            )*
        }
    };
}

connector_suite!(mailgun, Mailgun, throttled_then_success);
connector_suite!(zendesk, Zendesk, throttled_then_success);
connector_suite!(zendesk_permanent, ZendeskPermanent, throttled_then_success);
connector_suite!(zoho_desk, ZohoDesk, throttled_then_success);
connector_suite!(xero, Xero, throttled_then_success);
connector_suite!(stripe, Stripe, throttled_then_success);
// WHM documents no throttling signal: no throttling test.
connector_suite!(whm, Whm);
connector_suite!(dropbox, Dropbox, throttled_then_success);
connector_suite!(onedrive, OneDrive, throttled_then_success);
connector_suite!(twilio, Twilio, throttled_then_success);
connector_suite!(webhook, Webhook, throttled_then_success);
