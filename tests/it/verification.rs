//! Identity verification (issue 14.6), through the real binary and daemon: an
//! unverified request calls no processor at all until `lethe verify` or the
//! signed `POST /v1/requests/{id}/verify` marks it verified.

use crate::daemon::{intake_env, now, sign, Daemon, SECRET, TOKEN};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use wiremock::MockServer;

const EMAIL: &str = "Jane.Doe@Example.com";

/// Every call the fake received about members (any method; the daemon's
/// credential `ping` does not touch the subject).
async fn calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() != "/3.0/ping")
        .count()
}

async fn world(backend: Backend, server: &MockServer) -> TestEnv {
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

on_both_backends!(
    an_unverified_request_calls_no_processor_until_lethe_verify_and_then_erases,
    cancelling_an_unverified_request_leaves_every_processor_untouched,
    the_verify_webhook_refuses_a_bad_signature_and_a_good_one_lets_the_erasure_run,
    an_opendsr_request_sent_unverified_waits_for_lethe_verify,
);

async fn an_unverified_request_calls_no_processor_until_lethe_verify_and_then_erases(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = world(backend, &server).await;
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--unverified",
            "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["verified"], false, "{v:#}");
    assert_eq!(v["waiting_for"], "verification", "{v:#}");

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(calls(&server).await, 0, "no processor is called");
    let st = env.status(&id).await;
    assert_eq!(st["waiting_for"], "verification", "{st:#}");
    assert_eq!(
        TestEnv::step(&st, "newsletter")["waiting_for"],
        "verification",
        "{st:#}"
    );
    let text = env.lethe(&["status", &id]).await;
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("waiting for verification"),
        "{}",
        show(&text)
    );
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    assert_eq!(cert["request"]["verified"], false, "{cert:#}");
    assert_eq!(cert["request"]["verification"], Value::Null);

    // Bad input: an unknown id, an empty method (exit 2, nothing written).
    let out = env
        .lethe(&[
            "verify",
            "00000000-0000-4000-8000-000000000000",
            "--method",
            "email link",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.lethe(&["verify", &id, "--method", " "]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(env.status(&id).await["verified"], false);

    let out = env
        .lethe(&[
            "verify",
            &id,
            "--method",
            "email link",
            "--note",
            "clicked at 09:12",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    // Already verified: exit 2.
    let out = env.lethe(&["verify", &id, "--method", "email link"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    let st = env.run_until_status(&id, &["completed"], 30).await;
    assert_eq!(st["verified"], true);
    assert_eq!(st["waiting_for"], Value::Null);
    assert_eq!(TestEnv::step(&st, "newsletter")["outcome"], "erased");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    let ver = &cert["request"]["verification"];
    assert_eq!(ver["method"], "email link", "{cert:#}");
    assert!(ver["by"].as_str().unwrap().starts_with("cli:"), "{cert:#}");
    assert!(ver["at"].as_str().is_some());
    let html = env.lethe(&["report", &id, "--format", "html"]).await;
    assert!(html.status.success(), "{}", show(&html));
    assert!(String::from_utf8_lossy(&html.stdout).contains("Identity verified"));
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let n = events
        .iter()
        .filter(|e| e.kind == "request.verified")
        .count();
    assert_eq!(n, 1);
}

async fn cancelling_an_unverified_request_leaves_every_processor_untouched(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = world(backend, &server).await;
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--unverified",
            "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let out = env.lethe(&["cancel", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(st["status"], "cancelled", "{st:#}");
    assert_eq!(TestEnv::step(&st, "newsletter")["state"], "cancelled");
    assert_eq!(calls(&server).await, 0, "the processor was never called");
    // A cancelled erasure puts nothing on the suppression list.
    let list = env.json(&["suppression", "list", "--json"]).await;
    assert_eq!(list["entries"], json!([]), "{list:#}");
    // A cancelled request cannot be verified.
    let out = env.lethe(&["verify", &id, "--method", "email link"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

async fn the_verify_webhook_refuses_a_bad_signature_and_a_good_one_lets_the_erasure_run(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let body = json!({
        "kind": "erasure",
        "identities": {"email": EMAIL},
        "external_id": "form-77",
        "verified": false,
    });
    let (code, v) = d.webhook(&body.to_string()).await;
    assert_eq!(code, 201, "{v:#}");
    assert_eq!(v["verified"], false, "{v:#}");
    let id = v["id"].as_str().unwrap().to_string();

    let verify = json!({"method": "email link"}).to_string();
    let p = format!("/v1/requests/{id}/verify");
    // A bad signature: 401, nothing changes.
    let bad = sign("not-the-secret", now(), verify.as_bytes());
    let (code, v) = d
        .post_raw(&p, verify.as_bytes().to_vec(), Some(&bad), None)
        .await;
    assert_eq!(code, 401, "{v:#}");
    let (_, st) = d.get(&format!("/v1/requests/{id}"), Some(TOKEN)).await;
    assert_eq!(st["verified"], false, "{st:#}");
    assert_eq!(st["waiting_for"], "verification", "{st:#}");
    // No signature at all: 401 too.
    let (code, _) = d.post_raw(&p, verify.as_bytes().to_vec(), None, None).await;
    assert_eq!(code, 401);
    // An unknown request: 404.
    let other = "/v1/requests/00000000-0000-4000-8000-000000000000/verify";
    let sig = sign(SECRET, now(), verify.as_bytes());
    let (code, _) = d
        .post_raw(other, verify.as_bytes().to_vec(), Some(&sig), None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        calls(&server).await,
        0,
        "no processor is called while unverified"
    );

    let sig = sign(SECRET, now(), verify.as_bytes());
    let (code, v) = d
        .post_raw(&p, verify.as_bytes().to_vec(), Some(&sig), None)
        .await;
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v["verified"], true, "{v:#}");
    let sig = sign(SECRET, now(), verify.as_bytes());
    let (code, _) = d
        .post_raw(&p, verify.as_bytes().to_vec(), Some(&sig), None)
        .await;
    assert_eq!(code, 409, "already verified");

    let st = d.wait_status(&id, &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    d.stop().await;
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    assert_eq!(cert["request"]["verification"]["method"], "email link");
    assert_eq!(cert["request"]["verification"]["by"], "webhook");
}

async fn an_opendsr_request_sent_unverified_waits_for_lethe_verify(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let srid = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "subject_request_id": srid,
        "subject_request_type": "erasure",
        "submitted_time": "2026-11-20T09:00:00Z",
        "subject_identities": [
            {"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}
        ],
        "verified": false,
    })
    .to_string();
    let (code, v) = d
        .post_raw("/opendsr/v1/requests", body.into_bytes(), None, Some(TOKEN))
        .await;
    assert_eq!(code, 201, "{v:#}");
    let store = env.store().await;
    let req = store
        .find_by_external_id(&format!("opendsr:{srid}"))
        .await
        .unwrap()
        .expect("filed");
    assert!(!req.verified);
    let (code, st) = d
        .get(&format!("/v1/requests/{}", req.id), Some(TOKEN))
        .await;
    assert_eq!(code, 200);
    assert_eq!(st["waiting_for"], "verification", "{st:#}");
    assert_eq!(
        calls(&server).await,
        0,
        "no processor is called while unverified"
    );

    let out = env
        .lethe(&["verify", &req.id, "--method", "id document"])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let st = d.wait_status(&req.id, &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    d.stop().await;
}
