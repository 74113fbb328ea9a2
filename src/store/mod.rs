//! The store: requests, steps and the audit chain, in SQLite or PostgreSQL.
//!
//! The store keeps rows and decides nothing: the engine computes every state
//! change with the pure saga in `domain` and hands the store a [`ChangeSet`],
//! which it applies in one transaction — compare-and-set on each step's
//! expected state (and lease owner), the request's derived status, and the
//! audit events, all or nothing. Audit events go to their own chain (one per
//! request, hold and processor) whose head ([`ChainHead`]) moves in the same
//! transaction; there is no global lock.
//!
//! The store is split by concern, one trait per file, each with its SQL:
//!
//! | trait | file | owns |
//! |---|---|---|
//! | [`SchemaStore`] | `schema.rs` | migrations, reachability |
//! | [`RequestStore`] | `requests.rs` | creating and reading requests, steps, free texts |
//! | [`QueueStore`] | `queue.rs` | claims, leases, change sets, limits, health, workers, timers |
//! | [`AuditStore`] | `audit.rs` | appending to and reading the hash chains |
//! | [`CheckpointStore`] | `checkpoints.rs` | the checkpointer's lease, signed checkpoints |
//! | [`HoldStore`] | `holds.rs` | legal holds |
//! | [`OutboxStore`] | `outbox.rs` | status callbacks (transactional outbox) |
//! | [`ReportStore`] | `reports.rs` | counts and period views (read only) |
//! | [`KeyStore`] | `keys.rs` | data keys, crypto-shredding, export retention |
//! | [`SweepStore`] | `sweep.rs` | retention sweeps |
//!
//! [`Store`] is all of them (a blanket impl), for callers holding one
//! `Arc<dyn Store>`. Each file's `*_sql_fns!` macro stamps out its statements
//! for one backend (`$N` placeholders work in both) as the module `<concern>_sql`
//! of `sqlite.rs` and `postgres.rs`, and its `impl_*_store!` macro implements
//! its trait; only claiming, locking and migrations differ per backend. All
//! SQL lives in this module.

//! ## Types on PostgreSQL
//!
//! Enumerated text columns carry CHECK constraints on PostgreSQL (0017); SQLite
//! cannot add them to existing tables, and a value lethe does not know is
//! read there as [`StoreError::Corrupt`]. JSON and times stay as they are, on
//! purpose:
//!
//! - `events.detail` stays TEXT, not `jsonb`: the hash covers the canonical
//!   serialisation of the parsed value, and a `jsonb` round trip can change
//!   it (`1e18`, a float `serde_json` writes in exponent form, comes back as
//!   the integer `1000000000000000000`), and `jsonb` refuses strings holding
//!   `\u0000` or a lone surrogate, which `serde_json` writes and TEXT keeps.
//!   The same refusal would make a step's result unwritable if a processor's
//!   answer held one, so `steps.evidence` and `sweep_items.evidence` stay
//!   TEXT too.
//! - Times stay BIGINT milliseconds on both backends: `timestamptz` would touch
//!   every statement with a time (binds, comparisons, `DB_NOW`, the claim's
//!   token arithmetic) and every row mapping, behind per-backend column
//!   expressions.

pub mod audit;
pub mod checkpoints;
mod common;
pub mod holds;
pub mod keys;
pub mod outbox;
pub mod postgres;
pub mod queue;
pub mod reports;
pub mod requests;
pub mod schema;
pub mod sqlite;
pub mod sweep;
mod tx;
pub use tx::WriteTx;

use crate::domain::{Action, Outcome, Phase, RequestKind, RequestStatus, StepState};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use std::sync::Arc;

pub use audit::AuditStore;
pub use checkpoints::{
    CheckpointDraft, CheckpointLeaf, CheckpointRow, CheckpointSigner, CheckpointStore,
    CheckpointWrite, LeafMismatch, CHECKPOINTER,
};
pub use holds::HoldStore;
pub use keys::KeyStore;
pub use outbox::OutboxStore;
pub use queue::QueueStore;
pub use reports::ReportStore;
pub use requests::RequestStore;
pub use schema::SchemaStore;
pub use sweep::SweepStore;

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

/// Steps that are not final, grouped (see [`QueueStore::waiting_summary`]).
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

/// The whole store: every focused part, for callers that hold one handle
/// (`Arc<dyn Store>`). Implemented for anything that implements all the parts;
/// a module that needs only one part names that trait.
pub trait Store:
    SchemaStore
    + RequestStore
    + QueueStore
    + AuditStore
    + CheckpointStore
    + HoldStore
    + OutboxStore
    + ReportStore
    + KeyStore
    + SweepStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: SchemaStore
        + RequestStore
        + QueueStore
        + AuditStore
        + CheckpointStore
        + HoldStore
        + OutboxStore
        + ReportStore
        + KeyStore
        + SweepStore
        + Send
        + Sync
{
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
