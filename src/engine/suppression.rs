//! Suppression of returning identities (issue 14.3).
//!
//! When an erasure completes, one keyed hash (HMAC, the same key as the
//! subject hash) per identity — `email`, `phone`, `customer_id`, normalised
//! as matching does — is in force on the suppression list. The list never
//! holds an identity, only its hash and its masked form. A new request whose
//! identity is on the list is accepted with a warning naming the earlier
//! erasure.

use crate::crypto::Keys;
use crate::domain::Subject;
use crate::store::{Store, StoreError, SuppressionEntry};

/// The suppression entries of a subject: one per identity (the name is not an identifier).
pub fn entries(keys: &Keys, subject: &Subject) -> Vec<SuppressionEntry> {
    let mut out = vec![];
    if let Some(e) = &subject.email {
        out.push(entry(keys, "email", e.expose(), e.masked()));
    }
    if let Some(p) = &subject.phone {
        out.push(entry(keys, "phone", p.expose(), p.masked()));
    }
    if let Some(c) = &subject.customer_id {
        out.push(entry(keys, "customer_id", c.expose(), c.masked()));
    }
    out
}

/// The keyed hash of one identity of a kind, as the list stores it.
pub fn identity_hash(keys: &Keys, kind: &str, normalised: &str) -> String {
    keys.hash_str(&format!("{kind}:{normalised}"))
}

fn entry(keys: &Keys, kind: &str, value: &str, masked: String) -> SuppressionEntry {
    SuppressionEntry {
        kind: kind.to_string(),
        hash: identity_hash(keys, kind, value),
        masked,
    }
}

/// The warnings for a new request whose identities are suppressed (one per earlier erasure).
pub async fn warnings(
    store: &dyn Store,
    entries: &[SuppressionEntry],
) -> Result<Vec<String>, StoreError> {
    let hashes: Vec<String> = entries.iter().map(|e| e.hash.clone()).collect();
    let mut out: Vec<String> = vec![];
    for row in store.suppressed(&hashes).await? {
        let w = format!(
            "identity matches a suppressed subject of request {} ({} {})",
            row.request_id, row.kind, row.masked
        );
        if !out.contains(&w) {
            out.push(w);
        }
    }
    Ok(out)
}
