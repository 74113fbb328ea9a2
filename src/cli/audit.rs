//! `lethe audit verify`: recomputes every audit chain (one per request, hold
//! and processor, plus `system` and the pre-0011 `legacy` chain), compares each
//! with its recorded head (a truncated tail is named), and names the first
//! broken row of every broken chain; exits 1 when any chain is broken.
//! `lethe audit key` prints the public key that verifies signed checkpoints.

use super::helpers::open_store;
use crate::audit::checkpoint::{key_id, public_base64};
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
    /// Print the Ed25519 public key (base64) and key id that verify the signed
    /// audit checkpoints (derived from the master key, or `[audit] signing_key_env`).
    Key {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe audit key [--json]`: needs the config and the key's environment
/// variable, never the store.
pub(super) async fn key(config: Config, json: bool) -> anyhow::Result<u8> {
    let key = crate::audit::signing_key(&config)?.verifying_key();
    let public = public_base64(&key);
    let kid = key_id(&key);
    let source = match &config.audit.signing_key_env {
        Some(var) => format!("audit.signing_key_env ({var})"),
        None => format!("derived from store.key_env ({})", config.store.key_env),
    };
    if json {
        let v = serde_json::json!({
            "algorithm": "ed25519",
            "public_key": public,
            "key_id": kid,
            "source": source,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{public}");
        println!("key id {kid} ({source})");
    }
    Ok(0)
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
            "ok: {} events in {} chains verified; last appended {}",
            v.checked,
            v.chains,
            v.head.as_deref().unwrap_or("(empty)")
        );
    }
    Ok(if v.broken.is_some() { 1 } else { 0 })
}
