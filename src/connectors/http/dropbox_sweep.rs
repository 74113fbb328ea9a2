//! The `dropbox_files` sweep: files under a folder whose `server_modified` is
//! before the cutoff.
//!
//! Calls (dropbox.com/developers/documentation/http/documentation, files):
//! - `POST /2/files/list_folder {"path", "recursive": true, "limit": 2000}`
//!   → 200 `{"entries":[{".tag":"file","id","path_lower","server_modified",
//!   "size"},…],"cursor","has_more"}`; then `POST /2/files/list_folder/continue
//!   {"cursor"}` while `has_more`. Folders and deleted entries are skipped.
//! - `POST /2/files/delete_batch {"entries":[{"path":"id:…"},…]}` (≤ 1,000;
//!   by file id, so no name is sent again) → 200 `{".tag":"complete",
//!   "entries":[…]}` or `{".tag":"async_job_id","async_job_id"}`.
//! - `POST /2/files/delete_batch/check {"async_job_id"}` → 200
//!   `{".tag":"in_progress"}` | `{".tag":"complete","entries":[{".tag":
//!   "success","metadata"}|{".tag":"failure","failure":{".tag":…}}]}` (in the
//!   order of the request) | `{".tag":"failed"}`.
//!
//! A deleted file stays recoverable for the plan's window (30–365 days): a
//! soft delete, which the evidence says. Endpoint errors are 409 with
//! `error_summary`; 429 always carries `Retry-After`.

use super::HttpConnector;
use crate::connectors::sweep::{SweepCandidate, SweepOutcome, SweepQuery};
use crate::connectors::ConnectorError;
use serde_json::{json, Value};

/// At most this many entries per `delete_batch`.
pub(super) const DROPBOX_BATCH: usize = 1000;

/// How many times a batch job is checked before it is left unconfirmed.
const CHECKS: u32 = 20;

impl HttpConnector {
    /// POST a JSON body (rendered from the context, never as a template).
    async fn dropbox_post(
        &self,
        route: &str,
        body: Value,
        what: &str,
    ) -> Result<Value, ConnectorError> {
        let mut call = self.sweep_call("POST", route)?;
        call.json = Some("{{ body | tojson }}".into());
        let secrets = self.secret_values()?;
        let (status, headers, text) = self
            .send(&call, &json!({ "body": body }), &secrets, None)
            .await?;
        if status == 200 {
            return serde_json::from_str(&text).map_err(|_| {
                ConnectorError::transient(format!(
                    "processor `{}` answered {what} with a body that is not JSON",
                    self.spec.name
                ))
            });
        }
        Err(self.sweep_status_error(status, &headers, what))
    }

    pub(super) async fn dropbox_sweep_list(
        &self,
        q: &SweepQuery<'_>,
    ) -> Result<Vec<SweepCandidate>, ConnectorError> {
        let folder = q.settings.get("path").cloned().unwrap_or_default();
        // The root is "" in the API.
        let folder = if folder == "/" { String::new() } else { folder };
        let mut page = self
            .dropbox_post(
                "/2/files/list_folder",
                json!({"path": folder, "recursive": true, "limit": 2000}),
                "list_folder",
            )
            .await?;
        let mut out = Vec::new();
        for _ in 0..super::MAX_PAGES {
            let entries = page
                .get("entries")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ConnectorError::transient(format!(
                        "processor `{}` answered list_folder without `entries`",
                        self.spec.name
                    ))
                })?;
            for e in entries {
                if e.get(".tag").and_then(Value::as_str) != Some("file") {
                    continue;
                }
                let (Some(id), Some(path)) = (
                    e.get("id").and_then(Value::as_str),
                    e.get("path_lower").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let Some(modified) = e
                    .get("server_modified")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp_millis())
                else {
                    continue;
                };
                if modified >= q.cutoff_ms {
                    continue;
                }
                out.push(SweepCandidate {
                    name: path.to_string(),
                    kind: "file",
                    reference: Some(id.to_string()),
                    size: e.get("size").and_then(Value::as_i64),
                    modified_ms: Some(modified),
                });
            }
            if page.get("has_more").and_then(Value::as_bool) != Some(true) {
                return Ok(out);
            }
            let cursor = page
                .get("cursor")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ConnectorError::transient(format!(
                        "processor `{}`: list_folder has more but gave no cursor",
                        self.spec.name
                    ))
                })?
                .to_string();
            page = self
                .dropbox_post(
                    "/2/files/list_folder/continue",
                    json!({ "cursor": cursor }),
                    "list_folder/continue",
                )
                .await?;
        }
        Err(ConnectorError::transient(format!(
            "processor `{}`: list_folder had more than {} pages",
            self.spec.name,
            super::MAX_PAGES
        )))
    }

    pub(super) async fn dropbox_sweep_delete(
        &self,
        items: &[SweepCandidate],
    ) -> Result<Vec<SweepOutcome>, ConnectorError> {
        let items: Vec<&SweepCandidate> = items.iter().filter(|c| c.reference.is_some()).collect();
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Value> = items
            .iter()
            .map(|c| json!({ "path": c.reference }))
            .collect();
        let first = self
            .dropbox_post(
                "/2/files/delete_batch",
                json!({ "entries": entries }),
                "delete_batch",
            )
            .await?;
        let (done, job) = match first.get(".tag").and_then(Value::as_str) {
            Some("complete") => (first, None),
            Some("async_job_id") => {
                let job = first
                    .get("async_job_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let mut result = None;
                for i in 0..CHECKS {
                    let r = self
                        .dropbox_post(
                            "/2/files/delete_batch/check",
                            json!({ "async_job_id": job }),
                            "delete_batch/check",
                        )
                        .await?;
                    match r.get(".tag").and_then(Value::as_str) {
                        Some("in_progress") => {
                            tokio::time::sleep(std::time::Duration::from_millis(
                                200 * u64::from(i + 1).min(10),
                            ))
                            .await
                        }
                        _ => {
                            result = Some(r);
                            break;
                        }
                    }
                }
                let Some(r) = result else {
                    return Err(ConnectorError::transient(format!(
                        "processor `{}`: delete_batch job had not finished; its files stay unconfirmed until the next attempt",
                        self.spec.name
                    )));
                };
                (r, Some(job))
            }
            _ => {
                return Err(ConnectorError::transient(format!(
                "processor `{}` answered delete_batch with neither `complete` nor `async_job_id`",
                self.spec.name
            )))
            }
        };
        if done.get(".tag").and_then(Value::as_str) != Some("complete") {
            // `failed` (e.g. too_many_write_operations): nothing proven either way.
            let tag = done
                .get("error")
                .and_then(|e| e.get(".tag"))
                .or_else(|| done.get(".tag"))
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_string();
            return Err(ConnectorError::transient(format!(
                "processor `{}`: delete_batch job ended `{tag}`",
                self.spec.name
            )));
        }
        let results = done
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if results.len() != items.len() {
            return Err(ConnectorError::transient(format!(
                "processor `{}`: delete_batch answered {} entries for {} files; nothing recorded",
                self.spec.name,
                results.len(),
                items.len()
            )));
        }
        let mut out = Vec::new();
        for (c, r) in items.iter().zip(results) {
            let tag = r.get(".tag").and_then(Value::as_str);
            // The answer names the file it deleted: it must be this one.
            let same = r
                .get("metadata")
                .and_then(|m| m.get("id"))
                .and_then(Value::as_str)
                .is_none_or(|id| Some(id) == c.reference.as_deref());
            let (removed, failure) = match tag {
                Some("success") if same => (true, None),
                Some("failure") => (
                    false,
                    r.get("failure")
                        .and_then(|f| f.get(".tag"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                ),
                _ => continue,
            };
            out.push(SweepOutcome {
                name: c.name.clone(),
                removed,
                evidence: json!({
                    "call": "files/delete_batch",
                    "status": 200,
                    "async_job_id": job,
                    "result": tag,
                    "failure": failure,
                    "note": if removed { Some("deleted: recoverable in Dropbox for the plan's window (30–365 days)") } else { None },
                }),
            });
        }
        Ok(out)
    }
}
