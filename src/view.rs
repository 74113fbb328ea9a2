//! What `status`, `list` and the API show: the `--json` contract and the text tables.
//!
//! Field names here are an API (README, "JSON output"): extend, never rename.

use crate::store::{from_ms, RequestRow, StepRow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// A request as shown to people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// Request id (UUID).
    pub id: String,
    /// `erasure` or `export`.
    pub kind: String,
    /// Workflow name.
    pub workflow: String,
    /// Derived status.
    pub status: String,
    /// Masked identities.
    pub subject: String,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339.
    pub due_at: String,
    /// Whole days until due (negative when overdue).
    pub days_left: i64,
    /// Due date passed and not closed.
    pub overdue: bool,
    /// When it first closed (completed or completed with exceptions).
    pub completed_at: Option<String>,
    /// Whether the deadline was met (None while open).
    pub deadline_met: Option<bool>,
    /// The one extension's reason.
    pub extended_reason: Option<String>,
    /// The intake form's id.
    pub external_id: Option<String>,
    /// Steps (present in `status`, omitted in `list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

/// A step as shown.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// Processor name.
    pub processor: String,
    /// Connector name.
    pub connector: String,
    /// Category.
    pub category: String,
    /// `erase` or `export`.
    pub action: String,
    /// Saga state.
    pub state: String,
    /// Outcome once done.
    pub outcome: Option<String>,
    /// Attempts made (throttled calls excluded).
    pub attempts: i64,
    /// When it is next due (RFC 3339).
    pub run_at: String,
    /// The last error, masked.
    pub last_error: Option<String>,
    /// `transient`, `throttled` or `permanent`.
    pub error_class: Option<String>,
    /// The processor's answer: `status`, `reference`, `note`.
    pub evidence: Option<Value>,
    /// A legal hold.
    pub hold: Option<HoldView>,
    /// End of the recovery window (RFC 3339).
    pub grace_until: Option<String>,
    /// First claim.
    pub started_at: Option<String>,
    /// Finished.
    pub finished_at: Option<String>,
}

/// A hold.
#[derive(Debug, Clone, Serialize)]
pub struct HoldView {
    /// Legal basis.
    pub basis: String,
    /// End (RFC 3339).
    pub until: Option<String>,
}

use crate::store::rfc3339 as ts;

impl RequestView {
    /// Build the view at time `now`.
    pub fn new(r: &RequestRow, steps: Option<&[StepRow]>, now: DateTime<Utc>) -> RequestView {
        let closed = r.status.is_closed();
        let due = from_ms(r.due_at);
        RequestView {
            id: r.id.clone(),
            kind: r.kind.as_str().into(),
            workflow: r.workflow.clone(),
            status: r.status.as_str().into(),
            subject: r.subject_masked.clone(),
            received_at: ts(r.received_at),
            due_at: ts(r.due_at),
            days_left: (due - now).num_days(),
            overdue: !closed && now > due,
            completed_at: r.completed_at.map(ts),
            deadline_met: r.completed_at.map(|c| c <= r.due_at),
            extended_reason: r.extended_reason.clone(),
            external_id: r.external_id.clone(),
            steps: steps.map(|s| s.iter().map(StepView::new).collect()),
        }
    }

    /// A text rendering for people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "request {}  {}  status: {}\nsubject: {}\nreceived {} · due {} ({})\n",
            self.id,
            self.kind,
            self.status,
            self.subject,
            &self.received_at[..16].replace('T', " "),
            &self.due_at[..10],
            if self.overdue {
                format!("OVERDUE by {} days", -self.days_left)
            } else if self.completed_at.is_some() {
                format!(
                    "closed {}",
                    self.completed_at
                        .as_deref()
                        .map(|c| &c[..16])
                        .unwrap_or("")
                        .replace('T', " ")
                )
            } else {
                format!("{} days left", self.days_left)
            }
        );
        if let Some(r) = &self.extended_reason {
            out.push_str(&format!("extended once: {r}\n"));
        }
        if let Some(steps) = &self.steps {
            out.push_str(&format!(
                "\n{:<18} {:<15} {:<22} {:<10} {:>8}  {}\n",
                "PROCESSOR", "CATEGORY", "STATE", "OUTCOME", "ATTEMPTS", "DETAIL"
            ));
            for s in steps {
                out.push_str(&format!(
                    "{:<18} {:<15} {:<22} {:<10} {:>8}  {}\n",
                    s.processor,
                    s.category,
                    s.state,
                    s.outcome.as_deref().unwrap_or("-"),
                    s.attempts,
                    s.detail()
                ));
            }
        }
        out
    }
}

impl StepView {
    /// Build from a row.
    pub fn new(s: &StepRow) -> StepView {
        StepView {
            processor: s.processor.clone(),
            connector: s.connector.clone(),
            category: s.category.clone(),
            action: s.action.as_str().into(),
            state: s.state.as_str().into(),
            outcome: s.outcome.map(|o| o.as_str().into()),
            attempts: s.attempts,
            run_at: ts(s.run_at),
            last_error: s.last_error.clone(),
            error_class: s.error_class.clone(),
            evidence: s.evidence.clone(),
            hold: s.hold_basis.as_ref().map(|b| HoldView {
                basis: b.clone(),
                // An open-ended hold is stored as the far future: shown as null ("until released").
                until: s
                    .hold_until
                    .filter(|u| *u < crate::domain::policy::FOREVER_MS)
                    .map(ts),
            }),
            grace_until: s.grace_until.map(ts),
            started_at: s.started_at.map(ts),
            finished_at: s.finished_at.map(ts),
        }
    }

    /// One line of detail for the text table.
    pub fn detail(&self) -> String {
        match self.state.as_str() {
            "retry_wait" => format!(
                "retry at {}: {}",
                &self.run_at[11..19],
                self.last_error.as_deref().unwrap_or("")
            ),
            "failed" | "pending" if self.last_error.is_some() => {
                self.last_error.clone().unwrap_or_default()
            }
            "held" => match &self.hold {
                Some(h) => format!(
                    "held until {}: {}",
                    h.until.as_deref().map(|u| &u[..10]).unwrap_or("released"),
                    h.basis
                ),
                None => "held".into(),
            },
            "grace" => format!(
                "soft-deleted; purge verified after {}",
                self.grace_until.as_deref().map(|u| &u[..16]).unwrap_or("?")
            ),
            _ => {
                let ev = self.evidence.as_ref();
                let status = ev.and_then(|e| e.get("status")).and_then(|s| s.as_u64());
                let reference = ev.and_then(|e| e.get("reference")).and_then(|s| s.as_str());
                let note = ev.and_then(|e| e.get("note")).and_then(|s| s.as_str());
                let mut parts = vec![];
                if let Some(s) = status {
                    parts.push(format!("HTTP {s}"));
                }
                if let Some(r) = reference {
                    parts.push(format!("ref {r}"));
                }
                if let Some(n) = note {
                    parts.push(n.to_string());
                }
                parts.join(", ")
            }
        }
    }
}

/// A hold's state at `now`: `released` (by `lethe hold release`), `ended`
/// (its `until` passed) or `active`.
pub fn hold_status(h: &crate::store::HoldRow, now: crate::store::Millis) -> &'static str {
    if h.released_at.is_some() {
        "released"
    } else if h.until_at.is_some_and(|u| u <= now) {
        "ended"
    } else {
        "active"
    }
}
