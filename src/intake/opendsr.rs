//! OpenDSR 2.0 (formerly OpenGDPR): the processor side of the protocol.
//!
//! Why: controllers (CDPs, consent platforms) send data-subject requests to
//! their processors over OpenDSR; speaking it lets one lethe take requests from
//! them without a custom integration. What maps to what:
//!
//! - `subject_request_id` (the controller's UUID) is stored as the request's
//!   `external_id` as `opendsr:<uuid>`, so a repeated POST returns the same
//!   request (`Engine::submit` is idempotent on it); the same id with another
//!   type or other identities is a 409 naming `subject_request_id`.
//! - `subject_request_type`: `erasure` → erasure; `access`, `portability` → export.
//! - identities: `email`, `controller_customer_id` and our own `phone_number`
//!   (OpenDSR has no phone type), format `raw` only (a hashed email cannot be
//!   erased at a processor that needs the address). Identity types we do not
//!   support are ignored, as long as one supported identity remains.
//! - status, from our derived status and whether any step has started:
//!   `cancelled` → cancelled; `completed` and `completed_with_exceptions` →
//!   completed (the answer to the subject can go out; held data is erased when
//!   its hold ends); `failed` → in_progress (OpenDSR has no failure: a failed
//!   step waits for `lethe retry`); `in_progress` and `waiting` → pending while
//!   no step has been claimed yet (so it can still be cancelled), in_progress
//!   after (a soft-deleted step waiting out its window has acted).
//! - `DELETE` cancels only while `pending` (the v2 rule) → 202.
//! - Callbacks go to every `status_callback_urls` entry through the outbox,
//!   signed with `Lethe-Signature` (see `outbox.rs`). OpenDSR's own
//!   `X-OpenDSR-Signature` needs a CA-issued certificate, which a
//!   self-hosted lethe does not have; `processor_certificate` is therefore
//!   absent from discovery.
//!
//! OpenDSR 2.0 knows `erasure`, `access` and `portability` only: those are
//! advertised and mapped (access and portability to an export); `objection`
//! and `rectification` are lethe request kinds with no OpenDSR type, refused
//! with a 422 naming the type (file them through `POST /v1/requests`).
//!
//! The endpoints need the API bearer token, except discovery. Unknown
//! top-level fields are ignored here (a newer controller may send more); the
//! fields we read are checked strictly.

use super::api::require_token;
use super::error::{parse_json, ApiError};
use super::webhook::{body_or_413, check_callback_url};
use super::AppState;
use crate::domain::{CustomerId, Email, Phone, RequestKind, RequestStatus, Subject};
use crate::engine::SubmitOptions;
use crate::store::{from_ms, Callback, RequestRow};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// The `external_id` prefix of OpenDSR requests.
pub const PREFIX: &str = "opendsr:";

/// The API version we speak.
pub const API_VERSION: &str = "2.0";

/// One `subject_identities[]` entry.
#[derive(Debug, Deserialize)]
pub struct Identity {
    /// `email`, `controller_customer_id`, `phone_number`, …
    pub identity_type: String,
    /// The value.
    pub identity_value: String,
    /// `raw` (others are refused).
    #[serde(default = "raw")]
    pub identity_format: String,
}

fn raw() -> String {
    "raw".into()
}

/// The create body (fields we read).
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    /// The controller's lowercase UUID v4.
    pub subject_request_id: String,
    /// `erasure`, `access` or `portability`.
    pub subject_request_type: String,
    /// `gdpr` or `ccpa`.
    #[serde(default)]
    pub regulation: Option<String>,
    /// When the subject made the request (RFC 3339).
    pub submitted_time: String,
    /// The subject's identities.
    pub subject_identities: Vec<Identity>,
    /// The version the controller speaks.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Where status callbacks go.
    #[serde(default)]
    pub status_callback_urls: Vec<String>,
    /// Extensions keyed by processor domain (not read).
    #[serde(default)]
    pub extensions: Option<Value>,
    /// lethe's extension: `false` when the controller has not verified the
    /// subject yet (nothing runs until verified). Absent: verified.
    #[serde(default)]
    pub verified: Option<bool>,
}

/// Map our status to OpenDSR's four.
pub fn opendsr_status(status: RequestStatus, started: bool) -> &'static str {
    match status {
        RequestStatus::Cancelled => "cancelled",
        RequestStatus::Completed | RequestStatus::CompletedWithExceptions => "completed",
        RequestStatus::Failed => "in_progress",
        RequestStatus::InProgress | RequestStatus::Waiting if started => "in_progress",
        RequestStatus::InProgress | RequestStatus::Waiting => "pending",
    }
}

fn rfc3339(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `GET /opendsr/v1/discovery`.
pub async fn discovery() -> Json<Value> {
    Json(json!({
        "api_version": API_VERSION,
        "supported_identities": [
            {"identity_type": "email", "identity_format": "raw"},
            {"identity_type": "controller_customer_id", "identity_format": "raw"},
            {"identity_type": "phone_number", "identity_format": "raw"},
        ],
        "supported_subject_request_types": ["erasure", "access", "portability"],
    }))
}

fn check_uuid(id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        Ok(_) => Err(ApiError::invalid(
            "subject_request_id",
            "must be a lowercase hyphenated UUID",
        )),
        Err(e) => Err(ApiError::invalid(
            "subject_request_id",
            format!("not a UUID: {e}"),
        )),
    }
}

fn subject_from(identities: &[Identity]) -> Result<Subject, ApiError> {
    let mut s = Subject::default();
    for (i, id) in identities.iter().enumerate() {
        let field = |f: &str| format!("subject_identities[{i}].{f}");
        let known = matches!(
            id.identity_type.as_str(),
            "email" | "controller_customer_id" | "phone_number"
        );
        if !known {
            continue;
        }
        if id.identity_format != "raw" {
            return Err(ApiError::invalid(
                field("identity_format"),
                format!(
                    "`{}` is not supported: only `raw` (a hashed identity cannot be erased at processors that need the value)",
                    id.identity_format
                ),
            ));
        }
        let v = id.identity_value.as_str();
        let bad = |e: crate::domain::IdentityError| {
            ApiError::invalid(field("identity_value"), e.to_string())
        };
        match id.identity_type.as_str() {
            "email" => s.email = Some(Email::parse(v).map_err(bad)?),
            "phone_number" => s.phone = Some(Phone::parse(v).map_err(bad)?),
            _ => s.customer_id = Some(CustomerId::parse(v).map_err(bad)?),
        }
    }
    s.validate().map_err(|_| {
        ApiError::invalid(
            "subject_identities",
            "no supported identity: send one of email, controller_customer_id, phone_number (format raw)",
        )
    })?;
    Ok(s)
}

/// The status document (GET and callbacks share its fields).
pub fn status_doc(st: &AppState, req: &RequestRow, status: &str) -> Value {
    json!({
        "api_version": API_VERSION,
        "controller_id": st.engine.config.intake.opendsr_controller_id,
        "expected_completion_time": rfc3339(req.due_at),
        "subject_request_id": req.external_id.as_deref().and_then(|e| e.strip_prefix(PREFIX)),
        "request_status": status,
    })
}

/// `POST /opendsr/v1/requests`.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_token(&st, &headers)?;
    let body = body_or_413(body)?;
    let req: CreateRequest = parse_json(&body)?;
    check_uuid(&req.subject_request_id)?;
    let kind = match req.subject_request_type.as_str() {
        "erasure" => RequestKind::Erasure,
        "access" | "portability" => RequestKind::Export,
        t @ ("objection" | "object" | "rectification" | "rectify" | "restriction") => {
            return Err(ApiError::invalid(
                "subject_request_type",
                format!("unknown type `{t}` (expected erasure, access or portability: OpenDSR 2.0 has no objection or rectification type; file those through POST /v1/requests or `lethe request object|rectify`)"),
            ))
        }
        other => {
            return Err(ApiError::invalid(
                "subject_request_type",
                format!("unknown type `{other}` (expected erasure, access or portability)"),
            ))
        }
    };
    if let Some(r) = &req.regulation {
        if r != "gdpr" && r != "ccpa" {
            return Err(ApiError::invalid(
                "regulation",
                format!("unknown regulation `{r}` (expected gdpr or ccpa)"),
            ));
        }
    }
    if let Some(v) = &req.api_version {
        if !v.starts_with("2.") && v != "2" {
            return Err(ApiError::invalid(
                "api_version",
                format!("`{v}` is not supported (this processor speaks {API_VERSION})"),
            ));
        }
    }
    chrono::DateTime::parse_from_rfc3339(&req.submitted_time)
        .map_err(|e| ApiError::invalid("submitted_time", format!("not RFC 3339: {e}")))?;
    let subject = subject_from(&req.subject_identities)?;
    for (i, u) in req.status_callback_urls.iter().enumerate() {
        check_callback_url(&st.engine.config, &format!("status_callback_urls[{i}]"), u)?;
    }
    let mut urls = req.status_callback_urls.clone();
    urls.dedup();
    let callbacks = urls
        .into_iter()
        .map(|url| Callback {
            url,
            protocol: "opendsr".into(),
        })
        .collect();
    let masked = subject.masked();
    let sub = st
        .engine
        .submit_with_callbacks(
            kind,
            subject,
            SubmitOptions {
                workflow: None,
                external_id: Some(format!("{PREFIX}{}", req.subject_request_id)),
                callback_url: None,
                changes: None,
                unverified: req.verified == Some(false),
                follows: None,
            },
            callbacks,
        )
        .await
        .map_err(|e| {
            // The controller knows its `external_id` as `subject_request_id`.
            let mut e = ApiError::from(e);
            if e.field == "external_id" {
                e.field = "subject_request_id".into();
            }
            e
        })?;
    tracing::info!(request = %sub.request.id, subject = %masked, created = sub.created, "OpenDSR request accepted");
    let r = &sub.request;
    let mut doc = json!({
        "controller_id": st.engine.config.intake.opendsr_controller_id,
        "expected_completion_time": rfc3339(r.due_at),
        "received_time": rfc3339(r.received_at),
        "encoded_request": base64::engine::general_purpose::STANDARD.encode(&body),
        "subject_request_id": req.subject_request_id,
    });
    if !sub.warnings.is_empty() {
        doc["warnings"] = json!(sub.warnings);
    }
    let code = if sub.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(doc)).into_response())
}

async fn find(st: &AppState, id: &str) -> Result<(RequestRow, bool), ApiError> {
    let req = st
        .engine
        .store
        .find_by_external_id(&format!("{PREFIX}{id}"))
        .await?
        .ok_or_else(|| {
            ApiError::not_found("subject_request_id", format!("no OpenDSR request `{id}`"))
        })?;
    let steps = st.engine.store.steps(&req.id).await?;
    let started = steps.iter().any(|s| s.started_at.is_some());
    Ok((req, started))
}

/// `GET /opendsr/v1/requests/{id}`.
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_token(&st, &headers)?;
    let (req, started) = find(&st, &id).await?;
    Ok(Json(status_doc(
        &st,
        &req,
        opendsr_status(req.status, started),
    )))
}

/// `DELETE /opendsr/v1/requests/{id}`: cancel while pending → 202.
pub async fn cancel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_token(&st, &headers)?;
    let (req, started) = find(&st, &id).await?;
    let status = opendsr_status(req.status, started);
    if status == "cancelled" {
        return Ok((StatusCode::ACCEPTED, Json(status_doc(&st, &req, status))).into_response());
    }
    if status != "pending" {
        return Err(ApiError::bad_request(
            "subject_request_id",
            format!("the request is {status}; OpenDSR 2.0 allows cancelling only while pending"),
        ));
    }
    st.engine.cancel(&req.id).await?;
    let req = st.engine.request(&req.id).await?;
    tracing::info!(request = %req.id, "OpenDSR request cancelled");
    Ok((
        StatusCode::ACCEPTED,
        Json(status_doc(&st, &req, opendsr_status(req.status, started))),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_statuses_map_to_opendsrs_four() {
        use RequestStatus as S;
        assert_eq!(opendsr_status(S::InProgress, false), "pending");
        assert_eq!(opendsr_status(S::Waiting, false), "pending");
        assert_eq!(opendsr_status(S::InProgress, true), "in_progress");
        assert_eq!(opendsr_status(S::Waiting, true), "in_progress");
        assert_eq!(opendsr_status(S::Failed, true), "in_progress");
        assert_eq!(opendsr_status(S::Completed, true), "completed");
        assert_eq!(
            opendsr_status(S::CompletedWithExceptions, false),
            "completed"
        );
        assert_eq!(opendsr_status(S::Cancelled, false), "cancelled");
        assert_eq!(opendsr_status(S::Cancelled, true), "cancelled");
    }

    #[test]
    fn unsupported_identity_types_are_ignored_but_one_supported_is_needed() {
        let id = |t: &str, v: &str| Identity {
            identity_type: t.into(),
            identity_value: v.into(),
            identity_format: "raw".into(),
        };
        let s = subject_from(&[
            id("ios_advertising_id", "6D92078A-8246-4BA4-AE5B-76104861E7DC"),
            id("controller_customer_id", "cus_123"),
        ])
        .unwrap();
        assert_eq!(
            s.customer_id.map(|c| c.expose().to_string()),
            Some("cus_123".into())
        );
        let e = subject_from(&[id("ios_advertising_id", "x")]).unwrap_err();
        assert_eq!(e.field, "subject_identities");
        let mut hashed = id("email", "5f4dcc3b5aa765d61d8327deb882cf99");
        hashed.identity_format = "md5".into();
        let e = subject_from(&[hashed]).unwrap_err();
        assert_eq!(e.field, "subject_identities[0].identity_format");
    }
}
