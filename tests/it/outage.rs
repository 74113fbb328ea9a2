//! Store outages (issue 12.4): a PostgreSQL failover or restart under a
//! running cluster. The outage is simulated by our own TCP proxy between the
//! daemons and the server (cut: every connection dropped and new ones refused),
//! so other tests sharing the server are not disturbed.

use crate::cluster::{
    assert_no_overlaps, file_requests, recorder_server, wait_all_completed, Recorder,
};
use crate::fakes::{API_KEY, LIST};
use crate::helpers::{pg_admin_url, Backend, TestEnv};
use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `host:port` of the test PostgreSQL.
pub(crate) fn pg_addr() -> SocketAddr {
    let url = pg_admin_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    let host = host.replace("localhost", "127.0.0.1");
    host.parse()
        .unwrap_or_else(|e| panic!("PostgreSQL address `{host}`: {e}"))
}

/// Point `env`'s config at the store through `proxy` (tests that reach the
/// store directly keep `env.db_url`).
fn reach_store_through(env: &TestEnv, proxy: &Proxy) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(&env.db_url, &proxy.url(&env.db_url)),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_ride_out_a_postgresql_outage_and_complete_every_request_once() {
    let rec = Arc::new(Recorder::default());
    let (url, _srv) = recorder_server(rec.clone(), Duration::from_millis(300)).await;
    let body = format!(
        "[worker]\nlease = \"8s\"\nidle_poll = \"100ms\"\nconcurrency = 16\n\n[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{url}/3.0\"\nconcurrency = 6\ntimeout = \"2s\"\nsettings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n"
    );
    let mut env = TestEnv::new(Backend::Postgres, "", &body).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("RUST_LOG", "warn");
    // Filed (and checked) directly; the daemons reach the store through the proxy.
    let (engine, ids) = file_requests(&env, 40).await;
    let proxy = Proxy::start(pg_addr(), Duration::ZERO).await;
    reach_store_through(&env, &proxy);

    let mut daemons: Vec<_> = (0..2)
        .map(|_| env.command(&["daemon"]).spawn().expect("daemon"))
        .collect();
    // Mid-run: some erased, calls in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rec.deleted.lock().unwrap().len() < 8 {
        assert!(Instant::now() < deadline, "the daemons never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    let in_flight_at_cut = rec.in_flight.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let erased_during = rec.deleted.lock().unwrap().len();
    proxy.restore();

    wait_all_completed(&engine, &ids, 120).await;
    for d in daemons.iter_mut() {
        assert!(
            d.try_wait().expect("daemon status").is_none(),
            "a daemon exited during or after the outage"
        );
        let _ = d.start_kill();
        let _ = d.wait().await;
    }
    assert!(
        proxy.accepted() > 2,
        "the daemons reconnected after the outage"
    );
    assert_eq!(rec.deleted.lock().unwrap().len(), 40, "every member erased");
    assert_no_overlaps(&rec);
    assert!(rec.max_in_flight.load(Ordering::SeqCst) <= 6);
    assert!(
        erased_during >= 8,
        "calls in flight at the cut ({in_flight_at_cut}) went on"
    );
    for id in &ids {
        let steps = engine.store.steps(id).await.unwrap();
        assert!(
            steps.iter().all(|s| s.outcome.is_some()),
            "every step recorded with an outcome: {steps:?}"
        );
    }
    let audit = lethe::audit::verify(engine.store.as_ref()).await.unwrap();
    assert!(audit.broken.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_reach_the_store_exits_3_naming_the_store_not_the_input() {
    let proxy = Proxy::start(pg_addr(), Duration::ZERO).await;
    let env = TestEnv::new(Backend::Postgres, "", "").await;
    // Create the schema, then cut the store off.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", crate::helpers::show(&out));
    reach_store_through(&env, &proxy);
    proxy.cut();
    let out = env.lethe(&["list", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", crate::helpers::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store unavailable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_while_the_store_refuses_connections_waits_for_it_and_completes_the_request()
{
    let rec = Arc::new(Recorder::default());
    let (url, _srv) = recorder_server(rec.clone(), Duration::ZERO).await;
    let body = format!(
        "[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{url}/3.0\"\nsettings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n"
    );
    let mut env = TestEnv::new(Backend::Postgres, "", &body).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let (engine, ids) = file_requests(&env, 1).await;
    let proxy = Arc::new(Proxy::start(pg_addr(), Duration::ZERO).await);
    reach_store_through(&env, &proxy);
    // A restart: connections refused for 1.5 s after the run starts.
    proxy.cut();
    let p = Arc::clone(&proxy);
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.restore();
    });
    let started = Instant::now();
    let out = env.lethe(&["run", "--until-idle"]).await;
    back.await.unwrap();
    assert!(out.status.success(), "{}", crate::helpers::show(&out));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the run could not have reached the store before it came back"
    );
    assert!(proxy.accepted() >= 1, "the run connected after the restart");
    wait_all_completed(&engine, &ids, 10).await;
    assert_eq!(
        rec.deleted.lock().unwrap().len(),
        1,
        "the member erased once"
    );
}
