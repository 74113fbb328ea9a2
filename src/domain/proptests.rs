//! Property tests of the saga: no event sequence escapes a terminal state, and
//! `completed` is never derived while a step is not `done`.

use super::request::{derive_status, RequestStatus};
use super::step::{StepEvent, StepState};
use proptest::prelude::*;

fn event() -> impl Strategy<Value = StepEvent> {
    prop::sample::select(StepEvent::ALL.to_vec())
}

fn state() -> impl Strategy<Value = StepState> {
    prop::sample::select(StepState::ALL.to_vec())
}

proptest! {
    #[test]
    fn no_event_sequence_leaves_a_terminal_state(events in prop::collection::vec(event(), 0..64)) {
        let mut s = StepState::Pending;
        let mut reached_terminal: Option<StepState> = None;
        for ev in events {
            if let Ok(next) = s.apply(ev) {
                if let Some(t) = reached_terminal {
                    prop_assert!(false, "left terminal state {t} via {ev:?} to {next}");
                }
                s = next;
                if s.is_terminal() {
                    reached_terminal = Some(s);
                }
            }
        }
    }

    #[test]
    fn completed_is_never_derived_while_a_step_is_not_done(
        steps in prop::collection::vec(state(), 1..12),
        cancelled in any::<bool>(),
    ) {
        let st = derive_status(cancelled, &steps);
        if st == RequestStatus::Completed {
            prop_assert!(steps.iter().all(|s| *s == StepState::Done));
        }
        if st == RequestStatus::CompletedWithExceptions {
            prop_assert!(steps.iter().all(|s| matches!(s, StepState::Done | StepState::Held)));
        }
        if steps.contains(&StepState::Failed) && !cancelled {
            prop_assert_eq!(st, RequestStatus::Failed);
        }
    }

    #[test]
    fn random_walks_through_the_saga_keep_request_status_honest(
        walks in prop::collection::vec(prop::collection::vec(event(), 0..24), 1..6)
    ) {
        let states: Vec<StepState> = walks.iter().map(|evs| {
            evs.iter().fold(StepState::Pending, |s, ev| s.apply(*ev).unwrap_or(s))
        }).collect();
        let st = derive_status(false, &states);
        prop_assert!(st != RequestStatus::Completed || states.iter().all(|s| *s == StepState::Done));
    }
}
