//! Audit events and the hash chains that make them tamper-evident.
//!
//! Events live in many small chains, not one global one, so writers never
//! serialise on a single head: each request has its chain (`request:<uuid>`),
//! each hold (`hold:<id>`) and each processor (`processor:<name>`) too, and
//! anything else goes to `system`. [`chain_of`] is the one place that picks an
//! event's chain. Within a chain, events are numbered `chain_seq` 1, 2, …; the
//! global `seq` of the `events` table only orders rows and is not hashed.
//!
//! An event's hash is [`event_hash`]: `SHA-256("lethe-chain-v2\n" ‖ prev_hash ‖
//! "\n" ‖ canonical(chain, chain_seq, at, request, step, kind, detail))`, where
//! `prev_hash` is the hash of the previous event of the *same* chain
//! ([`GENESIS_HASH`] for the first) and the canonical encoding is JSON with
//! object keys sorted and no whitespace.
//!
//! Rows written before migration 0011 form the chain [`LEGACY_CHAIN`] and keep
//! their original rule, [`chain_hash`]: one global chain numbered by `seq`.
//!
//! The computations are pure so that the store (which appends) and the
//! verifier (which recomputes) share exactly one definition.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain of rows written before per-chain hashing (migration 0011).
pub const LEGACY_CHAIN: &str = "legacy";

/// The chain of events that belong to no request, hold or processor.
pub const SYSTEM_CHAIN: &str = "system";

/// The chain an event belongs to — the one place that decides it.
///
/// A request's events go to `request:<id>`; a hold's (`hold.*` with a `hold`
/// id in the detail) to `hold:<id>`; a processor's (`processor.*` with a
/// `processor` name in the detail) to `processor:<name>`; anything else
/// (e.g. key rotation) to [`SYSTEM_CHAIN`].
pub fn chain_of(request_id: Option<&str>, kind: &str, detail: &Value) -> String {
    if let Some(r) = request_id {
        return format!("request:{r}");
    }
    let field = |k: &str| detail.get(k).and_then(Value::as_str);
    if kind.starts_with("hold.") {
        if let Some(id) = field("hold") {
            return format!("hold:{id}");
        }
    }
    if kind.starts_with("processor.") {
        if let Some(name) = field("processor") {
            return format!("processor:{name}");
        }
    }
    SYSTEM_CHAIN.to_string()
}

/// The fields of an event that its (per-chain) hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEvent<'a> {
    /// The chain (`request:<uuid>`, `hold:<id>`, `processor:<name>`, `system`).
    pub chain: &'a str,
    /// Position within the chain, from 1.
    pub chain_seq: i64,
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

/// The hash of an event in its chain, hex-encoded: `prev_hash` is the hash of
/// the previous event of the same chain ([`GENESIS_HASH`] for the first).
pub fn event_hash(prev_hash: &str, ev: &ChainedEvent<'_>) -> String {
    let doc = serde_json::json!({
        "chain": ev.chain,
        "chain_seq": ev.chain_seq,
        "at": ev.at_ms,
        "request": ev.request_id,
        "step": ev.step_id,
        "kind": ev.kind,
        "detail": ev.detail,
    });
    let mut canon = String::new();
    canonical_json(&doc, &mut canon);
    let mut h = Sha256::new();
    h.update(b"lethe-chain-v2\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canon.as_bytes());
    hex::encode(h.finalize())
}

/// The fields of a pre-0011 (legacy) event that its hash covers.
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

/// The hash of a pre-0011 event (chain [`LEGACY_CHAIN`]), hex-encoded: one
/// global chain where `seq` is the row's position. Only the verifier uses it;
/// new events are hashed with [`event_hash`].
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

    #[test]
    fn events_go_to_the_chain_of_their_request_hold_or_processor() {
        assert_eq!(
            chain_of(Some("u1"), "step.finished", &json!({})),
            "request:u1"
        );
        assert_eq!(
            chain_of(None, "hold.added", &json!({"hold": "h1"})),
            "hold:h1"
        );
        assert_eq!(
            chain_of(None, "processor.paused", &json!({"processor": "mc"})),
            "processor:mc"
        );
        assert_eq!(chain_of(None, "key.rotated", &json!({})), "system");
        assert_eq!(chain_of(None, "hold.added", &json!({})), "system");
    }

    #[test]
    fn the_chain_hash_covers_chain_position_and_previous_hash() {
        let d = json!({"outcome": "erased"});
        let ev = ChainedEvent {
            chain: "request:r",
            chain_seq: 1,
            at_ms: 5,
            request_id: Some("r"),
            step_id: Some(2),
            kind: "step.finished",
            detail: &d,
        };
        let h = event_hash(GENESIS_HASH, &ev);
        assert_ne!(
            h,
            event_hash(
                GENESIS_HASH,
                &ChainedEvent {
                    chain: "request:s",
                    ..ev.clone()
                }
            )
        );
        assert_ne!(
            h,
            event_hash(
                GENESIS_HASH,
                &ChainedEvent {
                    chain_seq: 2,
                    ..ev.clone()
                }
            )
        );
        assert_ne!(h, event_hash(&h, &ev));
        let legacy = EventBody {
            seq: 1,
            at_ms: 5,
            request_id: Some("r"),
            step_id: Some(2),
            kind: "step.finished",
            detail: &d,
        };
        assert_ne!(
            h,
            chain_hash(GENESIS_HASH, &legacy),
            "the two rules never coincide"
        );
    }
}
