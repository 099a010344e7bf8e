//! The one error type of every endpoint: a status, a stable machine-readable code and a message
//! safe to show. Internal causes are logged, never returned.

use http::StatusCode;
use lambda_http::{Body, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to put in `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests; retry later")
        }
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("Request body exceeds {limit} bytes"))
    }
    /// A failure of ours or of a dependency. The cause is logged here, once, and not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal error")
    }
    /// A dependency (DynamoDB, Secrets Manager...) did not answer: worth a retry.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency unavailable");
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "Temporarily unavailable; retry")
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::to_value(ErrorBody { error: self.code.into(), message: self.message })
            .expect("strings serialize");
        let mut builder = Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "no-store");
        if let Some(secs) = self.retry_after {
            builder = builder.header(http::header::RETRY_AFTER, secs.to_string());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "Bearer");
        }
        builder.body(Body::from(body.to_string())).expect("static response parts are valid")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Every error: a stable machine-readable code and a message safe to show.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `invalid_json`, `rate_limited`, `subscription_not_found`...
    pub error: String,
    pub message: String,
}
