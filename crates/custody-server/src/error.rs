//! The one web error type: a status, a stable code and a message, as JSON.
//!
//! Internal failures are logged in full and answered with a generic body, so no query, path or
//! key material reaches a client (ASVS 16.5.1).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::AppError;
use custody_proto::api::{ErrorBody, ErrorDetail};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// No valid session or API key.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in, or send an API key as `Authorization: Bearer …`",
        )
    }

    /// Signed in, but the role cannot do this.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "your role does not allow this")
    }
}

/// The status a use case's error answers with, on the API and in the portal alike: every
/// error the caller can do something about is a 4xx; only the store and crypto failing are 5xx.
pub(crate) fn status_of(e: &AppError) -> StatusCode {
    match e {
        AppError::NotFound => StatusCode::NOT_FOUND,
        AppError::Forbidden
        | AppError::PickupRefused
        | AppError::SecondFactorRequired
        | AppError::StepUpRequired => StatusCode::FORBIDDEN,
        AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AppError::Conflict { .. } => StatusCode::CONFLICT,
        AppError::AuthenticationFailed => StatusCode::UNAUTHORIZED,
        AppError::BankOffline => StatusCode::SERVICE_UNAVAILABLE,
        AppError::Throttled => StatusCode::TOO_MANY_REQUESTS,
        AppError::Store(_) | AppError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = status_of(&e);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
            "something went wrong on our side; the request changed nothing".to_owned()
        } else {
            e.to_string()
        };
        Self { status, code: e.code(), message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

/// Maps axum's body rejections to the error format, keeping their distinctions.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match r {
            J::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send `Content-Type: application/json`",
            ),
            J::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            J::JsonDataError(e) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.body_text())
            }
            J::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            ),
            other => Self::new(other.status(), "invalid_request", other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}
