//! One error vocabulary for every service: an [`ErrorKind`] that maps to a `tonic::Status` code
//! and to an HTTP status with Mastodon's error JSON. The message carried is the one a client may
//! see; internal detail is logged where the error is made and never crosses the wire.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    Conflict,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::Conflict => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::Conflict => tonic::Code::AlreadyExists,
            ErrorKind::RateLimited => tonic::Code::ResourceExhausted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    fn from_grpc_code(code: tonic::Code) -> Self {
        match code {
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::FailedPrecondition => {
                ErrorKind::InvalidArgument
            }
            tonic::Code::Unauthenticated => ErrorKind::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorKind::PermissionDenied,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorKind::Conflict,
            tonic::Code::ResourceExhausted => ErrorKind::RateLimited,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// Mastodon's short error string for this kind, used when no message is given.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Record not found",
            ErrorKind::InvalidArgument => "Validation failed",
            ErrorKind::Unauthenticated => "The access token is invalid",
            ErrorKind::PermissionDenied => "This action is outside the authorized scopes",
            ErrorKind::Conflict => "Validation failed",
            ErrorKind::RateLimited => "Too many requests",
            ErrorKind::Unavailable => "Service temporarily unavailable",
            ErrorKind::Internal => "Internal server error",
        }
    }
}

/// An error a client may see: a kind, a public message and optionally the input field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field the error is about, e.g. `username`.
    pub field: Option<String>,
    /// A machine-readable reason, e.g. `ERR_TAKEN`, as in Mastodon's registration errors.
    pub code: Option<String>,
    /// For [`ErrorKind::RateLimited`]: when to try again, in seconds (HTTP `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), field: None, code: None, retry_after_secs: None }
    }

    /// An error with a machine-readable `code` (e.g. an OAuth error name).
    pub fn coded(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        Self { code: Some(code.to_owned()), ..Self::new(kind, message) }
    }

    /// Too many attempts; the caller may try again after `retry_after_secs`.
    pub fn rate_limited(code: &str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self { retry_after_secs: Some(retry_after_secs), ..Self::coded(ErrorKind::RateLimited, code, message) }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }

    pub fn invalid(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
            field: Some(field.to_owned()),
            code: Some(code.to_owned()),
            retry_after_secs: None,
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Logs `detail` (never sent anywhere) and returns "unavailable" (HTTP 503): a store or
    /// service that is still starting or cannot be reached, so the client may try again.
    pub fn not_ready(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "dependency not ready");
        Self::new(ErrorKind::Unavailable, ErrorKind::Unavailable.default_message())
    }

    /// Logs `detail` (never sent anywhere) and returns an opaque internal error.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorKind::Internal, ErrorKind::Internal.default_message())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

const FIELD_KEY: &str = "agora-field";
const CODE_KEY: &str = "agora-code";
const RETRY_KEY: &str = "agora-retry-after";

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let mut status = tonic::Status::new(e.kind.grpc_code(), e.message);
        let retry = e.retry_after_secs.map(|s| s.to_string());
        for (key, value) in [(FIELD_KEY, e.field), (CODE_KEY, e.code), (RETRY_KEY, retry)] {
            if let Some(v) = value.and_then(|v| v.parse().ok()) {
                status.metadata_mut().insert(key, v);
            }
        }
        status
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let kind = ErrorKind::from_grpc_code(s.code());
        let meta = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = match kind {
            // Transport failures and internal errors carry detail a client must not see.
            ErrorKind::Internal | ErrorKind::Unavailable => {
                tracing::warn!(code = ?s.code(), message = s.message(), "downstream call failed");
                kind.default_message().to_owned()
            }
            _ if s.message().is_empty() => kind.default_message().to_owned(),
            _ => s.message().to_owned(),
        };
        Self {
            kind,
            message,
            field: meta(FIELD_KEY),
            code: meta(CODE_KEY),
            retry_after_secs: meta(RETRY_KEY).and_then(|s| s.parse().ok()),
        }
    }
}

/// Mastodon's error entity.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.kind.http_status();
        let details = self.field.as_ref().map(|field| {
            serde_json::json!({
                field: [{
                    "error": self.code.clone().unwrap_or_else(|| "ERR_INVALID".to_owned()),
                    "description": self.message,
                }]
            })
        });
        let error = match (&self.kind, &self.field) {
            (ErrorKind::InvalidArgument | ErrorKind::Conflict, Some(_)) => {
                format!("Validation failed: {}", self.message)
            }
            _ => self.message.clone(),
        };
        (status, axum::Json(ErrorBody { error, error_description: None, details })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_grpc_with_field() {
        let e = Error::invalid("username", "ERR_TAKEN", "Username is already taken");
        let status: tonic::Status = e.clone().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let back: Error = status.into();
        assert_eq!(back, e);
    }

    #[test]
    fn internal_detail_never_reaches_the_client() {
        let status = tonic::Status::internal("connection to postgres://u:pw@db failed");
        let e: Error = status.into();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(!e.message.contains("postgres"));
        assert_eq!(e.kind.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
