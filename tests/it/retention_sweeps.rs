//! Retention schedules (`[[schedule]]`): periodic sweeps with period
//! certificates, through the binary, on both backends, against a real
//! S3-compatible server (moto) and a Zendesk fake that answers like the API
//! (search, destroy_many as a background job, job statuses).

use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use crate::s3_server::S3;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ERASURE: &str = "kind = \"erasure\"\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n";

async fn env_with(backend: Backend, processors: &str, schedules: &str) -> TestEnv {
    let mut env = TestEnv::new(backend, "workflows_dir = \"workflows\"", processors).await;
    let dir = env.dir.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("erasure.toml"), ERASURE).unwrap();
    std::fs::write(
        dir.join("retention.toml"),
        format!("kind = \"erasure\"\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n{schedules}"),
    )
    .unwrap();
    env.set_env("S3_ACCESS_KEY_ID", "AKIDLETHETEST");
    env.set_env(
        "S3_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    env.set_env(
        "ZENDESK_API_TOKEN",
        "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv",
    );
    env
}

// ---------------------------------------------------------------- S3 (moto)

fn s3_processor(base: &str, bucket: &str) -> String {
    format!(
        "[[processor]]\nname = \"backups\"\nconnector = \"s3\"\nbase_url = \"{base}\"\n\
         settings = {{ bucket = \"{bucket}\", prefix_template = \"customers/{{{{ subject.customer_id }}}}/\", region = \"eu-west-2\" }}\n\
         secrets = {{ access_key_id = \"S3_ACCESS_KEY_ID\", secret_access_key = \"S3_SECRET_ACCESS_KEY\" }}\n"
    )
}

async fn an_s3_sweep_removes_only_old_versions_under_the_prefix_and_its_certificate_counts_them(
    backend: Backend,
) {
    let s3 = S3::new();
    let bucket = s3.versioned_bucket().await;
    let env = env_with(
        backend,
        &s3_processor(&s3.base, &bucket),
        "[[schedule]]\nname = \"diagnostics\"\nselect = [\"backups\"]\nprefix = \"diag/\"\nolder_than = \"5s\"\nevery = \"1d\"\n",
    )
    .await;
    // Old: two versions of a key holding an email, one plain key, and the first
    // version of a key overwritten later; outside the prefix: an old object.
    s3.put(&bucket, "diag/jane.doe@example.com.log", "v1").await;
    s3.put(&bucket, "diag/jane.doe@example.com.log", "v2").await;
    s3.put(&bucket, "diag/boot.log", "old").await;
    s3.put(&bucket, "diag/report.csv", "old").await;
    s3.put(&bucket, "other/keep.log", "old but outside the prefix")
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    s3.put(&bucket, "diag/report.csv", "new").await;
    s3.put(&bucket, "diag/fresh.log", "new").await;
    let before = s3.list_all(&bucket).await;
    assert_eq!(before.len(), 7, "{before:?}");

    // Dry run: what would go, masked; nothing deleted.
    let out = env
        .lethe(&["schedule", "run", "diagnostics", "--dry-run", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("jane"),
        "a dry run shows names masked: {text}"
    );
    let dry: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dry["processors"][0]["count"], 4, "{dry:#}");
    assert_eq!(dry["processors"][0]["kinds"]["version"], 4, "{dry:#}");
    assert_eq!(
        s3.list_all(&bucket).await,
        before,
        "a dry run deletes nothing"
    );

    // The sweep, through the durable path.
    let out = env
        .lethe(&["schedule", "run", "diagnostics", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "done", "{runs:#}");
    assert_eq!(runs[0]["removed"], 4, "{runs:#}");
    assert_eq!(runs[0]["failed"], 0, "{runs:#}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();

    let left: BTreeSet<String> = s3
        .list_all(&bucket)
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    let want: BTreeSet<String> = ["diag/report.csv", "diag/fresh.log", "other/keep.log"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(left, want, "only old versions under the prefix are gone");
    assert_eq!(s3.list_all(&bucket).await.len(), 3);

    let out = env
        .lethe(&["report", "sweep", &run_id, "--format", "json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("jane"),
        "the certificate keeps no names: {text}"
    );
    assert!(!text.contains("boot.log"), "the certificate keeps no names");
    let cert: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cert["removed"], 4);
    assert_eq!(cert["listed"], 4);
    assert_eq!(cert["unconfirmed"], 0);
    assert_eq!(cert["removed_by_kind"]["version"], 4);
    assert_eq!(cert["processor"], "backups");
    assert!(cert["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "removed" && i["evidence"]["deleted"] == true));
    for format in ["text", "html"] {
        let out = env
            .lethe(&["report", "sweep", &run_id, "--format", format])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("jane"));
    }
}

// ---------------------------------------------------------------- Zendesk

/// Tickets: id → (status, updated_at). Refused ids fail in the delete job.
#[derive(Default)]
struct Desk {
    tickets: std::collections::BTreeMap<u64, (&'static str, String)>,
    refused: BTreeSet<u64>,
    jobs: std::collections::BTreeMap<String, (Vec<u64>, u32)>,
    searches: Vec<String>,
    /// Answer this many searches with 503.
    unavailable: u32,
}

struct DeskFake(Arc<Mutex<Desk>>);

impl Respond for DeskFake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut d = self.0.lock().unwrap();
        let p = req.url.path().to_string();
        let q: std::collections::HashMap<String, String> =
            req.url.query_pairs().into_owned().collect();
        if req.method.as_str() == "GET" && p == "/api/v2/search.json" {
            // `type:ticket status:closed updated<2026-…Z`
            let query = q.get("query").cloned().unwrap_or_default();
            d.searches.push(query.clone());
            if d.unavailable > 0 {
                d.unavailable -= 1;
                return ResponseTemplate::new(503).set_body_string("Service Unavailable");
            }
            let mut parts = query.split(' ');
            let (ty, st, up) = (parts.next(), parts.next(), parts.next());
            if ty != Some("type:ticket") {
                return ResponseTemplate::new(400).set_body_json(json!({"error": "bad query"}));
            }
            let status = st.and_then(|s| s.strip_prefix("status:")).unwrap_or("");
            let before = up.and_then(|s| s.strip_prefix("updated<")).unwrap_or("");
            let results: Vec<Value> = d
                .tickets
                .iter()
                .filter(|(_, (s, u))| *s == status && u.as_str() < before)
                .map(|(id, (s, u))| {
                    json!({"id": id, "result_type": "ticket", "status": s, "updated_at": u, "subject": "Invoice for jane.doe@example.com"})
                })
                .collect();
            return ResponseTemplate::new(200).set_body_json(
                json!({"results": results, "next_page": null, "previous_page": null, "count": results.len()}),
            );
        }
        if req.method.as_str() == "DELETE" && p == "/api/v2/tickets/destroy_many.json" {
            let ids: Vec<u64> = q
                .get("ids")
                .map(|s| s.split(',').filter_map(|i| i.parse().ok()).collect())
                .unwrap_or_default();
            if ids.is_empty() || ids.len() > 100 {
                return ResponseTemplate::new(400).set_body_json(json!({"error": "InvalidValue"}));
            }
            let job = format!("J{}", d.jobs.len() + 1);
            d.jobs.insert(job.clone(), (ids, 0));
            return ResponseTemplate::new(200).set_body_json(json!({"job_status": {
                "id": job, "status": "queued", "url": format!("/api/v2/job_statuses/{job}.json"),
                "total": null, "progress": null, "results": null}}));
        }
        if let Some(job) = p
            .strip_prefix("/api/v2/job_statuses/")
            .and_then(|s| s.strip_suffix(".json"))
        {
            let Some((ids, polls)) = d.jobs.get(job).cloned() else {
                return ResponseTemplate::new(404)
                    .set_body_json(json!({"error": "RecordNotFound", "description": "Not found"}));
            };
            d.jobs.insert(job.to_string(), (ids.clone(), polls + 1));
            if polls == 0 {
                return ResponseTemplate::new(200).set_body_json(
                    json!({"job_status": {"id": job, "status": "working", "results": null}}),
                );
            }
            let mut results = vec![];
            for id in ids {
                if d.refused.contains(&id) {
                    results.push(json!({"id": id, "index": 0, "error": "TicketDeleteFailed", "details": "Ticket for jane.doe@example.com is locked"}));
                } else {
                    d.tickets.remove(&id);
                    results.push(
                        json!({"id": id, "action": "delete", "success": true, "status": "Deleted"}),
                    );
                }
            }
            return ResponseTemplate::new(200).set_body_json(
                json!({"job_status": {"id": job, "status": "completed", "total": results.len(), "results": results}}),
            );
        }
        ResponseTemplate::new(404)
            .set_body_json(json!({"error": "InvalidEndpoint", "description": "Not found"}))
    }
}

async fn desk(
    tickets: &[(u64, &'static str, &str)],
    refused: &[u64],
) -> (MockServer, Arc<Mutex<Desk>>) {
    let server = MockServer::start().await;
    let mut d = Desk::default();
    for (id, st, up) in tickets {
        d.tickets.insert(*id, (st, up.to_string()));
    }
    d.refused = refused.iter().copied().collect();
    let state = Arc::new(Mutex::new(d));
    for (m, p) in [
        ("GET", "/api/v2/search.json"),
        ("DELETE", "/api/v2/tickets/destroy_many.json"),
    ] {
        Mock::given(method(m))
            .and(path(p))
            .respond_with(DeskFake(Arc::clone(&state)))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v2/job_statuses/[A-Za-z0-9]+\.json$"))
        .respond_with(DeskFake(Arc::clone(&state)))
        .mount(&server)
        .await;
    (server, state)
}

fn zendesk_processor(base: &str) -> String {
    format!(
        "[[processor]]\nname = \"helpdesk\"\nconnector = \"zendesk\"\nbase_url = \"{base}\"\n\
         settings = {{ agent_email = \"agent@example.com\" }}\nsecrets = {{ api_token = \"ZENDESK_API_TOKEN\" }}\n"
    )
}

fn recent() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn a_zendesk_sweep_deletes_old_closed_tickets_with_the_documented_calls_and_a_refusal_is_recorded_as_failed(
    backend: Backend,
) {
    let now = recent();
    let (server, state) = desk(
        &[
            (101, "closed", "2020-01-05T10:00:00Z"),
            (102, "closed", "2021-03-01T10:00:00Z"),
            (103, "closed", "2020-06-01T10:00:00Z"),
            (104, "closed", &now),
            (105, "open", "2019-01-01T10:00:00Z"),
        ],
        &[103],
    )
    .await;
    let env = env_with(
        backend,
        &zendesk_processor(&server.uri()),
        "[[schedule]]\nname = \"old-tickets\"\nselect = [\"category:ticketing\"]\nolder_than = \"180d\"\nevery = \"1d\"\n",
    )
    .await;

    let out = env
        .lethe(&["schedule", "run", "old-tickets", "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 item(s)"), "{text}");
    assert!(!text.contains("jane"), "{text}");
    assert_eq!(
        state.lock().unwrap().tickets.len(),
        5,
        "a dry run deletes nothing"
    );

    // Exit 1: one ticket was refused.
    let out = env
        .lethe(&["schedule", "run", "old-tickets", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "done", "{runs:#}");
    assert_eq!(runs[0]["listed"], 3, "{runs:#}");
    assert_eq!(runs[0]["removed"], 2, "{runs:#}");
    assert_eq!(runs[0]["failed"], 1, "{runs:#}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let left: Vec<u64> = state.lock().unwrap().tickets.keys().copied().collect();
    assert_eq!(left, vec![103, 104, 105]);

    // Exactly the documented calls, authenticated.
    let calls: Vec<(String, String)> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert!(
                r.headers
                    .get("authorization")
                    .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Basic ")),
                "every call authenticates"
            );
            (r.method.to_string(), r.url.path().to_string())
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("GET".to_string(), "/api/v2/search.json".to_string()),
            ("GET".to_string(), "/api/v2/search.json".to_string()),
            (
                "DELETE".to_string(),
                "/api/v2/tickets/destroy_many.json".to_string()
            ),
            (
                "GET".to_string(),
                "/api/v2/job_statuses/J1.json".to_string()
            ),
            (
                "GET".to_string(),
                "/api/v2/job_statuses/J1.json".to_string()
            ),
        ]
    );
    let reqs = server.received_requests().await.unwrap();
    let ids = reqs[2]
        .url
        .query_pairs()
        .find(|(k, _)| k == "ids")
        .map(|(_, v)| v.to_string());
    assert_eq!(ids.as_deref(), Some("101,102,103"));
    let search = state.lock().unwrap().searches[0].clone();
    assert!(
        search.starts_with("type:ticket status:closed updated<"),
        "{search}"
    );

    let cert = env
        .json(&["report", "sweep", &run_id, "--format", "json"])
        .await;
    let text = cert.to_string();
    assert!(
        !text.contains("jane"),
        "no ticket text in the certificate: {text}"
    );
    assert!(!text.contains("locked"), "no processor free text: {text}");
    let items = cert["items"].as_array().unwrap();
    let state_of = |id: &str| {
        items
            .iter()
            .find(|i| i["reference"] == id)
            .map(|i| i["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of("101").as_deref(), Some("removed"));
    assert_eq!(state_of("102").as_deref(), Some("removed"));
    assert_eq!(state_of("103").as_deref(), Some("failed"));
    let failed = items.iter().find(|i| i["reference"] == "103").unwrap();
    assert_eq!(failed["evidence"]["error"], "TicketDeleteFailed");

    // The next period: nothing new; the refused ticket is tried again and
    // counted in that run only.
    let out = env
        .lethe(&["schedule", "run", "old-tickets", "--json"])
        .await;
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["listed"], 1, "{runs:#}");
    assert_eq!(runs[0]["removed"], 0, "{runs:#}");
    assert_eq!(runs[0]["failed"], 1, "{runs:#}");

    // The period report's retention section adds the runs up.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let r = env
        .json(&[
            "report", "--from", &today, "--to", &today, "--format", "json",
        ])
        .await;
    let s = &r["retention_sweeps"][0];
    assert_eq!(s["schedule"], "old-tickets", "{r:#}");
    assert_eq!(s["processor"], "helpdesk");
    assert_eq!(s["runs"], 2);
    assert_eq!(s["items_removed"], 2);
    assert_eq!(s["items_failed"], 2);
    let out = env
        .lethe(&["report", "--from", &today, "--to", &today])
        .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Retention sweeps"));

    // Sweep events are in the audit chain, which still verifies.
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = env.store().await.events(0, 1000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for k in ["sweep.scheduled", "sweep.started", "sweep.finished"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(events
        .iter()
        .all(|e| !e.detail.to_string().contains("jane")));
}

async fn a_schedule_is_durable_and_runs_again_only_once_its_period_has_passed(backend: Backend) {
    let (server, state) = desk(
        &[
            (201, "closed", "2020-01-05T10:00:00Z"),
            (202, "closed", "2020-02-05T10:00:00Z"),
        ],
        &[],
    )
    .await;
    let env = env_with(
        backend,
        &zendesk_processor(&server.uri()),
        "[[schedule]]\nname = \"tickets\"\nselect = [\"helpdesk\"]\nolder_than = \"30d\"\nevery = \"4s\"\n",
    )
    .await;
    // A new schedule is due at once.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(state.lock().unwrap().tickets.is_empty());
    let list = env.json(&["schedule", "list", "--json"]).await;
    let first = list[0]["last_run"]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["last_run"]["removed"], 2, "{list:#}");
    assert_eq!(list[0]["last_run"]["started_by"], "schedule");
    assert_eq!(list[0]["every"], "4.0s");

    // Before `every` has elapsed: nothing runs.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        state.lock().unwrap().searches.len(),
        1,
        "no second search yet"
    );
    let list = env.json(&["schedule", "list", "--json"]).await;
    assert_eq!(list[0]["last_run"]["id"], first.as_str());

    // After it: the next run, which finds nothing new.
    tokio::time::sleep(std::time::Duration::from_millis(4200)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(state.lock().unwrap().searches.len(), 2);
    let list = env.json(&["schedule", "list", "--json"]).await;
    assert_ne!(list[0]["last_run"]["id"], first.as_str());
    assert_eq!(list[0]["last_run"]["state"], "done");
    assert_eq!(list[0]["last_run"]["listed"], 0);
    assert_eq!(list[0]["last_run"]["removed"], 0);

    // `check` shows the schedule it validated.
    let check = env.json(&["check", "--json"]).await;
    assert_eq!(check["schedules"][0]["name"], "tickets", "{check:#}");
    assert_eq!(check["schedules"][0]["processor"], "helpdesk");
    assert_eq!(check["schedules"][0]["every_ms"], 4000);

    // A schedule taken out of the config stops; its runs stay as evidence.
    std::fs::write(env.dir.path().join("workflows/retention.toml"), ERASURE).unwrap();
    let list = env.json(&["schedule", "list", "--json"]).await;
    assert_eq!(list, json!([]));
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let store = env.store().await;
    assert!(store.list_schedules().await.unwrap().is_empty());
    assert_eq!(
        store.sweep_runs_between(0, i64::MAX).await.unwrap().len(),
        2
    );
    assert!(store.next_sweep_wake().await.unwrap().is_none());
}

/// A worker that dies mid-run (lease taken, items listed, no answer recorded):
/// the run is taken over after its lease expires, finished once, and nothing
/// is counted twice or claimed without the processor's answer.
async fn a_sweep_cut_short_by_a_crash_is_taken_over_and_counted_once(backend: Backend) {
    let (server, state) = desk(
        &[
            (301, "closed", "2020-01-05T10:00:00Z"),
            (302, "closed", "2020-02-05T10:00:00Z"),
        ],
        &[],
    )
    .await;
    let env = env_with(
        backend,
        &zendesk_processor(&server.uri()),
        "[[schedule]]\nname = \"tickets\"\nselect = [\"helpdesk\"]\nolder_than = \"30d\"\nevery = \"1d\"\n",
    )
    .await;
    // Create the schedule row (`schedule list` syncs the config).
    env.json(&["schedule", "list", "--json"]).await;
    // A worker starts the due run and records what it listed, then dies.
    let store = env.store().await;
    let now = chrono::Utc::now().timestamp_millis();
    let started = store.start_due_sweeps(now, None).await.unwrap();
    assert_eq!(started.len(), 1);
    let claimed = store
        .claim_sweep_runs("dead-worker", now, 300, 10, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let dead = &claimed[0];
    let items = vec![lethe::store::sweep::NewSweepItem {
        item_hash: "hash-of-an-item-the-dead-worker-listed".into(),
        kind: "ticket".into(),
        reference: Some("999".into()),
        size: None,
        modified_at: None,
    }];
    assert!(store
        .record_sweep_items(&dead.id, dead.lease_token, items, now)
        .await
        .unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    // The schedule is not due again, but the abandoned run is taken over.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(state.lock().unwrap().tickets.is_empty());
    let run = store.sweep_run(&dead.id).await.unwrap().unwrap();
    assert_eq!(run.state, "done");
    assert_eq!(run.attempts, 2);
    assert_eq!(run.removed, 2, "each ticket counted once");
    assert_eq!(run.failed, 0);
    assert_eq!(
        run.unconfirmed(),
        1,
        "the dead worker's item has no answer: unconfirmed, never removed"
    );
    // The dead worker's token is fenced out.
    assert!(!store
        .record_sweep_results(
            &dead.id,
            dead.lease_token,
            vec![lethe::store::sweep::SweepItemResult {
                item_hash: "hash-of-an-item-the-dead-worker-listed".into(),
                removed: true,
                evidence: json!({}),
            }],
            now,
        )
        .await
        .unwrap());
    assert_eq!(store.sweep_run(&dead.id).await.unwrap().unwrap().removed, 2);
}

// ---------------------------------------------------------------- Dropbox

#[derive(Default)]
struct Box_ {
    /// id → (path_lower, server_modified)
    files: std::collections::BTreeMap<&'static str, (&'static str, String)>,
    refused: BTreeSet<&'static str>,
    jobs: std::collections::BTreeMap<String, (Vec<String>, u32)>,
    delete_bodies: Vec<Value>,
}

struct BoxFake(Arc<Mutex<Box_>>);

impl Respond for BoxFake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut b = self.0.lock().unwrap();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let entry = |id: &str, p: &str, m: &str| json!({".tag": "file", "id": id, "name": p.rsplit('/').next(), "path_lower": p, "path_display": p, "server_modified": m, "client_modified": m, "size": 1024, "rev": "015f1b2c3d4e5f6000000011"});
        match req.url.path() {
            "/2/files/list_folder" => {
                if body["path"] != "/logs" || body["recursive"] != true {
                    return ResponseTemplate::new(409).set_body_json(json!({"error_summary": "path/not_found/..", "error": {".tag": "path", "path": {".tag": "not_found"}}}));
                }
                let mut entries = vec![
                    json!({".tag": "folder", "id": "id:F", "name": "sub", "path_lower": "/logs/sub", "path_display": "/logs/sub"}),
                ];
                for (id, (p, m)) in b
                    .files
                    .iter()
                    .filter(|(_, (p, _))| !p.starts_with("/logs/sub/"))
                {
                    entries.push(entry(id, p, m));
                }
                ResponseTemplate::new(200).set_body_json(
                    json!({"entries": entries, "cursor": "AAE_page2", "has_more": true}),
                )
            }
            "/2/files/list_folder/continue" => {
                if body["cursor"] != "AAE_page2" {
                    return ResponseTemplate::new(409).set_body_json(
                        json!({"error_summary": "reset/..", "error": {".tag": "reset"}}),
                    );
                }
                let entries: Vec<Value> = b
                    .files
                    .iter()
                    .filter(|(_, (p, _))| p.starts_with("/logs/sub/"))
                    .map(|(id, (p, m))| entry(id, p, m))
                    .collect();
                ResponseTemplate::new(200).set_body_json(
                    json!({"entries": entries, "cursor": "AAE_end", "has_more": false}),
                )
            }
            "/2/files/delete_batch" => {
                b.delete_bodies.push(body.clone());
                let ids: Vec<String> = body["entries"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e["path"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let job = format!("dbjid:{}", b.jobs.len() + 1);
                b.jobs.insert(job.clone(), (ids, 0));
                ResponseTemplate::new(200)
                    .set_body_json(json!({".tag": "async_job_id", "async_job_id": job}))
            }
            "/2/files/delete_batch/check" => {
                let job = body["async_job_id"].as_str().unwrap_or("").to_string();
                let Some((ids, polls)) = b.jobs.get(&job).cloned() else {
                    return ResponseTemplate::new(409).set_body_json(json!({"error_summary": "invalid_async_job_id/..", "error": {".tag": "invalid_async_job_id"}}));
                };
                b.jobs.insert(job, (ids.clone(), polls + 1));
                if polls == 0 {
                    return ResponseTemplate::new(200)
                        .set_body_json(json!({".tag": "in_progress"}));
                }
                let mut entries = vec![];
                for id in ids {
                    if b.refused.contains(id.as_str()) {
                        entries.push(json!({".tag": "failure", "failure": {".tag": "path_write", "path_write": {".tag": "no_write_permission"}}}));
                    } else if let Some((p, m)) = b.files.remove(id.as_str()) {
                        entries.push(json!({".tag": "success", "metadata": entry(&id, p, &m)}));
                    } else {
                        entries.push(json!({".tag": "failure", "failure": {".tag": "path_lookup", "path_lookup": {".tag": "not_found"}}}));
                    }
                }
                ResponseTemplate::new(200)
                    .set_body_json(json!({".tag": "complete", "entries": entries}))
            }
            _ => ResponseTemplate::new(404).set_body_string("Unknown API function"),
        }
    }
}

async fn a_dropbox_sweep_deletes_old_files_under_the_folder_by_id_and_a_refusal_is_recorded_as_failed(
    backend: Backend,
) {
    let server = MockServer::start().await;
    let now = recent();
    let mut b = Box_::default();
    for (id, p, m) in [
        (
            "id:A",
            "/logs/jane.doe@example.com.txt",
            "2020-01-05T10:00:00Z",
        ),
        ("id:B", "/logs/boot.txt", "2020-02-05T10:00:00Z"),
        ("id:C", "/logs/locked.txt", "2020-03-05T10:00:00Z"),
        ("id:D", "/logs/fresh.txt", now.as_str()),
        ("id:E", "/logs/sub/old.txt", "2021-01-05T10:00:00Z"),
    ] {
        b.files.insert(id, (p, m.to_string()));
    }
    b.refused.insert("id:C");
    let state = Arc::new(Mutex::new(b));
    Mock::given(method("POST"))
        .and(path_regex(r"^/2/files/"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer sl.BzZaFx4g0uRhJ7cVd9bT",
        ))
        .respond_with(BoxFake(Arc::clone(&state)))
        .mount(&server)
        .await;
    let mut env = env_with(
        backend,
        &format!(
            "[[processor]]\nname = \"files\"\nconnector = \"dropbox\"\nbase_url = \"{}\"\n\
             settings = {{ path = \"/customers/{{{{ subject.customer_id }}}}\" }}\nsecrets = {{ access_token = \"DROPBOX_TOKEN\" }}\n",
            server.uri()
        ),
        "[[schedule]]\nname = \"logs\"\nselect = [\"files\"]\npath = \"/logs\"\nolder_than = \"90d\"\nevery = \"1d\"\n",
    )
    .await;
    env.set_env("DROPBOX_TOKEN", "sl.BzZaFx4g0uRhJ7cVd9bT");

    let out = env
        .lethe(&["schedule", "run", "logs", "--dry-run", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("jane"), "{text}");
    let dry: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dry["processors"][0]["count"], 4, "{dry:#}");
    assert_eq!(
        state.lock().unwrap().files.len(),
        5,
        "a dry run deletes nothing"
    );
    assert!(state.lock().unwrap().delete_bodies.is_empty());

    let out = env.lethe(&["schedule", "run", "logs", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "done", "{runs:#}");
    assert_eq!(runs[0]["listed"], 4, "{runs:#}");
    assert_eq!(runs[0]["removed"], 3, "{runs:#}");
    assert_eq!(runs[0]["failed"], 1, "{runs:#}");
    let left: Vec<&str> = state.lock().unwrap().files.keys().copied().collect();
    assert_eq!(left, vec!["id:C", "id:D"]);
    // Deleted by id: no file name is sent again.
    let bodies = state.lock().unwrap().delete_bodies.clone();
    assert_eq!(bodies.len(), 1);
    assert!(!bodies[0].to_string().contains("jane"), "{}", bodies[0]);
    let calls: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(
        calls,
        [
            "/2/files/list_folder",
            "/2/files/list_folder/continue",
            "/2/files/list_folder",
            "/2/files/list_folder/continue",
            "/2/files/delete_batch",
            "/2/files/delete_batch/check",
            "/2/files/delete_batch/check",
        ]
    );
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let cert = env
        .json(&["report", "sweep", run_id, "--format", "json"])
        .await;
    assert!(!cert.to_string().contains("jane"));
    assert!(!cert.to_string().contains("boot.txt"));
    assert_eq!(cert["removed_by_kind"]["file"], 3);
    let failed: Vec<&Value> = cert["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["reference"], "id:C");
    assert_eq!(failed[0]["evidence"]["failure"], "path_write");
}

async fn a_sweep_the_processor_cannot_answer_is_deferred_and_claims_nothing(backend: Backend) {
    let (server, state) = desk(&[(401, "closed", "2020-01-05T10:00:00Z")], &[]).await;
    state.lock().unwrap().unavailable = 1;
    let env = env_with(
        backend,
        &zendesk_processor(&server.uri()),
        "[[schedule]]\nname = \"tickets\"\nselect = [\"helpdesk\"]\nolder_than = \"30d\"\nevery = \"1d\"\n",
    )
    .await;
    let out = env.lethe(&["schedule", "run", "tickets", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "pending", "deferred, not done: {runs:#}");
    assert_eq!(runs[0]["removed"], 0);
    assert!(
        runs[0]["error"].as_str().unwrap().contains("503"),
        "{runs:#}"
    );
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(state.lock().unwrap().tickets.len(), 1);
    // The certificate of a deferred run claims nothing.
    let cert = env
        .json(&["report", "sweep", &run_id, "--format", "json"])
        .await;
    assert_eq!(cert["state"], "pending");
    assert_eq!(cert["removed"], 0);
    // Due again after the back-off (30s after a first 503), not before.
    let store = env.store().await;
    let row = store.sweep_run(&run_id).await.unwrap().unwrap();
    assert!(row.run_at > row.created_at, "deferred to a later run_at");
    assert_eq!(row.attempts, 1);
}

async fn the_daemon_runs_due_schedules_and_wakes_for_the_next_period(backend: Backend) {
    let (server, state) = desk(&[(501, "closed", "2020-01-05T10:00:00Z")], &[]).await;
    let env = env_with(
        backend,
        &format!(
            "[worker]\nidle_poll = \"200ms\"\n\n{}",
            zendesk_processor(&server.uri())
        ),
        "[[schedule]]\nname = \"tickets\"\nselect = [\"helpdesk\"]\nolder_than = \"30d\"\nevery = \"1s\"\n",
    )
    .await;
    let mut daemon = env
        .command(&["daemon"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn daemon");
    // Wait (up to 30s) for the first run and then for a later period's run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (left, searches) = {
            let d = state.lock().unwrap();
            (d.tickets.len(), d.searches.len())
        };
        if left == 0 && searches >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not sweep: {left} ticket(s) left, {searches} search(es)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pid = daemon.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), daemon.wait())
        .await
        .expect("the daemon stops on SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let runs = env
        .store()
        .await
        .sweep_runs_between(0, i64::MAX)
        .await
        .unwrap();
    assert!(runs.len() >= 3, "{runs:?}");
    assert!(runs.iter().all(|r| r.state == "done"), "{runs:?}");
    assert_eq!(
        runs.iter().map(|r| r.removed).sum::<i64>(),
        1,
        "removed once"
    );
}

on_both_backends!(
    an_s3_sweep_removes_only_old_versions_under_the_prefix_and_its_certificate_counts_them,
    a_zendesk_sweep_deletes_old_closed_tickets_with_the_documented_calls_and_a_refusal_is_recorded_as_failed,
    a_schedule_is_durable_and_runs_again_only_once_its_period_has_passed,
    a_sweep_cut_short_by_a_crash_is_taken_over_and_counted_once,
    a_dropbox_sweep_deletes_old_files_under_the_folder_by_id_and_a_refusal_is_recorded_as_failed,
    a_sweep_the_processor_cannot_answer_is_deferred_and_claims_nothing,
    the_daemon_runs_due_schedules_and_wakes_for_the_next_period,
);

#[tokio::test]
async fn check_names_the_file_and_key_of_a_bad_schedule() {
    let (server, _) = desk(&[], &[]).await;
    for (schedule, key, reason) in [
        (
            "[[schedule]]\nname = \"t\"\nselect = [\"helpdesk\"]\nolder_than = \"soon\"\nevery = \"1d\"\n",
            "line",
            "soon",
        ),
        (
            "[[schedule]]\nname = \"t\"\nselect = [\"helpdesk\"]\nolder_than = \"30d\"\nevery = \"1d\"\nstatus = \"open\"\n",
            "schedule[0].status",
            "open",
        ),
        (
            "[[schedule]]\nname = \"t\"\nselect = [\"nobody\"]\nolder_than = \"30d\"\nevery = \"1d\"\n",
            "schedule[0].select[0]",
            "nobody",
        ),
        (
            "[[schedule]]\nname = \"t\"\nselect = [\"category:mailing_list\"]\nolder_than = \"30d\"\nevery = \"1d\"\n",
            "schedule[0].select",
            "can sweep",
        ),
    ] {
        let env = env_with(Backend::Sqlite, &zendesk_processor(&server.uri()), schedule).await;
        let out = env.lethe(&["check", "--json"]).await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("retention"), "names the file: {err}");
        assert!(err.contains(key), "names the key {key}: {err}");
        assert!(err.contains(reason), "says what is wrong ({reason}): {err}");
        let out = env.lethe(&["schedule", "list"]).await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(!env.dir.path().join("lethe.db").exists(), "nothing written");
    }
}
