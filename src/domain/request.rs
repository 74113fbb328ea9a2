//! Requests: kind, deadline, and the status derived from their steps.

use super::step::StepState;
use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What the subject asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Art. 17: erase the subject's data everywhere.
    Erasure,
    /// Art. 15/20: collect the subject's data from everywhere.
    Export,
    /// Art. 21: stop processing (unsubscribe everywhere) without deleting.
    Objection,
    /// Art. 16: correct the subject's data (new values sealed with the identities).
    Rectification,
}

impl RequestKind {
    /// Every kind.
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Erasure,
        RequestKind::Export,
        RequestKind::Objection,
        RequestKind::Rectification,
    ];
    /// The step action this kind plans at every processor.
    pub fn action(self) -> super::step::Action {
        use super::step::Action;
        match self {
            RequestKind::Erasure => Action::Erase,
            RequestKind::Export => Action::Export,
            RequestKind::Objection => Action::Object,
            RequestKind::Rectification => Action::Rectify,
        }
    }
    /// Stored / `--json` name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Erasure => "erasure",
            RequestKind::Export => "export",
            RequestKind::Objection => "objection",
            RequestKind::Rectification => "rectification",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "erasure" | "erase" => Ok(RequestKind::Erasure),
            "export" | "access" | "portability" => Ok(RequestKind::Export),
            "objection" | "object" => Ok(RequestKind::Objection),
            "rectification" | "rectify" => Ok(RequestKind::Rectification),
            _ => Err(format!(
                "unknown request kind `{s}` (expected `erasure`, `export`, `objection` or `rectification`)"
            )),
        }
    }
}

/// A request's status, derived from its steps (never stored independently of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Some step is runnable or running.
    InProgress,
    /// Nothing runnable now: only grace, held or awaiting_confirmation steps are left.
    Waiting,
    /// Every step is done.
    Completed,
    /// Every step is done, held or skipped (and not all done): the subject can
    /// be answered; held data is erased when the hold ends, skipped steps are
    /// shown as skipped by the operator with the reason.
    CompletedWithExceptions,
    /// Some step needs attention.
    Failed,
    /// The request was cancelled.
    Cancelled,
}

impl RequestStatus {
    /// All statuses.
    pub const ALL: [RequestStatus; 6] = [
        RequestStatus::InProgress,
        RequestStatus::Waiting,
        RequestStatus::Completed,
        RequestStatus::CompletedWithExceptions,
        RequestStatus::Failed,
        RequestStatus::Cancelled,
    ];
    /// Stored / `--json` name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::InProgress => "in_progress",
            RequestStatus::Waiting => "waiting",
            RequestStatus::Completed => "completed",
            RequestStatus::CompletedWithExceptions => "completed_with_exceptions",
            RequestStatus::Failed => "failed",
            RequestStatus::Cancelled => "cancelled",
        }
    }
    /// Whether the answer to the subject can go out.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            RequestStatus::Completed
                | RequestStatus::CompletedWithExceptions
                | RequestStatus::Cancelled
        )
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Derive a request's status from whether it was cancelled and its steps' states.
pub fn derive_status(cancelled: bool, steps: &[StepState]) -> RequestStatus {
    use StepState as S;
    if cancelled {
        return RequestStatus::Cancelled;
    }
    if steps.contains(&S::Failed) {
        return RequestStatus::Failed;
    }
    if steps.iter().all(|s| *s == S::Done) {
        return RequestStatus::Completed;
    }
    if steps
        .iter()
        .all(|s| matches!(s, S::Done | S::Held | S::Skipped))
    {
        return RequestStatus::CompletedWithExceptions;
    }
    if steps.iter().all(|s| {
        matches!(
            s,
            S::Done | S::Held | S::Grace | S::AwaitingConfirmation | S::Cancelled | S::Skipped
        )
    }) {
        return RequestStatus::Waiting;
    }
    RequestStatus::InProgress
}

/// The statutory deadline: one calendar month after receipt (Art. 12(3)).
pub fn due_date(received: DateTime<Utc>) -> DateTime<Utc> {
    received
        .checked_add_months(Months::new(1))
        .unwrap_or(received)
}

/// The one allowed extension: two further months (Art. 12(3)).
pub fn extended_due_date(due: DateTime<Utc>) -> DateTime<Utc> {
    due.checked_add_months(Months::new(2)).unwrap_or(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn due_is_one_calendar_month_after_receipt() {
        let r = Utc.with_ymd_and_hms(2026, 1, 31, 9, 0, 0).unwrap();
        // No 31 February: the last day of the month.
        assert_eq!(
            due_date(r),
            Utc.with_ymd_and_hms(2026, 2, 28, 9, 0, 0).unwrap()
        );
        let r = Utc.with_ymd_and_hms(2026, 5, 2, 9, 0, 0).unwrap();
        assert_eq!(
            due_date(r),
            Utc.with_ymd_and_hms(2026, 6, 2, 9, 0, 0).unwrap()
        );
    }

    #[test]
    fn status_examples() {
        use StepState as S;
        assert_eq!(
            derive_status(false, &[S::Done, S::Done]),
            RequestStatus::Completed
        );
        assert_eq!(
            derive_status(false, &[S::Done, S::Held]),
            RequestStatus::CompletedWithExceptions
        );
        assert_eq!(
            derive_status(false, &[S::Done, S::Grace]),
            RequestStatus::Waiting
        );
        assert_eq!(
            derive_status(false, &[S::Done, S::RetryWait]),
            RequestStatus::InProgress
        );
        assert_eq!(
            derive_status(false, &[S::Failed, S::Done]),
            RequestStatus::Failed
        );
        assert_eq!(derive_status(true, &[S::Done]), RequestStatus::Cancelled);
        assert_eq!(
            derive_status(false, &[S::Done, S::Skipped]),
            RequestStatus::CompletedWithExceptions
        );
        assert_eq!(
            derive_status(false, &[S::Skipped, S::Pending]),
            RequestStatus::InProgress
        );
    }
}
