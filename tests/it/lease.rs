//! A worker that dies holding a lease does not lose the step.

use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

on_both_backends!(a_daemon_killed_mid_call_loses_nothing_and_another_worker_completes_the_step);

async fn a_daemon_killed_mid_call_loses_nothing_and_another_worker_completes_the_step(
    backend: Backend,
) {
    const EMAIL: &str = "kill.me@example.com";
    let server = fakes::mailchimp().await;
    // The first erase call hangs (the worker will be killed during it); later ones succeed.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(60)))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "[worker]\nlease = \"1s\"\nidle_poll = \"100ms\"\n\n{}",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);

    let id = env.erase(EMAIL).await;
    let mut daemon = env.command(&["daemon"]).spawn().expect("spawn daemon");

    // Wait until the daemon holds the step and its call is in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = env.status(&id).await;
        if TestEnv::step(&st, "newsletter")["state"] == "running"
            && fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never claimed the step: {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Heartbeats keep the lease alive while the daemon lives: after 2 lease periods it is still running.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["state"],
        "running",
        "heartbeats should extend the lease: {st:#}"
    );

    daemon.start_kill().expect("kill -9");
    let _ = daemon.wait().await;

    // Before the lease runs out, another worker must not take the step.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    // After it runs out, another worker completes it.
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["attempts"], 2, "the dead worker's attempt counts");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        2
    );

    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == "step.lease_expired"),
        "the takeover is in the audit trail"
    );
}
