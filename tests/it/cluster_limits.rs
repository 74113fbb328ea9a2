//! Exact cluster-wide limits (issue 12.3): the store grants a processor's
//! slots at claim time, so every daemon and `run` together keep exactly the
//! configured number of calls in flight — never more, and no capacity left
//! idle — and a killed daemon's slots come back when its leases expire.

use crate::cluster::{
    assert_no_overlaps, file_requests, processor, recorder_server, wait_all_completed,
    wait_deleted, Recorder,
};
use crate::fakes::API_KEY;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn env_with(backend: Backend, rec: &Arc<Recorder>, latency_ms: u64, limit: u32) -> TestEnv {
    let (url, srv) = recorder_server(rec.clone(), Duration::from_millis(latency_ms)).await;
    // The fake lives as long as the test's runtime.
    std::mem::forget(srv);
    let mut env = TestEnv::new(backend, "", &processor(&url, limit)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("RUST_LOG", "warn");
    env
}

/// Run `daemons` daemons until `n` requests are completed; returns the peak
/// number of calls the processor saw at once.
async fn daemons_until_done(env: &TestEnv, rec: &Recorder, daemons: usize, n: usize) -> usize {
    let mut procs: Vec<_> = (0..daemons)
        .map(|_| env.command(&["daemon"]).spawn().expect("daemon"))
        .collect();
    let (engine, ids) = file_requests(env, n).await;
    wait_all_completed(&engine, &ids, 120).await;
    for d in procs.iter_mut() {
        assert!(
            d.try_wait().expect("daemon status").is_none(),
            "every daemon still runs"
        );
        let _ = d.start_kill();
        let _ = d.wait().await;
    }
    assert_eq!(rec.deleted.lock().unwrap().len(), n);
    assert_no_overlaps(rec);
    rec.max_in_flight.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_daemons_on_postgresql_keep_exactly_six_calls_in_flight_for_a_limit_of_six() {
    let rec = Arc::new(Recorder::default());
    let env = env_with(Backend::Postgres, &rec, 250, 6).await;
    let peak = daemons_until_done(&env, &rec, 4, 48).await;
    assert_eq!(
        peak, 6,
        "a limit of 6 over 4 daemons: never more than 6 calls at once, and all 6 slots used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_daemons_on_postgresql_with_a_limit_of_two_never_make_more_than_two_calls_at_once() {
    let rec = Arc::new(Recorder::default());
    let env = env_with(Backend::Postgres, &rec, 150, 2).await;
    let peak = daemons_until_done(&env, &rec, 4, 16).await;
    assert_eq!(
        peak, 2,
        "more daemons than the limit: still at most 2 calls at once"
    );
}

/// Three `lethe run --until-idle` processes at once share one limit.
async fn concurrent_runs_keep_a_limit_exactly(b: Backend) {
    for (limit, n) in [(6u32, 36usize), (2, 12)] {
        let rec = Arc::new(Recorder::default());
        let env = env_with(b, &rec, 200, limit).await;
        let (engine, ids) = file_requests(&env, n).await;
        let runs: Vec<_> = (0..3)
            .map(|_| {
                env.command(&["run", "--until-idle", "--max-wait", "60s", "--json"])
                    .output()
            })
            .collect();
        for out in futures::future::join_all(runs).await {
            let out = out.expect("run");
            assert!(out.status.success(), "{}", show(&out));
        }
        wait_all_completed(&engine, &ids, 10).await;
        assert_eq!(rec.deleted.lock().unwrap().len(), n);
        assert_no_overlaps(&rec);
        let peak = rec.max_in_flight.load(Ordering::SeqCst);
        assert_eq!(
            peak, limit as usize,
            "three runs with a limit of {limit}: exactly {limit} calls at the peak"
        );
        let usage = engine.store.limit_usage().await.unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0].concurrency, i64::from(limit));
        assert_eq!(usage[0].running, 0, "every slot given back");
    }
}

/// A daemon killed mid-call holds its slots until its leases expire; then
/// another daemon takes the steps over and every request completes.
async fn a_killed_daemons_slots_come_back_after_its_leases_expire(b: Backend) {
    let rec = Arc::new(Recorder::default());
    let env = env_with(b, &rec, 50, 2).await;
    // The first daemon's calls hang (the processor is slow).
    rec.extra_ms.store(60_000, Ordering::SeqCst);
    let (engine, ids) = file_requests(&env, 6).await;
    let mut first = env.command(&["daemon"]).spawn().expect("daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rec.in_flight.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the daemon never took both slots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().expect("kill -9");
    let _ = first.wait().await;
    let usage = engine.store.limit_usage().await.unwrap();
    assert_eq!(
        usage[0].running, 2,
        "the dead daemon's steps still hold both slots"
    );
    rec.extra_ms.store(0, Ordering::SeqCst);
    let mut second = env.command(&["daemon"]).spawn().expect("daemon");
    wait_all_completed(&engine, &ids, 60).await;
    let _ = second.start_kill();
    let _ = second.wait().await;
    wait_deleted(&rec, 6, 5).await;
    assert!(rec.max_in_flight.load(Ordering::SeqCst) <= 2);
    assert_no_overlaps(&rec);
    let usage = engine.store.limit_usage().await.unwrap();
    assert_eq!(usage[0].running, 0, "every slot given back");
    let mut expired = 0;
    for id in &ids {
        let events = engine.store.request_events(id).await.unwrap();
        expired += events
            .iter()
            .filter(|e| e.kind == "step.lease_expired")
            .count();
    }
    assert_eq!(
        expired, 2,
        "the two steps of the killed daemon came back through lease expiry"
    );
}

/// A run whose only processor is at its limit (1 call in flight, each
/// taking 800 ms) has free slots but nothing it may claim: it waits for a slot
/// instead of asking the store again and again. Counted from the run's own
/// statement log: 4 calls of 800 ms are 3.2 s of waiting; a claim every
/// millisecond or so (the loop before) made thousands of claims, one per
/// 25 ms makes at most ~130 plus one per step.
async fn a_run_held_by_a_full_processor_waits_instead_of_claiming_in_a_loop(b: Backend) {
    let rec = Arc::new(Recorder::default());
    let mut env = env_with(b, &rec, 800, 1).await;
    let (engine, ids) = file_requests(&env, 4).await;
    env.set_env("RUST_LOG", "warn,sqlx::query=debug");
    let out = env
        .command(&["run", "--until-idle", "--max-wait", "60s"])
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{}", show(&out));
    wait_all_completed(&engine, &ids, 10).await;
    assert_eq!(rec.deleted.lock().unwrap().len(), 4);
    assert_eq!(rec.max_in_flight.load(Ordering::SeqCst), 1);
    let log = String::from_utf8_lossy(&out.stderr);
    let claims = log
        .lines()
        .filter(|l| {
            l.contains("sqlx::query")
                && (l.contains("summary=\"WITH full_p") || l.contains("lethe_claim_"))
        })
        .count();
    assert!(claims >= 4, "the statement log counts claims: {claims}");
    assert!(
        claims <= 250,
        "{claims} claims in ~3 s while the processor was full"
    );
}

on_both_backends!(
    concurrent_runs_keep_a_limit_exactly,
    a_killed_daemons_slots_come_back_after_its_leases_expire,
    a_run_held_by_a_full_processor_waits_instead_of_claiming_in_a_loop
);

/// On PostgreSQL a claim is one call of a server-side function whose name
/// carries a hash of its body. A database that lacks this binary's function
/// gets it at the first claim, and another version's function beside it (a
/// rolling upgrade; here one that would fail every claim) is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_claim_creates_its_own_function_and_never_calls_another_versions() {
    let rec = Arc::new(Recorder::default());
    let env = env_with(Backend::Postgres, &rec, 10, 2).await;
    // Opening and migrating the store (as every lethe process does) creates
    // this binary's claim function.
    let (engine, ids) = file_requests(&env, 4).await;
    let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
    let names = "SELECT p.proname::TEXT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = current_schema() AND p.proname LIKE 'lethe\\_claim\\_%' ORDER BY 1";
    let ours: Vec<String> = sqlx::query_scalar(names).fetch_all(&pool).await.unwrap();
    assert_eq!(
        ours.len(),
        1,
        "the migration created one claim function: {ours:?}"
    );
    // Another version's function, which must never be called, and ours gone
    // (a database restored from before this version): the first claim finds
    // its function missing and creates it.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION lethe_claim_0000000000000000(TEXT, BIGINT, BIGINT, BIGINT, BIGINT, BIGINT) \
         RETURNS SETOF steps LANGUAGE plpgsql AS $f$ BEGIN RAISE EXCEPTION 'an older version''s claim'; END $f$; \
         DROP FUNCTION {}",
        ours[0]
    ))
    .execute(&pool)
    .await
    .unwrap();
    // The store, opened without migrating, as a daemon that was running
    // already: its claim (with a lease of 1 ms, so the run below takes the
    // steps over) finds the function missing, creates it and claims.
    let store = lethe::store::open(&env.db_url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let claimed = store
        .claim_due_by("test-worker", now, now, 1, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4, "every step was claimed: {claimed:?}");
    let after: Vec<String> = sqlx::query_scalar(names).fetch_all(&pool).await.unwrap();
    assert_eq!(
        after,
        vec!["lethe_claim_0000000000000000".to_string(), ours[0].clone()],
        "this binary's claim function again, beside the other version's"
    );
    // A CLI run (which migrates first) uses the same function to finish.
    let out = env
        .command(&["run", "--until-idle", "--max-wait", "30s", "--json"])
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{}", show(&out));
    wait_all_completed(&engine, &ids, 10).await;
    assert_eq!(rec.deleted.lock().unwrap().len(), 4);
    let last: Vec<String> = sqlx::query_scalar(names).fetch_all(&pool).await.unwrap();
    assert_eq!(last, after, "no further function was created");
}
