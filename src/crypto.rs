//! Identities at rest: sealed with ChaCha20-Poly1305, matched by a keyed hash.
//!
//! The store never holds a raw identity. It holds the sealed subject (so the
//! worker can call processors) and an HMAC of the matching key (so duplicates
//! and holds can be found without decrypting). Destroying the sealed blob
//! (crypto-shredding) leaves only the HMAC, which cannot be reversed without the key.

use crate::domain::Subject;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

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
}

/// The keys derived from the master key; held in `secrecy` boxes (zeroized
/// on drop, never printed).
#[derive(Clone)]
pub struct Keys {
    enc: std::sync::Arc<SecretBox<[u8; 32]>>,
    mac: std::sync::Arc<SecretBox<[u8; 32]>>,
    source: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(from {})", self.source)
    }
}

fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    m.update(label);
    m.finalize().into_bytes().into()
}

impl Keys {
    /// Read the master key from the named env var.
    pub fn from_env(var: &str) -> Result<Keys, CryptoError> {
        let v = std::env::var(var).map_err(|_| CryptoError::MissingKey(var.to_string()))?;
        Keys::from_base64(var, &v)
    }

    /// Parse a base64 master key; `source` names it in messages.
    pub fn from_base64(source: &str, v: &str) -> Result<Keys, CryptoError> {
        let raw = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| CryptoError::BadKey(source.to_string()))?,
        );
        if raw.len() != 32 {
            return Err(CryptoError::BadKey(source.to_string()));
        }
        Ok(Keys {
            enc: std::sync::Arc::new(SecretBox::new(Box::new(derive(
                &raw,
                b"lethe/identity-encryption/v1",
            )))),
            mac: std::sync::Arc::new(SecretBox::new(Box::new(derive(
                &raw,
                b"lethe/subject-hash/v1",
            )))),
            source: source.to_string(),
        })
    }

    /// A fresh random key, base64 (for `lethe init` and the demo).
    pub fn generate_base64() -> String {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    /// Seal a subject: 12-byte nonce, then ciphertext.
    pub fn seal(&self, subject: &Subject) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.enc.expose_secret()));
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(subject).expect("a subject always serialises");
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
                .expect("encryption of a small buffer cannot fail"),
        );
        out
    }

    /// Open a sealed subject.
    pub fn open(&self, sealed: &[u8]) -> Result<Subject, CryptoError> {
        if sealed.len() < 12 {
            return Err(CryptoError::Open(self.source.clone()));
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.enc.expose_secret()));
        let plain = cipher
            .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
            .map_err(|_| CryptoError::Open(self.source.clone()))?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Open(self.source.clone()))
    }

    /// The keyed hash of a subject's matching key, hex.
    pub fn subject_hash(&self, subject: &Subject) -> String {
        self.hash_str(&subject.match_key())
    }

    /// The keyed hash of any string, hex.
    pub fn hash_str(&self, s: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac.expose_secret())
            .expect("HMAC takes any key length");
        m.update(s.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_subjects_open_with_the_same_key_only() {
        let k = Keys::from_base64("K", &Keys::generate_base64()).unwrap();
        let s = Subject::parse(Some("jane@example.com"), None, None, None).unwrap();
        let sealed = k.seal(&s);
        assert!(!String::from_utf8_lossy(&sealed).contains("jane"));
        assert_eq!(k.open(&sealed).unwrap(), s);
        let other = Keys::from_base64("K", &Keys::generate_base64()).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open(&tampered).is_err());
    }

    #[test]
    fn a_short_or_non_base64_key_is_refused() {
        assert!(Keys::from_base64("K", "c2hvcnQ=").is_err());
        assert!(Keys::from_base64("K", "not base64!").is_err());
    }
}
