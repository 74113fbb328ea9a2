//! The `zendesk_tickets` sweep: closed (or solved) tickets not updated since
//! the cutoff.
//!
//! Calls (developer.zendesk.com/api-reference, Search and Tickets):
//! - `GET /api/v2/search.json?query=type:ticket status:closed updated<CUTOFF`
//!   → 200 `{"results":[{"id","result_type","status","updated_at",…}],"next_page":URL|null}`;
//!   offset pages of 100, at most 1,000 results per query (more wait for the
//!   next run). The search index lags, so each result is checked again here
//!   (type, status, `updated_at` before the cutoff).
//! - `DELETE /api/v2/tickets/destroy_many.json?ids=1,2,…` (at most 100 ids)
//!   → 200 `{"job_status":{"id","status":"queued",…}}`: a background job.
//! - `GET /api/v2/job_statuses/{id}.json` → 200 `{"job_status":{"status":
//!   "queued"|"working"|"completed"|"failed"|"killed","results":[{"id",
//!   "success", "error"…}]}}`: a result naming a ticket with `success: true`
//!   (or `status: "Deleted"`) proves it deleted; one with an error, refused.
//! - `GET /api/v2/tickets/{id}.json` for a ticket a completed job does not
//!   mention: 404 proves it gone; 200 means it is still there (refused).
//!
//! Deleted tickets stay in Zendesk's "deleted tickets" for 30 days, then
//! Zendesk purges them (a soft delete; the evidence says so).
//! 429 answers carry `Retry-After` (throttled); 401/403 are credentials.

use super::HttpConnector;
use crate::connectors::definition::Call;
use crate::connectors::sweep::{SweepCandidate, SweepOutcome, SweepQuery};
use crate::connectors::{ConnectorError, ErrorClass};
use serde_json::{json, Value};

/// How many times a job status is read before the batch is left unconfirmed.
const JOB_POLLS: u32 = 20;

impl HttpConnector {
    pub(super) fn sweep_call(&self, method: &str, path: &str) -> Result<Call, ConnectorError> {
        let mut call: Call = toml::from_str(&format!("path = {:?}", path)).map_err(|e| {
            ConnectorError::permanent(format!("internal: cannot build a sweep call: {e}"))
        })?;
        call.method = method.to_string();
        Ok(call)
    }

    /// Send one sweep call; a non-2xx answer becomes a classified error
    /// (except the statuses in `pass`, returned as they are).
    async fn sweep_send(
        &self,
        call: &Call,
        page: Option<&str>,
        what: &str,
        pass: &[u16],
    ) -> Result<(u16, Option<Value>), ConnectorError> {
        let secrets = self.secret_values()?;
        let (status, headers, body) = self.send(call, &json!({}), &secrets, page).await?;
        if (200..300).contains(&status) || pass.contains(&status) {
            return Ok((status, serde_json::from_str(&body).ok()));
        }
        Err(self.sweep_status_error(status, &headers, what))
    }

    /// A non-2xx answer to a sweep call, classified.
    pub(super) fn sweep_status_error(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        what: &str,
    ) -> ConnectorError {
        let p = &self.spec.name;
        let (class, message) = match status {
            429 => (
                ErrorClass::Throttled,
                format!("processor `{p}` is throttling {what} (HTTP 429)"),
            ),
            401 | 403 => (
                ErrorClass::Permanent,
                format!(
                    "credentials rejected by processor `{p}` for {what} (HTTP {status}){}",
                    self.secrets_hint()
                ),
            ),
            500..=599 => (
                ErrorClass::Transient,
                format!("processor `{p}` failed {what} (HTTP {status})"),
            ),
            _ => (
                ErrorClass::Permanent,
                format!("processor `{p}` refused {what} (HTTP {status})"),
            ),
        };
        ConnectorError {
            class,
            message,
            status: Some(status),
            retry_after: super::retry_after(headers),
        }
    }

    pub(super) async fn zendesk_sweep_list(
        &self,
        q: &SweepQuery<'_>,
    ) -> Result<Vec<SweepCandidate>, ConnectorError> {
        let status = q
            .settings
            .get("status")
            .map(String::as_str)
            .unwrap_or("closed");
        let cutoff = q
            .cutoff()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut call = self.sweep_call("GET", "/api/v2/search.json")?;
        call.query.insert(
            "query".into(),
            format!("type:ticket status:{status} updated<{cutoff}"),
        );
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut page: Option<String> = None;
        for _ in 0..super::MAX_PAGES {
            let (_, body) = self
                .sweep_send(&call, page.as_deref(), "the ticket search", &[])
                .await?;
            let body = body.ok_or_else(|| {
                ConnectorError::transient(format!(
                    "processor `{}` answered the ticket search with a body that is not JSON",
                    self.spec.name
                ))
            })?;
            let results = body
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    ConnectorError::transient(format!(
                        "processor `{}` answered the ticket search without `results`",
                        self.spec.name
                    ))
                })?;
            for r in results {
                if r.get("result_type")
                    .and_then(Value::as_str)
                    .unwrap_or("ticket")
                    != "ticket"
                {
                    continue;
                }
                if r.get("status").and_then(Value::as_str) != Some(status) {
                    continue;
                }
                let Some(id) = r.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let Some(updated) = r
                    .get("updated_at")
                    .and_then(Value::as_str)
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp_millis())
                else {
                    continue;
                };
                if updated >= q.cutoff_ms || !seen.insert(id) {
                    continue;
                }
                out.push(SweepCandidate {
                    name: format!("ticket:{id}"),
                    kind: "ticket",
                    reference: Some(id.to_string()),
                    size: None,
                    modified_ms: Some(updated),
                });
            }
            match body.get("next_page").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => page = Some(self.same_origin(next)?),
                _ => return Ok(out),
            }
        }
        Err(ConnectorError::transient(format!(
            "processor `{}`: the ticket search had more than {} pages",
            self.spec.name,
            super::MAX_PAGES
        )))
    }

    pub(super) async fn zendesk_sweep_delete(
        &self,
        items: &[SweepCandidate],
    ) -> Result<Vec<SweepOutcome>, ConnectorError> {
        let ids: Vec<&str> = items
            .iter()
            .filter_map(|c| c.reference.as_deref())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.sweep_call("DELETE", "/api/v2/tickets/destroy_many.json")?;
        call.query.insert("ids".into(), ids.join(","));
        let (status, body) = match self
            .sweep_send(&call, None, "the bulk ticket delete", &[])
            .await
        {
            Ok(r) => r,
            // Refused outright (400/404/422…): every ticket of the batch failed.
            Err(e)
                if e.class == ErrorClass::Permanent
                    && !matches!(e.status, Some(401 | 403) | None) =>
            {
                return Ok(items
                    .iter()
                    .map(|c| SweepOutcome {
                        name: c.name.clone(),
                        removed: false,
                        evidence: json!({
                            "call": "tickets/destroy_many",
                            "status": e.status,
                        }),
                    })
                    .collect());
            }
            Err(e) => return Err(e),
        };
        let job = body
            .as_ref()
            .and_then(|b| b.get("job_status"))
            .and_then(|j| j.get("id"))
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .ok_or_else(|| {
                ConnectorError::transient(format!(
                    "processor `{}` answered the bulk ticket delete (HTTP {status}) without a job_status id; nothing recorded as removed",
                    self.spec.name
                ))
            })?;
        let poll = self.sweep_call("GET", &format!("/api/v2/job_statuses/{job}.json"))?;
        let mut final_job: Option<Value> = None;
        for i in 0..JOB_POLLS {
            let (_, body) = self.sweep_send(&poll, None, "the job status", &[]).await?;
            let js = body
                .and_then(|b| b.get("job_status").cloned())
                .ok_or_else(|| {
                    ConnectorError::transient(format!(
                        "processor `{}` answered the job status without `job_status`",
                        self.spec.name
                    ))
                })?;
            match js.get("status").and_then(Value::as_str) {
                Some("completed" | "failed" | "killed") => {
                    final_job = Some(js);
                    break;
                }
                _ => {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        200 * u64::from(i + 1).min(10),
                    ))
                    .await
                }
            }
        }
        let Some(js) = final_job else {
            return Err(ConnectorError::transient(format!(
                "processor `{}`: bulk delete job {job} had not finished; its tickets stay unconfirmed until the next attempt",
                self.spec.name
            )));
        };
        let job_state = js
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut out = Vec::new();
        let mut answered = std::collections::HashSet::new();
        for r in js
            .get("results")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(id) = r.get("id").and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            }) else {
                continue;
            };
            let name = format!("ticket:{id}");
            if !items.iter().any(|c| c.name == name) {
                continue;
            }
            let ok = r.get("success").and_then(Value::as_bool) == Some(true)
                || r.get("status").and_then(Value::as_str) == Some("Deleted");
            let error = r.get("error").and_then(Value::as_str).map(|e| {
                // An error code, never free text (it could quote the ticket).
                e.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(60)
                    .collect::<String>()
            });
            let failed = !ok
                && (error.is_some() || r.get("success").and_then(Value::as_bool) == Some(false));
            if !ok && !failed {
                continue;
            }
            answered.insert(name.clone());
            out.push(SweepOutcome {
                name,
                removed: ok,
                evidence: json!({
                    "call": "tickets/destroy_many",
                    "status": status,
                    "job_status": job,
                    "job_state": job_state,
                    "success": ok,
                    "error": error,
                    "note": if ok { Some("soft-deleted: Zendesk purges deleted tickets after 30 days") } else { None },
                }),
            });
        }
        if job_state != "completed" {
            return Ok(out);
        }
        // The job finished without naming these: look each one up.
        for c in items.iter().filter(|c| !answered.contains(&c.name)) {
            let Some(id) = c.reference.as_deref() else {
                continue;
            };
            let get = self.sweep_call("GET", &format!("/api/v2/tickets/{id}.json"))?;
            let (st, _) = self
                .sweep_send(&get, None, "the ticket lookup", &[404])
                .await?;
            out.push(SweepOutcome {
                name: c.name.clone(),
                removed: st == 404,
                evidence: json!({
                    "call": "tickets/destroy_many",
                    "status": status,
                    "job_status": job,
                    "job_state": job_state,
                    "verified_by": "GET tickets/{id}",
                    "verify_status": st,
                    "note": if st == 404 { Some("soft-deleted: Zendesk purges deleted tickets after 30 days") } else { None },
                }),
            });
        }
        Ok(out)
    }
}
