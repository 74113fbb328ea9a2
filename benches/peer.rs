//! Single-daemon throughput on the peer's workload (issue 12.7):
//! `cargo bench --bench peer`.
//!
//! The workload Fides is measured on: one processor (Mailchimp, through the
//! real `mailchimp` connector and its response checks), answering at once,
//! 10 calls in flight (Mailchimp's documented limit of simultaneous
//! connections), **1,000 erasures of distinct subjects**, the embedded SQLite
//! store, one real `lethe daemon` (the release binary).
//!
//! The fake is a Rust in-process server (axum) that answers
//! `POST …/members/{hash}/actions/delete-permanent` with Mailchimp's
//! `204 No Content` at once, so it is not the bottleneck: it does no more
//! than parse the request line and count. Requests are filed before the daemon
//! starts; the clock runs from the daemon's first claim to its last result, as
//! the store recorded them (`started_at`, `finished_at`), so process start-up
//! is not counted; the wall time from spawn is printed too. CPU time is the
//! daemon's own (from `/proc/PID/stat`, start-up included).
//!
//! Knobs (env): `LETHE_BENCH_N` (erasures, default 1000),
//! `LETHE_BENCH_INFLIGHT` (the processor's limit, default 10),
//! `LETHE_BENCH_RUNS` (repetitions, default 3), `LETHE_BENCH_KEEP` (print the
//! config directory and keep it, for profiling the daemon by hand).

use lethe::config::Config;
use lethe::crypto::Keys;
use lethe::domain::{RequestKind, RequestStatus, Subject};
use lethe::engine::{Engine, SubmitOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIST: &str = "a1b2c3d4e5";

fn env_num<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// (user, system) CPU seconds of a process, all threads.
fn proc_cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) / 100.0, t(12) / 100.0)
}

fn proc_peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The Mailchimp fake: counts calls and the peak in flight.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

async fn serve(f: Arc<Fake>) -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
            post(move || {
                let f = f.clone();
                async move {
                    let n = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    f.peak.fetch_max(n, Ordering::SeqCst);
                    f.calls.fetch_add(1, Ordering::SeqCst);
                    // Yield once, so overlapping calls can be seen.
                    tokio::task::yield_now().await;
                    f.in_flight.fetch_sub(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/3.0/ping",
            get(|| async {
                axum::Json(serde_json::json!({"health_status": "Everything's Chimpy!"}))
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    url
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    key: String,
    engine: Arc<Engine>,
}

async fn setup(fake: &str, in_flight: u32) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("lethe.db");
    let config = dir.path().join("lethe.toml");
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    std::fs::write(
        &config,
        format!(
            "connectors_dir = \"{}\"\n\n[store]\nurl = \"sqlite://{}\"\n\n[worker]\nconcurrency = 64\nlease = \"5m\"\nidle_poll = \"2s\"\n\n\
             [[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{fake}/3.0\"\nconcurrency = {in_flight}\n\
             settings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n",
            connectors.display(),
            db.display()
        ),
    )
    .expect("config");
    std::env::set_var("MAILCHIMP_API_KEY", "0123456789abcdef-us6");
    let cfg = Config::load(&config).expect("config loads");
    let store = lethe::store::open(&cfg.store.url).await.expect("store");
    store.migrate().await.expect("migrate");
    let key = Keys::generate_base64();
    let engine = Engine::new(
        Arc::new(cfg),
        store,
        Keys::from_base64("k", &key).expect("key"),
    )
    .expect("engine");
    Setup {
        dir,
        config,
        key,
        engine,
    }
}

fn spawn_daemon(s: &Setup) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("--config")
        .arg(&s.config)
        .arg("daemon")
        .env("LETHE_KEY", &s.key)
        .env("MAILCHIMP_API_KEY", "0123456789abcdef-us6")
        .env(
            "RUST_LOG",
            std::env::var("LETHE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(s.dir.path())
        .spawn()
        .expect("spawn lethe daemon")
}

fn main() {
    let n: usize = env_num("LETHE_BENCH_N", 1000);
    let in_flight: u32 = env_num("LETHE_BENCH_INFLIGHT", 10);
    let runs: usize = env_num("LETHE_BENCH_RUNS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fake = Arc::new(Fake::default());
        let url = serve(fake.clone()).await;
        println!(
            "machine: {} cores; 1 processor (mailchimp connector, in-process fake answering 204 at once), \
             {in_flight} in flight; {n} erasures of distinct subjects; SQLite; 1 daemon",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        for run in 1..=runs {
            let s = setup(&url, in_flight).await;
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let subject = Subject::parse(
                    Some(&format!("peer{run}-{i}@example.com")),
                    None,
                    None,
                    None,
                )
                .expect("email");
                ids.push(
                    s.engine
                        .submit(RequestKind::Erasure, subject, SubmitOptions::default())
                        .await
                        .expect("submit")
                        .request
                        .id,
                );
            }
            fake.calls.store(0, Ordering::SeqCst);
            fake.peak.store(0, Ordering::SeqCst);
            let t0 = Instant::now();
            let mut child = spawn_daemon(&s);
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let open = s
                    .engine
                    .store
                    .list_requests(&lethe::store::RequestFilter {
                        status: Some(RequestStatus::InProgress),
                        limit: Some(1),
                        ..Default::default()
                    })
                    .await
                    .expect("list");
                if open.is_empty() {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(600),
                    "benchmark did not finish"
                );
            }
            let wall = t0.elapsed();
            let (user, sys) = proc_cpu_seconds(child.id());
            let cpu = user + sys;
            let rss = proc_peak_rss_mib(child.id());
            if std::env::var("LETHE_BENCH_KEEP").is_err() {
                let _ = child.kill();
            } else {
                println!("  kept: {} (daemon pid {})", s.dir.path().display(), child.id());
            }
            let _ = child.wait();
            let (mut first, mut last) = (i64::MAX, i64::MIN);
            let mut in_step = Vec::with_capacity(n);
            for id in &ids {
                let r = s.engine.request(id).await.expect("request");
                assert_eq!(r.status, RequestStatus::Completed, "request {id}");
                for st in s.engine.store.steps(id).await.expect("steps") {
                    assert_eq!(
                        st.outcome.map(|o| o.to_string()).as_deref(),
                        Some("erased"),
                        "request {id}"
                    );
                    if let Some(t) = st.started_at {
                        first = first.min(t);
                    }
                    if let Some(t) = st.finished_at {
                        last = last.max(t);
                    }
                    if let (Some(a), Some(b)) = (st.started_at, st.finished_at) {
                        in_step.push(b - a);
                    }
                }
            }
            assert_eq!(fake.calls.load(Ordering::SeqCst), n, "one call per erasure");
            let span = (last - first).max(1) as f64 / 1000.0;
            in_step.sort_unstable();
            let claim_to_result_ms = in_step.get(in_step.len() / 2).copied().unwrap_or(0);
            println!(
                "run {run}: {n} erasures in {:.3} s (first claim to last result) = {:.0} erasures/s; \
                 {:.2} s from spawn; daemon CPU {:.3} ms per erasure ({:.0} % in the kernel); peak in flight at the fake {} (limit {in_flight}); peak RSS {:.1} MiB; \
                 claim to decision p50 {} ms",
                span,
                n as f64 / span,
                wall.as_secs_f64(),
                cpu * 1000.0 / n as f64,
                100.0 * sys / cpu.max(1e-9),
                fake.peak.load(Ordering::SeqCst),
                rss,
                claim_to_result_ms
            );
            if std::env::var("LETHE_BENCH_KEEP").is_ok() {
                std::mem::forget(s.dir);
            }
        }
    });
}
