//! End-to-end throughput of the orchestrator: `cargo bench --bench throughput`.
//!
//! Real `lethe daemon` processes (the release binary), a real store (a SQLite
//! file, or PostgreSQL at `LETHE_BENCH_PG`, default the test server), real HTTP
//! over loopback to in-process fake processors — one per category (mailing
//! list, ticketing, accounting, hosting, object storage, SMS) — that answer
//! after a set latency and count the calls in flight. Requests are filed
//! before the daemons start; the clock runs from daemon start to the last
//! completion. CPU time and peak RSS are the daemons' own (from /proc), so the
//! fakes' work is not counted.
//!
//! Prints, per scenario: steps per second, request completion p50/p99, daemon
//! CPU time per step, peak RSS, and efficiency = achieved / ideal, where ideal
//! is what the processors' concurrency limits and latency allow (or the
//! daemons' own concurrency, when that is lower).
//!
//! Knobs (env): `LETHE_BENCH_SCALE` (1.0 = default sizes), `LETHE_BENCH_PG`,
//! `LETHE_BENCH_IDLE_N` (requests waiting in the idle scenario, default 100000).

use lethe::config::Config;
use lethe::crypto::Keys;
use lethe::domain::{RequestKind, RequestStatus, Subject};
use lethe::engine::{Engine, SubmitOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CATEGORIES: [&str; 6] = [
    "mailing_list",
    "ticketing",
    "accounting",
    "hosting",
    "object_storage",
    "sms",
];

/// Clock ticks per second for /proc/PID/stat (Linux: 100).
const TICKS: f64 = 100.0;

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / TICKS
}

fn proc_peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The fake processors: `POST /{category}/erase/{hash}` → 204 after the latency.
#[derive(Default)]
struct Fakes {
    latency_ms: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
}

async fn serve_fakes(f: Arc<Fakes>) -> String {
    use axum::routing::{get, post};
    let f2 = f.clone();
    let app = axum::Router::new()
        .route(
            "/{cat}/erase/{hash}",
            post(move || {
                let f = f.clone();
                async move {
                    let n = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    f.max_in_flight.fetch_max(n, Ordering::SeqCst);
                    let ms = f.latency_ms.load(Ordering::Relaxed);
                    if ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                    }
                    f.in_flight.fetch_sub(1, Ordering::SeqCst);
                    f.calls.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route("/{cat}/ping", get(|| async { "ok" }));
    let _ = f2;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    url
}

/// A connector definition per category, all speaking the fakes' small API.
fn write_connectors(dir: &Path) {
    std::fs::create_dir_all(dir.join("connectors")).expect("dir");
    for c in CATEGORIES {
        let def = format!(
            r#"name = "bench_{c}"
category = "{c}"
[limits]
concurrency = 16
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

fn config_text(store_url: &str, fakes: &str, worker_concurrency: u32) -> String {
    let mut t = format!(
        "connectors_dir = \"connectors\"\n\n[store]\nurl = \"{store_url}\"\n\n[worker]\nconcurrency = {worker_concurrency}\nlease = \"60s\"\nidle_poll = \"2s\"\n\n"
    );
    for c in CATEGORIES {
        t.push_str(&format!(
            "[[processor]]\nname = \"{c}\"\nconnector = \"bench_{c}\"\nbase_url = \"{fakes}\"\n\n"
        ));
    }
    t
}

async fn pg_url() -> String {
    let base = std::env::var("LETHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base)
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

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    key: String,
    engine: Arc<Engine>,
}

async fn setup(store_url: &str, fakes: &str, worker_concurrency: u32) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    write_connectors(dir.path());
    let config = dir.path().join("lethe.toml");
    std::fs::write(&config, config_text(store_url, fakes, worker_concurrency)).expect("config");
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

async fn file(engine: &Engine, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let s = Subject::parse(Some(&format!("{tag}{i}@example.com")), None, None, None)
            .expect("email");
        ids.push(
            engine
                .submit(RequestKind::Erasure, s, SubmitOptions::default())
                .await
                .expect("submit")
                .request
                .id,
        );
    }
    ids
}

fn spawn_daemon(s: &Setup) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("--config")
        .arg(&s.config)
        .arg("daemon")
        .env("LETHE_KEY", &s.key)
        .env("RUST_LOG", "warn")
        .current_dir(s.dir.path())
        .spawn()
        .expect("spawn lethe daemon")
}

struct Outcome {
    wall: Duration,
    steps: usize,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
}

/// Start `daemons` daemons, wait until every request is completed, stop them.
async fn run(s: &Setup, ids: &[String], daemons: usize) -> Outcome {
    let start_ms = lethe::store::ms(chrono::Utc::now());
    let t0 = Instant::now();
    let mut children: Vec<Child> = (0..daemons).map(|_| spawn_daemon(s)).collect();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let cpu_s: f64 = children.iter().map(|c| proc_cpu_seconds(c.id())).sum();
    let peak_rss_mib = children
        .iter()
        .map(|c| proc_peak_rss_mib(c.id()))
        .fold(0.0, f64::max);
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut lat = Vec::with_capacity(ids.len());
    let mut steps = 0;
    for id in ids {
        let r = s.engine.request(id).await.expect("request");
        assert_eq!(r.status, RequestStatus::Completed, "request {id}");
        lat.push((r.completed_at.unwrap_or(start_ms) - start_ms).max(0) as f64);
        steps += s.engine.store.steps(id).await.expect("steps").len();
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Outcome {
        wall,
        steps,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        cpu_s,
        peak_rss_mib,
    }
}

fn report(name: &str, o: &Outcome, ideal: Option<f64>) -> f64 {
    let sps = o.steps as f64 / o.wall.as_secs_f64();
    println!(
        "{name}: {} steps in {:.2} s = {:.0} steps/s; completion p50 {:.0} ms, p99 {:.0} ms; daemon CPU {:.3} ms/step; peak RSS {:.1} MiB{}",
        o.steps,
        o.wall.as_secs_f64(),
        sps,
        o.p50_ms,
        o.p99_ms,
        o.cpu_s * 1000.0 / o.steps as f64,
        o.peak_rss_mib,
        ideal.map(|i| format!("; efficiency {:.0}% of ideal {:.0} steps/s", 100.0 * sps / i, i)).unwrap_or_default()
    );
    sps
}

/// One erasure at one processor, in-process (the figure to compare with Fides).
async fn single(fakes: &str) {
    let s = setup(
        &format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!("lethe-bench-{}.db", uuid::Uuid::new_v4().simple()))
                .display()
        ),
        fakes,
        64,
    )
    .await;
    let _ = &s.dir;
    for (i, tag) in ["warm", "subject"].iter().enumerate() {
        let t0 = Instant::now();
        let ids = file(&s.engine, 1, tag).await;
        s.engine.run_until_idle().await.expect("run");
        let wall = t0.elapsed();
        assert_eq!(
            s.engine.request(&ids[0]).await.expect("r").status,
            RequestStatus::Completed
        );
        if i == 1 {
            println!(
                "one erasure fanned out to 6 processors, in-process (file + plan + 6 leased HTTP calls + results + audit, SQLite): {:.2} ms wall",
                wall.as_secs_f64() * 1000.0
            );
        }
    }
}

/// Requests waiting in soft-delete windows: the idle daemon's CPU and memory.
async fn idle(n: usize, fakes: &str) {
    let path = std::env::temp_dir().join(format!(
        "lethe-bench-idle-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    let s = setup(&url, fakes, 64).await;
    // Insert n requests with one step each, in its 30-day window (grace), through the store.
    let store = s.engine.store.clone();
    let now = lethe::store::ms(chrono::Utc::now());
    let t0 = Instant::now();
    for i in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let req = lethe::store::NewRequest {
            id,
            kind: RequestKind::Erasure,
            workflow: "erasure".into(),
            received_at: now,
            due_at: now + 30 * 86_400_000,
            external_id: None,
            subject_hash: format!("h{i}"),
            subject_masked: "w***@example.com".into(),
            identities: vec![0; 60],
            callback_url: None,
            data_key: None,
            fields: vec![],
            verified: true,
            follows: None,
            suppress: vec![],
        };
        let step = lethe::store::NewStep {
            processor: "object_storage".into(),
            connector: "bench_object_storage".into(),
            category: "object_storage".into(),
            action: lethe::domain::Action::Erase,
            wave: 0,
            state: lethe::domain::StepState::Grace,
            run_at: now + 30 * 86_400_000 + i as i64,
            hold_basis: None,
            hold_until: None,
            outcome: None,
            note: None,
        };
        store
            .create_request(req, vec![step], now)
            .await
            .expect("insert");
    }
    let filled = t0.elapsed();
    let mut d = spawn_daemon(&s);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = proc_cpu_seconds(d.id());
    let measure = Duration::from_secs(20);
    tokio::time::sleep(measure).await;
    let cpu = proc_cpu_seconds(d.id()) - cpu0;
    let rss = proc_peak_rss_mib(d.id());
    let _ = d.kill();
    let _ = d.wait();
    println!(
        "idle daemon with {n} requests waiting in soft-delete windows (SQLite; filled in {:.1} s): CPU {:.2}% of one core over {} s ({:.0} ms), peak RSS {:.1} MiB",
        filled.as_secs_f64(),
        100.0 * cpu / measure.as_secs_f64(),
        measure.as_secs(),
        cpu * 1000.0,
        rss
    );
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let scale: f64 = std::env::var("LETHE_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let idle_n: usize = std::env::var("LETHE_BENCH_IDLE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let n = |base: f64| ((base * scale) as usize).max(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fakes = Arc::new(Fakes::default());
        let url = serve_fakes(fakes.clone()).await;
        let sqlite = || {
            format!(
                "sqlite://{}",
                std::env::temp_dir()
                    .join(format!("lethe-bench-{}.db", uuid::Uuid::new_v4().simple()))
                    .display()
            )
        };
        println!(
            "machine: {} cores; store SQLite file in {}; 6 processors (one per category)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::env::temp_dir().display()
        );

        single(&url).await;

        // Orchestrator-bound: processors answer at once.
        fakes.latency_ms.store(0, Ordering::Relaxed);
        let s = setup(&sqlite(), &url, 256).await;
        let ids = file(&s.engine, n(1000.0), "ob").await;
        let o = run(&s, &ids, 1).await;
        report("orchestrator-bound, SQLite, 1 daemon", &o, None);

        // Latency-bound: 25 ms per call, 16 concurrent per processor; ideal = 6 x 16 / 25 ms.
        fakes.latency_ms.store(25, Ordering::Relaxed);
        let ideal = 6.0 * 16.0 / 0.025;
        let s = setup(&sqlite(), &url, 256).await;
        let ids = file(&s.engine, n(500.0), "lb").await;
        fakes.max_in_flight.store(0, Ordering::Relaxed);
        let o = run(&s, &ids, 1).await;
        report(
            "latency-bound (25 ms, 16/processor), SQLite, 1 daemon",
            &o,
            Some(ideal),
        );
        println!(
            "  max calls in flight at the fakes: {} (limit 6 x 16 = 96)",
            fakes.max_in_flight.load(Ordering::Relaxed)
        );

        let s = setup(&pg_url().await, &url, 256).await;
        let ids = file(&s.engine, n(500.0), "pg").await;
        let o = run(&s, &ids, 1).await;
        report(
            "latency-bound (25 ms, 16/processor), PostgreSQL, 1 daemon",
            &o,
            Some(ideal),
        );

        // Scale-out: each daemon may have 32 steps in flight, less than the processors allow (96),
        // so a second daemon has room to add throughput.
        let s = setup(&pg_url().await, &url, 32).await;
        let ids = file(&s.engine, n(500.0), "one").await;
        let one = report(
            "latency-bound, PostgreSQL, 1 daemon of 32 in flight",
            &run(&s, &ids, 1).await,
            Some(32.0 / 0.025),
        );
        let s = setup(&pg_url().await, &url, 32).await;
        let ids = file(&s.engine, n(500.0), "two").await;
        fakes.max_in_flight.store(0, Ordering::Relaxed);
        let two = report(
            "latency-bound, PostgreSQL, 2 daemons of 32 in flight",
            &run(&s, &ids, 2).await,
            Some(64.0 / 0.025),
        );
        println!(
            "  2 daemons / 1 daemon = {:.2}x; max calls in flight {}",
            two / one,
            fakes.max_in_flight.load(Ordering::Relaxed)
        );

        fakes.latency_ms.store(0, Ordering::Relaxed);
        idle(idle_n, &url).await;
        println!(
            "fake processors served {} calls in all",
            fakes.calls.load(Ordering::Relaxed)
        );
    });
}
