//! The SQLite backend: one file, WAL, zero setup — the embedded default.
//!
//! Writers take the database lock up front (`BEGIN IMMEDIATE`), so a
//! transaction never fails half-way when upgrading from read to write, and the
//! audit chain is appended by one writer at a time. Claiming is a single
//! `UPDATE … RETURNING`, atomic under that lock.

use super::common::{CLAIMABLE, NOT_BLOCKED};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

mod shared {
    crate::store::common::shared_store_fns!(sqlx::SqliteConnection, sqlx::SqlitePool, "SELECT 1");
}

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

#[async_trait]
impl super::Store for SqliteStore {
    async fn migrate(&self) -> Result<(), super::StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| super::StoreError::Migrate(e.to_string()))
    }

    async fn ping(&self) -> Result<(), super::StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_request(
        &self,
        req: super::NewRequest,
        steps: Vec<super::NewStep>,
        now: i64,
    ) -> Result<super::RequestRow, super::StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        shared::insert_request(&mut tx, &req, &steps, now).await?;
        tx.commit().await?;
        shared::get_request(&self.pool, &req.id)
            .await?
            .ok_or_else(|| super::StoreError::Unavailable("request vanished after insert".into()))
    }

    async fn get_request(&self, id: &str) -> Result<Option<super::RequestRow>, super::StoreError> {
        shared::get_request(&self.pool, id).await
    }

    async fn find_by_external_id(
        &self,
        ext: &str,
    ) -> Result<Option<super::RequestRow>, super::StoreError> {
        shared::find_by_external_id(&self.pool, ext).await
    }

    async fn list_requests(
        &self,
        f: &super::RequestFilter,
    ) -> Result<Vec<super::RequestRow>, super::StoreError> {
        shared::list_requests(&self.pool, f).await
    }

    async fn steps(&self, request_id: &str) -> Result<Vec<super::StepRow>, super::StoreError> {
        shared::steps(&self.pool, request_id).await
    }

    async fn claim_due(
        &self,
        worker: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<super::StepRow>, super::StoreError> {
        let sql = format!(
            "UPDATE steps SET state = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
             started_at = COALESCE(started_at, $3), updated_at = $3 \
             WHERE id IN (SELECT s.id FROM steps s WHERE s.state IN {CLAIMABLE} AND s.run_at <= $3 AND {NOT_BLOCKED} \
             ORDER BY s.run_at LIMIT $4) RETURNING {}",
            super::common::STEP_COLS
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let raw: Vec<super::common::RawStep> = sqlx::query_as(&sql)
            .bind(worker)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        raw.into_iter()
            .map(super::common::RawStep::into_row)
            .collect()
    }

    async fn release_expired_leases(&self, now: i64) -> Result<u64, super::StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = shared::release_expired(&mut tx, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn heartbeat(
        &self,
        step_id: i64,
        worker: &str,
        lease_until: i64,
    ) -> Result<bool, super::StoreError> {
        shared::heartbeat(&self.pool, step_id, worker, lease_until).await
    }

    async fn next_wake(&self) -> Result<Option<i64>, super::StoreError> {
        shared::next_wake(&self.pool).await
    }

    async fn apply(&self, changes: super::ChangeSet) -> Result<super::Applied, super::StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (applied, commit) = shared::apply_in(&mut tx, changes).await?;
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(applied)
    }

    async fn events(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<super::EventRow>, super::StoreError> {
        shared::events(&self.pool, after_seq, limit).await
    }

    async fn request_events(
        &self,
        request_id: &str,
    ) -> Result<Vec<super::EventRow>, super::StoreError> {
        shared::request_events(&self.pool, request_id).await
    }

    async fn step_counts(&self) -> Result<Vec<(String, String, i64)>, super::StoreError> {
        shared::step_counts(&self.pool).await
    }

    async fn steps_received_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<super::StepRow>, super::StoreError> {
        shared::steps_received_between(&self.pool, from, to).await
    }

    async fn shred_identities(
        &self,
        now: i64,
        retention_ms: i64,
    ) -> Result<Vec<String>, super::StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let ids = shared::shred_identities(&mut tx, now, retention_ms).await?;
        tx.commit().await?;
        if !ids.is_empty() {
            // The WAL still holds earlier versions of the shredded rows' pages:
            // copy everything into the main file and truncate the WAL to zero.
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await?;
            if busy != 0 {
                tracing::warn!("WAL checkpoint after crypto-shredding was blocked by a reader; it completes at the next checkpoint");
            }
        }
        Ok(ids)
    }
}
