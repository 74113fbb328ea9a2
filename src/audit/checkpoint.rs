//! Signed checkpoints: a Merkle root over the chain heads that changed since
//! the previous checkpoint, chained to that checkpoint and signed with Ed25519.
//!
//! - The signed message is `"lethe checkpoint v1\n"` followed by the canonical
//!   JSON (keys sorted, no whitespace) of `{"at", "id", "key_id", "prev",
//!   "root", "size"}` — everything but the signature.
//! - A checkpoint's hash (the next one's `prev`) is SHA-256 of that message,
//!   hex; the first checkpoint's `prev` is 64 zeros.
//! - `key_id` is the first 8 bytes (16 hex digits) of SHA-256 of the public
//!   key, so a verifier given several public keys (older keys after a
//!   rotation) picks the one a checkpoint names.
//!
//! The signing key is kept outside the database: by default it is derived
//! from the store master key (`[store] key_env`) with HKDF-SHA256 (info
//! `"lethe audit signing v1"`), so there is nothing extra to set up; `[audit]
//! signing_key_env` may name an env var holding a base64 Ed25519 seed
//! instead. After `lethe key rotate` the derived key changes with the master
//! key; the older master keys (`[store] old_key_envs`) still give their public
//! keys, so earlier checkpoints stay verifiable.

use crate::domain::event::{canonical_json, GENESIS_HASH};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The HKDF info string of the signing key derived from a master key.
pub const SIGNING_LABEL: &[u8] = b"lethe audit signing v1";

/// The domain-separation prefix of the signed message.
const MESSAGE_PREFIX: &str = "lethe checkpoint v1\n";

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Position in the checkpoint chain, from 1.
    pub id: i64,
    /// When it was made (milliseconds since the Unix epoch, database clock).
    pub at: i64,
    /// The previous checkpoint's hash (hex), or 64 zeros for the first.
    pub prev: String,
    /// The Merkle root over its leaves (hex).
    pub root: String,
    /// How many leaves (chain heads) it covers.
    pub size: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature of [`Checkpoint::message`] (base64).
    pub signature: String,
}

/// The fields of a checkpoint before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsigned {
    /// Position in the checkpoint chain, from 1.
    pub id: i64,
    /// When (ms since the epoch).
    pub at: i64,
    /// The previous checkpoint's hash.
    pub prev: String,
    /// The Merkle root (hex).
    pub root: String,
    /// Leaf count.
    pub size: i64,
}

fn message(id: i64, at: i64, prev: &str, root: &str, size: i64, key_id: &str) -> String {
    let doc = serde_json::json!({
        "id": id, "at": at, "prev": prev, "root": root, "size": size, "key_id": key_id,
    });
    let mut out = String::from(MESSAGE_PREFIX);
    canonical_json(&doc, &mut out);
    out
}

/// The `prev` of the first checkpoint.
pub fn genesis() -> &'static str {
    GENESIS_HASH
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn message(&self) -> String {
        message(
            self.id,
            self.at,
            &self.prev,
            &self.root,
            self.size,
            &self.key_id,
        )
    }

    /// This checkpoint's hash: the next one's `prev`.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.message().as_bytes()))
    }

    /// Check the signature with `key` (which must be the key `key_id` names).
    pub fn verify_with(&self, key: &VerifyingKey) -> Result<(), CheckpointError> {
        if key_id(key) != self.key_id {
            return Err(CheckpointError::UnknownKey(self.key_id.clone()));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.signature.as_bytes())
            .map_err(|_| CheckpointError::BadSignature(self.id))?;
        let sig = ed25519_dalek::Signature::from_slice(&raw)
            .map_err(|_| CheckpointError::BadSignature(self.id))?;
        key.verify(self.message().as_bytes(), &sig)
            .map_err(|_| CheckpointError::BadSignature(self.id))
    }

    /// Check the signature with whichever of `keys` the checkpoint names.
    pub fn verify(&self, keys: &[VerifyingKey]) -> Result<(), CheckpointError> {
        let key = keys
            .iter()
            .find(|k| key_id(k) == self.key_id)
            .ok_or_else(|| CheckpointError::UnknownKey(self.key_id.clone()))?;
        self.verify_with(key)
    }
}

/// Why a checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// None of the given public keys has the checkpoint's key id.
    #[error("checkpoint signed by key {0}, which is none of the given public keys")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("checkpoint #{0}: the Ed25519 signature does not match its content")]
    BadSignature(i64),
}

/// A key's id: the first 8 bytes of SHA-256 of the public key, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The public key in base64 (what `lethe audit key` prints).
pub fn public_base64(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parse a base64 (or 64-digit hex) Ed25519 public key.
pub fn parse_public(s: &str) -> Result<VerifyingKey, String> {
    let s = s.trim();
    let raw = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|_| format!("`{s}` is not a base64 Ed25519 public key"))?
    };
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("`{s}` is not 32 bytes: an Ed25519 public key is 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| format!("`{s}` is not a valid Ed25519 point"))
}

/// The signing key derived from a raw master key (HKDF-SHA256, info [`SIGNING_LABEL`]).
pub fn derive_signing_key(master: &[u8]) -> SigningKey {
    let hk = hkdf::Hkdf::<Sha256>::new(None, master);
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    hk.expand(SIGNING_LABEL, seed.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SigningKey::from_bytes(&seed)
}

/// Sign `u` with `key`.
pub fn sign(u: &Unsigned, key: &SigningKey) -> Checkpoint {
    let kid = key_id(&key.verifying_key());
    let msg = message(u.id, u.at, &u.prev, &u.root, u.size, &kid);
    let sig = key.sign(msg.as_bytes());
    Checkpoint {
        id: u.id,
        at: u.at,
        prev: u.prev.clone(),
        root: u.root.clone(),
        size: u.size,
        key_id: kid,
        signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    }
}

/// Where a sequence of checkpoints breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The checkpoint's id.
    pub id: i64,
    /// What is wrong.
    pub reason: String,
}

/// Verify an ordered run of checkpoints from the first: ids 1, 2, …, each
/// `prev` the hash of the one before, each signature valid under `keys`.
pub fn verify_chain(cps: &[Checkpoint], keys: &[VerifyingKey]) -> Result<(), ChainBreak> {
    let mut prev = GENESIS_HASH.to_string();
    for (i, cp) in cps.iter().enumerate() {
        let brk = |reason: String| ChainBreak { id: cp.id, reason };
        if cp.id != i as i64 + 1 {
            return Err(brk(format!(
                "expected checkpoint #{}: a checkpoint is missing or was inserted",
                i + 1
            )));
        }
        if cp.prev != prev {
            return Err(brk(
                "prev does not match the previous checkpoint's hash".into()
            ));
        }
        cp.verify(keys).map_err(|e| brk(e.to_string()))?;
        prev = cp.hash();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned(id: i64, prev: &str) -> Unsigned {
        Unsigned {
            id,
            at: 1_700_000_000_000 + id,
            prev: prev.to_string(),
            root: "ab".repeat(32),
            size: 3,
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_its_key_and_not_with_another() {
        let k = derive_signing_key(&[7u8; 32]);
        let cp = sign(&unsigned(1, genesis()), &k);
        assert!(cp.verify(&[k.verifying_key()]).is_ok());
        let other = derive_signing_key(&[8u8; 32]);
        assert_eq!(
            cp.verify(&[other.verifying_key()]),
            Err(CheckpointError::UnknownKey(cp.key_id.clone()))
        );
        let mut tampered = cp.clone();
        tampered.root = "cd".repeat(32);
        assert_eq!(
            tampered.verify(&[k.verifying_key()]),
            Err(CheckpointError::BadSignature(1))
        );
    }

    #[test]
    fn a_chain_of_checkpoints_across_a_key_rotation_verifies_with_both_keys() {
        let k1 = derive_signing_key(&[1u8; 32]);
        let k2 = derive_signing_key(&[2u8; 32]);
        let a = sign(&unsigned(1, genesis()), &k1);
        let b = sign(&unsigned(2, &a.hash()), &k2);
        let keys = [k1.verifying_key(), k2.verifying_key()];
        assert!(verify_chain(&[a.clone(), b.clone()], &keys).is_ok());
        assert!(verify_chain(&[a.clone(), b.clone()], &keys[1..]).is_err());
        let c = sign(&unsigned(3, &a.hash()), &k2);
        assert_eq!(verify_chain(&[a, b, c], &keys).unwrap_err().id, 3);
    }

    #[test]
    fn the_derived_key_is_stable_and_public_keys_parse_back() {
        let k = derive_signing_key(&[9u8; 32]);
        assert_eq!(
            k.to_bytes(),
            derive_signing_key(&[9u8; 32]).to_bytes(),
            "same master, same key"
        );
        let b64 = public_base64(&k.verifying_key());
        assert_eq!(parse_public(&b64).unwrap(), k.verifying_key());
        assert!(parse_public("not a key").is_err());
        assert!(parse_public("AAAA").is_err());
    }
}
