//! The read API: `GET /v1/requests/{id}`, `…/{id}/report`, `GET /v1/requests?status=…`.
//!
//! Why a bearer token and not the webhook signature: these are read by people
//! and scripts that hold a credential, not by a form that signs one body.
//! The token is compared in constant time (`subtle`), so response timing does
//! not reveal how much of a guess was right. The views are the same as the
//! CLI's `--json` (one contract); subjects are masked there already.

use super::error::ApiError;
use super::AppState;
use crate::domain::RequestStatus;
use crate::store::RequestFilter;
use crate::view::RequestView;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// Require `Authorization: Bearer <token>`.
pub fn require_token(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "Authorization",
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization", "not a bearer token"))?;
    let ok: bool = given
        .trim()
        .as_bytes()
        .ct_eq(st.secrets.api_token.expose_secret().as_bytes())
        .into();
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "Authorization",
            "wrong bearer token",
        ))
    }
}

/// `GET /v1/requests/{id}`: the same document as `lethe status ID --json`.
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    require_token(&st, &headers)?;
    Ok(Json(status_view(&st, &id).await?))
}

async fn status_view(st: &AppState, id: &str) -> Result<RequestView, ApiError> {
    let store = &st.engine.store;
    let req = store
        .get_request(id)
        .await?
        .ok_or_else(|| ApiError::not_found("id", format!("no request with id `{id}`")))?;
    let steps = store.steps(&req.id).await?;
    let phases = crate::view::phase_names(&st.engine.config, &req.workflow);
    Ok(RequestView::with_phases(
        &req,
        Some(&steps),
        Utc::now(),
        &phases,
    ))
}

/// `GET /v1/requests/{id}/report`: the status view plus the request's audit
/// events (kind and time; details stay in the store). A stand-in until the
/// certificate in `report/` exists; it is built in one function so the handler
/// can switch to that.
pub async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_token(&st, &headers)?;
    Ok(Json(report_json(&st, &id).await?))
}

async fn report_json(st: &AppState, id: &str) -> Result<Value, ApiError> {
    let view = status_view(st, id).await?;
    let events = st.engine.store.request_events(&view.id).await?;
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "chain": e.chain,
                "chain_seq": e.chain_seq,
                "at": crate::store::rfc3339(e.at),
                "kind": e.kind,
                "hash": e.hash,
            })
        })
        .collect();
    // The certificate of `lethe report ID --format json` (masked identities,
    // per-processor evidence, holds, windows, the audit head).
    let certificate = crate::report::certificate::build(
        st.engine.store.as_ref(),
        &view.id,
        crate::store::ms(chrono::Utc::now()),
    )
    .await?;
    Ok(json!({"request": view, "events": events, "certificate": certificate}))
}

/// `GET /v1/requests?status=S`: like `lethe list --json`. Unknown parameters are refused.
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<RequestView>>, ApiError> {
    require_token(&st, &headers)?;
    let mut filter = RequestFilter::default();
    for (k, v) in &q {
        match k.as_str() {
            "status" => {
                filter.status = Some(
                    v.parse::<RequestStatus>()
                        .map_err(|e| ApiError::bad_request("status", e))?,
                )
            }
            "limit" => {
                filter.limit = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ApiError::bad_request("limit", "not a positive integer"))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(
                    other,
                    "unknown query parameter (known: status, limit)",
                ))
            }
        }
    }
    let now = Utc::now();
    let rows = st.engine.store.list_requests(&filter).await?;
    Ok(Json(
        rows.iter()
            .map(|r| RequestView::new(r, None, now))
            .collect(),
    ))
}
