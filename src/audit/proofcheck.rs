//! Checking signed checkpoints: against the store (`lethe audit verify`) and
//! offline, from a certificate file alone (`lethe audit verify --certificate`).
//!
//! Store check: the checkpoints form one chain (ids 1, 2, …, each `prev` the
//! hash of the one before), each signature verifies with one of the given
//! public keys, each stored leaf set recomputes to its signed root, and every
//! checkpointed leaf `(chain, chain_seq, hash)` still matches the event at that
//! position. Someone with write access to the database but without the key
//! who rewrites a chain consistently (every hash and the head recomputed)
//! changes the hash at a checkpointed position; one who deletes the tail of a
//! chain removes a checkpointed position: both are named.
//!
//! What it cannot detect: the newest checkpoints deleted together with what
//! they cover (keep the certificates, or copy the last checkpoint's hash
//! elsewhere), and changes after the last checkpoint (seconds, by default).
//!
//! Offline check: the certificate's `audit.events` recompute as one chain
//! from position 1 (the hash rule of `domain::event::event_hash`); its last
//! event is the leaf `audit.proof` proves; the proof leads to
//! `audit.checkpoint.root`; the checkpoint's Ed25519 signature verifies with
//! a given public key.

use super::checkpoint::{ChainBreak, Checkpoint};
use super::merkle::{Leaf, Proof, Tree};
use crate::domain::event::{event_hash, ChainedEvent, GENESIS_HASH};
use crate::store::{CheckpointRow, CheckpointStore, StoreError};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Checkpoints read per query.
const PAGE: i64 = 500;
/// At most this many leaf mismatches are listed.
const MAX_LISTED: i64 = 100;

/// One problem found with the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    /// The checkpoint concerned.
    pub checkpoint: i64,
    /// The chain concerned, for a leaf that no longer matches.
    pub chain: Option<String>,
    /// Its position.
    pub chain_seq: Option<i64>,
    /// What is wrong.
    pub reason: String,
}

/// The result of checking the checkpoints in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointCheck {
    /// Whether signatures were checked (false when no public key was at hand).
    pub signatures_checked: bool,
    /// Checkpoints whose chain link, signature and root were checked.
    pub checkpoints: u64,
    /// Leaves compared with the events.
    pub leaves: i64,
    /// The last checkpoint's id and hash.
    pub last_id: Option<i64>,
    /// Its hash (keep it elsewhere to detect deleted checkpoints later).
    pub last_hash: Option<String>,
    /// The key ids the checkpoints were signed with.
    pub key_ids: Vec<String>,
    /// Problems (the first broken checkpoint, and leaves that no longer match).
    pub problems: Vec<CheckpointProblem>,
}

impl CheckpointCheck {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A stored row as the signed document.
pub fn to_checkpoint(r: &CheckpointRow) -> Checkpoint {
    Checkpoint {
        id: r.id,
        at: r.at,
        prev: r.prev_hash.clone(),
        root: r.root.clone(),
        size: r.size,
        key_id: r.key_id.clone(),
        signature: r.signature.clone(),
    }
}

/// Check every checkpoint in the store with `keys` (see the module doc);
/// `None`: no public key is at hand, signatures are not checked (and the
/// result says so), everything else is.
pub async fn check_store<S: CheckpointStore + ?Sized>(
    store: &S,
    keys: Option<&[VerifyingKey]>,
) -> Result<CheckpointCheck, StoreError> {
    let mut out = CheckpointCheck {
        signatures_checked: keys.is_some(),
        checkpoints: 0,
        leaves: 0,
        last_id: None,
        last_hash: None,
        key_ids: vec![],
        problems: vec![],
    };
    let mut prev: Option<Checkpoint> = None;
    let mut after = 0;
    'pages: loop {
        let rows = store.checkpoints(after, PAGE).await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            break;
        };
        let leaves = store.checkpoint_leaves(first.id, last.id).await?;
        for row in &rows {
            after = row.id;
            let cp = to_checkpoint(row);
            // The link to the previous checkpoint, then the signature.
            let expected_id = prev.as_ref().map(|p| p.id + 1).unwrap_or(1);
            let expected_prev = prev
                .as_ref()
                .map(|p| p.hash())
                .unwrap_or_else(|| GENESIS_HASH.to_string());
            let link = if cp.id != expected_id {
                Err(format!(
                    "expected checkpoint #{expected_id}: a checkpoint is missing or was inserted"
                ))
            } else if cp.prev != expected_prev {
                Err("prev does not match the previous checkpoint's hash".to_string())
            } else if let Some(keys) = keys {
                cp.verify(keys).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            let link = link.map_err(|reason| ChainBreak { id: cp.id, reason });
            if let Err(b) = link {
                out.problems.push(CheckpointProblem {
                    checkpoint: b.id,
                    chain: None,
                    chain_seq: None,
                    reason: b.reason,
                });
                break 'pages;
            }
            let mine: Vec<Leaf> = leaves
                .iter()
                .filter(|(id, _)| *id == row.id)
                .map(|(_, l)| Leaf {
                    chain: l.chain.clone(),
                    chain_seq: l.chain_seq,
                    hash: l.hash.clone(),
                })
                .collect();
            let n = mine.len() as i64;
            let root = hex::encode(Tree::new(mine).root());
            if n != cp.size || root != cp.root {
                out.problems.push(CheckpointProblem {
                    checkpoint: cp.id,
                    chain: None,
                    chain_seq: None,
                    reason: format!(
                        "its stored leaves ({n}) do not recompute to the signed root over {} leaves: leaves were altered",
                        cp.size
                    ),
                });
                break 'pages;
            }
            if !out.key_ids.contains(&cp.key_id) {
                out.key_ids.push(cp.key_id.clone());
            }
            out.checkpoints += 1;
            out.last_id = Some(cp.id);
            out.last_hash = Some(cp.hash());
            prev = Some(cp);
        }
    }
    let (n, mismatches) = store.checkpoint_leaf_mismatches(MAX_LISTED).await?;
    out.leaves = n;
    for m in mismatches {
        out.problems.push(CheckpointProblem {
            checkpoint: m.checkpoint_id,
            reason: match &m.event_hash {
                Some(h) => format!(
                    "chain {} position {} was checkpointed with hash {} but the event there now has hash {h}: the chain was rewritten",
                    m.leaf.chain, m.leaf.chain_seq, m.leaf.hash
                ),
                None => format!(
                    "chain {} position {} was checkpointed but its event is gone: the chain was truncated",
                    m.leaf.chain, m.leaf.chain_seq
                ),
            },
            chain: Some(m.leaf.chain),
            chain_seq: Some(m.leaf.chain_seq),
        });
    }
    Ok(out)
}

/// One event as a certificate carries it (enough to recompute its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertEvent {
    /// The chain.
    pub chain: String,
    /// Position in the chain.
    pub chain_seq: i64,
    /// When (ms since the epoch).
    pub at: i64,
    /// The request.
    pub request: Option<String>,
    /// The step.
    pub step: Option<i64>,
    /// What happened.
    pub kind: String,
    /// Details (never a raw identity).
    pub detail: Value,
    /// The previous event's hash in the chain.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// What an offline check established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineOk {
    /// The chain.
    pub chain: String,
    /// Events recomputed.
    pub events: usize,
    /// The head's hash.
    pub head: String,
    /// The checkpoint that covers it.
    pub checkpoint: i64,
    /// When it was signed (ms).
    pub checkpoint_at: i64,
    /// The key that signed it.
    pub key_id: String,
}

/// Why a certificate does not verify offline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    /// Not a lethe JSON certificate.
    #[error("not a lethe JSON certificate: {0}")]
    Malformed(String),
    /// The events do not recompute.
    #[error("{0}")]
    Chain(String),
    /// No checkpoint covers the chain yet.
    #[error("the events recompute ({0} events), but no signed checkpoint covers the chain's head yet (pending_checkpoint): regenerate the certificate after the next checkpoint")]
    Pending(usize),
    /// The proof does not lead to the signed root.
    #[error("{0}")]
    Proof(String),
    /// The signature does not verify.
    #[error("{0}")]
    Signature(String),
}

fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value, OfflineError> {
    v.pointer(path)
        .ok_or_else(|| OfflineError::Malformed(format!("no {path}")))
}

/// Check a certificate (its JSON) offline with `keys`.
pub fn check_certificate(cert: &Value, keys: &[VerifyingKey]) -> Result<OfflineOk, OfflineError> {
    let chain = field(cert, "/audit/chain")?
        .as_str()
        .ok_or_else(|| OfflineError::Malformed("audit.chain is not a string".into()))?
        .to_string();
    let events: Vec<CertEvent> = serde_json::from_value(field(cert, "/audit/events")?.clone())
        .map_err(|e| OfflineError::Malformed(format!("audit.events: {e}")))?;
    if events.is_empty() {
        return Err(OfflineError::Chain(format!(
            "chain {chain}: the certificate carries no events"
        )));
    }
    let mut prev = GENESIS_HASH.to_string();
    for (i, e) in events.iter().enumerate() {
        let at = |why: &str| {
            OfflineError::Chain(format!(
                "chain {chain}: event at position {} ({}): {why}",
                e.chain_seq, e.kind
            ))
        };
        if e.chain != chain {
            return Err(at("belongs to another chain"));
        }
        if e.chain_seq != i as i64 + 1 {
            return Err(OfflineError::Chain(format!(
                "chain {chain}: expected position {}, found {}: an event is missing or was inserted",
                i + 1,
                e.chain_seq
            )));
        }
        if e.prev_hash != prev {
            return Err(at("prev_hash does not match the previous event's hash"));
        }
        let h = event_hash(
            &prev,
            &ChainedEvent {
                chain: &e.chain,
                chain_seq: e.chain_seq,
                at_ms: e.at,
                request_id: e.request.as_deref(),
                step_id: e.step,
                kind: &e.kind,
                detail: &e.detail,
            },
        );
        if h != e.hash {
            return Err(at(
                "its content does not match its hash: the event was altered",
            ));
        }
        prev = h;
    }
    let head = events.last().map(|e| (e.chain_seq, e.hash.clone()));
    let (head_seq, head_hash) = head.unwrap_or_default();
    let cp = field(cert, "/audit/checkpoint")?;
    if cp.is_null() {
        return Err(OfflineError::Pending(events.len()));
    }
    let cp: Checkpoint = serde_json::from_value(cp.clone())
        .map_err(|e| OfflineError::Malformed(format!("audit.checkpoint: {e}")))?;
    let proof: Proof = serde_json::from_value(field(cert, "/audit/proof")?.clone())
        .map_err(|e| OfflineError::Malformed(format!("audit.proof: {e}")))?;
    if proof.leaf.chain != chain || proof.leaf.chain_seq != head_seq || proof.leaf.hash != head_hash
    {
        return Err(OfflineError::Proof(format!(
            "the proven leaf ({} position {}, {}) is not the head of the certificate's events ({chain} position {head_seq}, {head_hash})",
            proof.leaf.chain, proof.leaf.chain_seq, proof.leaf.hash
        )));
    }
    if proof.size as i64 != cp.size || !proof.verifies(&cp.root) {
        return Err(OfflineError::Proof(format!(
            "the inclusion proof does not lead to the root of checkpoint #{}",
            cp.id
        )));
    }
    cp.verify(keys)
        .map_err(|e| OfflineError::Signature(e.to_string()))?;
    Ok(OfflineOk {
        chain,
        events: events.len(),
        head: head_hash,
        checkpoint: cp.id,
        checkpoint_at: cp.at,
        key_id: cp.key_id,
    })
}
