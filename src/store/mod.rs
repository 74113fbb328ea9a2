//! The store: requests, steps and the audit chain, in SQLite or PostgreSQL.
//!
//! One [`Store`] trait, two backends. The store keeps rows and decides nothing:
//! the engine computes every state change with the pure saga in `domain` and
//! hands the store a [`ChangeSet`], which it applies in one transaction —
//! compare-and-set on each step's expected state (and lease owner), the
//! request's derived status, and the audit events, all or nothing. Audit
//! events go to their own chain (one per request, hold and processor) whose
//! head ([`ChainHead`]) moves in the same transaction; there is no global lock.
//!
//! All SQL lives in this module. Both backends share the statements in
//! `common.rs` (`$N` placeholders work in both); only claiming, locking and
//! migrations differ.

pub mod checkpoints;
mod common;
pub mod postgres;
pub mod sqlite;
pub mod sweep;

use crate::domain::{Action, Outcome, Phase, RequestKind, RequestStatus, StepState};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use std::sync::Arc;

pub use checkpoints::{
    CheckpointDraft, CheckpointLeaf, CheckpointRow, CheckpointSigner, CheckpointWrite,
    LeafMismatch, CHECKPOINTER,
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Convert a time to milliseconds.
pub fn ms(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

/// RFC 3339 with milliseconds, UTC: how every report, view and callback shows a time.
pub fn rfc3339(m: Millis) -> String {
    from_ms(m).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Convert milliseconds to a time.
pub fn from_ms(m: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(m).single().unwrap_or_default()
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (a message of ours, e.g. a bad URL).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database driver failed: the connection (refused, dropped, a
    /// failover, a pool timeout) or the statement (an SQLSTATE). The driver's
    /// error is kept as the source; [`StoreError::sqlstate`] exposes the code.
    #[error("{}", sql_summary(.source))]
    Sql {
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A row held a value lethe does not understand (a newer schema, or a hand edit).
    #[error("corrupt row in `{table}`: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A unique key already exists.
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(String),
    /// The database aborted the transaction to break a deadlock (SQLSTATE
    /// 40P01) or a serialization failure (40001); it is retried a few times
    /// before this reaches a caller.
    #[error("store contended: {0}")]
    Contended(String),
    /// A statement failed for a reason other than the database being
    /// unreachable (its message; the driver's error was logged where it happened).
    #[error("store error: {0}")]
    Failed(String),
}

/// SQLSTATE classes (and SQLite result codes) that mean "the database is not
/// there right now", as opposed to a statement it refused.
fn unavailable_code(code: &str) -> bool {
    // 08: connection exception; 57P: operator intervention (admin shutdown,
    // crash shutdown, cannot connect now); 53: insufficient resources;
    // 40001/40P01: serialization failure / deadlock (retry); 25006 read-only
    // transaction (a replica during failover). SQLite: 5 BUSY, 6 LOCKED, 10 IOERR.
    code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "25006" | "5" | "6" | "10" | "261" | "517"
        )
}

fn sql_summary(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(c) if unavailable_code(&c) => format!("store unavailable (SQLSTATE {c})"),
            Some(c) => format!("store error (SQLSTATE {c})"),
            None => "store error".into(),
        },
        _ => "store unavailable".into(),
    }
}

impl StoreError {
    /// The SQLSTATE (PostgreSQL) or result code (SQLite) of a database error.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            StoreError::Sql {
                source: sqlx::Error::Database(d),
            } => d.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// The database could not be reached or is failing over: try again later
    /// (exit code 3), as opposed to a statement it refused or a corrupt row.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Migrate(_) | StoreError::Contended(_) => true,
            StoreError::Sql { source } => match source {
                sqlx::Error::Database(d) => d.code().is_some_and(|c| unavailable_code(&c)),
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// Worth running the transaction again (deadlock or serialization failure).
    pub fn is_contended(&self) -> bool {
        matches!(self, StoreError::Contended(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Duplicate(d.message().to_string())
            }
            sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                StoreError::Contended(d.message().to_string())
            }
            _ => StoreError::Sql { source: e },
        }
    }
}

/// A processor's cluster-wide limits, as configured (`concurrency`,
/// `rate_per_second`). The store grants slots and tokens against them when it
/// claims steps.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// Processor name.
    pub processor: String,
    /// Calls in flight, cluster-wide.
    pub concurrency: u32,
    /// Calls per second, cluster-wide (a token bucket with a burst of `ceil(rate)`).
    pub rate_per_second: Option<f64>,
}

/// A processor's limit and the steps of it running now (its taken slots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitUsage {
    /// Processor name.
    pub processor: String,
    /// The cluster-wide concurrency limit.
    pub concurrency: i64,
    /// Steps running now, in every worker.
    pub running: i64,
}

/// A request to insert.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// UUID.
    pub id: String,
    /// Erasure or export.
    pub kind: RequestKind,
    /// Workflow name.
    pub workflow: String,
    /// Received.
    pub received_at: Millis,
    /// Due.
    pub due_at: Millis,
    /// The intake form's id, for idempotent webhooks.
    pub external_id: Option<String>,
    /// Keyed hash of the subject's matching key.
    pub subject_hash: String,
    /// Masked identities for display.
    pub subject_masked: String,
    /// Sealed identities.
    pub identities: Vec<u8>,
    /// Where status callbacks go.
    pub callback_url: Option<String>,
    /// The request's data key, wrapped by the master key (`None`: sealed
    /// directly under the master key, the format before envelope encryption).
    pub data_key: Option<WrappedKey>,
    /// A rectification's changed field NAMES (`email`, `name`…; never values),
    /// recorded in the `request.created` event. Empty otherwise.
    pub fields: Vec<String>,
    /// False: nothing runs at any processor until the request is verified.
    pub verified: bool,
    /// The erasure this one follows up (its subject re-appeared at a processor).
    pub follows: Option<String>,
    /// Keyed hashes of the identities, put on the suppression list (active
    /// once the erasure completes). Empty for exports.
    pub suppress: Vec<SuppressionEntry>,
}

/// One identity's keyed hash for the suppression list (never the identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionEntry {
    /// `email`, `phone` or `customer_id`.
    pub kind: String,
    /// HMAC of `kind:normalised value`, hex.
    pub hash: String,
    /// The masked identity, for people.
    pub masked: String,
}

/// A suppression-list row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionRow {
    /// HMAC of `kind:normalised value`, hex.
    pub hash: String,
    /// `email`, `phone` or `customer_id`.
    pub kind: String,
    /// The erasure that put it there.
    pub request_id: String,
    /// The masked identity.
    pub masked: String,
    /// In force (its erasure completed).
    pub active: bool,
    /// When written.
    pub created_at: Millis,
}

/// A data key wrapped (AEAD) by a master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Which master key wrapped it (a short keyed hash of that key).
    pub kid: String,
    /// Nonce and ciphertext.
    pub wrapped: Vec<u8>,
}

/// A stored data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRow {
    /// The request it seals (or a reserved name such as `lethe:subject-hash`).
    pub request_id: String,
    /// Which master key wrapped it.
    pub kid: String,
    /// The wrapped key; `None` once destroyed (crypto-shredding).
    pub wrapped: Option<Vec<u8>>,
    /// Created.
    pub created_at: Millis,
    /// Destroyed.
    pub destroyed_at: Option<Millis>,
}

/// Re-wrap one data key: applied only if it is still wrapped by `old_kid`.
#[derive(Debug, Clone)]
pub struct Rewrap {
    /// The data key's id.
    pub request_id: String,
    /// The master key it must still be wrapped by.
    pub old_kid: String,
    /// The new wrapping.
    pub key: WrappedKey,
}

/// A step to insert.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// Processor name.
    pub processor: String,
    /// Connector name.
    pub connector: String,
    /// Category name.
    pub category: String,
    /// Erase or export.
    pub action: Action,
    /// Ordering: a step runs after every step of a lower wave is done (or held).
    pub wave: i64,
    /// Initial state (pending, or held).
    pub state: StepState,
    /// When it is due.
    pub run_at: Millis,
    /// A hold's basis.
    pub hold_basis: Option<String>,
    /// A hold's end.
    pub hold_until: Option<Millis>,
    /// Set for a step that is final when planned (`done`, `not_applicable`).
    pub outcome: Option<crate::domain::Outcome>,
    /// Why (stored as the step's evidence note; never personal data).
    pub note: Option<String>,
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    /// UUID.
    pub id: String,
    /// Kind.
    pub kind: RequestKind,
    /// Workflow name.
    pub workflow: String,
    /// Derived status, as of the last change.
    pub status: RequestStatus,
    /// Cancelled by `lethe cancel`.
    pub cancelled: bool,
    /// Received.
    pub received_at: Millis,
    /// Due.
    pub due_at: Millis,
    /// When it first became completed (or completed with exceptions).
    pub completed_at: Option<Millis>,
    /// Reason of the one extension, if any.
    pub extended_reason: Option<String>,
    /// Intake form id.
    pub external_id: Option<String>,
    /// Keyed hash of the subject.
    pub subject_hash: String,
    /// Masked identities.
    pub subject_masked: String,
    /// Sealed identities (None once shredded).
    pub identities: Option<Vec<u8>>,
    /// Callback URL.
    pub callback_url: Option<String>,
    /// Last change.
    pub updated_at: Millis,
    /// False while the request waits for identity verification.
    pub verified: bool,
    /// The erasure this one follows up, if any.
    pub follows: Option<String>,
    /// When the daemon reported that the deadline is near (once).
    pub deadline_warned_at: Option<Millis>,
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    /// Id.
    pub id: i64,
    /// Request.
    pub request_id: String,
    /// Processor name.
    pub processor: String,
    /// Connector name.
    pub connector: String,
    /// Category.
    pub category: String,
    /// Action.
    pub action: Action,
    /// Wave.
    pub wave: i64,
    /// State.
    pub state: StepState,
    /// What to do when claimed.
    pub phase: Phase,
    /// Outcome once done.
    pub outcome: Option<Outcome>,
    /// Calls made (throttled ones excluded).
    pub attempts: i64,
    /// Due.
    pub run_at: Millis,
    /// Lease holder.
    pub lease_owner: Option<String>,
    /// Lease end.
    pub lease_expires_at: Option<Millis>,
    /// Last error message.
    pub last_error: Option<String>,
    /// Last error class.
    pub error_class: Option<String>,
    /// The processor's answer (status, reference).
    pub evidence: Option<Value>,
    /// Hold basis.
    pub hold_basis: Option<String>,
    /// Hold end.
    pub hold_until: Option<Millis>,
    /// End of the recovery window.
    pub grace_until: Option<Millis>,
    /// First claim.
    pub started_at: Option<Millis>,
    /// Reached done/failed/cancelled.
    pub finished_at: Option<Millis>,
    /// Last change.
    pub updated_at: Millis,
    /// The fencing token of the current (or last) lease: every claim takes a
    /// new one, and only its holder can write the step's result.
    pub lease_token: i64,
    /// An earlier attempt may have reached the processor (its lease expired
    /// mid-call, or it failed after the request was sent): a later "not found"
    /// then means the data is gone, not that the processor never held any.
    pub maybe_acted: bool,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Global order of appends (not covered by the hash, except in the legacy chain).
    pub seq: i64,
    /// The chain it belongs to (`request:<uuid>`, `hold:<id>`,
    /// `processor:<name>`, `system`, or `legacy` for rows written before 0011).
    pub chain: String,
    /// Position within its chain, from 1.
    pub chain_seq: i64,
    /// When.
    pub at: Millis,
    /// Request.
    pub request_id: Option<String>,
    /// Step.
    pub step_id: Option<i64>,
    /// Kind.
    pub kind: String,
    /// Details (never a raw identity).
    pub detail: Value,
    /// The hash of the previous event of the same chain.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The head of one audit chain, written in the same transaction as each append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain.
    pub chain: String,
    /// Position of its last event (= its number of events).
    pub chain_seq: i64,
    /// Hash of its last event.
    pub hash: String,
    /// Global `seq` of its last event.
    pub event_seq: i64,
    /// When it last changed.
    pub updated_at: Millis,
    /// Covered by a signed checkpoint since its last append.
    pub checkpointed: bool,
}

/// A step state change, applied only if the step is still as expected.
#[derive(Debug, Clone)]
pub struct StepChange {
    /// The step.
    pub step_id: i64,
    /// The state it must be in.
    pub from: StepState,
    /// If set, the lease token it must still have (fencing: results of a
    /// claimed step are written only while the claim that produced them holds).
    pub lease_token: Option<i64>,
    /// Record that this attempt may have reached the processor (sticky).
    pub maybe_acted: bool,
    /// The new state.
    pub to: StepState,
    /// What to do at the next claim.
    pub phase: Phase,
    /// The outcome (set when `to` is done).
    pub outcome: Option<Outcome>,
    /// Next due time.
    pub run_at: Millis,
    /// New attempt count, if it changes.
    pub attempts: Option<i64>,
    /// Error to record (None clears it).
    pub error: Option<(String, String)>,
    /// Evidence to record (None keeps the old).
    pub evidence: Option<Value>,
    /// Hold to record.
    pub hold: Option<(String, Millis)>,
    /// Recovery window end to record.
    pub grace_until: Option<Millis>,
    /// Mark finished now.
    pub finished: bool,
    /// The audit event kind.
    pub event: String,
    /// The audit event detail.
    pub detail: Value,
}

/// Changes to a request itself.
#[derive(Debug, Clone, Default)]
pub struct RequestPatch {
    /// Mark cancelled.
    pub cancelled: Option<bool>,
    /// A new due date, only if the request has not been extended yet.
    pub extend_to: Option<(Millis, String)>,
    /// Mark verified (or not); only if that changes it (else nothing is
    /// written and the result is `Applied::NoRequest`).
    pub verified: Option<bool>,
    /// Stamp `deadline_warned_at` (only if not stamped yet; else nothing is written).
    pub deadline_warned: bool,
    /// Extra one-off callbacks (url, event) queued in the outbox with this change.
    pub notify: Vec<(String, String)>,
}

/// Everything that changes together, in one transaction.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    /// The request.
    pub request_id: String,
    /// Now.
    pub now: Millis,
    /// Step changes.
    pub steps: Vec<StepChange>,
    /// Request changes.
    pub request: RequestPatch,
    /// Request-level events (kind, detail).
    pub events: Vec<(String, Value)>,
}

/// The result of applying a change set.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Written.
    Done {
        /// Status before.
        previous: RequestStatus,
        /// Status after.
        status: RequestStatus,
    },
    /// A step was not in the expected state (or lease): nothing was written.
    Conflict {
        /// The step that did not match.
        step_id: i64,
    },
    /// The request does not exist.
    NoRequest,
    /// The request was already extended once: nothing was written.
    AlreadyExtended,
}

/// Filters for listing requests.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this status.
    pub status: Option<RequestStatus>,
    /// Only requests due before this time and not closed.
    pub overdue_at: Option<Millis>,
    /// Received at or after.
    pub received_from: Option<Millis>,
    /// Received before.
    pub received_to: Option<Millis>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
    /// Only requests of this subject (keyed hash).
    pub subject_hash: Option<String>,
}

/// An ad-hoc legal hold on a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldRow {
    /// Id (UUID).
    pub id: String,
    /// Keyed hash of the subject's matching key.
    pub subject_hash: String,
    /// Masked identity, for lists.
    pub subject_masked: String,
    /// The legal basis.
    pub basis: String,
    /// End; None = until released.
    pub until_at: Option<Millis>,
    /// Only this processor; None = every processor.
    pub processor: Option<String>,
    /// Created.
    pub created_at: Millis,
    /// Released.
    pub released_at: Option<Millis>,
}

/// Steps that are not final, grouped (see [`Store::waiting_summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitGroup {
    /// Processor name.
    pub processor: String,
    /// Step state.
    pub state: StepState,
    /// The last error's class (`transient`, `throttled`, `paused`, `permanent`…).
    pub error_class: Option<String>,
    /// A step of an earlier phase of the same request is neither done, held nor skipped.
    pub blocked: bool,
    /// How many steps.
    pub count: i64,
    /// The earliest `run_at` among them.
    pub next_at: Millis,
}

/// A processor's recent health.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    /// Transient failures in a row.
    pub consecutive_failures: i64,
    /// Paused until, if paused.
    pub paused_until: Option<Millis>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The store (with its retention-sweep part, [`sweep::SweepStore`]).
#[async_trait]
pub trait Store: sweep::SweepStore + Send + Sync {
    /// Bring the schema up to date.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Is the database reachable?
    async fn ping(&self) -> Result<(), StoreError>;
    /// Insert a request with its steps and a `request.created` event.
    async fn create_request(
        &self,
        req: NewRequest,
        steps: Vec<NewStep>,
        now: Millis,
    ) -> Result<RequestRow, StoreError>;
    /// A request by id.
    async fn get_request(&self, id: &str) -> Result<Option<RequestRow>, StoreError>;
    /// A request by its intake form id.
    async fn find_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<RequestRow>, StoreError>;
    /// Requests, newest first.
    async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<RequestRow>, StoreError>;
    /// A request's steps, by wave then processor.
    async fn steps(&self, request_id: &str) -> Result<Vec<StepRow>, StoreError>;
    /// Lease up to `limit` steps due at `now` to `worker` for `lease_ms`,
    /// measured by the database's clock. Each claimed step gets a new lease
    /// token (fencing), returned in its row.
    async fn claim_due(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<StepRow>, StoreError> {
        self.claim_due_by(worker, now, now, lease_ms, limit).await
    }
    /// [`claim_due`](Store::claim_due), claiming only steps due at or before
    /// `due_by` (at most `now`): a bounded run (`run --until-idle`) does not
    /// take up steps that fell due after its end, so a processor answering
    /// `Retry-After: 0` forever cannot keep it going.
    async fn claim_due_by(
        &self,
        worker: &str,
        now: Millis,
        due_by: Millis,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<StepRow>, StoreError>;
    /// Every step that is not final (neither done, skipped nor cancelled),
    /// grouped by processor, state, error class and whether an earlier phase
    /// blocks it, with the count and the earliest `run_at` of each group.
    async fn waiting_summary(&self) -> Result<Vec<WaitGroup>, StoreError>;
    /// Return steps whose lease expired by the database's clock to `pending`,
    /// with an event each (`now` only stamps the event). An erase among them
    /// is marked `maybe_acted`: its call may have reached the processor.
    async fn release_expired_leases(&self, now: Millis) -> Result<u64, StoreError>;
    /// Extend a lease to the database's clock + `lease_ms`; false if the
    /// lease token is no longer the step's (another claim took it over).
    async fn heartbeat(
        &self,
        step_id: i64,
        lease_token: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Processor free text of a request's events, by SHA-256 (the chain holds
    /// the hash; the text is destroyed with the identities).
    async fn texts(&self, request_id: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The earliest `run_at` (or lease expiry) of anything claimable, if any.
    async fn next_wake(&self) -> Result<Option<Millis>, StoreError>;
    /// Apply a change set atomically.
    async fn apply(&self, changes: ChangeSet) -> Result<Applied, StoreError>;
    /// Audit events from `after_seq` (exclusive), at most `limit`.
    async fn events(&self, after_seq: i64, limit: i64) -> Result<Vec<EventRow>, StoreError>;
    /// A request's audit events (its own chain, and any legacy rows), by `seq`.
    async fn request_events(&self, request_id: &str) -> Result<Vec<EventRow>, StoreError>;
    /// Events of one chain with `chain_seq > after`, in chain order, at most `limit`.
    async fn chain_events(
        &self,
        chain: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// The head of one chain, if it has one.
    async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError>;
    /// Chain heads with names after `after`, by name, at most `limit`.
    async fn chain_heads(&self, after: &str, limit: i64) -> Result<Vec<ChainHead>, StoreError>;
    /// Events in chain order — by `(chain, chain_seq)`, after the position
    /// `after` — at most `limit`: one pass over every chain for `audit verify`.
    async fn events_in_chain_order(
        &self,
        after: (&str, i64),
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// Events without a chain or position (written outside lethe), by `seq`, at most `limit`.
    async fn unchained_events(&self, limit: i64) -> Result<Vec<EventRow>, StoreError>;
    /// Counts of steps by (processor, state), for metrics and reports.
    async fn step_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Record an ad-hoc hold, with a `hold.added` event.
    async fn add_hold(&self, hold: HoldRow) -> Result<(), StoreError>;
    /// Release a hold; returns it (None if unknown or already released), with a `hold.released` event.
    async fn release_hold(&self, id: &str, now: Millis) -> Result<Option<HoldRow>, StoreError>;
    /// Holds, newest first; released ones too if asked.
    async fn list_holds(&self, include_released: bool) -> Result<Vec<HoldRow>, StoreError>;
    /// Holds on a subject that are in force at `now`.
    async fn active_holds(
        &self,
        subject_hash: &str,
        now: Millis,
    ) -> Result<Vec<HoldRow>, StoreError>;
    /// Make a subject's held steps due now, so a worker re-checks their holds.
    async fn wake_held_steps(&self, subject_hash: &str, now: Millis) -> Result<u64, StoreError>;
    /// A processor's health.
    async fn health(&self, processor: &str) -> Result<Health, StoreError>;
    /// Record a call's result: success resets; a failure counts, and after
    /// `pause_after` failures in a row the processor is paused until `now + pause_ms`
    /// (with a `processor.paused` event). Returns the new health.
    async fn record_call(
        &self,
        processor: &str,
        failure: Option<&str>,
        now: Millis,
        pause_after: i64,
        pause_ms: i64,
    ) -> Result<Health, StoreError>;
    /// Register or refresh a live worker; returns how many workers heart-beat
    /// at or after `live_since` (this one included).
    async fn worker_heartbeat(
        &self,
        worker: &str,
        now: Millis,
        live_since: Millis,
    ) -> Result<i64, StoreError>;
    /// Remove a worker that stops cleanly.
    async fn worker_gone(&self, worker: &str) -> Result<(), StoreError>;
    /// Insert a request, its steps, its status-callback destinations and a
    /// `created` callback to each, in one transaction.
    async fn create_request_with_callbacks(
        &self,
        req: NewRequest,
        steps: Vec<NewStep>,
        callbacks: Vec<Callback>,
        now: Millis,
    ) -> Result<RequestRow, StoreError>;
    /// Lease up to `limit` due callbacks (the oldest undelivered one per
    /// destination) until `visible_at`, counting an attempt each.
    async fn claim_outbox(
        &self,
        now: Millis,
        visible_at: Millis,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// A callback was delivered.
    async fn outbox_delivered(&self, id: i64, now: Millis) -> Result<(), StoreError>;
    /// A delivery failed: try again at `retry_at`, or give up (`None`).
    async fn outbox_failed(
        &self,
        id: i64,
        retry_at: Option<Millis>,
        error: &str,
    ) -> Result<(), StoreError>;
    /// The earliest `run_at` of an undelivered callback.
    async fn next_outbox_wake(&self) -> Result<Option<Millis>, StoreError>;
    /// Requests by status.
    async fn request_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Attempts made, summed per processor.
    async fn attempt_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Callbacks by outbox state (`pending`, `delivered`, `dead`).
    async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Steps of the requests received in `[from, to)`, by processor (period reports).
    async fn steps_received_between(
        &self,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<StepRow>, StoreError>;
    /// Crypto-shredding: set the sealed identities of every closed request to
    /// NULL, and destroy its wrapped data key, once no step can still need them (nothing held, in grace, awaiting
    /// confirmation or runnable) and it last changed at least `retention_ms`
    /// before `now`. Writes a `request.identities_destroyed` event for each and
    /// returns their ids. The keyed hash and the masked form remain.
    async fn shred_identities(
        &self,
        now: Millis,
        retention_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// A data key (also a destroyed one), by request id or reserved name.
    async fn data_key(&self, request_id: &str) -> Result<Option<DataKeyRow>, StoreError>;
    /// Insert a data key unless one exists under that id; returns the stored one.
    async fn put_data_key_if_absent(
        &self,
        request_id: &str,
        key: WrappedKey,
        now: Millis,
    ) -> Result<DataKeyRow, StoreError>;
    /// Live (not destroyed) data keys not wrapped by `kid`, ordered by id,
    /// with ids after `after`, at most `limit`.
    async fn data_keys_not_under(
        &self,
        kid: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<DataKeyRow>, StoreError>;
    /// Re-wrap data keys in one transaction; each only if it is still wrapped
    /// by its `old_kid` and not destroyed. Returns how many were re-wrapped.
    async fn rewrap_data_keys(&self, batch: Vec<Rewrap>) -> Result<u64, StoreError>;
    /// Requests whose live identities are sealed directly under a master key
    /// (no data key): (id, sealed), ids after `after`, at most `limit`.
    async fn legacy_identities(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Move a legacy request onto a data key: replace its sealed identities
    /// (only if they are still `old_sealed`) and insert its data key, in one
    /// transaction. False if the row changed meanwhile (shredded, or done).
    async fn upgrade_identities(
        &self,
        request_id: &str,
        old_sealed: &[u8],
        new_sealed: &[u8],
        key: WrappedKey,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Closed export requests whose export files are due for deletion: closed
    /// (completed, or cancelled) at or before `now - retention_ms`, and no
    /// `request.exports_deleted` event yet.
    async fn exports_due_for_deletion(
        &self,
        now: Millis,
        retention_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Apply several change sets in one transaction (group commit): each is
    /// all-or-nothing on its own (a savepoint), and the batch commits once.
    /// A change set that fails (a constraint, a bad value) fails only itself;
    /// the outer error is for the batch (the connection, the commit).
    async fn apply_batch(
        &self,
        batch: Vec<ChangeSet>,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError>;
    /// Record the processors' cluster-wide limits (from the config; the last
    /// writer wins). Claims grant slots and tokens against them.
    async fn set_limits(&self, limits: &[LimitSpec]) -> Result<(), StoreError>;
    /// Every limited processor with its limit and its running steps.
    async fn limit_usage(&self) -> Result<Vec<LimitUsage>, StoreError>;
    /// Active suppression rows whose hash is one of `hashes`.
    async fn suppressed(&self, hashes: &[String]) -> Result<Vec<SuppressionRow>, StoreError>;
    /// The whole suppression list (active and pending), newest first.
    async fn suppression_list(&self) -> Result<Vec<SuppressionRow>, StoreError>;
    /// Requests that follow up `request_id`, newest first.
    async fn follow_ups(&self, request_id: &str) -> Result<Vec<RequestRow>, StoreError>;
    /// Open requests due at or before `by` that have not been reported as near their deadline.
    async fn deadline_unwarned(&self, by: Millis) -> Result<Vec<RequestRow>, StoreError>;
    /// Open requests due in `[from, to)`.
    async fn count_due_between(&self, from: Millis, to: Millis) -> Result<i64, StoreError>;
    /// A durable schedule: true (and the next run set to `next`) if `name`
    /// is due at `now` or has never run; false otherwise. One caller wins.
    async fn take_schedule(
        &self,
        name: &str,
        now: Millis,
        next: Millis,
    ) -> Result<bool, StoreError>;

    /// Take or renew the leader lease `name` for `ttl_ms` (database clock):
    /// true if `holder` now holds it (it held it, or the lease had expired).
    async fn take_leader_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Give up the lease `name` if `holder` holds it.
    async fn drop_leader_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// In one transaction, if `holder` holds the live [`CHECKPOINTER`] lease:
    /// take at most `batch` chain heads not yet checkpointed, have `sign`
    /// turn them into the next checkpoint, write it with its leaves, and mark
    /// exactly the heads still at those positions as checkpointed.
    async fn write_checkpoint(
        &self,
        holder: &str,
        batch: i64,
        sign: CheckpointSigner<'_>,
    ) -> Result<CheckpointWrite, StoreError>;
    /// Checkpoints with id above `after`, by id, at most `limit`.
    async fn checkpoints(&self, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, StoreError>;
    /// The leaves of checkpoints `from_id..=to_id`, by checkpoint then chain.
    async fn checkpoint_leaves(
        &self,
        from_id: i64,
        to_id: i64,
    ) -> Result<Vec<(i64, CheckpointLeaf)>, StoreError>;
    /// The first checkpoint covering position `chain_seq` of `chain`.
    async fn checkpoint_covering(
        &self,
        chain: &str,
        chain_seq: i64,
    ) -> Result<Option<CheckpointRow>, StoreError>;
    /// How many leaves all checkpoints hold, and (at most `limit`) those
    /// whose event is gone or has another hash now.
    async fn checkpoint_leaf_mismatches(
        &self,
        limit: i64,
    ) -> Result<(i64, Vec<LeafMismatch>), StoreError>;
}

/// A status-callback destination of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Where to POST.
    pub url: String,
    /// The body format: `lethe` (our API) or `opendsr`.
    pub protocol: String,
}

/// One queued status callback (the transactional outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Id (delivery order per destination).
    pub id: i64,
    /// The request.
    pub request_id: String,
    /// Destination.
    pub url: String,
    /// `lethe` or `opendsr`.
    pub protocol: String,
    /// `created`, `started` (first step claimed) or `status` (derived status changed).
    pub event: String,
    /// The request's derived status when the row was written.
    pub status: RequestStatus,
    /// When the row was written.
    pub created_at: Millis,
    /// Delivery attempts so far, this one included.
    pub attempts: i64,
}

/// How many write transactions this process ran again after the database
/// aborted them (deadlock 40P01, serialization failure 40001), since start.
pub fn contended_retries() -> u64 {
    common::RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Open the store named by a URL: `sqlite://FILE` (created if missing) or `postgres://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    }
}
