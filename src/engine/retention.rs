//! Identity retention: the erasure tool must not itself become a store of the
//! personal data it erased.
//!
//! Identities are sealed at rest (`crypto`), but a sealed blob plus the key is
//! still the data. Once a request is closed and no step can need the identity
//! again (nothing held, in a recovery window, awaiting confirmation or
//! runnable), and `[store] identity_retention` has passed since it last
//! changed, the sealed blob is destroyed (crypto-shredding). Only the keyed
//! hash (for matching holds and duplicates) and the masked form remain.
//!
//! The pass runs from the worker loop — whenever it is idle, and at most every
//! `idle_poll` while busy — so it needs no timer of its own and survives
//! restarts: the condition is recomputed from the rows every time.

use super::{Engine, EngineError};
use crate::store::ms;
use chrono::Utc;
use std::time::Instant;

/// Throttles the retention pass inside one worker loop.
#[derive(Debug, Default)]
pub struct RetentionPass {
    last: Option<Instant>,
}

impl RetentionPass {
    /// Run the pass if the loop is idle or `idle_poll` has passed since the last one.
    pub async fn tick(&mut self, engine: &Engine, idle: bool) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= engine.config.worker.idle_poll.get());
        if !(idle || due) {
            return;
        }
        self.last = Some(Instant::now());
        if let Err(e) = engine.shred_expired_identities().await {
            tracing::error!(error = %e, "identity retention pass failed; it is retried at the next pass");
        }
    }
}

impl Engine {
    /// Destroy the sealed identities of closed requests whose retention has
    /// passed; returns the request ids.
    pub async fn shred_expired_identities(&self) -> Result<Vec<String>, EngineError> {
        let retention = self.config.store.identity_retention.get();
        let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
        let ids = self
            .store
            .shred_identities(ms(Utc::now()), retention_ms)
            .await?;
        for id in &ids {
            tracing::info!(request = %id, "identities destroyed (retention passed); keyed hash kept");
        }
        Ok(ids)
    }
}
