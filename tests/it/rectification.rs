//! Rectification (Art. 16) through the real binary and the HTTP intake,
//! against a Stripe fake that answers like the real customers API
//! (docs.stripe.com/api/customers/update: `POST /v1/customers/{id}`,
//! form-encoded, answers the customer as it now is). The new values are
//! personal data: sealed with the identities, never in events, the chain or
//! the certificate (only field names), and gone from the file after shredding.

use crate::daemon::{intake_env, Daemon, TOKEN};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const OLD: &str = "jane.doe@example.com";
const NEW: &str = "jane.newname@example.org";
const NEW_NAME: &str = "Jane Newname";
const CUS: &str = "cus_NffrFeUfNV2Hib";
const STRIPE_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

fn form_field(req: &Request, k: &str) -> Option<String> {
    url::form_urlencoded::parse(&req.body)
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.into_owned())
}

fn query(req: &Request, k: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.into_owned())
}

/// A Stripe fake holding one customer. `echo`: whether an update answers the
/// customer with the new values (the real API), or (false) as it was.
async fn stripe(echo: bool) -> MockServer {
    let server = MockServer::start().await;
    let customer = Arc::new(Mutex::new(json!({
        "id": CUS, "object": "customer", "email": OLD, "name": "Jane Doe",
        "phone": null, "created": 1680893993, "livemode": false
    })));
    Mock::given(wiremock::matchers::any())
        .respond_with(move |req: &Request| {
            use base64::Engine as _;
            let j = |s: u16, v: Value| {
                ResponseTemplate::new(s)
                    .insert_header("content-type", "application/json")
                    .set_body_json(v)
            };
            let auth_ok = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .is_some_and(|b| b == format!("{STRIPE_KEY}:").into_bytes());
            if !auth_ok {
                return j(
                    401,
                    json!({"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}}),
                );
            }
            let mut c = customer.lock().unwrap();
            let list = |data: Vec<Value>| json!({"object": "list", "data": data, "has_more": false, "url": "/v1/customers"});
            match (req.method.as_str(), req.url.path()) {
                ("GET", "/v1/customers") => {
                    let hit = query(req, "email").as_deref() == c["email"].as_str();
                    j(200, list(if hit { vec![c.clone()] } else { vec![] }))
                }
                ("GET", "/v1/customers/search") => {
                    let q = query(req, "query").unwrap_or_default().to_lowercase();
                    let hit = c["email"]
                        .as_str()
                        .is_some_and(|e| q == format!("email:'{}'", e.to_lowercase()));
                    let data = if hit { vec![c.clone()] } else { vec![] };
                    j(
                        200,
                        json!({"object": "search_result", "data": data, "has_more": false, "next_page": null, "url": "/v1/customers/search"}),
                    )
                }
                ("POST", p) if p == format!("/v1/customers/{CUS}") => {
                    let mut updated = c.clone();
                    for k in ["email", "name", "phone"] {
                        if let Some(v) = form_field(req, k) {
                            updated[k] = json!(v);
                        }
                    }
                    if echo {
                        *c = updated.clone();
                        j(200, updated)
                    } else {
                        j(200, c.clone())
                    }
                }
                ("POST", p) if p.starts_with("/v1/customers/") => j(
                    404,
                    json!({"error": {"code": "resource_missing", "message": "No such customer", "param": "id", "type": "invalid_request_error"}}),
                ),
                _ => j(
                    404,
                    json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
                ),
            }
        })
        .mount(&server)
        .await;
    server
}

const FAST: &str = r#"kind = "rectification"
[retry]
initial = "100ms"
factor = 2.0
cap = "200ms"
max_attempts = 2
jitter = false
[[phase]]
name = "correct"
select = ["*"]
"#;

async fn world(backend: Backend, mc: &MockServer, stripe: &MockServer) -> TestEnv {
    let procs = format!(
        "identity_retention = \"1s\"\n{}\n[[processor]]\nname = \"payments\"\nconnector = \"stripe\"\nbase_url = \"{}\"\nsecrets = {{ secret_key = \"STRIPE_SECRET_KEY\" }}\n",
        fakes::processor_toml(mc),
        stripe.uri()
    );
    let mut env = TestEnv::new(backend, "workflows_dir = \"workflows\"", &procs).await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/rectification.toml"), FAST).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("STRIPE_SECRET_KEY", STRIPE_KEY);
    env
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of the SQLite database (file, WAL, journal).
fn sqlite_bytes(env: &TestEnv) -> Vec<u8> {
    let mut all = vec![];
    for e in std::fs::read_dir(env.dir.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("lethe.db") {
            all.extend(std::fs::read(e.path()).unwrap());
        }
    }
    all
}

on_both_backends!(
    a_rectification_updates_the_stripe_customer_and_records_field_names_never_values,
    a_stripe_answer_that_does_not_show_the_new_value_is_not_recorded_as_rectified,
    an_unknown_or_malformed_set_field_exits_2_naming_it_and_files_nothing,
    a_rectification_by_webhook_seals_the_new_values_and_a_missing_set_is_refused,
    a_manual_processor_gets_a_task_for_an_objection_and_for_a_rectification_with_the_new_values,
    a_zendesk_user_is_updated_with_exactly_the_changed_fields_and_a_similar_address_is_left_alone,
);

async fn a_rectification_updates_the_stripe_customer_and_records_field_names_never_values(
    backend: Backend,
) {
    let mc = fakes::mailchimp().await;
    let st_fake = stripe(true).await;
    let env = world(backend, &mc, &st_fake).await;

    let out = env
        .lethe(&[
            "request",
            "rectify",
            "--email",
            OLD,
            "--set",
            &format!("email={NEW}"),
            "--set",
            &format!("name={NEW_NAME}"),
            "--json",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "rectification");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(NEW));
    let id = v["id"].as_str().unwrap().to_string();
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let pay = TestEnv::step(&st, "payments");
    assert_eq!(pay["action"], "rectify");
    assert_eq!(pay["outcome"], "rectified", "{pay:#}");
    assert_eq!(pay["evidence"]["reference"], CUS);
    assert_eq!(
        pay["evidence"]["note"], "the answer shows the new email, name",
        "{pay:#}"
    );
    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["outcome"], "not_applicable", "{nl:#}");
    assert!(nl["evidence"]["note"]
        .as_str()
        .unwrap()
        .contains("connector `mailchimp` has no `rectify` action"));

    // The fake got exactly one update, with the new values and no other field.
    let got = st_fake.received_requests().await.unwrap_or_default();
    let posts: Vec<&Request> = got.iter().filter(|r| r.method.as_str() == "POST").collect();
    assert_eq!(posts.len(), 1, "{got:?}");
    assert_eq!(posts[0].url.path(), format!("/v1/customers/{CUS}"));
    assert_eq!(form_field(posts[0], "email").as_deref(), Some(NEW));
    assert_eq!(form_field(posts[0], "name").as_deref(), Some(NEW_NAME));
    assert_eq!(
        form_field(posts[0], "phone"),
        None,
        "unchanged fields are not sent"
    );
    assert!(posts[0].headers.get("idempotency-key").is_some());
    assert_eq!(mc.received_requests().await.unwrap_or_default().len(), 0);

    // Events and the certificate carry the field names, never the values.
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let created = events.iter().find(|e| e.kind == "request.created").unwrap();
    assert_eq!(created.detail["fields"], json!(["email", "name"]));
    let done = events
        .iter()
        .find(|e| e.kind == "step.done" && e.detail["processor"] == "payments")
        .unwrap();
    assert_eq!(done.detail["fields"], json!(["email", "name"]));
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
        .unwrap()
        .to_lowercase();
    for raw in [NEW, "newname", OLD] {
        assert!(!all.contains(raw), "`{raw}` in the events: {all}");
    }
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    let row = cert["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processor"] == "payments")
        .unwrap();
    assert_eq!(row["result"], "rectified");
    assert_eq!(row["fields"], json!(["email", "name"]));
    let text = cert.to_string().to_lowercase();
    assert!(!text.contains("newname"), "{cert:#}");
    let out = env.lethe(&["report", &id, "--format", "text"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fields changed: email, name"), "{text}");
    assert!(!text.to_lowercase().contains("newname"), "{text}");

    // The new values are sealed with the identities: once the retention has
    // passed they are shredded with them, and the file holds them nowhere.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(store
        .get_request(&id)
        .await
        .unwrap()
        .unwrap()
        .identities
        .is_none());
    let events = store.request_events(&id).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.kind == "request.identities_destroyed"));
    drop(store);
    if backend == Backend::Sqlite {
        let bytes = sqlite_bytes(&env);
        assert!(!bytes.is_empty());
        for raw in [NEW, NEW_NAME, "newname"] {
            assert!(
                !contains(&bytes.to_ascii_lowercase(), raw.to_lowercase().as_bytes()),
                "`{raw}` is in the SQLite file after shredding"
            );
        }
    }
}

async fn a_stripe_answer_that_does_not_show_the_new_value_is_not_recorded_as_rectified(
    backend: Backend,
) {
    let mc = fakes::mailchimp().await;
    let st_fake = stripe(false).await;
    let env = world(backend, &mc, &st_fake).await;
    let out = env
        .lethe(&[
            "request",
            "rectify",
            "--email",
            OLD,
            "--set",
            &format!("email={NEW}"),
            "--json",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let pay = TestEnv::step(&st, "payments");
    assert!(pay["outcome"].is_null(), "{pay:#}");
    let err = pay["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("does not show the new `email`"),
        "the error names the field: {err}"
    );
    assert!(!err.contains(NEW), "never the value: {err}");
}

async fn an_unknown_or_malformed_set_field_exits_2_naming_it_and_files_nothing(backend: Backend) {
    let mc = fakes::mailchimp().await;
    let st_fake = stripe(true).await;
    let env = world(backend, &mc, &st_fake).await;
    for (set, says) in [
        ("address=x@example.com", "unknown field `address`"),
        ("email=not-an-email", "the new `email` is not valid"),
        ("email", "expected FIELD=VALUE"),
    ] {
        let out = env
            .lethe(&["request", "rectify", "--email", OLD, "--set", set])
            .await;
        assert_eq!(out.status.code(), Some(2), "{set}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{set}: {err}");
    }
    // Without any --set: refused by the argument parser (exit 2).
    let out = env.lethe(&["request", "rectify", "--email", OLD]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // Nothing was filed (on SQLite, not even the store was created).
    if backend == Backend::Sqlite {
        assert!(!env.dir.path().join("lethe.db").exists());
    }
    let store = env.store().await;
    let list = store
        .list_requests(&lethe::store::RequestFilter::default())
        .await
        .unwrap();
    assert!(list.is_empty(), "{list:?}");
}

async fn a_rectification_by_webhook_seals_the_new_values_and_a_missing_set_is_refused(
    backend: Backend,
) {
    let mc = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &mc).await;
    let d = Daemon::start(&env, port).await;

    // No `set`: refused naming it.
    let body = json!({
        "kind": "rectification",
        "identities": {"email": OLD},
        "external_id": "form-rect-0",
    })
    .to_string();
    let (code, v) = d.webhook(&body).await;
    assert_eq!(code, 422, "{v:#}");
    assert!(v.to_string().contains("set"), "{v:#}");
    // An unknown field: refused naming it.
    let body = json!({
        "kind": "rectification",
        "identities": {"email": OLD},
        "external_id": "form-rect-1",
        "set": {"nickname": "JJ"},
    })
    .to_string();
    let (code, v) = d.webhook(&body).await;
    assert!((400..500).contains(&code), "{v:#}");
    assert!(v.to_string().contains("nickname"), "{v:#}");

    let body = json!({
        "kind": "rectification",
        "identities": {"email": OLD},
        "external_id": "form-rect-2",
        "set": {"email": NEW, "name": NEW_NAME},
    })
    .to_string();
    let (code, v) = d.webhook(&body).await;
    assert_eq!(code, 201, "{v:#}");
    assert_eq!(v["kind"], "rectification");
    let id = v["id"].as_str().unwrap().to_string();
    // Mailchimp's connector cannot rectify: not_applicable at once, so completed.
    let st = d.wait_status(&id, &["completed", "failed"], 30).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(st["steps"][0]["outcome"], "not_applicable", "{st:#}");
    // Redelivered: the same request.
    let (code, again) = d.webhook(&body).await;
    assert_eq!(code, 200, "{again:#}");
    assert_eq!(again["id"], id.as_str());

    let (code, rep) = d
        .get(&format!("/v1/requests/{id}/report"), Some(TOKEN))
        .await;
    assert_eq!(code, 200, "{rep:#}");
    let text = rep.to_string().to_lowercase();
    assert!(!text.contains("newname"), "{rep:#}");
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let created = events.iter().find(|e| e.kind == "request.created").unwrap();
    assert_eq!(created.detail["fields"], json!(["email", "name"]));
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
        .unwrap()
        .to_lowercase();
    assert!(!all.contains("newname"), "{all}");
}

async fn a_manual_processor_gets_a_task_for_an_objection_and_for_a_rectification_with_the_new_values(
    backend: Backend,
) {
    let hooks = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/hooks/lethe-tasks"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&hooks)
        .await;
    let procs = format!(
        "[[processor]]\nname = \"textmarketer\"\nconnector = \"manual\"\ncategory = \"sms\"\nbase_url = \"{}/hooks/lethe-tasks\"\nsettings = {{ contact = \"ops@shop.example\", remind_every = \"1d\" }}\nsecrets = {{ webhook_secret = \"TASKS_WEBHOOK_SECRET\" }}\n",
        hooks.uri()
    );
    let mut env = TestEnv::new(backend, "", &procs).await;
    env.set_env("TASKS_WEBHOOK_SECRET", "task-webhook-secret-for-tests");

    let obj = env
        .json(&["request", "object", "--email", OLD, "--json"])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rect = env
        .json(&[
            "request",
            "rectify",
            "--email",
            OLD,
            "--set",
            &format!("email={NEW}"),
            "--json",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&obj, &rect] {
        let st = env.run_until_status(id, &["waiting", "failed"], 30).await;
        assert_eq!(st["status"], "waiting", "{st:#}");
        assert_eq!(
            TestEnv::step(&st, "textmarketer")["state"],
            "awaiting_confirmation",
            "{st:#}"
        );
    }
    let tasks: Vec<Value> = hooks
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    let o = tasks.iter().find(|t| t["action"] == "object").unwrap();
    assert!(
        o["text"].as_str().unwrap().contains("Stop processing"),
        "{o:#}"
    );
    assert!(o.get("set").is_none(), "{o:#}");
    let r = tasks.iter().find(|t| t["action"] == "rectify").unwrap();
    assert_eq!(
        r["set"]["email"], NEW,
        "the contact is told the new value: {r:#}"
    );
    assert!(r["text"].as_str().unwrap().contains(NEW), "{r:#}");
    // …but lethe's own record of the task never holds it.
    let store = env.store().await;
    let events = store.request_events(&rect).await.unwrap();
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
        .unwrap()
        .to_lowercase();
    assert!(!all.contains("newname"), "{all}");
    let out = env
        .lethe(&[
            "confirm",
            &rect,
            "--processor",
            "textmarketer",
            "--note",
            "changed",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&rect).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "textmarketer")["outcome"], "confirmed");
}

const ZD_AGENT: &str = "agent@shop.example";
const ZD_TOKEN: &str = "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv";
const NEW_PHONE: &str = "+447700900123";

/// A Zendesk fake: `GET /api/v2/users/search?query=` answers the subject and a
/// similar address (the search is fuzzy), `PUT /api/v2/users/{id}` merges
/// `{"user": {…}}` and answers the user as it now is (developer.zendesk.com
/// …/users/users/#update-user).
async fn zendesk() -> MockServer {
    let server = MockServer::start().await;
    let users = Arc::new(Mutex::new(vec![
        json!({"id": 9001, "email": OLD, "name": "Jane Doe", "phone": null, "role": "end-user"}),
        json!({"id": 9002, "email": "jane.doe@example.com.au", "name": "Jane Doe", "phone": null, "role": "end-user"}),
    ]));
    Mock::given(wiremock::matchers::any())
        .respond_with(move |req: &Request| {
            use base64::Engine as _;
            let j = |s: u16, v: Value| {
                ResponseTemplate::new(s)
                    .insert_header("content-type", "application/json")
                    .set_body_json(v)
            };
            let auth_ok = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .is_some_and(|b| b == format!("{ZD_AGENT}/token:{ZD_TOKEN}").into_bytes());
            if !auth_ok {
                return j(401, json!({"error": "Couldn't authenticate you"}));
            }
            let mut u = users.lock().unwrap();
            let p = req.url.path().to_string();
            match req.method.as_str() {
                "GET" if p == "/api/v2/users/search" => {
                    let q = query(req, "query").unwrap_or_default().to_lowercase();
                    let hits: Vec<Value> = u
                        .iter()
                        .filter(|x| x["email"].as_str().is_some_and(|e| e.contains(&q)))
                        .cloned()
                        .collect();
                    j(200, json!({"users": hits, "next_page": null, "previous_page": null, "count": hits.len()}))
                }
                "PUT" if p.starts_with("/api/v2/users/") => {
                    let id: i64 = p.trim_start_matches("/api/v2/users/").parse().unwrap_or(0);
                    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                        return j(400, json!({"error": "InvalidJSON"}));
                    };
                    let Some(user) = u.iter_mut().find(|x| x["id"] == id) else {
                        return j(404, json!({"error": "RecordNotFound", "description": "Not found"}));
                    };
                    if let Some(m) = body["user"].as_object() {
                        for (k, v) in m {
                            user[k] = v.clone();
                        }
                    }
                    j(200, json!({"user": user.clone()}))
                }
                _ => j(404, json!({"error": "InvalidEndpoint", "description": "Not found"})),
            }
        })
        .mount(&server)
        .await;
    server
}

async fn a_zendesk_user_is_updated_with_exactly_the_changed_fields_and_a_similar_address_is_left_alone(
    backend: Backend,
) {
    let zd = zendesk().await;
    let procs = format!(
        "[[processor]]\nname = \"helpdesk\"\nconnector = \"zendesk\"\nbase_url = \"{}\"\nsettings = {{ agent_email = \"{ZD_AGENT}\" }}\nsecrets = {{ api_token = \"ZENDESK_API_TOKEN\" }}\n",
        zd.uri()
    );
    let mut env = TestEnv::new(backend, "", &procs).await;
    env.set_env("ZENDESK_API_TOKEN", ZD_TOKEN);
    let v = env
        .json(&[
            "request",
            "rectify",
            "--email",
            OLD,
            "--set",
            &format!("name={NEW_NAME}"),
            "--set",
            "phone=+44 7700 900123",
            "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "helpdesk");
    assert_eq!(step["outcome"], "rectified", "{step:#}");
    assert_eq!(step["evidence"]["reference"], "9001");
    assert_eq!(
        step["evidence"]["note"],
        "the answer shows the new name, phone"
    );
    let got = zd.received_requests().await.unwrap_or_default();
    let puts: Vec<&Request> = got.iter().filter(|r| r.method.as_str() == "PUT").collect();
    assert_eq!(puts.len(), 1, "only the exact match is updated: {got:?}");
    assert_eq!(puts[0].url.path(), "/api/v2/users/9001");
    let body: Value = serde_json::from_slice(&puts[0].body).unwrap();
    assert_eq!(
        body,
        json!({"user": {"name": NEW_NAME, "phone": NEW_PHONE}}),
        "exactly the changed fields, the phone in E.164"
    );
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
        .unwrap()
        .to_lowercase();
    assert!(!all.contains("newname") && !all.contains("900123"), "{all}");
}
