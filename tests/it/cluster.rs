//! Scale and resilience: several daemons on one PostgreSQL, `kill -9` at any
//! moment, and a single SQLite daemon killed and restarted.

use crate::fakes::{API_KEY, LIST};
use crate::helpers::{Backend, TestEnv};
use lethe::config::Config;
use lethe::crypto::Keys;
use lethe::domain::{RequestKind, RequestStatus, Subject};
use lethe::engine::{Engine, SubmitOptions};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Mailchimp stand-in that records every erase call: when it started and
/// ended per member, how many were in flight at once, which members are gone.
/// Per member: each erase call's start and (once finished) end.
pub(crate) type Calls = HashMap<String, Vec<(Instant, Option<Instant>)>>;

#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) calls: Mutex<Calls>,
    pub(crate) deleted: Mutex<HashSet<String>>,
    /// Added to the latency of every call (set while a test runs).
    pub(crate) extra_ms: std::sync::atomic::AtomicU64,
}

/// Marks a call's end even when the handler is dropped (the client died).
struct CallGuard {
    rec: Arc<Recorder>,
    hash: String,
    idx: usize,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.rec.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(v) = self.rec.calls.lock().unwrap().get_mut(&self.hash) {
            v[self.idx].1 = Some(Instant::now());
        }
    }
}

pub(crate) async fn recorder_server(
    rec: Arc<Recorder>,
    latency: Duration,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
        post(move |Path((_list, hash)): Path<(String, String)>| {
            let rec = rec.clone();
            async move {
                let n = rec.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                rec.max_in_flight.fetch_max(n, Ordering::SeqCst);
                let idx = {
                    let mut calls = rec.calls.lock().unwrap();
                    let v = calls.entry(hash.clone()).or_default();
                    v.push((Instant::now(), None));
                    v.len() - 1
                };
                let _guard = CallGuard { rec: rec.clone(), hash: hash.clone(), idx };
                let extra = Duration::from_millis(rec.extra_ms.load(Ordering::SeqCst));
                tokio::time::sleep(latency + extra).await;
                let fresh = rec.deleted.lock().unwrap().insert(hash);
                if fresh {
                    axum::http::StatusCode::NO_CONTENT.into_response()
                } else {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        [("content-type", "application/problem+json")],
                        r#"{"title":"Resource Not Found","status":404,"detail":"The requested resource could not be found."}"#,
                    )
                        .into_response()
                }
            }
        }),
    );
    use axum::response::IntoResponse;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (
        url,
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

pub(crate) fn key_of(env: &TestEnv) -> String {
    env.env
        .iter()
        .find(|(k, _)| k == "LETHE_KEY")
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// File `n` erasures in-process (through the real engine and store).
pub(crate) async fn file_requests(env: &TestEnv, n: usize) -> (Arc<Engine>, Vec<String>) {
    let config = Config::load(&env.config).unwrap();
    let store = lethe::store::open(&config.store.url).await.unwrap();
    store.migrate().await.unwrap();
    let keys = Keys::from_base64("LETHE_KEY", &key_of(env)).unwrap();
    let engine = Engine::new(Arc::new(config), store, keys).unwrap();
    let mut ids = vec![];
    for i in 0..n {
        let s = Subject::parse(Some(&format!("member{i}@example.com")), None, None, None).unwrap();
        ids.push(
            engine
                .submit(RequestKind::Erasure, s, SubmitOptions::default())
                .await
                .unwrap()
                .request
                .id,
        );
    }
    (engine, ids)
}

pub(crate) async fn wait_all_completed(engine: &Engine, ids: &[String], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut open = 0;
        for id in ids {
            if engine.request(id).await.unwrap().status != RequestStatus::Completed {
                open += 1;
            }
        }
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} requests not completed after {secs}s",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn assert_no_overlaps(rec: &Recorder) {
    for (hash, calls) in rec.calls.lock().unwrap().iter() {
        let mut c = calls.clone();
        c.sort_by_key(|(s, _)| *s);
        for w in c.windows(2) {
            let end = w[0]
                .1
                .unwrap_or_else(|| panic!("a call for {hash} never ended"));
            assert!(
                w[1].0 >= end,
                "member {hash}: a second erase started while the first was still running"
            );
        }
    }
}

pub(crate) async fn wait_deleted(rec: &Recorder, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while rec.deleted.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} erasures after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn processor(url: &str, concurrency: u32) -> String {
    format!(
        "[worker]\nlease = \"2s\"\nidle_poll = \"100ms\"\nconcurrency = 16\n\n[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{url}/3.0\"\nconcurrency = {concurrency}\ntimeout = \"1s\"\nsettings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_on_postgresql_survive_a_kill_9_with_every_request_completed_once() {
    let rec = Arc::new(Recorder::default());
    let (url, _srv) = recorder_server(rec.clone(), Duration::from_millis(30)).await;
    let mut env = TestEnv::new(Backend::Postgres, "", &processor(&url, 6)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("RUST_LOG", "warn");

    let mut daemons: Vec<_> = (0..3)
        .map(|_| env.command(&["daemon"]).spawn().expect("daemon"))
        .collect();
    // Let them start (each writes the processor's limits into the store).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (engine, ids) = file_requests(&env, 200).await;

    wait_deleted(&rec, 60, 60).await;
    daemons[0].start_kill().expect("kill -9");
    let _ = daemons[0].wait().await;

    wait_all_completed(&engine, &ids, 90).await;
    for d in daemons.iter_mut().skip(1) {
        let _ = d.start_kill();
        let _ = d.wait().await;
    }

    let deleted = rec.deleted.lock().unwrap().clone();
    assert_eq!(deleted.len(), 200, "every member erased at the processor");
    assert_no_overlaps(&rec);
    let max = rec.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 6, "the processor's limit of 6 holds for the whole cluster, not per daemon (saw {max} in flight)");
    for id in &ids {
        let steps = engine.store.steps(id).await.unwrap();
        assert!(steps.iter().all(|s| s.outcome.is_some()), "{steps:?}");
    }
    let audit = lethe::audit::verify(engine.store.as_ref()).await.unwrap();
    assert!(
        audit.broken.is_none(),
        "the audit chain survives concurrent writers and a crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_daemon_killed_mid_run_and_restarted_completes_every_request() {
    let rec = Arc::new(Recorder::default());
    let (url, _srv) = recorder_server(rec.clone(), Duration::from_millis(100)).await;
    let mut env = TestEnv::new(Backend::Sqlite, "", &processor(&url, 2)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let (engine, ids) = file_requests(&env, 30).await;

    let mut daemon = env.command(&["daemon"]).spawn().expect("daemon");
    wait_deleted(&rec, 8, 30).await;
    daemon.start_kill().expect("kill -9");
    let _ = daemon.wait().await;
    let done_at_kill = rec.deleted.lock().unwrap().len();
    assert!(done_at_kill < 30, "killed mid-run");

    let mut daemon = env.command(&["daemon"]).spawn().expect("restart");
    wait_all_completed(&engine, &ids, 60).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;

    assert_eq!(rec.deleted.lock().unwrap().len(), 30);
    assert_no_overlaps(&rec);
    assert!(rec.max_in_flight.load(Ordering::SeqCst) <= 2);
}
