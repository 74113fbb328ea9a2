//! `lethe audit verify`: recomputes the audit log's hash chain and names the
//! first broken row; exits 1 when the chain is broken.

use super::helpers::open_store;
use crate::config::Config;
use clap::Subcommand;

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the hash chain; name the first broken row.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe audit verify [--json]`.
pub(super) async fn verify(config: Config, json: bool) -> anyhow::Result<u8> {
    let store = open_store(&config).await?;
    let v = crate::audit::verify(store.as_ref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(b) = &v.broken {
        println!(
            "BROKEN at event #{}: {} ({} events before it verified)",
            b.seq, b.reason, v.checked
        );
    } else {
        println!(
            "ok: {} events verified; head {}",
            v.checked,
            v.head.as_deref().unwrap_or("(empty)")
        );
    }
    Ok(if v.broken.is_some() { 1 } else { 0 })
}
