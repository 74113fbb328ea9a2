//! The work queue: claiming due steps under leases (by the database's clock)
//! within each processor's cluster-wide limits, heart-beating and expiring
//! leases, applying the engine's change sets, processors' health, live workers
//! and durable timers.
//!
//! Invariants: a step is claimed by at most one worker at a time, and every
//! claim takes a new fencing token (`lease_token`); a change set is applied all
//! or nothing, only if each step is still in its expected state (and lease),
//! and moves the request's derived status, its outbox rows and its audit
//! events in the same transaction. Claims lock the `processor_limits` rows in
//! name order before counting free slots, so two claims never take one slot.

use super::{
    Applied, ChangeSet, Health, LimitSpec, LimitUsage, Millis, StepRow, StoreError, WaitGroup,
};
use async_trait::async_trait;

/// Claims, leases, change sets, limits, processor health, workers and timers.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// How many result batches ([`apply_batch`](Self::apply_batch)) one
    /// process may write at once. SQLite has one writer, so 1; PostgreSQL
    /// writes batches in parallel (they lock their requests in id order, and
    /// a deadlock or serialization failure is retried), so a round trip to
    /// the server is not paid once per result in series.
    fn write_concurrency(&self) -> usize {
        1
    }

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

    /// [`claim_due`](QueueStore::claim_due), claiming only steps due at or before
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

    /// The earliest `run_at` (or lease expiry) of anything claimable, if any.
    async fn next_wake(&self) -> Result<Option<Millis>, StoreError>;

    /// Every step that is not final (neither done, skipped nor cancelled),
    /// grouped by processor, state, error class and whether an earlier phase
    /// blocks it, with the count and the earliest `run_at` of each group.
    async fn waiting_summary(&self) -> Result<Vec<WaitGroup>, StoreError>;

    /// Apply a change set atomically.
    async fn apply(&self, changes: ChangeSet) -> Result<Applied, StoreError>;

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

    /// A durable schedule: true (and the next run set to `next`) if `name`
    /// is due at `now` or has never run; false otherwise. One caller wins.
    async fn take_schedule(
        &self,
        name: &str,
        now: Millis,
        next: Millis,
    ) -> Result<bool, StoreError>;
}

/// Stamp out the queue statements for one backend, as the module `queue_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! queue_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::domain::{derive_status, RequestStatus, StepState};
        use $crate::store::common::{closed, PendingEvent};
        use $crate::store::{Applied, ChangeSet, StoreError};

        /// The refill: lock every processor's limit row (in name order, so
        /// two claims cannot deadlock) and refill the rated ones' buckets by
        /// the database's clock. SQLite runs it before its claim statement;
        /// PostgreSQL's claim function runs it first.
        pub(super) fn refill_sql() -> String {
            let now = $dbnow;
            format!(
                "UPDATE processor_limits SET tokens = CASE WHEN rate_milli IS NULL THEN tokens \
                 WHEN {now} <= refilled_at THEN tokens \
                 WHEN tokens + ({now} - refilled_at) * rate_milli >= burst * 1000000 THEN burst * 1000000 \
                 ELSE tokens + ({now} - refilled_at) * rate_milli END, \
                 refilled_at = CASE WHEN {now} > refilled_at THEN {now} ELSE refilled_at END \
                 WHERE {}",
                super::LIMITS_LOCK
            )
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
            super::audit_sql::append_events(conn, now, events).await?;
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
            let cur: Option<(String, i64, Option<String>)> = sqlx::query_as(
                "UPDATE requests SET updated_at = updated_at WHERE id = $1 RETURNING status, cancelled, extended_reason",
            )
            .bind(&cs.request_id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((prev_status, cancelled, extended)) = cur else {
                return Ok((Applied::NoRequest, false));
            };
            let previous: RequestStatus =
                prev_status.parse().map_err(|reason| StoreError::Corrupt { table: "requests", reason })?;
            let mut events = Vec::new();
            // The request's step states after this change set, when the last
            // step's update already read them (PostgreSQL).
            let mut states_after: Option<Vec<String>> = None;
            const UPDATE_STEP: &str = "UPDATE steps SET state = $1, phase = $2, outcome = $3, run_at = $4, attempts = COALESCE($5, attempts), \
                 last_error = $6, error_class = $7, evidence = COALESCE($8, evidence), \
                 hold_basis = COALESCE($9, hold_basis), hold_until = COALESCE($10, hold_until), \
                 grace_until = COALESCE($11, grace_until), finished_at = COALESCE($12, finished_at), \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $13, \
                 maybe_acted = CASE WHEN $18 = 1 THEN 1 ELSE maybe_acted END \
                 WHERE id = $14 AND request_id = $15 AND state = $16 AND ($17 IS NULL OR lease_token = $17)";
            let last = cs.steps.len().saturating_sub(1);
            for (i, c) in cs.steps.iter().enumerate() {
                // PostgreSQL: the last step's update also reads every step's
                // state (the updated one from the update, the others from
                // the statement's snapshot), one round trip fewer while the
                // request row is locked.
                let fuse = super::DML_IN_CTE && i == last;
                let fused_sql;
                let sql = if fuse {
                    fused_sql = format!(
                        "WITH u AS ({UPDATE_STEP} RETURNING id, state) \
                         SELECT COALESCE(u.state, s.state) AS state, (SELECT COUNT(*) FROM u) AS updated \
                         FROM steps s LEFT JOIN u ON u.id = s.id WHERE s.request_id = $15"
                    );
                    fused_sql.as_str()
                } else {
                    UPDATE_STEP
                };
                let q = sqlx::query(sql)
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
                .bind(c.maybe_acted as i64);
                let updated = if fuse {
                    use sqlx::Row;
                    let rows = q.fetch_all(&mut *conn).await?;
                    let updated = rows.first().map(|r| r.try_get::<i64, _>("updated")).transpose()?.unwrap_or(0);
                    states_after = Some(rows.iter().map(|r| r.try_get::<String, _>("state")).collect::<Result<_, _>>()?);
                    updated
                } else {
                    q.execute(&mut *conn).await?.rows_affected() as i64
                };
                if updated != 1 {
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
            let states = match states_after {
                Some(s) => s,
                None => sqlx::query_scalar("SELECT state FROM steps WHERE request_id = $1")
                    .bind(&cs.request_id)
                    .fetch_all(&mut *conn)
                    .await?,
            };
            let states = states
                .into_iter()
                .map(|s| s.parse::<StepState>())
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
                super::outbox_sql::enqueue_notify(conn, &cs.request_id, url, event, status, cs.now).await?;
            }
            if status == RequestStatus::Cancelled {
                // A cancelled erasure suppresses nothing.
                sqlx::query("DELETE FROM suppression WHERE request_id = $1 AND active = 0")
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if status != previous && matches!(status, RequestStatus::Completed | RequestStatus::CompletedWithExceptions) {
                // The erasure is done: its identities' keyed hashes go on the
                // suppression list in the same transaction (export requests have none).
                sqlx::query("UPDATE suppression SET active = 1 WHERE request_id = $1 AND active = 0")
                    .bind(&cs.request_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if status != previous {
                // Transactional outbox: one callback per destination, committed with the change.
                super::outbox_sql::enqueue_status(conn, &cs.request_id, status, cs.now).await?;
                events.push(PendingEvent {
                    request_id: Some(cs.request_id.clone()),
                    step_id: None,
                    kind: "request.status".into(),
                    detail: serde_json::json!({"from": previous.as_str(), "to": status.as_str()}),
                });
            }
            super::audit_sql::append_events(conn, cs.now, events).await?;
            Ok((Applied::Done { previous, status }, true))
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
                super::audit_sql::append_events(conn, now, vec![PendingEvent { request_id: None, step_id: None, kind: "processor.paused".into(), detail }]).await?;
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
    };
}

pub(super) use queue_sql_fns;

/// Implement [`QueueStore`] for a backend struct with a `pool` field.
macro_rules! impl_queue_store {
    ($store:ty, $begin:path, $claim:path, $writers:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::queue::QueueStore for $store {
            fn write_concurrency(&self) -> usize {
                $writers
            }

            async fn claim_due_by(
                &self,
                worker: &str,
                now: i64,
                due_by: i64,
                lease_ms: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                let pool = &self.pool;
                // Look at a few more candidates than the claim's size: some
                // may belong to a processor that is full.
                let candidates = limit.saturating_mul(4).saturating_add(16);
                $crate::store::common::retrying(|| async {
                    $claim(
                        pool,
                        worker,
                        now,
                        due_by.min(now),
                        lease_ms,
                        limit,
                        candidates,
                    )
                    .await
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
                    let n = queue_sql::release_expired(&mut tx, now).await?;
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
                queue_sql::heartbeat(&self.pool, step_id, lease_token, lease_ms).await
            }

            async fn next_wake(&self) -> Result<Option<i64>, $crate::store::StoreError> {
                queue_sql::next_wake(&self.pool).await
            }

            async fn waiting_summary(
                &self,
            ) -> Result<Vec<$crate::store::WaitGroup>, $crate::store::StoreError> {
                queue_sql::waiting_summary(&self.pool).await
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
                        let (applied, commit) = queue_sql::apply_in(&mut tx, changes).await?;
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
                    // First without savepoints (two statements fewer per change
                    // set): when every change set commits, as nearly always,
                    // that is the batch. If one does not (a conflict, a failed
                    // statement), nothing of this pass is kept: the batch runs
                    // again below, each change set in its own savepoint.
                    {
                        let mut tx = $begin(pool).await?;
                        let mut out = Vec::with_capacity(batch.len());
                        let mut clean = true;
                        for &i in &order {
                            match queue_sql::apply_in(&mut tx, batch[i].clone()).await {
                                Ok((applied, true)) => out.push((i, applied)),
                                Ok((_, false)) => {
                                    clean = false;
                                    break;
                                }
                                Err(e) if e.is_contended() => return Err(e),
                                Err(_) => {
                                    clean = false;
                                    break;
                                }
                            }
                        }
                        if clean {
                            tx.commit().await?;
                            out.sort_by_key(|(i, _)| *i);
                            return Ok(out.into_iter().map(|(_, a)| Ok(a)).collect());
                        }
                        tx.rollback().await?;
                    }
                    let mut tx = $begin(pool).await?;
                    let mut out: Vec<
                        Option<Result<$crate::store::Applied, $crate::store::StoreError>>,
                    > = (0..batch.len()).map(|_| None).collect();
                    for &i in &order {
                        let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
                        match queue_sql::apply_in(&mut sp, batch[i].clone()).await {
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
                queue_sql::set_limits(&self.pool, limits).await
            }

            async fn limit_usage(
                &self,
            ) -> Result<Vec<$crate::store::LimitUsage>, $crate::store::StoreError> {
                queue_sql::limit_usage(&self.pool).await
            }

            async fn health(
                &self,
                processor: &str,
            ) -> Result<$crate::store::Health, $crate::store::StoreError> {
                queue_sql::health(&self.pool, processor).await
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
                    let h = queue_sql::record_call(
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
                queue_sql::worker_heartbeat(&self.pool, worker, now, live_since).await
            }

            async fn worker_gone(&self, worker: &str) -> Result<(), $crate::store::StoreError> {
                queue_sql::worker_gone(&self.pool, worker).await
            }

            async fn take_schedule(
                &self,
                name: &str,
                now: i64,
                next: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                queue_sql::take_schedule(&self.pool, name, now, next).await
            }
        }
    };
}

pub(super) use impl_queue_store;
