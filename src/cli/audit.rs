//! `lethe audit verify`: recomputes every audit chain (one per request, hold
//! and processor, plus `system` and the pre-0011 `legacy` chain), compares each
//! with its recorded head (a truncated tail is named), and names the first
//! broken row of every broken chain; exits 1 when any chain is broken.

use super::helpers::open_store;
use crate::config::Config;
use clap::Subcommand;

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute every hash chain; name each broken chain and its first bad row.
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
    } else if v.broken.is_some() {
        for b in &v.broken_list {
            println!(
                "BROKEN at event #{} (chain {}, position {}): {}",
                b.seq,
                if b.chain.is_empty() {
                    "(none)"
                } else {
                    &b.chain
                },
                b.chain_seq,
                b.reason
            );
        }
        if v.broken_chains > v.broken_list.len() as u64 {
            println!(
                "… and {} more broken chains",
                v.broken_chains - v.broken_list.len() as u64
            );
        }
        println!(
            "{} of {} chains broken; {} events verified",
            v.broken_chains, v.chains, v.checked
        );
    } else {
        println!(
            "ok: {} events verified in {} chain{}; head {} (the last event appended)",
            v.checked,
            v.chains,
            if v.chains == 1 { "" } else { "s" },
            v.head.as_deref().unwrap_or("(empty)")
        );
    }
    Ok(if v.broken.is_some() { 1 } else { 0 })
}
