//! Objection ("unsubscribe everywhere", Art. 21) through the real binary and
//! the HTTP intake: Mailchimp and Mailgun fakes that answer like the real
//! APIs (PROCESSORS.md §1.1, §1.2), and Stripe, whose connector has no
//! `object` action, recorded `not_applicable` with its reason.

use crate::daemon::{intake_env, Daemon, TOKEN};
use crate::fakes::{self, ApiKey, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const EMAIL: &str = "Jane.Doe@Example.com";
const RAW: &str = "jane.doe@example.com";
const MG_DOMAIN: &str = "mg.example.com";
const MG_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
const STRIPE_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

/// Retries in milliseconds, so a test that must fail does so quickly.
const FAST_OBJECTION: &str = r#"kind = "objection"
[retry]
initial = "100ms"
factor = 2.0
cap = "200ms"
max_attempts = 2
jitter = false
[[phase]]
name = "stop mail"
select = ["category:mailing_list"]
[[phase]]
name = "everything else"
select = ["*"]
"#;

/// Mailchimp's answer to `PATCH …/members/{hash}`: the member as it now is.
fn member_with_status(status: &str) -> Value {
    let mut m = fakes::member_doc(EMAIL);
    m["status"] = json!(status);
    m
}

/// Mount Mailchimp's `PATCH …/members/{hash}` answering the member with `status`.
async fn mailchimp_patch_answers(server: &MockServer, status: &str) {
    Mock::given(method("PATCH"))
        .and(path(fakes::member_path(EMAIL)))
        .and(ApiKey(true))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_json(member_with_status(status)),
        )
        .with_priority(10)
        .mount(server)
        .await;
}

/// Is a form body's field equal to `want`?
fn form_field(req: &Request, k: &str) -> Option<String> {
    url::form_urlencoded::parse(&req.body)
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.into_owned())
}

fn basic_user_is(req: &Request, user: &str, pass: &str) -> bool {
    use base64::Engine as _;
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|up| up == format!("{user}:{pass}"))
}

/// A Mailgun fake: `POST /v3/{domain}/unsubscribes` (form `address`, `tag`)
/// answers 200 `{"message": "Address has been added to the unsubscribes table"}`
/// and records the address; `GET /v3/{domain}/unsubscribes/{address}` answers
/// the record once it exists, else Mailgun's JSON 404.
async fn mailgun() -> MockServer {
    let server = MockServer::start().await;
    let added = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = added.clone();
    Mock::given(wiremock::matchers::any())
        .respond_with(move |req: &Request| {
            let j = |s: u16, v: Value| {
                ResponseTemplate::new(s)
                    .insert_header("content-type", "application/json")
                    .set_body_json(v)
            };
            if !basic_user_is(req, "api", MG_KEY) {
                return ResponseTemplate::new(401).set_body_string("Forbidden");
            }
            let p = req.url.path().to_string();
            let list = format!("/v3/{MG_DOMAIN}/unsubscribes");
            let mut a = seen.lock().unwrap();
            match req.method.as_str() {
                "POST" if p == list => match form_field(req, "address") {
                    Some(addr) => {
                        a.push(addr.to_lowercase());
                        j(
                            200,
                            json!({"message": "Address has been added to the unsubscribes table"}),
                        )
                    }
                    None => j(400, json!({"message": "'address' parameter is missing"})),
                },
                "GET" if p.starts_with(&format!("{list}/")) => {
                    let addr = url::form_urlencoded::parse(
                        format!("a={}", p.trim_start_matches(&format!("{list}/"))).as_bytes(),
                    )
                    .next()
                    .map(|(_, v)| v.to_lowercase())
                    .unwrap_or_default();
                    if a.contains(&addr) {
                        j(
                            200,
                            json!({"address": addr, "tags": ["*"], "created_at": "Sat, 05 Dec 2026 09:00:00 UTC"}),
                        )
                    } else {
                        j(404, json!({"message": "Address not found in unsubscribers table"}))
                    }
                }
                _ => ResponseTemplate::new(404).set_body_string("404 page not found"),
            }
        })
        .mount(&server)
        .await;
    server
}

async fn world(backend: Backend, mc: &MockServer, mg: &MockServer, stripe: &MockServer) -> TestEnv {
    let procs = format!(
        "{}\n[[processor]]\nname = \"mail\"\nconnector = \"mailgun\"\nbase_url = \"{}\"\nsettings = {{ list = \"customers@{MG_DOMAIN}\", domain = \"{MG_DOMAIN}\" }}\nsecrets = {{ api_key = \"MAILGUN_API_KEY\" }}\n\n[[processor]]\nname = \"payments\"\nconnector = \"stripe\"\nbase_url = \"{}\"\nsecrets = {{ secret_key = \"STRIPE_SECRET_KEY\" }}\n",
        fakes::processor_toml(mc),
        mg.uri(),
        stripe.uri()
    );
    let mut env = TestEnv::new(backend, "workflows_dir = \"workflows\"", &procs).await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(
        env.dir.path().join("workflows/objection.toml"),
        FAST_OBJECTION,
    )
    .unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("MAILGUN_API_KEY", MG_KEY);
    env.set_env("STRIPE_SECRET_KEY", STRIPE_KEY);
    env
}

async fn object(env: &TestEnv, email: &str) -> String {
    let v = env
        .json(&["request", "object", "--email", email, "--json"])
        .await;
    assert_eq!(v["kind"], "objection", "{v:#}");
    v["id"].as_str().expect("id").to_string()
}

on_both_backends!(
    an_objection_unsubscribes_at_mailchimp_and_mailgun_with_exactly_the_documented_calls_and_is_not_applicable_at_stripe_with_the_reason,
    mailchimp_answering_200_with_the_member_still_subscribed_is_not_recorded_as_objected,
    an_objection_filed_by_webhook_is_carried_out_by_the_daemon,
);

async fn an_objection_unsubscribes_at_mailchimp_and_mailgun_with_exactly_the_documented_calls_and_is_not_applicable_at_stripe_with_the_reason(
    backend: Backend,
) {
    let mc = fakes::mailchimp().await;
    fakes::add_member(&mc, EMAIL).await;
    mailchimp_patch_answers(&mc, "unsubscribed").await;
    let mg = mailgun().await;
    let stripe = MockServer::start().await;
    let env = world(backend, &mc, &mg, &stripe).await;

    let id = object(&env, EMAIL).await;
    let st = env
        .run_until_status(
            &id,
            &["completed", "completed_with_exceptions", "failed"],
            30,
        )
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");

    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["action"], "object", "{nl:#}");
    assert_eq!(nl["outcome"], "objected", "{nl:#}");
    assert_eq!(nl["evidence"]["status"], 200);
    let mail = TestEnv::step(&st, "mail");
    assert_eq!(mail["outcome"], "objected", "{mail:#}");
    let pay = TestEnv::step(&st, "payments");
    assert_eq!(pay["state"], "done", "{pay:#}");
    assert_eq!(pay["outcome"], "not_applicable", "{pay:#}");
    assert_eq!(pay["attempts"], 0, "no call was made: {pay:#}");
    let note = pay["evidence"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("connector `stripe` has no `object` action")
            && note.contains("Stripe has no marketing opt-out"),
        "{note}"
    );

    // Mailchimp: exactly one PATCH of the member with {"status": "unsubscribed"};
    // nothing archived or deleted.
    let got = mc.received_requests().await.unwrap_or_default();
    let patches: Vec<&Request> = got
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].url.path(), fakes::member_path(EMAIL));
    let body: Value = serde_json::from_slice(&patches[0].body).unwrap();
    assert_eq!(body, json!({"status": "unsubscribed"}));
    assert!(
        got.iter()
            .all(|r| matches!(r.method.as_str(), "PATCH" | "GET")),
        "only the PATCH (and reads) reach Mailchimp"
    );
    // Mailgun: one POST /v3/{domain}/unsubscribes with address and tag=*, then the read-back.
    let got = mg.received_requests().await.unwrap_or_default();
    let posts: Vec<&Request> = got.iter().filter(|r| r.method.as_str() == "POST").collect();
    assert_eq!(posts.len(), 1, "{got:?}");
    assert_eq!(posts[0].url.path(), format!("/v3/{MG_DOMAIN}/unsubscribes"));
    assert_eq!(form_field(posts[0], "address").as_deref(), Some(RAW));
    assert_eq!(form_field(posts[0], "tag").as_deref(), Some("*"));
    assert!(got.iter().all(|r| r.method.as_str() != "DELETE"));
    // Stripe: never called.
    assert_eq!(
        stripe.received_requests().await.unwrap_or_default().len(),
        0
    );

    // The certificate, in every format, shows the step and its reason.
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    let row = cert["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "payments")
        .unwrap();
    assert_eq!(row["result"], "not_applicable", "{row:#}");
    assert!(row["not_applicable_reason"]
        .as_str()
        .unwrap()
        .contains("Stripe has no marketing opt-out"));
    let nl_row = cert["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "newsletter")
        .unwrap();
    assert_eq!(nl_row["result"], "objected", "{nl_row:#}");
    for format in ["text", "html"] {
        let out = env.lethe(&["report", &id, "--format", format]).await;
        assert!(out.status.success(), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("not_applicable"), "{format}: {text}");
        assert!(
            text.contains("Stripe has no marketing opt-out"),
            "{format}: {text}"
        );
        assert!(!text.to_lowercase().contains(RAW), "{format}");
    }

    // The period report counts it and still adds up.
    let rep = env
        .json(&[
            "report",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--format",
            "json",
        ])
        .await;
    assert_eq!(rep["requests"]["objection"], 1, "{rep:#}");
    assert_eq!(rep["requests"]["received"], 1, "{rep:#}");
    for p in rep["processors"].as_array().unwrap() {
        let sum: u64 = [
            "completed",
            "failed",
            "held",
            "skipped",
            "open",
            "cancelled",
        ]
        .iter()
        .map(|k| p[k].as_u64().unwrap())
        .sum();
        assert_eq!(p["steps"].as_u64().unwrap(), sum, "{p:#}");
    }
    let pay = rep["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "payments")
        .unwrap();
    assert_eq!(pay["not_applicable"], 1, "{pay:#}");
    assert_eq!(pay["outcomes"]["not_applicable"], 1, "{pay:#}");
}

async fn mailchimp_answering_200_with_the_member_still_subscribed_is_not_recorded_as_objected(
    backend: Backend,
) {
    let mc = fakes::mailchimp().await;
    fakes::add_member(&mc, EMAIL).await;
    mailchimp_patch_answers(&mc, "subscribed").await;
    let mg = mailgun().await;
    let stripe = MockServer::start().await;
    let env = world(backend, &mc, &mg, &stripe).await;

    let id = object(&env, EMAIL).await;
    let st = env
        .run_until_status(&id, &["failed", "completed"], 30)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["state"], "failed", "{nl:#}");
    assert!(nl["outcome"].is_null(), "{nl:#}");
    let err = nl["last_error"].to_string();
    assert!(err.contains("/status"), "the error names the field: {err}");
    // Mailing lists go first: nothing after it ran while it failed.
    assert_eq!(TestEnv::step(&st, "mail")["state"], "done");
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    let row = cert["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "newsletter")
        .unwrap();
    assert_eq!(row["result"], "failed", "no opt-out is claimed: {row:#}");
}

async fn an_objection_filed_by_webhook_is_carried_out_by_the_daemon(backend: Backend) {
    let mc = fakes::mailchimp().await;
    fakes::add_member(&mc, EMAIL).await;
    mailchimp_patch_answers(&mc, "unsubscribed").await;
    let (env, port) = intake_env(backend, &mc).await;
    let d = Daemon::start(&env, port).await;

    let body = json!({
        "kind": "objection",
        "identities": {"email": EMAIL},
        "external_id": "form-obj-1",
    })
    .to_string();
    let (code, v) = d.webhook(&body).await;
    assert_eq!(code, 201, "{v:#}");
    assert_eq!(v["kind"], "objection");
    let id = v["id"].as_str().unwrap().to_string();
    let st = d.wait_status(&id, &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(st["steps"][0]["outcome"], "objected", "{st:#}");
    assert_eq!(
        fakes::count(&mc, "PATCH", &fakes::member_path(EMAIL)).await,
        1
    );

    // OpenDSR has no objection type: refused, naming it, nothing filed; and
    // discovery advertises only what it maps.
    for t in ["objection", "rectification"] {
        let srid = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "subject_request_id": srid,
            "subject_request_type": t,
            "submitted_time": "2026-11-20T09:00:00Z",
            "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
        })
        .to_string();
        let (code, v) = d
            .post_raw("/opendsr/v1/requests", body.into_bytes(), None, Some(TOKEN))
            .await;
        assert!((400..500).contains(&code), "{t}: {code} {v:#}");
        assert!(v.to_string().contains(t), "{t}: {v:#}");
    }
    let (code, disc) = d.get("/opendsr/v1/discovery", None).await;
    assert_eq!(code, 200, "{disc:#}");
    assert_eq!(
        disc["supported_subject_request_types"],
        json!(["erasure", "access", "portability"])
    );
    let (_, list) = d.get("/v1/requests", Some(TOKEN)).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
}
