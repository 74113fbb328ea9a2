//! End-to-end throughput of the orchestrator: `cargo bench --bench throughput`.
//!
//! Real engine, real store (a SQLite file, or PostgreSQL when `LETHE_BENCH_PG`
//! is set), real HTTP to in-process simulated processors on 127.0.0.1. Prints:
//! - one erasure at one processor: wall time and orchestrator CPU time (the
//!   figure to compare with Fides' 1.5–2.2 s and 1.5 CPU-seconds);
//! - N erasures fanned out: steps per second, request completion p50/p99,
//!   CPU time per step, peak RSS, and efficiency against the ideal that the
//!   processors' concurrency and latency allow.
//!
//! Knobs (env): `LETHE_BENCH_N` (requests, default 2000), `LETHE_BENCH_LATENCY_MS`
//! (simulated processor latency, default 0), `LETHE_BENCH_PG` (a PostgreSQL URL).

use lethe::config::Config;
use lethe::crypto::Keys;
use lethe::domain::{RequestKind, RequestStatus, Subject};
use lethe::engine::{Engine, SubmitOptions};
use lethe::sim::mailchimp::Mailchimp;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const CONCURRENCY: u32 = 16;

/// CPU seconds (user + system) of this process, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at index 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size in MiB, from /proc/self/status.
fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct World {
    engine: Arc<Engine>,
    sim: Arc<Mailchimp>,
    _server: lethe::sim::Running,
    _dir: tempfile::TempDir,
}

async fn world(latency_ms: u32) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Mailchimp::new("bench-key");
    sim.latency_ms.store(latency_ms, Ordering::Relaxed);
    let server = lethe::sim::serve(sim.router()).await.expect("sim");
    std::env::set_var("BENCH_MAILCHIMP_KEY", "bench-key");
    let url = match std::env::var("LETHE_BENCH_PG") {
        Ok(pg) => {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&pg).await.expect("PostgreSQL");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&pool)
                .await
                .expect("schema");
            format!(
                "{pg}{}options[search_path]={schema}",
                if pg.contains('?') { '&' } else { '?' }
            )
        }
        Err(_) => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let text = format!(
        "[store]\nurl = \"{url}\"\n[worker]\nconcurrency = 256\n\n[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{}/3.0\"\nconcurrency = {CONCURRENCY}\nsettings = {{ list_id = \"l\" }}\nsecrets = {{ api_key = \"BENCH_MAILCHIMP_KEY\" }}\n",
        server.url()
    );
    let path = dir.path().join("lethe.toml");
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("config");
    let store = lethe::store::open(&config.store.url).await.expect("store");
    store.migrate().await.expect("migrate");
    let keys = Keys::from_base64("bench", &Keys::generate_base64()).expect("key");
    let engine = Engine::new(Arc::new(config), store, keys).expect("engine");
    World {
        engine,
        sim,
        _server: server,
        _dir: dir,
    }
}

async fn single_erasure() {
    let w = world(0).await;
    // Warm up connections and statement caches with one request, as a long-running daemon would be.
    for (i, email) in ["warm@example.com", "subject@example.com"]
        .iter()
        .enumerate()
    {
        w.sim.add_member("l", email);
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let sub = w
            .engine
            .submit(
                RequestKind::Erasure,
                Subject::parse(Some(email), None, None, None).expect("email"),
                SubmitOptions::default(),
            )
            .await
            .expect("submit");
        w.engine.run_until_idle().await.expect("run");
        let wall = t0.elapsed();
        let cpu = cpu_seconds() - cpu0;
        let req = w.engine.request(&sub.request.id).await.expect("request");
        assert_eq!(req.status, RequestStatus::Completed);
        if i == 1 {
            println!(
                "one erasure at one processor (SQLite file unless LETHE_BENCH_PG): wall {:.2} ms, process CPU {:.0} ms (1/100 s resolution)",
                wall.as_secs_f64() * 1000.0,
                cpu * 1000.0
            );
        }
    }
}

async fn fan_out(n: usize, latency_ms: u32) {
    let w = world(latency_ms).await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("subject{i}@example.com");
        w.sim.add_member("l", &email);
        let sub = w
            .engine
            .submit(
                RequestKind::Erasure,
                Subject::parse(Some(&email), None, None, None).expect("email"),
                SubmitOptions::default(),
            )
            .await
            .expect("submit");
        ids.push(sub.request.id);
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    w.engine.run_until_idle().await.expect("run");
    let wall = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let mut done = Vec::with_capacity(n);
    for id in &ids {
        let req = w.engine.request(id).await.expect("request");
        assert_eq!(req.status, RequestStatus::Completed, "request {id}");
        let steps = w.engine.store.steps(id).await.expect("steps");
        let fin = steps
            .iter()
            .filter_map(|s| s.finished_at)
            .max()
            .unwrap_or(0);
        done.push(fin);
    }
    let start_ms = lethe::store::ms(chrono::Utc::now()) - wall.as_millis() as i64;
    let mut lat: Vec<f64> = done.iter().map(|f| (*f - start_ms).max(0) as f64).collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let steps_per_s = n as f64 / wall.as_secs_f64();
    let ideal = if latency_ms == 0 {
        f64::NAN
    } else {
        CONCURRENCY as f64 * 1000.0 / latency_ms as f64
    };
    println!(
        "{n} erasures x 1 processor, latency {latency_ms} ms, limit {CONCURRENCY} concurrent: {:.0} steps/s, wall {:.2} s, \
         completion p50 {:.0} ms p99 {:.0} ms (from run start), CPU {:.3} ms/step, peak RSS {:.1} MiB{}",
        steps_per_s,
        wall.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu * 1000.0 / n as f64,
        peak_rss_mib(),
        if ideal.is_nan() { String::new() } else { format!(", efficiency {:.0}% of ideal {:.0} steps/s", 100.0 * steps_per_s / ideal, ideal) }
    );
    assert_eq!(
        w.sim.deleted.load(Ordering::Relaxed) as usize,
        n,
        "every erase call reached the processor exactly once"
    );
}

fn main() {
    let n: usize = std::env::var("LETHE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let latency: u32 = std::env::var("LETHE_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        single_erasure().await;
        fan_out(n, latency).await;
        if latency == 0 {
            fan_out(n.min(1000), 25).await;
        }
    });
}
