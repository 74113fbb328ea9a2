//! The audit trail: verification of the hash chains.
//!
//! Events are appended by the store into one chain per request, hold and
//! processor (see `domain::event` for the chains and the hash). Each chain has
//! a head row (`chain_heads`) written in the same transaction as each append.
//!
//! [`verify_chain`] costs O(that chain): it recomputes every event's hash from
//! the row's content and its predecessor in the chain, checks that positions
//! (`chain_seq`) run 1, 2, … without a gap, and compares the last row with the
//! chain's head, so a truncated tail (the head says N, rows end at N-1) is
//! named with the missing position. [`verify`] does that for every chain, one
//! at a time (memory stays bounded), plus the `legacy` chain of rows written
//! before migration 0011, which keeps its original rule (global `seq`, the
//! old hash), and reports events whose chain has no head.
//!
//! What it cannot detect: someone with write access to the database who
//! rewrites a whole chain consistently — every hash recomputed *and* the head
//! updated to match — or deletes a chain together with its head. Only signed
//! checkpoints of the heads (kept outside the attacker's reach) detect that.

pub mod checkpoint;
pub mod checkpointer;
pub mod merkle;
pub mod proofcheck;

use crate::config::Config;
use crate::domain::event::{
    chain_hash, event_hash, ChainedEvent, EventBody, GENESIS_HASH, LEGACY_CHAIN,
};
use crate::store::{EventRow, Store, StoreError};

/// Rows read per query while walking a chain.
const PAGE: i64 = 1000;

/// At most this many broken chains are listed (the count is still exact).
const MAX_LISTED: usize = 1000;

/// The result of verifying every chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Rows checked (all chains).
    pub checked: u64,
    /// The hash of the last event appended (the highest global `seq` among the chain heads), if any.
    pub head: Option<String>,
    /// The first broken chain's first bad row, if any (the legacy chain first, then by chain name).
    pub broken: Option<Broken>,
    /// Chains checked.
    pub chains: u64,
    /// Chains that do not verify.
    pub broken_chains: u64,
    /// Where each broken chain breaks (at most 1000 listed).
    pub broken_list: Vec<Broken>,
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The row's global sequence number (for a missing tail row: the one its head records).
    pub seq: i64,
    /// What does not match.
    pub reason: String,
    /// The chain (empty for rows that carry no chain).
    pub chain: String,
    /// The position within the chain.
    pub chain_seq: i64,
}

/// The result of verifying one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainVerification {
    /// The chain.
    pub chain: String,
    /// Rows checked.
    pub checked: u64,
    /// The hash of its last row, if any.
    pub head: Option<String>,
    /// The first broken row, if any.
    pub broken: Option<Broken>,
}

/// Verify one chain, in O(its length).
pub async fn verify_chain(store: &dyn Store, chain: &str) -> Result<ChainVerification, StoreError> {
    let head = store.chain_head(chain).await?;
    let legacy = chain == LEGACY_CHAIN;
    let mut prev = GENESIS_HASH.to_string();
    let mut last_seq = 0i64;
    let mut pos = 0i64;
    let mut checked = 0u64;
    let fail = |checked, seq, chain_seq, reason: String| ChainVerification {
        chain: chain.to_string(),
        checked,
        head: None,
        broken: Some(Broken {
            seq,
            reason,
            chain: chain.to_string(),
            chain_seq,
        }),
    };
    loop {
        let batch = store.chain_events(chain, pos, PAGE).await?;
        if batch.is_empty() {
            break;
        }
        for ev in batch {
            let expected = pos + 1;
            if ev.chain_seq != expected {
                return Ok(fail(
                    checked,
                    ev.seq,
                    ev.chain_seq,
                    format!(
                        "chain `{chain}`: expected position {expected}: a row is missing or was inserted"
                    ),
                ));
            }
            if ev.prev_hash != prev {
                return Ok(fail(
                    checked,
                    ev.seq,
                    ev.chain_seq,
                    format!("chain `{chain}`: prev_hash does not match the previous row's hash"),
                ));
            }
            if recompute(&prev, &ev, legacy) != ev.hash {
                return Ok(fail(
                    checked,
                    ev.seq,
                    ev.chain_seq,
                    format!("chain `{chain}`: the row's content does not match its hash: it was altered"),
                ));
            }
            prev = ev.hash;
            last_seq = ev.seq;
            pos = expected;
            checked += 1;
        }
    }
    match head {
        None if pos > 0 => {
            return Ok(fail(
                checked,
                last_seq,
                pos,
                format!("chain `{chain}` has {pos} events but no head: its head was deleted"),
            ))
        }
        None => {}
        Some(h) if h.chain_seq > pos => {
            return Ok(fail(
                checked,
                h.event_seq,
                pos + 1,
                format!(
                    "chain `{chain}` is truncated: its head records {} events but rows end at {pos}; position {} is missing",
                    h.chain_seq,
                    pos + 1
                ),
            ))
        }
        Some(h) if h.chain_seq < pos => {
            return Ok(fail(
                checked,
                last_seq,
                pos,
                format!(
                    "chain `{chain}` has rows beyond its head (head at {}, rows end at {pos}): rows were appended outside lethe",
                    h.chain_seq
                ),
            ))
        }
        Some(h) if h.hash != prev => {
            return Ok(fail(
                checked,
                last_seq,
                pos,
                format!("chain `{chain}`: the last row's hash does not match the chain head"),
            ))
        }
        Some(_) => {}
    }
    Ok(ChainVerification {
        chain: chain.to_string(),
        checked,
        head: (checked > 0).then_some(prev),
        broken: None,
    })
}

/// Recompute a row's hash under its chain's rule.
fn recompute(prev: &str, ev: &EventRow, legacy: bool) -> String {
    if legacy {
        chain_hash(
            prev,
            &EventBody {
                seq: ev.seq,
                at_ms: ev.at,
                request_id: ev.request_id.as_deref(),
                step_id: ev.step_id,
                kind: &ev.kind,
                detail: &ev.detail,
            },
        )
    } else {
        event_hash(
            prev,
            &ChainedEvent {
                chain: &ev.chain,
                chain_seq: ev.chain_seq,
                at_ms: ev.at,
                request_id: ev.request_id.as_deref(),
                step_id: ev.step_id,
                kind: &ev.kind,
                detail: &ev.detail,
            },
        )
    }
}

/// Verify every chain: the legacy chain first, then every chain with a head
/// (by name), then report chains whose events have no head at all.
pub async fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    let mut v = Verification {
        checked: 0,
        head: None,
        broken: None,
        chains: 0,
        broken_chains: 0,
        broken_list: Vec::new(),
    };
    let mut latest: Option<(i64, String)> = None;
    let record = |v: &mut Verification, cv: ChainVerification| {
        v.chains += 1;
        v.checked += cv.checked;
        if let Some(b) = cv.broken {
            v.broken_chains += 1;
            if v.broken.is_none() {
                v.broken = Some(b.clone());
            }
            if v.broken_list.len() < MAX_LISTED {
                v.broken_list.push(b);
            }
        }
    };
    let legacy = verify_chain(store, LEGACY_CHAIN).await?;
    if legacy.checked > 0 || legacy.broken.is_some() {
        record(&mut v, legacy);
    }
    let mut after = String::new();
    loop {
        let heads = store.chain_heads(&after, 500).await?;
        let Some(last) = heads.last() else { break };
        after = last.chain.clone();
        for h in heads {
            if latest.as_ref().is_none_or(|(s, _)| h.event_seq > *s) {
                latest = Some((h.event_seq, h.hash.clone()));
            }
            if h.chain == LEGACY_CHAIN {
                continue;
            }
            let cv = verify_chain(store, &h.chain).await?;
            record(&mut v, cv);
        }
    }
    for chain in store.headless_chains(MAX_LISTED as i64).await? {
        match chain {
            Some(c) if c == LEGACY_CHAIN => {} // already verified above
            Some(c) => {
                let cv = verify_chain(store, &c).await?;
                record(&mut v, cv);
            }
            None => record(
                &mut v,
                ChainVerification {
                    chain: String::new(),
                    checked: 0,
                    head: None,
                    broken: Some(Broken {
                        seq: 0,
                        reason: "events without a chain: rows were inserted outside lethe".into(),
                        chain: String::new(),
                        chain_seq: 0,
                    }),
                },
            ),
        }
    }
    v.head = latest.map(|(_, h)| h);
    Ok(v)
}

/// Why the checkpoint signing key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The master key (the default source) is missing or malformed.
    #[error(transparent)]
    Master(#[from] crate::crypto::CryptoError),
    /// `[audit] signing_key_env` names an unset or malformed variable.
    #[error("{file}: [audit] signing_key_env: environment variable {var} {why} (it must hold a base64 Ed25519 seed of 32 bytes: openssl rand -base64 32)")]
    Env {
        /// The config file.
        file: String,
        /// The variable.
        var: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// The key that signs checkpoints: from `[audit] signing_key_env` if set,
/// else derived from the master key (`[store] key_env`).
pub fn signing_key(config: &Config) -> Result<ed25519_dalek::SigningKey, SigningKeyError> {
    use base64::Engine as _;
    match &config.audit.signing_key_env {
        Some(var) => {
            let env_err = |why| SigningKeyError::Env {
                file: config.path.display().to_string(),
                var: var.clone(),
                why,
            };
            let text =
                zeroize::Zeroizing::new(std::env::var(var).map_err(|_| env_err("is not set"))?);
            let raw = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim().as_bytes())
                    .map_err(|_| env_err("is not base64"))?,
            );
            let seed: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| env_err("is not 32 bytes"))?;
            let seed = zeroize::Zeroizing::new(seed);
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        None => Ok(crate::crypto::Keys::from_config(&config.store)?.audit_signing_key()),
    }
}

/// The public keys checkpoints may be signed with: the current signing key's,
/// and those derived from the older master keys (`[store] old_key_envs`), so
/// that checkpoints signed before `lethe key rotate` still verify.
pub fn public_keys(config: &Config) -> Result<Vec<ed25519_dalek::VerifyingKey>, SigningKeyError> {
    let mut keys = vec![signing_key(config)?.verifying_key()];
    if let Ok(master) = crate::crypto::Keys::from_config(&config.store) {
        for k in master.audit_public_keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    Ok(keys)
}
