//! Retention-sweep evidence: the certificate of one sweep run
//! (`lethe report sweep RUN_ID`) and the "retention sweeps" section of the
//! period report.
//!
//! A certificate records only what the processor's answers proved: counts of
//! items removed, refused and unconfirmed, and per item its keyed hash (never
//! a file name or object key), kind, size, last-modified time and the
//! answer's evidence. A ticket shows its id (a pure number).

use super::{escape, ts};
use crate::store::sweep::{SweepItemRow, SweepRunRow};
use crate::store::{Millis, StoreError, SweepStore};
use serde::Serialize;
use std::collections::BTreeMap;

/// One sweep run's certificate (also its JSON format).
#[derive(Debug, Clone, Serialize)]
pub struct SweepCertificate {
    /// The run.
    pub run_id: String,
    /// The schedule.
    pub schedule: String,
    /// The processor.
    pub processor: String,
    /// `schedule` or `manual`.
    pub started_by: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// Items last modified before this were to go.
    pub cutoff: String,
    /// Created.
    pub created_at: String,
    /// Finished.
    pub finished_at: Option<String>,
    /// Claims (more than one: retried or taken over).
    pub attempts: i64,
    /// Items listed.
    pub listed: i64,
    /// Items whose removal the processor's answer proves.
    pub removed: i64,
    /// Items the processor refused to remove.
    pub failed: i64,
    /// Items listed with no answer yet (not claimed removed).
    pub unconfirmed: i64,
    /// Bytes removed, where sizes are known.
    pub bytes_removed: i64,
    /// Removed items per kind.
    pub removed_by_kind: BTreeMap<String, i64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Every item.
    pub items: Vec<CertItem>,
    /// When generated.
    pub generated_at: String,
}

/// One item of a certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertItem {
    /// Keyed hash of its name.
    pub item_hash: String,
    /// Its kind.
    pub kind: String,
    /// A pure id (ticket number), if any.
    pub reference: Option<String>,
    /// Size in bytes.
    pub size: Option<i64>,
    /// Last modified.
    pub modified_at: Option<String>,
    /// `removed`, `failed` or `pending`.
    pub state: String,
    /// The processor's answer.
    pub evidence: Option<serde_json::Value>,
}

/// Build a run's certificate; None if there is no such run.
pub async fn build<S: SweepStore + ?Sized>(
    store: &S,
    run_id: &str,
    now: Millis,
) -> Result<Option<SweepCertificate>, StoreError> {
    let Some(run) = store.sweep_run(run_id).await? else {
        return Ok(None);
    };
    let items = store.sweep_items(run_id).await?;
    Ok(Some(assemble(&run, &items, now)))
}

fn assemble(run: &SweepRunRow, items: &[SweepItemRow], now: Millis) -> SweepCertificate {
    let mut by_kind = BTreeMap::new();
    let mut bytes = 0;
    for i in items.iter().filter(|i| i.state == "removed") {
        *by_kind.entry(i.kind.clone()).or_insert(0) += 1;
        bytes += i.size.unwrap_or(0);
    }
    SweepCertificate {
        run_id: run.id.clone(),
        schedule: run.schedule.clone(),
        processor: run.processor.clone(),
        started_by: run.started_by.clone(),
        state: run.state.clone(),
        cutoff: ts(run.cutoff_at),
        created_at: ts(run.created_at),
        finished_at: run.finished_at.map(ts),
        attempts: run.attempts,
        listed: run.listed,
        removed: run.removed,
        failed: run.failed,
        unconfirmed: run.unconfirmed(),
        bytes_removed: bytes,
        removed_by_kind: by_kind,
        last_error: run.last_error.clone(),
        items: items
            .iter()
            .map(|i| CertItem {
                item_hash: i.item_hash.clone(),
                kind: i.kind.clone(),
                reference: i.reference.clone(),
                size: i.size,
                modified_at: i.modified_at.map(ts),
                state: i.state.clone(),
                evidence: i
                    .evidence
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok()),
            })
            .collect(),
        generated_at: ts(now),
    }
}

/// The certificate as text.
pub fn to_text(c: &SweepCertificate) -> String {
    let mut s = String::new();
    s.push_str(&format!("Retention sweep certificate — run {}\n", c.run_id));
    s.push_str(&format!(
        "schedule {}  processor {}  started by {}\n",
        c.schedule, c.processor, c.started_by
    ));
    s.push_str(&format!("state {}  attempts {}\n", c.state, c.attempts));
    s.push_str(&format!(
        "cutoff {} (items last modified before it)\n",
        c.cutoff
    ));
    s.push_str(&format!(
        "created {}  finished {}\n",
        c.created_at,
        c.finished_at.as_deref().unwrap_or("—")
    ));
    s.push_str(&format!(
        "listed {}  removed {}  failed {}  unconfirmed {}  bytes removed {}\n",
        c.listed, c.removed, c.failed, c.unconfirmed, c.bytes_removed
    ));
    if let Some(e) = &c.last_error {
        s.push_str(&format!("last error: {e}\n"));
    }
    s.push_str("\nitems (keyed hash; names are never kept):\n");
    for i in &c.items {
        s.push_str(&format!(
            "  {:<8} {:<14} {} {} {} {}\n",
            i.state,
            i.kind,
            &i.item_hash[..i.item_hash.len().min(16)],
            i.reference.as_deref().unwrap_or("-"),
            i.size
                .map(|n| format!("{n}B"))
                .unwrap_or_else(|| "-".into()),
            i.modified_at.as_deref().unwrap_or("-"),
        ));
    }
    s.push_str(&format!("\ngenerated {}\n", c.generated_at));
    s
}

/// The certificate as a self-contained HTML page.
pub fn to_html(c: &SweepCertificate) -> String {
    let mut rows = String::new();
    for i in &c.items {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
            escape(&i.state),
            escape(&i.kind),
            escape(&i.item_hash),
            escape(i.reference.as_deref().unwrap_or("")),
            i.size.map(|n| n.to_string()).unwrap_or_default(),
            escape(i.modified_at.as_deref().unwrap_or("")),
            escape(&i.evidence.as_ref().map(|e| e.to_string()).unwrap_or_default()),
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Retention sweep {id}</title></head><body>\n\
         <h1>Retention sweep certificate</h1>\n\
         <dl><dt>Run</dt><dd>{id}</dd><dt>Schedule</dt><dd>{schedule}</dd><dt>Processor</dt><dd>{processor}</dd>\
         <dt>State</dt><dd>{state}</dd><dt>Cutoff</dt><dd>{cutoff}</dd><dt>Finished</dt><dd>{finished}</dd></dl>\n\
         <p>Listed {listed}; removed {removed}; failed {failed}; unconfirmed {unconfirmed}; bytes removed {bytes}.</p>\n\
         <table><thead><tr><th>state</th><th>kind</th><th>keyed hash</th><th>id</th><th>size</th><th>last modified</th><th>evidence</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n\
         <p>Generated {generated}. Item names are never kept: each is identified by a keyed hash.</p>\n</body></html>\n",
        id = escape(&c.run_id),
        schedule = escape(&c.schedule),
        processor = escape(&c.processor),
        state = escape(&c.state),
        cutoff = escape(&c.cutoff),
        finished = escape(c.finished_at.as_deref().unwrap_or("—")),
        listed = c.listed,
        removed = c.removed,
        failed = c.failed,
        unconfirmed = c.unconfirmed,
        bytes = c.bytes_removed,
        generated = escape(&c.generated_at),
    )
}

/// Per schedule and processor, over the runs created in a period.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SweepStats {
    /// The schedule.
    pub schedule: String,
    /// The processor.
    pub processor: String,
    /// Runs created in the period.
    pub runs: u64,
    /// Of which finished (`done`).
    pub done: u64,
    /// Of which failed.
    pub failed_runs: u64,
    /// Items removed (proven by the processor's answer).
    pub items_removed: i64,
    /// Items the processor refused.
    pub items_failed: i64,
    /// Items listed with no answer.
    pub items_unconfirmed: i64,
    /// The runs' ids, oldest first.
    pub run_ids: Vec<String>,
}

/// The period report's retention-sweep section for runs created in `[from, to)`.
pub async fn period<S: SweepStore + ?Sized>(
    store: &S,
    from: Millis,
    to: Millis,
) -> Result<Vec<SweepStats>, StoreError> {
    let runs = store.sweep_runs_between(from, to).await?;
    let mut by: BTreeMap<(String, String), SweepStats> = BTreeMap::new();
    for r in runs {
        let s = by
            .entry((r.schedule.clone(), r.processor.clone()))
            .or_insert_with(|| SweepStats {
                schedule: r.schedule.clone(),
                processor: r.processor.clone(),
                ..Default::default()
            });
        s.runs += 1;
        match r.state.as_str() {
            "done" => s.done += 1,
            "failed" => s.failed_runs += 1,
            _ => {}
        }
        s.items_removed += r.removed;
        s.items_failed += r.failed;
        s.items_unconfirmed += r.unconfirmed();
        s.run_ids.push(r.id.clone());
    }
    Ok(by.into_values().collect())
}

/// The section as text.
pub fn period_text(stats: &[SweepStats]) -> String {
    let mut s = String::from("\nRetention sweeps\n");
    if stats.is_empty() {
        s.push_str("  none in this period\n");
        return s;
    }
    for st in stats {
        s.push_str(&format!(
            "  {} @ {}: {} run(s) ({} done, {} failed); items removed {}, failed {}, unconfirmed {}\n",
            st.schedule,
            st.processor,
            st.runs,
            st.done,
            st.failed_runs,
            st.items_removed,
            st.items_failed,
            st.items_unconfirmed
        ));
    }
    s
}
