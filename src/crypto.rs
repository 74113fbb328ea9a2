//! Identities at rest: envelope encryption, matched by a keyed hash.
//!
//! The store never holds a raw identity. Each request gets its own data key,
//! derived with HKDF-SHA256 from a random 32-byte seed; the request's
//! identities are sealed with it (ChaCha20-Poly1305, the request id as
//! associated data). The seed is stored wrapped (AEAD) by the master key,
//! which lives outside the database (an environment variable), together with
//! the master key's id (`kid`, a short keyed hash of the key). Crypto-shredding
//! destroys the wrapped seed and the sealed blob.
//!
//! Master key rotation (`lethe key rotate`) re-wraps every live data key under
//! the current master key without touching the sealed identities. Once the old
//! master key is destroyed, every copy of the database taken before the
//! rotation (backups, replicas, dumps) is noise: its data keys are wrapped by a
//! key that no longer exists. That is what makes shredding reach backups.
//!
//! Matching uses an HMAC of the subject's matching key. Its key is itself
//! stored wrapped (reserved id `lethe:subject-hash`) so that it survives
//! rotation; it starts as the value derived from the master key, as before.
//! Rows sealed directly under a master key (before envelope encryption) still
//! open, are shredded the same way, and are moved onto data keys by rotation.

use crate::domain::Subject;
use crate::store::{DataKeyRow, KeyStore, Millis, Rewrap, StoreError, WrappedKey};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// A rectification's sealed plaintext: the subject and the new values.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedWithChanges {
    subject: Subject,
    set: Subject,
}

/// The reserved data-key id of the subject-hash (matching) key.
pub const SUBJECT_HASH_KEY_ID: &str = "lethe:subject-hash";

/// Why the key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The env var is not set.
    #[error("environment variable {0} is not set: it must hold 32 random bytes, base64 (openssl rand -base64 32)")]
    MissingKey(String),
    /// The env var does not hold 32 base64 bytes.
    #[error("environment variable {0} must hold 32 random bytes, base64-encoded (openssl rand -base64 32)")]
    BadKey(String),
    /// A sealed value did not open (wrong key, or tampered).
    #[error("a sealed identity could not be opened: wrong {0}, or the row was altered")]
    Open(String),
    /// The request's data key was destroyed (crypto-shredding).
    #[error("the request's data key was destroyed (crypto-shredding): its identities can no longer be opened")]
    Destroyed,
    /// A data key is wrapped by a master key none of the configured keys is.
    #[error("{count} data key(s) are wrapped by master key {kid}, which is none of the configured keys ({configured}): {hint}")]
    UnknownMaster {
        /// The master key id.
        kid: String,
        /// How many data keys need it.
        count: usize,
        /// The env vars that were tried.
        configured: String,
        /// What to do.
        hint: String,
    },
}

/// Why `lethe key rotate` (or loading the keys against a store) failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A key is missing or wrong.
    #[error(transparent)]
    Key(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One master key (a key-encryption key) and what is derived from it.
/// Zeroized when dropped.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct Master {
    kid: String,
    wrap: [u8; 32],
    legacy_enc: [u8; 32],
    legacy_mac: [u8; 32],
    /// The seed of the Ed25519 key that signs audit checkpoints (HKDF of the
    /// master key, see `audit::checkpoint`).
    signing: [u8; 32],
    source: String,
}

/// The master keys (current and older ones) and the matching key; every
/// key is zeroized when dropped, and `Debug` shows only key ids.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Keys {
    current: Master,
    old: Vec<Master>,
    /// Old-key env vars named in the config but not set.
    unset_old: Vec<String>,
    mac: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys(from {}, kid {}, {} old)",
            self.current.source,
            self.current.kid,
            self.old.len()
        )
    }
}

fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    m.update(label);
    m.finalize().into_bytes().into()
}

fn aead_seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("encryption of a small buffer cannot fail"),
    );
    out
}

fn aead_open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 {
        return None;
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(&sealed[..12]),
            Payload {
                msg: &sealed[12..],
                aad,
            },
        )
        .ok()
}

fn wrap_aad(id: &str) -> Vec<u8> {
    format!("lethe/data-key/v1\0{id}").into_bytes()
}

fn data_key(seed: &[u8], request_id: &str) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"lethe/data-key/v1"), seed);
    let mut k = [0u8; 32];
    hk.expand(
        format!("lethe/identity-seal/v1\0{request_id}").as_bytes(),
        &mut k,
    )
    .expect("32 bytes is a valid HKDF-SHA256 output length");
    k
}

impl Master {
    fn from_base64(source: &str, v: &str) -> Result<Master, CryptoError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| CryptoError::BadKey(source.to_string()))?;
        if raw.len() != 32 {
            return Err(CryptoError::BadKey(source.to_string()));
        }
        Ok(Master {
            kid: hex::encode(&derive(&raw, b"lethe/key-id/v1")[..8]),
            wrap: derive(&raw, b"lethe/key-wrap/v1"),
            legacy_enc: derive(&raw, b"lethe/identity-encryption/v1"),
            legacy_mac: derive(&raw, b"lethe/subject-hash/v1"),
            signing: crate::audit::checkpoint::derive_signing_key(&raw).to_bytes(),
            source: source.to_string(),
        })
    }

    fn wrap(&self, id: &str, secret: &[u8]) -> WrappedKey {
        WrappedKey {
            kid: self.kid.clone(),
            wrapped: aead_seal(&self.wrap, &wrap_aad(id), secret),
        }
    }
}

impl Keys {
    /// Read the master key from the named env var (no older keys).
    pub fn from_env(var: &str) -> Result<Keys, CryptoError> {
        let v = std::env::var(var).map_err(|_| CryptoError::MissingKey(var.to_string()))?;
        Keys::from_base64(var, &v)
    }

    /// The current master key from `key_env` and the older ones from
    /// `old_key_envs` (an unset old one is remembered, and named when it is needed).
    pub fn from_config(store: &crate::config::StoreSection) -> Result<Keys, CryptoError> {
        let mut keys = Keys::from_env(&store.key_env)?;
        for var in &store.old_key_envs {
            match std::env::var(var) {
                Ok(v) => keys.old.push(Master::from_base64(var, &v)?),
                Err(_) => keys.unset_old.push(var.clone()),
            }
        }
        Ok(keys)
    }

    /// Parse a base64 master key; `source` names it in messages.
    pub fn from_base64(source: &str, v: &str) -> Result<Keys, CryptoError> {
        let current = Master::from_base64(source, v)?;
        Ok(Keys {
            mac: current.legacy_mac,
            current,
            old: vec![],
            unset_old: vec![],
        })
    }

    /// A fresh random key, base64 (for `lethe init` and the demo).
    pub fn generate_base64() -> String {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    /// The current master key's id.
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// The Ed25519 key that signs audit checkpoints, derived from the current
    /// master key (used unless `[audit] signing_key_env` names another).
    pub fn audit_signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.current.signing)
    }

    /// The public checkpoint keys derived from the current and the older
    /// master keys (so checkpoints signed before a rotation still verify).
    pub fn audit_public_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .map(|m| ed25519_dalek::SigningKey::from_bytes(&m.signing).verifying_key())
            .collect()
    }

    /// The id of the master key held by a base64 key (for tests and operators).
    pub fn kid_of(v: &str) -> Result<String, CryptoError> {
        Ok(Master::from_base64("key", v)?.kid.clone())
    }

    fn master(&self, kid: &str) -> Option<&Master> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .find(|m| m.kid == kid)
    }

    fn configured(&self) -> String {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .map(|m| format!("{} = {}", m.source, m.kid))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn unknown(&self, kid: &str, count: usize) -> CryptoError {
        let hint = if self.unset_old.is_empty() {
            "add the environment variable that holds it to [store] old_key_envs, or restore that key".to_string()
        } else {
            format!(
                "set {} ([store] old_key_envs) to the old master key",
                self.unset_old.join(", ")
            )
        };
        CryptoError::UnknownMaster {
            kid: kid.to_string(),
            count,
            configured: self.configured(),
            hint,
        }
    }

    /// Load the matching key from the store (creating it, wrapped, from the
    /// current master key the first time, which is the value used before
    /// envelope encryption existed).
    pub async fn bind_store<S: KeyStore + ?Sized>(
        mut self,
        store: &S,
    ) -> Result<Keys, KeyStoreError> {
        let row = match store.data_key(SUBJECT_HASH_KEY_ID).await? {
            Some(r) => r,
            None => {
                let w = self
                    .current
                    .wrap(SUBJECT_HASH_KEY_ID, &self.current.legacy_mac);
                store
                    .put_data_key_if_absent(
                        SUBJECT_HASH_KEY_ID,
                        w,
                        crate::store::ms(chrono::Utc::now()),
                    )
                    .await?
            }
        };
        let secret = self.unwrap(&row)?;
        let mac: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Open("subject-hash key".into()))?;
        self.mac = mac;
        Ok(self)
    }

    fn unwrap(&self, row: &DataKeyRow) -> Result<Vec<u8>, CryptoError> {
        let wrapped = row.wrapped.as_deref().ok_or(CryptoError::Destroyed)?;
        let m = self
            .master(&row.kid)
            .ok_or_else(|| self.unknown(&row.kid, 1))?;
        aead_open(&m.wrap, &wrap_aad(&row.request_id), wrapped)
            .ok_or_else(|| CryptoError::Open(format!("master key {} ({})", m.source, m.kid)))
    }

    /// Seal a new request's subject under a fresh data key: the sealed blob
    /// and the data key's seed wrapped by the current master key.
    pub fn seal(&self, request_id: &str, subject: &Subject) -> (Vec<u8>, WrappedKey) {
        self.seal_with_changes(request_id, subject, None)
    }

    /// [`seal`](Self::seal), with a rectification's new values sealed in the
    /// same blob under the same data key: they are personal data too, and are
    /// destroyed with the identities (crypto-shredding).
    pub fn seal_with_changes(
        &self,
        request_id: &str,
        subject: &Subject,
        changes: Option<&Subject>,
    ) -> (Vec<u8>, WrappedKey) {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let plain = match changes {
            None => serde_json::to_vec(subject).expect("a subject always serialises"),
            Some(set) => serde_json::to_vec(&SealedWithChanges {
                subject: subject.clone(),
                set: set.clone(),
            })
            .expect("a subject always serialises"),
        };
        let sealed = aead_seal(&data_key(&seed, request_id), request_id.as_bytes(), &plain);
        (sealed, self.current.wrap(request_id, &seed))
    }

    /// Seal directly under the current master key, as before envelope
    /// encryption (for tests of backwards compatibility).
    pub fn seal_legacy(&self, subject: &Subject) -> Vec<u8> {
        let plain = serde_json::to_vec(subject).expect("a subject always serialises");
        aead_seal(&self.current.legacy_enc, b"", &plain)
    }

    /// Open a request's sealed subject with its data key (`None`: sealed
    /// directly under a master key, the format before envelope encryption).
    pub fn open(
        &self,
        request_id: &str,
        sealed: &[u8],
        key: Option<&DataKeyRow>,
    ) -> Result<Subject, CryptoError> {
        self.open_with_changes(request_id, sealed, key)
            .map(|(s, _)| s)
    }

    /// Open a request's sealed subject and, for a rectification, its new values.
    pub fn open_with_changes(
        &self,
        request_id: &str,
        sealed: &[u8],
        key: Option<&DataKeyRow>,
    ) -> Result<(Subject, Option<Subject>), CryptoError> {
        let plain = match key {
            Some(row) => {
                let seed = self.unwrap(row)?;
                aead_open(&data_key(&seed, request_id), request_id.as_bytes(), sealed)
                    .ok_or_else(|| CryptoError::Open("data key".into()))?
            }
            None => std::iter::once(&self.current)
                .chain(self.old.iter())
                .find_map(|m| aead_open(&m.legacy_enc, b"", sealed))
                .ok_or_else(|| CryptoError::Open(format!("key ({})", self.configured())))?,
        };
        if let Ok(s) = serde_json::from_slice::<Subject>(&plain) {
            return Ok((s, None));
        }
        serde_json::from_slice::<SealedWithChanges>(&plain)
            .map(|w| (w.subject, Some(w.set)))
            .map_err(|_| CryptoError::Open("data key".into()))
    }

    /// The keyed hash of a subject's matching key, hex.
    pub fn subject_hash(&self, subject: &Subject) -> String {
        self.hash_str(&subject.match_key())
    }

    /// The keyed hash of any string, hex.
    pub fn hash_str(&self, s: &str) -> String {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.mac).expect("HMAC takes any key length");
        m.update(s.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// `lethe key rotate`: re-wrap every live data key under the current
    /// master key (payloads untouched), and move identities sealed directly
    /// under a master key onto data keys of their own. One transaction per
    /// batch; idempotent. Refuses before writing anything when a data key (or
    /// legacy row) needs a master key that is not configured.
    pub async fn rotate<S: KeyStore + ?Sized>(
        &self,
        store: &S,
        batch: i64,
    ) -> Result<Rotated, KeyStoreError> {
        // 1. Check: every key this needs is at hand.
        let mut missing: Vec<(String, usize)> = vec![];
        let mut after = String::new();
        loop {
            let rows = store
                .data_keys_not_under(&self.current.kid, &after, batch)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.request_id.clone();
            for r in &rows {
                if self.master(&r.kid).is_none() {
                    match missing.iter_mut().find(|(k, _)| *k == r.kid) {
                        Some((_, n)) => *n += 1,
                        None => missing.push((r.kid.clone(), 1)),
                    }
                }
            }
        }
        if let Some((kid, n)) = missing.first() {
            return Err(self.unknown(kid, *n).into());
        }
        let mut legacy_after = String::new();
        loop {
            let rows = store.legacy_identities(&legacy_after, batch).await?;
            let Some((last, _)) = rows.last() else { break };
            legacy_after = last.clone();
            for (id, sealed) in &rows {
                self.open(id, sealed, None).map_err(|_| {
                    CryptoError::UnknownMaster {
                        kid: "(sealed before envelope encryption)".into(),
                        count: 1,
                        configured: self.configured(),
                        hint: if self.unset_old.is_empty() {
                            "the identities of a request filed before envelope encryption open with none of the configured keys: add the old key's variable to [store] old_key_envs".into()
                        } else {
                            format!("set {} ([store] old_key_envs) to the old master key", self.unset_old.join(", "))
                        },
                    }
                })?;
            }
        }
        // 2. Re-wrap, a batch per transaction.
        let mut out = Rotated {
            kid: self.current.kid.clone(),
            ..Rotated::default()
        };
        let mut after = String::new();
        loop {
            let rows = store
                .data_keys_not_under(&self.current.kid, &after, batch)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.request_id.clone();
            let mut re = vec![];
            for r in &rows {
                let secret = self.unwrap(r)?;
                re.push(Rewrap {
                    request_id: r.request_id.clone(),
                    old_kid: r.kid.clone(),
                    key: self.current.wrap(&r.request_id, &secret),
                });
            }
            out.rewrapped += store.rewrap_data_keys(re).await?;
        }
        // 3. Legacy rows: a data key of their own (the one payload change, once).
        let now: Millis = crate::store::ms(chrono::Utc::now());
        let mut after = String::new();
        loop {
            let rows = store.legacy_identities(&after, batch).await?;
            let Some((last, _)) = rows.last() else { break };
            after = last.clone();
            for (id, old) in &rows {
                let subject = self.open(id, old, None)?;
                let (sealed, key) = self.seal(id, &subject);
                if store.upgrade_identities(id, old, &sealed, key, now).await? {
                    out.upgraded += 1;
                }
            }
        }
        Ok(out)
    }
}

/// What `lethe key rotate` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Rotated {
    /// The current master key's id.
    pub kid: String,
    /// Data keys re-wrapped under it.
    pub rewrapped: u64,
    /// Requests sealed directly under a master key, moved onto a data key.
    pub upgraded: u64,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rectifications_new_values_are_sealed_and_opened_with_the_subject() {
        let k = Keys::from_base64("K", &Keys::generate_base64()).unwrap();
        let s = Subject::parse(Some("jane@example.com"), None, None, None).unwrap();
        let set = Subject::changes([("email", "jane.new@example.org")]).unwrap();
        let (sealed, key) = k.seal_with_changes("r1", &s, Some(&set));
        assert!(!String::from_utf8_lossy(&sealed).contains("jane.new"));
        let row = DataKeyRow {
            request_id: "r1".into(),
            kid: key.kid.clone(),
            wrapped: Some(key.wrapped.clone()),
            created_at: 0,
            destroyed_at: None,
        };
        assert_eq!(
            k.open_with_changes("r1", &sealed, Some(&row)).unwrap(),
            (s.clone(), Some(set))
        );
        // The subject alone opens as before; a plain seal has no new values.
        assert_eq!(k.open("r1", &sealed, Some(&row)).unwrap(), s);
        let (plain, key2) = k.seal("r2", &s);
        let row2 = DataKeyRow {
            request_id: "r2".into(),
            kid: key2.kid,
            wrapped: Some(key2.wrapped),
            created_at: 0,
            destroyed_at: None,
        };
        assert_eq!(
            k.open_with_changes("r2", &plain, Some(&row2)).unwrap(),
            (s, None)
        );
    }
    use super::*;

    #[test]
    fn sealed_subjects_open_with_the_same_key_only() {
        let k = Keys::from_base64("K", &Keys::generate_base64()).unwrap();
        let s = Subject::parse(Some("jane@example.com"), None, None, None).unwrap();
        let (sealed, key) = k.seal("r1", &s);
        let row = DataKeyRow {
            request_id: "r1".into(),
            kid: key.kid.clone(),
            wrapped: Some(key.wrapped.clone()),
            created_at: 0,
            destroyed_at: None,
        };
        assert!(!String::from_utf8_lossy(&sealed).contains("jane"));
        assert_eq!(k.open("r1", &sealed, Some(&row)).unwrap(), s);
        // Bound to its request: another id does not open it.
        let moved = DataKeyRow {
            request_id: "r2".into(),
            ..row.clone()
        };
        assert!(k.open("r2", &sealed, Some(&moved)).is_err());
        let other = Keys::from_base64("K", &Keys::generate_base64()).unwrap();
        assert!(other.open("r1", &sealed, Some(&row)).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open("r1", &tampered, Some(&row)).is_err());
        let destroyed = DataKeyRow {
            wrapped: None,
            ..row
        };
        assert!(matches!(
            k.open("r1", &sealed, Some(&destroyed)),
            Err(CryptoError::Destroyed)
        ));
        // The format before envelope encryption still opens.
        let legacy = k.seal_legacy(&s);
        assert_eq!(k.open("r1", &legacy, None).unwrap(), s);
    }

    #[test]
    fn a_short_or_non_base64_key_is_refused() {
        assert!(Keys::from_base64("K", "c2hvcnQ=").is_err());
        assert!(Keys::from_base64("K", "not base64!").is_err());
    }
}
