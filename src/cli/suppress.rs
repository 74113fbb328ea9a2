//! `lethe verify` (identity verification) and `lethe suppression …` (the
//! suppression list of erased identities; issue 14, points 3 and 6).

use super::helpers::engine;
use crate::config::Config;
use crate::store::rfc3339;
use clap::Subcommand;
use serde_json::json;

/// `lethe suppression …`.
#[derive(Debug, Subcommand)]
pub enum SuppressionCmd {
    /// Masked entries and counts (never an identity or its hash).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List every processor that can enumerate its identities, hash each
    /// locally, and open a follow-up erasure for an erased subject found
    /// again (exit 1 when a processor could not be listed).
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe verify ID --method T [--note N]`.
pub(super) async fn verify(
    config: Config,
    id: String,
    method: String,
    note: Option<String>,
) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    let by = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let req = e.verify(&id, &method, note.as_deref(), &by).await?;
    println!(
        "request {}: verified ({}); `lethe run --until-idle` or the daemon carries it out",
        req.id,
        method.trim()
    );
    Ok(0)
}

/// `lethe suppression …`.
pub(super) async fn suppression(config: Config, cmd: SuppressionCmd) -> anyhow::Result<u8> {
    match cmd {
        SuppressionCmd::Check { json } => {
            let e = engine(config).await?;
            let report = e.suppression_check().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if report.processors.is_empty() {
                    println!(
                        "no processor can list its identities (a connector needs a `list` action)"
                    );
                }
                for p in &report.processors {
                    match &p.error {
                        Some(err) => println!("{:<18} NOT CHECKED: {err}", p.processor),
                        None => println!("{:<18} {} identities listed", p.processor, p.listed),
                    }
                }
                if report.reappeared.is_empty() {
                    println!("no erased subject re-appeared");
                }
                for r in &report.reappeared {
                    println!(
                        "re-appeared: {} {} at {} (erased by {}): follow-up erasure {}{}",
                        r.identity_kind,
                        r.masked,
                        r.processor,
                        r.original,
                        r.follow_up,
                        if r.opened { " opened" } else { " already open" }
                    );
                }
            }
            Ok(if report.processors.iter().any(|p| p.error.is_some()) {
                1
            } else {
                0
            })
        }
        SuppressionCmd::List { json } => {
            let e = engine(config).await?;
            let rows = e.store.suppression_list().await?;
            let active = rows.iter().filter(|r| r.active).count();
            if json {
                let entries: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        json!({
                            "kind": r.kind,
                            "masked": r.masked,
                            "request_id": r.request_id,
                            "active": r.active,
                            "created_at": rfc3339(r.created_at),
                        })
                    })
                    .collect();
                let doc = json!({
                    "active": active,
                    "pending": rows.len() - active,
                    "entries": entries,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "{active} suppressed identit{} ({} more pending until their erasure completes)",
                    if active == 1 { "y" } else { "ies" },
                    rows.len() - active
                );
                for r in &rows {
                    println!(
                        "{:<12} {:<28} {:<8} request {}",
                        r.kind,
                        r.masked,
                        if r.active { "active" } else { "pending" },
                        r.request_id
                    );
                }
            }
            Ok(0)
        }
    }
}
