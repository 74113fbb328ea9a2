//! `lethe run`: the worker in the foreground, either until nothing more is due
//! (`--until-idle [--max-wait D]`, for cron and tests) or until SIGTERM. The
//! daemon (`daemon.rs`) is the same worker plus the HTTP intake and callback
//! outbox. What it shows while it works is `crate::progress`.

use super::helpers::{engine, shutdown_signal};
use crate::config::Config;
use std::sync::Arc;

/// `lethe run [--until-idle [--max-wait D]] [--json]`: exit 1 when a step of this run failed.
pub(super) async fn run(
    config: Config,
    until_idle: bool,
    max_wait: Option<std::time::Duration>,
    json: bool,
) -> anyhow::Result<u8> {
    let signing = crate::audit::signing_key(&config)?;
    let e = engine(config).await?;
    let max_wait = max_wait.unwrap_or_default();
    let out = crate::progress::Output::detect(json);
    let progress = crate::progress::Progress::new(out, Arc::clone(&e), max_wait);
    // Retention schedules: the config's `[[schedule]]`s into the store, then
    // (until idle) every sweep run due now; otherwise a loop beside the worker.
    e.sync_schedules().await?;
    let mut sweep_failed = false;
    let summary = if until_idle {
        for r in e.run_due_sweeps().await? {
            sweep_failed |= r.state == "failed" || r.failed > 0;
            eprintln!(
                "retention sweep {} @ {}: run {} {}: removed {}, failed {}, unconfirmed {}",
                r.schedule,
                r.processor,
                r.id,
                r.state,
                r.removed,
                r.failed,
                r.unconfirmed()
            );
        }
        let idle = crate::engine::worker::IdleRun { max_wait };
        e.run_bounded(idle, Some(&progress), shutdown_signal())
            .await?
    } else {
        let sweeps = tokio::spawn(Arc::clone(&e).sweep_loop(std::future::pending::<()>()));
        let summary = e.run(shutdown_signal()).await;
        sweeps.abort();
        summary?
    };
    // After the display has stopped drawing (stderr shares the terminal).
    let code = progress.finish(&summary).await;
    if until_idle {
        // Checkpoint what this run appended, unless a daemon holds the
        // checkpointer lease (it will). A store error here is not the run's:
        // the next run or daemon checkpoints.
        let cp = crate::audit::checkpointer::Checkpointer::new(
            Arc::clone(&e.store),
            signing,
            e.worker_id().to_string(),
            e.config.audit.checkpoint_every.get(),
        );
        match cp.tick().await {
            Ok(t) if t.leader => cp.resign().await,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "audit checkpoint failed; the next run or daemon writes it")
            }
        }
    } else {
        drop(signing);
    }
    eprintln!(
        "processed {} step(s); {} expired lease(s) released",
        summary.processed, summary.released
    );
    Ok(if sweep_failed { code.max(1) } else { code })
}

/// Parse `--max-wait` (a humantime duration: "90s", "5m", "1h 30m").
pub(super) fn parse_max_wait(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration (\"90s\", \"5m\", \"1h\"): {e}"))
}
