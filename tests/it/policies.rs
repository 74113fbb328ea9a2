//! Saga policies through the CLI: legal holds (workflow and ad hoc), soft-delete
//! windows, cooling-off, the deadline extension, Retry-After, concurrency limits
//! and pausing a processor that fails every call.

use crate::fakes::{self, API_KEY, LIST};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{bearer_token, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACC_LIST: &str = "acc00001";

fn workflow(extra: &str) -> String {
    format!(
        "kind = \"erasure\"\n{extra}\n[retry]\ninitial = \"300ms\"\nfactor = 2.0\ncap = \"2s\"\nmax_attempts = 5\njitter = false\n\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n"
    )
}

async fn env(backend: Backend, processors: &str, wf_extra: &str, top_extra: &str) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        &format!("workflows_dir = \"workflows\"\nconnectors_dir = \"connectors\"\n{top_extra}"),
        processors,
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::create_dir_all(env.dir.path().join("connectors")).unwrap();
    std::fs::write(
        env.dir.path().join("workflows/erasure.toml"),
        workflow(wf_extra),
    )
    .unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

fn run_at_ms(step: &Value, field: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(
        step[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {step:#}")),
    )
    .unwrap()
    .timestamp_millis()
}

on_both_backends!(
    a_workflow_hold_defers_one_processor_while_the_others_complete_then_erases_when_it_ends,
    an_ad_hoc_hold_blocks_a_new_request_at_planning_and_one_added_later_stops_the_call,
    a_grace_window_verified_clean_is_purged_and_a_dirty_one_is_permanently_deleted,
    cancel_during_cooling_off_leaves_every_processor_untouched,
);

async fn a_workflow_hold_defers_one_processor_while_the_others_complete_then_erases_when_it_ends(
    backend: Backend,
) {
    const EMAIL: &str = "held@example.com";
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    fakes::add_member_to(&server, ACC_LIST, EMAIL).await;
    let procs = format!(
        "{}\n{}",
        fakes::processor_toml(&server),
        fakes::named_processor_toml(&server, "accounts", ACC_LIST)
    );
    let hold = "[[hold]]\nselect = [\"accounts\"]\nbasis = \"legal obligation, HMRC: 6 years (Art. 17(3)(b))\"\nduration = \"3s\"\n";
    // [[hold]] must follow the phases in TOML; append it after the workflow body.
    let env = env(backend, &procs, "", "").await;
    let wf = format!("{}\n{hold}", workflow(""));
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), wf).unwrap();

    let filed = Instant::now();
    let id = env.erase(EMAIL).await;
    let st = env
        .run_until_status(
            &id,
            &["completed_with_exceptions", "completed", "failed"],
            20,
        )
        .await;
    assert_eq!(st["status"], "completed_with_exceptions", "{st:#}");
    assert_eq!(TestEnv::step(&st, "newsletter")["outcome"], "erased");
    let acc = TestEnv::step(&st, "accounts");
    assert_eq!(acc["state"], "held");
    assert_eq!(
        acc["hold"]["basis"],
        "legal obligation, HMRC: 6 years (Art. 17(3)(b))"
    );
    assert!(acc["hold"]["until"].is_string());
    assert!(
        st["completed_at"].is_string(),
        "the subject can be answered while the hold runs"
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path_in(ACC_LIST, EMAIL)).await,
        0,
        "no erase call reaches a held processor"
    );

    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    assert!(
        filed.elapsed() >= Duration::from_secs(3),
        "the erase ran only after the hold ended"
    );
    let acc = TestEnv::step(&st, "accounts");
    assert_eq!(acc["outcome"], "erased", "{st:#}");
    assert_eq!(acc["attempts"], 1, "waiting under a hold uses no attempt");
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path_in(ACC_LIST, EMAIL)).await,
        1
    );
}

async fn an_ad_hoc_hold_blocks_a_new_request_at_planning_and_one_added_later_stops_the_call(
    backend: Backend,
) {
    const HELD: &str = "litigant@example.com";
    const LATE: &str = "late.hold@example.com";
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, HELD).await;
    fakes::add_member(&server, LATE).await;
    let env = env(backend, &fakes::processor_toml(&server), "", "").await;

    // A litigation hold with no end, placed before the request arrives.
    let h = env
        .json(&[
            "hold",
            "add",
            "--email",
            HELD,
            "--basis",
            "litigation: case 2026-114 (Art. 17(3)(e))",
            "--json",
        ])
        .await;
    let hold_id = h["id"].as_str().unwrap().to_string();
    assert_eq!(h["subject"], "l***@example.com");
    assert!(h["until"].is_null());
    let list = env.json(&["hold", "list", "--json"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let v = env
        .json(&["request", "erase", "--email", HELD, "--json"])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let step = TestEnv::step(&v, "newsletter");
    assert_eq!(step["state"], "held", "held at planning: {v:#}");
    assert_eq!(
        step["hold"]["basis"],
        "litigation: case 2026-114 (Art. 17(3)(e))"
    );
    assert!(step["hold"]["until"].is_null(), "until released");
    assert_eq!(v["status"], "completed_with_exceptions");
    env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(HELD)).await,
        0
    );

    // A hold placed after a request was filed still stops its erase call.
    let id2 = env.erase(LATE).await;
    let out = env
        .lethe(&[
            "hold",
            "add",
            "--email",
            LATE,
            "--basis",
            "regulator inquiry",
            "--until",
            "2s",
            "--processor",
            "newsletter",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    env.lethe(&["run", "--until-idle"]).await;
    let st2 = env.status(&id2).await;
    assert_eq!(
        TestEnv::step(&st2, "newsletter")["state"],
        "held",
        "{st2:#}"
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(LATE)).await,
        0
    );
    // It ends by itself.
    let st2 = env
        .run_until_status(&id2, &["completed", "failed"], 20)
        .await;
    assert_eq!(TestEnv::step(&st2, "newsletter")["outcome"], "erased");

    // Releasing the litigation hold lets the first erasure run at once.
    let out = env.lethe(&["hold", "release", &hold_id]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["outcome"],
        "erased",
        "{st:#}"
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(HELD)).await,
        1
    );
    let out = env.lethe(&["hold", "release", &hold_id]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a released hold cannot be released again: {}",
        show(&out)
    );
}

/// A ticketing API with a 30-day deletion queue (modelled on Zendesk): search, soft delete, permanent delete.
const TRASH_CONNECTOR: &str = r#"
name = "trashdesk"
category = "ticketing"
secrets = ["token"]
soft_delete_window = "30d"
[auth]
scheme = "bearer"
token = "{{ secrets.token }}"
[actions.lookup]
requires = ["email"]
[[actions.lookup.calls]]
path = "/api/v2/users/search"
query = { query = "{{ subject.email }}" }
extract = { user_id = "/users/0/id" }
missing_means_not_found = true
[actions.export]
requires = ["email"]
[[actions.export.calls]]
name = "user"
path = "/api/v2/users/search"
query = { query = "{{ subject.email }}" }
extract = { user_id = "/users/0/id" }
missing_means_not_found = true
[actions.erase]
requires = ["email"]
effect = "soft_deleted"
[[actions.erase.calls]]
path = "/api/v2/users/search"
query = { query = "{{ subject.email }}" }
extract = { user_id = "/users/0/id" }
missing_means_not_found = true
[[actions.erase.calls]]
method = "DELETE"
path = "/api/v2/users/{{ vars.user_id }}"
reference = "/user/id"
PURGE
"#;

const PURGE: &str = r#"[actions.purge]
requires = ["email"]
[[actions.purge.calls]]
path = "/api/v2/users/search"
query = { query = "{{ subject.email }}" }
extract = { user_id = "/users/0/id" }
missing_means_not_found = true
[[actions.purge.calls]]
method = "DELETE"
path = "/api/v2/deleted_users/{{ vars.user_id }}"
"#;

async fn mount_user(server: &MockServer, email: &str, id: u64, found_times: Option<u64>) {
    let user =
        serde_json::json!({"users": [{"id": id, "email": email, "name": "Sam"}], "count": 1});
    let m = Mock::given(method("GET"))
        .and(path("/api/v2/users/search"))
        .and(query_param("query", email))
        .and(bearer_token("tok"));
    match found_times {
        Some(n) => {
            m.respond_with(ResponseTemplate::new(200).set_body_json(user))
                .up_to_n_times(n)
                .with_priority(1)
                .mount(server)
                .await;
            Mock::given(method("GET"))
                .and(path("/api/v2/users/search"))
                .and(query_param("query", email))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({"users": [], "count": 0})),
                )
                .with_priority(2)
                .mount(server)
                .await;
        }
        None => {
            m.respond_with(ResponseTemplate::new(200).set_body_json(user))
                .with_priority(1)
                .mount(server)
                .await
        }
    }
    Mock::given(method("DELETE"))
        .and(path(format!("/api/v2/users/{id}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"user": {"id": id, "active": false}})),
        )
        .mount(server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/api/v2/deleted_users/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"deleted_user": {"id": id, "name": "Permanently Deleted User"}}),
        ))
        .mount(server)
        .await;
}

async fn a_grace_window_verified_clean_is_purged_and_a_dirty_one_is_permanently_deleted(
    backend: Backend,
) {
    let server = MockServer::start().await;
    // Clean: found by the erase's search, gone afterwards. Dirty: still found after the window.
    mount_user(&server, "clean@example.com", 101, Some(1)).await;
    mount_user(&server, "dirty@example.com", 102, None).await;
    mount_user(&server, "stuck@example.com", 103, None).await;
    let procs = format!(
        "[[processor]]\nname = \"helpdesk\"\nconnector = \"trashdesk\"\nbase_url = \"{u}\"\nsoft_delete_window = \"2s\"\nsecrets = {{ token = \"DESK_TOKEN\" }}\n\n\
         [[processor]]\nname = \"old-helpdesk\"\nconnector = \"trashdesk_nopurge\"\nbase_url = \"{u}\"\nsoft_delete_window = \"2s\"\nsecrets = {{ token = \"DESK_TOKEN\" }}\n",
        u = server.uri()
    );
    let mut env = env(backend, &procs, "", "").await;
    env.set_env("DESK_TOKEN", "tok");
    std::fs::write(
        env.dir.path().join("connectors/trashdesk.toml"),
        TRASH_CONNECTOR.replace("PURGE", PURGE),
    )
    .unwrap();
    std::fs::write(
        env.dir.path().join("connectors/trashdesk_nopurge.toml"),
        TRASH_CONNECTOR
            .replace("trashdesk", "trashdesk_nopurge")
            .replace("PURGE", ""),
    )
    .unwrap();
    // Only the helpdesk with a purge action takes part for clean/dirty; the other one for stuck.
    let wf = workflow("").replace("select = [\"*\"]", "select = [\"helpdesk\"]");
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), &wf).unwrap();
    std::fs::write(
        env.dir.path().join("workflows/legacy.toml"),
        wf.replace("select = [\"helpdesk\"]", "select = [\"old-helpdesk\"]"),
    )
    .unwrap();

    let clean = env.erase("clean@example.com").await;
    let dirty = env.erase("dirty@example.com").await;
    let stuck = env
        .json(&[
            "request",
            "erase",
            "--email",
            "stuck@example.com",
            "--workflow",
            "legacy",
            "--json",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.lethe(&["run", "--until-idle"]).await;
    for id in [&clean, &dirty, &stuck] {
        let st = env.status(id).await;
        assert_eq!(st["status"], "waiting", "{st:#}");
        let s = &st["steps"][0];
        assert_eq!(s["state"], "grace");
        assert!(s["grace_until"].is_string());
        assert_eq!(s["evidence"]["status"], 200);
    }

    let st = env
        .run_until_status(&clean, &["completed", "failed"], 20)
        .await;
    let s = &st["steps"][0];
    assert_eq!(s["outcome"], "purged", "{st:#}");
    assert!(
        run_at_ms(s, "finished_at") >= run_at_ms(s, "grace_until"),
        "verified only after the window"
    );
    assert_eq!(
        fakes::count(&server, "DELETE", "/api/v2/deleted_users/101").await,
        0,
        "a clean window needs no permanent delete"
    );

    let st = env
        .run_until_status(&dirty, &["completed", "failed"], 20)
        .await;
    assert_eq!(st["steps"][0]["outcome"], "purged", "{st:#}");
    assert_eq!(
        fakes::count(&server, "DELETE", "/api/v2/deleted_users/102").await,
        1,
        "still there after the window: permanently deleted"
    );

    let st = env
        .run_until_status(&stuck, &["completed", "failed"], 20)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let err = st["steps"][0]["last_error"].as_str().unwrap();
    assert!(
        err.contains("old-helpdesk")
            && err.contains("still holds the subject after its recovery window"),
        "{err}"
    );
}

async fn cancel_during_cooling_off_leaves_every_processor_untouched(backend: Backend) {
    const EMAIL: &str = "changed.mind@example.com";
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = env(
        backend,
        &fakes::processor_toml(&server),
        "cooling_off = \"1h\"",
        "",
    )
    .await;

    let id = env.erase(EMAIL).await;
    env.lethe(&["run", "--until-idle"]).await;
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "pending");
    assert!(
        run_at_ms(step, "run_at") > chrono::Utc::now().timestamp_millis() + 3_000_000,
        "waits out the cooling-off: {st:#}"
    );

    let out = env.lethe(&["cancel", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    env.lethe(&["run", "--until-idle"]).await;
    let st = env.status(&id).await;
    assert_eq!(st["status"], "cancelled");
    assert_eq!(TestEnv::step(&st, "newsletter")["state"], "cancelled");
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "the processor was never called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_extended_once_by_two_months_and_a_second_extension_is_refused() {
    let server = fakes::mailchimp().await;
    let env = env(
        Backend::Sqlite,
        &fakes::processor_toml(&server),
        "cooling_off = \"1h\"",
        "",
    )
    .await;
    let id = env.erase("slow@example.com").await;
    let before = env.status(&id).await;
    let due0 = chrono::DateTime::parse_from_rfc3339(before["due_at"].as_str().unwrap()).unwrap();
    assert!(before["days_left"].as_i64().unwrap() >= 27);

    let out = env
        .lethe(&[
            "extend",
            &id,
            "--reason",
            "complex: data spread over 12 systems",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let after = env.status(&id).await;
    let due1 = chrono::DateTime::parse_from_rfc3339(after["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        due1,
        due0.checked_add_months(chrono::Months::new(2)).unwrap()
    );
    assert_eq!(
        after["extended_reason"],
        "complex: data spread over 12 systems"
    );
    assert!(after["days_left"].as_i64().unwrap() >= 88);

    let out = env.lethe(&["extend", &id, "--reason", "again"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already extended"));
    assert_eq!(env.status(&id).await["due_at"], after["due_at"]);
    let store = env.store().await;
    assert_eq!(
        store
            .request_events(&id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == "request.extended")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_2_is_honoured_without_using_up_an_attempt() {
    const EMAIL: &str = "throttled@example.com";
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(
            fakes::problem(
                429,
                "Too Many Requests",
                "You have exceeded the limit of 10 simultaneous connections.",
            )
            .insert_header("Retry-After", "2"),
        )
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let env = env(Backend::Sqlite, &fakes::processor_toml(&server), "", "").await;

    let id = env.erase(EMAIL).await;
    let t0 = chrono::Utc::now().timestamp_millis();
    env.lethe(&["run", "--until-idle"]).await;
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "throttled");
    assert_eq!(
        step["attempts"], 0,
        "a throttled call does not use up an attempt"
    );
    assert!(
        run_at_ms(step, "run_at") >= t0 + 2000,
        "Retry-After: 2 honoured (the policy alone would say 300ms): {st:#}"
    );
    // Not due yet: another run does not call the processor.
    env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );

    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["attempts"], 1);
}

/// A Mailchimp stand-in that counts calls in flight.
struct Counting {
    in_flight: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

async fn counting_mailchimp(c: Arc<Counting>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
        post(move || {
            let c = c.clone();
            async move {
                let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                c.max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                c.in_flight.fetch_sub(1, Ordering::SeqCst);
                c.total.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (
        url,
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_requests_never_exceed_a_limit_of_two_calls_in_flight() {
    let c = Arc::new(Counting {
        in_flight: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
    });
    let (url, _srv) = counting_mailchimp(c.clone()).await;
    let procs = format!(
        "[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{url}/3.0\"\nconcurrency = 2\nsettings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n"
    );
    let env = env(Backend::Sqlite, &procs, "", "").await;
    let mut ids = vec![];
    for i in 0..10 {
        ids.push(env.erase(&format!("p{i}@example.com")).await);
    }
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    for id in &ids {
        let st = env.status(id).await;
        assert_eq!(st["status"], "completed", "{st:#}");
    }
    assert_eq!(c.total.load(Ordering::SeqCst), 10);
    assert_eq!(
        c.max.load(Ordering::SeqCst),
        2,
        "never more than 2 in flight, and the limit is used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_fails_every_call_is_paused_instead_of_burning_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(fakes::problem(
            503,
            "Service Unavailable",
            "down for maintenance",
        ))
        .mount(&server)
        .await;
    let env = env(
        Backend::Sqlite,
        &fakes::processor_toml(&server),
        "",
        "[worker]\npause_after = 3\npause_for = \"1h\"\n",
    )
    .await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(env.erase(&format!("p{i}@example.com")).await);
    }
    // Several rounds, well past the 300 ms retry delay.
    for _ in 0..4 {
        env.lethe(&["run", "--until-idle"]).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let calls = server.received_requests().await.unwrap().len();
    assert!(
        (3..=5).contains(&calls),
        "calls stop once the processor is paused (got {calls})"
    );
    let mut paused = 0;
    for id in &ids {
        let st = env.status(id).await;
        let step = TestEnv::step(&st, "newsletter");
        assert_eq!(step["state"], "retry_wait", "{st:#}");
        assert!(
            step["attempts"].as_i64().unwrap() <= 1,
            "no attempts burned while paused: {st:#}"
        );
        if step["error_class"] == "paused" {
            paused += 1;
            assert!(
                step["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("is paused until"),
                "{st:#}"
            );
        }
    }
    assert!(paused >= 2, "status says the processor is paused");
    let store = env.store().await;
    assert!(store
        .events(0, 1000)
        .await
        .unwrap()
        .iter()
        .any(|e| e.kind == "processor.paused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connectors_own_retry_policy_overrides_the_workflows() {
    const EMAIL: &str = "patient@example.com";
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(fakes::problem(503, "Service Unavailable", "try later"))
        .mount(&server)
        .await;
    let env = env(Backend::Sqlite, &fakes::processor_toml(&server), "", "").await;
    // The same Mailchimp definition, with an API-specific retry policy of one hour.
    let def = include_str!("../../connectors/mailchimp.toml").replace(
        "[auth]",
        "[retry]\ninitial = \"1h\"\nfactor = 2.0\ncap = \"4h\"\nmax_attempts = 3\njitter = false\n\n[auth]",
    );
    std::fs::write(env.dir.path().join("connectors/mailchimp.toml"), def).unwrap();
    let id = env.erase(EMAIL).await;
    let t0 = chrono::Utc::now().timestamp_millis();
    env.lethe(&["run", "--until-idle"]).await;
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert!(
        run_at_ms(step, "run_at") >= t0 + 3_600_000,
        "the connector's 1h, not the workflow's 300ms: {st:#}"
    );
}
