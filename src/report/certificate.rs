//! The certificate of one request: what was done at each processor, when, and
//! what the processor answered — the proof a privacy officer keeps.
//!
//! Built only from the store (request row, step rows, the request's audit
//! events) plus a verification of the request's own audit chain
//! (`request:<uuid>`, O(that request), not O(all events)), so it can be
//! regenerated at any time and always agrees with the trail it cites. A
//! request created before migration 0011 also has events in the `legacy`
//! chain; that chain (which no longer grows) is then verified too.

use super::{human_ms, ts};
use crate::audit::{ChainVerification, Verification};
use crate::store::{
    AuditStore, CheckpointStore, EventRow, Millis, RequestRow, RequestStore, StepRow, StoreError,
};
use serde::Serialize;
use serde_json::Value;

/// The certificate model (also its JSON format).
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// When this certificate was generated (RFC 3339).
    pub generated_at: String,
    /// The request.
    pub request: RequestPart,
    /// One entry per processor.
    pub processors: Vec<ProcessorRow>,
    /// The audit trail this certificate cites.
    pub audit: AuditPart,
}

/// The request part of a certificate.
#[derive(Debug, Clone, Serialize)]
pub struct RequestPart {
    /// Request id.
    pub id: String,
    /// `erasure`, `export`, `objection` or `rectification`.
    pub kind: String,
    /// Workflow name.
    pub workflow: String,
    /// Derived status.
    pub status: String,
    /// Masked identities (`j***@example.com`); never the raw identity.
    pub subject: String,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339.
    pub due_at: String,
    /// When it first closed, if it has.
    pub completed_at: Option<String>,
    /// `completed_at <= due_at`; null while open.
    pub deadline_met: Option<bool>,
    /// Due date passed and not closed.
    pub overdue: bool,
    /// The one extension's reason.
    pub extended_reason: Option<String>,
    /// The intake form's id.
    pub external_id: Option<String>,
    /// `sealed` (still held, encrypted) or `destroyed` (crypto-shredded).
    pub identities: String,
    /// When the sealed identities were destroyed.
    pub identities_destroyed_at: Option<String>,
    /// How the subject's identity was verified, for a request filed
    /// unverified (`request.verified` event); null when filed verified.
    pub verification: Option<VerificationPart>,
    /// False while it waits for verification (no processor was called).
    pub verified: bool,
    /// The erasure this one follows up (its subject re-appeared at a processor).
    pub follows: Option<String>,
    /// Re-appearances of this erasure's subject found by `lethe suppression check`.
    pub reappeared: Vec<ReappearedPart>,
}

/// How a request's subject was verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationPart {
    /// The method given (`email link`, `id document`…).
    pub method: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who: `cli:USER` or `webhook`.
    pub by: String,
}

/// A re-appearance of an erased subject at a processor.
#[derive(Debug, Clone, Serialize)]
pub struct ReappearedPart {
    /// When it was found (RFC 3339).
    pub at: String,
    /// Where.
    pub processor: String,
    /// The identity kind that matched and its masked form.
    pub identity: String,
    /// The follow-up erasure opened for it.
    pub follow_up: Option<String>,
}

/// One processor's row.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessorRow {
    /// Processor name.
    pub processor: String,
    /// Connector name.
    pub connector: String,
    /// Category.
    pub category: String,
    /// `erase` or `export`.
    pub action: String,
    /// Saga state.
    pub state: String,
    /// The outcome when done (`erased`, `purged`, `not_found`, `retained`, `exported`,
    /// `confirmed`), else the state (`held`, `failed`, `grace`, …).
    pub result: String,
    /// When the step finished (or last changed, while open).
    pub when: Option<String>,
    /// Calls made (throttled ones do not count).
    pub attempts: i64,
    /// First claim.
    pub started_at: Option<String>,
    /// Reached done/failed/cancelled.
    pub finished_at: Option<String>,
    /// The processor's answer.
    pub evidence: EvidencePart,
    /// A legal hold.
    pub hold: Option<HoldPart>,
    /// A soft delete and its recovery window.
    pub soft_delete: Option<SoftDeletePart>,
    /// Why data was kept on purpose (`retained`).
    pub retained_reason: Option<String>,
    /// Why the step did not apply to this processor (`not_applicable`: its
    /// connector has no action for the request's kind), and what to do instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applicable_reason: Option<String>,
    /// A rectification: the names of the fields the processor's answer
    /// showed changed (never their values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The operator gave up on this failed step (`lethe skip`): its result is
    /// `skipped`, never an erasure; the error it failed with stays in `error`.
    pub skipped: Option<SkippedPart>,
    /// The last error, masked.
    pub error: Option<ErrorPart>,
    /// What happened, in order (from the audit events).
    pub timeline: Vec<TimelineEntry>,
}

/// The processor's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvidencePart {
    /// HTTP status of the decisive call.
    pub status: Option<u64>,
    /// The processor's reference id.
    pub reference: Option<String>,
    /// A remark.
    pub note: Option<String>,
}

/// A legal hold.
#[derive(Debug, Clone, Serialize)]
pub struct HoldPart {
    /// Legal basis.
    pub basis: String,
    /// End of the hold (RFC 3339).
    pub until: Option<String>,
}

/// A soft delete.
#[derive(Debug, Clone, Serialize)]
pub struct SoftDeletePart {
    /// When the processor soft-deleted.
    pub deleted_at: Option<String>,
    /// End of the recovery window.
    pub window_until: Option<String>,
    /// When the purge was verified (the step then became `purged`).
    pub purge_verified_at: Option<String>,
}

/// A failed step the operator skipped.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedPart {
    /// Who decided: always `operator`.
    pub by: String,
    /// The operator's reason (identities masked).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
    /// The audit event's sequence number.
    pub seq: i64,
    /// The audit event's position within its chain (`audit.chain`, or `legacy`).
    pub chain_seq: i64,
}

/// An error.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorPart {
    /// `transient`, `throttled` or `permanent`.
    pub class: Option<String>,
    /// What went wrong and what to do.
    pub message: String,
}

/// One entry of a processor's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// RFC 3339.
    pub at: String,
    /// Milliseconds since the epoch (for drawing).
    pub at_ms: Millis,
    /// `created`, `held`, `retry_wait`, `grace`, `done`, `failed`, `retried`, `cancelled`, `lease_expired`.
    pub kind: String,
    /// For people.
    pub label: String,
    /// The end of a wait this entry starts (retry, recovery window, hold).
    pub until_ms: Option<Millis>,
    /// The audit event's sequence number.
    pub seq: i64,
    /// The audit event's position within its chain (`audit.chain`, or `legacy`).
    pub chain_seq: i64,
}

/// The audit trail cited.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPart {
    /// Events of this request.
    pub request_events: usize,
    /// Hash of this request's last event.
    pub request_last_hash: Option<String>,
    /// The request's own chain (`request:<uuid>`).
    pub chain: String,
    /// Events verified: the request's chain (and the legacy chain, if the
    /// request has events there).
    pub chain_events: u64,
    /// Hash of the request chain's head (its last event).
    pub chain_head: Option<String>,
    /// Whether the request's chain (and the legacy chain, if it has events
    /// there) recomputes and matches its recorded head.
    pub chain_verified: bool,
    /// The first broken row, if not.
    pub broken_at: Option<i64>,
    /// Why it is broken.
    pub broken_reason: Option<String>,
    /// The events of the request's own chain (`chain`), in order, as hashed:
    /// with `checkpoint` and `proof`, `lethe audit verify --certificate`
    /// checks them offline. (Events of a request created before per-chain
    /// hashing, in the `legacy` chain, are not included: they cannot be
    /// checked without the whole legacy chain.)
    pub events: Vec<crate::audit::proofcheck::CertEvent>,
    /// The signed checkpoint covering the last of `events` (the chain's
    /// head when the certificate was made), or null when none covers it yet.
    pub checkpoint: Option<crate::audit::checkpoint::Checkpoint>,
    /// The inclusion proof of that head in `checkpoint`'s Merkle tree.
    pub proof: Option<crate::audit::merkle::Proof>,
    /// True when the head is not yet covered by a checkpoint (they are written
    /// every `[audit] checkpoint_every`): regenerate the certificate later.
    pub pending_checkpoint: bool,
    /// The id of the key that signed `checkpoint` (`lethe audit key` prints it).
    pub key_id: Option<String>,
    /// Set when a checkpoint was found but its stored leaves do not recompute
    /// to its signed root (no proof can be given; `lethe audit verify` names it).
    pub checkpoint_error: Option<String>,
}

/// Build the certificate of request `id`; `None` if there is no such request.
pub async fn build<S: RequestStore + AuditStore + CheckpointStore + ?Sized>(
    store: &S,
    id: &str,
    now: Millis,
) -> Result<Option<Certificate>, StoreError> {
    let Some(req) = store.get_request(id).await? else {
        return Ok(None);
    };
    let steps = store.steps(&req.id).await?;
    let events = store.request_events(&req.id).await?;
    let verification = verify_request_chain(store, &req.id, &events).await?;
    let mut cert = assemble(&req, &steps, &events, &verification, now);
    attach_checkpoint(store, &mut cert.audit, &events).await?;
    Ok(Some(cert))
}

/// Fill in the request chain's events, the checkpoint covering its last
/// event and the inclusion proof (or say honestly that none covers it yet).
pub async fn attach_checkpoint<S: CheckpointStore + ?Sized>(
    store: &S,
    audit: &mut AuditPart,
    events: &[EventRow],
) -> Result<(), StoreError> {
    use crate::audit::merkle::{Leaf, Tree};
    audit.events = events
        .iter()
        .filter(|e| e.chain == audit.chain)
        .map(|e| crate::audit::proofcheck::CertEvent {
            chain: e.chain.clone(),
            chain_seq: e.chain_seq,
            at: e.at,
            request: e.request_id.clone(),
            step: e.step_id,
            kind: e.kind.clone(),
            detail: e.detail.clone(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        })
        .collect();
    let Some(last) = audit.events.last() else {
        return Ok(());
    };
    let Some(row) = store
        .checkpoint_covering(&last.chain, last.chain_seq)
        .await?
    else {
        audit.pending_checkpoint = true;
        return Ok(());
    };
    let leaves = store.checkpoint_leaves(row.id, row.id).await?;
    let tree = Tree::new(
        leaves
            .into_iter()
            .map(|(_, l)| Leaf {
                chain: l.chain,
                chain_seq: l.chain_seq,
                hash: l.hash,
            })
            .collect(),
    );
    let proof = tree
        .prove(&last.chain)
        .filter(|p| p.leaf.chain_seq == last.chain_seq && p.leaf.hash == last.hash);
    match proof {
        Some(p) if hex::encode(tree.root()) == row.root => {
            audit.key_id = Some(row.key_id.clone());
            audit.checkpoint = Some(crate::audit::proofcheck::to_checkpoint(&row));
            audit.proof = Some(p);
        }
        _ => {
            audit.checkpoint_error = Some(format!(
                "checkpoint #{} covers this chain, but its stored leaves do not recompute to its signed root (or do not hold this head): run `lethe audit verify`",
                row.id
            ));
        }
    }
    Ok(())
}

/// Verify what a request's certificate cites: its own chain, plus the legacy
/// chain if some of its events predate per-chain hashing. As a [`Verification`]
/// whose `head` is the request chain's head.
pub async fn verify_request_chain<S: AuditStore + ?Sized>(
    store: &S,
    request_id: &str,
    events: &[EventRow],
) -> Result<Verification, StoreError> {
    let chain = crate::domain::event::chain_of(Some(request_id), "", &Value::Null);
    let mut parts: Vec<ChainVerification> = Vec::new();
    if events
        .iter()
        .any(|e| e.chain == crate::domain::event::LEGACY_CHAIN)
    {
        parts.push(crate::audit::verify_chain(store, crate::domain::event::LEGACY_CHAIN).await?);
    }
    let own = crate::audit::verify_chain(store, &chain).await?;
    let head = own.head.clone();
    parts.push(own);
    let broken: Vec<_> = parts.iter().filter_map(|p| p.broken.clone()).collect();
    Ok(Verification {
        checked: parts.iter().map(|p| p.checked).sum(),
        head,
        broken: broken.first().cloned(),
        chains: parts.len() as u64,
        broken_chains: broken.len() as u64,
        broken_list: broken,
    })
}

/// Assemble a certificate from rows (pure).
pub fn assemble(
    req: &RequestRow,
    steps: &[StepRow],
    events: &[EventRow],
    verification: &Verification,
    now: Millis,
) -> Certificate {
    let destroyed = events
        .iter()
        .rev()
        .find(|e| e.kind == "request.identities_destroyed")
        .map(|e| ts(e.at));
    let request = RequestPart {
        id: req.id.clone(),
        kind: req.kind.as_str().into(),
        workflow: req.workflow.clone(),
        status: req.status.as_str().into(),
        subject: req.subject_masked.clone(),
        received_at: ts(req.received_at),
        due_at: ts(req.due_at),
        completed_at: req.completed_at.map(ts),
        deadline_met: req.completed_at.map(|c| c <= req.due_at),
        overdue: !req.status.is_closed() && now > req.due_at,
        extended_reason: req.extended_reason.clone(),
        external_id: req.external_id.clone(),
        identities: if req.identities.is_some() {
            "sealed".into()
        } else {
            "destroyed".into()
        },
        identities_destroyed_at: destroyed,
        verification: events
            .iter()
            .find(|e| e.kind == "request.verified")
            .map(|e| VerificationPart {
                method: str_at(&e.detail, "method").unwrap_or("?").to_string(),
                at: ts(e.at),
                by: str_at(&e.detail, "by").unwrap_or("?").to_string(),
            }),
        verified: req.verified,
        follows: req.follows.clone(),
        reappeared: events
            .iter()
            .filter(|e| e.kind == "suppression.reappeared")
            .map(|e| ReappearedPart {
                at: ts(e.at),
                processor: str_at(&e.detail, "processor").unwrap_or("?").to_string(),
                identity: format!(
                    "{} {}",
                    str_at(&e.detail, "identity_kind").unwrap_or("?"),
                    str_at(&e.detail, "masked").unwrap_or("?")
                ),
                follow_up: str_at(&e.detail, "follow_up").map(str::to_string),
            })
            .collect(),
    };
    let created_at = events
        .iter()
        .find(|e| e.kind == "request.created")
        .map(|e| (e.at, e.seq, e.chain_seq))
        .unwrap_or((req.received_at, 0, 0));
    let processors = steps
        .iter()
        .map(|s| processor_row(s, events, created_at))
        .collect();
    Certificate {
        generated_at: ts(now),
        request,
        processors,
        audit: AuditPart {
            chain: crate::domain::event::chain_of(Some(&req.id), "", &Value::Null),
            request_events: events.len(),
            request_last_hash: events.last().map(|e| e.hash.clone()),
            chain_events: verification.checked,
            chain_head: verification.head.clone(),
            chain_verified: verification.broken.is_none(),
            broken_at: verification.broken.as_ref().map(|b| b.seq),
            broken_reason: verification.broken.as_ref().map(|b| b.reason.clone()),
            events: vec![],
            checkpoint: None,
            proof: None,
            pending_checkpoint: false,
            key_id: None,
            checkpoint_error: None,
        },
    }
}

fn str_at<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn processor_row(s: &StepRow, events: &[EventRow], created: (Millis, i64, i64)) -> ProcessorRow {
    let mine: Vec<&EventRow> = events.iter().filter(|e| e.step_id == Some(s.id)).collect();
    let mut timeline = vec![TimelineEntry {
        at: ts(created.0),
        at_ms: created.0,
        kind: "created".into(),
        label: "step planned".into(),
        until_ms: None,
        seq: created.1,
        chain_seq: created.2,
    }];
    if let (Some(basis), Some(until)) = (&s.hold_basis, s.hold_until) {
        timeline.push(TimelineEntry {
            at: ts(created.0),
            at_ms: created.0,
            kind: "held".into(),
            label: format!("held until {}: {basis}", &ts(until)[..10]),
            until_ms: Some(until),
            seq: created.1,
            chain_seq: created.2,
        });
    }
    let mut grace_at = None;
    let mut retained_reason = None;
    let mut fields: Vec<String> = vec![];
    let mut skipped = None;
    for e in &mine {
        let d = &e.detail;
        let attempt = d.get("attempt").and_then(Value::as_i64);
        let attempt_txt = attempt
            .map(|a| format!("attempt {a}: "))
            .unwrap_or_default();
        let (kind, label, until) = match e.kind.as_str() {
            "step.retry_wait" => {
                let wait = d.get("retry_in_ms").and_then(Value::as_i64).unwrap_or(0);
                (
                    "retry_wait",
                    format!(
                        "{attempt_txt}{} ({}); retry in {}",
                        str_at(d, "error_class").unwrap_or("error"),
                        d.get("evidence")
                            .and_then(|v| v.get("status"))
                            .and_then(Value::as_u64)
                            .map(|s| format!("HTTP {s}"))
                            .unwrap_or_else(|| "no response".into()),
                        human_ms(wait)
                    ),
                    Some(e.at.saturating_add(wait)),
                )
            }
            "step.grace" => {
                grace_at = Some(e.at);
                let until = d.get("verify_at").and_then(Value::as_i64);
                (
                    "grace",
                    format!(
                        "{attempt_txt}soft-deleted; recovery window {}",
                        d.get("window_ms")
                            .and_then(Value::as_i64)
                            .map(human_ms)
                            .unwrap_or_default()
                    ),
                    until,
                )
            }
            "step.done" => {
                if let Some(r) = str_at(d, "retained_reason") {
                    retained_reason = Some(r.to_string());
                }
                if let Some(f) = d.get("fields").and_then(Value::as_array) {
                    fields = f
                        .iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect();
                }
                (
                    "done",
                    format!(
                        "{attempt_txt}done: {}",
                        str_at(d, "outcome").unwrap_or("done")
                    ),
                    None,
                )
            }
            "step.failed" => (
                "failed",
                format!(
                    "{attempt_txt}failed ({})",
                    str_at(d, "error_class").unwrap_or("permanent")
                ),
                None,
            ),
            "step.retried" => ("retried", "back to pending (lethe retry)".into(), None),
            "step.skipped" => {
                let reason = str_at(d, "reason").unwrap_or("").to_string();
                skipped = Some(SkippedPart {
                    by: "operator".into(),
                    reason: reason.clone(),
                    at: ts(e.at),
                    seq: e.seq,
                    chain_seq: e.chain_seq,
                });
                (
                    "skipped",
                    format!("skipped by the operator after it failed: {reason}"),
                    None,
                )
            }
            "step.cancelled" => ("cancelled", "cancelled".into(), None),
            "step.lease_expired" => (
                "lease_expired",
                "worker lease expired; taken over".into(),
                None,
            ),
            other => ("event", other.to_string(), None),
        };
        timeline.push(TimelineEntry {
            at: ts(e.at),
            at_ms: e.at,
            kind: kind.into(),
            label,
            until_ms: until,
            seq: e.seq,
            chain_seq: e.chain_seq,
        });
    }
    let ev = s.evidence.as_ref();
    let evidence = EvidencePart {
        status: ev.and_then(|e| e.get("status")).and_then(Value::as_u64),
        reference: ev.and_then(|e| str_at(e, "reference")).map(String::from),
        note: ev.and_then(|e| str_at(e, "note")).map(String::from),
    };
    let not_applicable_reason = (s.outcome == Some(crate::domain::Outcome::NotApplicable))
        .then(|| evidence.note.clone())
        .flatten();
    let outcome = s.outcome.map(|o| o.as_str().to_string());
    let soft_delete = (s.grace_until.is_some() || grace_at.is_some()).then(|| SoftDeletePart {
        deleted_at: grace_at.map(ts),
        window_until: s.grace_until.map(ts),
        purge_verified_at: (outcome.as_deref() == Some("purged"))
            .then_some(s.finished_at)
            .flatten()
            .map(ts),
    });
    ProcessorRow {
        processor: s.processor.clone(),
        connector: s.connector.clone(),
        category: s.category.clone(),
        action: s.action.as_str().into(),
        state: s.state.as_str().into(),
        result: outcome.unwrap_or_else(|| s.state.as_str().to_string()),
        when: s
            .finished_at
            .or_else(|| mine.last().map(|e| e.at))
            .or(Some(created.0))
            .map(ts),
        attempts: s.attempts,
        started_at: s.started_at.map(ts),
        finished_at: s.finished_at.map(ts),
        evidence,
        hold: s.hold_basis.as_ref().map(|b| HoldPart {
            basis: b.clone(),
            until: s.hold_until.map(ts),
        }),
        soft_delete,
        retained_reason,
        not_applicable_reason,
        fields,
        skipped,
        error: s.last_error.as_ref().map(|m| ErrorPart {
            class: s.error_class.clone(),
            message: m.clone(),
        }),
        timeline,
    }
}

impl ProcessorRow {
    /// One line of evidence for tables: `HTTP 204, ref abc, note`.
    pub fn evidence_line(&self) -> String {
        let mut parts = vec![];
        if let Some(s) = self.evidence.status {
            parts.push(format!("HTTP {s}"));
        }
        if let Some(r) = &self.evidence.reference {
            parts.push(format!("ref {r}"));
        }
        if let Some(n) = &self.evidence.note {
            // A retained or not-applicable step's note is its reason, shown by `qualifier`.
            if self.retained_reason.as_ref() != Some(n)
                && self.not_applicable_reason.as_ref() != Some(n)
            {
                parts.push(n.clone());
            }
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }

    /// The hold, window or error that qualifies the result, for tables.
    pub fn qualifier(&self) -> Option<String> {
        if let Some(sk) = &self.skipped {
            return Some(format!(
                "skipped by the operator {}: {}{}",
                short(&sk.at),
                sk.reason,
                self.error
                    .as_ref()
                    .map(|e| format!(" (it had failed: {})", e.message))
                    .unwrap_or_default()
            ));
        }
        if let Some(h) = &self.hold {
            if self.state == "held" {
                return Some(format!(
                    "hold until {}: {}",
                    h.until.as_deref().map(|u| &u[..10]).unwrap_or("released"),
                    h.basis
                ));
            }
        }
        if let Some(sd) = &self.soft_delete {
            return Some(match &sd.purge_verified_at {
                Some(v) => format!(
                    "soft-deleted {}; window to {}; purge verified {}",
                    sd.deleted_at.as_deref().map(short).unwrap_or("?"),
                    sd.window_until.as_deref().map(short).unwrap_or("?"),
                    short(v)
                ),
                None => format!(
                    "soft-deleted; window to {}; purge not yet verified",
                    sd.window_until.as_deref().map(short).unwrap_or("?")
                ),
            });
        }
        if let Some(r) = &self.retained_reason {
            return Some(format!("retained: {r}"));
        }
        if let Some(r) = &self.not_applicable_reason {
            return Some(format!("not applicable: {r}"));
        }
        if !self.fields.is_empty() && self.result == "rectified" {
            return Some(format!("fields changed: {}", self.fields.join(", ")));
        }
        self.error
            .as_ref()
            .map(|e| format!("{}: {}", e.class.as_deref().unwrap_or("error"), e.message))
    }
}

fn short(t: &str) -> &str {
    t.get(..19).unwrap_or(t)
}

/// The text rendering.
pub fn to_text(c: &Certificate) -> String {
    let r = &c.request;
    let mut out = String::new();
    out.push_str(&format!(
        "CERTIFICATE OF {} — request {}\n",
        r.kind.to_uppercase(),
        r.id
    ));
    out.push_str(&format!("subject:     {}\n", r.subject));
    out.push_str(&format!("status:      {}\n", r.status));
    out.push_str(&format!(
        "received:    {}\n",
        short(&r.received_at).replace('T', " ")
    ));
    out.push_str(&format!(
        "due:         {}\n",
        short(&r.due_at).replace('T', " ")
    ));
    out.push_str(&format!(
        "completed:   {}\n",
        r.completed_at
            .as_deref()
            .map(|c| short(c).replace('T', " "))
            .unwrap_or_else(|| "not yet".into())
    ));
    out.push_str(&format!(
        "deadline:    {}\n",
        match r.deadline_met {
            Some(true) => "met".to_string(),
            Some(false) => "MISSED".to_string(),
            None if r.overdue => "OVERDUE (still open)".to_string(),
            None => "open, not yet due".to_string(),
        }
    ));
    if let Some(e) = &r.extended_reason {
        out.push_str(&format!("extended:    {e}\n"));
    }
    match &r.verification {
        Some(v) => out.push_str(&format!(
            "verified:    {} by {} at {}\n",
            v.method,
            v.by,
            short(&v.at).replace('T', " ")
        )),
        None if !r.verified => {
            out.push_str("verified:    NOT YET (no processor is called until verified)\n")
        }
        None => {}
    }
    if let Some(f) = &r.follows {
        out.push_str(&format!(
            "follows:     erasure {f} (the subject re-appeared at a processor)\n"
        ));
    }
    for a in &r.reappeared {
        out.push_str(&format!(
            "reappeared:  {} at {} on {}; follow-up erasure {}\n",
            a.identity,
            a.processor,
            short(&a.at).replace('T', " "),
            a.follow_up.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "identities:  {}{}\n",
        r.identities,
        r.identities_destroyed_at
            .as_deref()
            .map(|t| format!(" at {}", short(t).replace('T', " ")))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "\n{:<18} {:<15} {:<7} {:<10} {:<20} {:>8}  EVIDENCE\n",
        "PROCESSOR", "CATEGORY", "ACTION", "RESULT", "WHEN", "ATTEMPTS"
    ));
    for p in &c.processors {
        out.push_str(&format!(
            "{:<18} {:<15} {:<7} {:<10} {:<20} {:>8}  {}\n",
            p.processor,
            p.category,
            p.action,
            p.result,
            p.when
                .as_deref()
                .map(|w| short(w).replace('T', " "))
                .unwrap_or_default(),
            p.attempts,
            p.evidence_line()
        ));
        if let Some(q) = p.qualifier() {
            out.push_str(&format!("{:<18} └ {q}\n", ""));
        }
    }
    let a = &c.audit;
    out.push_str(&format!(
        "\naudit: {} events for this request; last {}\n",
        a.request_events,
        a.request_last_hash.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!(
        "audit chain {}: {} events, head {} — {}\n",
        a.chain,
        a.chain_events,
        a.chain_head.as_deref().unwrap_or("-"),
        if a.chain_verified {
            "verified".to_string()
        } else {
            format!(
                "BROKEN at event #{}: {}",
                a.broken_at.unwrap_or(0),
                a.broken_reason.as_deref().unwrap_or("")
            )
        }
    ));
    out.push_str(&match (&a.checkpoint, a.pending_checkpoint, &a.checkpoint_error) {
        (Some(cp), _, _) => format!(
            "checkpoint:  #{} signed {} by key {}: head is leaf {} of {} (offline: lethe audit verify --certificate FILE --public-key KEY, with the JSON format)\n",
            cp.id,
            short(&super::ts(cp.at)).replace('T', " "),
            cp.key_id,
            a.proof.as_ref().map(|p| p.index + 1).unwrap_or(0),
            cp.size
        ),
        (None, true, _) => "checkpoint:  PENDING: no signed checkpoint covers the chain's head yet (regenerate after the next one)\n".to_string(),
        (None, false, Some(e)) => format!("checkpoint:  PROBLEM: {e}\n"),
        (None, false, None) => "checkpoint:  none (no events in the request's chain)\n".to_string(),
    });
    out.push_str(&format!("generated {}\n", c.generated_at));
    out
}
