//! Acting on a filed request: `lethe retry`, `skip`, `cancel`, `extend` and `confirm`.
//! Each is one engine call and one line of output; they are grouped because
//! each is too small for a file of its own and all go through the engine (which
//! writes the audit events).

use super::helpers::engine;
use crate::config::Config;
use crate::store;

/// `lethe retry ID [--processor P]`: failed steps back to pending.
pub(super) async fn retry(
    config: Config,
    id: String,
    processor: Option<String>,
) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let n = e.retry(&id, processor.as_deref()).await?;
    if n == 0 {
        println!(
            "nothing to retry: no failed step{}",
            processor.map(|p| format!(" at `{p}`")).unwrap_or_default()
        );
    } else {
        println!(
            "{n} step(s) back to pending; `lethe run --until-idle` or the daemon picks them up"
        );
    }
    Ok(0)
}

/// `lethe skip ID --processor P --reason T`: give up on a failed step.
pub(super) async fn skip(
    config: Config,
    id: String,
    processor: String,
    reason: String,
) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let st = e.skip(&id, &processor, &reason).await?;
    println!("request {id}: `{processor}` skipped by the operator; request is {st}");
    Ok(0)
}

/// `lethe cancel ID`.
pub(super) async fn cancel(config: Config, id: String) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let st = e.cancel(&id).await?;
    println!("request {id}: {st}");
    Ok(0)
}

/// `lethe extend ID --reason R`: the one allowed deadline extension.
pub(super) async fn extend(config: Config, id: String, reason: String) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let req = e.extend(&id, &reason).await?;
    println!(
        "request {id}: due {} (extended once: {reason})",
        store::from_ms(req.due_at).to_rfc3339()
    );
    Ok(0)
}

/// `lethe confirm ID --processor P [--note N]`: a manual processor's part is done.
pub(super) async fn confirm(
    config: Config,
    id: String,
    processor: String,
    note: Option<String>,
) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let st = e.confirm(&id, &processor, note.as_deref()).await?;
    println!("request {id}: `{processor}` confirmed; request is {st}");
    Ok(0)
}
