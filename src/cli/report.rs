//! `lethe report`: a request's certificate (`report ID`) or a period report
//! (`report --from D --to D`), as text, JSON, HTML or (period only) CSV.
//! Exits 1 when the audit chain behind a certificate is broken.

use super::helpers::{emit, open_store, period_bound};
use super::BadInput;
use crate::config::Config;
use crate::store;
use anyhow::Context;
use chrono::Utc;
use std::path::PathBuf;

/// `lethe report`.
pub(super) async fn report(
    config: Config,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: crate::report::Format,
    output: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use crate::report::{self as rep, Format};
    let now = store::ms(Utc::now());
    if let Some(id) = id {
        if format == Format::Csv {
            return Err(BadInput(
                "--format csv is for period reports (--from/--to); a certificate is text, json or html".into(),
            )
            .into());
        }
        let store = open_store(&config).await?;
        let cert = rep::certificate::build(store.as_ref(), &id, now)
            .await?
            .ok_or_else(|| BadInput(format!("no request with id `{id}`")))?;
        let text = match format {
            Format::Text => rep::certificate::to_text(&cert),
            Format::Json => serde_json::to_string_pretty(&cert)? + "\n",
            Format::Html => rep::html::certificate(&cert).context("rendering the certificate")?,
            Format::Csv => unreachable!("refused above"),
        };
        emit(output.as_deref(), &text)?;
        if !cert.audit.chain_verified {
            eprintln!(
                "warning: the audit chain is broken at event #{}: run `lethe audit verify`",
                cert.audit.broken_at.unwrap_or(0)
            );
            return Ok(1);
        }
        return Ok(0);
    }
    let (Some(f), Some(t)) = (from, to) else {
        return Err(BadInput(
            "give a request id (its certificate), or --from DATE --to DATE (a period report)"
                .into(),
        )
        .into());
    };
    let from = period_bound("from", &f, false)?;
    let to = period_bound("to", &t, true)?;
    if from >= to {
        return Err(BadInput(format!("--from `{f}` is not before --to `{t}`")).into());
    }
    let store = open_store(&config).await?;
    let r = rep::period::build(store.as_ref(), from, to, now).await?;
    let text = match format {
        Format::Text => rep::period::to_text(&r),
        Format::Json => serde_json::to_string_pretty(&r)? + "\n",
        Format::Csv => rep::csv::period(&r),
        Format::Html => rep::html::period(&r).context("rendering the period report")?,
    };
    emit(output.as_deref(), &text)?;
    Ok(0)
}
