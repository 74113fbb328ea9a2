//! The transactional outbox of status callbacks: rows are queued in the same
//! transaction as the change they report (request created, first step
//! started, derived status changed, one-off notifications), and delivered
//! later, in order per destination.
//!
//! Invariants: per (request, url), only the oldest undelivered row is ever
//! claimed; a claim hides a row until `visible_at` and counts an attempt; a
//! row ends `delivered` or `dead`.

use super::{Millis, OutboxRow, StoreError};
use async_trait::async_trait;

/// Delivering queued status callbacks.
#[async_trait]
pub trait OutboxStore: Send + Sync {
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
}

/// Stamp out the outbox statements for one backend, as the module `outbox_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! outbox_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::store::StoreError;

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

        /// Queue a one-off `lethe` callback (`event`) to `url`, in the change's transaction.
        pub(super) async fn enqueue_notify(
            conn: &mut $conn,
            request_id: &str,
            url: &str,
            event: &str,
            status: $crate::domain::RequestStatus,
            now: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                 VALUES ($1, $2, 'lethe', $3, $4, $5, $5)",
            )
            .bind(request_id)
            .bind(url)
            .bind(event)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Queue a `status` callback to each of a request's destinations, in
        /// the transaction that changed its derived status.
        pub(super) async fn enqueue_status(
            conn: &mut $conn,
            request_id: &str,
            status: $crate::domain::RequestStatus,
            now: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
                 SELECT request_id, url, protocol, 'status', $2, $3, $3 FROM request_callbacks WHERE request_id = $1",
            )
            .bind(request_id)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
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
    };
}

pub(super) use outbox_sql_fns;

/// Implement [`OutboxStore`] for a backend struct with a `pool` field.
macro_rules! impl_outbox_store {
    ($store:ty, $begin:path, $claim_outbox_sql:path) => {
        #[async_trait::async_trait]
        impl $crate::store::outbox::OutboxStore for $store {
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
                outbox_sql::outbox_delivered(&self.pool, id, now).await
            }

            async fn outbox_failed(
                &self,
                id: i64,
                retry_at: Option<i64>,
                error: &str,
            ) -> Result<(), $crate::store::StoreError> {
                outbox_sql::outbox_failed(&self.pool, id, retry_at, error).await
            }

            async fn next_outbox_wake(&self) -> Result<Option<i64>, $crate::store::StoreError> {
                outbox_sql::next_outbox_wake(&self.pool).await
            }
        }
    };
}

pub(super) use impl_outbox_store;
