//! Interrupted attempts: a daemon killed (SIGKILL) or frozen (SIGSTOP, then
//! SIGCONT) while its delete calls are in flight. Another daemon takes the
//! steps over once the leases expire (by the database's clock). The fake
//! processor records when each call arrived; it deletes on the first call and
//! answers the takeover's call with Mailchimp's 404.
//!
//! What must hold: no two calls for one subject overlap at the processor;
//! every request completes; no subject that the first daemon deleted is
//! recorded `not_found` ("held no data"): it is `erased`, with the interrupted
//! attempt and the confirming one both on the timeline; and a frozen daemon
//! that wakes up after the takeover writes nothing.

use crate::daemon::FAST_WORKFLOW;
use crate::fakes::{self, ApiKey, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// How long the processor takes to answer a delete.
const CALL: Duration = Duration::from_millis(1200);

/// A Mailchimp audience that deletes on the first `delete-permanent` and
/// records the arrival of every call.
#[derive(Default)]
struct Audience {
    members: Mutex<HashSet<String>>,
    calls: Mutex<Vec<(String, Instant)>>,
}

struct Responder(Arc<Audience>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let this = &self.0;
        let hash = req
            .url
            .path()
            .split('/')
            .nth(5)
            .unwrap_or_default()
            .to_string();
        this.calls
            .lock()
            .unwrap()
            .push((hash.clone(), Instant::now()));
        if this.members.lock().unwrap().remove(&hash) {
            ResponseTemplate::new(204).set_delay(CALL)
        } else {
            fakes::problem(
                404,
                "Resource Not Found",
                "The requested resource could not be found.",
            )
            .set_delay(CALL)
        }
    }
}

async fn audience(emails: &[String]) -> (MockServer, Arc<Audience>) {
    let server = fakes::mailchimp().await;
    let a = Arc::new(Audience::default());
    a.members
        .lock()
        .unwrap()
        .extend(emails.iter().map(|e| fakes::hash(e)));
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/3\.0/lists/[^/]+/members/[0-9a-f]+/actions/delete-permanent$",
        ))
        .and(ApiKey(true))
        .respond_with(Responder(a.clone()))
        .with_priority(5)
        .mount(&server)
        .await;
    (server, a)
}

/// How the first daemon is interrupted.
#[derive(Clone, Copy, PartialEq)]
enum Interruption {
    Kill,
    StopThenContinue,
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

async fn interrupted(backend: Backend, how: Interruption) {
    let emails: Vec<String> = (0..6)
        .map(|i| format!("interrupted.{i}@example.com"))
        .collect();
    let (server, audience) = audience(&emails).await;
    // Lease 3 s, call timeout 1.5 s (the lease must be at least twice it).
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "[worker]\nlease = \"3s\"\nidle_poll = \"5s\"\n\n{}timeout = \"1500ms\"\n",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("RUST_LOG", "warn");
    let mut ids = Vec::new();
    for e in &emails {
        ids.push(env.erase(e).await);
    }

    let mut first = env.command(&["daemon"]).spawn().expect("spawn daemon");
    let pid = first.id().expect("pid");
    // Interrupt it while every delete is in flight at the processor.
    let deadline = Instant::now() + Duration::from_secs(20);
    while audience.calls.lock().unwrap().len() < emails.len() {
        assert!(
            Instant::now() < deadline,
            "the first daemon never sent its calls"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let its loop go back to sleep first: a process stopped inside a
    // database transaction holds the store's write lock (SQLite has no server
    // to end such a session; PostgreSQL ends it after
    // idle_in_transaction_session_timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    match how {
        Interruption::Kill => {
            first.start_kill().expect("kill -9");
            let _ = first.wait().await;
        }
        Interruption::StopThenContinue => signal(pid, "-STOP"),
    }
    assert!(
        audience.members.lock().unwrap().is_empty(),
        "the processor acted on every first call"
    );

    // Another worker takes over once the leases expire.
    let st = {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let out = env.lethe(&["run", "--until-idle"]).await;
            assert!(out.status.code().is_some(), "{}", show(&out));
            let mut done = 0;
            for id in &ids {
                let st = env.status(id).await;
                if st["status"] == "completed" || st["status"] == "failed" {
                    done += 1;
                }
            }
            if done == ids.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the takeover did not finish every request"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        env.status(&ids[0]).await
    };
    assert_eq!(st["status"], "completed", "{st:#}");

    if how == Interruption::StopThenContinue {
        // The frozen daemon wakes up with answers to calls it no longer owns.
        let events_before = env.store().await.events(0, 100_000).await.unwrap().len();
        signal(pid, "-CONT");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        signal(pid, "-TERM");
        let _ = tokio::time::timeout(Duration::from_secs(20), first.wait()).await;
        let events = env.store().await.events(0, 100_000).await.unwrap();
        let late: Vec<_> = events[events_before..]
            .iter()
            .filter(|e| e.step_id.is_some())
            .map(|e| e.kind.clone())
            .collect();
        assert!(
            late.is_empty(),
            "the woken daemon wrote step results after losing its leases: {late:?}"
        );
    }

    // The processor saw exactly one call per attempt, never two at once.
    let calls = audience.calls.lock().unwrap().clone();
    let mut by_subject: HashMap<String, Vec<Instant>> = HashMap::new();
    for (h, at) in calls {
        by_subject.entry(h).or_default().push(at);
    }
    for (h, mut at) in by_subject {
        at.sort();
        assert_eq!(
            at.len(),
            2,
            "subject {h}: the first call and the takeover's"
        );
        assert!(
            at[1] >= at[0] + CALL,
            "subject {h}: the takeover's call arrived {:?} after the first, while the first was still running at the processor ({CALL:?})",
            at[1] - at[0]
        );
    }

    // Every certificate says erased, with both attempts on the timeline.
    for id in &ids {
        let st = env.status(id).await;
        assert_eq!(st["status"], "completed", "{st:#}");
        let step = TestEnv::step(&st, "newsletter");
        assert_eq!(
            step["outcome"], "erased",
            "a subject lethe deleted is never `not_found`: {st:#}"
        );
        assert_eq!(step["attempts"], 2, "{st:#}");
        let cert = env.json(&["report", id, "--format", "json"]).await;
        let text = cert.to_string();
        assert!(
            !text.contains("\"not_found\""),
            "certificate claims not_found: {cert:#}"
        );
        let events = env.store().await.request_events(id).await.unwrap();
        let expired = events
            .iter()
            .find(|e| e.kind == "step.lease_expired")
            .unwrap_or_else(|| panic!("no lease_expired event for {id}"));
        assert_eq!(expired.detail["may_have_reached_processor"], json!(true));
        assert_eq!(expired.detail["attempt"], json!(1));
        let done = events
            .iter()
            .find(|e| e.kind == "step.done")
            .expect("step.done");
        assert_eq!(done.detail["outcome"], "erased");
        assert_eq!(done.detail["attempt"], json!(2));
        assert_eq!(done.detail["after_interrupted_attempt"], json!(true));
        assert_eq!(
            events.iter().filter(|e| e.kind == "step.done").count(),
            1,
            "one result per step"
        );
    }
}

async fn a_daemon_killed_mid_call_leaves_every_subject_erased_never_not_found(b: Backend) {
    interrupted(b, Interruption::Kill).await
}

async fn a_daemon_frozen_mid_call_is_fenced_out_and_every_subject_is_erased(b: Backend) {
    interrupted(b, Interruption::StopThenContinue).await
}

on_both_backends!(
    a_daemon_killed_mid_call_leaves_every_subject_erased_never_not_found,
    a_daemon_frozen_mid_call_is_fenced_out_and_every_subject_is_erased,
    a_lease_shorter_than_twice_a_call_timeout_is_refused_by_check_and_at_start,
    an_erase_that_failed_after_reaching_the_processor_then_found_nothing_is_erased,
    an_erase_refused_with_a_4xx_then_found_nothing_stays_not_found,
    the_idempotency_key_is_the_same_on_every_attempt_of_a_step,
);

/// An in-house webhook answers 503 to the first erase, then 200: both calls
/// carry one key, `REQUEST:PROCESSOR:erase`, so the endpoint can deduplicate.
async fn the_idempotency_key_is_the_same_on_every_attempt_of_a_step(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/lethe/erase"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "busy"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/lethe/erase"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"reference": "crm-1"})))
        .with_priority(2)
        .mount(&server)
        .await;
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &format!(
            "[[processor]]\nname = \"crm\"\nconnector = \"webhook\"\nbase_url = \"{}/lethe\"\nsecrets = {{ signing_secret = \"CRM_SECRET\" }}\n",
            server.uri()
        ),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("CRM_SECRET", "s3cret");
    let id = env.erase("key.test@example.com").await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(TestEnv::step(&st, "crm")["outcome"], "erased", "{st:#}");
    let keys: Vec<String> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["idempotency_key"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(keys, vec![format!("{id}:crm:erase"); 2]);
}

async fn fast_env(backend: Backend, server: &MockServer) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &fakes::processor_toml(server),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

/// The processor deleted the member but its answer was a 500 (a gateway
/// error after the work was done). The retry finds nothing: that is the
/// erasure confirmed, not "held no data".
async fn an_erase_that_failed_after_reaching_the_processor_then_found_nothing_is_erased(
    backend: Backend,
) {
    const EMAIL: &str = "gateway.error@example.com";
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path(fakes::delete_path(EMAIL)))
        .respond_with(fakes::problem(
            500,
            "Internal Server Error",
            "An unexpected internal error has occurred.",
        ))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    let env = fast_env(backend, &server).await;
    let id = env.erase(EMAIL).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["attempts"], 2, "{st:#}");
    assert!(
        step["evidence"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("earlier attempt")),
        "the evidence says why: {st:#}"
    );
}

/// A 401 is a refusal: the processor did nothing, so a later "not found"
/// is the truth — the processor held no data.
async fn an_erase_refused_with_a_4xx_then_found_nothing_stays_not_found(backend: Backend) {
    const EMAIL: &str = "never.there@example.com";
    let server = fakes::mailchimp().await;
    let mut env = fast_env(backend, &server).await;
    env.set_env("MAILCHIMP_API_KEY", "wrong-key-us21");
    let id = env.erase(EMAIL).await;
    let st = env.run_until_status(&id, &["failed"], 30).await;
    assert_eq!(TestEnv::step(&st, "newsletter")["error_class"], "permanent");
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let out = env.lethe(&["retry", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["outcome"],
        "not_found",
        "{st:#}"
    );
}

async fn a_lease_shorter_than_twice_a_call_timeout_is_refused_by_check_and_at_start(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    // Mailchimp's definition sets a 120 s call timeout.
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "[worker]\nlease = \"10s\"\n\n{}",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    for verb in [
        &["check"][..],
        &["daemon"][..],
        &["run", "--until-idle"][..],
    ] {
        let out = tokio::time::timeout(Duration::from_secs(20), env.lethe(verb))
            .await
            .expect("refused at once, not run");
        assert_eq!(out.status.code(), Some(2), "{verb:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("worker.lease") && err.contains("newsletter") && err.contains("2m"),
            "{verb:?} should name the lease, the processor and its timeout: {err}"
        );
    }
}
