//! Audit events and the hash chain that makes them tamper-evident.
//!
//! Each event's hash is `SHA-256(prev_hash ‖ canonical(event))`, where the
//! canonical encoding is JSON with object keys sorted and no whitespace. The
//! computation is pure so that the store (which appends) and the verifier (which
//! recomputes) share exactly one definition.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an event that the hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBody<'a> {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The request, if any.
    pub request_id: Option<&'a str>,
    /// The step, if any.
    pub step_id: Option<i64>,
    /// What happened (`request.created`, `step.finished`, …).
    pub kind: &'a str,
    /// Details; never a raw identity.
    pub detail: &'a Value,
}

/// Write `v` as canonical JSON: objects with sorted keys, no whitespace.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The chained hash of an event, hex-encoded.
pub fn chain_hash(prev_hash: &str, body: &EventBody<'_>) -> String {
    let doc = serde_json::json!({
        "seq": body.seq,
        "at": body.at_ms,
        "request": body.request_id,
        "step": body.step_id,
        "kind": body.kind,
        "detail": body.detail,
    });
    let mut canon = String::new();
    canonical_json(&doc, &mut canon);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canon.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut s = String::new();
        canonical_json(
            &json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}}),
            &mut s,
        );
        assert_eq!(s, r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn any_change_to_an_event_changes_its_hash() {
        let d = json!({"outcome": "erased"});
        let body = EventBody {
            seq: 1,
            at_ms: 5,
            request_id: Some("r"),
            step_id: Some(2),
            kind: "step.finished",
            detail: &d,
        };
        let h = chain_hash(GENESIS_HASH, &body);
        let d2 = json!({"outcome": "not_found"});
        assert_ne!(
            h,
            chain_hash(
                GENESIS_HASH,
                &EventBody {
                    detail: &d2,
                    ..body.clone()
                }
            )
        );
        assert_ne!(
            h,
            chain_hash(
                GENESIS_HASH,
                &EventBody {
                    seq: 2,
                    ..body.clone()
                }
            )
        );
        assert_ne!(h, chain_hash(&h, &body));
    }
}
