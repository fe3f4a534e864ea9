//! The API's error type and its one mapping to HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tandem_core::wire::{ErrorBody, ErrorResponse};
use tandem_core::{ErrorCode, ProtocolError};

use crate::keystore::KeystoreError;

/// An error answered to the client: a wire code, a message without secrets, and the
/// request id to echo.
#[derive(Debug)]
pub struct ApiError {
    /// The wire code (decides the HTTP status).
    pub code: ErrorCode,
    /// Human-readable, secret-free explanation.
    pub message: String,
    /// The request id to echo, when known.
    pub request_id: Option<String>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            request_id: None,
        }
    }

    /// Attaches the request id to echo.
    pub fn with_request_id(mut self, request_id: &Option<String>) -> Self {
        if self.request_id.is_none() {
            self.request_id.clone_from(request_id);
        }
        self
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<KeystoreError> for ApiError {
    fn from(e: KeystoreError) -> Self {
        match e {
            KeystoreError::NotFound => ApiError::new(ErrorCode::AccountNotFound, "no such account"),
            other => {
                tracing::error!(error = %other, "keystore failure");
                ApiError::new(ErrorCode::KeystoreError, other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse {
            request_id: self.request_id,
            error: ErrorBody {
                code: self.code,
                message: self.message,
                details: None,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}
