//! The web dashboard that `lethe daemon` serves under `/dashboard` beside the
//! HTTP intake: a privacy officer sees where requests stand and acts on them
//! without a terminal.
//!
//! Server-rendered HTML from minijinja templates (auto-escaped), plain forms,
//! no JavaScript and no external assets: each page is one response with its
//! CSS and SVG charts inline, so it works offline and under a strict
//! Content-Security-Policy. Reads go through the same views as the CLI
//! (`view::RequestView`, `report::certificate`, `report::period`); every
//! button calls the same engine function as its CLI verb, so it writes the
//! same audited events. Identities are only ever shown masked (the stored
//! masked form): no page has access to a sealed identity at all.
//!
//! One concern per module: `auth` (password, sessions, CSRF), `pages` (the
//! GET pages and downloads), `actions` (the POST forms).

pub mod actions;
pub mod auth;
pub mod pages;

use crate::engine::{Engine, EngineError};
use crate::intake::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use secrecy::ExposeSecret;
use std::sync::Arc;

/// What every dashboard handler sees.
#[derive(Clone)]
pub struct Dash {
    /// The engine (and through it the store and config).
    pub engine: Arc<Engine>,
    /// Credentials, sessions and CSRF.
    pub auth: Arc<auth::Auth>,
    templates: Arc<Environment<'static>>,
}

const STYLE: &str = include_str!("templates/style.css");

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("requests.html", include_str!("templates/requests.html")),
        ("request.html", include_str!("templates/request.html")),
        ("processors.html", include_str!("templates/processors.html")),
        ("reports.html", include_str!("templates/reports.html")),
    ] {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("the built-in template {name} does not parse: {e}"));
    }
    env
}

impl Dash {
    /// The dashboard's state, from the intake's: the API token also logs in.
    pub fn new(app: &AppState) -> Dash {
        let cfg = &app.engine.config.dashboard;
        let key = cfg
            .session_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| k.len() >= 32)
            .map(|k| k.into_bytes());
        if cfg.session_key_env.is_some() && key.is_none() {
            tracing::warn!(
                "dashboard.session_key_env names an unset or short (< 32 bytes) variable: sessions are signed with a random key"
            );
        }
        let ttl = i64::try_from(cfg.session_ttl.get().as_secs()).unwrap_or(i64::MAX / 2);
        Dash {
            engine: Arc::clone(&app.engine),
            auth: Arc::new(auth::Auth::new(
                cfg.password_hash.clone(),
                secrecy::SecretString::from(app.secrets.api_token.expose_secret().to_string()),
                key,
                ttl,
                cfg.secure_cookie,
            )),
            templates: Arc::new(templates()),
        }
    }

    /// Render a template with the page chrome's values added.
    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, WebError> {
        let ctx = minijinja::context! {
            style => minijinja::Value::from_safe_string(STYLE.to_string()),
            ..ctx
        };
        self.templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| {
                tracing::error!(template = name, error = %e, "dashboard template failed");
                WebError::Internal
            })
    }
}

/// The dashboard's routes (mounted by the intake router).
pub fn router(app: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::to("/dashboard/requests") }),
        )
        .route(
            "/dashboard/",
            get(|| async { Redirect::to("/dashboard/requests") }),
        )
        .route(
            "/dashboard/login",
            get(pages::login_page).post(actions::login),
        )
        .route("/dashboard/logout", post(actions::logout))
        .route("/dashboard/requests", get(pages::requests))
        .route("/dashboard/requests/{id}", get(pages::request))
        .route(
            "/dashboard/requests/{id}/certificate/{format}",
            get(pages::certificate),
        )
        .route("/dashboard/requests/{id}/retry", post(actions::retry))
        .route("/dashboard/requests/{id}/confirm", post(actions::confirm))
        .route("/dashboard/requests/{id}/extend", post(actions::extend))
        .route("/dashboard/requests/{id}/cancel", post(actions::cancel))
        .route("/dashboard/holds/{id}/release", post(actions::release_hold))
        .route("/dashboard/processors", get(pages::processors))
        .route("/dashboard/reports", get(pages::reports))
        .route(
            "/dashboard/reports/period/{format}",
            get(pages::period_download),
        )
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Dash::new(app))
}

/// No caching (pages show live state and CSRF tokens), no framing, and a CSP
/// that allows nothing but inline styles and the page's own forms.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    res
}

/// Why a dashboard request was not served. Messages never carry an identity.
#[derive(Debug)]
pub enum WebError {
    /// No valid session: to the login page.
    LoginRequired,
    /// A form without this session's CSRF token.
    Forged,
    /// Bad input (a filter, a form field).
    BadRequest(String),
    /// Refused by the engine (already extended, closed…).
    Refused(String),
    /// No such thing.
    NotFound(String),
    /// The store could not be reached.
    Unavailable,
    /// A bug (a template failed).
    Internal,
}

impl From<EngineError> for WebError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => WebError::Refused(m),
            EngineError::NoRequest(id) => WebError::NotFound(format!("no request with id `{id}`")),
            EngineError::Conflict(_) => {
                WebError::Refused("the request changed meanwhile; reload and try again".into())
            }
            EngineError::ExternalIdConflict(c) => WebError::Refused(c.to_string()),
            EngineError::Store(s) => s.into(),
            EngineError::Internal(m) => {
                tracing::error!(error = %m, "dashboard: internal error");
                WebError::Internal
            }
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "dashboard: store error");
        WebError::Unavailable
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            WebError::LoginRequired => {
                return Redirect::to("/dashboard/login").into_response();
            }
            WebError::Forged => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form's security token is missing or wrong (an old page, or a form sent from another site). Nothing was changed. Reload the page and try again.".to_string(),
            ),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            WebError::Refused(m) => (StatusCode::CONFLICT, "Not done", m),
            WebError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            WebError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                "The store could not be reached; see the daemon's log.".to_string(),
            ),
            WebError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "The page could not be rendered; see the daemon's log.".to_string(),
            ),
        };
        tracing::info!(status = status.as_u16(), "dashboard refused a request");
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · lethe</title>\
             <style>{STYLE}</style></head><body><main><h1>{t}</h1><p class=\"error\">{m}</p>\
             <p><a href=\"/dashboard/requests\">Back to the requests</a></p></main></body></html>",
            t = crate::report::escape(title),
            m = crate::report::escape(&text),
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// An HTML page.
pub fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Now, in whole seconds (sessions).
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_templates_parse() {
        let env = super::templates();
        for name in [
            "login.html",
            "requests.html",
            "request.html",
            "processors.html",
            "reports.html",
        ] {
            env.get_template(name).unwrap();
        }
    }
}
