//! `lethe daemon`: the long-running process. Kept in its own file because it
//! wires four tasks (worker, HTTP intake, callback outbox, audit checkpointer) to one shutdown
//! signal, and that ordering is the part to read carefully.

use super::helpers::{engine, shutdown_signal};
use super::BadInput;
use crate::config::Config;
use std::sync::Arc;

/// `lethe daemon`: the worker, and with an `[intake]` section the HTTP
/// intake and the callback outbox. One SIGTERM stops all three: the server
/// stops accepting and finishes in-flight calls, the worker stops claiming and
/// finishes in-flight steps (writing their results, which releases their
/// leases), the outbox finishes the delivery in flight.
pub(super) async fn daemon(config: Config) -> anyhow::Result<u8> {
    // Secrets and the listening socket first: a misconfigured daemon exits before it works.
    let secrets = if config.intake_enabled {
        Some(Arc::new(crate::intake::Secrets::from_env(&config)?))
    } else {
        None
    };
    // The checkpoint signing key too (kept outside the database).
    let signing = crate::audit::signing_key(&config)?;
    let e = engine(config).await?;
    let listener = match &secrets {
        Some(_) => Some(
            tokio::net::TcpListener::bind(&e.config.intake.listen)
                .await
                .map_err(|err| {
                    BadInput(format!(
                        "{}: `intake.listen`: cannot listen on {}: {err}",
                        e.config.path.display(),
                        e.config.intake.listen
                    ))
                })?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let on_signal = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    let mut background = tokio::task::JoinSet::new();
    if let (Some(secrets), Some(listener)) = (secrets, listener) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %addr, "HTTP intake listening");
        let state = crate::intake::AppState {
            engine: Arc::clone(&e),
            secrets: Arc::clone(&secrets),
        };
        let stop = stopped();
        background.spawn(async move {
            if let Err(err) = crate::intake::serve(listener, state, stop).await {
                tracing::error!(error = %err, "HTTP intake stopped with an error");
            }
            tracing::info!("HTTP intake stopped");
        });
        background.spawn(crate::intake::outbox::run(
            Arc::clone(&e),
            secrets,
            stopped(),
        ));
    } else {
        tracing::info!("no [intake] section in the config: HTTP intake off");
    }
    if let Some(every) = e.config.suppression.check_every {
        background.spawn(suppression_schedule(Arc::clone(&e), every.get(), stopped()));
    }
    // The audit checkpointer: every daemon runs one; the holder of the
    // leader lease writes, the others stand by.
    background.spawn(
        crate::audit::checkpointer::Checkpointer::new(
            Arc::clone(&e.store),
            signing,
            e.worker_id().to_string(),
            e.config.audit.checkpoint_every.get(),
        )
        .run(stopped()),
    );
    e.sync_schedules().await?;
    background.spawn(Arc::clone(&e).sweep_loop(stopped()));
    tracing::info!(worker = e.worker_id(), "daemon started");
    let summary = e.run(stopped()).await;
    // The worker stops on a signal, or on a store error: either way, stop the rest.
    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    let summary = summary?;
    tracing::info!(processed = summary.processed, "daemon stopped");
    Ok(0)
}

/// `[suppression] check_every`: a durable schedule. The next run is a row
/// (`schedules`), taken by one daemon at a time; this task only looks at it
/// (at most every 30 s), so a restart neither skips nor repeats a run.
async fn suppression_schedule(
    e: Arc<crate::engine::Engine>,
    every: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let every_ms = every.as_millis().min(i64::MAX as u128) as i64;
    let poll = every.min(std::time::Duration::from_secs(30));
    loop {
        let now = crate::store::ms(chrono::Utc::now());
        match e
            .store
            .take_schedule("suppression.check", now, now.saturating_add(every_ms))
            .await
        {
            Ok(true) => match e.suppression_check().await {
                Ok(r) => tracing::info!(
                    processors = r.processors.len(),
                    reappeared = r.reappeared.len(),
                    "suppression check done"
                ),
                Err(err) => {
                    tracing::error!(error = %err, "suppression check failed; it runs again at its next time")
                }
            },
            Ok(false) => {}
            Err(err) => tracing::error!(error = %err, "suppression schedule unavailable"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
