//! The audit trail: verification of the hash chain.
//!
//! Events are appended by the store (see `domain::event` for the hash). This
//! module walks the whole chain, recomputes every hash from the row's content
//! and its predecessor, and names the first row that does not match.

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
