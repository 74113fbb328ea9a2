//! Measured scale-out (issue 12.6): `cargo bench --bench scaleout`.
//!
//! These machines have 2 cores, so a CPU-bound run cannot show what a second
//! daemon adds. Here the work is made round-trip-bound, as on a real network:
//! a TCP proxy (`tests/it/proxy.rs`) with a set one-way delay (default 1 ms
//! each way) sits between every daemon and PostgreSQL, and the fake processors
//! answer after a latency. 1, 2 and 4 real `lethe daemon` processes (the
//! release binary) each work through their own fresh schema. Requests are
//! filed (directly, not through the proxy) before the daemons start; the
//! clock runs from the first claim to the last result, as the store recorded
//! them, so daemon start-up is not counted.
//!
//! Prints, per daemon count: steps/s, the speed-up against one daemon, steps
//! per daemon CPU-second (from /proc, the daemons' own), and the peak calls
//! in flight per processor at the fakes against its cluster-wide limit (which
//! must never be exceeded).
//!
//! Knobs (env): `LETHE_BENCH_PG` (default the test server),
//! `LETHE_BENCH_DELAY_MS` (one way, default 1), `LETHE_BENCH_LATENCY_MS`
//! (processor latency, default 50), `LETHE_BENCH_WORKER` (steps in flight per
//! daemon, default 8), `LETHE_BENCH_LIMIT` (per processor, default 16),
//! `LETHE_BENCH_REQUESTS` (requests per daemon, default 60; 6 steps each),
//! `LETHE_BENCH_DAEMONS` (default "1,2,4").

#[path = "../tests/it/proxy.rs"]
mod proxy;

use lethe::config::Config;
use lethe::crypto::Keys;
use lethe::domain::{RequestKind, RequestStatus, Subject};
use lethe::engine::{Engine, SubmitOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CATEGORIES: [&str; 6] = [
    "mailing_list",
    "ticketing",
    "accounting",
    "hosting",
    "object_storage",
    "sms",
];

fn env_num<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// Fake processors: `POST /{category}/erase/{hash}` → 204 after the latency;
/// calls in flight counted per processor.
#[derive(Default)]
struct Fakes {
    latency_ms: AtomicUsize,
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
}

impl Fakes {
    fn enter(&self, cat: &str) {
        let mut m = self.in_flight.lock().expect("fakes");
        let e = m.entry(cat.to_string()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }
    fn leave(&self, cat: &str) {
        if let Some(e) = self.in_flight.lock().expect("fakes").get_mut(cat) {
            e.0 -= 1;
        }
    }
    fn reset_peaks(&self) {
        self.in_flight.lock().expect("fakes").clear();
    }
    fn peaks(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .in_flight
            .lock()
            .expect("fakes")
            .iter()
            .map(|(k, (_, p))| (k.clone(), *p))
            .collect();
        v.sort();
        v
    }
}

struct Leave(Arc<Fakes>, String);
impl Drop for Leave {
    fn drop(&mut self) {
        self.0.leave(&self.1);
    }
}

async fn serve_fakes(f: Arc<Fakes>) -> String {
    use axum::extract::Path as P;
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/{cat}/erase/{hash}",
            post(move |P((cat, _)): P<(String, String)>| {
                let f = f.clone();
                async move {
                    f.enter(&cat);
                    let _leave = Leave(f.clone(), cat);
                    let ms = f.latency_ms.load(Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route("/{cat}/ping", get(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    url
}

fn write_connectors(dir: &Path, limit: u32) {
    std::fs::create_dir_all(dir.join("connectors")).expect("dir");
    for c in CATEGORIES {
        let def = format!(
            r#"name = "bench_{c}"
category = "{c}"
[limits]
concurrency = {limit}
[check]
path = "/{c}/ping"
[actions.erase]
requires = ["email"]
[[actions.erase.calls]]
method = "POST"
path = "/{c}/erase/{{{{ subject.email | md5 }}}}"
[actions.export]
requires = ["email"]
[[actions.export.calls]]
path = "/{c}/ping"
"#
        );
        std::fs::write(dir.join(format!("connectors/bench_{c}.toml")), def).expect("write");
    }
}

fn config_text(store_url: &str, fakes: &str, worker: u32) -> String {
    let mut t = format!(
        "connectors_dir = \"connectors\"\n\n[store]\nurl = \"{store_url}\"\n\n[worker]\nconcurrency = {worker}\nlease = \"60s\"\nidle_poll = \"500ms\"\n\n"
    );
    for c in CATEGORIES {
        t.push_str(&format!(
            "[[processor]]\nname = \"{c}\"\nconnector = \"bench_{c}\"\nbase_url = \"{fakes}\"\n\n"
        ));
    }
    t
}

async fn pg_schema(base: &str) -> String {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(base)
        .await
        .expect("PostgreSQL for the benchmark");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .expect("schema");
    format!(
        "{base}{}options[search_path]={schema}",
        if base.contains('?') { '&' } else { '?' }
    )
}

struct Run {
    daemons: usize,
    steps: usize,
    wall_s: f64,
    cpu_s: f64,
    peaks: Vec<(String, usize)>,
    /// Claim to recorded result of each step, ms, sorted.
    step_ms: Vec<i64>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    base: &str,
    proxy: &proxy::Proxy,
    fakes: &Arc<Fakes>,
    fakes_url: &str,
    daemons: usize,
    requests: usize,
    worker: u32,
    limit: u32,
) -> Run {
    let direct = pg_schema(base).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_connectors(dir.path(), limit);
    let config: PathBuf = dir.path().join("lethe.toml");
    std::fs::write(&config, config_text(&direct, fakes_url, worker)).expect("config");
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
    let mut ids = Vec::with_capacity(requests);
    for i in 0..requests {
        let s =
            Subject::parse(Some(&format!("s{i}@example.com")), None, None, None).expect("email");
        ids.push(
            engine
                .submit(RequestKind::Erasure, s, SubmitOptions::default())
                .await
                .expect("submit")
                .request
                .id,
        );
    }
    // The daemons reach the store through the delaying proxy.
    std::fs::write(&config, config_text(&proxy.url(&direct), fakes_url, worker)).expect("config");
    fakes.reset_peaks();
    let mut children: Vec<Child> = (0..daemons)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_lethe"))
                .arg("--config")
                .arg(&config)
                .arg("daemon")
                .env("LETHE_KEY", &key)
                .env(
                    "RUST_LOG",
                    std::env::var("LETHE_BENCH_LOG").unwrap_or_else(|_| "error".into()),
                )
                .current_dir(dir.path())
                .spawn()
                .expect("spawn lethe daemon")
        })
        .collect();
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open = engine
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
        assert!(t0.elapsed() < Duration::from_secs(900), "did not finish");
    }
    let cpu_s: f64 = children.iter().map(|c| proc_cpu_seconds(c.id())).sum();
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (mut first, mut last, mut steps) = (i64::MAX, i64::MIN, 0);
    let mut step_ms = Vec::new();
    for id in &ids {
        let r = engine.request(id).await.expect("request");
        assert_eq!(r.status, RequestStatus::Completed, "request {id}");
        for s in engine.store.steps(id).await.expect("steps") {
            steps += 1;
            first = first.min(s.started_at.unwrap_or(i64::MAX));
            last = last.max(s.finished_at.unwrap_or(i64::MIN));
            if let (Some(a), Some(b)) = (s.started_at, s.finished_at) {
                step_ms.push(b - a);
            }
        }
    }
    Run {
        daemons,
        steps,
        wall_s: ((last - first).max(1) as f64) / 1000.0,
        cpu_s,
        peaks: fakes.peaks(),
        step_ms: {
            step_ms.sort_unstable();
            step_ms
        },
    }
}

fn main() {
    let base = std::env::var("LETHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let delay_ms: u64 = env_num("LETHE_BENCH_DELAY_MS", 1);
    let latency_ms: usize = env_num("LETHE_BENCH_LATENCY_MS", 50);
    let worker: u32 = env_num("LETHE_BENCH_WORKER", 8);
    let limit: u32 = env_num("LETHE_BENCH_LIMIT", 16);
    let per_daemon: usize = env_num("LETHE_BENCH_REQUESTS", 60);
    let counts: Vec<usize> = std::env::var("LETHE_BENCH_DAEMONS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    // `cargo bench` passes `--bench`; a filter argument other than `scale` skips this target.
    if let Some(f) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        if !"scaleout".contains(&f) {
            return;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fakes = Arc::new(Fakes::default());
        fakes.latency_ms.store(latency_ms, Ordering::Relaxed);
        let fakes_url = serve_fakes(fakes.clone()).await;
        let upstream = {
            let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
            let host = rest.split('/').next().unwrap_or(rest);
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            let host = if host.contains(':') { host.to_string() } else { format!("{host}:5432") };
            host.replace("localhost", "127.0.0.1")
                .parse()
                .expect("PostgreSQL host:port")
        };
        let proxy = proxy::Proxy::start(upstream, Duration::from_millis(delay_ms)).await;
        println!(
            "scale-out: {} cores; PostgreSQL through a proxy delaying {delay_ms} ms each way; 6 processors, {latency_ms} ms per call, limit {limit} in flight each (cluster-wide); {worker} steps in flight per daemon; {per_daemon} requests x 6 steps per daemon",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let mut one: Option<f64> = None;
        for &d in &counts {
            let r = run(&base, &proxy, &fakes, &fakes_url, d, per_daemon * d, worker, limit).await;
            let sps = r.steps as f64 / r.wall_s;
            // The first count (1 by default) is the baseline.
            let base_sps = *one.get_or_insert(sps);
            let worst = r.peaks.iter().map(|(_, p)| *p).max().unwrap_or(0);
            let pct = |q: f64| {
                r.step_ms
                    .get(((r.step_ms.len() as f64 * q) as usize).min(r.step_ms.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            println!(
                "{} daemon(s): {} steps in {:.2} s = {:.0} steps/s; {:.2}x the first; {:.0} steps per daemon CPU-second ({:.2} CPU-s); claim to result p50 {} ms, p90 {} ms; peak in flight per processor {} (limit {limit}){}",
                r.daemons,
                r.steps,
                r.wall_s,
                sps,
                sps / base_sps,
                r.steps as f64 / r.cpu_s.max(1e-9),
                r.cpu_s,
                pct(0.5),
                pct(0.9),
                r.peaks.iter().map(|(k, p)| format!("{k}={p}")).collect::<Vec<_>>().join(" "),
                if worst > limit as usize { "  LIMIT EXCEEDED" } else { "" }
            );
            assert!(worst <= limit as usize, "a processor's cluster-wide limit was exceeded");
        }
    });
}
