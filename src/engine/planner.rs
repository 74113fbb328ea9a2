//! The planner: a workflow and the configured processors become a request's steps.
//!
//! Holds are decided here for a new request (workflow rules and ad-hoc holds
//! already on the subject), and again by the worker just before every erase
//! call, so a hold added later still stops the call.

use crate::config::Config;
use crate::domain::policy::FOREVER_MS;
use crate::domain::workflow::WorkflowDef;
use crate::domain::{hold_gate, Action, HoldGate, HoldSpan, Outcome, RequestKind, StepState};
use crate::store::{HoldRow, Millis, NewStep};

/// The holds that apply to an erase at one processor: the workflow's rule
/// (counted from receipt) and the subject's ad-hoc holds for that processor.
pub fn holds_for(
    wf: &WorkflowDef,
    processor: &str,
    category: crate::connectors::Category,
    received_at: Millis,
    adhoc: &[HoldRow],
) -> Vec<HoldSpan> {
    let mut spans = Vec::new();
    if let Some(rule) = wf.hold_for(processor, category) {
        let until = received_at
            .saturating_add(rule.duration.get().as_millis().min(i64::MAX as u128) as i64);
        spans.push(HoldSpan {
            basis: rule.basis.clone(),
            until: Some(until),
        });
    }
    spans.extend(holds_for_adhoc(processor, adhoc));
    spans
}

/// The ad-hoc holds alone (when the request's workflow is no longer configured).
pub fn holds_for_adhoc(processor: &str, adhoc: &[HoldRow]) -> Vec<HoldSpan> {
    adhoc
        .iter()
        .filter(|h| h.processor.as_deref().is_none_or(|p| p == processor))
        .map(|h| HoldSpan {
            basis: h.basis.clone(),
            until: h.until_at,
        })
        .collect()
}

/// The steps for a new request, or a message saying why there are none.
/// `fields`: a rectification's changed field names (empty otherwise).
pub fn plan(
    config: &Config,
    wf: &WorkflowDef,
    kind: RequestKind,
    now: Millis,
    adhoc: &[HoldRow],
    fields: &[String],
) -> Result<Vec<NewStep>, String> {
    let action = kind.action();
    let cooling = wf
        .cooling_off
        .map(|c| c.get().as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0);
    let mut steps = Vec::new();
    for p in &config.processors {
        let category = config.category(p);
        let Some(wave) = wf.wave_of(&p.name, category) else {
            continue;
        };
        // Holds defer erasure only: held data can still be exported to its subject.
        let gate = match kind {
            RequestKind::Erasure => hold_gate(&holds_for(wf, &p.name, category, now, adhoc), now),
            _ => HoldGate::Clear,
        };
        let (state, run_at, hold_basis, hold_until) = match gate {
            HoldGate::Held { basis, until } => {
                let until = until.unwrap_or(FOREVER_MS);
                (StepState::Held, until, Some(basis), Some(until))
            }
            HoldGate::Clear if kind == RequestKind::Erasure => {
                (StepState::Pending, now.saturating_add(cooling), None, None)
            }
            HoldGate::Clear => (StepState::Pending, now, None, None),
        };
        // An objection or rectification at a processor whose connector cannot
        // carry it out is done at once, `not_applicable`, with the reason.
        let not_applicable = match action {
            Action::Object | Action::Rectify => config
                .registry
                .get(&p.connector)
                .and_then(|d| d.not_applicable_reason(action, fields)),
            Action::Erase | Action::Export => None,
        };
        if let Some(reason) = not_applicable {
            steps.push(NewStep {
                processor: p.name.clone(),
                connector: p.connector.clone(),
                category: category.as_str().to_string(),
                action,
                wave: wave as i64,
                state: StepState::Done,
                run_at: now,
                hold_basis: None,
                hold_until: None,
                outcome: Some(Outcome::NotApplicable),
                note: Some(reason),
            });
            continue;
        }
        steps.push(NewStep {
            processor: p.name.clone(),
            connector: p.connector.clone(),
            category: category.as_str().to_string(),
            action,
            wave: wave as i64,
            state,
            run_at,
            hold_basis,
            hold_until,
            outcome: None,
            note: None,
        });
    }
    if steps.is_empty() {
        return Err(if config.processors.is_empty() {
            format!(
                "no processors are configured: add a [[processor]] to {}",
                config.path.display()
            )
        } else {
            "the workflow selects none of the configured processors".to_string()
        });
    }
    Ok(steps)
}
