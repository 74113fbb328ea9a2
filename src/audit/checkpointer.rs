//! The checkpointer: one elected process (the holder of the `checkpointer`
//! leader lease, renewed every tick, taken over once it expired by the
//! database clock) writes a signed checkpoint every `[audit]
//! checkpoint_every` over the chain heads appended since. It runs in `lethe
//! daemon` and once at the end of `lethe run --until-idle`. Nothing waits in
//! the database: a tick is one short transaction; a store error is logged and
//! the next tick tries again.

use super::checkpoint::{sign, Unsigned};
use super::merkle::{Leaf, Tree};
use crate::store::{
    CheckpointDraft, CheckpointRow, CheckpointWrite, Store, StoreError, CHECKPOINTER,
};
use ed25519_dalek::SigningKey;
use std::sync::Arc;
use std::time::Duration;

/// Most heads one checkpoint covers.
pub const BATCH: i64 = 1000;

/// Most checkpoints one tick writes (when more heads than a batch changed).
const MAX_PER_TICK: usize = 16;

/// Turn a draft into a signed checkpoint row (pure).
pub fn sign_draft(draft: &CheckpointDraft, key: &SigningKey) -> CheckpointRow {
    let tree = Tree::new(
        draft
            .leaves
            .iter()
            .map(|l| Leaf {
                chain: l.chain.clone(),
                chain_seq: l.chain_seq,
                hash: l.hash.clone(),
            })
            .collect(),
    );
    let cp = sign(
        &Unsigned {
            id: draft.id,
            at: draft.at,
            prev: draft.prev_hash.clone(),
            root: hex::encode(tree.root()),
            size: draft.leaves.len() as i64,
        },
        key,
    );
    CheckpointRow {
        hash: cp.hash(),
        id: cp.id,
        at: cp.at,
        prev_hash: cp.prev,
        root: cp.root,
        size: cp.size,
        key_id: cp.key_id,
        signature: cp.signature,
        writer: String::new(),
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Whether this process held the lease.
    pub leader: bool,
    /// Checkpoints written.
    pub written: usize,
    /// Heads covered by them.
    pub leaves: i64,
}

/// The elected checkpoint writer of one process.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    key: SigningKey,
    holder: String,
    every: Duration,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpointer({}, every {:?})", self.holder, self.every)
    }
}

impl Checkpointer {
    /// A checkpointer for `holder` (a unique id of this process).
    pub fn new(store: Arc<dyn Store>, key: SigningKey, holder: String, every: Duration) -> Self {
        Checkpointer {
            store,
            key,
            holder,
            every,
        }
    }

    /// How long the lease lasts: three ticks, at least ten seconds, so one
    /// slow tick (a busy machine) does not hand it over; a dead leader is replaced within it.
    fn lease_ms(&self) -> i64 {
        (self.every * 3).max(Duration::from_secs(10)).as_millis() as i64
    }

    /// Take or renew the lease; if held, write checkpoints until every head is
    /// covered (at most a few per tick).
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let mut t = Tick::default();
        if !self
            .store
            .take_leader_lease(CHECKPOINTER, &self.holder, self.lease_ms())
            .await?
        {
            return Ok(t);
        }
        t.leader = true;
        let key = &self.key;
        let signer = move |d: &CheckpointDraft| sign_draft(d, key);
        for _ in 0..MAX_PER_TICK {
            let started = std::time::Instant::now();
            match self
                .store
                .write_checkpoint(&self.holder, BATCH, &signer)
                .await?
            {
                CheckpointWrite::Written { checkpoint, marked } => {
                    tracing::debug!(
                        id = checkpoint.id,
                        leaves = checkpoint.size,
                        marked,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "audit checkpoint written"
                    );
                    t.written += 1;
                    t.leaves += checkpoint.size;
                    if checkpoint.size < BATCH {
                        break;
                    }
                }
                CheckpointWrite::NotLeader => {
                    t.leader = false;
                    break;
                }
                CheckpointWrite::NothingNew => break,
            }
        }
        Ok(t)
    }

    /// Give up the lease (at shutdown), so another process takes over at once.
    pub async fn resign(&self) {
        if let Err(e) = self
            .store
            .drop_leader_lease(CHECKPOINTER, &self.holder)
            .await
        {
            tracing::warn!(error = %e, "could not release the checkpointer lease; it expires by itself");
        }
    }

    /// Tick every `checkpoint_every` until `stop` resolves; then resign.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(self.every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = interval.tick() => {}
            }
            match self.tick().await {
                Ok(t) => {
                    if t.leader != was_leader {
                        tracing::info!(
                            holder = %self.holder,
                            leader = t.leader,
                            "audit checkpointer {}",
                            if t.leader { "elected: this process writes checkpoints" } else { "standing by: another process writes checkpoints" }
                        );
                        was_leader = t.leader;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit checkpoint failed; retrying at the next tick")
                }
            }
        }
        self.resign().await;
    }
}
