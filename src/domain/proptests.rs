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
            prop_assert!(steps.iter().all(|s| matches!(s, StepState::Done | StepState::Held | StepState::Skipped)));
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

use super::policy::{hold_gate, HoldGate, HoldSpan};

#[derive(Debug, Clone)]
enum Op {
    /// Time passes.
    Tick(i64),
    /// An ad-hoc hold is added, ending after `dur` (None = until released).
    AddHold(Option<i64>),
    /// The oldest open hold is released.
    Release,
    /// A worker claims the step and, if the gate is clear, calls erase.
    Work,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1i64..50).prop_map(Op::Tick),
        prop::option::of(1i64..100).prop_map(Op::AddHold),
        Just(Op::Release),
        Just(Op::Work),
    ]
}

proptest! {
    /// For random interleavings of holds, releases, time and worker runs, the
    /// worker's gate never lets an erase call through while any hold is active,
    /// and the step ends `done` only through an erase made while clear.
    #[test]
    fn a_held_step_never_receives_an_erase_call(ops in prop::collection::vec(op(), 1..60)) {
        let mut now = 0i64;
        let mut holds: Vec<(HoldSpan, bool)> = vec![]; // (span, released)
        let mut state = StepState::Pending;
        for o in ops {
            match o {
                Op::Tick(d) => now += d,
                Op::AddHold(dur) => holds.push((HoldSpan { basis: "litigation".into(), until: dur.map(|d| now + d) }, false)),
                Op::Release => {
                    if let Some(h) = holds.iter_mut().find(|(_, r)| !r) {
                        h.1 = true;
                    }
                }
                Op::Work => {
                    if !state.is_claimable() {
                        continue;
                    }
                    state = state.apply(StepEvent::Claim).unwrap();
                    let open: Vec<HoldSpan> = holds.iter().filter(|(_, r)| !r).map(|(h, _)| h.clone()).collect();
                    let truly_active = open.iter().any(|h| h.until.is_none_or(|u| now < u));
                    match hold_gate(&open, now) {
                        HoldGate::Clear => {
                            prop_assert!(!truly_active, "erase called at {now} under an active hold: {open:?}");
                            state = state.apply(StepEvent::Finished).unwrap();
                        }
                        HoldGate::Held { .. } => {
                            prop_assert!(truly_active);
                            state = state.apply(StepEvent::Hold).unwrap();
                        }
                    }
                }
            }
            let status = derive_status(false, &[state, StepState::Done]);
            prop_assert!(status != RequestStatus::Completed || state == StepState::Done);
        }
    }
}
