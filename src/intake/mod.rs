//! The HTTP intake that `lethe daemon` serves beside the worker.
//!
//! Most requests do not come from an admin's terminal but from a privacy form
//! on the company's website (a signed webhook), or from a controller that
//! speaks OpenDSR; people and scripts then follow them through an
//! authenticated API, and monitoring scrapes `/metrics`. This module only
//! translates HTTP into engine calls: validation happens at the edge (nothing
//! is written for a refused request), every state change still goes through
//! the engine and the store, and status callbacks leave through the store's
//! outbox (`outbox.rs`), never straight from a handler.
//!
//! One concern per module: `signature` (the HMAC header), `webhook` (intake
//! forms), `api` (bearer-token reads), `opendsr` (the OpenDSR 2.0 endpoints),
//! `metrics` (`/healthz`, `/metrics`), `outbox` (callback delivery), `error`
//! (the one JSON error shape).

pub mod api;
pub mod error;
pub mod metrics;
pub mod opendsr;
pub mod outbox;
pub mod signature;
pub mod webhook;

use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// Bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The intake's secrets, read from the environment variables that `[intake]` names.
#[derive(Clone)]
pub struct Secrets {
    /// HMAC key of `Lethe-Signature` (webhooks in, callbacks out).
    pub webhook: Vec<u8>,
    /// The API bearer token.
    pub api_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

impl Secrets {
    /// Read both secrets; a missing or empty one is a config error naming the key and the variable.
    pub fn from_env(config: &Config) -> Result<Secrets, ConfigError> {
        let read = |key: &str, var: &str| -> Result<String, ConfigError> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(v),
                _ => Err(ConfigError {
                    file: config.path.display().to_string(),
                    key: key.to_string(),
                    reason: format!(
                        "environment variable {var} is not set (the HTTP intake needs it; e.g. export {var}=\"$(openssl rand -hex 32)\")"
                    ),
                }),
            }
        };
        Ok(Secrets {
            webhook: read(
                "intake.webhook_secret_env",
                &config.intake.webhook_secret_env,
            )?
            .trim()
            .as_bytes()
            .to_vec(),
            api_token: read("intake.api_token_env", &config.intake.api_token_env)?
                .trim()
                .to_string(),
        })
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The engine (and through it the store and config).
    pub engine: Arc<Engine>,
    /// The secrets.
    pub secrets: Arc<Secrets>,
}

/// All routes, with the 64 KiB body limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/requests", post(webhook::create).get(api::list))
        .route("/v1/requests/{id}", get(api::show))
        .route("/v1/requests/{id}/report", get(api::report))
        .route("/opendsr/v1/discovery", get(opendsr::discovery))
        .route("/opendsr/v1/requests", post(opendsr::create))
        .route(
            "/opendsr/v1/requests/{id}",
            get(opendsr::show).delete(opendsr::cancel),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every 4xx is JSON: axum's own refusals (405, an undecodable path or query)
/// are plain text, so they are rewrapped in the one error shape here.
async fn json_errors(res: axum::response::Response) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    let status = res.status();
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return res;
    }
    let text = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    error::ApiError::new(status, "", reason).into_response()
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found("", format!("no endpoint at {}", uri.path()))
}

/// Serve until `shutdown` resolves; then stop accepting and let in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
