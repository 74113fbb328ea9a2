//! Personal data's keys and lifetime: per-request data keys (envelope
//! encryption), re-wrapping them under a new master key, moving legacy
//! requests onto data keys, crypto-shredding closed requests' identities, and
//! finding export files due for deletion.
//!
//! Invariants: a destroyed data key (`wrapped IS NULL`) never comes back;
//! shredding removes the sealed identities, the data key, the processor free
//! text and the steps' last errors of a request together, with one
//! `request.identities_destroyed` event, and only once no step can still need
//! them. Re-wrapping and upgrading are compare-and-set (on the old `kid`, the
//! old sealed blob).

use super::{DataKeyRow, Millis, Rewrap, StoreError, WrappedKey};
use async_trait::async_trait;

/// Data keys, crypto-shredding and export retention.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Crypto-shredding: set the sealed identities of every closed request to
    /// NULL, and destroy its wrapped data key, once no step can still need them (nothing held, in grace, awaiting
    /// confirmation or runnable) and it last changed at least `retention_ms`
    /// before `now`. Writes a `request.identities_destroyed` event for each and
    /// returns their ids. The keyed hash and the masked form remain.
    async fn shred_identities(
        &self,
        now: Millis,
        retention_ms: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// A data key (also a destroyed one), by request id or reserved name.
    async fn data_key(&self, request_id: &str) -> Result<Option<DataKeyRow>, StoreError>;

    /// Insert a data key unless one exists under that id; returns the stored one.
    async fn put_data_key_if_absent(
        &self,
        request_id: &str,
        key: WrappedKey,
        now: Millis,
    ) -> Result<DataKeyRow, StoreError>;

    /// Live (not destroyed) data keys not wrapped by `kid`, ordered by id,
    /// with ids after `after`, at most `limit`.
    async fn data_keys_not_under(
        &self,
        kid: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<DataKeyRow>, StoreError>;

    /// Re-wrap data keys in one transaction; each only if it is still wrapped
    /// by its `old_kid` and not destroyed. Returns how many were re-wrapped.
    async fn rewrap_data_keys(&self, batch: Vec<Rewrap>) -> Result<u64, StoreError>;

    /// Requests whose live identities are sealed directly under a master key
    /// (no data key): (id, sealed), ids after `after`, at most `limit`.
    async fn legacy_identities(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Move a legacy request onto a data key: replace its sealed identities
    /// (only if they are still `old_sealed`) and insert its data key, in one
    /// transaction. False if the row changed meanwhile (shredded, or done).
    async fn upgrade_identities(
        &self,
        request_id: &str,
        old_sealed: &[u8],
        new_sealed: &[u8],
        key: WrappedKey,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Closed export requests whose export files are due for deletion: closed
    /// (completed, or cancelled) at or before `now - retention_ms`, and no
    /// `request.exports_deleted` event yet.
    async fn exports_due_for_deletion(
        &self,
        now: Millis,
        retention_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
}

/// Stamp out the keys statements for one backend, as the module `key_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! key_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::store::common::PendingEvent;
        use $crate::store::StoreError;

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
            super::audit_sql::append_events(conn, now, events).await?;
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

pub(super) use key_sql_fns;

/// Implement [`KeyStore`] for a backend struct with a `pool` field.
macro_rules! impl_keys_store {
    ($store:ty, $begin:path, $after_shred:path) => {
        #[async_trait::async_trait]
        impl $crate::store::keys::KeyStore for $store {
            async fn shred_identities(
                &self,
                now: i64,
                retention_ms: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let pool = &self.pool;
                let ids = $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    let ids = key_sql::shred_identities(&mut tx, now, retention_ms).await?;
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
                key_sql::data_key(&self.pool, request_id).await
            }

            async fn put_data_key_if_absent(
                &self,
                request_id: &str,
                key: $crate::store::WrappedKey,
                now: i64,
            ) -> Result<$crate::store::DataKeyRow, $crate::store::StoreError> {
                key_sql::put_data_key_if_absent(&self.pool, request_id, &key, now).await
            }

            async fn data_keys_not_under(
                &self,
                kid: &str,
                after: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::DataKeyRow>, $crate::store::StoreError> {
                key_sql::data_keys_not_under(&self.pool, kid, after, limit).await
            }

            async fn rewrap_data_keys(
                &self,
                batch: Vec<$crate::store::Rewrap>,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = $begin(&self.pool).await?;
                let n = key_sql::rewrap_data_keys(&mut tx, &batch).await?;
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
                key_sql::legacy_identities(&self.pool, after, limit).await
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
                let ok = key_sql::upgrade_identities(
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
                key_sql::exports_due_for_deletion(&self.pool, now, retention_ms).await
            }
        }
    };
}

pub(super) use impl_keys_store;
