//! `lethe audit verify`: recomputes every audit chain (one per request, hold
//! and processor, plus `system` and the pre-0011 `legacy` chain), compares each
//! with its recorded head (a truncated tail is named), and names the first
//! broken row of every broken chain; exits 1 when any chain is broken.
//! `lethe audit key` prints the public key that verifies signed checkpoints.

use super::helpers::open_store;
use super::BadInput;
use crate::audit::checkpoint::{key_id, public_base64};
use crate::config::Config;
use clap::Subcommand;

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute every hash chain; name each broken chain and its first bad row;
    /// check the signed checkpoints and that every checkpointed head still
    /// matches. With --certificate: check one certificate file offline.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// A JSON certificate (`lethe report ID --format json`) to check
        /// offline: no config, key or store needed, only --public-key.
        #[arg(long, value_name = "FILE")]
        certificate: Option<std::path::PathBuf>,
        /// A public key (base64, from `lethe audit key`) that may have signed
        /// checkpoints; repeat for keys in use before a rotation. Without it,
        /// the keys of the config (`[store] key_env`, `old_key_envs`, `[audit]
        /// signing_key_env`) are used.
        #[arg(long = "public-key", value_name = "KEY")]
        public_key: Vec<String>,
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

fn parse_keys(given: &[String]) -> anyhow::Result<Vec<ed25519_dalek::VerifyingKey>> {
    given
        .iter()
        .map(|k| {
            crate::audit::checkpoint::parse_public(k)
                .map_err(|e| anyhow::Error::new(BadInput(format!("--public-key: {e}"))))
        })
        .collect()
}

/// `lethe audit verify --certificate FILE [--public-key KEY]... [--json]`:
/// fully offline. `config` is used for keys only when no --public-key is
/// given (and only if it loads).
pub async fn verify_certificate(
    file: &std::path::Path,
    public_keys: &[String],
    config: Option<&Config>,
    json: bool,
) -> anyhow::Result<u8> {
    let mut keys = parse_keys(public_keys)?;
    if keys.is_empty() {
        if let Some(c) = config {
            keys = crate::audit::public_keys(c)?;
        }
    }
    if keys.is_empty() {
        return Err(BadInput(
            "no public key to check the checkpoint's signature with: pass --public-key KEY (printed by `lethe audit key`)".into(),
        )
        .into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        BadInput(format!(
            "--certificate {}: cannot read: {e}",
            file.display()
        ))
    })?;
    let cert: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        BadInput(format!(
            "--certificate {}: not JSON ({e}); write one with `lethe report ID --format json -o FILE`",
            file.display()
        ))
    })?;
    if cert.pointer("/audit/events").is_none() {
        return Err(BadInput(format!(
            "--certificate {}: not a lethe JSON certificate with audit.events (write one with `lethe report ID --format json -o FILE`)",
            file.display()
        ))
        .into());
    }
    let result = crate::audit::proofcheck::check_certificate(&cert, &keys);
    match (&result, json) {
        (Ok(ok), true) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": true, "verified": ok}))?
        ),
        (Err(e), true) => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"ok": false, "error": e.to_string()})
            )?
        ),
        (Ok(ok), false) => println!(
            "ok: {} events of chain {} recompute; head {} is in signed checkpoint #{} (key {})",
            ok.events, ok.chain, ok.head, ok.checkpoint, ok.key_id
        ),
        (Err(e), false) => println!("FAILED: {e}"),
    }
    Ok(if result.is_ok() { 0 } else { 1 })
}

/// `lethe audit verify [--json] [--public-key KEY]...`.
pub(super) async fn verify(
    config: Config,
    json: bool,
    public_keys: Vec<String>,
) -> anyhow::Result<u8> {
    let store = open_store(&config).await?;
    let v = crate::audit::verify(store.as_ref()).await?;
    let mut keys = parse_keys(&public_keys)?;
    let mut key_problem = None;
    match crate::audit::public_keys(&config) {
        Ok(ks) => {
            for k in ks {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        Err(e) => key_problem = Some(e.to_string()),
    }
    let cps = crate::audit::proofcheck::check_store(
        store.as_ref(),
        (!keys.is_empty()).then_some(keys.as_slice()),
    )
    .await?;
    let broken = v.broken.is_some() || !cps.ok();
    if json {
        let mut doc = serde_json::to_value(&v)?;
        if let Some(o) = doc.as_object_mut() {
            o.insert("checkpoints".into(), serde_json::to_value(&cps)?);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(if broken { 1 } else { 0 });
    }
    if v.broken.is_some() {
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
    for p in &cps.problems {
        println!("BROKEN checkpoint #{}: {}", p.checkpoint, p.reason);
    }
    if cps.ok() {
        match (cps.last_id, &cps.last_hash) {
            (Some(id), Some(h)) => println!(
                "ok: {} signed checkpoints {} (last #{id}, hash {h}); {} checkpointed heads still match their events",
                cps.checkpoints,
                if cps.signatures_checked { "verified" } else { "chained (signatures NOT checked)" },
                cps.leaves
            ),
            _ => println!("no signed checkpoints yet"),
        }
    }
    if !cps.signatures_checked && cps.checkpoints > 0 {
        println!(
            "signatures not checked: no public key ({}); pass --public-key KEY (from `lethe audit key`)",
            key_problem.as_deref().unwrap_or("none configured")
        );
    }
    Ok(if broken { 1 } else { 0 })
}
