//! Suppression of returning identities (issue 14.3), through the real binary
//! and daemon: an erased subject that re-appears in a Mailchimp audience is
//! found by `lethe suppression check` (the fake lists members like the real
//! `GET /lists/{id}/members?fields=…&count=…&offset=…`) and erased again by a
//! follow-up request linked to the first; new requests for a suppressed
//! identity are accepted with a warning.

use crate::daemon::{intake_env, Daemon};
use crate::fakes::{self, ApiKey, API_KEY, LIST};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "Jane.Doe@Example.com";
const RAW: &str = "jane.doe@example.com";
const OTHER: &str = "someone.else@example.org";

/// The audience's member list as `GET /lists/{id}/members` answers it (one page).
async fn list_members(server: &MockServer, emails: &[&str], priority: u8) {
    let members: Vec<Value> = emails.iter().map(|e| json!({"email_address": e})).collect();
    Mock::given(method("GET"))
        .and(path(format!("/3.0/lists/{LIST}/members")))
        .and(ApiKey(true))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "members": members,
            "total_items": emails.len(),
        })))
        .with_priority(priority)
        .mount(server)
        .await;
}

async fn world(backend: Backend, server: &MockServer) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "identity_retention = \"1s\"\n\n{}",
            fakes::processor_toml(server)
        ),
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

on_both_backends!(
    an_erased_subject_re_added_to_the_audience_is_erased_again_by_exactly_one_linked_follow_up,
    a_new_request_for_a_suppressed_identity_is_accepted_with_a_warning,
    the_daemon_runs_the_suppression_check_on_its_schedule_and_erases_a_returning_subject,
);

async fn an_erased_subject_re_added_to_the_audience_is_erased_again_by_exactly_one_linked_follow_up(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    list_members(&server, &[OTHER], 20).await;
    let env = world(backend, &server).await;
    let original = env.erase(EMAIL).await;
    let st = env.run_until_status(&original, &["completed"], 30).await;
    assert_eq!(TestEnv::step(&st, "newsletter")["outcome"], "erased");

    // The list holds the keyed hash, shown masked; never the address.
    let out = env.lethe(&["suppression", "list", "--json"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["active"], 1, "{list:#}");
    assert_eq!(list["entries"][0]["kind"], "email");
    assert_eq!(list["entries"][0]["masked"], "j***@example.com");
    assert_eq!(list["entries"][0]["request_id"], original.as_str());
    assert!(!String::from_utf8_lossy(&out.stdout)
        .to_lowercase()
        .contains(RAW));

    // Not back yet: nothing to do.
    let check = env.json(&["suppression", "check", "--json"]).await;
    assert_eq!(
        check["processors"][0]["processor"], "newsletter",
        "{check:#}"
    );
    assert_eq!(check["processors"][0]["listed"], 1, "{check:#}");
    assert_eq!(check["reappeared"], json!([]), "{check:#}");
    let listed = server.received_requests().await.unwrap_or_default();
    let call = listed
        .iter()
        .find(|r| r.url.path() == format!("/3.0/lists/{LIST}/members"))
        .expect("the member list was read");
    let q: std::collections::HashMap<_, _> = call.url.query_pairs().into_owned().collect();
    assert_eq!(q.get("count").map(String::as_str), Some("1000"));
    assert_eq!(q.get("offset").map(String::as_str), Some("0"));
    assert_eq!(
        q.get("fields").map(String::as_str),
        Some("members.email_address,total_items")
    );

    // Re-imported from an old CSV, in another case.
    list_members(&server, &[OTHER, "JANE.DOE@example.com"], 10).await;
    fakes::add_member(&server, EMAIL).await;
    let check = env.json(&["suppression", "check", "--json"]).await;
    let re = check["reappeared"].as_array().expect("reappeared");
    assert_eq!(re.len(), 1, "{check:#}");
    assert_eq!(re[0]["original"], original.as_str());
    assert_eq!(re[0]["masked"], "j***@example.com");
    assert_eq!(re[0]["opened"], true);
    let follow_up = re[0]["follow_up"].as_str().unwrap().to_string();
    assert!(!check.to_string().to_lowercase().contains(RAW));

    // Idempotent while the follow-up is open.
    let again = env.json(&["suppression", "check", "--json"]).await;
    assert_eq!(again["reappeared"][0]["follow_up"], follow_up.as_str());
    assert_eq!(again["reappeared"][0]["opened"], false);
    let all = env.json(&["list", "--json"]).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all:#}");

    // The follow-up erases the subject again.
    let st = env.run_until_status(&follow_up, &["completed"], 30).await;
    assert_eq!(st["follows"], original.as_str(), "{st:#}");
    assert_eq!(st["kind"], "erasure");
    assert_eq!(TestEnv::step(&st, "newsletter")["outcome"], "erased");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        2
    );

    // Both certificates show the link; both chains hold it.
    let c1 = env.json(&["report", &original, "--format", "json"]).await;
    assert_eq!(
        c1["request"]["reappeared"][0]["follow_up"],
        follow_up.as_str(),
        "{c1:#}"
    );
    assert_eq!(c1["request"]["reappeared"][0]["processor"], "newsletter");
    let c2 = env.json(&["report", &follow_up, "--format", "json"]).await;
    assert_eq!(c2["request"]["follows"], original.as_str(), "{c2:#}");
    let text = env.lethe(&["report", &original]).await;
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&follow_up),
        "{}",
        show(&text)
    );
    for (id, want) in [(&original, "Re-appeared"), (&follow_up, "Follows")] {
        let html = env.lethe(&["report", id, "--format", "html"]).await;
        assert!(html.status.success(), "{}", show(&html));
        let html = String::from_utf8_lossy(&html.stdout);
        assert!(
            html.contains(want) && html.contains(follow_up.as_str()),
            "{html}"
        );
        assert!(!html.to_lowercase().contains(RAW));
    }
    let store = env.store().await;
    let ev1 = store.request_events(&original).await.unwrap();
    let n = ev1
        .iter()
        .filter(|e| e.kind == "suppression.reappeared")
        .count();
    assert_eq!(n, 1, "{ev1:?}");
    let ev2 = store.request_events(&follow_up).await.unwrap();
    let created = ev2.iter().find(|e| e.kind == "request.created").unwrap();
    assert_eq!(created.detail["follows"], original.as_str());
    let verify = env.lethe(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", show(&verify));

    // After shredding, no stored byte holds the address (only keyed hashes).
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let dump = crate::scrubbing::dump_store(&env, backend)
        .await
        .to_lowercase();
    assert!(!dump.contains(RAW), "a raw email is stored");
    assert!(!dump.contains("jane.doe"), "a raw email is stored");
}

async fn a_new_request_for_a_suppressed_identity_is_accepted_with_a_warning(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let body = json!({"kind": "erasure", "identities": {"email": EMAIL}, "external_id": "form-1"});
    let (code, v) = d.webhook(&body.to_string()).await;
    assert_eq!(code, 201, "{v:#}");
    assert!(v.get("warnings").is_none(), "{v:#}");
    let first = v["id"].as_str().unwrap().to_string();
    d.wait_status(&first, &["completed"], 30).await;

    // The webhook: accepted (201), with a warning naming the earlier erasure.
    let body = json!({"kind": "erasure", "identities": {"email": RAW, "phone": "+44 7700 900123"}, "external_id": "form-2"});
    let (code, v) = d.webhook(&body.to_string()).await;
    assert_eq!(code, 201, "{v:#}");
    let w = v["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{v:#}");
    let w = w[0].as_str().unwrap();
    assert!(
        w.starts_with("identity matches a suppressed subject of request") && w.contains(&first),
        "{w}"
    );
    assert!(!w.contains(RAW), "{w}");

    // The CLI says the same.
    let out = env
        .lethe(&["request", "export", "--email", EMAIL, "--json"])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["warnings"][0].as_str().unwrap_or("").contains(&first),
        "{v:#}"
    );
    // OpenDSR says the same, beside its own fields.
    let body = json!({
        "subject_request_id": uuid::Uuid::new_v4().to_string(),
        "subject_request_type": "erasure",
        "submitted_time": "2026-11-20T09:00:00Z",
        "subject_identities": [
            {"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}
        ],
    })
    .to_string();
    let (code, v) = d
        .post_raw(
            "/opendsr/v1/requests",
            body.into_bytes(),
            None,
            Some(crate::daemon::TOKEN),
        )
        .await;
    assert_eq!(code, 201, "{v:#}");
    assert!(
        v["warnings"][0].as_str().unwrap_or("").contains(&first),
        "{v:#}"
    );
    // Another subject: no warning.
    let out = env
        .lethe(&["request", "erase", "--email", OTHER, "--json"])
        .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("warnings").is_none(), "{v:#}");
    d.stop().await;
}

async fn the_daemon_runs_the_suppression_check_on_its_schedule_and_erases_a_returning_subject(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    list_members(&server, &[OTHER], 20).await;
    let port = crate::daemon::free_port();
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "[worker]\nidle_poll = \"100ms\"\nlease = \"20s\"\n\n[suppression]\ncheck_every = \"1h\"\n\n[intake]\nlisten = \"127.0.0.1:{port}\"\n\n{}timeout = \"10s\"\n",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("LETHE_WEBHOOK_SECRET", crate::daemon::SECRET);
    env.set_env("LETHE_API_TOKEN", crate::daemon::TOKEN);
    env.set_env("LETHE_CALLBACK_KEY", crate::daemon::CALLBACK_KEY);
    let original = env.erase(EMAIL).await;
    env.run_until_status(&original, &["completed"], 30).await;
    list_members(&server, &[OTHER, EMAIL], 10).await;
    fakes::add_member(&server, EMAIL).await;

    // The first run is due at once; the next one is an hour away (a row).
    let d = Daemon::start(&env, port).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let follow_up = loop {
        let store = env.store().await;
        let f = store.follow_ups(&original).await.unwrap();
        if let Some(r) = f.iter().find(|r| r.status.as_str() == "completed") {
            assert_eq!(f.len(), 1);
            break r.id.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed follow-up; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let log = d.stop().await;
    assert!(log.contains("re-appeared"), "{log}");
    assert!(!log.to_lowercase().contains(RAW), "{log}");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        2
    );
    let c = env.json(&["report", &original, "--format", "json"]).await;
    assert_eq!(
        c["request"]["reappeared"][0]["follow_up"],
        follow_up.as_str()
    );
    // A restarted daemon does not run it again before its time.
    let d = Daemon::start(&env, port).await;
    let log = d.stop().await;
    assert!(!log.contains("suppression check done"), "{log}");
}
