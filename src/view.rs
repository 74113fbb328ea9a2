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
    /// `erasure`, `export`, `objection` or `rectification`.
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
    /// False while the subject's identity is not verified: no processor is called.
    pub verified: bool,
    /// What the request as a whole waits for: `verification` (`lethe verify`), else null.
    pub waiting_for: Option<String>,
    /// The erasure this one follows up (the subject re-appeared at a processor).
    pub follows: Option<String>,
    /// Warnings for the sender (the request was still accepted); only on filing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// What a step that is not final waits for: `worker` (due now),
    /// `retry` (back-off after an error), `throttle`, `paused_processor`,
    /// `soft_delete_window`, `hold`, `manual_confirmation`, `earlier_phase`,
    /// `processor` (a call in flight), `operator` (failed: `lethe retry` or
    /// `lethe skip`); null once final (done, skipped, cancelled).
    pub waiting_for: Option<String>,
    /// The same for people: `waiting for phase "stop mail": newsletter failed`.
    pub waiting_reason: Option<String>,
    /// Until when it waits (RFC 3339), where that is known.
    pub until: Option<String>,
    /// Why the operator skipped it (`skipped` steps).
    pub skipped_reason: Option<String>,
}

/// The phase names of a workflow, by wave (empty if it is no longer configured).
pub fn phase_names(config: &crate::config::Config, workflow: &str) -> Vec<String> {
    config
        .workflows
        .by_name
        .get(workflow)
        .map(|w| w.phases.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default()
}

/// What a step that is not final waits for (see [`StepView::waiting_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The machine-readable kind (`retry`, `hold`, `earlier_phase`…).
    pub kind: &'static str,
    /// A sentence for people.
    pub reason: String,
    /// Until when, if known.
    pub until: Option<crate::store::Millis>,
}

/// What `step` waits for, given the other steps of its request and its
/// workflow's phase names (by wave; a missing name shows as `phase N`).
/// `None` for a final step.
pub fn waiting(
    step: &StepRow,
    all: &[StepRow],
    phase_names: &[String],
    now: crate::store::Millis,
) -> Option<Waiting> {
    use crate::domain::StepState as S;
    let at =
        |m: crate::store::Millis| from_ms(m).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let req = &step.request_id;
    let p = &step.processor;
    let w = |kind, reason: String, until| {
        Some(Waiting {
            kind,
            reason,
            until,
        })
    };
    if matches!(step.state, S::Pending | S::RetryWait) {
        // The lowest earlier phase with a step that is neither done, held nor skipped.
        let blockers: Vec<&StepRow> = all
            .iter()
            .filter(|d| d.wave < step.wave && !matches!(d.state, S::Done | S::Held | S::Skipped))
            .collect();
        if let Some(wave) = blockers.iter().map(|d| d.wave).min() {
            let name = usize::try_from(wave)
                .ok()
                .and_then(|i| phase_names.get(i))
                .cloned()
                .unwrap_or_else(|| format!("phase {}", wave + 1));
            let who: Vec<String> = blockers
                .iter()
                .filter(|d| d.wave == wave)
                .map(|d| format!("{} {}", d.processor, d.state))
                .collect();
            let failed = blockers.iter().any(|d| d.state == S::Failed);
            return w(
                "earlier_phase",
                format!(
                    "waiting for phase \"{name}\": {}{}",
                    who.join(", "),
                    if failed {
                        " (a failed step stops later phases: `lethe retry` or `lethe skip` it)"
                    } else {
                        ""
                    }
                ),
                None,
            );
        }
    }
    match step.state {
        S::Done | S::Cancelled | S::Skipped => None,
        S::Failed => w(
            "operator",
            format!(
                "failed ({}): `lethe retry {req} --processor {p}` after fixing the cause, or `lethe skip {req} --processor {p} --reason \"…\"`",
                step.error_class.as_deref().unwrap_or("permanent")
            ),
            None,
        ),
        S::Running => w(
            "processor",
            format!(
                "a call to `{p}` is in flight{}",
                step.lease_expires_at
                    .map(|l| format!(" (lease until {})", at(l)))
                    .unwrap_or_default()
            ),
            step.lease_expires_at,
        ),
        S::Pending if step.run_at <= now => w(
            "worker",
            "due now: `lethe run --until-idle` or the daemon picks it up".into(),
            Some(step.run_at),
        ),
        S::Pending => w("worker", format!("due at {}", at(step.run_at)), Some(step.run_at)),
        S::RetryWait => {
            let (kind, what) = match step.error_class.as_deref() {
                Some("throttled") => ("throttle", "throttled by the processor".to_string()),
                Some("paused") => (
                    "paused_processor",
                    format!("processor `{p}` is paused after failing calls in a row"),
                ),
                other => (
                    "retry",
                    format!(
                        "back-off after a {} error (attempt {})",
                        other.unwrap_or("transient"),
                        step.attempts
                    ),
                ),
            };
            w(
                kind,
                format!("{what}; next try at {}", at(step.run_at)),
                Some(step.run_at),
            )
        }
        S::Grace => {
            let end = step.grace_until.unwrap_or(step.run_at);
            w(
                "soft_delete_window",
                format!(
                    "soft-deleted; the recovery window ends at {}, then the purge is verified",
                    at(end)
                ),
                Some(end),
            )
        }
        S::Held => {
            let until = step
                .hold_until
                .filter(|u| *u < crate::domain::policy::FOREVER_MS);
            w(
                "hold",
                format!(
                    "legal hold until {}: {}",
                    until.map(at).unwrap_or_else(|| "released".into()),
                    step.hold_basis.as_deref().unwrap_or("?")
                ),
                until,
            )
        }
        S::AwaitingConfirmation => w(
            "manual_confirmation",
            format!(
                "a person carries out the task at `{p}`, then `lethe confirm {req} --processor {p}`; next reminder at {}",
                at(step.run_at)
            ),
            None,
        ),
    }
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
    /// Build the view at time `now` (phases named by number in waiting reasons).
    pub fn new(r: &RequestRow, steps: Option<&[StepRow]>, now: DateTime<Utc>) -> RequestView {
        RequestView::with_phases(r, steps, now, &[])
    }

    /// Build the view at time `now`, naming phases by `phase_names` (by wave).
    pub fn with_phases(
        r: &RequestRow,
        steps: Option<&[StepRow]>,
        now: DateTime<Utc>,
        phase_names: &[String],
    ) -> RequestView {
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
            verified: r.verified,
            waiting_for: (!r.verified && !r.cancelled).then(|| "verification".to_string()),
            follows: r.follows.clone(),
            warnings: vec![],
            steps: steps.map(|all| {
                all.iter()
                    .map(|s| {
                        let mut v = StepView::new(s);
                        if let Some(wt) = waiting(s, all, phase_names, crate::store::ms(now)) {
                            v.waiting_for = Some(wt.kind.into());
                            v.waiting_reason = Some(wt.reason);
                            v.until = wt.until.map(ts);
                            if !r.verified && !r.cancelled && s.state != crate::domain::StepState::Failed {
                                v.waiting_for = Some("verification".into());
                                v.waiting_reason = Some(format!(
                                    "the subject's identity is not verified: no processor is called until `lethe verify {} --method …`",
                                    r.id
                                ));
                                v.until = None;
                            }
                        }
                        v
                    })
                    .collect()
            }),
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
        if !self.verified && self.waiting_for.is_some() {
            out.push_str(&format!(
                "waiting for verification: no processor is called until `lethe verify {} --method …`\n",
                self.id
            ));
        }
        if let Some(f) = &self.follows {
            out.push_str(&format!(
                "follows erasure {f} (the subject re-appeared at a processor)\n"
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
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
            waiting_for: None,
            waiting_reason: None,
            until: None,
            skipped_reason: (s.state == crate::domain::StepState::Skipped)
                .then(|| {
                    s.evidence
                        .as_ref()
                        .and_then(|e| e.get("skipped_reason"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .flatten(),
        }
    }

    /// One line of detail for the text table.
    pub fn detail(&self) -> String {
        if let Some(r) = &self.waiting_reason {
            return match (&self.last_error, self.waiting_for.as_deref()) {
                (Some(e), Some("retry" | "throttle" | "paused_processor" | "operator")) => {
                    format!("{r}: {e}")
                }
                _ => r.clone(),
            };
        }
        match self.state.as_str() {
            "skipped" => format!(
                "skipped by the operator: {}{}",
                self.skipped_reason.as_deref().unwrap_or("?"),
                self.last_error
                    .as_deref()
                    .map(|e| format!(" (it had failed: {e})"))
                    .unwrap_or_default()
            ),
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
