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
        if let Err(e) = engine.delete_expired_exports().await {
            tracing::error!(error = %e, "export retention pass failed; it is retried at the next pass");
        }
        if let Err(e) = engine.report_deadlines_near().await {
            tracing::error!(error = %e, "deadline scan failed; it is retried at the next pass");
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

    /// The subject of a request: its sealed identities opened with its data
    /// key (or, sealed before envelope encryption, the master key). `None`
    /// once destroyed.
    pub async fn open_subject(
        &self,
        req: &crate::store::RequestRow,
    ) -> Result<Option<crate::domain::Subject>, EngineError> {
        let Some(sealed) = req.identities.as_deref() else {
            return Ok(None);
        };
        let key = self.store.data_key(&req.id).await?;
        self.keys
            .open(&req.id, sealed, key.as_ref())
            .map(Some)
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// A rectification's subject and new values, opened like
    /// [`open_subject`](Self::open_subject). `None` once destroyed.
    pub async fn open_subject_and_changes(
        &self,
        req: &crate::store::RequestRow,
    ) -> Result<Option<(crate::domain::Subject, Option<crate::domain::Subject>)>, EngineError> {
        let Some(sealed) = req.identities.as_deref() else {
            return Ok(None);
        };
        let key = self.store.data_key(&req.id).await?;
        self.keys
            .open_with_changes(&req.id, sealed, key.as_ref())
            .map(Some)
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// Delete the export files of export requests closed at least
    /// `[store] export_retention` ago, with a `request.exports_deleted` event
    /// each; returns the request ids.
    pub async fn delete_expired_exports(&self) -> Result<Vec<String>, EngineError> {
        let retention = self.config.store.export_retention.get();
        let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
        let now = ms(Utc::now());
        let ids = self
            .store
            .exports_due_for_deletion(now, retention_ms)
            .await?;
        let mut done = vec![];
        for id in ids {
            let dir = self.config.export_dir.join(&id);
            let mut files = 0u64;
            if let Ok(rd) = std::fs::read_dir(&dir) {
                files = rd
                    .filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count() as u64;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(request = %id, error = %e, "cannot delete the export files; retried at the next pass");
                    continue;
                }
            }
            let cs = crate::store::ChangeSet {
                request_id: id.clone(),
                now,
                steps: vec![],
                request: Default::default(),
                events: vec![(
                    "request.exports_deleted".into(),
                    serde_json::json!({
                        "files": files,
                        "export_retention_ms": retention_ms,
                    }),
                )],
            };
            self.store.apply(cs).await?;
            tracing::info!(request = %id, files, "export files deleted (export_retention passed)");
            done.push(id);
        }
        Ok(done)
    }
}
