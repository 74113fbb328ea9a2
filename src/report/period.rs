//! The period report: how the requests received in a period went — counts,
//! deadlines, time to complete, and how each processor performed.
//!
//! The period is a cohort: the requests *received* in `[from, to)`, each
//! judged as it stands when the report is generated. That answers the
//! regulator's question ("of the requests you got in Q3, how many did you
//! answer in time?") and gives the same numbers whenever it is re-run after
//! every request of the period has closed.

use super::{human_ms, percentile, ts};
use crate::domain::RequestStatus;
use crate::store::{
    Millis, ReportStore, RequestFilter, RequestRow, RequestStore, StepRow, StoreError, SweepStore,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// The period report model (also its JSON format).
#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    /// When generated (RFC 3339).
    pub generated_at: String,
    /// Start of the period, inclusive (RFC 3339).
    pub from: String,
    /// End of the period, exclusive (RFC 3339).
    pub to: String,
    /// Request counts.
    pub requests: Counts,
    /// Time from receipt to completion, over the completed requests.
    pub time_to_complete: Percentiles,
    /// One entry per processor, by name.
    pub processors: Vec<ProcessorStats>,
    /// Retention sweeps run in the period, per schedule and processor.
    pub retention_sweeps: Vec<super::sweep::SweepStats>,
}

/// Request counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Received in the period.
    pub received: u64,
    /// Of which erasures.
    pub erasure: u64,
    /// Of which exports.
    pub export: u64,
    /// Of which objections (Art. 21).
    pub objection: u64,
    /// Of which rectifications (Art. 16).
    pub rectification: u64,
    /// Completed (or completed with exceptions).
    pub completed: u64,
    /// Completed by the due date.
    pub on_time: u64,
    /// Completed after the due date.
    pub late: u64,
    /// Open and past the due date.
    pub overdue: u64,
    /// Not closed (in progress, waiting, or failed).
    pub open: u64,
    /// Of the open ones, those with a step that needs attention.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Percentiles of a duration.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: Option<i64>,
    /// 90th percentile, milliseconds.
    pub p90_ms: Option<i64>,
    /// Maximum, milliseconds.
    pub max_ms: Option<i64>,
    /// Median, for people.
    pub p50: Option<String>,
    /// 90th percentile, for people.
    pub p90: Option<String>,
    /// Maximum, for people.
    pub max: Option<String>,
}

/// One processor's performance in the period.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Processor name.
    pub processor: String,
    /// Category.
    pub category: String,
    /// Steps (one per request that involved it).
    pub steps: u64,
    /// Steps done (any outcome).
    pub completed: u64,
    /// Of the done steps, those `not_applicable` (the connector has no action
    /// for the request's kind): counted in `completed`, never as work done.
    pub not_applicable: u64,
    /// Steps failed.
    pub failed: u64,
    /// Steps held.
    pub held: u64,
    /// Steps the operator skipped after they failed (`lethe skip`; also under
    /// `outcomes` as `skipped`): never counted as completed.
    pub skipped: u64,
    /// Steps still open (pending, running, retry_wait, grace, awaiting_confirmation).
    pub open: u64,
    /// Steps cancelled.
    pub cancelled: u64,
    /// Outcomes of the done steps (`erased` → n).
    pub outcomes: BTreeMap<String, u64>,
    /// Median time from the request's receipt to the step being done, milliseconds.
    pub median_ms: Option<i64>,
    /// The same, for people.
    pub median: Option<String>,
}

/// Build the report for requests received in `[from, to)`.
pub async fn build<S: RequestStore + ReportStore + SweepStore + ?Sized>(
    store: &S,
    from: Millis,
    to: Millis,
    now: Millis,
) -> Result<PeriodReport, StoreError> {
    let requests = store
        .list_requests(&RequestFilter {
            received_from: Some(from),
            received_to: Some(to),
            ..Default::default()
        })
        .await?;
    let steps = store.steps_received_between(from, to).await?;
    let mut r = assemble(&requests, &steps, from, to, now);
    r.retention_sweeps = super::sweep::period(store, from, to).await?;
    Ok(r)
}

fn percentiles(mut v: Vec<i64>) -> Percentiles {
    v.sort_unstable();
    let p50 = percentile(&v, 50);
    let p90 = percentile(&v, 90);
    let max = v.last().copied();
    Percentiles {
        count: v.len() as u64,
        p50_ms: p50,
        p90_ms: p90,
        max_ms: max,
        p50: p50.map(human_ms),
        p90: p90.map(human_ms),
        max: max.map(human_ms),
    }
}

/// Assemble the report from rows (pure).
pub fn assemble(
    requests: &[RequestRow],
    steps: &[StepRow],
    from: Millis,
    to: Millis,
    now: Millis,
) -> PeriodReport {
    let mut c = Counts::default();
    let mut ttc = vec![];
    let mut received_at = BTreeMap::new();
    for r in requests {
        received_at.insert(r.id.as_str(), r.received_at);
        c.received += 1;
        match r.kind {
            crate::domain::RequestKind::Erasure => c.erasure += 1,
            crate::domain::RequestKind::Export => c.export += 1,
            crate::domain::RequestKind::Objection => c.objection += 1,
            crate::domain::RequestKind::Rectification => c.rectification += 1,
        }
        if r.status == RequestStatus::Cancelled {
            c.cancelled += 1;
            continue;
        }
        match r.completed_at {
            Some(done) => {
                c.completed += 1;
                if done <= r.due_at {
                    c.on_time += 1;
                } else {
                    c.late += 1;
                }
                ttc.push(done - r.received_at);
            }
            None => {
                c.open += 1;
                if r.status == RequestStatus::Failed {
                    c.failed += 1;
                }
                if now > r.due_at {
                    c.overdue += 1;
                }
            }
        }
    }
    let mut per: BTreeMap<String, (ProcessorStats, Vec<i64>)> = BTreeMap::new();
    for s in steps {
        let (p, times) = per.entry(s.processor.clone()).or_insert_with(|| {
            (
                ProcessorStats {
                    processor: s.processor.clone(),
                    category: s.category.clone(),
                    ..Default::default()
                },
                vec![],
            )
        });
        p.steps += 1;
        match s.state.as_str() {
            "done" => {
                p.completed += 1;
                if let Some(o) = s.outcome {
                    *p.outcomes.entry(o.as_str().to_string()).or_default() += 1;
                    if o == crate::domain::Outcome::NotApplicable {
                        p.not_applicable += 1;
                    }
                }
                if let (Some(f), Some(r)) = (s.finished_at, received_at.get(s.request_id.as_str()))
                {
                    times.push(f - r);
                }
            }
            "failed" => p.failed += 1,
            "held" => p.held += 1,
            "skipped" => {
                p.skipped += 1;
                *p.outcomes.entry("skipped".to_string()).or_default() += 1;
            }
            "cancelled" => p.cancelled += 1,
            _ => p.open += 1,
        }
    }
    let processors = per
        .into_values()
        .map(|(mut p, mut times)| {
            times.sort_unstable();
            p.median_ms = percentile(&times, 50);
            p.median = p.median_ms.map(human_ms);
            p
        })
        .collect();
    PeriodReport {
        generated_at: ts(now),
        from: ts(from),
        to: ts(to),
        requests: c,
        time_to_complete: percentiles(ttc),
        processors,
        retention_sweeps: Vec::new(),
    }
}

/// The text rendering.
pub fn to_text(r: &PeriodReport) -> String {
    let c = &r.requests;
    let t = &r.time_to_complete;
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "PERIOD REPORT {} — {} (requests received; end exclusive)\n\n",
        &r.from[..10],
        r.to.get(..19).unwrap_or(&r.to).replace('T', " ")
    );
    out.push_str(&format!(
        "received   {:>6}  ({} erasure, {} export, {} objection, {} rectification)\n",
        c.received, c.erasure, c.export, c.objection, c.rectification
    ));
    out.push_str(&format!(
        "completed  {:>6}  (on time {}, late {})\n",
        c.completed, c.on_time, c.late
    ));
    out.push_str(&format!("on time    {:>6}\n", c.on_time));
    out.push_str(&format!("overdue    {:>6}\n", c.overdue));
    out.push_str(&format!(
        "open       {:>6}  (of which failed, needing attention: {})\n",
        c.open, c.failed
    ));
    out.push_str(&format!("cancelled  {:>6}\n", c.cancelled));
    out.push_str(&format!(
        "\ntime to complete ({} requests): p50 {}  p90 {}  max {}\n",
        t.count,
        dash(&t.p50),
        dash(&t.p90),
        dash(&t.max)
    ));
    out.push_str(&format!(
        "\n{:<18} {:<15} {:>6} {:>9} {:>7} {:>5} {:>5}  {:<10} OUTCOMES\n",
        "PROCESSOR", "CATEGORY", "STEPS", "COMPLETED", "FAILED", "HELD", "OPEN", "MEDIAN"
    ));
    for p in &r.processors {
        let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!(
            "{:<18} {:<15} {:>6} {:>9} {:>7} {:>5} {:>5}  {:<10} {}\n",
            p.processor,
            p.category,
            p.steps,
            p.completed,
            p.failed,
            p.held,
            p.open,
            dash(&p.median),
            outcomes.join(", ")
        ));
    }
    out.push_str(&super::sweep::period_text(&r.retention_sweeps));
    out.push_str(&format!("\ngenerated {}\n", r.generated_at));
    out
}
