//! The HTTP intake over real HTTP: the real `lethe daemon`, a real store, the
//! Mailchimp fake as processor.

use crate::daemon::{
    callback_public_key, callback_signed_by, intake_env, metric, now, sign, Daemon, SECRET, TOKEN,
};
use crate::fakes;
use crate::helpers::Backend;
use crate::on_both_backends;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::Mock;

const EMAIL: &str = "Jane.Doe@Example.com";

type Case = (&'static str, (u16, Value), u16, &'static str, &'static str);
const RAW_EMAIL: &str = "jane.doe@example.com";

fn form(external_id: &str) -> String {
    json!({
        "kind": "erasure",
        "identities": {"email": EMAIL, "name": "Jane Doe"},
        "external_id": external_id,
    })
    .to_string()
}

on_both_backends!(
    a_signed_webhook_files_a_request_that_the_daemon_carries_out_to_completion,
    the_same_webhook_delivered_three_times_at_once_files_one_request,
);

async fn a_signed_webhook_files_a_request_that_the_daemon_carries_out_to_completion(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;

    // The form asks for status callbacks.
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let mut body: Value = serde_json::from_str(&form("form-8842")).unwrap();
    body["callback_url"] = json!(format!("{}/hook", receiver.uri()));
    let (code, v) = d.webhook(&body.to_string()).await;
    assert_eq!(code, 201, "{v:#}");
    assert_eq!(v["external_id"], "form-8842");
    assert_eq!(v["subject"], "j***@example.com, J. D.");
    let id = v["id"].as_str().unwrap().to_string();

    let st = d.wait_status(&id, &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(st["steps"][0]["outcome"], "erased");
    assert_eq!(st["steps"][0]["evidence"]["status"], 204);
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );

    // The report: the status view plus the audit trail's kinds and times, no identity.
    let (code, rep) = d
        .get(&format!("/v1/requests/{id}/report"), Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{rep:#}");
    assert_eq!(rep["request"]["id"], id.as_str());
    let kinds: Vec<&str> = rep["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"request.created"), "{kinds:?}");
    assert!(kinds.contains(&"step.done"), "{kinds:?}");
    // …and the certificate, as `lethe report ID --format json` gives it.
    let cert = &rep["certificate"];
    assert_eq!(cert["request"]["id"], id.as_str(), "{rep:#}");
    assert_eq!(cert["processors"][0]["processor"], "newsletter", "{cert:#}");
    assert_eq!(cert["audit"]["chain_verified"], true, "{cert:#}");
    // The request's own chain, verified on its own: its events are numbered 1, 2, … in it.
    let chain = format!("request:{id}");
    assert_eq!(cert["audit"]["chain"], chain.as_str(), "{cert:#}");
    let positions: Vec<i64> = rep["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["chain"], chain.as_str(), "{e:#}");
            e["chain_seq"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(positions, (1..=positions.len() as i64).collect::<Vec<_>>());
    assert_eq!(cert["audit"]["chain_events"], positions.len());
    assert!(!rep.to_string().to_lowercase().contains(RAW_EMAIL));

    // The list API filters by status.
    let (code, list) = d.get("/v1/requests?status=completed", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = d.get("/v1/requests?status=failed", Some(TOKEN)).await;
    assert_eq!(list.as_array().unwrap().len(), 0);

    // Status callbacks in our own format, in order, each signed with the callback key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let got = loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if got.len() >= 3 {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "got {} callbacks",
            got.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let events: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let sig = r
                .headers
                .get("lethe-signature")
                .and_then(|v| v.to_str().ok())
                .expect("signed");
            let t: i64 = sig
                .split(',')
                .find_map(|p| p.strip_prefix("t="))
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                callback_signed_by(&callback_public_key(), sig, &r.body),
                "signature over the raw body: {sig}"
            );
            assert!((now() - t).abs() < 120, "signed now: {sig}");
            assert!(r.headers.get("lethe-event-id").is_some());
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v["external_id"], "form-8842");
            (
                v["event"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("created", "in_progress"),
        ("started", "in_progress"),
        ("status", "completed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(events, want);

    let log = d.stop().await;
    assert!(log.contains("webhook request accepted"), "{log}");
    assert!(
        !log.to_lowercase().contains(RAW_EMAIL) && !log.contains("Jane Doe"),
        "a raw identity reached the log:\n{log}"
    );
}

async fn the_same_webhook_delivered_three_times_at_once_files_one_request(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;

    let body = form("form-redelivered");
    let (a, b, c) = tokio::join!(d.webhook(&body), d.webhook(&body), d.webhook(&body));
    let ids: Vec<&str> = [&a, &b, &c]
        .iter()
        .map(|r| r.1["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let mut codes = vec![a.0, b.0, c.0];
    codes.sort();
    assert_eq!(
        codes,
        vec![200, 200, 201],
        "one creates, the others find it"
    );
    // A later redelivery too.
    let (code, v) = d.webhook(&body).await;
    assert_eq!((code, v["id"].as_str().unwrap()), (200, ids[0]));

    let st = d.wait_status(ids[0], &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed");
    d.stop().await;

    let store = env.store().await;
    let all = store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(all.len(), 1, "exactly one request");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1,
        "erased once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_webhooks_and_api_calls_get_the_right_4xx_naming_the_field_and_write_nothing() {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(Backend::Sqlite, &server).await;
    let d = Daemon::start(&env, port).await;
    let good = form("form-1");
    let t = now();

    // (case, (status, body) received, status wanted, field wanted, reason wanted)
    let mut cases: Vec<Case> = vec![];
    cases.push((
        "bad signature",
        d.post_raw(
            "/v1/requests",
            good.clone().into_bytes(),
            Some(&sign("not-the-secret", t, good.as_bytes())),
            None,
        )
        .await,
        401,
        "Lethe-Signature",
        "does not match",
    ));
    cases.push((
        "missing signature",
        d.post_raw("/v1/requests", good.clone().into_bytes(), None, None)
            .await,
        401,
        "Lethe-Signature",
        "missing",
    ));
    cases.push((
        "stale timestamp",
        d.post_raw(
            "/v1/requests",
            good.clone().into_bytes(),
            Some(&sign(SECRET, t - 301, good.as_bytes())),
            None,
        )
        .await,
        401,
        "Lethe-Signature",
        "at most 300 s",
    ));
    cases.push((
        "malformed JSON",
        d.webhook("{\"kind\": \"erasure\", ").await,
        400,
        "",
        "malformed JSON",
    ));
    cases.push((
        "invalid email",
        d.webhook(&json!({"kind": "erasure", "identities": {"email": "jane.example.com"}, "external_id": "f-2"}).to_string()).await,
        422,
        "identities.email",
        "invalid email: missing '@'",
    ));
    cases.push((
        "unknown kind",
        d.webhook(&json!({"kind": "erase-everything", "identities": {"email": EMAIL}, "external_id": "f-3"}).to_string()).await,
        422,
        "kind",
        "unknown variant",
    ));
    cases.push((
        "unknown field",
        d.webhook(
            &json!({"kind": "erasure", "identities": {"emial": EMAIL}, "external_id": "f-4"})
                .to_string(),
        )
        .await,
        422,
        "identities.emial",
        "unknown field `emial`",
    ));
    cases.push((
        "no identity",
        d.webhook(
            &json!({"kind": "erasure", "identities": {"name": "Jane"}, "external_id": "f-5"})
                .to_string(),
        )
        .await,
        422,
        "identities",
        "no identity given",
    ));
    let big = json!({"kind": "erasure", "identities": {"email": EMAIL}, "external_id": "f-6", "pad": "x".repeat(70 * 1024)}).to_string();
    cases.push((
        "oversized body",
        d.webhook(&big).await,
        413,
        "",
        "larger than 64 KiB",
    ));
    cases.push((
        "OpenDSR: invalid email identity",
        d.post_raw(
            "/opendsr/v1/requests",
            json!({"subject_request_id": "a7551968-d5d6-44b2-9831-815ac9017798", "subject_request_type": "erasure",
                   "submitted_time": "2026-11-20T09:00:00Z",
                   "subject_identities": [{"identity_type": "email", "identity_value": "jane@", "identity_format": "raw"}]})
            .to_string()
            .into_bytes(),
            None,
            Some(TOKEN),
        )
        .await,
        422,
        "subject_identities[0].identity_value",
        "invalid email",
    ));
    cases.push((
        "OpenDSR: unknown request type",
        d.post_raw(
            "/opendsr/v1/requests",
            json!({"subject_request_id": "a7551968-d5d6-44b2-9831-815ac9017798", "subject_request_type": "rectification",
                   "submitted_time": "2026-11-20T09:00:00Z",
                   "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}]})
            .to_string()
            .into_bytes(),
            None,
            Some(TOKEN),
        )
        .await,
        422,
        "subject_request_type",
        "unknown type `rectification`",
    ));
    let put = d
        .http
        .put(d.url("/opendsr/v1/requests/a7551968-d5d6-44b2-9831-815ac9017798"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    cases.push((
        "OpenDSR: PUT is not allowed",
        (
            put.status().as_u16(),
            put.json().await.unwrap_or(Value::Null),
        ),
        405,
        "",
        "method not allowed",
    ));
    cases.push((
        "missing token",
        d.get("/v1/requests", None).await,
        401,
        "Authorization",
        "missing bearer token",
    ));
    cases.push((
        "wrong token",
        d.get("/v1/requests", Some("api-token-test-abcdeX")).await,
        401,
        "Authorization",
        "wrong bearer token",
    ));
    cases.push((
        "wrong token on a request",
        d.get(
            "/v1/requests/00000000-0000-0000-0000-000000000000",
            Some("nope"),
        )
        .await,
        401,
        "Authorization",
        "wrong bearer token",
    ));
    cases.push((
        "unknown status filter",
        d.get("/v1/requests?status=done", Some(TOKEN)).await,
        400,
        "status",
        "unknown status `done`",
    ));

    for (name, (code, body), want_code, want_field, want_reason) in &cases {
        assert_eq!(code, want_code, "{name}: {body:#}");
        assert_eq!(body["error"]["field"], *want_field, "{name}: {body:#}");
        let reason = body["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(want_reason),
            "{name}: reason {reason:?} should contain {want_reason:?}"
        );
    }
    d.stop().await;

    // Nothing was written: no request, no audit event.
    let store = env.store().await;
    assert!(store
        .list_requests(&Default::default())
        .await
        .unwrap()
        .is_empty());
    assert!(store.events(0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_requests_steps_attempts_and_calls_that_happened() {
    let server = fakes::mailchimp().await;
    const RETRIED: &str = "retried@example.com";
    // One member's delete answers 503 twice before it works; another is unknown (404).
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(RETRIED)))
        .respond_with(fakes::problem(
            503,
            "Service Unavailable",
            "Mailchimp is temporarily unavailable.",
        ))
        .up_to_n_times(2)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, RETRIED).await;
    let (env, port) = intake_env(Backend::Sqlite, &server).await;
    let d = Daemon::start(&env, port).await;

    let before = d.metrics().await;
    assert_eq!(
        metric(&before, "lethe_requests{status=\"completed\"}"),
        0.0,
        "{before}"
    );

    let mut ids = vec![];
    for (email, ext) in [(RETRIED, "m-1"), ("nobody@example.com", "m-2")] {
        let body = json!({"kind": "erasure", "identities": {"email": email}, "external_id": ext})
            .to_string();
        let (code, v) = d.webhook(&body).await;
        assert_eq!(code, 201, "{v:#}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let st = d.wait_status(id, &["completed", "failed"], 30).await;
        assert_eq!(st["status"], "completed", "{st:#}");
    }

    let text = d.metrics().await;
    assert_eq!(
        metric(&text, "lethe_requests{status=\"completed\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "lethe_requests{status=\"in_progress\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lethe_steps{processor=\"newsletter\",state=\"done\"}"
        ),
        2.0,
        "{text}"
    );
    // 3 attempts for the retried member, 1 for the unknown one.
    assert_eq!(
        metric(&text, "lethe_step_attempts{processor=\"newsletter\"}"),
        4.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lethe_processor_calls_total{processor=\"newsletter\",result=\"transient\"}"
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lethe_processor_calls_total{processor=\"newsletter\",result=\"ok\"}"
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lethe_processor_call_duration_seconds_count{processor=\"newsletter\"}"
        ),
        4.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "lethe_processor_call_duration_seconds_sum{processor=\"newsletter\"}"
        ) > 0.0,
        "{text}"
    );
    assert!(!text.contains("retried@"), "no identity in metrics");
    d.stop().await;
}
