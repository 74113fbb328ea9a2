//! Ad-hoc legal holds on a subject (by keyed hash), each added and released
//! with an audit event on its own chain (`hold:<id>`).
//!
//! Invariants: a hold is released at most once; releasing or adding one never
//! changes a step directly, it only makes the subject's held steps due
//! ([`HoldStore::wake_held_steps`]) so a worker re-checks them.

use super::{HoldRow, Millis, StoreError};
use async_trait::async_trait;

/// Legal holds.
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Record an ad-hoc hold, with a `hold.added` event.
    async fn add_hold(&self, hold: HoldRow) -> Result<(), StoreError>;

    /// Release a hold; returns it (None if unknown or already released), with a `hold.released` event.
    async fn release_hold(&self, id: &str, now: Millis) -> Result<Option<HoldRow>, StoreError>;

    /// Holds, newest first; released ones too if asked.
    async fn list_holds(&self, include_released: bool) -> Result<Vec<HoldRow>, StoreError>;

    /// Holds on a subject that are in force at `now`.
    async fn active_holds(
        &self,
        subject_hash: &str,
        now: Millis,
    ) -> Result<Vec<HoldRow>, StoreError>;

    /// Make a subject's held steps due now, so a worker re-checks their holds.
    async fn wake_held_steps(&self, subject_hash: &str, now: Millis) -> Result<u64, StoreError>;
}

/// Stamp out the holds statements for one backend, as the module `hold_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! hold_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::store::common::PendingEvent;
        use $crate::store::StoreError;

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
            super::audit_sql::append_events(conn, h.created_at, vec![PendingEvent { request_id: None, step_id: None, kind: "hold.added".into(), detail }]).await
        }

        pub(super) async fn release_hold(conn: &mut $conn, id: &str, now: i64) -> Result<Option<$crate::store::HoldRow>, StoreError> {
            let sql = format!(
                "UPDATE holds SET released_at = $1 WHERE id = $2 AND released_at IS NULL RETURNING {}",
                $crate::store::common::HOLD_COLS
            );
            let raw: Option<$crate::store::common::RawHold> = sqlx::query_as(&sql).bind(now).bind(id).fetch_optional(&mut *conn).await?;
            let Some(h) = raw.map($crate::store::common::RawHold::into_row) else { return Ok(None) };
            let detail = serde_json::json!({"hold": h.id, "subject": h.subject_masked, "basis": h.basis});
            super::audit_sql::append_events(conn, now, vec![PendingEvent { request_id: None, step_id: None, kind: "hold.released".into(), detail }]).await?;
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
    };
}

pub(super) use hold_sql_fns;

/// Implement [`HoldStore`] for a backend struct with a `pool` field.
macro_rules! impl_holds_store {
    ($store:ty, $begin:path) => {
        #[async_trait::async_trait]
        impl $crate::store::holds::HoldStore for $store {
            async fn add_hold(
                &self,
                hold: $crate::store::HoldRow,
            ) -> Result<(), $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    hold_sql::add_hold(&mut tx, &hold).await?;
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
                    let h = hold_sql::release_hold(&mut tx, id, now).await?;
                    tx.commit().await?;
                    Ok(h)
                })
                .await
            }

            async fn list_holds(
                &self,
                include_released: bool,
            ) -> Result<Vec<$crate::store::HoldRow>, $crate::store::StoreError> {
                hold_sql::list_holds(&self.pool, include_released).await
            }

            async fn active_holds(
                &self,
                subject_hash: &str,
                now: i64,
            ) -> Result<Vec<$crate::store::HoldRow>, $crate::store::StoreError> {
                hold_sql::active_holds(&self.pool, subject_hash, now).await
            }

            async fn wake_held_steps(
                &self,
                subject_hash: &str,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                hold_sql::wake_held_steps(&self.pool, subject_hash, now).await
            }
        }
    };
}

pub(super) use impl_holds_store;
