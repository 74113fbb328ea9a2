//! The one error shape of the HTTP intake.
//!
//! Every 4xx names the field and the reason, so the form or controller that
//! sent the request can fix it without reading our logs:
//! `{"error": {"code": 422, "field": "identities.email", "reason": "invalid email: missing '@'", "message": "identities.email: invalid email: missing '@'"}}`.
//! `code` and `message` are there so the same body is also a valid OpenDSR
//! error (`{error: {code, message, errors[]}}`). Reasons never carry an
//! identity: identity errors say what is wrong, not what was sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An HTTP error with the field it concerns.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The field (dotted path, `identities.email`), or empty when the whole request is meant.
    pub field: String,
    /// What is wrong.
    pub reason: String,
    /// The existing request a conflict is about (`request_id` in the body).
    pub request_id: Option<String>,
}

impl ApiError {
    /// An error about `field`.
    pub fn new(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            field: field.into(),
            reason: reason.into(),
            request_id: None,
        }
    }
    /// 400: the body is not well-formed.
    pub fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, field, reason)
    }
    /// 422: well-formed, but a value is refused.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, field, reason)
    }
    /// 401: missing or wrong credentials or signature.
    pub fn unauthorized(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, field, reason)
    }
    /// 404.
    pub fn not_found(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, field, reason)
    }
    /// 503: the store could not be reached.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.field.is_empty() {
            self.reason.clone()
        } else {
            format!("{}: {}", self.field, self.reason)
        };
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), reason = %self.reason, "intake error");
        } else {
            // Not the reason: a type error can quote the value sent, which may be an identity.
            tracing::info!(status = self.status.as_u16(), field = %self.field, "intake refused a request");
        }
        let mut body = json!({"error": {
            "code": self.status.as_u16(),
            "field": self.field,
            "reason": self.reason,
            "message": message,
            "errors": [{"field": self.field, "reason": self.reason}],
        }});
        if let Some(id) = &self.request_id {
            body["error"]["request_id"] = json!(id);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Invalid(m) => ApiError::invalid("", m),
            E::NoRequest(id) => ApiError::not_found("id", format!("no request with id `{id}`")),
            E::Conflict(m) => ApiError::new(
                StatusCode::CONFLICT,
                "",
                format!("request `{m}` changed concurrently; try again"),
            ),
            E::ExternalIdConflict(c) => ApiError {
                request_id: Some(c.existing_id.clone()),
                ..ApiError::new(StatusCode::CONFLICT, "external_id", c.to_string())
            },
            E::Store(s) => ApiError::unavailable(s.to_string()),
            E::Internal(m) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                format!("internal error: {m}"),
            ),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

/// Parse a JSON body strictly, naming the field of the first error.
///
/// Syntax errors are 400; a well-formed body with a refused value (unknown
/// field, bad email, unknown kind) is 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match parsed {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." || path == "?" {
                String::new()
            } else {
                path
            };
            let inner = e.into_inner();
            let reason = inner.to_string();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    ApiError::invalid(field, without_position(&reason))
                }
                _ => ApiError::bad_request(field, format!("malformed JSON: {reason}")),
            });
        }
    };
    de.end()
        .map_err(|e| ApiError::bad_request("", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde_json appends " at line L column C": for a refused value the field
/// already says where, so drop it (a syntax error keeps its position).
fn without_position(m: &str) -> String {
    m.split(" at line ").next().unwrap_or(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        kind: crate::domain::RequestKind,
        identities: crate::domain::Subject,
    }

    #[test]
    fn parse_errors_name_the_field_and_the_reason() {
        let e =
            parse_json::<Body>(br#"{"kind":"erasure","identities":{"email":"jane.example.com"}}"#)
                .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field, "identities.email");
        assert_eq!(e.reason, "invalid email: missing '@'");
        let e = parse_json::<Body>(br#"{"kind":"erasure","identities":{},"x":1}"#).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "x")
        );
        let e = parse_json::<Body>(br#"{"kind":"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.reason.starts_with("malformed JSON"), "{}", e.reason);
        let e = parse_json::<Body>(br#"{"kind":"erasure","identities":{}} trailing"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
