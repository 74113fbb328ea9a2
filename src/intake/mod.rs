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
pub mod target;
pub mod webhook;

use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use std::future::Future;
use std::sync::Arc;

/// Bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The intake's secrets, read from the environment variables that `[intake]`
/// names. Held in `secrecy` types (zeroized on drop, never Debug-printed);
/// the Ed25519 key zeroizes itself on drop (`ed25519-dalek`'s `zeroize`).
pub struct Secrets {
    /// HMAC key of inbound webhooks' `Lethe-Signature`.
    pub webhook: SecretSlice<u8>,
    /// The API bearer token.
    pub api_token: SecretString,
    /// Signs outgoing status callbacks (never the webhook secret: a callback
    /// receiver must not be able to forge intake requests).
    pub callback: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

fn read_env(
    config: &Config,
    key: &str,
    var: &str,
    example: &str,
) -> Result<SecretString, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim())),
        _ => Err(ConfigError {
            file: config.path.display().to_string(),
            key: key.to_string(),
            reason: format!(
                "environment variable {var} is not set (the HTTP intake needs it; e.g. export {var}=\"$({example})\")"
            ),
        }),
    }
}

/// The callback signing key from `[intake] callback_signing_key_env`: 32
/// bytes, base64 (an Ed25519 seed). Missing or malformed is a config error.
pub fn callback_key(config: &Config) -> Result<ed25519_dalek::SigningKey, ConfigError> {
    use base64::Engine as _;
    let var = &config.intake.callback_signing_key_env;
    let key = "intake.callback_signing_key_env";
    let text = read_env(config, key, var, "openssl rand -base64 32")?;
    let bytes = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.expose_secret().as_bytes())
            .unwrap_or_default(),
    );
    let seed: zeroize::Zeroizing<[u8; 32]> =
        zeroize::Zeroizing::new(bytes.as_slice().try_into().map_err(|_| ConfigError {
            file: config.path.display().to_string(),
            key: key.to_string(),
            reason: format!(
                "environment variable {var} is not 32 bytes of base64 (the Ed25519 key that signs status callbacks; generate one with: openssl rand -base64 32)"
            ),
        })?);
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

impl Secrets {
    /// Read the secrets; a missing or empty one is a config error naming the key and the variable.
    pub fn from_env(config: &Config) -> Result<Secrets, ConfigError> {
        let webhook = read_env(
            config,
            "intake.webhook_secret_env",
            &config.intake.webhook_secret_env,
            "openssl rand -hex 32",
        )?;
        Ok(Secrets {
            webhook: SecretSlice::from(webhook.expose_secret().as_bytes().to_vec()),
            api_token: read_env(
                config,
                "intake.api_token_env",
                &config.intake.api_token_env,
                "openssl rand -hex 32",
            )?,
            callback: callback_key(config)?,
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

/// All routes, with the 64 KiB body limit; the web dashboard (`crate::web`)
/// is mounted beside them, outside the JSON error wrapping (its errors are pages).
pub fn router(state: AppState) -> Router {
    let dashboard = crate::web::router(&state);
    Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/requests", post(webhook::create).get(api::list))
        .route("/v1/requests/{id}", get(api::show))
        .route("/v1/requests/{id}/report", get(api::report))
        .route("/v1/requests/{id}/verify", post(webhook::verify))
        .route("/opendsr/v1/discovery", get(opendsr::discovery))
        .route("/opendsr/v1/requests", post(opendsr::create))
        .route(
            "/opendsr/v1/requests/{id}",
            get(opendsr::show).delete(opendsr::cancel),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .merge(dashboard)
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
