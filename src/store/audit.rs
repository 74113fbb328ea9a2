//! The audit log: appending events to their hash chains and reading them back.
//!
//! Invariants: events are append-only; each belongs to one chain
//! (`domain::event::chain_of`: one per request, hold and processor), is
//! numbered from its chain's position and hashed from its chain's previous
//! hash (`domain::event::event_hash`), and the chain's head (`chain_heads`)
//! moves in the same transaction as the append, with `checkpointed` cleared.
//! Chains of one append are locked in name order. Processor free text never
//! enters a chain: the event keeps its SHA-256, the text goes to `texts`.
//! Appends happen only inside other writes (see `append_events`); this trait
//! only reads.

use super::{ChainHead, EventRow, StoreError};
use async_trait::async_trait;

/// Reading the audit events and their chains.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Audit events from `after_seq` (exclusive), at most `limit`.
    async fn events(&self, after_seq: i64, limit: i64) -> Result<Vec<EventRow>, StoreError>;

    /// A request's audit events (its own chain, and any legacy rows), by `seq`.
    async fn request_events(&self, request_id: &str) -> Result<Vec<EventRow>, StoreError>;

    /// Events of one chain with `chain_seq > after`, in chain order, at most `limit`.
    async fn chain_events(
        &self,
        chain: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;

    /// The head of one chain, if it has one.
    async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError>;

    /// Chain heads with names after `after`, by name, at most `limit`.
    async fn chain_heads(&self, after: &str, limit: i64) -> Result<Vec<ChainHead>, StoreError>;

    /// Events in chain order — by `(chain, chain_seq)`, after the position
    /// `after` — at most `limit`: one pass over every chain for `audit verify`.
    async fn events_in_chain_order(
        &self,
        after: (&str, i64),
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;

    /// Events without a chain or position (written outside lethe), by `seq`, at most `limit`.
    async fn unchained_events(&self, limit: i64) -> Result<Vec<EventRow>, StoreError>;
}

/// Stamp out the audit statements for one backend, as the module `audit_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! audit_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::domain::event::{chain_of, event_hash, ChainedEvent, GENESIS_HASH};
        use $crate::store::common::{PendingEvent, RawEvent};
        use $crate::store::{EventRow, StoreError};

        pub(super) async fn append_events(conn: &mut $conn, now: i64, events: Vec<PendingEvent>) -> Result<(), StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            // Processor free text stays outside the chain: the event keeps the
            // text's SHA-256, the text goes to `texts`, destroyed with the identities.
            let mut events = events;
            for ev in events.iter_mut() {
                let Some(obj) = ev.detail.as_object_mut() else { continue };
                let Some(serde_json::Value::String(text)) = obj.remove("error") else { continue };
                let hash = $crate::store::common::text_hash(&text);
                obj.insert("error_sha256".into(), serde_json::Value::String(hash.clone()));
                if let Some(req) = &ev.request_id {
                    sqlx::query("INSERT INTO texts (hash, request_id, body, at) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING")
                        .bind(&hash)
                        .bind(req)
                        .bind(&text)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            // One chain per request, hold and processor: group the events, and
            // lock the chains' heads in name order (a fixed lock order, so two
            // writers touching the same chains cannot deadlock on them).
            let mut chains: std::collections::BTreeMap<String, Vec<PendingEvent>> = std::collections::BTreeMap::new();
            for ev in events {
                chains.entry(chain_of(ev.request_id.as_deref(), &ev.kind, &ev.detail)).or_default().push(ev);
            }
            for (chain, evs) in chains {
                // Creates the head on a chain's first append, or locks the
                // existing one (PostgreSQL: a concurrent appender to this chain
                // waits here and then reads the head this one commits).
                let (mut chain_seq, mut prev): (i64, String) = sqlx::query_as(
                    "INSERT INTO chain_heads (chain, chain_seq, hash, event_seq, updated_at, checkpointed) \
                     VALUES ($1, 0, $2, 0, $3, FALSE) \
                     ON CONFLICT (chain) DO UPDATE SET updated_at = chain_heads.updated_at RETURNING chain_seq, hash",
                )
                .bind(&chain)
                .bind(GENESIS_HASH)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                // The chain's events in one multi-row statement (9 values a row).
                let mut rows = Vec::with_capacity(evs.len());
                for ev in evs {
                    chain_seq += 1;
                    let hash = event_hash(
                        &prev,
                        &ChainedEvent {
                            chain: &chain,
                            chain_seq,
                            at_ms: now,
                            request_id: ev.request_id.as_deref(),
                            step_id: ev.step_id,
                            kind: &ev.kind,
                            detail: &ev.detail,
                        },
                    );
                    rows.push((chain_seq, ev, std::mem::replace(&mut prev, hash.clone()), hash));
                }
                let mut event_seq = 0;
                // PostgreSQL: up to 100 events and the head's update in one
                // statement (one round trip fewer while the chain is locked).
                let fused = super::DML_IN_CTE && rows.len() <= 100;
                for chunk in rows.chunks(100) {
                    let values = (0..chunk.len())
                        .map(|r| {
                            let b = r * 9;
                            format!(
                                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                                b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let insert = format!(
                        "INSERT INTO events (chain, chain_seq, at, request_id, step_id, kind, detail, prev_hash, hash) \
                         VALUES {values} RETURNING seq"
                    );
                    let sql = if fused {
                        let b = chunk.len() * 9;
                        format!(
                            "WITH ins AS ({insert}) UPDATE chain_heads SET chain_seq = ${}, hash = ${}, \
                             event_seq = (SELECT MAX(seq) FROM ins), updated_at = ${}, checkpointed = FALSE \
                             WHERE chain = ${} RETURNING event_seq",
                            b + 1, b + 2, b + 3, b + 4
                        )
                    } else {
                        insert
                    };
                    let mut q = sqlx::query_as::<_, (i64,)>(&sql);
                    for (seq_in_chain, ev, prev_hash, hash) in chunk {
                        q = q
                            .bind(&chain)
                            .bind(*seq_in_chain)
                            .bind(now)
                            .bind(&ev.request_id)
                            .bind(ev.step_id)
                            .bind(&ev.kind)
                            .bind(ev.detail.to_string())
                            .bind(prev_hash)
                            .bind(hash);
                    }
                    if fused {
                        q = q.bind(chain_seq).bind(&prev).bind(now).bind(&chain);
                    }
                    let written = q.fetch_all(&mut *conn).await?;
                    if fused && written.len() != 1 {
                        return Err(StoreError::Failed(format!("chain head `{chain}` was not updated")));
                    }
                    for (seq,) in written {
                        event_seq = event_seq.max(seq);
                    }
                }
                if fused {
                    continue;
                }
                sqlx::query(
                    "UPDATE chain_heads SET chain_seq = $1, hash = $2, event_seq = $3, updated_at = $4, checkpointed = FALSE \
                     WHERE chain = $5",
                )
                .bind(chain_seq)
                .bind(&prev)
                .bind(event_seq)
                .bind(now)
                .bind(&chain)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(super) async fn events(pool: &$pool, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!("SELECT {} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", $crate::store::common::EVENT_COLS);
            let raw: Vec<RawEvent> = sqlx::query_as(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn request_events(pool: &$pool, request_id: &str) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!("SELECT {} FROM events WHERE request_id = $1 ORDER BY seq", $crate::store::common::EVENT_COLS);
            let raw: Vec<RawEvent> = sqlx::query_as(&sql)
            .bind(request_id)
            .fetch_all(pool)
            .await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn chain_events(pool: &$pool, chain: &str, after: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE chain = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(chain).bind(after).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn chain_head(pool: &$pool, chain: &str) -> Result<Option<$crate::store::ChainHead>, StoreError> {
            let sql = format!("SELECT {} FROM chain_heads WHERE chain = $1", $crate::store::common::HEAD_COLS);
            // fetch_all: see `data_key` (no un-stepped SQLite statement left open).
            let rows: Vec<$crate::store::common::RawHead> = sqlx::query_as(&sql).bind(chain).fetch_all(pool).await?;
            Ok(rows.into_iter().next().map($crate::store::common::head_row))
        }

        pub(super) async fn chain_heads(pool: &$pool, after: &str, limit: i64) -> Result<Vec<$crate::store::ChainHead>, StoreError> {
            let sql = format!(
                "SELECT {} FROM chain_heads WHERE chain > $1 ORDER BY chain LIMIT $2",
                $crate::store::common::HEAD_COLS
            );
            let rows: Vec<$crate::store::common::RawHead> = sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?;
            Ok(rows.into_iter().map($crate::store::common::head_row).collect())
        }

        pub(super) async fn events_in_chain_order(
            pool: &$pool,
            after: (&str, i64),
            limit: i64,
        ) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE (chain, chain_seq) > ($1, $2) \
                 ORDER BY chain, chain_seq LIMIT $3",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(after.0).bind(after.1).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }

        pub(super) async fn unchained_events(pool: &$pool, limit: i64) -> Result<Vec<EventRow>, StoreError> {
            let sql = format!(
                "SELECT {} FROM events WHERE chain IS NULL OR chain_seq IS NULL ORDER BY seq LIMIT $1",
                $crate::store::common::EVENT_COLS
            );
            let raw: Vec<RawEvent> = sqlx::query_as(&sql).bind(limit).fetch_all(pool).await?;
            raw.into_iter().map(RawEvent::into_row).collect()
        }
    };
}

pub(super) use audit_sql_fns;

/// Implement [`AuditStore`] for a backend struct with a `pool` field.
macro_rules! impl_audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::audit::AuditStore for $store {
            async fn events(
                &self,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                audit_sql::events(&self.pool, after_seq, limit).await
            }

            async fn request_events(
                &self,
                request_id: &str,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                audit_sql::request_events(&self.pool, request_id).await
            }

            async fn chain_events(
                &self,
                chain: &str,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                audit_sql::chain_events(&self.pool, chain, after, limit).await
            }

            async fn chain_head(
                &self,
                chain: &str,
            ) -> Result<Option<$crate::store::ChainHead>, $crate::store::StoreError> {
                audit_sql::chain_head(&self.pool, chain).await
            }

            async fn chain_heads(
                &self,
                after: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::ChainHead>, $crate::store::StoreError> {
                audit_sql::chain_heads(&self.pool, after, limit).await
            }

            async fn events_in_chain_order(
                &self,
                after: (&str, i64),
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                audit_sql::events_in_chain_order(&self.pool, after, limit).await
            }

            async fn unchained_events(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::store::EventRow>, $crate::store::StoreError> {
                audit_sql::unchained_events(&self.pool, limit).await
            }
        }
    };
}

pub(super) use impl_audit_store;
