//! `lethe hold add|release|list`: ad-hoc legal holds (litigation). Identity
//! flags and `--until` are parsed before the store is opened; add and release
//! go through the engine (audit events, held steps re-planned), list reads the
//! store only.

use super::helpers::{engine, open_store, subject_from_flags};
use super::BadInput;
use crate::config::Config;
use crate::store;
use chrono::Utc;
use clap::Subcommand;

/// `hold …`.
#[derive(Debug, Subcommand)]
pub enum HoldCmd {
    /// Place a hold on a subject.
    Add {
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Phone number, E.164.
        #[arg(long)]
        phone: Option<String>,
        /// Customer id.
        #[arg(long)]
        customer_id: Option<String>,
        /// The legal basis, shown in reports (e.g. "litigation: case 2026-114, Art. 17(3)(e)").
        #[arg(long)]
        basis: String,
        /// When it ends: an RFC 3339 time or a duration from now ("30d"); default: until released.
        #[arg(long)]
        until: Option<String>,
        /// Only this processor (default: every processor).
        #[arg(long)]
        processor: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold: held erasures run at once if nothing else holds them.
    Release {
        /// Hold id.
        id: String,
    },
    /// Open holds (all with --all).
    List {
        /// Include released holds.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Parse `--until`: an RFC 3339 time, or a duration from now.
pub(super) fn parse_until(s: &str) -> Result<i64, BadInput> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = crate::domain::HumanDuration::parse(s)
        .map_err(|_| BadInput(format!("--until `{s}` is neither an RFC 3339 time (2027-01-31T00:00:00Z) nor a duration (\"30d\")")))?;
    Ok(store::ms(Utc::now()).saturating_add(d.get().as_millis() as i64))
}

pub(super) fn hold_json(h: &crate::store::HoldRow) -> serde_json::Value {
    let ts = store::rfc3339;
    serde_json::json!({
        "id": h.id,
        "subject": h.subject_masked,
        "basis": h.basis,
        "until": h.until_at.map(ts),
        "processor": h.processor,
        "created_at": ts(h.created_at),
        "released_at": h.released_at.map(ts),
        "status": crate::view::hold_status(h, store::ms(Utc::now())),
    })
}

pub(super) async fn hold(config: Config, cmd: HoldCmd) -> anyhow::Result<u8> {
    match cmd {
        HoldCmd::Add {
            email,
            phone,
            customer_id,
            basis,
            until,
            processor,
            json,
        } => {
            let subject = subject_from_flags(
                email.as_deref(),
                phone.as_deref(),
                customer_id.as_deref(),
                None,
            )?;
            let until = until.as_deref().map(parse_until).transpose()?;
            let e = engine(config).await?;
            let h = e
                .add_hold(&subject, &basis, until, processor.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hold_json(&h))?);
            } else {
                println!(
                    "hold {} on {}: {} (until {})",
                    h.id,
                    h.subject_masked,
                    h.basis,
                    hold_json(&h)["until"].as_str().unwrap_or("released")
                );
            }
            Ok(0)
        }
        HoldCmd::Release { id } => {
            let e = engine(config).await?;
            let h = e.release_hold(&id).await?;
            println!(
                "hold {} on {} released; held erasures run now unless another hold applies",
                h.id, h.subject_masked
            );
            Ok(0)
        }
        HoldCmd::List { all, json } => {
            let store = open_store(&config).await?;
            let holds = store.list_holds(all).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&holds.iter().map(hold_json).collect::<Vec<_>>())?
                );
            } else {
                println!(
                    "{:<36}  {:<8}  {:<24}  {:<24}  BASIS",
                    "ID", "STATUS", "SUBJECT", "UNTIL"
                );
                for h in &holds {
                    let v = hold_json(h);
                    println!(
                        "{:<36}  {:<8}  {:<24}  {:<24}  {}",
                        h.id,
                        v["status"].as_str().unwrap_or(""),
                        h.subject_masked,
                        v["until"].as_str().unwrap_or("until released"),
                        h.basis
                    );
                }
            }
            Ok(0)
        }
    }
}
