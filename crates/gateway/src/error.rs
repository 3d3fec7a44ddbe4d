//! The gateway's error response: Mastodon's `{"error": ..., "error_description"?: ...}` with the
//! right status. Service errors arrive as [`agora_kit::Error`] and convert here; OAuth errors use
//! RFC 6749's codes.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: &str) -> Self {
        Self { status, body: serde_json::json!({ "error": message }), retry_after: None }
    }

    pub fn bad_request(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unprocessable(message: &str) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "The access token is invalid")
    }

    pub fn forbidden_scope() -> Self {
        Self::new(StatusCode::FORBIDDEN, "This action is outside the authorized scopes")
    }

    /// 500 with a message that tells the client nothing about the cause (log that separately).
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Record not found")
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large")
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests") }
    }

    /// An OAuth error (`invalid_grant`, `invalid_client`, …).
    pub fn oauth(status: StatusCode, code: &str, description: &str) -> Self {
        Self { status, body: serde_json::json!({ "error": code, "error_description": description }), retry_after: None }
    }
}

impl From<agora_kit::Error> for ApiError {
    fn from(e: agora_kit::Error) -> Self {
        match e.code.as_deref() {
            Some("invalid_client") => return ApiError::oauth(StatusCode::UNAUTHORIZED, "invalid_client", &e.message),
            Some(c @ ("invalid_grant" | "invalid_scope" | "invalid_request")) => {
                return ApiError::oauth(StatusCode::BAD_REQUEST, c, &e.message);
            }
            _ => {}
        }
        let resp = e.clone().into_response();
        let status = resp.status();
        let mut body = serde_json::json!({ "error": match (&e.kind, &e.field) {
            (agora_kit::ErrorKind::InvalidArgument | agora_kit::ErrorKind::Conflict, Some(_)) => format!("Validation failed: {}", e.message),
            _ => e.message.clone(),
        }});
        if let (Some(field), Some(obj)) = (&e.field, body.as_object_mut()) {
            obj.insert(
                "details".into(),
                serde_json::json!({ field: [{ "error": e.code.clone().unwrap_or_else(|| "ERR_INVALID".into()), "description": e.message }] }),
            );
        }
        Self { status, body, retry_after: e.retry_after_secs }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        agora_kit::Error::from(s).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
