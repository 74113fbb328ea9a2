//! Read-only views for metrics, period reports, deadline warnings and the
//! suppression list. Nothing here writes.

use super::{Millis, RequestRow, StepRow, StoreError, SuppressionRow};
use async_trait::async_trait;

/// Counts and period views.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Requests by status.
    async fn request_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Counts of steps by (processor, state), for metrics and reports.
    async fn step_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Attempts made, summed per processor.
    async fn attempt_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Callbacks by outbox state (`pending`, `delivered`, `dead`).
    async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Steps of the requests received in `[from, to)`, by processor (period reports).
    async fn steps_received_between(
        &self,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<StepRow>, StoreError>;

    /// Open requests due at or before `by` that have not been reported as near their deadline.
    async fn deadline_unwarned(&self, by: Millis) -> Result<Vec<RequestRow>, StoreError>;

    /// Open requests due in `[from, to)`.
    async fn count_due_between(&self, from: Millis, to: Millis) -> Result<i64, StoreError>;

    /// Active suppression rows whose hash is one of `hashes`.
    async fn suppressed(&self, hashes: &[String]) -> Result<Vec<SuppressionRow>, StoreError>;

    /// The whole suppression list (active and pending), newest first.
    async fn suppression_list(&self) -> Result<Vec<SuppressionRow>, StoreError>;
}

/// Stamp out the reports statements for one backend, as the module `report_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! report_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::store::common::{RawRequest, RawStep, REQ_COLS, STEP_COLS};
        use $crate::store::{RequestRow, StepRow, StoreError};

        pub(super) async fn request_counts(pool: &$pool) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(sqlx::query_as("SELECT status, COUNT(*) FROM requests GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await?)
        }

        pub(super) async fn step_counts(pool: &$pool) -> Result<Vec<(String, String, i64)>, StoreError> {
            Ok(sqlx::query_as("SELECT processor, state, COUNT(*) FROM steps GROUP BY processor, state ORDER BY processor, state")
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

        /// Steps of the requests received in `[from, to)`, by processor.
        pub(super) async fn steps_received_between(pool: &$pool, from: i64, to: i64) -> Result<Vec<StepRow>, StoreError> {
            let sql = format!(
                "SELECT {STEP_COLS} FROM steps WHERE request_id IN \
                 (SELECT id FROM requests WHERE received_at >= $1 AND received_at < $2) ORDER BY processor, id"
            );
            let raw: Vec<RawStep> = sqlx::query_as(&sql).bind(from).bind(to).fetch_all(pool).await?;
            raw.into_iter().map(RawStep::into_row).collect()
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
    };
}

pub(super) use report_sql_fns;

/// Implement [`ReportStore`] for a backend struct with a `pool` field.
macro_rules! impl_reports_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::reports::ReportStore for $store {
            async fn request_counts(
                &self,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                report_sql::request_counts(&self.pool).await
            }

            async fn step_counts(
                &self,
            ) -> Result<Vec<(String, String, i64)>, $crate::store::StoreError> {
                report_sql::step_counts(&self.pool).await
            }

            async fn attempt_counts(
                &self,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                report_sql::attempt_counts(&self.pool).await
            }

            async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                report_sql::outbox_counts(&self.pool).await
            }

            async fn steps_received_between(
                &self,
                from: i64,
                to: i64,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                report_sql::steps_received_between(&self.pool, from, to).await
            }

            async fn deadline_unwarned(
                &self,
                by: i64,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                report_sql::deadline_unwarned(&self.pool, by).await
            }

            async fn count_due_between(
                &self,
                from: i64,
                to: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                report_sql::count_due_between(&self.pool, from, to).await
            }

            async fn suppressed(
                &self,
                hashes: &[String],
            ) -> Result<Vec<$crate::store::SuppressionRow>, $crate::store::StoreError> {
                report_sql::suppressed(&self.pool, hashes).await
            }

            async fn suppression_list(
                &self,
            ) -> Result<Vec<$crate::store::SuppressionRow>, $crate::store::StoreError> {
                report_sql::suppression_list(&self.pool).await
            }
        }
    };
}

pub(super) use impl_reports_store;
