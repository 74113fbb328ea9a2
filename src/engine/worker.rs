//! The worker: claims due steps under a lease, calls the connector, and writes
//! the result — new state, audit event, request status — in one transaction.
//!
//! It never polls in a tight loop: when nothing is due it sleeps until the
//! earliest `run_at` in the store (capped by `idle_poll`, so work filed by
//! another process is seen), or until this process files a request. While a
//! call is in flight, a heartbeat extends the lease; a worker that dies stops
//! heart-beating, its lease expires, and another worker takes the step over.

use super::{Engine, EngineError};
use crate::connectors::lease::Lease;
use crate::connectors::{
    CallContext, Changed, ConnectorError, Erase, ErrorClass, Evidence, Export, Verify,
};
use crate::domain::policy::FOREVER_MS;
use crate::domain::retry::RetryPolicy;
use crate::domain::{hold_gate, Action, HoldGate, Outcome, Phase, StepEvent, StepState, Subject};
use crate::store::{ms, Applied, ChangeSet, Millis, RequestPatch, StepChange, StepRow};
use chrono::Utc;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Steps processed.
    pub processed: u64,
    /// Leases that had expired and were returned to pending.
    pub released: u64,
    /// Steps this run left `failed` (they need the operator: exit code 1).
    pub failed: u64,
}

/// One step result a run wrote, as told to a [`RunObserver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The step.
    pub step_id: i64,
    /// Its request.
    pub request_id: String,
    /// Its processor.
    pub processor: String,
    /// The state it was left in.
    pub to: StepState,
    /// The request's status before the change.
    pub previous: crate::domain::RequestStatus,
    /// The request's status after it.
    pub status: crate::domain::RequestStatus,
}

/// Told what a run does, as it does it (progress displays). Called from the
/// run's own loop, one call at a time.
#[async_trait::async_trait]
pub trait RunObserver: Send + Sync {
    /// Steps were leased to this run (their calls start now).
    async fn claimed(&self, _steps: &[StepRow]) {}
    /// A step's result was written.
    async fn recorded(&self, _r: &Recorded) {}
    /// Nothing is due now and nothing is in flight: the run sleeps until
    /// `next` (the earliest due step, within the run's `--max-wait`).
    async fn sleeping(&self, _next: Millis) {}
}

/// How a bounded run ends (`run --until-idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleRun {
    /// Wait for steps that fall due within this long of the start (back-offs,
    /// `Retry-After`, windows, hold ends); zero: only what is due at the start.
    pub max_wait: Duration,
}

/// The decision for one claimed step.
pub(super) struct Decision {
    pub(super) event: StepEvent,
    pub(super) outcome: Option<Outcome>,
    pub(super) run_at: Millis,
    pub(super) attempts: Option<i64>,
    pub(super) error: Option<(String, String)>,
    pub(super) evidence: Option<Value>,
    pub(super) grace_until: Option<Millis>,
    pub(super) hold: Option<(String, Millis)>,
    pub(super) kind: &'static str,
    pub(super) extra: Value,
}

impl Decision {
    fn finished(outcome: Outcome, evidence: &Evidence, now: Millis) -> Decision {
        Decision {
            event: StepEvent::Finished,
            outcome: Some(outcome),
            run_at: now,
            attempts: None,
            error: None,
            evidence: Some(serde_json::to_value(evidence).unwrap_or(Value::Null)),
            grace_until: None,
            hold: None,
            kind: "step.done",
            extra: json!({}),
        }
    }
}

impl Engine {
    /// Process everything due now, then return (cron, scripts, tests).
    pub async fn run_until_idle(self: &Arc<Self>) -> Result<RunSummary, EngineError> {
        self.run_bounded(
            IdleRun {
                max_wait: Duration::ZERO,
            },
            None,
            std::future::pending::<()>(),
        )
        .await
    }

    /// Process what is due, and what falls due before `start + max_wait`,
    /// then return; telling `observer` as it goes. Steps due only after that
    /// (a later back-off, a recovery window, a hold, a manual confirmation, a
    /// phase behind a failed step) are left for the next run. `shutdown`
    /// stops claiming; in-flight steps finish and are written.
    pub async fn run_bounded(
        self: &Arc<Self>,
        idle: IdleRun,
        observer: Option<&dyn RunObserver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, EngineError> {
        let max = idle.max_wait.as_millis().min(i64::MAX as u128) as i64;
        let deadline = ms(Utc::now()).saturating_add(max);
        self.drive(Some(deadline), observer, shutdown).await
    }

    /// Run until `shutdown` resolves; then stop claiming, finish in-flight steps and return.
    pub async fn run(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, EngineError> {
        self.drive(None, None, shutdown).await
    }

    /// Run as a daemon (`until` is None) or until idle before `until`.
    async fn drive(
        self: &Arc<Self>,
        until: Option<Millis>,
        observer: Option<&dyn RunObserver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, EngineError> {
        // The store grants every processor's limits cluster-wide: write ours.
        // Register as a live worker (the dashboard and `status` count them).
        let mut backoff = StoreBackoff::default();
        loop {
            match self.store.set_limits(&self.limit_specs()).await {
                Ok(()) => break,
                Err(e) if until.is_some() && !e.is_unavailable() => return Err(e.into()),
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "could not write the processor limits to the store; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if let Err(e) = self.heartbeat_worker().await {
            tracing::warn!(error = %e, "worker registration failed; retrying with the heartbeat");
        }
        let registration = {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(me.worker_heartbeat_every()).await;
                    if let Err(e) = me.heartbeat_worker().await {
                        tracing::warn!(error = %e, "worker heartbeat failed");
                    }
                }
            })
        };
        let result = self.drive_loop(until, observer, shutdown).await;
        registration.abort();
        if let Err(e) = self.store.worker_gone(&self.worker_id).await {
            tracing::warn!(error = %e, "could not deregister the worker");
        }
        result
    }

    fn worker_heartbeat_every(&self) -> Duration {
        (self.config.worker.lease.get() / 3)
            .clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// Refresh this worker's registration.
    async fn heartbeat_worker(&self) -> Result<(), EngineError> {
        let now = ms(Utc::now());
        let every = self.worker_heartbeat_every().as_millis() as i64;
        self.store
            .worker_heartbeat(&self.worker_id, now, now - 3 * every)
            .await?;
        Ok(())
    }

    async fn drive_loop(
        self: &Arc<Self>,
        until: Option<Millis>,
        observer: Option<&dyn RunObserver>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, EngineError> {
        tokio::pin!(shutdown);
        let until_idle = until.is_some();
        let mut summary = RunSummary::default();
        let mut tasks: JoinSet<Result<Option<Recorded>, EngineError>> = JoinSet::new();
        let (results, writer) = spawn_writer(Arc::clone(&self.store));
        let cap = self.config.worker.concurrency as usize;
        // `worker.concurrency` bounds the calls in flight: a step gives its
        // slot back as soon as its call is decided, so the next step's call
        // starts while the result is still being written. Steps still
        // writing count in the store as running, so a processor's
        // cluster-wide limit stays exact; at most `cap` of them wait on the
        // store besides the calls, so a slow store cannot pile them up.
        let calls = Arc::new(tokio::sync::Semaphore::new(cap));
        let freed = Arc::new(tokio::sync::Notify::new());
        let max_tasks = cap * 2;
        let lease = self.config.worker.lease.get();
        let idle = self.config.worker.idle_poll.get();
        let mut stopping = false;
        let release_every = (lease / 2).min(Duration::from_secs(1));
        let mut last_release: Option<std::time::Instant> = None;
        let mut retention = super::retention::RetentionPass::default();
        // A store error (failover, restart, a dropped connection) never ends
        // the loop: it backs off and goes on; calls in flight keep running and
        // retry writing their results.
        let mut backoff = StoreBackoff::default();
        let mut store_down_until: Option<tokio::time::Instant> = None;
        loop {
            // Reap finished tasks without waiting.
            while let Some(r) = tasks.try_join_next() {
                summary.processed += 1;
                record(&mut summary, observer, log_task_result(r)).await;
            }
            let store_up = store_down_until.is_none_or(|t| tokio::time::Instant::now() >= t);
            // Whether this turn's claim found nothing although slots were free.
            let mut claimed_none = false;
            let room = calls
                .available_permits()
                .min(max_tasks.saturating_sub(tasks.len()));
            if !stopping && room > 0 && store_up {
                let now = Utc::now();
                // Expired leases are rare: look for them about once a second, not on every claim.
                if last_release.is_none_or(|t| t.elapsed() >= release_every) {
                    match self.store.release_expired_leases(ms(now)).await {
                        Ok(n) => summary.released += n,
                        Err(e) => {
                            store_down_until =
                                Some(store_error(&mut backoff, &e, "releasing expired leases"));
                            continue;
                        }
                    }
                    last_release = Some(std::time::Instant::now());
                }
                // The lease is stamped by the database's clock after this
                // instant, so `before_claim + lease` is a safe local deadline.
                let before_claim = std::time::Instant::now();
                let claimed = match self
                    .store
                    .claim_due_by(
                        &self.worker_id,
                        ms(now),
                        until.unwrap_or(i64::MAX),
                        lease.as_millis() as i64,
                        room as i64,
                    )
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        store_down_until = Some(store_error(&mut backoff, &e, "claiming steps"));
                        continue;
                    }
                };
                if store_down_until.take().is_some() {
                    tracing::info!("the store answers again");
                }
                backoff = StoreBackoff::default();
                claimed_none = claimed.is_empty();
                if !claimed.is_empty() {
                    // A step whose result committed while this claim ran (the
                    // claim may have found its successor due) is told first.
                    while let Some(r) = tasks.try_join_next() {
                        summary.processed += 1;
                        record(&mut summary, observer, log_task_result(r)).await;
                    }
                    if let Some(o) = observer {
                        o.claimed(&claimed).await;
                    }
                    // The claimed batch's requests are read in one statement,
                    // shared by steps of the same request. A failed read
                    // (or a request not found) is retried by each step's own task.
                    let mut ids: Vec<String> =
                        claimed.iter().map(|s| s.request_id.clone()).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let requests: std::collections::HashMap<String, Arc<crate::store::RequestRow>> =
                        match self.store.get_requests(&ids).await {
                            Ok(rows) => rows
                                .into_iter()
                                .map(|r| (r.id.clone(), Arc::new(r)))
                                .collect(),
                            Err(_) => std::collections::HashMap::new(),
                        };
                    for step in claimed {
                        let me = Arc::clone(self);
                        let results = results.clone();
                        let req = requests.get(&step.request_id).cloned();
                        let held = Lease::until(before_claim + lease);
                        // Never fails: only this loop takes slots, and it
                        // claimed no more than were free.
                        let slot = CallSlot {
                            _permit: Arc::clone(&calls).try_acquire_owned().ok(),
                            freed: Arc::clone(&freed),
                        };
                        tasks.spawn(async move {
                            let req = match req {
                                Some(r) => r,
                                None => Arc::new(
                                    me.with_store_retry(&held, "reading the request", || {
                                        me.request(&step.request_id)
                                    })
                                    .await?,
                                ),
                            };
                            me.process(step, req, results, held, slot).await
                        });
                    }
                    continue;
                }
            }
            // Retention is not a shutdown's business: stopping waits only for in-flight steps.
            if !stopping && store_up {
                retention.tick(self, tasks.is_empty()).await;
            }
            if tasks.is_empty() && stopping {
                break;
            }
            let mut next_wake = None;
            if tasks.is_empty() && until_idle {
                // Idle: go on only for a step that falls due within the bound.
                let now = ms(Utc::now());
                let bound = until.unwrap_or(now);
                let next = match self.store.next_wake().await {
                    Ok(n) => n,
                    Err(e) => {
                        store_down_until = Some(store_error(
                            &mut backoff,
                            &e,
                            "looking for the next due step",
                        ));
                        // Still bounded: keep trying until the bound.
                        if now < bound {
                            Some(now)
                        } else {
                            None
                        }
                    }
                };
                match next {
                    Some(at) if now < bound && at <= bound => {
                        if let Some(o) = observer {
                            o.sleeping(at).await;
                        }
                        next_wake = Some(Some(at));
                    }
                    _ => break,
                }
            }
            // Sleep until something can change: a task finishes, the next run_at, a notify, or shutdown.
            let sleep_for = if stopping {
                Duration::from_secs(3600)
            } else if let Some(t) = store_down_until.filter(|t| *t > tokio::time::Instant::now()) {
                t - tokio::time::Instant::now()
            } else if room == 0 && !tasks.is_empty() {
                // Every slot is taken: nothing can be claimed before one is
                // given back or a task ends, and both wake this loop. No
                // store round trip to learn the next `run_at` meanwhile.
                idle
            } else {
                let next = match next_wake {
                    Some(n) => n,
                    None => match self.store.next_wake().await {
                        Ok(n) => n,
                        Err(e) => {
                            store_down_until = Some(store_error(
                                &mut backoff,
                                &e,
                                "looking for the next due step",
                            ));
                            continue;
                        }
                    },
                };
                // A claim that came back empty while steps are due found
                // them held by a processor's cluster-wide limit (or being
                // claimed by another daemon): wait a little for a slot to
                // free anywhere, rather than asking again at once — every
                // claim locks the limit rows, so spinning daemons would slow
                // the ones that have work. This daemon's own slot or task
                // ending still wakes it at once.
                let floor = if claimed_none {
                    BLOCKED_RETRY.min(idle)
                } else {
                    Duration::ZERO
                };
                let floor = (floor.as_millis() as i64).max(1);
                let ceiling = (idle.as_millis() as i64).max(floor);
                match next {
                    Some(at) => {
                        Duration::from_millis((at - ms(Utc::now())).clamp(floor, ceiling) as u64)
                    }
                    None => idle,
                }
            };
            tokio::select! {
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    summary.processed += 1;
                    record(&mut summary, observer, log_task_result(r)).await;
                }
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.wake.notified() => {}
                _ = freed.notified() => {}
                _ = &mut shutdown, if !stopping => {
                    tracing::info!(in_flight = tasks.len(), "shutting down: no new claims; finishing in-flight steps");
                    stopping = true;
                }
            }
        }
        drop(results);
        let _ = writer.await;
        Ok(summary)
    }

    /// A processor's health, read from the store at most once a second per process.
    async fn health(&self, processor: &str) -> Result<crate::store::Health, EngineError> {
        if let Ok(c) = self.health_cache.lock() {
            if let Some((at, h)) = c.get(processor) {
                if at.elapsed() < Duration::from_secs(1) {
                    return Ok(h.clone());
                }
            }
        }
        let h = self.store.health(processor).await?;
        if let Ok(mut c) = self.health_cache.lock() {
            c.insert(
                processor.to_string(),
                (std::time::Instant::now(), h.clone()),
            );
        }
        Ok(h)
    }

    /// Run one claimed step and record the result.
    ///
    /// The call runs under the claim's lease: a heartbeat renews it, and if
    /// the store says another claim took the step over — or the lease runs
    /// out locally because it could not be renewed — the call is dropped and
    /// nothing is written (fencing: the result would be refused anyway).
    async fn process(
        self: Arc<Self>,
        step: StepRow,
        req: Arc<crate::store::RequestRow>,
        results: ResultSender,
        lease: Lease,
        slot: CallSlot,
    ) -> Result<Option<Recorded>, EngineError> {
        let now0 = ms(Utc::now());
        let lost = CancellationToken::new();
        let heartbeat = self.spawn_heartbeat(&step, lease.clone(), lost.clone());
        let decision = tokio::select! {
            biased;
            _ = lost.cancelled() => None,
            d = lease.clone().scope(self.decide(&step, &req)) => Some(d),
        };
        // The call is over: its slot goes to the next due step.
        drop(slot);
        let Some(decision) = decision.filter(|_| !lease.is_lost()) else {
            heartbeat.abort();
            tracing::warn!(
                step = step.id,
                processor = %step.processor,
                lease_token = step.lease_token,
                "lease lost during the call: the call was abandoned and nothing is written; the step is taken over"
            );
            return Ok(None);
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                heartbeat.abort();
                tracing::error!(step = step.id, processor = %step.processor, error = %e, "step could not be run");
                return Err(e);
            }
        };
        let now = ms(Utc::now()).max(now0);
        let to = match StepState::Running.apply(decision.event) {
            Ok(to) => to,
            Err(e) => {
                heartbeat.abort();
                return Err(EngineError::Internal(e.to_string()));
            }
        };
        let phase = Engine::phase_after(to, step.phase);
        let phase = if decision.event == StepEvent::Transient {
            step.phase
        } else {
            phase
        };
        let mut detail = json!({
            "processor": step.processor,
            "action": step.action.as_str(),
            "phase": step.phase.as_str(),
            "from": "running",
            "to": to.as_str(),
            "attempt": decision.attempts.unwrap_or(step.attempts),
            "outcome": decision.outcome.map(|o| o.as_str()),
            "evidence": decision.evidence,
            "error_class": decision.error.as_ref().map(|e| e.1.clone()),
            "error": decision.error.as_ref().map(|e| e.0.clone()),
        });
        if let (Value::Object(d), Value::Object(extra)) = (&mut detail, decision.extra) {
            d.extend(extra);
        }
        // A failed erase whose call with an effect went out may have erased:
        // remember it, so a later "not found" is recorded as gone, not as
        // "held no data". A definite 4xx refusal of the only effectful call
        // (bad credentials, 429…) did nothing; a timeout, a dropped
        // connection or a 5xx may have; and when more than one effectful
        // call went out, the ones before the failing one were answered.
        let refused = decision
            .evidence
            .as_ref()
            .and_then(|e| e.get("status"))
            .and_then(Value::as_u64)
            .is_some_and(|s| (400..500).contains(&s));
        let maybe_acted = step.action == Action::Erase
            && matches!(decision.event, StepEvent::Transient | StepEvent::Permanent)
            && decision.error.is_some()
            && (lease.effect_calls() > 1 || (lease.effect_sent() && !refused));
        let change = StepChange {
            step_id: step.id,
            from: StepState::Running,
            lease_token: Some(step.lease_token),
            maybe_acted,
            to,
            phase,
            outcome: decision.outcome,
            run_at: decision.run_at,
            attempts: decision.attempts,
            error: decision.error,
            evidence: decision.evidence,
            hold: decision.hold,
            grace_until: decision.grace_until,
            finished: matches!(to, StepState::Done | StepState::Failed),
            event: decision.kind.to_string(),
            detail,
        };
        let cs = ChangeSet {
            request_id: step.request_id.clone(),
            now,
            steps: vec![change],
            request: RequestPatch::default(),
            events: vec![],
        };
        // The heartbeat keeps the lease while the result is written: a store
        // outage delays the write, and the write is retried with back-off.
        // Fencing makes a late write safe: if another claim took the step
        // over meanwhile, the write is refused (a conflict), never doubled.
        let applied = self.write_result(&results, cs).await;
        heartbeat.abort();
        match applied? {
            Applied::Done { status, previous } => {
                tracing::info!(step = step.id, processor = %step.processor, state = %to, request_status = %status, "step recorded");
                Ok(Some(Recorded {
                    step_id: step.id,
                    request_id: step.request_id.clone(),
                    processor: step.processor.clone(),
                    to,
                    previous,
                    status,
                }))
            }
            Applied::Conflict { .. } => {
                // Our lease expired and another worker took the step over: its result wins.
                tracing::warn!(step = step.id, processor = %step.processor, "lease lost before the result was written; result discarded");
                Ok(None)
            }
            other => {
                tracing::warn!(step = step.id, ?other, "result not written");
                Ok(None)
            }
        }
    }

    /// Send a result to the writer and wait for it; a store error (an
    /// outage) is retried with capped back-off for up to ten minutes.
    async fn write_result(
        &self,
        results: &ResultSender,
        cs: ChangeSet,
    ) -> Result<Applied, EngineError> {
        let mut backoff = StoreBackoff::default();
        let give_up = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            let (reply, written) = tokio::sync::oneshot::channel();
            results
                .send((cs.clone(), reply))
                .map_err(|_| EngineError::Internal("the result writer stopped".into()))?;
            let outcome = written
                .await
                .map_err(|_| EngineError::Internal("the result writer stopped".into()))?;
            match outcome {
                Ok(a) => return Ok(a),
                Err(e) if e.is_unavailable() && std::time::Instant::now() < give_up => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, request = %cs.request_id, retry_in_ms = wait.as_millis() as u64, "could not write a step result; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Run a store read for a claimed step, retrying an outage with back-off
    /// while the step's lease lasts.
    pub(super) async fn with_store_retry<T, F, Fut>(
        &self,
        lease: &Lease,
        what: &str,
        mut f: F,
    ) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let mut backoff = StoreBackoff::default();
        loop {
            match f().await {
                Err(EngineError::Store(e))
                    if e.is_unavailable()
                        && std::time::Instant::now() + backoff.peek() < lease.deadline() =>
                {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "store error while {what}; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Renew the lease every third of its length. When the store answers that
    /// the token is no longer the step's, or the lease runs out locally
    /// without a renewal, mark it lost and cancel the call.
    fn spawn_heartbeat(
        self: &Arc<Self>,
        step: &StepRow,
        lease: Lease,
        lost: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let length = self.config.worker.lease.get();
        let (step_id, token) = (step.id, step.lease_token);
        tokio::spawn(async move {
            let every = length / 3;
            loop {
                let next = (std::time::Instant::now() + every).min(lease.deadline());
                tokio::time::sleep_until(next.into()).await;
                if std::time::Instant::now() >= lease.deadline() {
                    tracing::warn!(
                        step = step_id,
                        "lease ran out without a renewal; cancelling the call"
                    );
                    lease.lose();
                    lost.cancel();
                    return;
                }
                let before = std::time::Instant::now();
                match me
                    .store
                    .heartbeat(step_id, token, length.as_millis() as i64)
                    .await
                {
                    Ok(true) => lease.extend(before + length),
                    Ok(false) => {
                        tracing::warn!(
                            step = step_id,
                            lease_token = token,
                            "lease taken over; cancelling the call"
                        );
                        lease.lose();
                        lost.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(step = step_id, error = %e, "heartbeat failed"),
                }
            }
        })
    }

    /// The connector's own retry policy if its definition has one, else the workflow's.
    fn retry_policy(&self, workflow: &str, connector: &str) -> RetryPolicy {
        if let Some(r) = self
            .config
            .registry
            .get(connector)
            .and_then(|d| d.retry.clone())
        {
            return r;
        }
        self.config
            .workflows
            .by_name
            .get(workflow)
            .map(|w| w.retry.clone())
            .unwrap_or_default()
    }

    /// Decide what happened to a claimed step (all I/O with the processor happens here).
    async fn decide(
        &self,
        step: &StepRow,
        req: &crate::store::RequestRow,
    ) -> Result<Decision, EngineError> {
        let policy = self.retry_policy(&req.workflow, &step.connector);
        let now = ms(Utc::now());
        // Holds are checked right before every erase call (below). The two
        // reads do not depend on each other: over a network (a store that
        // writes in parallel) they share one round trip's wait; on the
        // embedded store, where a read costs CPU and no wait, one after the other.
        let check_holds = step.phase == Phase::Act && step.action == Action::Erase;
        let holds = async {
            if check_holds {
                self.store
                    .active_holds(&req.subject_hash, now)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let (opened, adhoc) = if self.store.write_concurrency() > 1 {
            tokio::join!(self.open_subject_and_changes(req), holds)
        } else {
            let opened = self.open_subject_and_changes(req).await;
            (opened, holds.await)
        };
        let (subject, changes) =
            match opened {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(failed(
                    step,
                    "the subject's identities were already destroyed; this step can no longer run"
                        .into(),
                    None,
                )),
                Err(EngineError::Store(e)) => return Err(EngineError::Store(e)),
                Err(e) => return Ok(failed(step, e.to_string(), None)),
            };
        let Some(connector) = self.connector(&step.processor).cloned() else {
            return Ok(failed(
                step,
                format!(
                    "processor `{}` is no longer in {}; add it back or cancel the request",
                    step.processor,
                    self.config.path.display()
                ),
                None,
            ));
        };
        // Holds: checked right before every erase call, so a hold added after
        // planning still stops it. No erase reaches a held processor.
        if let Some(adhoc) = adhoc? {
            let category = crate::connectors::Category::parse(&step.category)
                .unwrap_or(crate::connectors::Category::Other);
            let spans = match self.config.workflows.by_name.get(&req.workflow) {
                Some(wf) => super::planner::holds_for(
                    wf,
                    &step.processor,
                    category,
                    req.received_at,
                    &adhoc,
                ),
                None => super::planner::holds_for_adhoc(&step.processor, &adhoc),
            };
            if let HoldGate::Held { basis, until } = hold_gate(&spans, now) {
                let until = until.unwrap_or(FOREVER_MS);
                return Ok(Decision {
                    event: StepEvent::Hold,
                    outcome: None,
                    run_at: until,
                    attempts: Some((step.attempts - 1).max(0)),
                    error: None,
                    evidence: None,
                    grace_until: None,
                    hold: Some((basis.clone(), until)),
                    kind: "step.held",
                    extra: json!({"hold_basis": basis, "hold_until": until}),
                });
            }
        }
        // A processor that failed every recent call is left alone until its pause ends.
        let health = self.health(&step.processor).await?;
        if let Some(until) = health.paused_until.filter(|u| *u > now) {
            return Ok(Decision {
                event: StepEvent::Transient,
                outcome: None,
                run_at: until,
                attempts: Some((step.attempts - 1).max(0)),
                error: Some((
                    format!(
                        "processor `{}` is paused until {} after {} failed calls in a row (last: {}); no attempt was used",
                        step.processor,
                        crate::store::from_ms(until).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        health.consecutive_failures,
                        health.last_error.as_deref().unwrap_or("?")
                    ),
                    "paused".into(),
                )),
                evidence: None,
                grace_until: None,
                hold: None,
                kind: "step.retry_wait",
                extra: json!({"paused_until": until}),
            });
        }
        // The slot (and token) was granted by the store with the claim.
        let _in_flight = self.limits.get(&step.processor).map(|l| l.enter());
        // Stable per step and action, never per attempt: a retry after a
        // takeover carries the same key, so the processor can deduplicate it.
        let key = format!(
            "{}:{}:{}",
            step.request_id,
            step.processor,
            match step.phase {
                Phase::Verify => "purge",
                _ => step.action.as_str(),
            }
        );
        // A rectification's connector sees only the new values its `rectify`
        // action can change.
        let set = match (step.action, &changes) {
            (Action::Rectify, Some(all)) => {
                let fields = self
                    .config
                    .registry
                    .get(&step.connector)
                    .and_then(|d| d.actions.rectify.as_ref())
                    .map(|a| a.fields.clone())
                    .unwrap_or_default();
                let has = |f: &str| fields.iter().any(|x| x == f);
                Some(Subject {
                    email: all.email.clone().filter(|_| has("email")),
                    phone: all.phone.clone().filter(|_| has("phone")),
                    customer_id: all.customer_id.clone().filter(|_| has("customer_id")),
                    name: all.name.clone().filter(|_| has("name")),
                })
            }
            _ => None,
        };
        if step.action == Action::Rectify && set.is_none() {
            return Ok(failed(
                step,
                "this rectification's new values are missing (destroyed or never sealed); file it again".into(),
                None,
            ));
        }
        let cx = CallContext {
            subject: &subject,
            request_id: &step.request_id,
            idempotency_key: &key,
            attempt: step.attempts.clamp(0, u32::MAX as i64) as u32,
            set: set.as_ref(),
        };
        let started = std::time::Instant::now();
        let result = match (step.phase, step.action) {
            (Phase::Act, _) if connector.as_manual().is_some() => self.manual_step(connector.as_ref(), step, req, &subject, changes.as_ref(), now).await,
            (Phase::Act, Action::Erase) => connector.erase(cx).await.map(|e| self.on_erase(step, e, now)),
            (Phase::Act, Action::Export) => match connector.export(cx).await {
                Ok(Export::Data { data, evidence }) => self.write_export(step, &req.kind, data, evidence, now),
                Ok(Export::NotFound(ev)) => Ok(Decision::finished(Outcome::NotFound, &ev, now)),
                Err(e) => Err(e),
            },
            (Phase::Act, Action::Object) => match connector.object(cx).await {
                Ok(Changed::Done(ev)) => Ok(Decision::finished(Outcome::Objected, &ev, now)),
                Ok(Changed::NotFound(ev)) => Ok(Decision::finished(Outcome::NotFound, &ev, now)),
                Err(e) => Err(e),
            },
            (Phase::Act, Action::Rectify) => match connector.rectify(cx).await {
                Ok(Changed::Done(ev)) => {
                    let mut d = Decision::finished(Outcome::Rectified, &ev, now);
                    let fields = set.as_ref().map(super::changed_fields).unwrap_or_default();
                    d.extra = json!({"fields": fields});
                    Ok(d)
                }
                Ok(Changed::NotFound(ev)) => Ok(Decision::finished(Outcome::NotFound, &ev, now)),
                Err(e) => Err(e),
            },
            (Phase::Verify, _) => match connector.verify(cx).await {
                Ok(Verify::Clean(ev)) => Ok(Decision::finished(Outcome::Purged, &ev, now)),
                Ok(Verify::StillPresent(ev)) if connector.can_purge() => match connector.purge(cx).await {
                    Ok(Erase::Erased(pev) | Erase::NotFound(pev)) => {
                        let mut d = Decision::finished(Outcome::Purged, &pev, now);
                        d.extra = json!({"purge": "permanent delete after the window", "verify_evidence": ev});
                        Ok(d)
                    }
                    Ok(other) => Err(ConnectorError::permanent(format!(
                        "processor `{}`: the purge call did not delete for good ({other:?})",
                        step.processor
                    ))),
                    Err(e) => Err(e),
                },
                Ok(Verify::StillPresent(ev)) => Ok(failed(
                    step,
                    format!(
                        "processor `{}` still holds the subject after its recovery window, and its connector has no permanent-delete action: delete it by hand, then `lethe retry`",
                        step.processor
                    ),
                    Some(ev),
                )),
                Err(e) => Err(e),
            },
            (Phase::Remind, _) => self.manual_step(connector.as_ref(), step, req, &subject, changes.as_ref(), now).await,
        };
        crate::metrics::observe_call(
            &step.processor,
            result.as_ref().map_or_else(|e| e.class.as_str(), |_| "ok"),
            started.elapsed(),
        );
        tracing::debug!(
            step = step.id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "processor call finished"
        );
        // Processor text (errors, references, notes) is stored with the
        // subject's identities masked, in whatever form the processor echoed them.
        let scrubber = crate::connectors::Scrubber::new(&subject);
        // A rectification's new values are masked the same way, wherever a
        // processor echoed them (errors, evidence, notes).
        let set_scrubber = changes.as_ref().map(crate::connectors::Scrubber::new);
        let result = match (result, &set_scrubber) {
            (Err(mut e), Some(sc)) => {
                e.message = sc.scrub(&e.message);
                Err(e)
            }
            (Ok(mut d), Some(sc)) => {
                if let Some(ev) = d.evidence.as_mut() {
                    sc.scrub_json(ev);
                }
                sc.scrub_json(&mut d.extra);
                Ok(d)
            }
            (r, None) => r,
        };
        // Track the processor's health: transient failures in a row pause it.
        let failure = match &result {
            // A re-check is not the processor failing: it does not count towards a pause.
            Err(e) if e.class == ErrorClass::Transient => Some(scrubber.scrub(&e.message)),
            _ => None,
        };
        if failure.is_some() || health.consecutive_failures > 0 {
            let w = &self.config.worker;
            // The call was made: a store error here must not lose its result.
            match self
                .store
                .record_call(
                    &step.processor,
                    failure.as_deref(),
                    ms(Utc::now()),
                    w.pause_after as i64,
                    w.pause_for.get().as_millis() as i64,
                )
                .await
            {
                Ok(h) => {
                    if let Ok(mut c) = self.health_cache.lock() {
                        c.insert(step.processor.clone(), (std::time::Instant::now(), h));
                    }
                }
                Err(e) => {
                    tracing::warn!(processor = %step.processor, error = %e, "could not record the processor's health")
                }
            }
        }
        Ok(match result {
            Ok(mut d) => {
                if let Some(ev) = d.evidence.as_mut() {
                    scrubber.scrub_json(ev);
                }
                scrubber.scrub_json(&mut d.extra);
                d
            }
            Err(e) => on_error(step, &policy, e, &subject, now),
        })
    }

    fn on_erase(&self, step: &StepRow, e: Erase, now: Millis) -> Decision {
        match e {
            // An earlier attempt may have reached the processor: "not there
            // now" is then the erasure confirmed, never "held no data". Where
            // the processor only soft-deletes, it may sit in the recovery
            // window: wait it out and verify, as after any soft delete.
            Erase::NotFound(mut ev) if step.maybe_acted => {
                ev.note = Some(
                    "gone: an earlier attempt may have reached the processor before it was interrupted; this attempt found nothing left"
                        .into(),
                );
                if let Some(window) = self.soft_delete_window(step) {
                    let mut d = self.on_erase(
                        step,
                        Erase::SoftDeleted {
                            evidence: ev,
                            window,
                        },
                        now,
                    );
                    if let Value::Object(x) = &mut d.extra {
                        x.insert("after_interrupted_attempt".into(), Value::Bool(true));
                    }
                    return d;
                }
                let mut d = Decision::finished(Outcome::Erased, &ev, now);
                d.extra = json!({"after_interrupted_attempt": true, "confirmed": "not found after an interrupted attempt"});
                d
            }
            Erase::Erased(ev) => Decision::finished(Outcome::Erased, &ev, now),
            Erase::NotFound(ev) => Decision::finished(Outcome::NotFound, &ev, now),
            Erase::Retained { evidence, reason } => {
                let mut d = Decision::finished(Outcome::Retained, &evidence, now);
                d.extra = json!({"retained_reason": reason});
                d
            }
            Erase::SoftDeleted { evidence, window } => {
                let until = now.saturating_add(window.as_millis().min(i64::MAX as u128) as i64);
                Decision {
                    event: StepEvent::SoftDeleted,
                    outcome: None,
                    run_at: until,
                    attempts: None,
                    error: None,
                    evidence: Some(serde_json::to_value(&evidence).unwrap_or(Value::Null)),
                    grace_until: Some(until),
                    hold: None,
                    kind: "step.grace",
                    extra: json!({"window_ms": window.as_millis() as u64, "verify_at": until}),
                }
            }
        }
    }

    /// The recovery window of a processor whose erase only soft-deletes (the
    /// same window its connector reports after a soft delete).
    fn soft_delete_window(&self, step: &StepRow) -> Option<Duration> {
        let def = self.config.registry.get(&step.connector)?;
        let soft =
            def.actions.erase.as_ref().is_some_and(|a| {
                a.effect == crate::connectors::definition::EraseEffect::SoftDeleted
            });
        if !soft {
            return None;
        }
        let p = self
            .config
            .processors
            .iter()
            .find(|p| p.name == step.processor)?;
        Some(
            self.config
                .spec(p)
                .soft_delete_window
                .unwrap_or(Duration::from_secs(30 * 86400)),
        )
    }

    fn write_export(
        &self,
        step: &StepRow,
        _kind: &crate::domain::RequestKind,
        data: Value,
        mut evidence: Evidence,
        now: Millis,
    ) -> Result<Decision, ConnectorError> {
        use sha2::{Digest, Sha256};
        let dir = self.config.export_dir.join(&step.request_id);
        let io = |what: &str, e: std::io::Error| {
            ConnectorError::transient(format!(
                "cannot {what} the export file under {}: {e}",
                self.config.export_dir.display()
            ))
        };
        crate::report::package::create_private_dir(&self.config.export_dir)
            .and_then(|()| crate::report::package::create_private_dir(&dir))
            .map_err(|e| io("create", e))?;
        let doc = json!({
            "request_id": step.request_id,
            "processor": step.processor,
            "connector": step.connector,
            "category": step.category,
            "exported_at": crate::store::from_ms(now).to_rfc3339(),
            "data": data,
        });
        let bytes = serde_json::to_vec_pretty(&doc)
            .map_err(|e| ConnectorError::permanent(e.to_string()))?;
        // Encrypted to the configured age recipient unless plaintext was
        // chosen explicitly; never world-readable either way.
        let (name, on_disk) = match &self.config.store.export_recipient {
            Some(r) => (
                format!("{}.json.age", step.processor),
                crate::report::package::encrypt_to(r, &bytes)
                    .map_err(|e| ConnectorError::permanent(e.to_string()))?,
            ),
            None if self.config.store.export_plaintext => {
                (format!("{}.json", step.processor), bytes.clone())
            }
            None => {
                return Err(ConnectorError::permanent(format!(
                    "no [store] export_recipient in {}: export files are not written unencrypted unless export_plaintext = true",
                    self.config.path.display()
                )))
            }
        };
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        crate::report::package::write_private(&tmp, &on_disk).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("write", e))?;
        evidence.note = Some(format!(
            "{} bytes, sha256 {}",
            bytes.len(),
            hex::encode(Sha256::digest(&bytes))
        ));
        let mut d = Decision::finished(Outcome::Exported, &evidence, now);
        d.extra = json!({"file": format!("{}/{name}", step.request_id)});
        Ok(d)
    }
}

fn failed(step: &StepRow, message: String, evidence: Option<Evidence>) -> Decision {
    let _ = step;
    Decision {
        event: StepEvent::Permanent,
        outcome: None,
        run_at: ms(Utc::now()),
        attempts: None,
        error: Some((message, ErrorClass::Permanent.as_str().to_string())),
        evidence: evidence.map(|e| serde_json::to_value(e).unwrap_or(Value::Null)),
        grace_until: None,
        hold: None,
        kind: "step.failed",
        extra: json!({}),
    }
}

fn on_error(
    step: &StepRow,
    policy: &RetryPolicy,
    e: ConnectorError,
    subject: &Subject,
    now: Millis,
) -> Decision {
    let message = crate::connectors::scrub(&e.message, subject);
    let evidence = e.status.map(|s| json!({"status": s}));
    let retry_at = |d: Duration| now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
    match e.class {
        ErrorClass::Throttled => {
            // A throttled call was never processed: it does not use up an attempt.
            let wait = e.retry_after.unwrap_or_else(|| policy.delay_after(1));
            Decision {
                event: StepEvent::Transient,
                outcome: None,
                run_at: retry_at(wait),
                attempts: Some((step.attempts - 1).max(0)),
                error: Some((message, e.class.as_str().into())),
                evidence,
                grace_until: None,
                hold: None,
                kind: "step.retry_wait",
                extra: json!({"retry_in_ms": wait.as_millis() as u64}),
            }
        }
        ErrorClass::Recheck | ErrorClass::Transient
            if step.attempts < policy.max_attempts as i64 =>
        {
            let wait = e
                .retry_after
                .unwrap_or_else(|| policy.delay_after(step.attempts.max(1) as u32));
            Decision {
                event: StepEvent::Transient,
                outcome: None,
                run_at: retry_at(wait),
                attempts: None,
                error: Some((message, e.class.as_str().into())),
                evidence,
                grace_until: None,
                hold: None,
                kind: "step.retry_wait",
                extra: json!({"retry_in_ms": wait.as_millis() as u64}),
            }
        }
        ErrorClass::Recheck | ErrorClass::Transient => Decision {
            event: StepEvent::Permanent,
            outcome: None,
            run_at: now,
            attempts: None,
            error: Some((
                format!("gave up after {} attempts: {message}", step.attempts),
                "transient".into(),
            )),
            evidence,
            grace_until: None,
            hold: None,
            kind: "step.failed",
            extra: json!({}),
        },
        ErrorClass::Permanent => Decision {
            event: StepEvent::Permanent,
            outcome: None,
            run_at: now,
            attempts: None,
            error: Some((message, "permanent".into())),
            evidence,
            grace_until: None,
            hold: None,
            kind: "step.failed",
            extra: json!({}),
        },
    }
}

/// Where a finished step sends its change set, and how it hears back.
type ResultSender = tokio::sync::mpsc::UnboundedSender<(
    ChangeSet,
    tokio::sync::oneshot::Sender<Result<Applied, crate::store::StoreError>>,
)>;

/// The result writer: group commit. Results that arrive while a batch is being
/// written go out together in the next transaction, so under load the store
/// commits once per batch instead of once per step; a lone result is written at
/// once. Each change set keeps its own compare-and-set. On PostgreSQL several
/// batches are written at once ([`write_concurrency`]), so a slow round trip
/// to the server does not put every result in one queue.
///
/// [`write_concurrency`]: crate::store::QueueStore::write_concurrency
fn spawn_writer(
    store: Arc<dyn crate::store::Store>,
) -> (ResultSender, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
        ChangeSet,
        tokio::sync::oneshot::Sender<Result<Applied, crate::store::StoreError>>,
    )>();
    let handle = tokio::spawn(async move {
        // Up to `write_concurrency` batches in the store at once (1 on
        // SQLite); results that arrive meanwhile form the next batch.
        let writers = store.write_concurrency().max(1);
        let slots = Arc::new(tokio::sync::Semaphore::new(writers));
        let max_batch = if writers > 1 { BATCH_MAX_PARALLEL } else { 256 };
        let mut writing = JoinSet::new();
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            // Reap finished writes so the set does not grow.
            while writing.try_join_next().is_some() {}
            let Some(first) = rx.recv().await else { break };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let store = Arc::clone(&store);
            writing.spawn(async move {
                write_batch(store.as_ref(), batch).await;
                drop(slot);
            });
        }
        while writing.join_next().await.is_some() {}
    });
    (tx, handle)
}

/// A step's share of `worker.concurrency`, held while its call runs; giving
/// it back wakes the claim loop.
struct CallSlot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    freed: Arc<tokio::sync::Notify>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        // Release the permit before waking, so the loop sees the free slot.
        self._permit.take();
        self.freed.notify_one();
    }
}

/// How long a daemon whose claim found every due step held by a limit waits
/// before it claims again (unless one of its own slots frees first).
const BLOCKED_RETRY: Duration = Duration::from_millis(25);

/// The largest batch when batches are written in parallel (PostgreSQL). A
/// batch holds its requests' row locks until it commits, and two steps of one
/// request finishing at once (on this daemon or another) queue behind the
/// whole batch that locked their request first: small batches keep that wait
/// short.
const BATCH_MAX_PARALLEL: usize = 4;

/// Apply one batch and answer each result's sender.
async fn write_batch(
    store: &dyn crate::store::Store,
    batch: Vec<(
        ChangeSet,
        tokio::sync::oneshot::Sender<Result<Applied, crate::store::StoreError>>,
    )>,
) {
    let (sets, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match store.apply_batch(sets).await {
        Ok(applied) => {
            for (a, reply) in applied.into_iter().zip(replies) {
                let _ = reply.send(a);
            }
        }
        Err(e) => {
            // The batch failed as a whole (the connection): every
            // result is retried; an internal error stays one.
            let unavailable = e.is_unavailable();
            let msg = error_chain(&e);
            for reply in replies {
                let err = if unavailable {
                    crate::store::StoreError::Unavailable(format!("the result batch failed: {msg}"))
                } else {
                    crate::store::StoreError::Failed(format!("the result batch failed: {msg}"))
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}

fn log_task_result(
    r: Result<Result<Option<Recorded>, EngineError>, tokio::task::JoinError>,
) -> Option<Recorded> {
    match r {
        Ok(Ok(rec)) => rec,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "step failed to run");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "step task panicked");
            None
        }
    }
}

/// Count a written result and tell the observer.
async fn record(
    summary: &mut RunSummary,
    observer: Option<&dyn RunObserver>,
    rec: Option<Recorded>,
) {
    let Some(rec) = rec else { return };
    if rec.to == StepState::Failed {
        summary.failed += 1;
    }
    if let Some(o) = observer {
        o.recorded(&rec).await;
    }
}

/// Capped exponential back-off with jitter (from `backon`) for store outages:
/// 100 ms doubling up to 5 s.
struct StoreBackoff {
    inner: backon::ExponentialBackoff,
    last: Duration,
}

impl Default for StoreBackoff {
    fn default() -> Self {
        use backon::BackoffBuilder;
        StoreBackoff {
            inner: backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times()
                .build(),
            last: Duration::from_millis(100),
        }
    }
}

impl StoreBackoff {
    /// The next wait.
    fn next(&mut self) -> Duration {
        self.last = self.inner.next().unwrap_or(Duration::from_secs(5));
        self.last
    }

    /// About the next wait (the last one), without advancing.
    fn peek(&self) -> Duration {
        self.last
    }
}

/// Log a store error of the worker loop and say until when to leave the store alone.
fn store_error(
    backoff: &mut StoreBackoff,
    e: &crate::store::StoreError,
    what: &str,
) -> tokio::time::Instant {
    let wait = backoff.next();
    tracing::warn!(error = %error_chain(e), sqlstate = e.sqlstate().as_deref().unwrap_or(""), retry_in_ms = wait.as_millis() as u64, "store error while {what}; backing off, calls in flight go on");
    tokio::time::Instant::now() + wait
}

/// An error and its sources, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
