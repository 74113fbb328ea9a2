//! The PostgreSQL backend: for more than one machine; any number of daemons share it.
//!
//! Claiming uses `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on
//! each other's rows and never take the same step. Audit appends are
//! serialised by a transaction-scoped advisory lock taken last, just before the
//! events are written, so it is held for microseconds.

use super::common::{CLAIMABLE, NOT_BLOCKED};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

mod shared {
    crate::store::common::shared_store_fns!(
        sqlx::PgConnection,
        sqlx::PgPool,
        "SELECT pg_advisory_xact_lock(7405854)"
    );
}

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `postgres://…`.
    pub async fn connect(url: &str) -> Result<PgStore, super::StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| super::StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(PgStore { pool })
    }

    /// The pool, for tests that need to reach past the trait (e.g. to tamper with a row).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl super::Store for PgStore {
    async fn migrate(&self) -> Result<(), super::StoreError> {
        sqlx::migrate!("./migrations/postgres")
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
        let mut tx = self.pool.begin().await?;
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
            "WITH due AS (SELECT s.id FROM steps s WHERE s.state IN {CLAIMABLE} AND s.run_at <= $3 AND {NOT_BLOCKED} \
             ORDER BY s.run_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE steps SET state = 'running', lease_owner = $1, lease_expires_at = $2, attempts = steps.attempts + 1, \
             started_at = COALESCE(steps.started_at, $3), updated_at = $3 FROM due WHERE steps.id = due.id RETURNING steps.*"
        );
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        // Serialise change sets of one request: the derived request status is
        // computed from every step's state, so two workers finishing two steps of
        // the same request at once must not each miss the other's step (under
        // READ COMMITTED both would, and the later commit would write a stale
        // status). SQLite gets this from `BEGIN IMMEDIATE`.
        sqlx::query("SELECT 1 FROM requests WHERE id = $1 FOR UPDATE")
            .bind(&changes.request_id)
            .execute(&mut *tx)
            .await?;
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
}
