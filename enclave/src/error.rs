//! The enclave's one error type and its one mapping to the wire.
//!
//! Every failure of a request is an [`EnclaveError`] that keeps its kind (a protocol
//! error, a storage error, a session-table refusal, …) until it becomes an HTTP response
//! in exactly one place ([`EnclaveError::code`] and its `IntoResponse`). Control flow
//! branches on the kind — never on a message's text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tandem_core::wire::{ErrorBody, ErrorResponse};
use tandem_core::{ErrorCode, Flow, ProtocolError};

use crate::keystore::KeystoreError;

/// Why the session table refused a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session: finished, failed, never started, or the enclave restarted.
    #[error("unknown session (finished, failed, or the server restarted)")]
    Unknown,
    /// The session outlived its TTL.
    #[error("session expired; start the flow again")]
    Expired,
    /// The step was sent to another flow's route.
    #[error("session belongs to the {session} flow, not {route}")]
    WrongFlow {
        /// The session's flow.
        session: Flow,
        /// The route's flow.
        route: Flow,
    },
    /// A step of this session is running now.
    #[error("a step of this session is already running")]
    Busy,
    /// The table is full.
    #[error("too many sessions in flight; retry shortly")]
    Full,
}

impl SessionError {
    /// Whether the session survives this refusal: a lookup that went wrong (another
    /// flow's route, a concurrent step) must not end a session that did nothing wrong —
    /// anyone who knows a session id could otherwise cancel it (review finding L8).
    pub fn keeps_session(self) -> bool {
        matches!(self, SessionError::WrongFlow { .. } | SessionError::Busy)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum EnclaveError {
    /// A protocol message or step was refused (malformed, misrouted, cheating peer, …).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Share storage failed.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The session table refused the step.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The account is locked: the share the device uses failed an OT consistency check.
    #[error("account is locked after a protocol abort that required excluding the device; run a complete refresh")]
    Locked,
    /// The request is malformed before any protocol message was read (bad JSON, fields).
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is larger than the server accepts.
    #[error("request body too large")]
    PayloadTooLarge,
    /// A bounded resource is exhausted (replay window, attestation slots): retry shortly.
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    /// The attestation document could not be produced.
    #[error("attestation failed: {0}")]
    Attestation(String),
    /// A bug or an unexpected condition; details are in the logs.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl EnclaveError {
    /// The wire code: the only mapping from enclave errors to the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnclaveError::Protocol(e) => e.code(),
            EnclaveError::Keystore(KeystoreError::NotFound) => ErrorCode::AccountNotFound,
            EnclaveError::Keystore(KeystoreError::Rollback { .. }) => ErrorCode::RollbackDetected,
            EnclaveError::Keystore(_) => ErrorCode::KeystoreError,
            EnclaveError::Session(SessionError::Expired) => ErrorCode::MpcTimeout,
            EnclaveError::Session(SessionError::Full) => ErrorCode::RateLimited,
            EnclaveError::Session(_) => ErrorCode::InvalidSession,
            EnclaveError::Locked => ErrorCode::AccountLocked,
            EnclaveError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            EnclaveError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            EnclaveError::Busy(_) => ErrorCode::RateLimited,
            EnclaveError::Attestation(_) => ErrorCode::AttestationError,
            EnclaveError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Whether a failed step ends its session (its machine may be poisoned).
    pub fn ends_session(&self) -> bool {
        !matches!(self, EnclaveError::Session(s) if s.keeps_session())
    }

    /// The response, echoing `request_id`.
    pub fn into_response_with(self, request_id: Option<String>) -> Response {
        let code = self.code();
        if matches!(
            code,
            ErrorCode::KeystoreError | ErrorCode::InternalError | ErrorCode::RollbackDetected
        ) {
            tracing::error!(code = %code, error = %self, "request failed");
        }
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse {
            request_id,
            error: ErrorBody {
                code,
                message: self.to_string(),
                details: None,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for EnclaveError {
    fn into_response(self) -> Response {
        self.into_response_with(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_lookups_keep_the_session() {
        assert_eq!(EnclaveError::Locked.code(), ErrorCode::AccountLocked);
        assert_eq!(
            EnclaveError::Session(SessionError::Expired).code(),
            ErrorCode::MpcTimeout
        );
        assert_eq!(EnclaveError::Session(SessionError::Full).code(), ErrorCode::RateLimited);
        assert_eq!(
            EnclaveError::Keystore(KeystoreError::Rollback { seen: 3, got: 2 }).code(),
            ErrorCode::RollbackDetected
        );
        assert!(!EnclaveError::Session(SessionError::Busy).ends_session());
        let wrong = SessionError::WrongFlow {
            session: Flow::Sign,
            route: Flow::Refresh,
        };
        assert!(!EnclaveError::Session(wrong).ends_session());
        assert!(EnclaveError::Session(SessionError::Expired).ends_session());
        assert!(EnclaveError::Protocol(ProtocolError::SealedPayloadInvalid).ends_session());
    }
}
