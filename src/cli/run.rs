//! `lethe run`: the worker in the foreground, either until everything due now
//! is done (`--until-idle`, for cron and tests) or until SIGTERM. The daemon
//! (`daemon.rs`) is the same worker plus the HTTP intake and callback outbox.

use super::helpers::{engine, shutdown_signal};
use crate::config::Config;

/// `lethe run [--until-idle]`.
pub(super) async fn run(config: Config, until_idle: bool) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let summary = if until_idle {
        e.run_until_idle().await?
    } else {
        e.run(shutdown_signal()).await?
    };
    eprintln!(
        "processed {} step(s); {} expired lease(s) released",
        summary.processed, summary.released
    );
    Ok(0)
}
