//! The engine: plans requests into steps, and runs steps through the saga.
//!
//! Every state change is computed by the pure saga (`domain::step`) and written
//! by the store as one [`ChangeSet`](crate::store::ChangeSet): the new state,
//! the audit event and the request's derived status together. Nothing lives
//! only in memory; a wait of 30 days is a `run_at` in a row.
//!
//! Phases run in order: a step is claimed only once every step of the earlier
//! phases of its request is done, held or skipped. A failed step stops the
//! later phases until the operator retries or skips it — see [`operator`] for
//! that decision and why.

pub mod limits;
pub mod manual;
pub mod operator;
pub mod planner;
pub mod retention;
pub mod sla;
pub mod suppression;
pub mod sweep;
pub mod verify;
pub mod worker;
/// Workflow files now live in `domain` (config needs them, and config must not
/// depend on the engine); this path is kept so existing imports still resolve.
pub use crate::domain::workflow;

use crate::config::Config;
use crate::connectors::{Connector, ConnectorError, Evidence};
use crate::crypto::Keys;
use crate::domain::{
    due_date, extended_due_date, Phase, RequestKind, RequestStatus, StepEvent, StepState, Subject,
};
use crate::store::{
    ms, Applied, ChangeSet, HoldRow, Millis, RequestPatch, RequestRow, StepChange, Store,
    StoreError,
};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// Engine failures, each mapped to an exit code at the edge.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something inside lethe failed (not the input's fault).
    #[error("internal error: {0}")]
    Internal(String),
    /// No such request.
    #[error("no request with id `{0}`")]
    NoRequest(String),
    /// The input was refused.
    #[error("{0}")]
    Invalid(String),
    /// The request was changed concurrently; try again.
    #[error("request `{0}` changed while this command ran; try again")]
    Conflict(String),
    /// The external id is already used by a different request; nothing was filed.
    #[error(transparent)]
    ExternalIdConflict(#[from] ExternalIdConflict),
}

/// A new request reused the external id of an existing request that differs
/// from it (another subject, kind, workflow or callback URL). Nothing was
/// written: the sender must use a new external id for a new request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "external id `{external_id}` is already used by request `{existing_id}`, which differs in {}; nothing was filed (a new request needs a new external id; `lethe status {existing_id}` shows the existing one)",
    differs.join(", ")
)]
pub struct ExternalIdConflict {
    /// The reused external id.
    pub external_id: String,
    /// The id of the request already filed under it.
    pub existing_id: String,
    /// What differs: `kind`, `identities`, `workflow`, `callback_url` (never a value).
    pub differs: Vec<&'static str>,
}

/// Optional parts of a new request.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// A workflow other than the kind's default.
    pub workflow: Option<String>,
    /// The intake form's id (idempotency).
    pub external_id: Option<String>,
    /// Status callback URL.
    pub callback_url: Option<String>,
    /// The subject's identity is not verified yet: nothing runs at any
    /// processor until `lethe verify` (or the signed verify webhook).
    pub unverified: bool,
    /// The erasure this one follows up (set by `lethe suppression check`).
    pub follows: Option<String>,
    /// A rectification's new values (only the fields to change are set).
    /// Sealed with the identities, never written anywhere in the clear.
    pub changes: Option<Subject>,
}

/// The names of the fields a rectification changes (`email`, `phone`,
/// `customer_id`, `name`), in that order; never their values.
pub fn changed_fields(set: &Subject) -> Vec<String> {
    [
        ("email", set.email.is_some()),
        ("phone", set.phone.is_some()),
        ("customer_id", set.customer_id.is_some()),
        ("name", set.name.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(f, _)| f.to_string())
    .collect()
}

/// The result of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The request.
    pub request: RequestRow,
    /// False when an existing request with the same external id was returned.
    pub created: bool,
    /// Said to the sender, the request is still accepted (e.g. the identity
    /// matches a suppressed subject of an earlier erasure). No raw identity.
    pub warnings: Vec<String>,
}

/// The orchestrator.
pub struct Engine {
    /// Configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Identity keys.
    pub keys: Keys,
    connectors: HashMap<String, Arc<dyn Connector>>,
    limits: HashMap<String, Arc<limits::ProcessorLimit>>,
    /// Processor health as last read or written here, and when (read at most once a second).
    health_cache: std::sync::Mutex<HashMap<String, (std::time::Instant, crate::store::Health)>>,
    worker_id: String,
    wake: Notify,
}

impl Engine {
    /// Build the engine: one shared HTTP client (connections are reused), one
    /// connector and one concurrency limit per processor.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        keys: Keys,
    ) -> Result<Arc<Engine>, EngineError> {
        // Redirects are never followed (see `connectors::redirect`), except to
        // the same host by connectors that opt in; that client is built only then.
        use crate::connectors::redirect::{self, FollowRedirects};
        let build = |follow| {
            redirect::client(follow)
                .map_err(|e| EngineError::Invalid(format!("cannot build the HTTP client: {e}")))
        };
        let client = build(FollowRedirects::Never)?;
        let mut same_host_client: Option<reqwest::Client> = None;
        let mut connectors = HashMap::new();
        let mut limits = HashMap::new();
        for p in &config.processors {
            let spec = config.spec(p);
            limits.insert(
                p.name.clone(),
                Arc::new(limits::ProcessorLimit::new(
                    spec.concurrency,
                    spec.rate_per_second,
                )),
            );
            let client = match config.registry.follow_redirects(&p.connector) {
                FollowRedirects::Never => client.clone(),
                FollowRedirects::SameHost => match &same_host_client {
                    Some(c) => c.clone(),
                    None => same_host_client
                        .insert(build(FollowRedirects::SameHost)?)
                        .clone(),
                },
            };
            let c = config
                .registry
                .build(&p.connector, spec, client)
                .ok_or_else(|| {
                    EngineError::Invalid(format!("unknown connector `{}`", p.connector))
                })?;
            connectors.insert(p.name.clone(), c);
        }
        let worker_id = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        Ok(Arc::new(Engine {
            config,
            store,
            keys,
            connectors,
            limits,
            worker_id,
            health_cache: std::sync::Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }))
    }

    /// This worker's id, as written into leases.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// A processor's calls in flight in this worker, and its cluster-wide
    /// limit twice (the second was this worker's share before the store
    /// granted slots; the limit is now exact for the whole cluster).
    pub fn calls_in_flight(&self, processor: &str) -> Option<(u32, u32, u32)> {
        self.limits
            .get(processor)
            .map(|l| (l.in_flight(), l.total(), l.total()))
    }

    /// The configured limits of every processor, as the store grants them.
    pub fn limit_specs(&self) -> Vec<crate::store::LimitSpec> {
        let mut v: Vec<crate::store::LimitSpec> = self
            .limits
            .iter()
            .map(|(p, l)| crate::store::LimitSpec {
                processor: p.clone(),
                concurrency: l.total(),
                rate_per_second: l.rate(),
            })
            .collect();
        v.sort_by(|a, b| a.processor.cmp(&b.processor));
        v
    }

    /// The connector for a processor.
    pub fn connector(&self, processor: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(processor)
    }

    /// File a request: validate, plan, seal the identities, store it.
    pub async fn submit(
        &self,
        kind: RequestKind,
        subject: Subject,
        opts: SubmitOptions,
    ) -> Result<Submitted, EngineError> {
        self.submit_with_callbacks(kind, subject, opts, Vec::new())
            .await
    }

    /// [`submit`](Self::submit), with status-callback destinations besides
    /// `opts.callback_url` (which gets our own `lethe` format): each gets a
    /// callback on every status change, through the store's outbox.
    pub async fn submit_with_callbacks(
        &self,
        kind: RequestKind,
        subject: Subject,
        opts: SubmitOptions,
        extra_callbacks: Vec<crate::store::Callback>,
    ) -> Result<Submitted, EngineError> {
        subject
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let fields = match (kind, &opts.changes) {
            (RequestKind::Rectification, Some(set)) if !changed_fields(set).is_empty() => {
                changed_fields(set)
            }
            (RequestKind::Rectification, _) => {
                return Err(EngineError::Invalid(
                    "a rectification needs at least one new value: --set email=…, phone=…, name=… or customer_id=…".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(EngineError::Invalid(format!(
                    "new values (`set`) belong to a rectification, not to a {kind} request"
                )))
            }
            (_, None) => vec![],
        };
        if let Some(ext) = &opts.external_id {
            if let Some(existing) = self.store.find_by_external_id(ext).await? {
                return self
                    .same_or_conflict(existing, ext, kind, &subject, &opts)
                    .await;
            }
        }
        let (wf_name, wf) = self
            .config
            .workflows
            .pick(kind, opts.workflow.as_deref())
            .map_err(EngineError::Invalid)?;
        if kind == RequestKind::Export
            && self.config.store.export_recipient.is_none()
            && !self.config.store.export_plaintext
        {
            return Err(EngineError::Invalid(format!(
                "export requests need [store] export_recipient = \"age1…\" in {} (export files are encrypted to it; `age-keygen` makes one), or export_plaintext = true to write them unencrypted",
                self.config.path.display()
            )));
        }
        let now = Utc::now();
        let subject_hash = self.keys.subject_hash(&subject);
        let entries = suppression::entries(&self.keys, &subject);
        let warnings = suppression::warnings(self.store.as_ref(), &entries).await?;
        let due = match wf.deadline {
            // A shorter promise than the law's; never later than the law's.
            Some(d) => (now + d.chrono()).min(due_date(now)),
            None => due_date(now),
        };
        let adhoc = self.store.active_holds(&subject_hash, ms(now)).await?;
        let steps = planner::plan(&self.config, wf, kind, ms(now), &adhoc, &fields)
            .map_err(EngineError::Invalid)?;
        let id = uuid::Uuid::new_v4().to_string();
        let (sealed, data_key) = self
            .keys
            .seal_with_changes(&id, &subject, opts.changes.as_ref());
        let req = crate::store::NewRequest {
            id,
            kind,
            workflow: wf_name.to_string(),
            received_at: ms(now),
            due_at: ms(due),
            external_id: opts.external_id.clone(),
            subject_hash,
            subject_masked: subject.masked(),
            identities: sealed,
            callback_url: opts.callback_url.clone(),
            data_key: Some(data_key),
            verified: !opts.unverified,
            follows: opts.follows.clone(),
            suppress: if kind == RequestKind::Erasure {
                entries
            } else {
                vec![]
            },
            fields,
        };
        let mut callbacks: Vec<crate::store::Callback> = opts
            .callback_url
            .iter()
            .map(|u| crate::store::Callback {
                url: u.clone(),
                protocol: "lethe".into(),
            })
            .collect();
        callbacks.extend(extra_callbacks);
        let created = if callbacks.is_empty() {
            self.store.create_request(req, steps, ms(now)).await
        } else {
            self.store
                .create_request_with_callbacks(req, steps, callbacks, ms(now))
                .await
        };
        match created {
            Ok(request) => {
                self.wake.notify_one();
                Ok(Submitted {
                    request,
                    created: true,
                    warnings,
                })
            }
            // A concurrent delivery with the same external id won the race:
            // its request is ours if it is the same request, else a conflict.
            Err(StoreError::Duplicate(_)) if opts.external_id.is_some() => {
                let ext = opts.external_id.as_deref().unwrap_or_default();
                let existing = self
                    .store
                    .find_by_external_id(ext)
                    .await?
                    .ok_or_else(|| EngineError::Conflict(ext.to_string()))?;
                self.same_or_conflict(existing, ext, kind, &subject, &opts)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An existing request filed under the external id `ext` is returned (not
    /// created again) if the new one is the same request: same kind, workflow,
    /// callback URL and identities. Anything that differs, or that cannot be
    /// shown to be equal, is an [`ExternalIdConflict`].
    async fn same_or_conflict(
        &self,
        existing: RequestRow,
        ext: &str,
        kind: RequestKind,
        subject: &Subject,
        opts: &SubmitOptions,
    ) -> Result<Submitted, EngineError> {
        let differs = self.differences(&existing, kind, subject, opts).await;
        if differs.is_empty() {
            return Ok(Submitted {
                request: existing,
                created: false,
                warnings: vec![],
            });
        }
        Err(ExternalIdConflict {
            external_id: ext.to_string(),
            existing_id: existing.id,
            differs,
        }
        .into())
    }

    /// The fields in which a new request differs from `existing` (empty: the same request).
    ///
    /// The identities are compared by opening the existing request's sealed
    /// identities. Once those were destroyed (crypto-shredding) only the keyed
    /// hash of the matching key and the masked form remain: they prove the same
    /// subject only when the new subject has that one identity alone.
    pub async fn differences(
        &self,
        existing: &RequestRow,
        kind: RequestKind,
        subject: &Subject,
        opts: &SubmitOptions,
    ) -> Vec<&'static str> {
        let mut differs = vec![];
        if existing.kind != kind {
            differs.push("kind");
        }
        let same_identities = match &existing.identities {
            // Opened with the request's own data key; anything that cannot be
            // opened cannot be proved equal.
            Some(_) => {
                matches!(
                    self.open_subject_and_changes(existing).await,
                    Ok(Some((old, set))) if old == *subject && set == opts.changes
                )
            }
            None => {
                let only_one = [
                    subject.email.is_some(),
                    subject.phone.is_some(),
                    subject.customer_id.is_some(),
                    subject.name.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count()
                    == 1;
                only_one
                    && self.keys.subject_hash(subject) == existing.subject_hash
                    && subject.masked() == existing.subject_masked
            }
        };
        if !same_identities {
            differs.push("identities");
        }
        let workflow = match self.config.workflows.pick(kind, opts.workflow.as_deref()) {
            Ok((name, _)) => Some(name.to_string()),
            Err(_) => opts.workflow.clone(),
        };
        // Without a workflow named, another kind's default differs as a consequence only.
        let derived = opts.workflow.is_none() && existing.kind != kind;
        if !derived && workflow.as_deref() != Some(existing.workflow.as_str()) {
            differs.push("workflow");
        }
        if opts.callback_url != existing.callback_url {
            differs.push("callback_url");
        }
        differs
    }

    /// A request by id.
    pub async fn request(&self, id: &str) -> Result<RequestRow, EngineError> {
        self.store
            .get_request(id)
            .await?
            .ok_or_else(|| EngineError::NoRequest(id.to_string()))
    }

    /// Put failed steps (of one processor, or all) back to pending with fresh attempts.
    pub async fn retry(&self, id: &str, processor: Option<&str>) -> Result<usize, EngineError> {
        let req = self.request(id).await?;
        let steps = self.store.steps(&req.id).await?;
        if let Some(p) = processor {
            if !steps.iter().any(|s| s.processor == p) {
                return Err(EngineError::Invalid(format!(
                    "request `{id}` has no step at processor `{p}`"
                )));
            }
        }
        let now = ms(Utc::now());
        let changes: Vec<StepChange> = steps
            .iter()
            .filter(|s| s.state == StepState::Failed && processor.is_none_or(|p| s.processor == p))
            .filter_map(|s| {
                let to = s.state.apply(StepEvent::Retry).ok()?;
                Some(StepChange {
                    step_id: s.id,
                    from: s.state,
                    lease_token: None,
                    maybe_acted: false,
                    to,
                    phase: s.phase,
                    outcome: None,
                    run_at: now,
                    attempts: Some(0),
                    error: None,
                    evidence: None,
                    hold: None,
                    grace_until: None,
                    finished: false,
                    event: "step.retried".into(),
                    detail: serde_json::json!({"processor": s.processor, "from": "failed", "to": to.as_str()}),
                })
            })
            .collect();
        let n = changes.len();
        if n == 0 {
            return Ok(0);
        }
        let cs = ChangeSet {
            request_id: req.id.clone(),
            now,
            steps: changes,
            request: RequestPatch::default(),
            events: vec![],
        };
        match self.store.apply(cs).await? {
            Applied::Done { .. } => {
                self.wake.notify_one();
                Ok(n)
            }
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }

    /// Cancel a request: every step that has not acted is cancelled. Steps in a
    /// recovery window already acted and are left to finish.
    pub async fn cancel(&self, id: &str) -> Result<RequestStatus, EngineError> {
        let req = self.request(id).await?;
        if req.cancelled {
            return Ok(RequestStatus::Cancelled);
        }
        if req.status == RequestStatus::Completed {
            return Err(EngineError::Invalid(format!(
                "request `{id}` is already completed; there is nothing to cancel"
            )));
        }
        let now = ms(Utc::now());
        let steps = self.store.steps(&req.id).await?;
        let changes = steps
            .iter()
            .filter_map(|s| {
                let to = s.state.apply(StepEvent::Cancel).ok()?;
                Some(StepChange {
                    step_id: s.id,
                    from: s.state,
                    lease_token: None,
                    maybe_acted: false,
                    to,
                    phase: s.phase,
                    outcome: None,
                    run_at: s.run_at,
                    attempts: None,
                    error: None,
                    evidence: None,
                    hold: None,
                    grace_until: None,
                    finished: true,
                    event: "step.cancelled".into(),
                    detail: serde_json::json!({"processor": s.processor, "from": s.state.as_str(), "to": "cancelled"}),
                })
            })
            .collect();
        let cs = ChangeSet {
            request_id: req.id.clone(),
            now,
            steps: changes,
            request: RequestPatch {
                cancelled: Some(true),
                ..Default::default()
            },
            events: vec![("request.cancelled".into(), serde_json::json!({}))],
        };
        match self.store.apply(cs).await? {
            Applied::Done { status, .. } => Ok(status),
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }

    /// The one allowed deadline extension (+2 months), with its reason.
    pub async fn extend(&self, id: &str, reason: &str) -> Result<RequestRow, EngineError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(EngineError::Invalid(
                "an extension needs a reason (Art. 12(3): the subject must be told why)".into(),
            ));
        }
        let req = self.request(id).await?;
        if req.extended_reason.is_some() {
            return Err(EngineError::Invalid(format!(
                "request `{id}` was already extended once; GDPR allows one extension"
            )));
        }
        let new_due = ms(extended_due_date(crate::store::from_ms(req.due_at)));
        let cs = ChangeSet {
            request_id: req.id.clone(),
            now: ms(Utc::now()),
            steps: vec![],
            request: RequestPatch {
                extend_to: Some((new_due, reason.to_string())),
                ..Default::default()
            },
            events: vec![(
                "request.extended".into(),
                serde_json::json!({"from": req.due_at, "to": new_due, "reason": reason}),
            )],
        };
        match self.store.apply(cs).await? {
            Applied::Done { .. } => self.request(id).await,
            Applied::AlreadyExtended => Err(EngineError::Invalid(format!(
                "request `{id}` was already extended once; GDPR allows one extension"
            ))),
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }

    /// Place an ad-hoc legal hold on a subject (all processors, or one). New
    /// requests are planned as held, and the worker checks holds before every
    /// erase call, so open requests are held too.
    pub async fn add_hold(
        &self,
        subject: &Subject,
        basis: &str,
        until: Option<Millis>,
        processor: Option<&str>,
    ) -> Result<HoldRow, EngineError> {
        subject
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let basis = basis.trim();
        if basis.is_empty() {
            return Err(EngineError::Invalid("a hold needs its legal basis (--basis), e.g. \"litigation: case 2026-114 (Art. 17(3)(e))\"".into()));
        }
        let now = ms(Utc::now());
        if let Some(u) = until {
            if u <= now {
                return Err(EngineError::Invalid("--until is in the past".into()));
            }
        }
        if let Some(p) = processor {
            if !self.config.processors.iter().any(|c| c.name == p) {
                return Err(EngineError::Invalid(format!(
                    "no processor named `{p}` in {}",
                    self.config.path.display()
                )));
            }
        }
        let hold = HoldRow {
            id: uuid::Uuid::new_v4().to_string(),
            subject_hash: self.keys.subject_hash(subject),
            subject_masked: subject.masked(),
            basis: basis.to_string(),
            until_at: until,
            processor: processor.map(str::to_string),
            created_at: now,
            released_at: None,
        };
        self.store.add_hold(hold.clone()).await?;
        Ok(hold)
    }

    /// Release an ad-hoc hold; the subject's held steps are re-checked at once
    /// (and erase if nothing else holds them).
    pub async fn release_hold(&self, id: &str) -> Result<HoldRow, EngineError> {
        let now = ms(Utc::now());
        let hold = self.store.release_hold(id, now).await?.ok_or_else(|| {
            EngineError::Invalid(format!(
                "no open hold with id `{id}` (see `lethe hold list`)"
            ))
        })?;
        self.store.wake_held_steps(&hold.subject_hash, now).await?;
        self.wake.notify_one();
        Ok(hold)
    }

    /// Call every processor's cheapest authenticated endpoint.
    pub async fn check(&self) -> Vec<(String, Result<Evidence, ConnectorError>)> {
        let futs = self.config.processors.iter().map(|p| {
            let c = self.connectors.get(&p.name).cloned();
            let name = p.name.clone();
            async move {
                match c {
                    Some(c) => (name, c.check().await),
                    None => (
                        name.clone(),
                        Err(ConnectorError::permanent(format!(
                            "processor `{name}` has no connector"
                        ))),
                    ),
                }
            }
        });
        futures::future::join_all(futs).await
    }

    /// Wake a sleeping worker loop (a new request arrived in this process).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    fn phase_after(to: StepState, phase: Phase) -> Phase {
        match to {
            StepState::Grace => Phase::Verify,
            StepState::AwaitingConfirmation => Phase::Remind,
            StepState::Pending | StepState::Held => Phase::Act,
            _ => phase,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "lethe".into())
}
