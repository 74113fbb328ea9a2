//! SQL and row mapping shared by both backends.
//!
//! The statements use `$N` placeholders, which SQLite and PostgreSQL both
//! accept, so each is written once. The `shared_store_fns!` macro stamps out the
//! functions for a concrete connection type; the backends add what differs
//! (claiming, transaction start, migrations).
//!
//! Audit events are appended per chain (`domain::event::chain_of`): the
//! chain's `chain_heads` row is created or locked (`INSERT … ON CONFLICT DO
//! UPDATE … RETURNING`), the events are numbered from its position and hashed
//! from its hash, and the head is moved in the same transaction (with
//! `checkpointed` cleared). Chains of one append are locked in name order;
//! write transactions are retried on 40P01/40001 ([`retrying`]).

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
/// The claim must run after [`refill`](shared_store_fns) in the same
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

/// Stamp out the shared store functions for one backend.
///
/// `$conn` is the connection type, `$pool` the pool type, `$dbnow` the SQL
/// expression for the database's clock in milliseconds (leases are stamped
/// and expired by it, never by a worker's clock).
macro_rules! shared_store_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::domain::event::{chain_of, event_hash, ChainedEvent, GENESIS_HASH};
        use $crate::domain::{derive_status, RequestStatus, StepState};
        use $crate::store::common::{closed, PendingEvent, RawEvent, RawRequest, RawStep, REQ_COLS, STEP_COLS};
        use $crate::store::{Applied, ChangeSet, EventRow, NewRequest, NewStep, RequestFilter, RequestRow, StepRow, StoreError};

        pub(super) async fn append_events(conn: &mut $conn, now: i64, events: Vec<PendingEvent>) -> Result<(), StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            // Processor free text stays outside the chain: the event keeps the
            // text's SHA-256, the text goes to `texts`, destroyed with the identities.
            let mut events = events;
            for ev in events.iter_mut() {
                let Some(obj) = ev.detail.as_object_mut() else { continue };
                let Some(serde_json::Value::String(text)) = obj.remove("error") else { continue };
                let hash = $crate::store::common::text_hash(&text);
                obj.insert("error_sha256".into(), serde_json::Value::String(hash.clone()));
                if let Some(req) = &ev.request_id {
                    sqlx::query("INSERT INTO texts (hash, request_id, body, at) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING")
                        .bind(&hash)
                        .bind(req)
                        .bind(&text)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            // One chain per request, hold and processor: group the events, and
            // lock the chains' heads in name order (a fixed lock order, so two
            // writers touching the same chains cannot deadlock on them).
            let mut chains: std::collections::BTreeMap<String, Vec<PendingEvent>> = std::collections::BTreeMap::new();
            for ev in events {
                chains.entry(chain_of(ev.request_id.as_deref(), &ev.kind, &ev.detail)).or_default().push(ev);
            }
            for (chain, evs) in chains {
                // Creates the head on a chain's first append, or locks the
                // existing one (PostgreSQL: a concurrent appender to this chain
                // waits here and then reads the head this one commits).
                let (mut chain_seq, mut prev): (i64, String) = sqlx::query_as(
                    "INSERT INTO chain_heads (chain, chain_seq, hash, event_seq, updated_at, checkpointed) \
                     VALUES ($1, 0, $2, 0, $3, FALSE) \
                     ON CONFLICT (chain) DO UPDATE SET updated_at = chain_heads.updated_at RETURNING chain_seq, hash",
                )
                .bind(&chain)
                .bind(GENESIS_HASH)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                let mut event_seq = 0;
                for ev in evs {
                    chain_seq += 1;
                    let hash = event_hash(
                        &prev,
                        &ChainedEvent {
                            chain: &chain,
                            chain_seq,
                            at_ms: now,
                            request_id: ev.request_id.as_deref(),
                            step_id: ev.step_id,
                            kind: &ev.kind,
                            detail: &ev.detail,
                        },
                    );
                    let (seq,): (i64,) = sqlx::query_as(
                        "INSERT INTO events (chain, chain_seq, at, request_id, step_id, kind, detail, prev_hash, hash) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq",
                    )
                    .bind(&chain)
                    .bind(chain_seq)
                    .bind(now)
                    .bind(&ev.request_id)
                    .bind(ev.step_id)
                    .bind(&ev.kind)
                    .bind(ev.detail.to_string())
                    .bind(&prev)
                    .bind(&hash)
                    .fetch_one(&mut *conn)
                    .await?;
                    event_seq = seq;
                    prev = hash;
                }
                sqlx::query(
                    "UPDATE chain_heads SET chain_seq = $1, hash = $2, event_seq = $3, updated_at = $4, checkpointed = FALSE \
                     WHERE chain = $5",
                )
                .bind(chain_seq)
                .bind(&prev)
                .bind(event_seq)
                .bind(now)
                .bind(&chain)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn insert_request(
            conn: &mut $conn,
            req: &NewRequest,
            steps: &[NewStep],
            now: i64,
        ) -> Result<(), StoreError> {
            let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
            let status = derive_status(false, &states);
            sqlx::query(
                "INSERT INTO requests (id, kind, workflow, status, cancelled, received_at, due_at, completed_at, \
                 extended_reason, external_id, subject_hash, subject_masked, identities, callback_url, updated_at, \
                 verified, follows) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&req.id)
            .bind(req.kind.as_str())
            .bind(&req.workflow)
            .bind(status.as_str())
            .bind(req.received_at)
            .bind(req.due_at)
            .bind(if closed(status) { Some(now) } else { None })
            .bind(&req.external_id)
            .bind(&req.subject_hash)
            .bind(&req.subject_masked)
            .bind(&req.identities)
            .bind(&req.callback_url)
            .bind(now)
            .bind(req.verified as i64)
            .bind(&req.follows)
            .execute(&mut *conn)
            .await?;
            for e in &req.suppress {
                sqlx::query(
                    "INSERT INTO suppression (hash, kind, request_id, masked, active, created_at) \
                     VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (hash, request_id) DO NOTHING",
                )
                .bind(&e.hash)
                .bind(&e.kind)
                .bind(&req.id)
                .bind(&e.masked)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            if let Some(k) = &req.data_key {
                sqlx::query("INSERT INTO data_keys (request_id, kid, wrapped, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&req.id)
                    .bind(&k.kid)
                    .bind(&k.wrapped)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
            }
            for s in steps {
                sqlx::query(
                    "INSERT INTO steps (request_id, processor, connector, category, action, wave, state, phase, attempts, \
                     run_at, hold_basis, hold_until, updated_at, outcome, evidence, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'act', 0, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&req.id)
                .bind(&s.processor)
                .bind(&s.connector)
                .bind(&s.category)
                .bind(s.action.as_str())
                .bind(s.wave)
                .bind(s.state.as_str())
                .bind(s.run_at)
                .bind(&s.hold_basis)
                .bind(s.hold_until)
                .bind(now)
                .bind(s.outcome.map(|o| o.as_str()))
                .bind(s.note.as_ref().map(|n| serde_json::json!({"note": n}).to_string()))
                .bind(s.outcome.map(|_| now))
                .execute(&mut *conn)
                .await?;
            }
            let detail = serde_json::json!({
                "kind": req.kind.as_str(),
                "workflow": req.workflow,
                "subject": req.subject_masked,
                "due_at": req.due_at,
                "external_id": req.external_id,
                "verified": req.verified,
                "follows": req.follows,
                "steps": steps.iter().map(|s| {
                    let mut d = serde_json::json!({
                        "processor": s.processor,
                        "action": s.action.as_str(),
                        "state": s.state.as_str(),
                        "hold_basis": s.hold_basis,
                        "hold_until": s.hold_until,
                    });
                    if let (Some(o), serde_json::Value::Object(m)) = (s.outcome, &mut d) {
                        m.insert("outcome".into(), o.as_str().into());
                        m.insert("reason".into(), s.note.clone().into());
                    }
                    d
                }).collect::<Vec<_>>(),
            });
            let mut detail = detail;
            if let (false, serde_json::Value::Object(m)) = (req.fields.is_empty(), &mut detail) {
                m.insert("fields".into(), req.fields.clone().into());
            }
            append_events(
                conn,
                now,
                vec![PendingEvent { request_id: Some(req.id.clone()), step_id: None, kind: "request.created".into(), detail }],
            )
            .await
        }

        pub(super) async fn get_request(pool: &$pool, id: &str) -> Result<Option<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE id = $1");
            let raw: Option<RawRequest> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
            raw.map(RawRequest::into_row).transpose()
        }

        pub(super) async fn find_by_external_id(pool: &$pool, ext: &str) -> Result<Option<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE external_id = $1");
            let raw: Option<RawRequest> = sqlx::query_as(&sql).bind(ext).fetch_optional(pool).await?;
            raw.map(RawRequest::into_row).transpose()
        }

        pub(super) async fn list_requests(pool: &$pool, f: &RequestFilter) -> Result<Vec<RequestRow>, StoreError> {
            let sql = format!(
                "SELECT {REQ_COLS} FROM requests WHERE ($1 IS NULL OR status = $1) \
                 AND ($2 IS NULL OR (due_at < $2 AND status NOT IN ('completed','completed_with_exceptions','cancelled'))) \
                 AND ($3 IS NULL OR received_at >= $3) AND ($4 IS NULL OR received_at < $4) \
                 AND ($6 IS NULL OR subject_hash = $6) \
                 ORDER BY received_at DESC, id LIMIT $5"
            );
            let raw: Vec<RawRequest> = sqlx::query_as(&sql)
                .bind(f.status.map(|s| s.as_str()))
                .bind(f.overdue_at)
                .bind(f.received_from)
                .bind(f.received_to)
                .bind(f.limit.unwrap_or(i64::MAX))
                .bind(&f.subject_hash)
                .fetch_all(pool)
                .await?;
            raw.into_iter().map(RawRequest::into_row).collect()
        }

        pub(super) async fn steps(pool: &$pool, request_id: &str) -> Result<Vec<StepRow>, StoreError> {
            let sql = format!("SELECT {STEP_COLS} FROM steps WHERE request_id = $1 ORDER BY wave, processor");
            let raw: Vec<RawStep> = sqlx::query_as(&sql).bind(request_id).fetch_all(pool).await?;
            raw.into_iter().map(RawStep::into_row).collect()
        }

        /// Lock every processor's limit row (in name order, so two claims
        /// cannot deadlock) and refill the rated ones' buckets by the
        /// database's clock. Returns the rated processors.
        pub(super) async fn refill(conn: &mut $conn) -> Result<Vec<String>, StoreError> {
            let now = $dbnow;
            let sql = format!(
                "UPDATE processor_limits SET tokens = CASE WHEN rate_milli IS NULL THEN tokens \
                 WHEN {now} <= refilled_at THEN tokens \
                 WHEN tokens + ({now} - refilled_at) * rate_milli >= burst * 1000000 THEN burst * 1000000 \
                 ELSE tokens + ({now} - refilled_at) * rate_milli END, \
                 refilled_at = CASE WHEN {now} > refilled_at THEN {now} ELSE refilled_at END \
                 WHERE {} RETURNING processor, rate_milli",
                super::LIMITS_LOCK
            );
            let rows: Vec<(String, Option<i64>)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
            Ok(rows.into_iter().filter(|(_, r)| r.is_some()).map(|(p, _)| p).collect())
        }

        /// Take one token per claimed step of a rated processor.
        pub(super) async fn spend_tokens(conn: &mut $conn, rated: &[String], claimed: &[StepRow]) -> Result<(), StoreError> {
            for p in rated {
                let n = claimed.iter().filter(|s| &s.processor == p).count() as i64;
                if n > 0 {
                    sqlx::query("UPDATE processor_limits SET tokens = tokens - $1 WHERE processor = $2")
                        .bind(n * 1_000_000)
                        .bind(p)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Ok(())
        }

        pub(super) async fn set_limits(pool: &$pool, limits: &[$crate::store::LimitSpec]) -> Result<(), StoreError> {
            let mut sorted: Vec<&$crate::store::LimitSpec> = limits.iter().collect();
            sorted.sort_by(|a, b| a.processor.cmp(&b.processor));
            let sql = format!(
                "INSERT INTO processor_limits (processor, concurrency, rate_milli, burst, tokens, refilled_at) \
                 VALUES ($1, $2, $3, $4, $5, {}) ON CONFLICT (processor) DO UPDATE SET \
                 concurrency = excluded.concurrency, rate_milli = excluded.rate_milli, burst = excluded.burst, \
                 tokens = CASE WHEN processor_limits.tokens > excluded.tokens THEN excluded.tokens ELSE processor_limits.tokens END",
                $dbnow
            );
            let mut tx = pool.begin().await?;
            for l in sorted {
                let rate_milli = l.rate_per_second.map(|r| ((r * 1000.0).round() as i64).max(1));
                let burst = l.rate_per_second.map_or(1, |r| (r.ceil() as i64).max(1));
                sqlx::query(&sql)
                    .bind(&l.processor)
                    .bind(i64::from(l.concurrency.max(1)))
                    .bind(rate_milli)
                    .bind(burst)
                    .bind(burst * 1_000_000)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        pub(super) async fn limit_usage(pool: &$pool) -> Result<Vec<$crate::store::LimitUsage>, StoreError> {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT l.processor, l.concurrency, (SELECT COUNT(*) FROM steps x WHERE x.processor = l.processor AND x.state = 'running') \
                 FROM processor_limits l ORDER BY l.processor",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(processor, concurrency, running)| $crate::store::LimitUsage { processor, concurrency, running })
                .collect())
        }

        pub(super) async fn release_expired(conn: &mut $conn, now: i64) -> Result<u64, StoreError> {
            // Expiry is judged by the database's clock, so a worker whose clock
            // runs ahead cannot take a live step from another. An erase whose
            // lease ran out mid-call may have reached the processor: mark it.
            let sql = format!(
                "UPDATE steps SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1, \
                 maybe_acted = CASE WHEN action = 'erase' THEN 1 ELSE maybe_acted END \
                 WHERE state = 'running' AND lease_expires_at <= {} \
                 RETURNING id, request_id, processor, attempts, lease_token, action",
                $dbnow
            );
            let rows: Vec<(i64, String, String, i64, i64, String)> =
                sqlx::query_as(&sql).bind(now).fetch_all(&mut *conn).await?;
            let n = rows.len() as u64;
            let events = rows
                .into_iter()
                .map(|(id, req, processor, attempts, token, action)| PendingEvent {
                    request_id: Some(req),
                    step_id: Some(id),
                    kind: "step.lease_expired".into(),
                    detail: serde_json::json!({
                        "processor": processor,
                        "attempt": attempts,
                        "attempts": attempts,
                        "lease_token": token,
                        "state": "pending",
                        "may_have_reached_processor": action == "erase",
                    }),
                })
                .collect();
            append_events(conn, now, events).await?;
            Ok(n)
        }

        pub(super) async fn heartbeat(pool: &$pool, step_id: i64, token: i64, lease_ms: i64) -> Result<bool, StoreError> {
            let sql = format!(
                "UPDATE steps SET lease_expires_at = {} + $1 WHERE id = $2 AND lease_token = $3 AND state = 'running'",
                $dbnow
            );
            let r = sqlx::query(&sql).bind(lease_ms).bind(step_id).bind(token).execute(pool).await?;
            Ok(r.rows_affected() == 1)
        }

        pub(super) async fn next_wake(pool: &$pool) -> Result<Option<i64>, StoreError> {
            let sql = format!(
                "SELECT MIN(t) FROM (SELECT MIN(s.run_at) AS t FROM steps s WHERE s.state IN {} AND {} \
                 UNION ALL SELECT MIN(lease_expires_at) AS t FROM steps WHERE state = 'running') w",
                $crate::store::common::CLAIMABLE,
                $crate::store::common::NOT_BLOCKED
            );
            let v: (Option<i64>,) = sqlx::query_as(&sql).fetch_one(pool).await?;
            Ok(v.0)
        }

        pub(super) async fn waiting_summary(pool: &$pool) -> Result<Vec<$crate::store::WaitGroup>, StoreError> {
            let sql = format!(
                "SELECT processor, state, error_class, blocked, COUNT(*), MIN(run_at) FROM \
                 (SELECT s.processor, s.state, s.error_class, s.run_at, \
                 CASE WHEN {} THEN 0 ELSE 1 END AS blocked FROM steps s \
                 WHERE s.state NOT IN ('done','skipped','cancelled')) w \
                 GROUP BY processor, state, error_class, blocked ORDER BY processor, state, error_class, blocked",
                $crate::store::common::NOT_BLOCKED
            );
            let rows: Vec<(String, String, Option<String>, i32, i64, i64)> = sqlx::query_as(&sql).fetch_all(pool).await?;
            rows.into_iter()
                .map(|(processor, state, error_class, blocked, count, next_at)| {
                    Ok($crate::store::WaitGroup {
                        state: state.parse().map_err(|reason| StoreError::Corrupt { table: "steps", reason })?,
                        processor,
                        error_class,
                        blocked: blocked != 0,
                        count,
                        next_at,
                    })
                })
                .collect()
        }

        /// Apply a change set inside an open transaction. Returns the result and
        /// whether to commit (false: roll back, nothing written).
        pub(super) async fn apply_in(conn: &mut $conn, cs: ChangeSet) -> Result<(Applied, bool), StoreError> {
            // Lock the request row first, so that two change sets of one request
            // (two steps finishing at once) are serialised: each then derives the
            // status from the other's committed step state. Without it, under
            // PostgreSQL's READ COMMITTED both could miss each other and the last
            // commit would leave a stale status. (SQLite is already serialised
            // by BEGIN IMMEDIATE; the statement is harmless there.)
            sqlx::query("UPDATE requests SET updated_at = updated_at WHERE id = $1")
                .bind(&cs.request_id)
                .execute(&mut *conn)
                .await?;
            let cur: Option<(String, i64, Option<String>)> =
                sqlx::query_as("SELECT status, cancelled, extended_reason FROM requests WHERE id = $1")
                    .bind(&cs.request_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((prev_status, cancelled, extended)) = cur else {
                return Ok((Applied::NoRequest, false));
            };
            let previous: RequestStatus =
                prev_status.parse().map_err(|reason| StoreError::Corrupt { table: "requests", reason })?;
            let mut events = Vec::new();
            for c in &cs.steps {
                let r = sqlx::query(
                    "UPDATE steps SET state = $1, phase = $2, outcome = $3, run_at = $4, attempts = COALESCE($5, attempts), \
                     last_error = $6, error_class = $7, evidence = COALESCE($8, evidence), \
                     hold_basis = COALESCE($9, hold_basis), hold_until = COALESCE($10, hold_until), \
                     grace_until = COALESCE($11, grace_until), finished_at = COALESCE($12, finished_at), \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = $13, \
                     maybe_acted = CASE WHEN $18 = 1 THEN 1 ELSE maybe_acted END \
                     WHERE id = $14 AND request_id = $15 AND state = $16 AND ($17 IS NULL OR lease_token = $17)",
                )
                .bind(c.to.as_str())
                .bind(c.phase.as_str())
                .bind(c.outcome.map(|o| o.as_str()))
                .bind(c.run_at)
                .bind(c.attempts)
                .bind(c.error.as_ref().map(|e| e.0.clone()))
                .bind(c.error.as_ref().map(|e| e.1.clone()))
                .bind(c.evidence.as_ref().map(|e| e.to_string()))
                .bind(c.hold.as_ref().map(|h| h.0.clone()))
                .bind(c.hold.as_ref().map(|h| h.1))
                .bind(c.grace_until)
                .bind(if c.finished { Some(cs.now) } else { None })
                .bind(cs.now)
                .bind(c.step_id)
                .bind(&cs.request_id)
                .bind(c.from.as_str())
                .bind(c.lease_token)
                .bind(c.maybe_acted as i64)
                .execute(&mut *conn)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok((Applied::Conflict { step_id: c.step_id }, false));
                }
                events.push(PendingEvent {
                    request_id: Some(cs.request_id.clone()),
                    step_id: Some(c.step_id),
                    kind: c.event.clone(),
                    detail: c.detail.clone(),
                });
            }
            let mut cancelled = cancelled != 0;
            if let Some(cn) = cs.request.cancelled {
                cancelled = cn;
                sqlx::query("UPDATE requests SET cancelled = $1 WHERE id = $2")
                    .bind(cn as i64)
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some((due, reason)) = &cs.request.extend_to {
                if extended.is_some() {
                    return Ok((Applied::AlreadyExtended, false));
                }
                sqlx::query("UPDATE requests SET due_at = $1, extended_reason = $2 WHERE id = $3")
                    .bind(due)
                    .bind(reason)
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(v) = cs.request.verified {
                // Only a change is written: two verifications at once make one event.
                let r = sqlx::query("UPDATE requests SET verified = $1 WHERE id = $2 AND verified <> $1")
                    .bind(v as i64)
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok((Applied::NoRequest, false));
                }
            }
            if cs.request.deadline_warned {
                let r = sqlx::query("UPDATE requests SET deadline_warned_at = $1 WHERE id = $2 AND deadline_warned_at IS NULL")
                    .bind(cs.now)
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok((Applied::NoRequest, false));
                }
            }
            for (kind, detail) in cs.events {
                events.push(PendingEvent { request_id: Some(cs.request_id.clone()), step_id: None, kind, detail });
            }
            let states: Vec<(String,)> =
                sqlx::query_as("SELECT state FROM steps WHERE request_id = $1").bind(&cs.request_id).fetch_all(&mut *conn).await?;
            let states = states
                .into_iter()
                .map(|(s,)| s.parse::<StepState>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| StoreError::Corrupt { table: "steps", reason })?;
            let status = derive_status(cancelled, &states);
            sqlx::query(
                "UPDATE requests SET status = $1, updated_at = $2, \
                 completed_at = CASE WHEN completed_at IS NULL AND $3 = 1 THEN $2 ELSE completed_at END WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(cs.now)
            .bind(closed(status) as i64)
            .bind(&cs.request_id)
            .execute(&mut *conn)
            .await?;
            for (url, event) in &cs.request.notify {
                sqlx::query(
                    "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                     VALUES ($1, $2, 'lethe', $3, $4, $5, $5)",
                )
                .bind(&cs.request_id)
                .bind(url)
                .bind(event)
                .bind(status.as_str())
                .bind(cs.now)
                .execute(&mut *conn)
                .await?;
            }
            if status == RequestStatus::Cancelled {
                // A cancelled erasure suppresses nothing.
                sqlx::query("DELETE FROM suppression WHERE request_id = $1 AND active = 0")
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if matches!(status, RequestStatus::Completed | RequestStatus::CompletedWithExceptions) {
                // The erasure is done: its identities' keyed hashes go on the
                // suppression list in the same transaction (export requests have none).
                sqlx::query("UPDATE suppression SET active = 1 WHERE request_id = $1 AND active = 0")
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if status != previous {
                // Transactional outbox: one callback per destination, committed with the change.
                sqlx::query(
                    "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                     SELECT request_id, url, protocol, 'status', $2, $3, $3 FROM request_callbacks WHERE request_id = $1",
                )
                .bind(&cs.request_id)
                .bind(status.as_str())
                .bind(cs.now)
                .execute(&mut *conn)
                .await?;
                events.push(PendingEvent {
                    request_id: Some(cs.request_id.clone()),
                    step_id: None,
                    kind: "request.status".into(),
                    detail: serde_json::json!({"from": previous.as_str(), "to": status.as_str()}),
                });
            }
            append_events(conn, cs.now, events).await?;
            Ok((Applied::Done { previous, status }, true))
        }

        pub(super) async fn suppressed(pool: &$pool, hashes: &[String]) -> Result<Vec<$crate::store::SuppressionRow>, StoreError> {
            let mut out = Vec::new();
            for h in hashes {
                let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT hash, kind, request_id, masked, active, created_at FROM suppression \
                     WHERE hash = $1 AND active = 1 ORDER BY created_at, request_id",
                )
                .bind(h)
                .fetch_all(pool)
                .await?;
                out.extend(rows.into_iter().map($crate::store::common::suppression_row));
            }
            Ok(out)
        }

        pub(super) async fn suppression_list(pool: &$pool) -> Result<Vec<$crate::store::SuppressionRow>, StoreError> {
            let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
                "SELECT hash, kind, request_id, masked, active, created_at FROM suppression \
                 ORDER BY created_at DESC, request_id, kind",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map($crate::store::common::suppression_row).collect())
        }

        pub(super) async fn follow_ups(pool: &$pool, id: &str) -> Result<Vec<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE follows = $1 ORDER BY received_at DESC, id");
            let raw: Vec<RawRequest> = sqlx::query_as(&sql).bind(id).fetch_all(pool).await?;
            raw.into_iter().map(RawRequest::into_row).collect()
        }

        pub(super) async fn deadline_unwarned(pool: &$pool, by: i64) -> Result<Vec<RequestRow>, StoreError> {
            let sql = format!(
                "SELECT {REQ_COLS} FROM requests WHERE due_at <= $1 AND deadline_warned_at IS NULL \
                 AND status NOT IN ('completed','completed_with_exceptions','cancelled') ORDER BY due_at, id"
            );
            let raw: Vec<RawRequest> = sqlx::query_as(&sql).bind(by).fetch_all(pool).await?;
            raw.into_iter().map(RawRequest::into_row).collect()
        }

        pub(super) async fn count_due_between(pool: &$pool, from: i64, to: i64) -> Result<i64, StoreError> {
            let v: (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM requests WHERE due_at >= $1 AND due_at < $2 \
                 AND status NOT IN ('completed','completed_with_exceptions','cancelled')",
            )
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?;
            Ok(v.0)
        }

        pub(super) async fn take_schedule(pool: &$pool, name: &str, now: i64, next: i64) -> Result<bool, StoreError> {
            let ins = sqlx::query("INSERT INTO timers (name, run_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(next)
                .execute(pool)
                .await?;
            if ins.rows_affected() == 1 {
                return Ok(true);
            }
            let r = sqlx::query("UPDATE timers SET run_at = $1 WHERE name = $2 AND run_at <= $3")
                .bind(next)
                .bind(name)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        }

        pub(super) async fn events(pool: &$pool, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!("SELECT {} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", $crate::store::common::EVENT_COLS);
            let raw: Vec<RawEvent> = sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn texts(pool: &$pool, request_id: &str) -> Result<Vec<(String, String)>, StoreError> {
            let rows: Vec<(String, String)> = sqlx::query_as("SELECT hash, body FROM texts WHERE request_id = $1 ORDER BY at, hash")
                .bind(request_id)
                .fetch_all(pool)
                .await?;
            Ok(rows)
        }

        pub(super) async fn request_events(pool: &$pool, request_id: &str) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!("SELECT {} FROM events WHERE request_id = $1 ORDER BY seq", $crate::store::common::EVENT_COLS);
            let raw: Vec<RawEvent> = sqlx::query_as(&sql)
            .bind(request_id)
            .fetch_all(pool)
            .await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn chain_events(pool: &$pool, chain: &str, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE chain = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(chain).bind(after).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn chain_head(pool: &$pool, chain: &str) -> Result<Option<$crate::store::ChainHead>, StoreError> {
            let sql = format!("SELECT {} FROM chain_heads WHERE chain = $1", $crate::store::common::HEAD_COLS);
            // fetch_all: see `data_key` (no un-stepped SQLite statement left open).
            let rows: Vec<$crate::store::common::RawHead> = sqlx::query_as(&sql).bind(chain).fetch_all(pool).await?;
            Ok(rows.into_iter().next().map($crate::store::common::head_row))
        }

        pub(super) async fn chain_heads(pool: &$pool, after: &str, limit: i64) -> Result<Vec<$crate::store::ChainHead>, StoreError> {
            let sql = format!(
                "SELECT {} FROM chain_heads WHERE chain > $1 ORDER BY chain LIMIT $2",
                $crate::store::common::HEAD_COLS
            );
            let rows: Vec<$crate::store::common::RawHead> = sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?;
            Ok(rows.into_iter().map($crate::store::common::head_row).collect())
        }

        pub(super) async fn events_in_chain_order(
            pool: &$pool,
            after: (&str, i64),
            limit: i64,
        ) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE (chain, chain_seq) > ($1, $2) \
                 ORDER BY chain, chain_seq LIMIT $3",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(after.0).bind(after.1).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn unchained_events(pool: &$pool, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE chain IS NULL OR chain_seq IS NULL ORDER BY seq LIMIT $1",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn add_hold(conn: &mut $conn, h: &$crate::store::HoldRow) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO holds (id, subject_hash, subject_masked, basis, until_at, processor, created_at, released_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
            )
            .bind(&h.id)
            .bind(&h.subject_hash)
            .bind(&h.subject_masked)
            .bind(&h.basis)
            .bind(h.until_at)
            .bind(&h.processor)
            .bind(h.created_at)
            .execute(&mut *conn)
            .await?;
            let detail = serde_json::json!({
                "hold": h.id, "subject": h.subject_masked, "basis": h.basis, "until": h.until_at, "processor": h.processor,
            });
            append_events(conn, h.created_at, vec![PendingEvent { request_id: None, step_id: None, kind: "hold.added".into(), detail }]).await
        }

        pub(super) async fn release_hold(conn: &mut $conn, id: &str, now: i64) -> Result<Option<$crate::store::HoldRow>, StoreError> {
            let sql = format!(
                "UPDATE holds SET released_at = $1 WHERE id = $2 AND released_at IS NULL RETURNING {}",
                $crate::store::common::HOLD_COLS
            );
            let raw: Option<$crate::store::common::RawHold> = sqlx::query_as(&sql).bind(now).bind(id).fetch_optional(&mut *conn).await?;
            let Some(h) = raw.map($crate::store::common::RawHold::into_row) else { return Ok(None) };
            let detail = serde_json::json!({"hold": h.id, "subject": h.subject_masked, "basis": h.basis});
            append_events(conn, now, vec![PendingEvent { request_id: None, step_id: None, kind: "hold.released".into(), detail }]).await?;
            Ok(Some(h))
        }

        pub(super) async fn list_holds(pool: &$pool, include_released: bool) -> Result<Vec<$crate::store::HoldRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM holds WHERE ($1 = 1 OR released_at IS NULL) ORDER BY created_at DESC, id",
                $crate::store::common::HOLD_COLS
            );
            let raw: Vec<$crate::store::common::RawHold> = sqlx::query_as(&sql).bind(include_released as i64).fetch_all(pool).await?;
            Ok(raw.into_iter().map($crate::store::common::RawHold::into_row).collect())
        }

        pub(super) async fn active_holds(pool: &$pool, subject_hash: &str, now: i64) -> Result<Vec<$crate::store::HoldRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM holds WHERE subject_hash = $1 AND released_at IS NULL AND (until_at IS NULL OR until_at > $2) \
                 ORDER BY created_at",
                $crate::store::common::HOLD_COLS
            );
            let raw: Vec<$crate::store::common::RawHold> = sqlx::query_as(&sql).bind(subject_hash).bind(now).fetch_all(pool).await?;
            Ok(raw.into_iter().map($crate::store::common::RawHold::into_row).collect())
        }

        pub(super) async fn wake_held_steps(pool: &$pool, subject_hash: &str, now: i64) -> Result<u64, StoreError> {
            let r = sqlx::query(
                "UPDATE steps SET run_at = $1 WHERE state = 'held' AND run_at > $1 \
                 AND request_id IN (SELECT id FROM requests WHERE subject_hash = $2)",
            )
            .bind(now)
            .bind(subject_hash)
            .execute(pool)
            .await?;
            Ok(r.rows_affected())
        }

        pub(super) async fn health(pool: &$pool, processor: &str) -> Result<$crate::store::Health, StoreError> {
            let row: Option<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT consecutive_failures, paused_until, last_error FROM processor_health WHERE processor = $1",
            )
            .bind(processor)
            .fetch_optional(pool)
            .await?;
            Ok(row
                .map(|(f, p, e)| $crate::store::Health { consecutive_failures: f, paused_until: p, last_error: e })
                .unwrap_or_default())
        }

        pub(super) async fn record_call(
            conn: &mut $conn,
            processor: &str,
            failure: Option<&str>,
            now: i64,
            pause_after: i64,
            pause_ms: i64,
        ) -> Result<$crate::store::Health, StoreError> {
            let Some(err) = failure else {
                sqlx::query(
                    "UPDATE processor_health SET consecutive_failures = 0, paused_until = NULL, updated_at = $1 WHERE processor = $2",
                )
                .bind(now)
                .bind(processor)
                .execute(&mut *conn)
                .await?;
                return Ok($crate::store::Health::default());
            };
            let (failures, paused_until): (i64, Option<i64>) = sqlx::query_as(
                "INSERT INTO processor_health (processor, consecutive_failures, paused_until, last_error, updated_at) \
                 VALUES ($1, 1, NULL, $2, $3) ON CONFLICT (processor) DO UPDATE SET \
                 consecutive_failures = processor_health.consecutive_failures + 1, last_error = $2, updated_at = $3 \
                 RETURNING consecutive_failures, paused_until",
            )
            .bind(processor)
            .bind(err)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            let mut paused_until = paused_until.filter(|p| *p > now);
            if failures >= pause_after && paused_until.is_none() {
                let until = now.saturating_add(pause_ms);
                sqlx::query("UPDATE processor_health SET paused_until = $1 WHERE processor = $2")
                    .bind(until)
                    .bind(processor)
                    .execute(&mut *conn)
                    .await?;
                paused_until = Some(until);
                let detail = serde_json::json!({"processor": processor, "consecutive_failures": failures, "paused_until": until, "error": err});
                append_events(conn, now, vec![PendingEvent { request_id: None, step_id: None, kind: "processor.paused".into(), detail }]).await?;
            }
            Ok($crate::store::Health { consecutive_failures: failures, paused_until, last_error: Some(err.to_string()) })
        }

        pub(super) async fn worker_heartbeat(pool: &$pool, worker: &str, now: i64, live_since: i64) -> Result<i64, StoreError> {
            sqlx::query(
                "INSERT INTO workers (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2",
            )
            .bind(worker)
            .bind(now)
            .execute(pool)
            .await?;
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM workers WHERE heartbeat_at >= $1")
                .bind(live_since)
                .fetch_one(pool)
                .await?;
            Ok(n.max(1))
        }

        pub(super) async fn worker_gone(pool: &$pool, worker: &str) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM workers WHERE id = $1").bind(worker).execute(pool).await?;
            Ok(())
        }

        /// Record a new request's callback destinations and queue a `created` callback to each.
        pub(super) async fn insert_callbacks(
            conn: &mut $conn,
            request_id: &str,
            callbacks: &[$crate::store::Callback],
            now: i64,
        ) -> Result<(), StoreError> {
            for c in callbacks {
                sqlx::query("INSERT INTO request_callbacks (request_id, url, protocol) VALUES ($1, $2, $3)")
                    .bind(request_id)
                    .bind(&c.url)
                    .bind(&c.protocol)
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                 SELECT c.request_id, c.url, c.protocol, 'created', r.status, $2, $2 \
                 FROM request_callbacks c JOIN requests r ON r.id = c.request_id WHERE c.request_id = $1",
            )
            .bind(request_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Queue a `started` callback for each request whose first step was just claimed
        /// (in the claim's transaction). Later claims of the same request add nothing.
        pub(super) async fn enqueue_started(conn: &mut $conn, claimed: &[StepRow], now: i64) -> Result<(), StoreError> {
            let mut seen = std::collections::BTreeSet::new();
            for s in claimed {
                if s.started_at != Some(now) || !seen.insert(s.request_id.clone()) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                     SELECT c.request_id, c.url, c.protocol, 'started', r.status, $2, $2 \
                     FROM request_callbacks c JOIN requests r ON r.id = c.request_id WHERE c.request_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.request_id = $1 AND o.event = 'started')",
                )
                .bind(&s.request_id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn outbox_delivered(pool: &$pool, id: i64, now: i64) -> Result<(), StoreError> {
            sqlx::query("UPDATE outbox SET state = 'delivered', delivered_at = $1, last_error = NULL WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn outbox_failed(
            pool: &$pool,
            id: i64,
            retry_at: Option<i64>,
            error: &str,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE outbox SET state = CASE WHEN $1 IS NULL THEN 'dead' ELSE 'pending' END, \
                 run_at = COALESCE($1, run_at), last_error = $2 WHERE id = $3",
            )
            .bind(retry_at)
            .bind(error)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(super) async fn next_outbox_wake(pool: &$pool) -> Result<Option<i64>, StoreError> {
            let v: (Option<i64>,) = sqlx::query_as("SELECT MIN(run_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(pool)
                .await?;
            Ok(v.0)
        }

        pub(super) async fn request_counts(pool: &$pool) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(sqlx::query_as("SELECT status, COUNT(*) FROM requests GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await?)
        }

        pub(super) async fn attempt_counts(pool: &$pool) -> Result<Vec<(String, i64)>, StoreError> {
            let rows: Vec<(String, Option<i64>)> =
                sqlx::query_as("SELECT processor, CAST(SUM(attempts) AS BIGINT) FROM steps GROUP BY processor ORDER BY processor")
                    .fetch_all(pool)
                    .await?;
            Ok(rows.into_iter().map(|(p, n)| (p, n.unwrap_or(0))).collect())
        }

        pub(super) async fn outbox_counts(pool: &$pool) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
                .fetch_all(pool)
                .await?)
        }

        pub(super) async fn step_counts(pool: &$pool) -> Result<Vec<(String, String, i64)>, StoreError> {
            Ok(sqlx::query_as("SELECT processor, state, COUNT(*) FROM steps GROUP BY processor, state ORDER BY processor, state")
                .fetch_all(pool)
                .await?)
        }

        /// Steps of the requests received in `[from, to)`, by processor.
        pub(super) async fn steps_received_between(pool: &$pool, from: i64, to: i64) -> Result<Vec<StepRow>, StoreError> {
            let sql = format!(
                "SELECT {STEP_COLS} FROM steps WHERE request_id IN \
                 (SELECT id FROM requests WHERE received_at >= $1 AND received_at < $2) ORDER BY processor, id"
            );
            let raw: Vec<RawStep> = sqlx::query_as(&sql).bind(from).bind(to).fetch_all(pool).await?;
            raw.into_iter().map(RawStep::into_row).collect()
        }

        /// Destroy the sealed identities of closed requests that no step needs any
        /// more and that last changed at or before `now - retention`; one audit event each.
        pub(super) async fn shred_identities(conn: &mut $conn, now: i64, retention_ms: i64) -> Result<Vec<String>, StoreError> {
            let rows: Vec<(String,)> = sqlx::query_as(
                "UPDATE requests SET identities = NULL, updated_at = $1 WHERE identities IS NOT NULL \
                 AND status IN ('completed','completed_with_exceptions','cancelled') AND updated_at <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.request_id = requests.id \
                 AND s.state IN ('pending','running','retry_wait','grace','held','awaiting_confirmation')) \
                 RETURNING id",
            )
            .bind(now)
            .bind(now.saturating_sub(retention_ms))
            .fetch_all(&mut *conn)
            .await?;
            let ids: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
            // Processor free text may echo an identity in a form no scrubber
            // knew: it goes with the identities.
            for id in &ids {
                // The data key goes with the sealed blob: without it the blob
                // (in a replica, a WAL, a backup) is noise once the master key
                // that wrapped older copies of the key is rotated away.
                sqlx::query("UPDATE data_keys SET wrapped = NULL, destroyed_at = $1 WHERE request_id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM texts WHERE request_id = $1").bind(id).execute(&mut *conn).await?;
                sqlx::query("UPDATE steps SET last_error = NULL WHERE request_id = $1 AND last_error IS NOT NULL")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            let events = ids
                .iter()
                .map(|id| PendingEvent {
                    request_id: Some(id.clone()),
                    step_id: None,
                    kind: "request.identities_destroyed".into(),
                    detail: serde_json::json!({
                        "retention_ms": retention_ms,
                        "kept": "subject_hash (keyed HMAC) and subject_masked only",
                    }),
                })
                .collect();
            append_events(conn, now, events).await?;
            Ok(ids)
        }

        pub(super) async fn data_key(pool: &$pool, id: &str) -> Result<Option<$crate::store::DataKeyRow>, StoreError> {
            // fetch_all, not fetch_optional: a SQLite statement left un-stepped
            // keeps its read snapshot open on the pooled connection.
            let rows: Vec<(String, String, Option<Vec<u8>>, i64, Option<i64>)> = sqlx::query_as(
                "SELECT request_id, kid, wrapped, created_at, destroyed_at FROM data_keys WHERE request_id = $1",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().next().map($crate::store::common::data_key_row))
        }

        pub(super) async fn put_data_key_if_absent(
            pool: &$pool,
            id: &str,
            key: &$crate::store::WrappedKey,
            now: i64,
        ) -> Result<$crate::store::DataKeyRow, StoreError> {
            sqlx::query(
                "INSERT INTO data_keys (request_id, kid, wrapped, created_at) VALUES ($1, $2, $3, $4)                  ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(id)
            .bind(&key.kid)
            .bind(&key.wrapped)
            .bind(now)
            .execute(pool)
            .await?;
            data_key(pool, id).await?.ok_or_else(|| StoreError::Unavailable(format!("data key `{id}` vanished after insert")))
        }

        pub(super) async fn data_keys_not_under(
            pool: &$pool,
            kid: &str,
            after: &str,
            limit: i64,
        ) -> Result<Vec<$crate::store::DataKeyRow>, StoreError> {
            let rows: Vec<(String, String, Option<Vec<u8>>, i64, Option<i64>)> = sqlx::query_as(
                "SELECT request_id, kid, wrapped, created_at, destroyed_at FROM data_keys                  WHERE kid <> $1 AND wrapped IS NOT NULL AND request_id > $2 ORDER BY request_id LIMIT $3",
            )
            .bind(kid)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map($crate::store::common::data_key_row).collect())
        }

        pub(super) async fn rewrap_data_keys(conn: &mut $conn, batch: &[$crate::store::Rewrap]) -> Result<u64, StoreError> {
            let mut n = 0;
            for r in batch {
                n += sqlx::query(
                    "UPDATE data_keys SET kid = $1, wrapped = $2 WHERE request_id = $3 AND kid = $4 AND wrapped IS NOT NULL",
                )
                .bind(&r.key.kid)
                .bind(&r.key.wrapped)
                .bind(&r.request_id)
                .bind(&r.old_kid)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            }
            Ok(n)
        }

        pub(super) async fn legacy_identities(pool: &$pool, after: &str, limit: i64) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT id, identities FROM requests r WHERE identities IS NOT NULL AND id > $1                  AND NOT EXISTS (SELECT 1 FROM data_keys k WHERE k.request_id = r.id) ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        }

        pub(super) async fn upgrade_identities(
            conn: &mut $conn,
            id: &str,
            old_sealed: &[u8],
            new_sealed: &[u8],
            key: &$crate::store::WrappedKey,
            now: i64,
        ) -> Result<bool, StoreError> {
            let n = sqlx::query(
                "UPDATE requests SET identities = $1 WHERE id = $2 AND identities = $3                  AND NOT EXISTS (SELECT 1 FROM data_keys k WHERE k.request_id = $2)",
            )
            .bind(new_sealed)
            .bind(id)
            .bind(old_sealed)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query("INSERT INTO data_keys (request_id, kid, wrapped, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(&key.kid)
                .bind(&key.wrapped)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }

        pub(super) async fn exports_due_for_deletion(pool: &$pool, now: i64, retention_ms: i64) -> Result<Vec<String>, StoreError> {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT id FROM requests r WHERE kind = 'export'                  AND status IN ('completed','completed_with_exceptions','cancelled')                  AND COALESCE(completed_at, updated_at) <= $1                  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.id AND e.kind = 'request.exports_deleted')                  ORDER BY id",
            )
            .bind(now.saturating_sub(retention_ms))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(id,)| id).collect())
        }
    };
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

pub(super) use shared_store_fns;

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

/// Implement [`Store`](crate::store::Store) for a backend struct with a `pool`
/// field, given its transaction-start function, its claim statement and its
/// migrator. The `shared` module (from [`shared_store_fns!`]) must be in scope.
macro_rules! impl_store {
    ($store:ty, $begin:path, $claim_sql:path, $claim_outbox_sql:path, $after_shred:path, $migrator:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                $migrator
                    .run(&self.pool)
                    .await
                    .map_err(|e| $crate::store::StoreError::Migrate(e.to_string()))
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_request(
                &self,
                req: $crate::store::NewRequest,
                steps: Vec<$crate::store::NewStep>,
                now: i64,
            ) -> Result<$crate::store::RequestRow, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    shared::insert_request(&mut tx, &req, &steps, now).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await?;
                shared::get_request(&self.pool, &req.id)
                    .await?
                    .ok_or_else(|| {
                        $crate::store::StoreError::Unavailable(
                            "request vanished after insert".into(),
                        )
                    })
            }

            async fn get_request(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::RequestRow>, $crate::store::StoreError> {
                shared::get_request(&self.pool, id).await
            }

            async fn find_by_external_id(
                &self,
                ext: &str,
            ) -> Result<Option<$crate::store::RequestRow>, $crate::store::StoreError> {
                shared::find_by_external_id(&self.pool, ext).await
            }

            async fn list_requests(
                &self,
                f: &$crate::store::RequestFilter,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                shared::list_requests(&self.pool, f).await
            }

            async fn steps(
                &self,
                request_id: &str,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                shared::steps(&self.pool, request_id).await
            }

            async fn claim_due_by(
                &self,
                worker: &str,
                now: i64,
                due_by: i64,
                lease_ms: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                let sql = $claim_sql();
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    // Limits first: this locks the limit rows until the commit.
                    let rated = shared::refill(&mut tx).await?;
                    let raw: Vec<$crate::store::common::RawStep> = sqlx::query_as(&sql)
                        .bind(worker)
                        .bind(lease_ms)
                        .bind(now)
                        .bind(limit)
                        .bind(due_by.min(now))
                        .bind(limit.saturating_mul(4).saturating_add(16))
                        .fetch_all(&mut *tx)
                        .await?;
                    let rows = raw
                        .into_iter()
                        .map($crate::store::common::RawStep::into_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    shared::spend_tokens(&mut tx, &rated, &rows).await?;
                    shared::enqueue_started(&mut tx, &rows, now).await?;
                    tx.commit().await?;
                    Ok(rows)
                })
                .await
            }

            async fn release_expired_leases(
                &self,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let n = shared::release_expired(&mut tx, now).await?;
                    tx.commit().await?;
                    Ok(n)
                })
                .await
            }

            async fn heartbeat(
                &self,
                step_id: i64,
                lease_token: i64,
                lease_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                shared::heartbeat(&self.pool, step_id, lease_token, lease_ms).await
            }

            async fn texts(
                &self,
                request_id: &str,
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                shared::texts(&self.pool, request_id).await
            }

            async fn next_wake(&self) -> Result<Option<i64>, $crate::store::StoreError> {
                shared::next_wake(&self.pool).await
            }

            async fn waiting_summary(
                &self,
            ) -> Result<Vec<$crate::store::WaitGroup>, $crate::store::StoreError> {
                shared::waiting_summary(&self.pool).await
            }

            async fn apply(
                &self,
                changes: $crate::store::ChangeSet,
            ) -> Result<$crate::store::Applied, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| {
                    let changes = changes.clone();
                    async move {
                        let mut tx = $begin(pool).await?;
                        let (applied, commit) = shared::apply_in(&mut tx, changes).await?;
                        if commit {
                            tx.commit().await?;
                        } else {
                            tx.rollback().await?;
                        }
                        Ok(applied)
                    }
                })
                .await
            }

            async fn events(
                &self,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                shared::events(&self.pool, after_seq, limit).await
            }

            async fn request_events(
                &self,
                request_id: &str,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                shared::request_events(&self.pool, request_id).await
            }

            async fn chain_events(
                &self,
                chain: &str,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                shared::chain_events(&self.pool, chain, after, limit).await
            }

            async fn chain_head(
                &self,
                chain: &str,
            ) -> Result<Option<$crate::store::ChainHead>, $crate::store::StoreError> {
                shared::chain_head(&self.pool, chain).await
            }

            async fn chain_heads(
                &self,
                after: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::ChainHead>, $crate::store::StoreError> {
                shared::chain_heads(&self.pool, after, limit).await
            }

            async fn events_in_chain_order(
                &self,
                after: (&str, i64),
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                shared::events_in_chain_order(&self.pool, after, limit).await
            }

            async fn unchained_events(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                shared::unchained_events(&self.pool, limit).await
            }

            async fn step_counts(
                &self,
            ) -> Result<Vec<(String, String, i64)>, $crate::store::StoreError> {
                shared::step_counts(&self.pool).await
            }

            async fn add_hold(
                &self,
                hold: $crate::store::HoldRow,
            ) -> Result<(), $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    shared::add_hold(&mut tx, &hold).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn release_hold(
                &self,
                id: &str,
                now: i64,
            ) -> Result<Option<$crate::store::HoldRow>, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let h = shared::release_hold(&mut tx, id, now).await?;
                    tx.commit().await?;
                    Ok(h)
                })
                .await
            }

            async fn list_holds(
                &self,
                include_released: bool,
            ) -> Result<Vec<$crate::store::HoldRow>, $crate::store::StoreError> {
                shared::list_holds(&self.pool, include_released).await
            }

            async fn active_holds(
                &self,
                subject_hash: &str,
                now: i64,
            ) -> Result<Vec<$crate::store::HoldRow>, $crate::store::StoreError> {
                shared::active_holds(&self.pool, subject_hash, now).await
            }

            async fn wake_held_steps(
                &self,
                subject_hash: &str,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                shared::wake_held_steps(&self.pool, subject_hash, now).await
            }

            async fn health(
                &self,
                processor: &str,
            ) -> Result<$crate::store::Health, $crate::store::StoreError> {
                shared::health(&self.pool, processor).await
            }

            async fn record_call(
                &self,
                processor: &str,
                failure: Option<&str>,
                now: i64,
                pause_after: i64,
                pause_ms: i64,
            ) -> Result<$crate::store::Health, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let h = shared::record_call(
                        &mut tx,
                        processor,
                        failure,
                        now,
                        pause_after,
                        pause_ms,
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(h)
                })
                .await
            }

            async fn worker_heartbeat(
                &self,
                worker: &str,
                now: i64,
                live_since: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                shared::worker_heartbeat(&self.pool, worker, now, live_since).await
            }

            async fn worker_gone(&self, worker: &str) -> Result<(), $crate::store::StoreError> {
                shared::worker_gone(&self.pool, worker).await
            }

            async fn create_request_with_callbacks(
                &self,
                req: $crate::store::NewRequest,
                steps: Vec<$crate::store::NewStep>,
                callbacks: Vec<$crate::store::Callback>,
                now: i64,
            ) -> Result<$crate::store::RequestRow, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    shared::insert_request(&mut tx, &req, &steps, now).await?;
                    shared::insert_callbacks(&mut tx, &req.id, &callbacks, now).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await?;
                shared::get_request(&self.pool, &req.id)
                    .await?
                    .ok_or_else(|| {
                        $crate::store::StoreError::Unavailable(
                            "request vanished after insert".into(),
                        )
                    })
            }

            async fn claim_outbox(
                &self,
                now: i64,
                visible_at: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::OutboxRow>, $crate::store::StoreError> {
                let sql = $claim_outbox_sql();
                let mut tx = $begin(&self.pool).await?;
                let raw: Vec<$crate::store::common::RawOutbox> = sqlx::query_as(&sql)
                    .bind(now)
                    .bind(visible_at)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut rows = raw
                    .into_iter()
                    .map($crate::store::common::RawOutbox::into_row)
                    .collect::<Result<Vec<_>, _>>()?;
                rows.sort_by_key(|r| r.id);
                Ok(rows)
            }

            async fn outbox_delivered(
                &self,
                id: i64,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                shared::outbox_delivered(&self.pool, id, now).await
            }

            async fn outbox_failed(
                &self,
                id: i64,
                retry_at: Option<i64>,
                error: &str,
            ) -> Result<(), $crate::store::StoreError> {
                shared::outbox_failed(&self.pool, id, retry_at, error).await
            }

            async fn next_outbox_wake(&self) -> Result<Option<i64>, $crate::store::StoreError> {
                shared::next_outbox_wake(&self.pool).await
            }

            async fn request_counts(
                &self,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                shared::request_counts(&self.pool).await
            }

            async fn attempt_counts(
                &self,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                shared::attempt_counts(&self.pool).await
            }

            async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                shared::outbox_counts(&self.pool).await
            }

            async fn suppressed(
                &self,
                hashes: &[String],
            ) -> Result<Vec<$crate::store::SuppressionRow>, $crate::store::StoreError> {
                shared::suppressed(&self.pool, hashes).await
            }

            async fn suppression_list(
                &self,
            ) -> Result<Vec<$crate::store::SuppressionRow>, $crate::store::StoreError> {
                shared::suppression_list(&self.pool).await
            }

            async fn follow_ups(
                &self,
                id: &str,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                shared::follow_ups(&self.pool, id).await
            }

            async fn deadline_unwarned(
                &self,
                by: i64,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                shared::deadline_unwarned(&self.pool, by).await
            }

            async fn count_due_between(
                &self,
                from: i64,
                to: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                shared::count_due_between(&self.pool, from, to).await
            }

            async fn take_schedule(
                &self,
                name: &str,
                now: i64,
                next: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                shared::take_schedule(&self.pool, name, now, next).await
            }

            async fn apply_batch(
                &self,
                batch: Vec<$crate::store::ChangeSet>,
            ) -> Result<
                Vec<Result<$crate::store::Applied, $crate::store::StoreError>>,
                $crate::store::StoreError,
            > {
                // Lock order: change sets by request id (stable, so two of one
                // request keep their order); results in the caller's order.
                let mut order: Vec<usize> = (0..batch.len()).collect();
                order.sort_by(|&a, &b| batch[a].request_id.cmp(&batch[b].request_id));
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let mut out: Vec<
                        Option<Result<$crate::store::Applied, $crate::store::StoreError>>,
                    > = (0..batch.len()).map(|_| None).collect();
                    for &i in &order {
                        let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
                        match shared::apply_in(&mut sp, batch[i].clone()).await {
                            Ok((applied, commit)) => {
                                if commit {
                                    sp.commit().await?;
                                } else {
                                    sp.rollback().await?;
                                }
                                out[i] = Some(Ok(applied));
                            }
                            // A deadlock or serialization failure: the whole
                            // transaction is run again (by `retrying`).
                            Err(e) if e.is_contended() => return Err(e),
                            Err(e) => {
                                // Only this change set fails: back to its savepoint.
                                // If even that fails, the connection is gone: the
                                // whole batch fails (nothing was committed).
                                if sp.rollback().await.is_err() {
                                    return Err(e);
                                }
                                out[i] = Some(Err(e));
                            }
                        }
                    }
                    tx.commit().await?;
                    Ok(out.into_iter().flatten().collect())
                })
                .await
            }

            async fn set_limits(
                &self,
                limits: &[$crate::store::LimitSpec],
            ) -> Result<(), $crate::store::StoreError> {
                shared::set_limits(&self.pool, limits).await
            }

            async fn limit_usage(
                &self,
            ) -> Result<Vec<$crate::store::LimitUsage>, $crate::store::StoreError> {
                shared::limit_usage(&self.pool).await
            }

            async fn steps_received_between(
                &self,
                from: i64,
                to: i64,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                shared::steps_received_between(&self.pool, from, to).await
            }

            async fn shred_identities(
                &self,
                now: i64,
                retention_ms: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let pool = &self.pool;
                let ids = $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let ids = shared::shred_identities(&mut tx, now, retention_ms).await?;
                    tx.commit().await?;
                    Ok(ids)
                })
                .await?;
                if !ids.is_empty() {
                    $after_shred(&self.pool).await?;
                }
                Ok(ids)
            }

            async fn data_key(
                &self,
                request_id: &str,
            ) -> Result<Option<$crate::store::DataKeyRow>, $crate::store::StoreError> {
                shared::data_key(&self.pool, request_id).await
            }

            async fn put_data_key_if_absent(
                &self,
                request_id: &str,
                key: $crate::store::WrappedKey,
                now: i64,
            ) -> Result<$crate::store::DataKeyRow, $crate::store::StoreError> {
                shared::put_data_key_if_absent(&self.pool, request_id, &key, now).await
            }

            async fn data_keys_not_under(
                &self,
                kid: &str,
                after: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::DataKeyRow>, $crate::store::StoreError> {
                shared::data_keys_not_under(&self.pool, kid, after, limit).await
            }

            async fn rewrap_data_keys(
                &self,
                batch: Vec<$crate::store::Rewrap>,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = $begin(&self.pool).await?;
                let n = shared::rewrap_data_keys(&mut tx, &batch).await?;
                tx.commit().await?;
                if n > 0 {
                    // The old wrappings must not linger in the WAL.
                    $after_shred(&self.pool).await?;
                }
                Ok(n)
            }

            async fn legacy_identities(
                &self,
                after: &str,
                limit: i64,
            ) -> Result<Vec<(String, Vec<u8>)>, $crate::store::StoreError> {
                shared::legacy_identities(&self.pool, after, limit).await
            }

            async fn upgrade_identities(
                &self,
                request_id: &str,
                old_sealed: &[u8],
                new_sealed: &[u8],
                key: $crate::store::WrappedKey,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = $begin(&self.pool).await?;
                let ok = shared::upgrade_identities(
                    &mut tx, request_id, old_sealed, new_sealed, &key, now,
                )
                .await?;
                tx.commit().await?;
                Ok(ok)
            }

            async fn exports_due_for_deletion(
                &self,
                now: i64,
                retention_ms: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                shared::exports_due_for_deletion(&self.pool, now, retention_ms).await
            }

            async fn take_leader_lease(
                &self,
                name: &str,
                holder: &str,
                ttl_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                ckpt::take_lease(&self.pool, name, holder, ttl_ms).await
            }

            async fn drop_leader_lease(
                &self,
                name: &str,
                holder: &str,
            ) -> Result<(), $crate::store::StoreError> {
                ckpt::drop_lease(&self.pool, name, holder).await
            }

            async fn write_checkpoint(
                &self,
                holder: &str,
                batch: i64,
                sign: $crate::store::CheckpointSigner<'_>,
            ) -> Result<$crate::store::CheckpointWrite, $crate::store::StoreError> {
                let mut tx = $begin(&self.pool).await?;
                let out = ckpt::write_checkpoint(&mut tx, holder, batch, sign).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn checkpoints(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::CheckpointRow>, $crate::store::StoreError> {
                ckpt::checkpoints(&self.pool, after, limit).await
            }

            async fn checkpoint_leaves(
                &self,
                from_id: i64,
                to_id: i64,
            ) -> Result<Vec<(i64, $crate::store::CheckpointLeaf)>, $crate::store::StoreError> {
                ckpt::checkpoint_leaves(&self.pool, from_id, to_id).await
            }

            async fn checkpoint_covering(
                &self,
                chain: &str,
                chain_seq: i64,
            ) -> Result<Option<$crate::store::CheckpointRow>, $crate::store::StoreError> {
                ckpt::checkpoint_covering(&self.pool, chain, chain_seq).await
            }

            async fn checkpoint_leaf_mismatches(
                &self,
                limit: i64,
            ) -> Result<(i64, Vec<$crate::store::LeafMismatch>), $crate::store::StoreError> {
                ckpt::leaf_mismatches(&self.pool, limit).await
            }
        }
    };
}

pub(super) use impl_store;
