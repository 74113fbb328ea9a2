//! A reused `external_id`: the same request again is the same request (200,
//! exit 0); a different request under the same id is refused (409 naming
//! `external_id` and the existing request, exit 2) and nothing is written.

use crate::daemon::{intake_env, Daemon, TOKEN};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};

const EMAIL: &str = "jane.doe@example.com";
const OTHER: &str = "john.roe@example.com";

fn form(external_id: &str, email: &str) -> Value {
    json!({
        "kind": "erasure",
        "identities": {"email": email},
        "external_id": external_id,
    })
}

on_both_backends!(
    a_webhook_reusing_an_external_id_for_a_different_request_gets_409_naming_external_id_and_the_first_request,
    two_different_webhooks_with_one_external_id_at_once_file_one_request_and_refuse_the_other,
    an_opendsr_request_id_reused_for_another_type_gets_409_naming_subject_request_id,
    the_cli_refuses_a_reused_external_id_for_another_subject_with_exit_2_naming_the_first_request,
    an_external_id_whose_identities_were_destroyed_matches_only_what_the_keyed_hash_proves,
);

async fn request_count(env: &TestEnv) -> usize {
    let v = env.json(&["list", "--json"]).await;
    v.as_array().map_or(0, Vec::len)
}

async fn a_webhook_reusing_an_external_id_for_a_different_request_gets_409_naming_external_id_and_the_first_request(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;

    let first = form("form-77", EMAIL);
    let (code, v) = d.webhook(&first.to_string()).await;
    assert_eq!(code, 201, "{v:#}");
    let id = v["id"].as_str().unwrap().to_string();
    // The same body again is the same request.
    let (code, v) = d.webhook(&first.to_string()).await;
    assert_eq!((code, v["id"].as_str()), (200, Some(id.as_str())), "{v:#}");

    let mut other_kind = first.clone();
    other_kind["kind"] = json!("export");
    let mut with_name = first.clone();
    with_name["identities"]["name"] = json!("Jane Doe");
    let mut with_callback = first.clone();
    with_callback["callback_url"] = json!("https://forms.example.org/hook");
    for (case, body, differs) in [
        ("another email", form("form-77", OTHER), "identities"),
        ("another kind", other_kind, "kind"),
        ("one more identity", with_name, "identities"),
        ("a callback URL", with_callback, "callback_url"),
    ] {
        let (code, v) = d.webhook(&body.to_string()).await;
        assert_eq!(code, 409, "{case}: {v:#}");
        let e = &v["error"];
        assert_eq!(e["field"], "external_id", "{case}: {v:#}");
        assert_eq!(e["request_id"], id.as_str(), "{case}: {v:#}");
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&id), "{case}: {reason}");
        assert!(reason.contains(differs), "{case}: {reason}");
        assert!(!reason.contains(OTHER), "{case}: {reason}");
    }
    let (code, list) = d.get("/v1/requests", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    let log = d.stop().await;
    assert!(
        !log.contains(OTHER),
        "a raw identity reached the log:\n{log}"
    );
    assert_eq!(request_count(&env).await, 1, "exactly one request");
}

async fn two_different_webhooks_with_one_external_id_at_once_file_one_request_and_refuse_the_other(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    for round in 0..4 {
        let ext = format!("form-race-{round}");
        let a = form(&ext, EMAIL).to_string();
        let b = form(&ext, OTHER).to_string();
        let ((ca, va), (cb, vb)) = tokio::join!(d.webhook(&a), d.webhook(&b));
        let mut codes = [ca, cb];
        codes.sort_unstable();
        assert_eq!(codes, [201, 409], "round {round}: {va:#} {vb:#}");
        let (won, lost) = if ca == 201 { (&va, &vb) } else { (&vb, &va) };
        assert_eq!(lost["error"]["field"], "external_id", "{lost:#}");
        assert_eq!(lost["error"]["request_id"], won["id"], "{lost:#}");
    }
    d.stop().await;
    assert_eq!(request_count(&env).await, 4, "one request per external id");
}

async fn an_opendsr_request_id_reused_for_another_type_gets_409_naming_subject_request_id(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let body = |kind: &str, email: &str| {
        json!({
            "subject_request_id": "a7551968-d5d6-44b2-9831-815ac9017798",
            "subject_request_type": kind,
            "submitted_time": "2026-11-20T09:00:00Z",
            "subject_identities": [{"identity_type": "email", "identity_value": email, "identity_format": "raw"}],
        })
        .to_string()
        .into_bytes()
    };
    let post = |b: Vec<u8>| d.post_raw("/opendsr/v1/requests", b, None, Some(TOKEN));
    let (code, v) = post(body("erasure", EMAIL)).await;
    assert_eq!(code, 201, "{v:#}");
    let (code, v) = post(body("erasure", EMAIL)).await;
    assert_eq!(code, 200, "the same request again: {v:#}");
    for (kind, email) in [("access", EMAIL), ("erasure", OTHER)] {
        let (code, v) = post(body(kind, email)).await;
        assert_eq!(code, 409, "{kind} {v:#}");
        assert_eq!(v["error"]["field"], "subject_request_id", "{v:#}");
    }
    d.stop().await;
    assert_eq!(request_count(&env).await, 1);
}

async fn the_cli_refuses_a_reused_external_id_for_another_subject_with_exit_2_naming_the_first_request(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    let file = |email: &'static str, kind: &'static str| {
        let args = [
            "request",
            kind,
            "--email",
            email,
            "--external-id",
            "ticket-4711",
            "--json",
        ];
        let env = &env;
        async move { env.lethe(&args).await }
    };
    let out = file(EMAIL, "erase").await;
    assert!(out.status.success(), "{}", show(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = file(EMAIL, "erase").await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["id"], id.as_str(), "the same request");

    for (email, kind, differs) in [(OTHER, "erase", "identities"), (EMAIL, "export", "kind")] {
        let out = file(email, kind).await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ticket-4711"), "{err}");
        assert!(
            err.contains(&id),
            "the message names the existing request: {err}"
        );
        assert!(err.contains(differs), "{err}");
        assert!(!err.contains(OTHER), "{err}");
    }
    assert_eq!(request_count(&env).await, 1, "nothing written");

    for bad in ["", "   ", "line\nbreak", &"x".repeat(201)] {
        let out = env
            .lethe(&["request", "erase", "--email", EMAIL, "--external-id", bad])
            .await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--external-id"), "{bad:?}: {err}");
    }
    assert_eq!(request_count(&env).await, 1, "nothing written");
}

async fn an_external_id_whose_identities_were_destroyed_matches_only_what_the_keyed_hash_proves(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--external-id",
            "form-old",
            "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    env.run_until_status(&id, &["completed"], 30).await;
    let store = env.store().await;
    let later = chrono::Utc::now().timestamp_millis() + 60_000;
    let shredded = store.shred_identities(later, 0).await.unwrap();
    assert_eq!(shredded, vec![id.clone()]);

    // The keyed hash and the masked form prove this one.
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            "Jane.Doe@Example.com",
            "--external-id",
            "form-old",
            "--json",
        ])
        .await;
    assert_eq!(v["id"], id.as_str());
    // Nothing proves the name was the same: a conflict, not a guess.
    let out = env
        .lethe(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--name",
            "Jane Doe",
            "--external-id",
            "form-old",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&id));
    let out = env
        .lethe(&[
            "request",
            "erase",
            "--email",
            OTHER,
            "--external-id",
            "form-old",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(request_count(&env).await, 1);
}
