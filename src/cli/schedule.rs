//! `lethe schedule list|run` and `lethe report sweep RUN_ID`: retention
//! schedules (`[[schedule]]` in workflow files) and their period certificates.
//! `run NAME` sweeps now through the durable path (a sweep run per processor,
//! leased and fenced like a step); `--dry-run` only lists what would go,
//! masked, and writes nothing.

use super::helpers::{emit, engine, open_store};
use super::BadInput;
use crate::config::Config;
use crate::report::human_ms;
use crate::store::{self, rfc3339};
use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;
use std::path::PathBuf;

/// `schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Every schedule and processor: durations, next run, last result.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a schedule now (exit 1 when an item could not be removed or a run failed).
    Run {
        /// The schedule's name.
        name: String,
        /// Only list what would go (counts and masked names); delete and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe schedule …`.
pub(super) async fn schedule(config: Config, cmd: ScheduleCmd) -> anyhow::Result<u8> {
    match cmd {
        ScheduleCmd::List { json } => list(config, json).await,
        ScheduleCmd::Run {
            name,
            dry_run,
            json,
        } => run(config, name, dry_run, json).await,
    }
}

async fn list(config: Config, json: bool) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    e.sync_schedules().await?;
    let configured: Vec<(String, String)> = e
        .config
        .schedules()
        .iter()
        .map(|(sc, p, _)| (sc.name.clone(), p.name.clone()))
        .collect();
    let rows = e.store.list_schedules().await?;
    let mut out = Vec::new();
    for r in rows
        .into_iter()
        .filter(|r| configured.contains(&(r.name.clone(), r.processor.clone())))
    {
        let last = match &r.last_run_id {
            Some(id) => e.store.sweep_run(id).await?,
            None => None,
        };
        out.push(serde_json::json!({
            "name": r.name,
            "processor": r.processor,
            "workflow": r.workflow,
            "older_than": human_ms(r.older_than_ms),
            "older_than_ms": r.older_than_ms,
            "every": human_ms(r.every_ms),
            "every_ms": r.every_ms,
            "next_run_at": rfc3339(r.next_run_at),
            "last_run": last.map(|l| serde_json::json!({
                "id": l.id,
                "state": l.state,
                "started_by": l.started_by,
                "created_at": rfc3339(l.created_at),
                "finished_at": l.finished_at.map(rfc3339),
                "listed": l.listed,
                "removed": l.removed,
                "failed": l.failed,
                "unconfirmed": l.unconfirmed(),
            })),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if out.is_empty() {
        println!("no retention schedule (add a [[schedule]] to a workflow file)");
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<10} {:<10} {:<26} LAST RUN",
        "NAME", "PROCESSOR", "OLDER THAN", "EVERY", "NEXT RUN"
    );
    for o in &out {
        let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
        let last = match o.get("last_run") {
            Some(l) if !l.is_null() => format!(
                "{} {}: removed {}, failed {}, unconfirmed {}",
                l["id"].as_str().unwrap_or(""),
                l["state"].as_str().unwrap_or(""),
                l["removed"],
                l["failed"],
                l["unconfirmed"]
            ),
            _ => "never".into(),
        };
        println!(
            "{:<20} {:<16} {:<10} {:<10} {:<26} {last}",
            s("name"),
            s("processor"),
            s("older_than"),
            s("every"),
            s("next_run_at")
        );
    }
    Ok(0)
}

async fn run(config: Config, name: String, dry_run: bool, json: bool) -> anyhow::Result<u8> {
    let e = engine(config).await?;
    if !e.has_schedule(&name) {
        let known: Vec<String> = e
            .config
            .schedules()
            .iter()
            .map(|(sc, _, _)| sc.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(BadInput(format!(
            "no schedule named `{name}` (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
        .into());
    }
    if dry_run {
        let found = e.dry_run_schedule(&name).await?;
        let failed = found.iter().any(|d| d.error.is_some());
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "dry_run": true,
                    "schedule": name,
                    "processors": found,
                }))?
            );
        } else {
            for d in &found {
                match &d.error {
                    Some(err) => {
                        println!("{} @ {}: listing failed: {err}", d.schedule, d.processor)
                    }
                    None => {
                        println!(
                            "{} @ {}: {} item(s), {} byte(s) last modified before {} would go (dry run: nothing deleted)",
                            d.schedule, d.processor, d.count, d.bytes, d.cutoff
                        );
                        for i in &d.items {
                            println!("  {i}");
                        }
                    }
                }
            }
        }
        return Ok(u8::from(failed));
    }
    e.sync_schedules().await?;
    let runs = e.run_schedule_now(&name).await?;
    let attention = runs
        .iter()
        .any(|r| r.state != "done" || r.failed > 0 || r.unconfirmed() > 0);
    if json {
        let v: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.id,
                    "schedule": r.schedule,
                    "processor": r.processor,
                    "state": r.state,
                    "cutoff": rfc3339(r.cutoff_at),
                    "listed": r.listed,
                    "removed": r.removed,
                    "failed": r.failed,
                    "unconfirmed": r.unconfirmed(),
                    "error": r.last_error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &runs {
            println!(
                "{} @ {}: run {} {}: listed {}, removed {}, failed {}, unconfirmed {}{}",
                r.schedule,
                r.processor,
                r.id,
                r.state,
                r.listed,
                r.removed,
                r.failed,
                r.unconfirmed(),
                r.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        eprintln!("certificate: lethe report sweep RUN_ID");
    }
    Ok(u8::from(attention))
}

/// `lethe report sweep RUN_ID [--format text|json|html] [-o FILE]`.
pub(super) async fn report_sweep(
    config: Config,
    id: Option<String>,
    run_id: Option<String>,
    format: crate::report::Format,
    output: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use crate::report::Format;
    if id.as_deref() != Some("sweep") {
        return Err(BadInput(
            "a second argument is only taken by `lethe report sweep RUN_ID`".into(),
        )
        .into());
    }
    let Some(run_id) = run_id else {
        return Err(BadInput("`lethe report sweep` needs the sweep run's id".into()).into());
    };
    let store = open_store(&config).await?;
    let now = store::ms(Utc::now());
    let cert = crate::report::sweep::build(store.as_ref(), &run_id, now)
        .await?
        .ok_or_else(|| BadInput(format!("no sweep run with id `{run_id}`")))?;
    let text = match format {
        Format::Text => crate::report::sweep::to_text(&cert),
        Format::Json => serde_json::to_string_pretty(&cert).context("writing JSON")? + "\n",
        Format::Html => crate::report::sweep::to_html(&cert),
        Format::Csv => {
            return Err(BadInput(
                "--format csv is for period reports; a sweep certificate is text, json or html"
                    .into(),
            )
            .into())
        }
    };
    emit(output.as_deref(), &text)?;
    Ok(0)
}
