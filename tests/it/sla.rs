//! Deadlines shorter than the law's (issue 14.5), through the real binary and
//! daemon: a workflow's `deadline` sets `due_at`, `list --overdue` and
//! `/metrics` use it, and the daemon reports a request near its deadline once.

use crate::daemon::{metric, Daemon, FAST_WORKFLOW, TOKEN};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use chrono::DateTime;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "jane.doe@example.com";

/// A world with workflows `erasure` (the default, no `deadline`) and `week`
/// (`deadline = "7d"`) and `second` (`deadline = "1s"`).
async fn world(backend: Backend, server: &MockServer, extra: &str) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &format!(
            "{extra}\n{}timeout = \"10s\"\n",
            fakes::processor_toml(server)
        ),
    )
    .await;
    let dir = env.dir.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("erasure.toml"), FAST_WORKFLOW).unwrap();
    std::fs::write(
        dir.join("week.toml"),
        format!("deadline = \"7d\"\n{FAST_WORKFLOW}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("second.toml"),
        format!("deadline = \"1s\"\n{FAST_WORKFLOW}"),
    )
    .unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

fn ms(v: &Value, k: &str) -> i64 {
    DateTime::parse_from_rfc3339(v[k].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

on_both_backends!(
    a_workflow_deadline_of_7d_sets_due_at_to_received_plus_seven_days,
    list_overdue_includes_a_request_whose_1s_deadline_has_passed,
    the_daemon_reports_a_request_near_its_deadline_once_by_event_metric_and_webhook,
);

async fn a_workflow_deadline_of_7d_sets_due_at_to_received_plus_seven_days(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = world(backend, &server, "").await;
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--workflow",
            "week",
            "--json",
        ])
        .await;
    assert_eq!(
        ms(&v, "due_at") - ms(&v, "received_at"),
        7 * 86_400_000,
        "{v:#}"
    );
    assert_eq!(v["days_left"], 6, "{v:#}");
    // The default workflow keeps the statutory month.
    let v = env
        .json(&["request", "erase", "--email", EMAIL, "--json"])
        .await;
    let days = (ms(&v, "due_at") - ms(&v, "received_at")) / 86_400_000;
    assert!((28..=31).contains(&days), "{v:#}");
    // A bad deadline is refused naming the file and key (exit 2).
    std::fs::write(
        env.dir.path().join("workflows/week.toml"),
        format!("deadline = \"soon\"\n{FAST_WORKFLOW}"),
    )
    .unwrap();
    let out = env.lethe(&["list"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("week.toml"),
        "{}",
        show(&out)
    );
}

async fn list_overdue_includes_a_request_whose_1s_deadline_has_passed(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = world(backend, &server, "").await;
    // Unverified, so it stays open without touching the processor.
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--workflow",
            "second",
            "--unverified",
            "--json",
        ])
        .await;
    let short = v["id"].as_str().unwrap().to_string();
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            "other@example.org",
            "--workflow",
            "week",
            "--unverified",
            "--json",
        ])
        .await;
    let week = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let list = env.json(&["list", "--overdue", "--json"]).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![short.as_str()], "{list:#}");
    assert!(!ids.contains(&week.as_str()));
    assert_eq!(list[0]["overdue"], true);
}

async fn the_daemon_reports_a_request_near_its_deadline_once_by_event_metric_and_webhook(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sla"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let port = crate::daemon::free_port();
    let extra = format!(
        "[worker]\nidle_poll = \"100ms\"\nlease = \"20s\"\n\n[sla]\nwarn_before = \"8d\"\nwebhook_url = \"{}/sla\"\n\n[intake]\nlisten = \"127.0.0.1:{port}\"\n{}\n",
        receiver.uri(),
        crate::daemon::TEST_CALLBACK_ALLOW
    );
    let mut env = world(backend, &server, &extra).await;
    env.set_env("LETHE_WEBHOOK_SECRET", crate::daemon::SECRET);
    env.set_env("LETHE_API_TOKEN", TOKEN);
    env.set_env("LETHE_CALLBACK_KEY", crate::daemon::CALLBACK_KEY);
    // Due in 7 days, warned 8 days before: near at once. A default one (a month) is not.
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--workflow",
            "week",
            "--unverified",
            "--json",
        ])
        .await;
    let near = v["id"].as_str().unwrap().to_string();
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            "other@example.org",
            "--unverified",
            "--json",
        ])
        .await;
    let far = v["id"].as_str().unwrap().to_string();

    let d = Daemon::start(&env, port).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let got = loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if !got.is_empty() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deadline webhook; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["id"], near.as_str(), "{body:#}");
    assert_eq!(body["event"], "deadline_near", "{body:#}");
    assert!(got[0].headers.get("lethe-signature").is_some(), "signed");
    let text = d.metrics().await;
    assert_eq!(metric(&text, "lethe_requests_due_soon"), 1.0, "{text}");
    assert_eq!(metric(&text, "lethe_requests_overdue"), 0.0, "{text}");
    let log = d.stop().await;
    assert!(log.contains("near its deadline"), "{log}");
    assert!(!log.to_lowercase().contains(EMAIL), "{log}");

    // Once: a second daemon pass (and a `run`) writes nothing more.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let store = env.store().await;
    let n = store
        .request_events(&near)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "request.deadline_near")
        .count();
    assert_eq!(n, 1);
    let n = store
        .request_events(&far)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "request.deadline_near")
        .count();
    assert_eq!(n, 0);
    assert_eq!(receiver.received_requests().await.unwrap().len(), 1);
}
