//! Rows and statements of signed audit checkpoints (migration 0012): the
//! checkpoints, the leaves each covers, and the leader lease that elects the
//! one process writing them. The store keeps rows and decides nothing: the
//! caller signs (see `audit::checkpoint`), the store writes what it is given
//! in one transaction and marks exactly the heads it covered.

use super::{Millis, StoreError};
use async_trait::async_trait;

/// One chain head covered by a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLeaf {
    /// The chain.
    pub chain: String,
    /// The head's position in its chain.
    pub chain_seq: i64,
    /// The head event's hash.
    pub hash: String,
}

/// What the signer is given: the next checkpoint's position, time, the
/// previous checkpoint's hash and the heads to cover (sorted by chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDraft {
    /// The next id (previous + 1, from 1).
    pub id: i64,
    /// The database clock, ms.
    pub at: Millis,
    /// The previous checkpoint's `hash` (64 zeros for the first).
    pub prev_hash: String,
    /// The heads not yet checkpointed (bounded batch), by chain.
    pub leaves: Vec<CheckpointLeaf>,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointRow {
    /// Position in the checkpoint chain, from 1.
    pub id: i64,
    /// When (ms).
    pub at: Millis,
    /// The previous checkpoint's hash.
    pub prev_hash: String,
    /// Merkle root (hex).
    pub root: String,
    /// Leaves covered.
    pub size: i64,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature (base64).
    pub signature: String,
    /// SHA-256 of the signed message (the next one's `prev_hash`).
    pub hash: String,
    /// The process that wrote it (the lease holder).
    pub writer: String,
}

/// What signing a draft gives back.
pub type CheckpointSigner<'a> = &'a (dyn Fn(&CheckpointDraft) -> CheckpointRow + Send + Sync);

/// The outcome of [`CheckpointStore::write_checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointWrite {
    /// The caller does not hold the live lease: nothing written.
    NotLeader,
    /// Every head is already checkpointed.
    NothingNew,
    /// Written; `marked` heads were marked checkpointed (fewer than the
    /// checkpoint's size when a chain grew meanwhile).
    Written {
        /// The checkpoint.
        checkpoint: CheckpointRow,
        /// Heads marked.
        marked: u64,
    },
}

/// A checkpointed leaf that the events no longer match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafMismatch {
    /// The checkpoint.
    pub checkpoint_id: i64,
    /// The leaf as checkpointed.
    pub leaf: CheckpointLeaf,
    /// The hash of the event now at that position, or None if it is gone.
    pub event_hash: Option<String>,
}

/// The role name of the checkpoint writer's lease.
pub const CHECKPOINTER: &str = "checkpointer";

/// Stamp out the checkpoint statements for one backend (`$dbnow`: the
/// database clock in ms, as SQL).
macro_rules! checkpoint_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::store::checkpoints::{
            CheckpointDraft, CheckpointLeaf, CheckpointRow, CheckpointSigner, CheckpointWrite, LeafMismatch,
        };
        use $crate::store::StoreError;

        const CP_COLS: &str = "id, at, prev_hash, root, size, key_id, signature, hash, writer";

        pub(super) async fn take_lease(pool: &$pool, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
            let sql = format!(
                "INSERT INTO leader_leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = $2, expires_at = {now} + $3 \
                 WHERE leader_leases.holder = $2 OR leader_leases.expires_at <= {now} RETURNING holder",
                now = $dbnow
            );
            let got: Option<(String,)> = sqlx::query_as(&sql)
                .bind(name)
                .bind(holder)
                .bind(ttl_ms)
                .fetch_optional(pool)
                .await?;
            Ok(got.is_some())
        }

        pub(super) async fn drop_lease(pool: &$pool, name: &str, holder: &str) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn write_checkpoint(
            conn: &mut $conn,
            holder: &str,
            batch: i64,
            sign: CheckpointSigner<'_>,
        ) -> Result<CheckpointWrite, StoreError> {
            // Fencing: only the live lease holder writes (a paused former
            // leader finds its lease gone); two writers racing for one id
            // collide on the primary key, so the chain never forks.
            let live: Option<(String,)> = sqlx::query_as(&format!(
                "SELECT holder FROM leader_leases WHERE name = $1 AND holder = $2 AND expires_at > {}",
                $dbnow
            ))
            .bind($crate::store::checkpoints::CHECKPOINTER)
            .bind(holder)
            .fetch_optional(&mut *conn)
            .await?;
            if live.is_none() {
                return Ok(CheckpointWrite::NotLeader);
            }
            let heads: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT chain, chain_seq, hash FROM chain_heads WHERE checkpointed = FALSE ORDER BY updated_at, chain LIMIT $1",
            )
            .bind(batch)
            .fetch_all(&mut *conn)
            .await?;
            if heads.is_empty() {
                return Ok(CheckpointWrite::NothingNew);
            }
            let last: Option<(i64, String)> = sqlx::query_as("SELECT id, hash FROM checkpoints ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?;
            let (at,): (i64,) = sqlx::query_as(&format!("SELECT {}", $dbnow)).fetch_one(&mut *conn).await?;
            let (last_id, prev_hash) = last.unwrap_or((0, $crate::domain::event::GENESIS_HASH.to_string()));
            let draft = CheckpointDraft {
                id: last_id + 1,
                at,
                prev_hash,
                leaves: heads
                    .into_iter()
                    .map(|(chain, chain_seq, hash)| CheckpointLeaf { chain, chain_seq, hash })
                    .collect(),
            };
            let mut row = sign(&draft);
            row.writer = holder.to_string();
            sqlx::query(&format!("INSERT INTO checkpoints ({CP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                .bind(row.id)
                .bind(row.at)
                .bind(&row.prev_hash)
                .bind(&row.root)
                .bind(row.size)
                .bind(&row.key_id)
                .bind(&row.signature)
                .bind(&row.hash)
                .bind(&row.writer)
                .execute(&mut *conn)
                .await?;
            for chunk in draft.leaves.chunks(200) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("($1, ${}, ${}, ${})", 2 + 3 * i, 3 + 3 * i, 4 + 3 * i))
                    .collect();
                let sql = format!(
                    "INSERT INTO checkpoint_leaves (checkpoint_id, chain, chain_seq, hash) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(row.id);
                for l in chunk {
                    q = q.bind(&l.chain).bind(l.chain_seq).bind(&l.hash);
                }
                q.execute(&mut *conn).await?;
            }
            // Compare-and-set: a head that moved on since it was read (a newer
            // append) does not match and stays unmarked for the next checkpoint.
            let marked = sqlx::query(
                "UPDATE chain_heads SET checkpointed = TRUE WHERE checkpointed = FALSE AND EXISTS \
                 (SELECT 1 FROM checkpoint_leaves l WHERE l.checkpoint_id = $1 AND l.chain = chain_heads.chain \
                  AND l.chain_seq = chain_heads.chain_seq AND l.hash = chain_heads.hash)",
            )
            .bind(row.id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(CheckpointWrite::Written { checkpoint: row, marked })
        }

        pub(super) async fn checkpoints(pool: &$pool, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, StoreError> {
            Ok(sqlx::query_as(&format!("SELECT {CP_COLS} FROM checkpoints WHERE id > $1 ORDER BY id LIMIT $2"))
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        }

        pub(super) async fn checkpoint_leaves(
            pool: &$pool,
            from_id: i64,
            to_id: i64,
        ) -> Result<Vec<(i64, CheckpointLeaf)>, StoreError> {
            let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
                "SELECT checkpoint_id, chain, chain_seq, hash FROM checkpoint_leaves \
                 WHERE checkpoint_id >= $1 AND checkpoint_id <= $2 ORDER BY checkpoint_id, chain",
            )
            .bind(from_id)
            .bind(to_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, chain, chain_seq, hash)| (id, CheckpointLeaf { chain, chain_seq, hash }))
                .collect())
        }

        pub(super) async fn checkpoint_covering(
            pool: &$pool,
            chain: &str,
            chain_seq: i64,
        ) -> Result<Option<CheckpointRow>, StoreError> {
            let cols: Vec<String> = CP_COLS.split(", ").map(|c| format!("c.{c}")).collect();
            Ok(sqlx::query_as(&format!(
                "SELECT {} FROM checkpoint_leaves l JOIN checkpoints c ON c.id = l.checkpoint_id \
                 WHERE l.chain = $1 AND l.chain_seq = $2 ORDER BY c.id LIMIT 1",
                cols.join(", ")
            ))
            .bind(chain)
            .bind(chain_seq)
            .fetch_optional(pool)
            .await?)
        }

        pub(super) async fn leaf_mismatches(pool: &$pool, limit: i64) -> Result<(i64, Vec<LeafMismatch>), StoreError> {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM checkpoint_leaves").fetch_one(pool).await?;
            let rows: Vec<(i64, String, i64, String, Option<String>)> = sqlx::query_as(
                "SELECT l.checkpoint_id, l.chain, l.chain_seq, l.hash, e.hash FROM checkpoint_leaves l \
                 LEFT JOIN events e ON e.chain = l.chain AND e.chain_seq = l.chain_seq \
                 WHERE e.hash IS NULL OR e.hash <> l.hash ORDER BY l.checkpoint_id, l.chain LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok((
                n,
                rows.into_iter()
                    .map(|(checkpoint_id, chain, chain_seq, hash, event_hash)| LeafMismatch {
                        checkpoint_id,
                        leaf: CheckpointLeaf { chain, chain_seq, hash },
                        event_hash,
                    })
                    .collect(),
            ))
        }
    };
}

pub(super) use checkpoint_sql_fns;

/// The checkpoint writer's election and the signed checkpoints of the audit chains.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Take or renew the leader lease `name` for `ttl_ms` (database clock):
    /// true if `holder` now holds it (it held it, or the lease had expired).
    async fn take_leader_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Give up the lease `name` if `holder` holds it.
    async fn drop_leader_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// In one transaction, if `holder` holds the live [`CHECKPOINTER`] lease:
    /// take at most `batch` chain heads not yet checkpointed, have `sign`
    /// turn them into the next checkpoint, write it with its leaves, and mark
    /// exactly the heads still at those positions as checkpointed.
    async fn write_checkpoint(
        &self,
        holder: &str,
        batch: i64,
        sign: CheckpointSigner<'_>,
    ) -> Result<CheckpointWrite, StoreError>;

    /// Checkpoints with id above `after`, by id, at most `limit`.
    async fn checkpoints(&self, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, StoreError>;

    /// The leaves of checkpoints `from_id..=to_id`, by checkpoint then chain.
    async fn checkpoint_leaves(
        &self,
        from_id: i64,
        to_id: i64,
    ) -> Result<Vec<(i64, CheckpointLeaf)>, StoreError>;

    /// The first checkpoint covering position `chain_seq` of `chain`.
    async fn checkpoint_covering(
        &self,
        chain: &str,
        chain_seq: i64,
    ) -> Result<Option<CheckpointRow>, StoreError>;

    /// How many leaves all checkpoints hold, and (at most `limit`) those
    /// whose event is gone or has another hash now.
    async fn checkpoint_leaf_mismatches(
        &self,
        limit: i64,
    ) -> Result<(i64, Vec<LeafMismatch>), StoreError>;
}

/// Implement [`CheckpointStore`] for a backend struct with a `pool` field
/// (the module `checkpoint_sql`, from [`checkpoint_sql_fns!`], in scope).
macro_rules! impl_checkpoints_store {
    ($store:ty, $begin:path) => {
        #[async_trait::async_trait]
        impl $crate::store::checkpoints::CheckpointStore for $store {
            async fn take_leader_lease(
                &self,
                name: &str,
                holder: &str,
                ttl_ms: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                checkpoint_sql::take_lease(&self.pool, name, holder, ttl_ms).await
            }

            async fn drop_leader_lease(
                &self,
                name: &str,
                holder: &str,
            ) -> Result<(), $crate::store::StoreError> {
                checkpoint_sql::drop_lease(&self.pool, name, holder).await
            }

            async fn write_checkpoint(
                &self,
                holder: &str,
                batch: i64,
                sign: $crate::store::CheckpointSigner<'_>,
            ) -> Result<$crate::store::CheckpointWrite, $crate::store::StoreError> {
                let mut tx = $begin(&self.pool).await?;
                let out = checkpoint_sql::write_checkpoint(&mut tx, holder, batch, sign).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn checkpoints(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::CheckpointRow>, $crate::store::StoreError> {
                checkpoint_sql::checkpoints(&self.pool, after, limit).await
            }

            async fn checkpoint_leaves(
                &self,
                from_id: i64,
                to_id: i64,
            ) -> Result<Vec<(i64, $crate::store::CheckpointLeaf)>, $crate::store::StoreError> {
                checkpoint_sql::checkpoint_leaves(&self.pool, from_id, to_id).await
            }

            async fn checkpoint_covering(
                &self,
                chain: &str,
                chain_seq: i64,
            ) -> Result<Option<$crate::store::CheckpointRow>, $crate::store::StoreError> {
                checkpoint_sql::checkpoint_covering(&self.pool, chain, chain_seq).await
            }

            async fn checkpoint_leaf_mismatches(
                &self,
                limit: i64,
            ) -> Result<(i64, Vec<$crate::store::LeafMismatch>), $crate::store::StoreError> {
                checkpoint_sql::leaf_mismatches(&self.pool, limit).await
            }
        }
    };
}

pub(super) use impl_checkpoints_store;
