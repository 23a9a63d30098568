//! The one place where request errors become HTTP: a Kubernetes `Status` object
//! with the matching code, which is what the aggregation layer, the HPA and
//! `kubectl` expect to read when something goes wrong.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request could not be answered; each variant maps to one HTTP code and
/// one Kubernetes `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The path, metric or series does not exist (404 `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed, e.g. a bad label selector (400 `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// No identity could be established (401 `Unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// The identity is known but may not do this (403 `Forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// The metric exists but cannot be trusted right now (503 `ServiceUnavailable`).
    #[error("{0}")]
    ServiceUnavailable(String),
    /// Only `GET` is served (405 `MethodNotAllowed`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The client accepts no representation we produce (406 `NotAcceptable`).
    #[error("{0}")]
    NotAcceptable(String),
    /// The request carries a body larger than we accept (413 `RequestEntityTooLarge`).
    #[error("{0}")]
    TooLarge(String),
    /// A bug or an unexpected failure on our side (500 `InternalError`).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status code of this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Kubernetes `StatusReason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "NotFound",
            Error::BadRequest(_) => "BadRequest",
            Error::Unauthorized(_) => "Unauthorized",
            Error::Forbidden(_) => "Forbidden",
            Error::ServiceUnavailable(_) => "ServiceUnavailable",
            Error::MethodNotAllowed(_) => "MethodNotAllowed",
            Error::NotAcceptable(_) => "NotAcceptable",
            Error::TooLarge(_) => "RequestEntityTooLarge",
            Error::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object as JSON bytes.
    pub fn to_body(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        // Serialising a `Value` built from strings and integers cannot fail; the
        // fallback keeps the "never panic on a request" promise regardless.
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.code(), self.to_body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_has_every_field_kubernetes_reads() {
        let e = Error::ServiceUnavailable("metric \"q\" is failed: source down".into());
        let v: serde_json::Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "ServiceUnavailable");
        assert_eq!(v["code"], 503);
        assert_eq!(v["message"], "metric \"q\" is failed: source down");
    }

    #[test]
    fn codes_match_reasons() {
        let cases = [
            (Error::NotFound(String::new()), 404, "NotFound"),
            (Error::BadRequest(String::new()), 400, "BadRequest"),
            (Error::Unauthorized(String::new()), 401, "Unauthorized"),
            (Error::Forbidden(String::new()), 403, "Forbidden"),
            (
                Error::MethodNotAllowed(String::new()),
                405,
                "MethodNotAllowed",
            ),
            (Error::NotAcceptable(String::new()), 406, "NotAcceptable"),
            (Error::TooLarge(String::new()), 413, "RequestEntityTooLarge"),
            (Error::Internal(String::new()), 500, "InternalError"),
        ];
        for (e, code, reason) in cases {
            assert_eq!(e.code().as_u16(), code);
            assert_eq!(e.reason(), reason);
        }
    }
}
