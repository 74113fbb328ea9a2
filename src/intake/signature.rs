//! `Lethe-Signature`: how webhooks prove they come from our intake form, and
//! how our status callbacks prove they come from us.
//!
//! `Lethe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`
//! — the scheme Stripe made familiar. The timestamp is inside the MAC, so a
//! captured request cannot be replayed after the tolerance (5 minutes); the
//! MAC covers the raw bytes, so it is checked before the body is parsed. The
//! comparison is constant-time (`hmac`'s `verify_slice`). Several `v1=` values
//! may be sent (while a secret is being rotated); one must match.
//!
//! Status callbacks are *not* signed with the webhook secret (a callback
//! receiver holding it could forge intake requests): they carry
//! `Lethe-Signature: t=<unix seconds>,ed25519=<hex Ed25519 signature of "<t>.<raw body>">`
//! made with the callback signing key ([`sign_callback`]); receivers verify
//! it with the public key `lethe intake key` prints ([`verify_callback`]).
//! The webhook check ignores `ed25519=`, so a captured callback signature is
//! never a valid webhook signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header name.
pub const HEADER: &str = "lethe-signature";

/// How far the signed time may be from ours.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. The messages name no secret and no MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Lethe-Signature` header.
    #[error("missing Lethe-Signature header (t=<unix>,v1=<hex HMAC-SHA256>)")]
    Missing,
    /// The header is not `t=…,v1=…`.
    #[error("malformed Lethe-Signature header: {0}")]
    Malformed(&'static str),
    /// The timestamp is too far from now: our time minus the signed time, in
    /// seconds (positive: the signature was made in the past).
    #[error("signature timestamp is {}; at most 300 s either way is accepted (check the sender's clock)", describe_skew(*.0))]
    Stale(i64),
    /// No `v1` value matches.
    #[error("signature does not match the body")]
    Mismatch,
}

/// `400 s ago` for a signature made in the past, `400 s in the future` for one
/// from a clock that runs ahead.
fn describe_skew(skew: i64) -> String {
    if skew >= 0 {
        format!("{skew} s ago")
    } else {
        format!("{} s in the future", skew.unsigned_abs())
    }
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value for `body` at time `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// The `t=` and every `scheme=` signature of a `Lethe-Signature` header;
/// other schemes (v0, future versions) are ignored. `not_hex` and `missing`
/// are the messages for a signature that is not hex, and for none at all.
fn parse_header(
    header: Option<&str>,
    scheme: &str,
    not_hex: &'static str,
    missing: &'static str,
) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        if k == "t" {
            t = Some(
                v.parse()
                    .map_err(|_| SignatureError::Malformed("t is not a unix time"))?,
            );
        } else if k == scheme {
            sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed(not_hex))?);
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no t="))?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed(missing));
    }
    Ok((t, sigs))
}

/// Refuse a signature time more than [`TOLERANCE_SECS`] from `now`.
fn check_fresh(t: i64, now: i64) -> Result<(), SignatureError> {
    let skew = now.saturating_sub(t);
    if skew.abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale(skew));
    }
    Ok(())
}

/// Check a header value against `body` at time `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (t, sigs) = parse_header(header, "v1", "v1 is not hex", "no v1=")?;
    check_fresh(t, now)?;
    let m = mac(secret, t, body);
    if sigs.iter().any(|s| m.clone().verify_slice(s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What a callback signature covers: `"<t>.<raw body>"`.
fn callback_message(t: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(body.len() + 12);
    msg.extend_from_slice(t.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

/// The callback header value for `body` at time `t`, signed with the callback key.
pub fn sign_callback(key: &ed25519_dalek::SigningKey, t: i64, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let sig = key.sign(&callback_message(t, body));
    format!("t={t},ed25519={}", hex::encode(sig.to_bytes()))
}

/// Check a callback header against `body` at `now` with the public key receivers pin.
pub fn verify_callback(
    key: &ed25519_dalek::VerifyingKey,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (t, mut sigs) = parse_header(header, "ed25519", "ed25519 is not hex", "no ed25519=")?;
    // The last one counts, as before.
    let sig = sigs.pop().unwrap_or_default();
    let sig = ed25519_dalek::Signature::from_slice(&sig)
        .map_err(|_| SignatureError::Malformed("ed25519 is not 64 bytes"))?;
    check_fresh(t, now)?;
    key.verify_strict(&callback_message(t, body), &sig)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_by_sign_verifies_and_a_changed_body_does_not() {
        let h = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(
            verify(b"s3cret", Some(&h), b"{\"a\":1}", 1_700_000_010),
            Ok(())
        );
        assert_eq!(
            verify(b"s3cret", Some(&h), b"{\"a\":2}", 1_700_000_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(&h), b"{\"a\":1}", 1_700_000_010),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_sha256() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac key
        let h = sign(b"key", 1_700_000_000, b"{}");
        assert_eq!(
            h,
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn a_timestamp_more_than_five_minutes_off_is_stale() {
        let h = sign(b"k", 1_000, b"x");
        assert_eq!(
            verify(b"k", Some(&h), b"x", 1_301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(b"k", Some(&h), b"x", 699),
            Err(SignatureError::Stale(-301))
        );
        assert_eq!(verify(b"k", Some(&h), b"x", 1_300), Ok(()));
        assert!(SignatureError::Stale(400).to_string().contains("400 s ago"));
        assert!(SignatureError::Stale(-400)
            .to_string()
            .contains("400 s in the future"));
    }

    #[test]
    fn a_callback_signature_verifies_with_the_callback_key_and_is_no_webhook_signature() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let h = sign_callback(&key, 1_000, b"{}");
        assert_eq!(
            verify_callback(&key.verifying_key(), Some(&h), b"{}", 1_010),
            Ok(())
        );
        assert_eq!(
            verify_callback(&key.verifying_key(), Some(&h), b"{ }", 1_010),
            Err(SignatureError::Mismatch)
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            verify_callback(&other.verifying_key(), Some(&h), b"{}", 1_010),
            Err(SignatureError::Mismatch)
        );
        assert!(verify(&[7u8; 32], Some(&h), b"{}", 1_010).is_err());
    }

    #[test]
    fn malformed_headers_are_named() {
        assert_eq!(verify(b"k", None, b"x", 0), Err(SignatureError::Missing));
        assert!(matches!(
            verify(b"k", Some("v1=zz,t=0"), b"x", 0),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(b"k", Some("t=0"), b"x", 0),
            Err(SignatureError::Malformed(_))
        ));
    }
}
