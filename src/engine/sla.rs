//! Deadlines shorter than the law's, and reporting requests near theirs (issue 14.5).
//!
//! A workflow's `deadline = "7d"` sets `due_at` = received + 7 days (never
//! later than the statutory month). The daemon scans for open requests due
//! within `[sla] warn_before` and reports each **once**: a
//! `request.deadline_near` event on its chain, written in the same
//! transaction that stamps `deadline_warned_at` (so a restart or a second
//! daemon does not report it twice), a log line with the request id only (no
//! identity), and — with `[sla] webhook_url` — a signed `deadline_near`
//! callback through the outbox. `/metrics` exports `lethe_requests_due_soon`.

use super::{Engine, EngineError};
use crate::store::{ms, Applied, ChangeSet, RequestPatch};
use chrono::Utc;

impl Engine {
    /// Report every open request due within `[sla] warn_before` that was not
    /// reported yet; returns their ids.
    pub async fn report_deadlines_near(&self) -> Result<Vec<String>, EngineError> {
        let now = ms(Utc::now());
        let warn = self
            .config
            .sla
            .warn_before
            .get()
            .as_millis()
            .min(i64::MAX as u128) as i64;
        let due = self
            .store
            .deadline_unwarned(now.saturating_add(warn))
            .await?;
        let mut out = vec![];
        for req in due {
            let notify = self
                .config
                .sla
                .webhook_url
                .iter()
                .map(|u| (u.clone(), "deadline_near".to_string()))
                .collect();
            let cs = ChangeSet {
                request_id: req.id.clone(),
                now,
                steps: vec![],
                request: RequestPatch {
                    deadline_warned: true,
                    notify,
                    ..Default::default()
                },
                events: vec![(
                    "request.deadline_near".into(),
                    serde_json::json!({"due_at": req.due_at, "warn_before_ms": warn}),
                )],
            };
            // Another daemon may have reported it first: then nothing was written.
            if let Applied::Done { .. } = self.store.apply(cs).await? {
                tracing::warn!(
                    request = %req.id,
                    due_at = %crate::store::rfc3339(req.due_at),
                    "request is near its deadline"
                );
                out.push(req.id);
            }
        }
        Ok(out)
    }
}
