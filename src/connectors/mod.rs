//! Connectors: the code and definitions that know one processor API each.
//!
//! A connector talks to one API and knows nothing of the saga: it answers
//! "erased", "not found", "soft-deleted", or an error already *classified* as
//! transient, throttled or permanent — the classification happens here, where
//! the HTTP response is seen, so that the engine only decides what to do next.

pub mod definition;
pub mod http;
pub mod lease;
pub mod manual;
pub mod redirect;
pub mod registry;
pub mod s3;
pub mod scrubber;
pub mod sweep;
pub mod template;

use crate::domain::Subject;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use definition::{Category, ConnectorDef, DefinitionError};
pub use registry::Registry;
pub use scrubber::{scrub, Scrubber};

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network trouble, a timeout, a 5xx: try again later.
    Transient,
    /// The processor asked us to slow down: try again later, without using up an attempt.
    Throttled,
    /// Retrying will not help (bad credentials, a refused request): a person must act.
    Permanent,
    /// The answer cannot be believed yet (a "not found" from a search whose
    /// index lags): ask again after `retry_after`. Not a processor failure.
    Recheck,
}

impl ErrorClass {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Recheck => "recheck",
        }
    }
}

/// A classified failure, with a message a person can act on. Never contains a raw identity.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    /// Transient, throttled or permanent.
    pub class: ErrorClass,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// The processor's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl ConnectorError {
    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        ConnectorError {
            class: ErrorClass::Permanent,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }
    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        ConnectorError {
            class: ErrorClass::Transient,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }
}

/// What the processor said, kept as evidence in the certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The HTTP status of the decisive call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The processor's reference id, when its response had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A remark (e.g. why something was retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Does the processor hold anything?
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Yes.
    Found(Evidence),
    /// No.
    NotFound(Evidence),
}

/// The result of an erase.
#[derive(Debug, Clone, PartialEq)]
pub enum Erase {
    /// Deleted for good.
    Erased(Evidence),
    /// Nothing there (or already erased).
    NotFound(Evidence),
    /// Moved to a trash or deletion queue; gone after `window`.
    SoftDeleted {
        /// What the processor said.
        evidence: Evidence,
        /// The recovery window.
        window: Duration,
    },
    /// Kept on purpose.
    Retained {
        /// What the processor said.
        evidence: Evidence,
        /// The basis.
        reason: String,
    },
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq)]
pub enum Export {
    /// The subject's data, as the processor returned it.
    Data {
        /// One JSON value per call, keyed by call name.
        data: serde_json::Value,
        /// What the processor said.
        evidence: Evidence,
    },
    /// Nothing held.
    NotFound(Evidence),
}

/// The result of a verify after a recovery window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verify {
    /// The processor no longer has the subject.
    Clean(Evidence),
    /// The data is still there.
    StillPresent(Evidence),
}

/// The result of an objection or a rectification at one processor.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// The processor's answer proved the change (the new status, the new values).
    Done(Evidence),
    /// The processor holds nothing for this subject.
    NotFound(Evidence),
}

/// What a connector call knows about the request it serves.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The subject.
    pub subject: &'a Subject,
    /// The request id.
    pub request_id: &'a str,
    /// Stable per step and action (`request:processor:action`), never per
    /// attempt, so a processor can deduplicate a retry after a takeover.
    pub idempotency_key: &'a str,
    /// This attempt's number (1 for the first call), 0 outside a worker.
    pub attempt: u32,
    /// A rectification's new values (`{{ set.email }}`…), only the fields
    /// this processor's `rectify` action can change; `None` otherwise.
    pub set: Option<&'a Subject>,
}

impl CallContext<'_> {
    /// The step's attempt number (1 for the first call); `None` outside a
    /// worker's attempt.
    pub fn attempt(&self) -> Option<u32> {
        (self.attempt > 0).then_some(self.attempt)
    }
}

/// One processor API.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The processor's name (from lethe.toml).
    fn processor(&self) -> &str;
    /// The category.
    fn category(&self) -> Category;
    /// The most calls to have in flight at once.
    fn concurrency(&self) -> u32;
    /// Whether a `purge` action exists for data a soft delete left behind.
    fn can_purge(&self) -> bool;
    /// The cheapest authenticated call: are we reachable and are credentials accepted?
    async fn check(&self) -> Result<Evidence, ConnectorError>;
    /// Does the processor hold anything for the subject?
    async fn lookup(&self, cx: CallContext<'_>) -> Result<Lookup, ConnectorError>;
    /// Collect the subject's data.
    async fn export(&self, cx: CallContext<'_>) -> Result<Export, ConnectorError>;
    /// Erase the subject.
    async fn erase(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError>;
    /// After a recovery window: is it gone?
    async fn verify(&self, cx: CallContext<'_>) -> Result<Verify, ConnectorError>;
    /// Permanently delete what a soft delete left.
    async fn purge(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError>;
    /// An objection (Art. 21): unsubscribe / opt out, without deleting.
    async fn object(&self, _cx: CallContext<'_>) -> Result<Changed, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "processor `{}`: its connector has no `object` action",
            self.processor()
        )))
    }
    /// A rectification (Art. 16): change the subject's data to `cx.set`.
    async fn rectify(&self, _cx: CallContext<'_>) -> Result<Changed, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "processor `{}`: its connector has no `rectify` action",
            self.processor()
        )))
    }
    /// Every identity the processor holds, as (kind, value) pairs, read page
    /// by page with the definition's `list` action; `None` when it has none.
    async fn list_identities(&self) -> Option<Result<Vec<(String, String)>, ConnectorError>> {
        None
    }
    /// A processor with no API, handled by a person: the engine sends tasks and
    /// waits for `lethe confirm` instead of calling erase/export.
    fn as_manual(&self) -> Option<&manual::ManualConnector> {
        None
    }
    /// Whether this processor can run a retention sweep.
    fn can_sweep(&self) -> bool {
        false
    }
    /// How many items one [`sweep_delete`](Connector::sweep_delete) takes at most.
    fn sweep_batch(&self) -> usize {
        100
    }
    /// A retention sweep, step 1: every item last modified before the cutoff
    /// (following every page).
    async fn sweep_list(
        &self,
        _q: &sweep::SweepQuery<'_>,
    ) -> Result<Vec<sweep::SweepCandidate>, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "processor `{}`: its connector has no retention sweep",
            self.processor()
        )))
    }
    /// A retention sweep, step 2: delete one batch (at most
    /// [`sweep_batch`](Connector::sweep_batch) items). Returns an outcome for
    /// each item the answer speaks about; an item it does not mention stays
    /// unconfirmed.
    async fn sweep_delete(
        &self,
        _q: &sweep::SweepQuery<'_>,
        _items: &[sweep::SweepCandidate],
    ) -> Result<Vec<sweep::SweepOutcome>, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "processor `{}`: its connector has no retention sweep",
            self.processor()
        )))
    }
}

/// The native connectors (`native = "…"` in a definition) implemented in code.
pub const NATIVE: [&str; 2] = ["s3", "manual"];

/// Check a processor's settings against what its native connector needs, at config load.
/// Returns the key (e.g. `settings.bucket`) and what is wrong.
pub fn validate_native(
    native: &str,
    base_url: &str,
    settings: &std::collections::BTreeMap<String, String>,
    secrets: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    match native {
        "s3" => s3::validate_settings(settings),
        "manual" => manual::validate_settings(base_url, settings, secrets),
        _ => Ok(()),
    }
}

/// What went wrong when a request could not be sent (never the URL: it may
/// carry an identity), for the transient error's message.
pub fn send_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_is_known_only_inside_a_workers_attempt() {
        let s = Subject::parse(Some("jane@example.com"), None, None, None).unwrap();
        let cx = |attempt| CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:erase",
            attempt,
            set: None,
        };
        assert_eq!(cx(1).attempt(), Some(1));
        assert_eq!(cx(12).attempt(), Some(12));
        assert_eq!(cx(0).attempt(), None);
    }

    #[test]
    fn scrub_masks_an_echoed_email_in_any_case() {
        let s =
            Subject::parse(Some("jane@example.com"), Some("+442079460958"), None, None).unwrap();
        let out = scrub(
            "JANE@example.com is already a member; sms +442079460958",
            &s,
        );
        assert!(!out.to_lowercase().contains("jane@"), "{out}");
        assert!(!out.contains("7946"), "{out}");
        assert!(out.contains("j***@example.com"));
    }
}
