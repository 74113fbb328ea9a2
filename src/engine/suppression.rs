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
use crate::store::{ReportStore, StoreError, SuppressionEntry};

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
pub async fn warnings<S: ReportStore + ?Sized>(
    store: &S,
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

/// One processor's part of a check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedProcessor {
    /// Processor name.
    pub processor: String,
    /// Identities it listed.
    pub listed: usize,
    /// Why it could not be listed (masked; the check goes on with the others).
    pub error: Option<String>,
}

/// A suppressed identity found again at a processor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reappearance {
    /// Where it was found (the first processor that listed it).
    pub processor: String,
    /// `email`, `phone` or `customer_id`.
    pub identity_kind: String,
    /// The masked identity.
    pub masked: String,
    /// The erasure whose subject re-appeared.
    pub original: String,
    /// The follow-up erasure (new, or the one already open).
    pub follow_up: String,
    /// True when this check opened it; false when one was already open.
    pub opened: bool,
}

/// What `lethe suppression check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Every processor with a `list` action.
    pub processors: Vec<ListedProcessor>,
    /// Re-appearances, one per (identity, latest erasure).
    pub reappeared: Vec<Reappearance>,
}

/// Normalise a listed identity as intake does: (value, masked); `None` if it is not valid.
fn normalise(kind: &str, raw: &str) -> Option<(String, String)> {
    use crate::domain::{CustomerId, Email, Phone};
    match kind {
        "email" => Email::parse(raw)
            .ok()
            .map(|e| (e.expose().to_string(), e.masked())),
        "phone" => Phone::parse(raw)
            .ok()
            .map(|p| (p.expose().to_string(), p.masked())),
        "customer_id" => CustomerId::parse(raw)
            .ok()
            .map(|c| (c.expose().to_string(), c.masked())),
        _ => None,
    }
}

impl super::Engine {
    /// `lethe suppression check`: list every processor that can enumerate,
    /// hash each identity locally, and open a follow-up erasure (linked by
    /// `follows`) for each suppressed identity found again — unless one is
    /// still open for it. The original erasure gets a `suppression.reappeared`
    /// event naming the follow-up. No identity is kept, logged or returned:
    /// only hashes are compared and masked forms reported.
    pub async fn suppression_check(&self) -> Result<CheckReport, super::EngineError> {
        use std::collections::HashMap;
        let mut report = CheckReport::default();
        // hash -> (kind, normalised value, masked, processor), first seen wins.
        let mut found: HashMap<String, (String, String, String, String)> = HashMap::new();
        for p in &self.config.processors {
            let Some(c) = self.connector(&p.name) else {
                continue;
            };
            let Some(listed) = c.list_identities().await else {
                continue;
            };
            match listed {
                Err(e) => report.processors.push(ListedProcessor {
                    processor: p.name.clone(),
                    listed: 0,
                    error: Some(e.message),
                }),
                Ok(ids) => {
                    report.processors.push(ListedProcessor {
                        processor: p.name.clone(),
                        listed: ids.len(),
                        error: None,
                    });
                    for (kind, raw) in ids {
                        let Some((value, masked)) = normalise(&kind, &raw) else {
                            continue;
                        };
                        let hash = identity_hash(&self.keys, &kind, &value);
                        found
                            .entry(hash)
                            .or_insert((kind, value, masked, p.name.clone()));
                    }
                }
            }
        }
        if found.is_empty() {
            return Ok(report);
        }
        // The latest erasure of each suppressed hash is the one followed up.
        let mut latest: HashMap<String, crate::store::SuppressionRow> = HashMap::new();
        for row in self.store.suppression_list().await? {
            if !row.active || !found.contains_key(&row.hash) {
                continue;
            }
            match latest.get(&row.hash) {
                Some(l) if l.created_at >= row.created_at => {}
                _ => {
                    latest.insert(row.hash.clone(), row);
                }
            }
        }
        let mut hashes: Vec<&String> = latest.keys().collect();
        hashes.sort();
        for hash in hashes {
            let row = &latest[hash];
            let Some((kind, value, masked, processor)) = found.get(hash) else {
                continue;
            };
            let subject = match kind.as_str() {
                "email" => Subject::parse(Some(value), None, None, None),
                "phone" => Subject::parse(None, Some(value), None, None),
                _ => Subject::parse(None, None, Some(value), None),
            }
            .map_err(|e| super::EngineError::Invalid(e.to_string()))?;
            let subject_hash = self.keys.subject_hash(&subject);
            let open = self
                .store
                .follow_ups(&row.request_id)
                .await?
                .into_iter()
                .find(|r| !r.status.is_closed() && r.subject_hash == subject_hash);
            let (follow_up, opened) = match open {
                Some(r) => (r.id, false),
                None => {
                    let sub = self
                        .submit(
                            crate::domain::RequestKind::Erasure,
                            subject,
                            super::SubmitOptions {
                                follows: Some(row.request_id.clone()),
                                ..Default::default()
                            },
                        )
                        .await?;
                    (sub.request.id, true)
                }
            };
            // The original's chain names the follow-up once (also after a
            // crash between filing the follow-up and writing this event).
            let noted = self
                .store
                .request_events(&row.request_id)
                .await?
                .iter()
                .any(|e| {
                    e.kind == "suppression.reappeared"
                        && e.detail.get("follow_up").and_then(|v| v.as_str())
                            == Some(follow_up.as_str())
                });
            if !noted {
                let cs = crate::store::ChangeSet {
                    request_id: row.request_id.clone(),
                    now: crate::store::ms(chrono::Utc::now()),
                    steps: vec![],
                    request: Default::default(),
                    events: vec![(
                        "suppression.reappeared".into(),
                        serde_json::json!({
                            "processor": processor,
                            "identity_kind": kind,
                            "masked": masked,
                            "follow_up": follow_up,
                        }),
                    )],
                };
                self.store.apply(cs).await?;
            }
            tracing::warn!(
                original = %row.request_id,
                follow_up = %follow_up,
                processor = %processor,
                opened,
                "an erased subject re-appeared at a processor"
            );
            report.reappeared.push(Reappearance {
                processor: processor.clone(),
                identity_kind: kind.clone(),
                masked: masked.clone(),
                original: row.request_id.clone(),
                follow_up,
                opened,
            });
        }
        Ok(report)
    }
}
