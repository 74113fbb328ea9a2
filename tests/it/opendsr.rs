//! OpenDSR 2.0 over real HTTP: a controller files an erasure, lethe carries it
//! out, and the controller's callback receiver — down at first — gets
//! `pending` → `in_progress` → `completed`, signed, once it is back.

use crate::daemon::{
    callback_public_key, callback_signed_by, free_port, intake_env, intake_env_with, Daemon, TOKEN,
};
use crate::fakes;
use crate::helpers::Backend;
use crate::on_both_backends;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "controller.subject@example.com";

fn create_body(id: &str, callback: &str) -> String {
    json!({
        "subject_request_id": id,
        "subject_request_type": "erasure",
        "regulation": "gdpr",
        "submitted_time": "2026-11-20T09:00:00Z",
        "api_version": "2.0",
        "subject_identities": [
            {"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"},
            {"identity_type": "ios_advertising_id", "identity_value": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "identity_format": "raw"}
        ],
        "status_callback_urls": [callback],
        "extensions": {"opendsr.mparticle.com": {"skip_waiting_period": true}}
    })
    .to_string()
}

/// Check `Lethe-Signature` (Ed25519, the callback key) independently of lethe's code.
fn verify(header: &str, body: &[u8]) -> bool {
    callback_signed_by(&callback_public_key(), header, body)
}

on_both_backends!(
    an_opendsr_erasure_is_carried_out_and_a_receiver_that_was_down_across_a_restart_gets_pending_in_progress_completed_signed
);

async fn an_opendsr_erasure_is_carried_out_and_a_receiver_that_was_down_across_a_restart_gets_pending_in_progress_completed_signed(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    // The controller's callback receiver is down: nothing listens on its port yet.
    let cb_port = free_port();
    let callback = format!("http://127.0.0.1:{cb_port}/opendsr/callbacks");

    let (code, disc) = d.get("/opendsr/v1/discovery", None).await;
    assert_eq!(code, 200);
    assert_eq!(disc["api_version"], "2.0");
    assert!(disc["supported_subject_request_types"]
        .as_array()
        .unwrap()
        .contains(&json!("erasure")));

    let srid = uuid::Uuid::new_v4().to_string();
    let body = create_body(&srid, &callback);
    // Without the token: refused, nothing filed.
    let (code, _) = d
        .post_raw(
            "/opendsr/v1/requests",
            body.clone().into_bytes(),
            None,
            None,
        )
        .await;
    assert_eq!(code, 401);
    let (code, created) = d
        .post_raw(
            "/opendsr/v1/requests",
            body.clone().into_bytes(),
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 201, "{created:#}");
    assert_eq!(created["subject_request_id"], srid.as_str());
    assert_eq!(created["controller_id"], "default");
    for k in ["expected_completion_time", "received_time"] {
        let t = created[k].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{k}: {t}: {e}"));
    }
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD
        .decode(created["encoded_request"].as_str().unwrap())
        .unwrap();
    assert_eq!(encoded, body.as_bytes());
    // A repeated POST is the same request.
    let (code, again) = d
        .post_raw(
            "/opendsr/v1/requests",
            body.clone().into_bytes(),
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 200, "{again:#}");
    assert_eq!(again["received_time"], created["received_time"]);

    // Carried out.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, st) = d
            .get(&format!("/opendsr/v1/requests/{srid}"), Some(TOKEN))
            .await;
        assert_eq!(code, 200, "{st:#}");
        if st["request_status"] == "completed" {
            assert_eq!(st["subject_request_id"], srid.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "not completed: {st:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    // Cancelling a completed request is refused (v2: only while pending).
    let r = d
        .http
        .delete(d.url(&format!("/opendsr/v1/requests/{srid}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The callbacks are still queued, failing and being retried: the receiver is down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::daemon::metric(
        &d.metrics().await,
        "lethe_callback_deliveries_total{result=\"retry\"}",
    ) < 2.0
    {
        assert!(Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = env.store().await;
    let queued = store.outbox_counts().await.unwrap();
    assert_eq!(queued, vec![("pending".to_string(), 3)], "{queued:?}");

    // The daemon restarts while they are queued: they are in the store, not in memory.
    let log = d.stop().await;
    assert!(!log.contains(EMAIL), "raw identity in the log:\n{log}");
    let d = Daemon::start(&env, port).await;

    // The receiver comes back on its port.
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", cb_port)).expect("rebind callback port");
    let receiver = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .and(path("/opendsr/callbacks"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&receiver)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if got.len() >= 3 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "receiver got {} callbacks; log:\n{}",
            got.len(),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Give a duplicate time to show up, then check there is none.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = if receiver.received_requests().await.unwrap().len() > got.len() {
        receiver.received_requests().await.unwrap()
    } else {
        got
    };
    let statuses: Vec<String> = got
        .iter()
        .map(|r| {
            let sig = r
                .headers
                .get("lethe-signature")
                .and_then(|v| v.to_str().ok())
                .expect("signed");
            assert!(
                verify(sig, &r.body),
                "bad signature on {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["subject_request_id"], srid.as_str());
            assert_eq!(v["controller_id"], "default");
            assert_eq!(v["status_callback_url"], callback.as_str());
            assert!(v["expected_completion_time"].is_string());
            v["request_status"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(statuses, vec!["pending", "in_progress", "completed"]);
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(counts, vec![("delivered".to_string(), 3)], "{counts:?}");

    let log = d.stop().await;
    assert!(!log.contains(EMAIL), "raw identity in the log:\n{log}");
}

/// With the only worker slot busy on another request's slow call, an OpenDSR
/// request stays `pending`; DELETE cancels it (202) and its receiver hears
/// `pending` → `cancelled`. Then SIGTERM: the daemon stops accepting, lets the
/// slow call finish and records it (releasing the lease), and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_opendsr_request_is_cancelled_by_delete_and_sigterm_lets_the_call_in_flight_finish(
) {
    const BUSY: &str = "busy@example.com";
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(BUSY)))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(8)))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, BUSY).await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env_with(Backend::Sqlite, &server, "concurrency = 1").await;
    let d = Daemon::start(&env, port).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;

    let (code, busy) = d
        .webhook(
            &json!({"kind": "erasure", "identities": {"email": BUSY}, "external_id": "busy-1"})
                .to_string(),
        )
        .await;
    assert_eq!(code, 201, "{busy:#}");
    let busy_id = busy["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fakes::count(&server, "POST", &fakes::delete_path(BUSY)).await == 0 {
        assert!(Instant::now() < deadline, "the slow call never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let srid = uuid::Uuid::new_v4().to_string();
    let callback = format!("{}/cb", receiver.uri());
    let (code, created) = d
        .post_raw(
            "/opendsr/v1/requests",
            create_body(&srid, &callback).into_bytes(),
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 201, "{created:#}");
    let (_, st) = d
        .get(&format!("/opendsr/v1/requests/{srid}"), Some(TOKEN))
        .await;
    assert_eq!(st["request_status"], "pending", "{st:#}");

    let del = |who: &'static str| {
        let r = d
            .http
            .delete(d.url(&format!("/opendsr/v1/requests/{srid}")))
            .bearer_auth(TOKEN)
            .send();
        async move {
            let r = r.await.expect(who);
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, v) = del("first").await;
    assert_eq!(
        (code, v["request_status"].as_str()),
        (202, Some("cancelled")),
        "{v:#}"
    );
    let (code, _) = del("again").await;
    assert_eq!(code, 202, "cancelling twice is harmless");
    let (_, st) = d
        .get(&format!("/opendsr/v1/requests/{srid}"), Some(TOKEN))
        .await;
    assert_eq!(st["request_status"], "cancelled");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        0,
        "never erased"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if got.len() >= 2 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "receiver got {} callbacks",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let statuses: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["request_status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(statuses, vec!["pending", "cancelled"]);

    // SIGTERM while the slow call is still in flight.
    let store = env.store().await;
    let steps = store.steps(&busy_id).await.unwrap();
    assert_eq!(
        steps[0].state.as_str(),
        "running",
        "the slow call should still be in flight"
    );
    let log = d.stop().await;
    assert!(log.contains("shutting down"), "{log}");
    let steps = store.steps(&busy_id).await.unwrap();
    assert_eq!(
        steps[0].state.as_str(),
        "done",
        "the in-flight call was finished and recorded"
    );
    assert_eq!(steps[0].lease_owner, None, "lease released");
}
