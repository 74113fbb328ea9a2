//! `POST /v1/requests`: a request from the company's own privacy form.
//!
//! Why it is shaped like this: the form's backend is on the public internet,
//! so the body is signed (`Lethe-Signature`, see `signature.rs`) and checked
//! *before* it is parsed; webhook senders redeliver on any doubt, so the
//! form's `external_id` makes the call idempotent (`Engine::submit` returns the
//! existing request for a known id if it is the same request, and answers 409
//! naming `external_id` if the id is reused for a different one; it handles the
//! insert race the same way); and the body
//! is parsed strictly — an unknown field is an error, not silently ignored —
//! because a misspelt `identities.emial` must not file a request for nobody.
//! Everything is validated before the engine is called: a refused request
//! writes nothing.

use super::error::{parse_json, ApiError};
use super::{signature, AppState};
use crate::domain::{RequestKind, Subject};
use crate::engine::SubmitOptions;
use crate::view::RequestView;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;

/// The webhook body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `erasure`, `export`, `objection` or `rectification`.
    pub kind: RequestKind,
    /// At least one of email, phone, customer_id (name alone identifies nobody).
    pub identities: Subject,
    /// The form's own id for this submission: the idempotency key.
    pub external_id: String,
    /// A workflow other than the kind's default.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Where status callbacks go (our `lethe` format, signed like the webhook).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// A rectification's new values: `{"email": …, "name": …}` (fields email,
    /// phone, name, customer_id). Only with `kind: "rectification"`.
    #[serde(default)]
    pub set: Option<std::collections::BTreeMap<String, String>>,
    /// `false`: the form has not verified the subject yet; nothing runs
    /// until `lethe verify` or `POST /v1/requests/{id}/verify`. Absent: verified.
    #[serde(default)]
    pub verified: Option<bool>,
}

/// Read the body, mapping the 64 KiB limit to a JSON 413.
pub fn body_or_413(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
                format!("body larger than {} KiB", super::BODY_LIMIT / 1024),
            )
        } else {
            ApiError::bad_request("", format!("cannot read the body: {e}"))
        }
    })
}

/// The rule for an external id (webhook, OpenDSR, `--external-id`): 1–200
/// characters, not blank, no control characters. Returns what is wrong.
pub fn external_id_problem(id: &str) -> Option<&'static str> {
    if id.trim().is_empty() {
        Some("empty")
    } else if id.chars().count() > 200 {
        Some("longer than 200 characters")
    } else if id.chars().any(|c| c.is_control()) {
        Some("contains control characters")
    } else {
        None
    }
}

/// Check an external id: 1–200 printable characters.
pub fn check_external_id(field: &str, id: &str) -> Result<(), ApiError> {
    match external_id_problem(id) {
        Some(why) => Err(ApiError::invalid(field, why)),
        None => Ok(()),
    }
}

/// Check a callback URL: https to a public address, or an origin listed in
/// `[intake] callback_allow` (see `target.rs`).
pub fn check_callback_url(
    config: &crate::config::Config,
    field: &str,
    u: &str,
) -> Result<(), ApiError> {
    let allow = super::target::AllowList::parse(&config.intake.callback_allow).unwrap_or_default();
    super::target::check_url(u, &allow)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(field, e))
}

/// The handler.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_413(body)?;
    let header = headers
        .get(signature::HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    signature::verify(
        st.secrets.webhook.expose_secret(),
        header,
        &body,
        Utc::now().timestamp(),
    )
    .map_err(|e| ApiError::unauthorized("Lethe-Signature", e.to_string()))?;
    let req: WebhookRequest = parse_json(&body)?;
    req.identities
        .validate()
        .map_err(|e| ApiError::invalid("identities", e.to_string()))?;
    check_external_id("external_id", &req.external_id)?;
    let changes = match (&req.set, req.kind) {
        (Some(set), RequestKind::Rectification) => Some(
            crate::domain::Subject::changes(set.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| ApiError::invalid("set", e))?,
        ),
        (None, RequestKind::Rectification) => {
            return Err(ApiError::invalid(
                "set",
                "a rectification needs `set`: the new values, e.g. {\"email\": …}".to_string(),
            ))
        }
        (Some(_), kind) => {
            return Err(ApiError::invalid(
                "set",
                format!("only a rectification has new values, not a {kind} request"),
            ))
        }
        (None, _) => None,
    };
    if let Some(u) = &req.callback_url {
        check_callback_url(&st.engine.config, "callback_url", u)?;
    }
    st.engine
        .config
        .workflows
        .pick(req.kind, req.workflow.as_deref())
        .map_err(|e| ApiError::invalid("workflow", e))?;
    let masked = req.identities.masked();
    let sub = st
        .engine
        .submit(
            req.kind,
            req.identities,
            SubmitOptions {
                workflow: req.workflow,
                external_id: Some(req.external_id),
                callback_url: req.callback_url,
                changes,
                unverified: req.verified == Some(false),
                follows: None,
            },
        )
        .await?;
    tracing::info!(
        request = %sub.request.id,
        subject = %masked,
        created = sub.created,
        "webhook request accepted"
    );
    let steps = st.engine.store.steps(&sub.request.id).await?;
    let mut view = RequestView::new(&sub.request, Some(&steps), Utc::now());
    view.warnings = sub.warnings.clone();
    let code = if sub.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(view)).into_response())
}

/// The body of `POST /v1/requests/{id}/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// How the subject was verified (`email link`, `id document`…).
    pub method: String,
    /// Optional note (kept in the audit event).
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/requests/{id}/verify`: signed like intake (`Lethe-Signature`);
/// marks an unverified request verified. 401 on a bad signature (nothing
/// changes), 404 for an unknown id, 409 when it is already verified.
pub async fn verify(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_413(body)?;
    let header = headers
        .get(signature::HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    signature::verify(
        st.secrets.webhook.expose_secret(),
        header,
        &body,
        Utc::now().timestamp(),
    )
    .map_err(|e| ApiError::unauthorized("Lethe-Signature", e.to_string()))?;
    let b: VerifyBody = parse_json(&body)?;
    if b.method.trim().is_empty() {
        return Err(ApiError::invalid("method", "empty"));
    }
    let req = st
        .engine
        .store
        .get_request(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("id", format!("no request `{id}`")))?;
    if req.verified {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "id",
            format!("request `{id}` is already verified"),
        ));
    }
    let req = st
        .engine
        .verify(&id, &b.method, b.note.as_deref(), "webhook")
        .await?;
    tracing::info!(request = %req.id, "request verified by webhook");
    let steps = st.engine.store.steps(&req.id).await?;
    let view = RequestView::new(&req, Some(&steps), Utc::now());
    Ok((StatusCode::OK, Json(view)).into_response())
}
