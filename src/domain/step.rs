//! The step saga: one processor's part of one request, as a pure state machine.
//!
//! The engine never writes a state directly: it asks [`StepState::apply`] for the
//! next state, so every rule about which transition is allowed lives here, in one
//! place, with no I/O, and is checked by unit and property tests. The store only
//! persists what this module decided.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a step is in its saga. See DESIGN.md, "The step saga".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Due at `run_at`.
    Pending,
    /// Leased by one worker until `lease_expires_at`.
    Running,
    /// A transient failure; runs again at `run_at`.
    RetryWait,
    /// The processor soft-deleted; the purge is verified at `run_at`.
    Grace,
    /// A legal hold defers the action until `run_at` (the hold's end).
    Held,
    /// A processor without API was given a task; waits for `lethe confirm`.
    AwaitingConfirmation,
    /// Finished, with an [`Outcome`].
    Done,
    /// Needs attention: a permanent error, or attempts exhausted.
    Failed,
    /// The request was cancelled before this step acted.
    Cancelled,
    /// A failed step the operator chose to give up on (`lethe skip`, with a
    /// reason): final, never shown as erased; the request can at best be
    /// `completed_with_exceptions`, and later phases go on.
    Skipped,
}

impl StepState {
    /// All states, for tests and metrics.
    pub const ALL: [StepState; 10] = [
        StepState::Pending,
        StepState::Running,
        StepState::RetryWait,
        StepState::Grace,
        StepState::Held,
        StepState::AwaitingConfirmation,
        StepState::Done,
        StepState::Failed,
        StepState::Cancelled,
        StepState::Skipped,
    ];

    /// The name used in the store, in `--json` output and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::RetryWait => "retry_wait",
            StepState::Grace => "grace",
            StepState::Held => "held",
            StepState::AwaitingConfirmation => "awaiting_confirmation",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
            StepState::Skipped => "skipped",
        }
    }

    /// Terminal states are never left.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::Cancelled | StepState::Skipped
        )
    }

    /// States a worker may claim once `run_at` has passed.
    pub fn is_claimable(self) -> bool {
        matches!(
            self,
            StepState::Pending
                | StepState::RetryWait
                | StepState::Grace
                | StepState::Held
                | StepState::AwaitingConfirmation
        )
    }

    /// The next state after `event`, or an error naming the refused transition.
    pub fn apply(self, event: StepEvent) -> Result<StepState, InvalidTransition> {
        use StepEvent as E;
        use StepState as S;
        let next = match (self, event) {
            (s, E::Claim) if s.is_claimable() => S::Running,
            (S::Running, E::LeaseExpired) => S::Pending,
            (S::Running, E::Finished) => S::Done,
            (S::Running, E::SoftDeleted) => S::Grace,
            (S::Running, E::Transient) => S::RetryWait,
            (S::Running, E::Permanent) => S::Failed,
            (S::Running, E::AwaitConfirmation) => S::AwaitingConfirmation,
            (S::Running | S::Pending | S::RetryWait, E::Hold) => S::Held,
            (S::Held, E::HoldEnded) => S::Pending,
            (S::AwaitingConfirmation | S::Running, E::Confirm) => S::Done,
            (S::Failed, E::Retry) => S::Pending,
            (S::Failed, E::Skip) => S::Skipped,
            (
                S::Pending | S::RetryWait | S::Held | S::AwaitingConfirmation | S::Failed,
                E::Cancel,
            ) => S::Cancelled,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown step state `{s}`"))
    }
}

/// Something that happens to a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepEvent {
    /// A worker leased the step.
    Claim,
    /// The worker's lease ran out before it wrote a result.
    LeaseExpired,
    /// The action finished with an outcome.
    Finished,
    /// The processor soft-deleted; a recovery window starts.
    SoftDeleted,
    /// A transient failure (network, 5xx, throttling).
    Transient,
    /// A permanent failure, or attempts exhausted.
    Permanent,
    /// A manual task was issued (or a reminder sent).
    AwaitConfirmation,
    /// A legal hold applies.
    Hold,
    /// The hold ended or was released.
    HoldEnded,
    /// `lethe confirm`.
    Confirm,
    /// `lethe retry`.
    Retry,
    /// `lethe cancel`.
    Cancel,
    /// `lethe skip`: the operator gives up on a failed step, with a reason.
    Skip,
}

impl StepEvent {
    /// Every event.
    pub const ALL: [StepEvent; 13] = [
        StepEvent::Claim,
        StepEvent::LeaseExpired,
        StepEvent::Finished,
        StepEvent::SoftDeleted,
        StepEvent::Transient,
        StepEvent::Permanent,
        StepEvent::AwaitConfirmation,
        StepEvent::Hold,
        StepEvent::HoldEnded,
        StepEvent::Confirm,
        StepEvent::Retry,
        StepEvent::Cancel,
        StepEvent::Skip,
    ];
}

/// A transition the saga does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a step in state `{from}` cannot take event {event:?}")]
pub struct InvalidTransition {
    /// The state the step was in.
    pub from: StepState,
    /// The refused event.
    pub event: StepEvent,
}

/// How a finished step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The processor deleted the data for good.
    Erased,
    /// A soft delete whose purge was verified after the recovery window.
    Purged,
    /// The processor holds nothing for this subject (or it was already erased).
    NotFound,
    /// The subject's data was collected.
    Exported,
    /// A person confirmed a manual processor did its part.
    Confirmed,
    /// Kept on purpose under a stated basis (e.g. an opt-out that must be honoured).
    Retained,
    /// The processor's answer showed the subject opted out (an objection, Art. 21).
    Objected,
    /// The processor's answer echoed every new value (a rectification, Art. 16).
    Rectified,
    /// The processor's connector has no action for this kind of request; the
    /// step's evidence note says why and what to do instead.
    NotApplicable,
}

impl Outcome {
    /// All outcomes.
    pub const ALL: [Outcome; 9] = [
        Outcome::Erased,
        Outcome::Purged,
        Outcome::NotFound,
        Outcome::Exported,
        Outcome::Confirmed,
        Outcome::Retained,
        Outcome::Objected,
        Outcome::Rectified,
        Outcome::NotApplicable,
    ];
    /// The stored / `--json` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Erased => "erased",
            Outcome::Purged => "purged",
            Outcome::NotFound => "not_found",
            Outcome::Exported => "exported",
            Outcome::Confirmed => "confirmed",
            Outcome::Retained => "retained",
            Outcome::Objected => "objected",
            Outcome::Rectified => "rectified",
            Outcome::NotApplicable => "not_applicable",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome `{s}`"))
    }
}

/// What a step does at its processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Erase the subject's data.
    Erase,
    /// Collect the subject's data.
    Export,
    /// Stop processing without deleting: unsubscribe, opt out (Art. 21).
    Object,
    /// Correct the subject's data to the request's new values (Art. 16).
    Rectify,
}

impl Action {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Erase => "erase",
            Action::Export => "export",
            Action::Object => "object",
            Action::Rectify => "rectify",
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "erase" => Ok(Action::Erase),
            "export" => Ok(Action::Export),
            "object" => Ok(Action::Object),
            "rectify" => Ok(Action::Rectify),
            _ => Err(format!("unknown action `{s}`")),
        }
    }
}

/// What the worker does when it next claims a step. Stored with the step, so a
/// verify that hits a transient error is retried as a verify, not as an erase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Carry out the action (erase or export), after checking holds.
    Act,
    /// A recovery window ended: check that the processor purged.
    Verify,
    /// A manual task is still open: send a reminder.
    Remind,
}

impl Phase {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Act => "act",
            Phase::Verify => "verify",
            Phase::Remind => "remind",
        }
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "act" => Ok(Phase::Act),
            "verify" => Ok(Phase::Verify),
            "remind" => Ok(Phase::Remind),
            _ => Err(format!("unknown phase `{s}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_step_that_succeeds_is_done() {
        let s = StepState::Pending.apply(StepEvent::Claim).unwrap();
        assert_eq!(s, StepState::Running);
        assert_eq!(s.apply(StepEvent::Finished).unwrap(), StepState::Done);
    }

    #[test]
    fn done_cancelled_and_skipped_refuse_every_event() {
        for st in [StepState::Done, StepState::Cancelled, StepState::Skipped] {
            for ev in StepEvent::ALL {
                assert!(st.apply(ev).is_err(), "{st} took {ev:?}");
            }
        }
    }

    #[test]
    fn a_running_step_cannot_be_cancelled_under_the_worker() {
        assert!(StepState::Running.apply(StepEvent::Cancel).is_err());
    }

    #[test]
    fn grace_is_verified_by_claiming_and_never_cancelled() {
        assert_eq!(
            StepState::Grace.apply(StepEvent::Claim).unwrap(),
            StepState::Running
        );
        assert!(StepState::Grace.apply(StepEvent::Cancel).is_err());
    }

    #[test]
    fn failed_goes_back_to_pending_on_retry() {
        assert_eq!(
            StepState::Failed.apply(StepEvent::Retry).unwrap(),
            StepState::Pending
        );
    }

    #[test]
    fn only_a_failed_step_can_be_skipped() {
        for st in StepState::ALL {
            let r = st.apply(StepEvent::Skip);
            if st == StepState::Failed {
                assert_eq!(r.unwrap(), StepState::Skipped);
            } else {
                assert!(r.is_err(), "{st} was skipped");
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for st in StepState::ALL {
            assert_eq!(st.as_str().parse::<StepState>().unwrap(), st);
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        }
    }
}
