//! Retention sweeps in the store: schedules, sweep runs and the items each run
//! found (migration 0016).
//!
//! A sweep run is claimed like a step: a lease by the database's clock and a
//! fencing token that every write of its results must still hold. Its cutoff
//! is fixed when the run is created, so a run taken over after a crash sweeps
//! the same period again; items are keyed by (run, keyed hash), so a re-listed
//! item is counted once, and an item becomes `removed` only from the
//! processor's answer (never downgraded afterwards).

use super::{Millis, StoreError};
use async_trait::async_trait;
use serde_json::Value;

/// A configured schedule for one processor (from a workflow's `[[schedule]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// The schedule's name.
    pub name: String,
    /// The processor it sweeps.
    pub processor: String,
    /// The workflow file it is in.
    pub workflow: String,
    /// Items older than this are removed.
    pub older_than_ms: i64,
    /// How often it runs.
    pub every_ms: i64,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    /// The schedule's name.
    pub name: String,
    /// The processor.
    pub processor: String,
    /// The workflow it is in.
    pub workflow: String,
    /// Items older than this are removed.
    pub older_than_ms: i64,
    /// How often it runs.
    pub every_ms: i64,
    /// When it runs next.
    pub next_run_at: i64,
    /// Its latest run.
    pub last_run_id: Option<String>,
    /// Last change.
    pub updated_at: i64,
}

/// One sweep run as stored, with its item counts.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SweepRunRow {
    /// Id (UUID).
    pub id: String,
    /// The schedule.
    pub schedule: String,
    /// The processor.
    pub processor: String,
    /// `schedule` (due by its period) or `manual` (`lethe schedule run`).
    pub started_by: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// Items last modified before this were to go.
    pub cutoff_at: i64,
    /// Created.
    pub created_at: i64,
    /// Due.
    pub run_at: i64,
    /// First claimed.
    pub started_at: Option<i64>,
    /// Finished.
    pub finished_at: Option<i64>,
    /// Lease holder.
    pub lease_owner: Option<String>,
    /// Lease end (database clock).
    pub lease_expires_at: Option<i64>,
    /// Fencing token of the current (or last) lease.
    pub lease_token: i64,
    /// Claims so far.
    pub attempts: i64,
    /// The last error (never a file name or key).
    pub last_error: Option<String>,
    /// Last change.
    pub updated_at: i64,
    /// Items listed.
    pub listed: i64,
    /// Items whose removal the processor's answer proves.
    pub removed: i64,
    /// Items whose removal the processor refused.
    pub failed: i64,
}

impl SweepRunRow {
    /// Items listed but neither proven removed nor refused (a run cut short).
    pub fn unconfirmed(&self) -> i64 {
        self.listed - self.removed - self.failed
    }
}

/// An item a run found.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SweepItemRow {
    /// The run.
    pub run_id: String,
    /// Keyed hash of the item's name (object key and version, file path…).
    pub item_hash: String,
    /// `version`, `delete_marker`, `ticket`, `file`.
    pub kind: String,
    /// A pure id (a ticket number), never a name.
    pub reference: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<i64>,
    /// Last modified, when known.
    pub modified_at: Option<i64>,
    /// `pending`, `removed` or `failed`.
    pub state: String,
    /// What the processor answered (JSON).
    pub evidence: Option<String>,
    /// Last change.
    pub updated_at: i64,
}

/// An item to record as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSweepItem {
    /// Keyed hash of its name.
    pub item_hash: String,
    /// Its kind.
    pub kind: String,
    /// A pure id, if any.
    pub reference: Option<String>,
    /// Size.
    pub size: Option<i64>,
    /// Last modified.
    pub modified_at: Option<i64>,
}

/// What the processor's answer proved about one item.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepItemResult {
    /// Keyed hash of its name.
    pub item_hash: String,
    /// True: removed; false: refused.
    pub removed: bool,
    /// The answer (status, code, job id…), JSON.
    pub evidence: Value,
}

/// How a run ends (or pauses).
#[derive(Debug, Clone, PartialEq)]
pub enum SweepEnd {
    /// Finished: every listed item was answered.
    Done,
    /// A transient failure: try again at `run_at`.
    Retry {
        /// When.
        run_at: Millis,
        /// Why.
        error: String,
    },
    /// Gave up.
    Failed {
        /// Why.
        error: String,
    },
}

/// Sweep storage (every [`Store`](super::Store) has it).
#[async_trait]
pub trait SweepStore: Send + Sync {
    /// Make the stored schedules the configured ones: insert missing ones
    /// (first run due at `now`), refresh the durations of existing ones
    /// (their `next_run_at` is kept), and drop those no longer configured
    /// (their runs stay).
    async fn sync_schedules(&self, specs: Vec<ScheduleSpec>, now: Millis)
        -> Result<(), StoreError>;
    /// Every stored schedule, by name then processor.
    async fn list_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError>;
    /// Create a run for each schedule due at `now` (and move its `next_run_at`
    /// one period on), each at most once even with concurrent callers.
    /// `only` restricts it to one schedule name. Returns the new run ids.
    async fn start_due_sweeps(
        &self,
        now: Millis,
        only: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
    /// Create a run of one schedule and processor now (`lethe schedule run`),
    /// and move its `next_run_at` one period from now.
    async fn start_sweep_now(
        &self,
        name: &str,
        processor: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError>;
    /// Lease up to `limit` runs that are due (pending, or running with an
    /// expired lease) to `worker`, each with a new fencing token. `only`
    /// restricts it to these run ids.
    async fn claim_sweep_runs(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: i64,
        only: Option<&[String]>,
    ) -> Result<Vec<SweepRunRow>, StoreError>;
    /// Extend a run's lease; false if the token is no longer its.
    async fn sweep_heartbeat(
        &self,
        run_id: &str,
        lease_token: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Record listed items (a re-listed item is kept once); false if the
    /// lease was lost (nothing written).
    async fn record_sweep_items(
        &self,
        run_id: &str,
        lease_token: i64,
        items: Vec<NewSweepItem>,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Record what the processor answered for items; a removed item stays
    /// removed. False if the lease was lost (nothing written).
    async fn record_sweep_results(
        &self,
        run_id: &str,
        lease_token: i64,
        results: Vec<SweepItemResult>,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// End (or defer) a claimed run, with a `sweep.finished`/`sweep.retry`/
    /// `sweep.failed` event carrying its counts. False if the lease was lost.
    async fn finish_sweep_run(
        &self,
        run_id: &str,
        lease_token: i64,
        end: SweepEnd,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// A run by id.
    async fn sweep_run(&self, id: &str) -> Result<Option<SweepRunRow>, StoreError>;
    /// A run's items.
    async fn sweep_items(&self, run_id: &str) -> Result<Vec<SweepItemRow>, StoreError>;
    /// Runs created in `[from, to)`, oldest first.
    async fn sweep_runs_between(
        &self,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<SweepRunRow>, StoreError>;
    /// The earliest time a schedule or sweep run needs a worker, if any.
    async fn next_sweep_wake(&self) -> Result<Option<Millis>, StoreError>;
}

/// The run columns, with the item counts.
pub(super) const RUN_SELECT: &str = "SELECT r.id, r.schedule, r.processor, r.started_by, r.state, r.cutoff_at, r.created_at, \
     r.run_at, r.started_at, r.finished_at, r.lease_owner, r.lease_expires_at, r.lease_token, r.attempts, r.last_error, \
     r.updated_at, \
     (SELECT COUNT(*) FROM sweep_items i WHERE i.run_id = r.id) AS listed, \
     (SELECT COUNT(*) FROM sweep_items i WHERE i.run_id = r.id AND i.state = 'removed') AS removed, \
     (SELECT COUNT(*) FROM sweep_items i WHERE i.run_id = r.id AND i.state = 'failed') AS failed \
     FROM sweep_runs r";

/// Stamp out [`SweepStore`] for one backend: `$store` has a `pool`, `$conn` is
/// its connection type, `$begin`
/// opens a write transaction, `$audit` is its `audit_sql` module (from
/// [`audit_sql_fns!`](super::audit::audit_sql_fns), for the audit append), `$dbnow` the database clock.
macro_rules! impl_sweep_store {
    ($store:ty, $conn:ty, $begin:path, $audit:path, $dbnow:expr) => {
        mod sweep_impl {
            use super::*;
            use $crate::store::common::PendingEvent;
            use $crate::store::sweep::*;
            use $crate::store::{Millis, StoreError};
            use $audit as audit_sql;

            async fn fenced(
                conn: &mut $conn,
                run_id: &str,
                token: i64,
            ) -> Result<bool, StoreError> {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT lease_token, state FROM sweep_runs WHERE id = $1")
                        .bind(run_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                Ok(matches!(row, Some((t, s)) if t == token && s == "running"))
            }

            async fn insert_run(
                conn: &mut $conn,
                s: &ScheduleRow,
                started_by: &str,
                now: Millis,
            ) -> Result<String, StoreError> {
                let id = uuid::Uuid::new_v4().to_string();
                let cutoff = now - s.older_than_ms;
                sqlx::query(
                    "INSERT INTO sweep_runs (id, schedule, processor, started_by, state, cutoff_at, created_at, run_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $6, $6)",
                )
                .bind(&id)
                .bind(&s.name)
                .bind(&s.processor)
                .bind(started_by)
                .bind(cutoff)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                audit_sql::append_events(
                    conn,
                    now,
                    vec![PendingEvent {
                        request_id: None,
                        step_id: None,
                        kind: "sweep.scheduled".into(),
                        detail: serde_json::json!({
                            "sweep_run": id,
                            "schedule": s.name,
                            "processor": s.processor,
                            "started_by": started_by,
                            "cutoff": $crate::store::rfc3339(cutoff),
                        }),
                    }],
                )
                .await?;
                Ok(id)
            }

            #[async_trait::async_trait]
            impl SweepStore for $store {
                async fn sync_schedules(&self, specs: Vec<ScheduleSpec>, now: Millis) -> Result<(), StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    // A schedule no longer in the config stops (its runs stay as evidence).
                    let stored: Vec<(String, String)> = sqlx::query_as("SELECT name, processor FROM schedules")
                        .fetch_all(&mut *tx)
                        .await?;
                    for (name, processor) in stored {
                        if !specs.iter().any(|s| s.name == name && s.processor == processor) {
                            sqlx::query("DELETE FROM schedules WHERE name = $1 AND processor = $2")
                                .bind(&name)
                                .bind(&processor)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    for s in specs {
                        sqlx::query(
                            "INSERT INTO schedules (name, processor, workflow, older_than_ms, every_ms, next_run_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $6) \
                             ON CONFLICT (name, processor) DO UPDATE SET workflow = $3, older_than_ms = $4, every_ms = $5, \
                             updated_at = CASE WHEN schedules.older_than_ms = $4 AND schedules.every_ms = $5 AND schedules.workflow = $3 \
                             THEN schedules.updated_at ELSE $6 END",
                        )
                        .bind(&s.name)
                        .bind(&s.processor)
                        .bind(&s.workflow)
                        .bind(s.older_than_ms)
                        .bind(s.every_ms)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
                    Ok(sqlx::query_as(
                        "SELECT name, processor, workflow, older_than_ms, every_ms, next_run_at, last_run_id, updated_at \
                         FROM schedules ORDER BY name, processor",
                    )
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn start_due_sweeps(&self, now: Millis, only: Option<&str>) -> Result<Vec<String>, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    let due: Vec<ScheduleRow> = sqlx::query_as(
                        "SELECT name, processor, workflow, older_than_ms, every_ms, next_run_at, last_run_id, updated_at \
                         FROM schedules WHERE next_run_at <= $1 AND ($2 IS NULL OR name = $2) ORDER BY next_run_at",
                    )
                    .bind(now)
                    .bind(only)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut ids = Vec::new();
                    for s in due {
                        // Compare-and-set on the due time: a concurrent daemon
                        // that already started this period's run wins.
                        let moved = sqlx::query(
                            "UPDATE schedules SET next_run_at = $1, updated_at = $2 \
                             WHERE name = $3 AND processor = $4 AND next_run_at = $5",
                        )
                        .bind(now + s.every_ms.max(1))
                        .bind(now)
                        .bind(&s.name)
                        .bind(&s.processor)
                        .bind(s.next_run_at)
                        .execute(&mut *tx)
                        .await?;
                        if moved.rows_affected() != 1 {
                            continue;
                        }
                        let id = insert_run(&mut *tx, &s, "schedule", now).await?;
                        sqlx::query("UPDATE schedules SET last_run_id = $1 WHERE name = $2 AND processor = $3")
                            .bind(&id)
                            .bind(&s.name)
                            .bind(&s.processor)
                            .execute(&mut *tx)
                            .await?;
                        ids.push(id);
                    }
                    tx.commit().await?;
                    Ok(ids)
                }

                async fn start_sweep_now(&self, name: &str, processor: &str, now: Millis) -> Result<Option<String>, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    let s: Option<ScheduleRow> = sqlx::query_as(
                        "SELECT name, processor, workflow, older_than_ms, every_ms, next_run_at, last_run_id, updated_at \
                         FROM schedules WHERE name = $1 AND processor = $2",
                    )
                    .bind(name)
                    .bind(processor)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(s) = s else { return Ok(None) };
                    let id = insert_run(&mut *tx, &s, "manual", now).await?;
                    sqlx::query(
                        "UPDATE schedules SET next_run_at = $1, last_run_id = $2, updated_at = $3 WHERE name = $4 AND processor = $5",
                    )
                    .bind(now + s.every_ms.max(1))
                    .bind(&id)
                    .bind(now)
                    .bind(name)
                    .bind(processor)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(id))
                }

                async fn claim_sweep_runs(
                    &self,
                    worker: &str,
                    now: Millis,
                    lease_ms: i64,
                    limit: i64,
                    only: Option<&[String]>,
                ) -> Result<Vec<SweepRunRow>, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    let sql = format!(
                        "SELECT id, lease_token, state FROM sweep_runs WHERE (state = 'pending' AND run_at <= $1) \
                         OR (state = 'running' AND lease_expires_at <= {}) ORDER BY run_at",
                        $dbnow
                    );
                    let due: Vec<(String, i64, String)> = sqlx::query_as(&sql).bind(now).fetch_all(&mut *tx).await?;
                    let mut claimed = Vec::new();
                    for (id, token, state) in due {
                        if claimed.len() as i64 >= limit {
                            break;
                        }
                        if only.is_some_and(|o| !o.contains(&id)) {
                            continue;
                        }
                        let sql = format!(
                            "UPDATE sweep_runs SET state = 'running', lease_owner = $1, lease_expires_at = {} + $2, \
                             lease_token = lease_token + 1, attempts = attempts + 1, started_at = COALESCE(started_at, $3), \
                             updated_at = $3 WHERE id = $4 AND lease_token = $5 AND state = $6",
                            $dbnow
                        );
                        let r = sqlx::query(&sql)
                            .bind(worker)
                            .bind(lease_ms)
                            .bind(now)
                            .bind(&id)
                            .bind(token)
                            .bind(&state)
                            .execute(&mut *tx)
                            .await?;
                        if r.rows_affected() != 1 {
                            continue;
                        }
                        let kind = if state == "running" { "sweep.lease_expired" } else { "sweep.started" };
                        audit_sql::append_events(
                            &mut *tx,
                            now,
                            vec![PendingEvent {
                                request_id: None,
                                step_id: None,
                                kind: kind.into(),
                                detail: serde_json::json!({ "sweep_run": id, "lease_token": token + 1 }),
                            }],
                        )
                        .await?;
                        claimed.push(id);
                    }
                    let mut rows = Vec::new();
                    for id in &claimed {
                        let sql = format!("{RUN_SELECT} WHERE r.id = $1");
                        let row: SweepRunRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
                        rows.push(row);
                    }
                    tx.commit().await?;
                    Ok(rows)
                }

                async fn sweep_heartbeat(&self, run_id: &str, lease_token: i64, lease_ms: i64) -> Result<bool, StoreError> {
                    let sql = format!(
                        "UPDATE sweep_runs SET lease_expires_at = {} + $1 WHERE id = $2 AND lease_token = $3 AND state = 'running'",
                        $dbnow
                    );
                    let r = sqlx::query(&sql).bind(lease_ms).bind(run_id).bind(lease_token).execute(&self.pool).await?;
                    Ok(r.rows_affected() == 1)
                }

                async fn record_sweep_items(
                    &self,
                    run_id: &str,
                    lease_token: i64,
                    items: Vec<NewSweepItem>,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    if !fenced(&mut *tx, run_id, lease_token).await? {
                        return Ok(false);
                    }
                    for it in items {
                        sqlx::query(
                            "INSERT INTO sweep_items (run_id, item_hash, kind, reference, size, modified_at, state, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (run_id, item_hash) DO NOTHING",
                        )
                        .bind(run_id)
                        .bind(&it.item_hash)
                        .bind(&it.kind)
                        .bind(&it.reference)
                        .bind(it.size)
                        .bind(it.modified_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn record_sweep_results(
                    &self,
                    run_id: &str,
                    lease_token: i64,
                    results: Vec<SweepItemResult>,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    if !fenced(&mut *tx, run_id, lease_token).await? {
                        return Ok(false);
                    }
                    for r in results {
                        sqlx::query(
                            "UPDATE sweep_items SET state = $1, evidence = $2, updated_at = $3 \
                             WHERE run_id = $4 AND item_hash = $5 AND state <> 'removed'",
                        )
                        .bind(if r.removed { "removed" } else { "failed" })
                        .bind(r.evidence.to_string())
                        .bind(now)
                        .bind(run_id)
                        .bind(&r.item_hash)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn finish_sweep_run(
                    &self,
                    run_id: &str,
                    lease_token: i64,
                    end: SweepEnd,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let mut tx = $begin(&self.pool).await?;
                    if !fenced(&mut *tx, run_id, lease_token).await? {
                        return Ok(false);
                    }
                    let (state, run_at, error, kind) = match &end {
                        SweepEnd::Done => ("done", None, None, "sweep.finished"),
                        SweepEnd::Retry { run_at, error } => ("pending", Some(*run_at), Some(error.clone()), "sweep.retry"),
                        SweepEnd::Failed { error } => ("failed", None, Some(error.clone()), "sweep.failed"),
                    };
                    let finished = matches!(end, SweepEnd::Done | SweepEnd::Failed { .. });
                    sqlx::query(
                        "UPDATE sweep_runs SET state = $1, run_at = COALESCE($2, run_at), last_error = $3, \
                         finished_at = CASE WHEN $4 = 1 THEN $5 ELSE finished_at END, lease_owner = NULL, \
                         lease_expires_at = NULL, updated_at = $5 WHERE id = $6 AND lease_token = $7",
                    )
                    .bind(state)
                    .bind(run_at)
                    .bind(&error)
                    .bind(i64::from(finished))
                    .bind(now)
                    .bind(run_id)
                    .bind(lease_token)
                    .execute(&mut *tx)
                    .await?;
                    let sql = format!("{RUN_SELECT} WHERE r.id = $1");
                    let row: SweepRunRow = sqlx::query_as(&sql).bind(run_id).fetch_one(&mut *tx).await?;
                    let mut detail = serde_json::json!({
                        "sweep_run": run_id,
                        "schedule": row.schedule,
                        "processor": row.processor,
                        "state": state,
                        "listed": row.listed,
                        "removed": row.removed,
                        "failed": row.failed,
                        "unconfirmed": row.unconfirmed(),
                    });
                    if let (Some(e), Some(obj)) = (error, detail.as_object_mut()) {
                        obj.insert("reason".into(), serde_json::Value::String(e));
                    }
                    audit_sql::append_events(
                        &mut *tx,
                        now,
                        vec![PendingEvent { request_id: None, step_id: None, kind: kind.into(), detail }],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn sweep_run(&self, id: &str) -> Result<Option<SweepRunRow>, StoreError> {
                    let sql = format!("{RUN_SELECT} WHERE r.id = $1");
                    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?)
                }

                async fn sweep_items(&self, run_id: &str) -> Result<Vec<SweepItemRow>, StoreError> {
                    Ok(sqlx::query_as(
                        "SELECT run_id, item_hash, kind, reference, size, modified_at, state, evidence, updated_at \
                         FROM sweep_items WHERE run_id = $1 ORDER BY kind, modified_at, item_hash",
                    )
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn sweep_runs_between(&self, from: Millis, to: Millis) -> Result<Vec<SweepRunRow>, StoreError> {
                    let sql = format!("{RUN_SELECT} WHERE r.created_at >= $1 AND r.created_at < $2 ORDER BY r.created_at, r.id");
                    Ok(sqlx::query_as(&sql).bind(from).bind(to).fetch_all(&self.pool).await?)
                }

                async fn next_sweep_wake(&self) -> Result<Option<Millis>, StoreError> {
                    let v: (Option<i64>,) = sqlx::query_as(
                        "SELECT MIN(t) FROM (SELECT MIN(next_run_at) AS t FROM schedules \
                         UNION ALL SELECT MIN(run_at) AS t FROM sweep_runs WHERE state = 'pending' \
                         UNION ALL SELECT MIN(lease_expires_at) AS t FROM sweep_runs WHERE state = 'running') w",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(v.0)
                }
            }
        }
    };
}
pub(super) use impl_sweep_store;
