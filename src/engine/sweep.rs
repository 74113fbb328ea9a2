//! Retention sweeps: the workflows' `[[schedule]]`s, run durably.
//!
//! Each (schedule, processor) is a row with a durable `next_run_at`. When it
//! falls due, one *sweep run* is created in the same transaction that moves
//! `next_run_at` a period on (so concurrent daemons create it once), with its
//! cutoff fixed. A worker claims the run with a lease and a fencing token,
//! like a step, and:
//!
//! 1. lists the processor's items last modified before the cutoff
//!    (`Connector::sweep_list`) and records each as `pending`, by a keyed hash
//!    of its name (names can be personal: file names, object keys);
//! 2. deletes them in batches (`Connector::sweep_delete`) and records, per
//!    item, only what the answer proves: `removed`, or `failed`; an item the
//!    answer does not mention stays `pending` (shown as unconfirmed);
//! 3. ends the run with its counts in a `sweep.finished` audit event.
//!
//! A crash anywhere: the lease expires, another worker takes the run over
//! (a new token fences the old one out), lists again with the same cutoff and
//! deletes what is still there. Items are keyed by (run, hash), so nothing is
//! counted twice, and a removed item is never downgraded. A transient failure
//! (5xx, throttling) defers the run (`pending` at a later `run_at`); a
//! permanent one fails it, with the items proven so far kept.

use super::{Engine, EngineError};
use crate::connectors::lease::Lease;
use crate::connectors::sweep::{mask_name, SweepCandidate, SweepQuery};
use crate::connectors::{ConnectorError, ErrorClass};
use crate::store::sweep::{NewSweepItem, ScheduleSpec, SweepEnd, SweepItemResult, SweepRunRow};
use crate::store::{ms, Millis};
use chrono::Utc;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Attempts after which a run that keeps failing transiently is given up.
pub const MAX_SWEEP_ATTEMPTS: i64 = 8;

/// What a dry run found at one processor.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The schedule.
    pub schedule: String,
    /// The processor.
    pub processor: String,
    /// Items last modified before this would go (RFC 3339).
    pub cutoff: String,
    /// How many.
    pub count: usize,
    /// Their total size in bytes, where known.
    pub bytes: i64,
    /// Count per kind (`version`, `delete_marker`, `ticket`…).
    pub kinds: BTreeMap<String, usize>,
    /// Each item, masked (a ticket shows its id).
    pub items: Vec<String>,
    /// The error, if the listing failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn masked(c: &SweepCandidate) -> String {
    if let Some(r) = &c.reference {
        return format!("{} {r}", c.kind);
    }
    let visible = c.name.split('\n').next().unwrap_or_default();
    format!("{} {}", c.kind, mask_name(visible))
}

impl Engine {
    /// Make the store's schedules the configured ones (new ones are due now;
    /// removed ones stop).
    pub async fn sync_schedules(&self) -> Result<(), EngineError> {
        let specs: Vec<ScheduleSpec> = self
            .config
            .schedules()
            .into_iter()
            .map(|(sc, p, wf)| ScheduleSpec {
                name: sc.name.clone(),
                processor: p.name.clone(),
                workflow: wf.to_string(),
                older_than_ms: i64::try_from(sc.older_than.get().as_millis()).unwrap_or(i64::MAX),
                every_ms: i64::try_from(sc.every.get().as_millis()).unwrap_or(i64::MAX),
            })
            .collect();
        self.store.sync_schedules(specs, ms(Utc::now())).await?;
        Ok(())
    }

    /// Whether a schedule of this name is configured.
    pub fn has_schedule(&self, name: &str) -> bool {
        self.config
            .schedules()
            .iter()
            .any(|(sc, _, _)| sc.name == name)
    }

    /// Start the runs of every due schedule, then run every claimable sweep
    /// run (those just started, deferred ones now due, and ones whose lease
    /// expired). Returns the runs as they ended.
    pub async fn run_due_sweeps(self: &Arc<Self>) -> Result<Vec<SweepRunRow>, EngineError> {
        let now = ms(Utc::now());
        self.store.start_due_sweeps(now, None).await?;
        self.run_claimable_sweeps(None).await
    }

    /// Run a schedule now through the durable path (a run per processor).
    pub async fn run_schedule_now(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Vec<SweepRunRow>, EngineError> {
        let now = ms(Utc::now());
        let mut ids = Vec::new();
        for (sc, p, _) in self.config.schedules() {
            if sc.name != name {
                continue;
            }
            if let Some(id) = self.store.start_sweep_now(name, &p.name, now).await? {
                ids.push(id);
            }
        }
        self.run_claimable_sweeps(Some(&ids)).await
    }

    async fn run_claimable_sweeps(
        self: &Arc<Self>,
        only: Option<&[String]>,
    ) -> Result<Vec<SweepRunRow>, EngineError> {
        let lease_ms = i64::try_from(self.config.worker.lease.get().as_millis()).unwrap_or(60_000);
        let mut done = Vec::new();
        loop {
            let now = ms(Utc::now());
            let before_claim = std::time::Instant::now();
            let claimed = self
                .store
                .claim_sweep_runs(&self.worker_id, now, lease_ms, 1, only)
                .await?;
            let Some(run) = claimed.into_iter().next() else {
                break;
            };
            let id = run.id.clone();
            self.execute_sweep(run, lease_ms, before_claim).await?;
            if let Some(row) = self.store.sweep_run(&id).await? {
                done.push(row);
            }
        }
        Ok(done)
    }

    /// List what a schedule would remove, deleting nothing and writing nothing.
    pub async fn dry_run_schedule(&self, name: &str) -> Result<Vec<DryRun>, EngineError> {
        let now = ms(Utc::now());
        let mut out = Vec::new();
        for (sc, p, _) in self.config.schedules() {
            if sc.name != name {
                continue;
            }
            let older = i64::try_from(sc.older_than.get().as_millis()).unwrap_or(i64::MAX);
            let cutoff = now.saturating_sub(older);
            let settings = sc.sweep_settings();
            let q = SweepQuery {
                cutoff_ms: cutoff,
                settings: &settings,
            };
            let mut d = DryRun {
                schedule: name.to_string(),
                processor: p.name.clone(),
                cutoff: crate::store::rfc3339(cutoff),
                count: 0,
                bytes: 0,
                kinds: BTreeMap::new(),
                items: Vec::new(),
                error: None,
            };
            match self.connector(&p.name) {
                None => d.error = Some(format!("no connector for processor `{}`", p.name)),
                Some(c) => match c.sweep_list(&q).await {
                    Ok(items) => {
                        d.count = items.len();
                        for it in &items {
                            d.bytes += it.size.unwrap_or(0);
                            *d.kinds.entry(it.kind.to_string()).or_default() += 1;
                            d.items.push(masked(it));
                        }
                    }
                    Err(e) => d.error = Some(e.message),
                },
            }
            out.push(d);
        }
        Ok(out)
    }

    fn item_hash(&self, processor: &str, name: &str) -> String {
        self.keys
            .hash_str(&format!("lethe:sweep:{processor}:{name}"))
    }

    /// Carry out one claimed run; every write is fenced by its lease token.
    async fn execute_sweep(
        self: &Arc<Self>,
        run: SweepRunRow,
        lease_ms: i64,
        before_claim: std::time::Instant,
    ) -> Result<(), EngineError> {
        let token = run.lease_token;
        let id = run.id.clone();
        let schedules = self.config.schedules();
        let Some((sc, _, _)) = schedules
            .iter()
            .find(|(sc, p, _)| sc.name == run.schedule && p.name == run.processor)
        else {
            self.store
                .finish_sweep_run(
                    &id,
                    token,
                    SweepEnd::Failed {
                        error: format!(
                            "schedule `{}` no longer selects processor `{}` in the config",
                            run.schedule, run.processor
                        ),
                    },
                    ms(Utc::now()),
                )
                .await?;
            return Ok(());
        };
        let Some(connector) = self.connector(&run.processor).cloned() else {
            self.store
                .finish_sweep_run(
                    &id,
                    token,
                    SweepEnd::Failed {
                        error: format!("no processor `{}` in the config", run.processor),
                    },
                    ms(Utc::now()),
                )
                .await?;
            return Ok(());
        };
        // Keep the lease while the run works; every call is sent only while
        // the lease covers it (`connectors::lease`), so a stalled worker whose
        // run was taken over sends nothing more.
        let length = Duration::from_millis(u64::try_from(lease_ms).unwrap_or(60_000));
        let held = Lease::until(before_claim + length);
        let beat = {
            let store = Arc::clone(&self.store);
            let id = id.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let every = (length / 3).max(Duration::from_millis(200));
                loop {
                    tokio::time::sleep(every).await;
                    let before = std::time::Instant::now();
                    match store.sweep_heartbeat(&id, token, lease_ms).await {
                        Ok(true) => held.extend(before + length),
                        _ => {
                            held.lose();
                            break;
                        }
                    }
                }
            })
        };
        let settings = sc.sweep_settings();
        let q = SweepQuery {
            cutoff_ms: run.cutoff_at,
            settings: &settings,
        };
        let result = held
            .clone()
            .scope(self.sweep_steps(&run, connector.as_ref(), &q))
            .await;
        beat.abort();
        let now = ms(Utc::now());
        let end = match result {
            Ok(Some(())) => SweepEnd::Done,
            // The lease was lost: another worker has the run now.
            Ok(None) => return Ok(()),
            Err(Failure::Store(e)) => return Err(e.into()),
            Err(Failure::Connector(e)) => match e.class {
                ErrorClass::Permanent => SweepEnd::Failed { error: e.message },
                _ if run.attempts >= MAX_SWEEP_ATTEMPTS => SweepEnd::Failed {
                    error: format!("{} (gave up after {} attempts)", e.message, run.attempts),
                },
                _ if held.is_lost() => return Ok(()),
                _ => {
                    let backoff = e.retry_after.unwrap_or_else(|| {
                        Duration::from_secs(
                            30u64.saturating_mul(1 << run.attempts.clamp(1, 7) as u32 >> 1),
                        )
                    });
                    SweepEnd::Retry {
                        run_at: now
                            + i64::try_from(backoff.as_millis())
                                .unwrap_or(3_600_000)
                                .max(1000),
                        error: e.message,
                    }
                }
            },
        };
        self.store.finish_sweep_run(&id, token, end, now).await?;
        Ok(())
    }

    /// List, record, delete in batches, record. `Ok(None)`: the lease was lost.
    async fn sweep_steps(
        &self,
        run: &SweepRunRow,
        connector: &dyn crate::connectors::Connector,
        q: &SweepQuery<'_>,
    ) -> Result<Option<()>, Failure> {
        let token = run.lease_token;
        // A sweep makes one call at a time (a listing, then one delete batch
        // after another), counted in this process's calls in flight. It does
        // not take a slot of the processor's cluster-wide limit: those are
        // granted to steps at claim time (a known gap, see the README).
        let limit = self.limits.get(&run.processor).cloned();
        let items = {
            let _permit = limit.as_ref().map(|l| l.enter());
            connector.sweep_list(q).await.map_err(Failure::Connector)?
        };
        let hashes: Vec<String> = items
            .iter()
            .map(|c| self.item_hash(&run.processor, &c.name))
            .collect();
        let rows = items
            .iter()
            .zip(&hashes)
            .map(|(c, h)| NewSweepItem {
                item_hash: h.clone(),
                kind: c.kind.to_string(),
                reference: c.reference.clone(),
                size: c.size,
                modified_at: c.modified_ms,
            })
            .collect();
        let now = ms(Utc::now());
        if !self
            .store
            .record_sweep_items(&run.id, token, rows, now)
            .await
            .map_err(Failure::Store)?
        {
            return Ok(None);
        }
        let batch = connector.sweep_batch().max(1);
        for chunk in items.chunks(batch) {
            let outcomes = {
                let _permit = limit.as_ref().map(|l| l.enter());
                connector
                    .sweep_delete(q, chunk)
                    .await
                    .map_err(Failure::Connector)?
            };
            let results: Vec<SweepItemResult> = outcomes
                .into_iter()
                .filter(|o| chunk.iter().any(|c| c.name == o.name))
                .map(|o| SweepItemResult {
                    item_hash: self.item_hash(&run.processor, &o.name),
                    removed: o.removed,
                    evidence: o.evidence,
                })
                .collect();
            if !self
                .store
                .record_sweep_results(&run.id, token, results, ms(Utc::now()))
                .await
                .map_err(Failure::Store)?
            {
                return Ok(None);
            }
        }
        Ok(Some(()))
    }

    /// The earliest time a schedule or sweep run needs this worker.
    pub async fn next_sweep_wake(&self) -> Result<Option<Millis>, EngineError> {
        Ok(self.store.next_sweep_wake().await?)
    }

    /// Run due sweeps until `stop` resolves, waking for the next schedule
    /// (at most every `idle_poll`, so runs created elsewhere are seen).
    pub async fn sweep_loop(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if self.config.schedules().is_empty() {
            stop.await;
            return;
        }
        tokio::pin!(stop);
        let idle = self.config.worker.idle_poll.get();
        loop {
            if let Err(e) = self.sync_schedules().await {
                tracing::warn!(error = %e, "retention schedules: cannot sync");
            }
            match self.run_due_sweeps().await {
                Ok(runs) => {
                    for r in runs {
                        tracing::info!(
                            sweep_run = %r.id, schedule = %r.schedule, processor = %r.processor,
                            state = %r.state, removed = r.removed, failed = r.failed,
                            "retention sweep run"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention sweeps failed"),
            }
            let now = ms(Utc::now());
            let wait = match self.next_sweep_wake().await {
                Ok(Some(at)) if at > now => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(idle)
                }
                Ok(Some(_)) => Duration::from_millis(200),
                _ => idle,
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

enum Failure {
    Store(crate::store::StoreError),
    Connector(ConnectorError),
}
