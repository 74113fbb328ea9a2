//! Processors with no API: the task, its reminders, and `lethe confirm`.
//!
//! Why it lives here and not in the connector: sending a task is an effect the
//! saga must account for. The first send (phase `act`) and every reminder
//! (phase `remind`) move the step to `awaiting_confirmation` with `run_at` set
//! to the next reminder, so a reminder is a `run_at` row like every other wait,
//! and survives restarts. A webhook that is down is a transient error: the step
//! waits in `retry_wait` and the same task is sent again, never lost.
//!
//! Only a person can say the processor is done: `lethe confirm` moves the step
//! from `awaiting_confirmation` to `done` (outcome `confirmed`), with the note
//! kept as evidence after masking any identity it echoes.

use super::worker::Decision;
use super::{Engine, EngineError};
use crate::connectors::manual::Task;
use crate::connectors::{scrub, Connector, ConnectorError};
use crate::domain::{Outcome, Phase, RequestStatus, StepEvent, StepState, Subject};
use crate::store::{
    from_ms, ms, Applied, ChangeSet, Millis, RequestPatch, RequestRow, StepChange, StepRow,
};
use chrono::Utc;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Event kind of the first task.
pub const TASK_ISSUED: &str = "step.task_issued";
/// Event kind of each reminder.
pub const REMINDER_SENT: &str = "step.reminder_sent";

/// The longest confirmation note kept.
const NOTE_MAX: usize = 500;

impl Engine {
    /// Send the task (phase `act`) or a reminder (phase `remind`) for a manual processor.
    pub(super) async fn manual_step(
        &self,
        connector: &dyn Connector,
        step: &StepRow,
        req: &RequestRow,
        subject: &Subject,
        changes: Option<&Subject>,
        now: Millis,
    ) -> Result<Decision, ConnectorError> {
        let Some(m) = connector.as_manual() else {
            return Err(ConnectorError::permanent(format!(
                "processor `{}` is not a manual processor: it has no task to remind",
                step.processor
            )));
        };
        let reminder = if step.phase == Phase::Remind {
            let events = self.store.request_events(&req.id).await.map_err(|e| {
                ConnectorError::transient(format!("cannot read the step's events: {e}"))
            })?;
            let sent = events
                .iter()
                .filter(|e| e.step_id == Some(step.id) && e.kind == REMINDER_SENT)
                .count();
            sent as u32 + 1
        } else {
            0
        };
        let task = task(
            step,
            req,
            subject,
            changes,
            m.contact(),
            m.instructions(),
            reminder,
        );
        let evidence = m.send(&task).await?;
        let every = m.remind_every();
        let next = now.saturating_add(every.as_millis().min(i64::MAX as u128) as i64);
        let sent_to = m.contact().to_string();
        Ok(Decision {
            event: StepEvent::AwaitConfirmation,
            outcome: None,
            run_at: next,
            // A sent task starts a fresh count: a webhook that fails later gets all its retries.
            attempts: Some(0),
            error: None,
            evidence: Some(json!({
                "status": evidence.status,
                "reference": evidence.reference,
                "note": if reminder == 0 {
                    format!("task sent to {sent_to}; waiting for `lethe confirm`")
                } else {
                    format!("reminder {reminder} sent to {sent_to}; waiting for `lethe confirm`")
                },
                "contact": sent_to,
                "reminders": reminder,
            })),
            grace_until: None,
            hold: None,
            kind: if reminder == 0 {
                TASK_ISSUED
            } else {
                REMINDER_SENT
            },
            extra: json!({
                "reminder": reminder,
                "contact": sent_to,
                "next_reminder_at": from_ms(next).to_rfc3339(),
            }),
        })
    }

    /// `lethe confirm`: a person says the manual processor has done its part.
    pub async fn confirm(
        &self,
        id: &str,
        processor: &str,
        note: Option<&str>,
    ) -> Result<RequestStatus, EngineError> {
        let req = self.request(id).await?;
        let steps = self.store.steps(&req.id).await?;
        let Some(step) = steps.iter().find(|s| s.processor == processor) else {
            let names: Vec<&str> = steps.iter().map(|s| s.processor.as_str()).collect();
            return Err(EngineError::Invalid(format!(
                "request `{id}` has no step at processor `{processor}` (its processors: {})",
                names.join(", ")
            )));
        };
        if step.state != StepState::AwaitingConfirmation {
            return Err(EngineError::Invalid(format!(
                "the step at processor `{processor}` is `{}`, not `awaiting_confirmation`: there is nothing to confirm",
                step.state
            )));
        }
        let to = step
            .state
            .apply(StepEvent::Confirm)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let note = match note {
            Some(n) => Some(self.clean_note(&req, n).await),
            None => None,
        }
        .filter(|n| !n.is_empty());
        let now = ms(Utc::now());
        let mut evidence = match &step.evidence {
            Some(Value::Object(o)) => o.clone(),
            _ => serde_json::Map::new(),
        };
        evidence.insert(
            "note".into(),
            Value::String(match &note {
                Some(n) => format!("confirmed: {n}"),
                None => "confirmed".into(),
            }),
        );
        evidence.insert(
            "confirmed_at".into(),
            Value::String(from_ms(now).to_rfc3339()),
        );
        let change = StepChange {
            step_id: step.id,
            from: StepState::AwaitingConfirmation,
            lease_token: None,
            maybe_acted: false,
            to,
            phase: step.phase,
            outcome: Some(Outcome::Confirmed),
            run_at: now,
            attempts: None,
            error: None,
            evidence: Some(Value::Object(evidence)),
            hold: None,
            grace_until: None,
            finished: true,
            event: "step.confirmed".into(),
            detail: json!({
                "processor": step.processor,
                "action": step.action.as_str(),
                "from": "awaiting_confirmation",
                "to": to.as_str(),
                "outcome": Outcome::Confirmed.as_str(),
                "note": note,
            }),
        };
        let cs = ChangeSet {
            request_id: req.id.clone(),
            now,
            steps: vec![change],
            request: RequestPatch::default(),
            events: vec![],
        };
        match self.store.apply(cs).await? {
            Applied::Done { status, .. } => Ok(status),
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }

    /// Trim a note, mask any identity of the subject it contains, and cap its length.
    pub(super) async fn clean_note(&self, req: &RequestRow, note: &str) -> String {
        let trimmed = note.trim();
        let masked = match self.open_subject(req).await {
            Ok(Some(subject)) => scrub(trimmed, &subject),
            _ => trimmed.to_string(),
        };
        masked.chars().take(NOTE_MAX).collect()
    }
}

fn raw_identities(subject: &Subject) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    if let Some(e) = &subject.email {
        ids.insert("email".to_string(), e.expose().to_string());
    }
    if let Some(p) = &subject.phone {
        ids.insert("phone".to_string(), p.expose().to_string());
    }
    if let Some(c) = &subject.customer_id {
        ids.insert("customer_id".to_string(), c.expose().to_string());
    }
    if let Some(n) = &subject.name {
        ids.insert("name".to_string(), n.expose().to_string());
    }
    ids
}

fn task(
    step: &StepRow,
    req: &RequestRow,
    subject: &Subject,
    changes: Option<&Subject>,
    contact: &str,
    instructions: Option<&str>,
    reminder: u32,
) -> Task {
    let ids = raw_identities(subject);
    let set = match (step.action, changes) {
        (crate::domain::Action::Rectify, Some(c)) => raw_identities(c),
        _ => BTreeMap::new(),
    };
    let due = from_ms(req.due_at).to_rfc3339();
    let what = match step.action {
        crate::domain::Action::Erase => "Erase every record of this person",
        crate::domain::Action::Export => "Collect a copy of every record of this person",
        crate::domain::Action::Object => {
            "Stop processing this person's data (unsubscribe / opt out everywhere, without deleting)"
        }
        crate::domain::Action::Rectify => "Correct this person's data",
    };
    let what = if set.is_empty() {
        what.to_string()
    } else {
        let to: Vec<String> = set.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{what} to: {}", to.join(", "))
    };
    let search: Vec<String> = ids.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let confirm = format!(
        "lethe confirm {} --processor {} --note \"what was done\"",
        req.id, step.processor
    );
    let mut text = format!(
        "{}{what} at {} (search for: {}). Legal deadline: {due}. When done, run: {confirm}",
        if reminder > 0 {
            format!("Reminder {reminder}: ")
        } else {
            String::new()
        },
        step.processor,
        search.join(", "),
    );
    if let Some(i) = instructions {
        text.push_str("\n\n");
        text.push_str(i);
    }
    Task {
        kind: "lethe.manual_task",
        task_id: format!("{}:{}", req.id, step.processor),
        reminder,
        processor: step.processor.clone(),
        contact: contact.to_string(),
        request_id: req.id.clone(),
        action: step.action.as_str().to_string(),
        due_at: due,
        subject_masked: req.subject_masked.clone(),
        subject: ids,
        set,
        text,
        confirm_command: confirm,
    }
}
