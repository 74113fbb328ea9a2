//! The operator's way out of a failed step.
//!
//! # What a failed step does to later phases
//!
//! Phases run in order: a step starts once every step of the earlier phases of
//! its request is `done`, `held` or `skipped`. A `failed` step therefore
//! **stops the later phases of its request** — on purpose: the phases exist so
//! that, e.g., no campaign reaches the subject while the rest is erased, and
//! running the later phases anyway would break that promise silently. The
//! later steps stay `pending`; `lethe status` says what they wait for
//! (`waiting for phase "stop mail": newsletter failed`) and the request is
//! `failed`, so `lethe run` exits 1 and `lethe list --status failed` finds it.
//!
//! The operator decides, per failed step:
//!
//! - `lethe retry ID [--processor P]`: the step goes back to `pending` with
//!   fresh attempts (after fixing a credential, say); audited as `step.retried`.
//! - `lethe skip ID --processor P --reason "…"`: the step becomes `skipped`, a
//!   final state. The later phases go on. The request can then be at best
//!   `completed_with_exceptions` (never `completed`), and its certificate shows
//!   the processor as *skipped by the operator* with the reason and the error
//!   it had failed with — never as erased. Audited as `step.skipped`.

use super::{Engine, EngineError};
use crate::domain::{RequestStatus, StepEvent, StepState};
use crate::store::{from_ms, ms, Applied, ChangeSet, RequestPatch, StepChange};
use chrono::Utc;
use serde_json::{json, Value};

/// The longest skip reason kept (characters).
const REASON_MAX: usize = 500;

impl Engine {
    /// Give up on the failed step at `processor`: it becomes `skipped` with
    /// the operator's reason (identities in it masked), later phases go on,
    /// and the request can be at best `completed_with_exceptions`.
    pub async fn skip(
        &self,
        id: &str,
        processor: &str,
        reason: &str,
    ) -> Result<RequestStatus, EngineError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(EngineError::Invalid(
                "a skip needs its reason (--reason), e.g. \"account closed by the processor; nothing left to erase\"; it is shown on the certificate".into(),
            ));
        }
        let req = self.request(id).await?;
        let steps = self.store.steps(&req.id).await?;
        let Some(step) = steps.iter().find(|s| s.processor == processor) else {
            let names: Vec<&str> = steps.iter().map(|s| s.processor.as_str()).collect();
            return Err(EngineError::Invalid(format!(
                "request `{id}` has no step at processor `{processor}` (its processors: {})",
                names.join(", ")
            )));
        };
        if step.state != StepState::Failed {
            return Err(EngineError::Invalid(format!(
                "the step at processor `{processor}` is `{}`, not `failed`: only a failed step can be skipped",
                step.state
            )));
        }
        let to = step
            .state
            .apply(StepEvent::Skip)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let reason: String = self
            .clean_note(&req, reason)
            .await
            .chars()
            .take(REASON_MAX)
            .collect();
        let now = ms(Utc::now());
        let mut evidence = match &step.evidence {
            Some(Value::Object(o)) => o.clone(),
            _ => serde_json::Map::new(),
        };
        evidence.insert("skipped_reason".into(), Value::String(reason.clone()));
        evidence.insert(
            "skipped_at".into(),
            Value::String(from_ms(now).to_rfc3339()),
        );
        let change = StepChange {
            step_id: step.id,
            from: StepState::Failed,
            lease_token: None,
            maybe_acted: false,
            to,
            phase: step.phase,
            outcome: None,
            run_at: now,
            attempts: None,
            // The error it failed with stays: the certificate shows both.
            error: step
                .last_error
                .clone()
                .map(|m| (m, step.error_class.clone().unwrap_or_default())),
            evidence: Some(Value::Object(evidence)),
            hold: None,
            grace_until: None,
            finished: true,
            event: "step.skipped".into(),
            detail: json!({
                "processor": step.processor,
                "action": step.action.as_str(),
                "from": "failed",
                "to": to.as_str(),
                "by": "operator",
                "reason": reason,
                "error_class": step.error_class,
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
            Applied::Done { status, .. } => {
                self.notify();
                Ok(status)
            }
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }
}
