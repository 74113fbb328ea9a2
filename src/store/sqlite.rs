//! The SQLite backend: one file, WAL, zero setup — the embedded default.
//!
//! Writers take the database lock up front (`BEGIN IMMEDIATE`), so a
//! transaction never fails half-way when upgrading from read to write, and the
//! audit chain is appended by one writer at a time. Claiming is a single
//! `UPDATE … RETURNING`, atomic under that lock.

use super::common::{claim_pick, STEP_COLS};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

mod audit_sql {
    crate::store::audit::audit_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod request_sql {
    crate::store::requests::request_sql_fns!(
        sqlx::SqliteConnection,
        sqlx::SqlitePool,
        super::DB_NOW
    );
}

mod queue_sql {
    crate::store::queue::queue_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod hold_sql {
    crate::store::holds::hold_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod outbox_sql {
    crate::store::outbox::outbox_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod report_sql {
    crate::store::reports::report_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod key_sql {
    crate::store::keys::key_sql_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, super::DB_NOW);
}

mod checkpoint_sql {
    crate::store::checkpoints::checkpoint_sql_fns!(
        sqlx::SqliteConnection,
        sqlx::SqlitePool,
        super::DB_NOW
    );
}

/// The database's clock in milliseconds. For the embedded store it is the
/// machine's clock; written as SQL so both backends stamp leases the same way.
const DB_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) `sqlite://FILE`.
    pub async fn connect(url: &str) -> Result<SqliteStore, super::StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| super::StoreError::Unavailable(format!("bad SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Overwrite deleted content (e.g. shredded identities) with zeros
            // instead of leaving it in free space inside the file.
            .pragma("secure_delete", "fast")
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// The pool, for tests that need to reach past the trait (e.g. to tamper with a row).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A write transaction: this process's turn to write the file (see
/// [`WriteTx`](super::WriteTx)), then `BEGIN IMMEDIATE`.
async fn begin(pool: &SqlitePool) -> Result<super::WriteTx<sqlx::Sqlite>, sqlx::Error> {
    let turn = super::tx::sqlite_turn(pool.connect_options().get_filename())
        .lock_owned()
        .await;
    let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    Ok(super::WriteTx::new(tx, Some(turn)))
}

fn claim_sql() -> String {
    format!(
        "{} UPDATE steps SET state = 'running', lease_owner = $1, lease_expires_at = {DB_NOW} + $2, attempts = attempts + 1, \
         lease_token = lease_token + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
         WHERE id IN (SELECT id FROM due) RETURNING {STEP_COLS}",
        claim_pick("")
    )
}

/// Claim due steps: refill the buckets, pick and lease the steps, spend
/// their tokens and queue `started` callbacks, in one write transaction.
async fn claim(
    pool: &SqlitePool,
    worker: &str,
    now: i64,
    due_by: i64,
    lease_ms: i64,
    limit: i64,
    candidates: i64,
) -> Result<Vec<super::StepRow>, super::StoreError> {
    let mut tx = begin(pool).await?;
    // The refill returns every limit row; the rated ones spend tokens below.
    let limits: Vec<(String, Option<i64>)> = sqlx::query_as(&format!(
        "{} RETURNING processor, rate_milli",
        queue_sql::refill_sql()
    ))
    .fetch_all(&mut *tx)
    .await?;
    let rated: Vec<String> = limits
        .into_iter()
        .filter_map(|(p, rate)| rate.map(|_| p))
        .collect();
    let raw: Vec<super::common::RawStep> = sqlx::query_as(&claim_sql())
        .bind(worker)
        .bind(lease_ms)
        .bind(now)
        .bind(limit)
        .bind(due_by)
        .bind(candidates)
        .fetch_all(&mut *tx)
        .await?;
    let rows = raw
        .into_iter()
        .map(super::common::RawStep::into_row)
        .collect::<Result<Vec<_>, _>>()?;
    spend_tokens(&mut tx, &rated, &rows).await?;
    enqueue_started(&mut tx, &rows, now).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Take one token per claimed step of a rated processor (PostgreSQL's claim
/// function does this in its claim statement).
async fn spend_tokens(
    conn: &mut sqlx::SqliteConnection,
    rated: &[String],
    claimed: &[super::StepRow],
) -> Result<(), super::StoreError> {
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

/// Queue a `started` callback for each request whose first step was just
/// claimed (in the claim's transaction). Later claims of the same request add
/// nothing. PostgreSQL's claim function does this in its claim statement.
async fn enqueue_started(
    conn: &mut sqlx::SqliteConnection,
    claimed: &[super::StepRow],
    now: i64,
) -> Result<(), super::StoreError> {
    let mut first: Vec<&str> = claimed
        .iter()
        .filter(|s| s.started_at == Some(now))
        .map(|s| s.request_id.as_str())
        .collect();
    first.sort_unstable();
    first.dedup();
    // One statement for the whole claim (up to 500 requests each).
    for chunk in first.chunks(500) {
        let marks = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
             SELECT c.request_id, c.url, c.protocol, 'started', r.status, $1, $1 \
             FROM request_callbacks c JOIN requests r ON r.id = c.request_id WHERE c.request_id IN ({marks}) \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.request_id = c.request_id AND o.event = 'started')"
        );
        let mut q = sqlx::query(&sql).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// SQLite has no data-modifying CTEs: those writes are two statements
/// (each costs CPU, not a network round trip).
const DML_IN_CTE: bool = false;

/// Which limit rows a claim locks: none need locking, `BEGIN IMMEDIATE`
/// already made the claim the only writer.
const LIMITS_LOCK: &str = "1 = 1";

fn claim_outbox_sql() -> String {
    format!(
        "UPDATE outbox SET run_at = $2, attempts = attempts + 1 WHERE id IN ({}) RETURNING {}",
        super::common::OUTBOX_DUE,
        super::common::OUTBOX_COLS
    )
}

/// After crypto-shredding: the WAL still holds earlier versions of the
/// shredded rows' pages, so copy everything into the main file and truncate it.
async fn after_shred(pool: &SqlitePool) -> Result<(), super::StoreError> {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(pool)
        .await?;
    if busy != 0 {
        tracing::warn!("WAL checkpoint after crypto-shredding was blocked by a reader; it completes at the next checkpoint");
    }
    Ok(())
}

/// After the migrations: nothing more (the claim is plain SQL here).
async fn after_migrate(_pool: &SqlitePool) -> Result<(), super::StoreError> {
    Ok(())
}

super::schema::impl_schema_store!(
    SqliteStore,
    sqlx::migrate!("./migrations/sqlite"),
    after_migrate
);
super::requests::impl_requests_store!(SqliteStore, begin);
super::queue::impl_queue_store!(SqliteStore, begin, claim, 1);
super::audit::impl_audit_store!(SqliteStore);
super::checkpoints::impl_checkpoints_store!(SqliteStore, begin);
super::holds::impl_holds_store!(SqliteStore, begin);
super::outbox::impl_outbox_store!(SqliteStore, begin, claim_outbox_sql);
super::reports::impl_reports_store!(SqliteStore);
super::keys::impl_keys_store!(SqliteStore, begin, after_shred);

super::sweep::impl_sweep_store!(
    SqliteStore,
    sqlx::SqliteConnection,
    begin,
    audit_sql,
    DB_NOW
);
