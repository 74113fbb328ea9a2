//! The planner: a workflow and the configured processors become a request's steps.

use super::workflow::WorkflowDef;
use crate::config::Config;
use crate::domain::{Action, RequestKind, StepState};
use crate::store::{Millis, NewStep};

/// The steps for a new request, or a message saying why there are none.
pub fn plan(
    config: &Config,
    wf: &WorkflowDef,
    kind: RequestKind,
    now: Millis,
) -> Result<Vec<NewStep>, String> {
    let action = match kind {
        RequestKind::Erasure => Action::Erase,
        RequestKind::Export => Action::Export,
    };
    let mut steps = Vec::new();
    for p in &config.processors {
        let category = config.category(p);
        let Some(wave) = wf.wave_of(&p.name, category) else {
            continue;
        };
        let hold = match kind {
            // Holds defer erasure only: held data can still be exported to its subject.
            RequestKind::Erasure => wf.hold_for(&p.name, category),
            RequestKind::Export => None,
        };
        let (state, run_at, hold_basis, hold_until) = match hold {
            Some(h) => {
                let until =
                    now.saturating_add(h.duration.get().as_millis().min(i64::MAX as u128) as i64);
                (StepState::Held, until, Some(h.basis.clone()), Some(until))
            }
            None => (StepState::Pending, now, None, None),
        };
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
