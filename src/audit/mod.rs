//! The audit trail: verification of the hash chain.
//!
//! Events are appended by the store (see `domain::event` for the hash). This
//! module walks the whole chain, recomputes every hash from the row's content
//! and its predecessor, and names the first row that does not match.

pub mod checkpoint;
pub mod checkpointer;
pub mod merkle;

use crate::config::Config;
use crate::domain::event::{chain_hash, EventBody, GENESIS_HASH};
use crate::store::{Store, StoreError};

/// The result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Rows checked.
    pub checked: u64,
    /// The hash of the last row (the chain head), if any.
    pub head: Option<String>,
    /// The first broken row, if any.
    pub broken: Option<Broken>,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The row's sequence number.
    pub seq: i64,
    /// What does not match.
    pub reason: String,
}

/// Recompute the whole chain.
pub async fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    let mut prev = GENESIS_HASH.to_string();
    let mut expected_seq = 1;
    let mut checked = 0u64;
    let mut after = 0;
    loop {
        let batch = store.events(after, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for ev in batch {
            after = ev.seq;
            let fail = |reason: String| Verification {
                checked,
                head: None,
                broken: Some(Broken {
                    seq: ev.seq,
                    reason,
                }),
            };
            if ev.seq != expected_seq {
                return Ok(fail(format!(
                    "expected sequence number {expected_seq}: a row is missing or was inserted"
                )));
            }
            if ev.prev_hash != prev {
                return Ok(fail(
                    "prev_hash does not match the previous row's hash".into(),
                ));
            }
            let body = EventBody {
                seq: ev.seq,
                at_ms: ev.at,
                request_id: ev.request_id.as_deref(),
                step_id: ev.step_id,
                kind: &ev.kind,
                detail: &ev.detail,
            };
            if chain_hash(&prev, &body) != ev.hash {
                return Ok(fail(
                    "the row's content does not match its hash: it was altered".into(),
                ));
            }
            prev = ev.hash.clone();
            expected_seq += 1;
            checked += 1;
        }
    }
    Ok(Verification {
        checked,
        head: (checked > 0).then_some(prev),
        broken: None,
    })
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
