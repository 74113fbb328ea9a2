//! The dashboard's forms (POST): log in, log out, and the buttons of a
//! request page — retry, confirm, extend, cancel, release a hold.
//!
//! Every button checks the session, then the CSRF token, before it reads a
//! field or touches the store; then it calls the very engine function its CLI
//! verb calls (`lethe retry`, `confirm`, `extend`, `cancel`, `hold release`),
//! so the audit trail cannot tell the two apart. On success it redirects back
//! to the request page (POST/redirect/GET), which says what was done.

use super::pages::{login_form, require};
use super::{now_secs, Dash, WebError};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use std::collections::HashMap;

type Fields = Form<HashMap<String, String>>;

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The session and a valid CSRF token, or nothing is done.
fn authorised(d: &Dash, headers: &HeaderMap, f: &HashMap<String, String>) -> Result<(), WebError> {
    let s = require(d, headers)?;
    if !d.auth.csrf_ok(&s, f.get("csrf").map(String::as_str)) {
        tracing::warn!("dashboard: a form with a missing or wrong CSRF token was refused");
        return Err(WebError::Forged);
    }
    Ok(())
}

fn back(id: &str, done: &str) -> Response {
    Redirect::to(&format!(
        "/dashboard/requests/{}?done={done}",
        urlencode(id)
    ))
    .into_response()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `POST /dashboard/login`: the password or the API token.
pub async fn login(
    State(d): State<Dash>,
    headers: HeaderMap,
    Form(f): Fields,
) -> Result<Response, WebError> {
    if !d
        .auth
        .login_csrf_ok(&headers, f.get("csrf").map(String::as_str))
    {
        tracing::warn!("dashboard: a login form with a missing or wrong CSRF token was refused");
        return Err(WebError::Forged);
    }
    let given = f.get("password").map(String::as_str).unwrap_or("");
    if !d.auth.verify(given) {
        tracing::warn!("dashboard: a login with a wrong password was refused");
        return login_form(
            &d,
            &headers,
            Some("Wrong password or token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    tracing::info!("dashboard: logged in");
    let mut res = Redirect::to("/dashboard/requests").into_response();
    if let Ok(v) = d.auth.login_cookie(now_secs()).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `POST /dashboard/logout`.
pub async fn logout(
    State(d): State<Dash>,
    headers: HeaderMap,
    Form(f): Fields,
) -> Result<Response, WebError> {
    let s = require(&d, &headers)?;
    if !d.auth.csrf_ok(&s, f.get("csrf").map(String::as_str)) {
        return Err(WebError::Forged);
    }
    d.auth.revoke(&s);
    let mut res = Redirect::to("/dashboard/login").into_response();
    if let Ok(v) = d.auth.logout_cookie().parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `POST /dashboard/requests/{id}/retry` (`processor` optional): `lethe retry ID [--processor P]`.
pub async fn retry(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Fields,
) -> Result<Response, WebError> {
    authorised(&d, &headers, &f)?;
    let n = d.engine.retry(&id, field(&f, "processor")).await?;
    Ok(back(&id, if n == 0 { "nothing" } else { "retried" }))
}

/// `POST /dashboard/requests/{id}/confirm` (`processor`, `note`): `lethe confirm`.
pub async fn confirm(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Fields,
) -> Result<Response, WebError> {
    authorised(&d, &headers, &f)?;
    let processor = field(&f, "processor")
        .ok_or_else(|| WebError::BadRequest("processor: which processor's task was done".into()))?;
    d.engine.confirm(&id, processor, field(&f, "note")).await?;
    Ok(back(&id, "confirmed"))
}

/// `POST /dashboard/requests/{id}/extend` (`reason`): `lethe extend ID --reason`.
pub async fn extend(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Fields,
) -> Result<Response, WebError> {
    authorised(&d, &headers, &f)?;
    let reason = field(&f, "reason").ok_or_else(|| {
        WebError::BadRequest(
            "reason: why the deadline is extended (the subject must be told)".into(),
        )
    })?;
    d.engine.extend(&id, reason).await?;
    Ok(back(&id, "extended"))
}

/// `POST /dashboard/requests/{id}/cancel`: `lethe cancel ID`.
pub async fn cancel(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Fields,
) -> Result<Response, WebError> {
    authorised(&d, &headers, &f)?;
    d.engine.cancel(&id).await?;
    Ok(back(&id, "cancelled"))
}

/// `POST /dashboard/holds/{id}/release` (`request`: the page to return to): `lethe hold release ID`.
pub async fn release_hold(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Fields,
) -> Result<Response, WebError> {
    authorised(&d, &headers, &f)?;
    d.engine.release_hold(&id).await?;
    Ok(match field(&f, "request") {
        Some(r) => back(r, "released"),
        None => Redirect::to("/dashboard/requests").into_response(),
    })
}
