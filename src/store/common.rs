//! Row mapping, column lists and helpers shared by every concern's SQL and
//! both backends: the raw rows and their conversion (a value lethe does not
//! understand is [`StoreError::Corrupt`]), the claim's candidate query, the
//! pending audit event, and [`retrying`] for write transactions (run again
//! on 40P01/40001).
//!
//! The statements themselves live with their trait (`audit.rs`, `queue.rs`,
//! …), each stamped out per backend by its `*_sql_fns!` macro as the module
//! `<concern>_sql` of `sqlite.rs`/`postgres.rs`; the statements use `$N`
//! placeholders, which SQLite and PostgreSQL both accept, so each is written
//! once. Audit events are appended per chain by `audit_sql::append_events`
//! (see `audit.rs`).

use super::{EventRow, RequestRow, StepRow, StoreError};
use crate::domain::{Phase, RequestStatus};
use serde_json::Value;

pub(super) const REQ_COLS: &str =
    "id, kind, workflow, status, cancelled, received_at, due_at, completed_at, extended_reason, \
     external_id, subject_hash, subject_masked, identities, callback_url, updated_at, verified, follows, \
     deadline_warned_at";

pub(super) const STEP_COLS: &str = "id, request_id, processor, connector, category, action, wave, state, phase, outcome, \
     attempts, run_at, lease_owner, lease_expires_at, last_error, error_class, evidence, hold_basis, hold_until, \
     grace_until, started_at, finished_at, updated_at, lease_token, maybe_acted";

/// States a worker may claim once due.
pub(super) const CLAIMABLE: &str =
    "('pending','retry_wait','grace','held','awaiting_confirmation')";

/// A step is blocked while a step of a lower wave of its request is neither
/// done, held nor skipped (a failed one blocks until `lethe retry` or `lethe skip`).
pub(super) const NOT_BLOCKED: &str =
    "NOT EXISTS (SELECT 1 FROM steps d WHERE d.request_id = s.request_id \
     AND d.wave < s.wave AND d.state NOT IN ('done','held','skipped')) \
     AND NOT EXISTS (SELECT 1 FROM requests v WHERE v.id = s.request_id AND v.verified = 0)";

/// A suppression row from its columns.
pub(super) fn suppression_row(
    (hash, kind, request_id, masked, active, created_at): (
        String,
        String,
        String,
        String,
        i64,
        i64,
    ),
) -> super::SuppressionRow {
    super::SuppressionRow {
        hash,
        kind,
        request_id,
        masked,
        active: active != 0,
        created_at,
    }
}

/// The steps a claim may take, as CTEs ending in `due (id)`: due, not
/// blocked, and within their processor's cluster-wide limits — fewer than
/// `concurrency` steps of the processor running (the running step is the
/// slot) and, if rated, a whole token per step in its bucket. Processors
/// without a `processor_limits` row are not limited. `lock` ends the
/// candidate scan (`FOR UPDATE SKIP LOCKED` in PostgreSQL). Binds: `$4` the
/// claim's size, `$5` due by, `$6` how many candidates to look at.
///
/// The claim must run after the refill (`queue_sql::refill_sql`) in the same
/// transaction: that statement locks the limit rows, so no two claims count
/// the same free slot.
pub(super) fn claim_pick(lock: &str) -> String {
    format!(
        "WITH full_p AS (SELECT l.processor FROM processor_limits l WHERE \
         l.concurrency <= (SELECT COUNT(*) FROM steps x WHERE x.processor = l.processor AND x.state = 'running') \
         OR (l.rate_milli IS NOT NULL AND l.tokens < 1000000)), \
         cand AS (SELECT s.id, s.processor, s.run_at FROM steps s WHERE s.state IN {CLAIMABLE} AND s.run_at <= $5 \
         AND {NOT_BLOCKED} AND s.processor NOT IN (SELECT f.processor FROM full_p f) \
         ORDER BY s.run_at LIMIT $6 {lock}), \
         ranked AS (SELECT c.id, c.processor, c.run_at, \
         ROW_NUMBER() OVER (PARTITION BY c.processor ORDER BY c.run_at, c.id) AS rn FROM cand c), \
         due AS (SELECT r.id FROM ranked r LEFT JOIN processor_limits l ON l.processor = r.processor \
         WHERE l.processor IS NULL OR (r.rn + (SELECT COUNT(*) FROM steps x WHERE x.processor = r.processor AND x.state = 'running') <= l.concurrency \
         AND (l.rate_milli IS NULL OR r.rn * 1000000 <= l.tokens)) ORDER BY r.run_at, r.id LIMIT $4) "
    )
}

#[derive(sqlx::FromRow)]
pub(super) struct RawRequest {
    id: String,
    kind: String,
    workflow: String,
    status: String,
    cancelled: i64,
    received_at: i64,
    due_at: i64,
    completed_at: Option<i64>,
    extended_reason: Option<String>,
    external_id: Option<String>,
    subject_hash: String,
    subject_masked: String,
    identities: Option<Vec<u8>>,
    callback_url: Option<String>,
    updated_at: i64,
    verified: i64,
    follows: Option<String>,
    deadline_warned_at: Option<i64>,
}

fn corrupt(table: &'static str) -> impl Fn(String) -> StoreError {
    move |reason| StoreError::Corrupt { table, reason }
}

impl RawRequest {
    pub(super) fn into_row(self) -> Result<RequestRow, StoreError> {
        Ok(RequestRow {
            kind: self.kind.parse().map_err(corrupt("requests"))?,
            status: self.status.parse().map_err(corrupt("requests"))?,
            id: self.id,
            workflow: self.workflow,
            cancelled: self.cancelled != 0,
            received_at: self.received_at,
            due_at: self.due_at,
            completed_at: self.completed_at,
            extended_reason: self.extended_reason,
            external_id: self.external_id,
            subject_hash: self.subject_hash,
            subject_masked: self.subject_masked,
            identities: self.identities,
            callback_url: self.callback_url,
            updated_at: self.updated_at,
            verified: self.verified != 0,
            follows: self.follows,
            deadline_warned_at: self.deadline_warned_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawStep {
    id: i64,
    request_id: String,
    processor: String,
    connector: String,
    category: String,
    action: String,
    wave: i64,
    state: String,
    phase: String,
    outcome: Option<String>,
    attempts: i64,
    run_at: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    last_error: Option<String>,
    error_class: Option<String>,
    evidence: Option<String>,
    hold_basis: Option<String>,
    hold_until: Option<i64>,
    grace_until: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    lease_token: i64,
    maybe_acted: i64,
}

impl RawStep {
    pub(super) fn into_row(self) -> Result<StepRow, StoreError> {
        let c = corrupt("steps");
        Ok(StepRow {
            action: self.action.parse().map_err(&c)?,
            state: self.state.parse().map_err(&c)?,
            phase: self.phase.parse::<Phase>().map_err(&c)?,
            outcome: self.outcome.map(|o| o.parse()).transpose().map_err(&c)?,
            evidence: self
                .evidence
                .map(|e| serde_json::from_str::<Value>(&e))
                .transpose()
                .map_err(|e| c(e.to_string()))?,
            id: self.id,
            request_id: self.request_id,
            processor: self.processor,
            connector: self.connector,
            category: self.category,
            wave: self.wave,
            attempts: self.attempts,
            run_at: self.run_at,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            last_error: self.last_error,
            error_class: self.error_class,
            hold_basis: self.hold_basis,
            hold_until: self.hold_until,
            grace_until: self.grace_until,
            started_at: self.started_at,
            finished_at: self.finished_at,
            updated_at: self.updated_at,
            lease_token: self.lease_token,
            maybe_acted: self.maybe_acted != 0,
        })
    }
}

/// The columns of an event row, in [`RawEvent`]'s order.
pub(super) const EVENT_COLS: &str =
    "seq, chain, chain_seq, at, request_id, step_id, kind, detail, prev_hash, hash";

#[derive(sqlx::FromRow)]
pub(super) struct RawEvent {
    seq: i64,
    chain: Option<String>,
    chain_seq: Option<i64>,
    at: i64,
    request_id: Option<String>,
    step_id: Option<i64>,
    kind: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl RawEvent {
    pub(super) fn into_row(self) -> Result<EventRow, StoreError> {
        Ok(EventRow {
            detail: serde_json::from_str(&self.detail).map_err(|e| StoreError::Corrupt {
                table: "events",
                reason: e.to_string(),
            })?,
            seq: self.seq,
            // Every row has both since 0011 (older rows were set to `legacy`);
            // a row without them was written outside lethe and fails verification.
            chain: self.chain.unwrap_or_default(),
            chain_seq: self.chain_seq.unwrap_or(0),
            at: self.at,
            request_id: self.request_id,
            step_id: self.step_id,
            kind: self.kind,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The columns of a chain head, in [`ChainHead`](super::ChainHead)'s order
/// (`checkpointed` as 0/1 on both backends).
pub(super) const HEAD_COLS: &str =
    "chain, chain_seq, hash, event_seq, updated_at, CAST(CASE WHEN checkpointed THEN 1 ELSE 0 END AS BIGINT)";

pub(super) type RawHead = (String, i64, String, i64, i64, i64);

pub(super) fn head_row(
    (chain, chain_seq, hash, event_seq, updated_at, cp): RawHead,
) -> super::ChainHead {
    super::ChainHead {
        chain,
        chain_seq,
        hash,
        event_seq,
        updated_at,
        checkpointed: cp != 0,
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RawHold {
    id: String,
    subject_hash: String,
    subject_masked: String,
    basis: String,
    until_at: Option<i64>,
    processor: Option<String>,
    created_at: i64,
    released_at: Option<i64>,
}

impl RawHold {
    pub(super) fn into_row(self) -> super::HoldRow {
        super::HoldRow {
            id: self.id,
            subject_hash: self.subject_hash,
            subject_masked: self.subject_masked,
            basis: self.basis,
            until_at: self.until_at,
            processor: self.processor,
            created_at: self.created_at,
            released_at: self.released_at,
        }
    }
}

pub(super) const HOLD_COLS: &str =
    "id, subject_hash, subject_masked, basis, until_at, processor, created_at, released_at";

pub(super) const OUTBOX_COLS: &str =
    "id, request_id, url, protocol, event, status, created_at, attempts";

/// The oldest undelivered callback per (request, url) that is due: callbacks to
/// one destination go out in order.
pub(super) const OUTBOX_DUE: &str =
    "SELECT o.id FROM outbox o WHERE o.state = 'pending' AND o.run_at <= $1 \
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.request_id = o.request_id AND p.url = o.url \
     AND p.state = 'pending' AND p.id < o.id) ORDER BY o.id LIMIT $3";

#[derive(sqlx::FromRow)]
pub(super) struct RawOutbox {
    id: i64,
    request_id: String,
    url: String,
    protocol: String,
    event: String,
    status: String,
    created_at: i64,
    attempts: i64,
}

impl RawOutbox {
    pub(super) fn into_row(self) -> Result<super::OutboxRow, StoreError> {
        Ok(super::OutboxRow {
            status: self.status.parse().map_err(corrupt("outbox"))?,
            id: self.id,
            request_id: self.request_id,
            url: self.url,
            protocol: self.protocol,
            event: self.event,
            created_at: self.created_at,
            attempts: self.attempts,
        })
    }
}

/// An event waiting to be appended.
pub(super) struct PendingEvent {
    pub request_id: Option<String>,
    pub step_id: Option<i64>,
    pub kind: String,
    pub detail: Value,
}

/// The SHA-256 (hex) by which the audit chain refers to a piece of free text.
pub fn text_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub(super) fn closed(status: RequestStatus) -> bool {
    matches!(
        status,
        RequestStatus::Completed | RequestStatus::CompletedWithExceptions
    )
}

pub(super) fn data_key_row(
    (request_id, kid, wrapped, created_at, destroyed_at): (
        String,
        String,
        Option<Vec<u8>>,
        i64,
        Option<i64>,
    ),
) -> super::DataKeyRow {
    super::DataKeyRow {
        request_id,
        kid,
        wrapped,
        created_at,
        destroyed_at,
    }
}

/// Run a write transaction, again if the database aborted it to break a
/// deadlock (40P01) or a serialization failure (40001): up to 6 more times,
/// after a jittered exponential backoff from 5 ms (at most 200 ms). There is
/// no global lock to avoid them; row locks are taken in a fixed order
/// (requests by id, then chain heads by name), which makes them rare.
pub(super) async fn retrying<T, F, Fut>(f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    use backon::Retryable;
    f.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(5))
            .with_max_delay(std::time::Duration::from_millis(200))
            .with_max_times(6)
            .with_jitter(),
    )
    .when(StoreError::is_contended)
    .notify(|e, after| {
        RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %e, retry_in = ?after, "store transaction aborted by the database; retrying");
    })
    .await
}

/// Transactions run again after a deadlock or serialization failure, since start.
pub(super) static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
