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

mod shared {
    crate::store::common::shared_store_fns!(
        sqlx::SqliteConnection,
        sqlx::SqlitePool,
        super::DB_NOW
    );
}

mod ckpt {
    crate::store::checkpoints::checkpoint_store_fns!(
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

async fn begin(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

fn claim_sql() -> String {
    format!(
        "{} UPDATE steps SET state = 'running', lease_owner = $1, lease_expires_at = {DB_NOW} + $2, attempts = attempts + 1, \
         lease_token = lease_token + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
         WHERE id IN (SELECT id FROM due) RETURNING {STEP_COLS}",
        claim_pick("")
    )
}

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

super::common::impl_store!(
    SqliteStore,
    begin,
    claim_sql,
    claim_outbox_sql,
    after_shred,
    sqlx::migrate!("./migrations/sqlite")
);

super::sweep::impl_sweep_store!(SqliteStore, sqlx::SqliteConnection, begin, shared, DB_NOW);
