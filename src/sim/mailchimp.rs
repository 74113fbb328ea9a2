//! A simulated Mailchimp Marketing API v3 (audience members).
//!
//! Basic auth with the API key as password; members keyed by the MD5 of the
//! lower-cased email; `actions/delete-permanent` answers 204, an unknown member
//! 404 with `application/problem+json`; `fail_next` makes the next calls answer
//! 503 so the demo can show a durable retry.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The simulator's state.
#[derive(Default)]
pub struct Mailchimp {
    api_key: String,
    members: Mutex<HashMap<String, HashSet<String>>>,
    /// Answer this many of the next calls with 503.
    pub fail_next: AtomicU32,
    /// Delay every answer by this many milliseconds.
    pub latency_ms: AtomicU32,
    /// Permanent deletes performed.
    pub deleted: AtomicU32,
}

/// The subscriber hash: MD5 of the lower-cased email.
pub fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.to_lowercase().as_bytes()))
}

impl Mailchimp {
    /// A simulator accepting `api_key`.
    pub fn new(api_key: &str) -> Arc<Mailchimp> {
        Arc::new(Mailchimp {
            api_key: api_key.to_string(),
            ..Default::default()
        })
    }

    /// Add a member to a list.
    pub fn add_member(&self, list: &str, email: &str) {
        self.members
            .lock()
            .expect("lock")
            .entry(list.to_string())
            .or_default()
            .insert(subscriber_hash(email));
    }

    /// Is the member on the list?
    pub fn has_member(&self, list: &str, email: &str) -> bool {
        self.members
            .lock()
            .expect("lock")
            .get(list)
            .is_some_and(|m| m.contains(&subscriber_hash(email)))
    }

    /// The router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/3.0/ping", get(ping))
            .route("/3.0/lists/{list}/members/{hash}", get(member))
            .route("/3.0/lists/{list}/members/{hash}/{sub}", get(sub_resource))
            .route(
                "/3.0/lists/{list}/members/{hash}/actions/delete-permanent",
                post(delete_permanent),
            )
            .with_state(Arc::clone(self))
    }

    async fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        let ms = self.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|up| up.split_once(':').is_some_and(|(_, p)| p == self.api_key));
        if !ok {
            return Some(problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            ));
        }
        if self.fail_next.load(Ordering::Relaxed) > 0 {
            self.fail_next.fetch_sub(1, Ordering::Relaxed);
            return Some(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "Mailchimp is temporarily unavailable.",
            ));
        }
        None
    }
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        Json(json!({"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title, "status": status.as_u16(), "detail": detail, "instance": uuid::Uuid::new_v4().to_string()})),
    )
        .into_response()
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Resource Not Found",
        "The requested resource could not be found.",
    )
}

async fn ping(State(s): State<Arc<Mailchimp>>, headers: HeaderMap) -> Response {
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    Json(json!({"health_status": "Everything's Chimpy!"})).into_response()
}

async fn member(
    State(s): State<Arc<Mailchimp>>,
    headers: HeaderMap,
    Path((list, hash)): Path<(String, String)>,
) -> Response {
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    let found = s
        .members
        .lock()
        .expect("lock")
        .get(&list)
        .is_some_and(|m| m.contains(&hash));
    if !found {
        return not_found();
    }
    Json(json!({"id": hash, "list_id": list, "status": "subscribed", "email_type": "html", "merge_fields": {}})).into_response()
}

async fn sub_resource(
    State(s): State<Arc<Mailchimp>>,
    headers: HeaderMap,
    Path((list, hash, sub)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    let found = s
        .members
        .lock()
        .expect("lock")
        .get(&list)
        .is_some_and(|m| m.contains(&hash));
    if !found {
        return not_found();
    }
    Json(json!({sub.replace('-', "_"): [], "email_id": hash, "list_id": list, "total_items": 0}))
        .into_response()
}

async fn delete_permanent(
    State(s): State<Arc<Mailchimp>>,
    headers: HeaderMap,
    Path((list, hash)): Path<(String, String)>,
) -> Response {
    if let Some(r) = s.gate(&headers).await {
        return r;
    }
    let removed = s
        .members
        .lock()
        .expect("lock")
        .get_mut(&list)
        .is_some_and(|m| m.remove(&hash));
    if !removed {
        return not_found();
    }
    s.deleted.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}
