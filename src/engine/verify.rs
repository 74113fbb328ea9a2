//! Identity verification (issue 14.6).
//!
//! A request filed with `verified = false` (`lethe request … --unverified`,
//! or `"verified": false` in the intake webhook / OpenDSR body) calls no
//! processor at all — no lookup, export, erase or purge — until it is marked
//! verified: a lookup would tell an unverified sender what a processor holds,
//! an export discloses the data, and an erase cannot be undone. The store
//! keeps its steps unclaimable (`NOT_BLOCKED` in `store::common`), so a
//! cancel of an unverified request leaves every processor untouched.
//! `lethe verify ID --method T` or the signed `POST /v1/requests/{id}/verify`
//! marks it verified, with a `request.verified {method, by}` event that the
//! certificate shows as `verification: {method, at, by}`.

use super::{Engine, EngineError};
use crate::store::{ms, Applied, ChangeSet, RequestPatch, RequestRow};
use chrono::Utc;

impl Engine {
    /// Mark an unverified request verified: its steps become claimable now.
    /// Refused when the request is unknown, already verified, or cancelled.
    pub async fn verify(
        &self,
        id: &str,
        method: &str,
        note: Option<&str>,
        by: &str,
    ) -> Result<RequestRow, EngineError> {
        let method = method.trim();
        if method.is_empty() || method.len() > 200 {
            return Err(EngineError::Invalid(
                "a verification needs its method (--method), e.g. \"email link\" or \"id document\" (at most 200 characters)".into(),
            ));
        }
        let req = self.request(id).await?;
        if req.verified {
            return Err(EngineError::Invalid(format!(
                "request `{id}` is already verified; nothing was changed"
            )));
        }
        if req.cancelled {
            return Err(EngineError::Invalid(format!(
                "request `{id}` is cancelled; nothing was changed"
            )));
        }
        let mut detail = serde_json::json!({"method": method, "by": by});
        if let Some(n) = note.map(str::trim).filter(|n| !n.is_empty()) {
            detail["note"] = serde_json::Value::String(n.to_string());
        }
        let cs = ChangeSet {
            request_id: req.id.clone(),
            now: ms(Utc::now()),
            steps: vec![],
            request: RequestPatch {
                verified: Some(true),
                ..Default::default()
            },
            events: vec![("request.verified".into(), detail)],
        };
        match self.store.apply(cs).await? {
            Applied::Done { .. } => {
                self.notify();
                self.request(id).await
            }
            // Verified meanwhile by someone else: one verification, one event.
            Applied::NoRequest if self.request(id).await?.verified => Err(EngineError::Invalid(
                format!("request `{id}` is already verified; nothing was changed"),
            )),
            _ => Err(EngineError::Conflict(id.to_string())),
        }
    }
}
