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
//! named with the missing position. [`verify`] does that for every chain in
//! one pass over the events in chain order (pages of 1000 rows, one chain in
//! memory at a time) merged with the heads, so a chain without a head, a head
//! without rows and a row without a chain are reported too. The `legacy`
//! chain (rows written before migration 0011) keeps its original rule: one
//! chain numbered by the global `seq`, the old hash.
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
use crate::store::{AuditStore, ChainHead, EventRow, StoreError};

/// Rows read per query while walking a chain.
const PAGE: i64 = 1000;

/// At most this many broken chains are listed (the count is still exact).
const MAX_LISTED: usize = 1000;

/// The result of verifying every chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Rows that verified (all chains; in a broken chain, those before the break).
    pub checked: u64,
    /// The hash of the last event appended (the highest global `seq` among the chain heads), if any.
    pub head: Option<String>,
    /// The first bad row of the first broken chain (by chain name), if any.
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

/// The walk along one chain: rows are fed in chain order, then the last one
/// is compared with the chain's head.
struct Walk {
    chain: String,
    legacy: bool,
    head: Option<ChainHead>,
    prev: String,
    pos: i64,
    last_seq: i64,
    checked: u64,
    broken: Option<Broken>,
}

impl Walk {
    fn new(chain: &str, head: Option<ChainHead>) -> Walk {
        Walk {
            chain: chain.to_string(),
            legacy: chain == LEGACY_CHAIN,
            head,
            prev: GENESIS_HASH.to_string(),
            pos: 0,
            last_seq: 0,
            checked: 0,
            broken: None,
        }
    }

    fn fail(&mut self, seq: i64, chain_seq: i64, reason: String) {
        self.broken = Some(Broken {
            seq,
            reason,
            chain: self.chain.clone(),
            chain_seq,
        });
    }

    /// The next row of the chain (ignored once the chain is broken).
    fn feed(&mut self, ev: EventRow) {
        if self.broken.is_some() {
            return;
        }
        let chain = &self.chain;
        let expected = self.pos + 1;
        if ev.chain_seq != expected {
            let reason = format!(
                "chain `{chain}`: expected position {expected}: a row is missing or was inserted"
            );
            return self.fail(ev.seq, ev.chain_seq, reason);
        }
        if ev.prev_hash != self.prev {
            let reason =
                format!("chain `{chain}`: prev_hash does not match the previous row's hash");
            return self.fail(ev.seq, ev.chain_seq, reason);
        }
        if recompute(&self.prev, &ev, self.legacy) != ev.hash {
            let reason = format!(
                "chain `{chain}`: the row's content does not match its hash: it was altered"
            );
            return self.fail(ev.seq, ev.chain_seq, reason);
        }
        self.prev = ev.hash;
        self.last_seq = ev.seq;
        self.pos = expected;
        self.checked += 1;
    }

    /// Compare the end of the rows with the head.
    fn finish(mut self) -> ChainVerification {
        if self.broken.is_none() {
            let (chain, pos) = (self.chain.clone(), self.pos);
            match self.head.take() {
                None if pos > 0 => self.fail(
                    self.last_seq,
                    pos,
                    format!("chain `{chain}` has {pos} events but no head: its head was deleted"),
                ),
                None => {}
                Some(h) if h.chain_seq > pos => self.fail(
                    h.event_seq,
                    pos + 1,
                    format!(
                        "chain `{chain}` is truncated: its head records {} events but rows end at {pos}; position {} is missing",
                        h.chain_seq,
                        pos + 1
                    ),
                ),
                Some(h) if h.chain_seq < pos => self.fail(
                    self.last_seq,
                    pos,
                    format!(
                        "chain `{chain}` has rows beyond its head (head at {}, rows end at {pos}): rows were appended outside lethe",
                        h.chain_seq
                    ),
                ),
                Some(h) if h.hash != self.prev => self.fail(
                    self.last_seq,
                    pos,
                    format!("chain `{chain}`: the last row's hash does not match the chain head"),
                ),
                Some(_) => {}
            }
        }
        let ok = self.broken.is_none() && self.checked > 0;
        ChainVerification {
            chain: self.chain,
            checked: self.checked,
            head: ok.then_some(self.prev),
            broken: self.broken,
        }
    }
}

/// Verify one chain, in O(its length).
pub async fn verify_chain<S: AuditStore + ?Sized>(
    store: &S,
    chain: &str,
) -> Result<ChainVerification, StoreError> {
    let mut walk = Walk::new(chain, store.chain_head(chain).await?);
    loop {
        let batch = store.chain_events(chain, walk.pos, PAGE).await?;
        let full = batch.len() as i64 == PAGE;
        for ev in batch {
            walk.feed(ev);
        }
        if !full || walk.broken.is_some() {
            break;
        }
    }
    Ok(walk.finish())
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

/// The chain heads, in name order, read a page at a time.
struct Heads<'a, S: AuditStore + ?Sized> {
    store: &'a S,
    buf: std::collections::VecDeque<ChainHead>,
    after: String,
    done: bool,
}

impl<S: AuditStore + ?Sized> Heads<'_, S> {
    /// The next head, without taking it.
    async fn peek(&mut self) -> Result<Option<&ChainHead>, StoreError> {
        if self.buf.is_empty() && !self.done {
            let page = self.store.chain_heads(&self.after, 500).await?;
            self.done = (page.len() as i64) < 500;
            if let Some(last) = page.last() {
                self.after = last.chain.clone();
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }
}

/// Verify every chain in one pass over the events in chain order (a page of
/// rows per query, one chain in memory at a time), merged with the chain
/// heads: a chain without a head, or a head without rows, is broken. Rows
/// without a chain are reported too. O(all events).
pub async fn verify<S: AuditStore + ?Sized>(store: &S) -> Result<Verification, StoreError> {
    let mut v = Verification {
        checked: 0,
        head: None,
        broken: None,
        chains: 0,
        broken_chains: 0,
        broken_list: Vec::new(),
    };
    let mut latest: Option<(i64, String)> = None;
    let mut record = |v: &mut Verification, walk: Walk| {
        if let Some(h) = &walk.head {
            if latest.as_ref().is_none_or(|(s, _)| h.event_seq > *s) {
                latest = Some((h.event_seq, h.hash.clone()));
            }
        }
        let cv = walk.finish();
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
    let mut heads = Heads {
        store,
        buf: Default::default(),
        after: String::new(),
        done: false,
    };
    let mut cur: Option<Walk> = None;
    let mut after = (String::new(), 0i64);
    loop {
        let batch = store
            .events_in_chain_order((&after.0, after.1), PAGE)
            .await?;
        let full = batch.len() as i64 == PAGE;
        for ev in batch {
            after = (ev.chain.clone(), ev.chain_seq);
            if cur.as_ref().is_none_or(|w| w.chain != ev.chain) {
                if let Some(w) = cur.take() {
                    record(&mut v, w);
                }
                // Heads of chains before this one that have no rows at all.
                while let Some(h) = heads.peek().await? {
                    if h.chain >= ev.chain {
                        break;
                    }
                    let h = heads.buf.pop_front();
                    let name = h.as_ref().map(|h| h.chain.clone()).unwrap_or_default();
                    record(&mut v, Walk::new(&name, h));
                }
                let head = match heads.peek().await? {
                    Some(h) if h.chain == ev.chain => heads.buf.pop_front(),
                    _ => None,
                };
                cur = Some(Walk::new(&ev.chain, head));
            }
            if let Some(w) = cur.as_mut() {
                w.feed(ev);
            }
        }
        if !full {
            break;
        }
    }
    if let Some(w) = cur.take() {
        record(&mut v, w);
    }
    while heads.peek().await?.is_some() {
        let h = heads.buf.pop_front();
        let name = h.as_ref().map(|h| h.chain.clone()).unwrap_or_default();
        record(&mut v, Walk::new(&name, h));
    }
    let unchained = store.unchained_events(1).await?;
    if let Some(ev) = unchained.into_iter().next() {
        let mut w = Walk::new("", None);
        w.fail(
            ev.seq,
            0,
            "an event without a chain or position: rows were inserted outside lethe".into(),
        );
        record(&mut v, w);
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
