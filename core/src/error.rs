//! Errors of the protocol layer and the wire error codes they map to.
//!
//! Errors keep apart what the peer did wrong (a malformed, misrouted or cheating message),
//! what the caller did wrong, and our own bugs, so the HTTP layers can answer with the
//! right code and so operators can tell an attack from a defect. Messages never contain
//! secret material: they name fields, steps and party roles, never values.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes of the wire API (DESIGN.md §4).
///
/// They appear as `error.code` in every error response; clients branch on them, so the
/// set is part of the API contract and only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, bad base64, a bad field, a wrong-length digest.
    InvalidRequest,
    /// The session does not exist, expired, is finished, or the message belongs elsewhere.
    InvalidSession,
    /// No account has this id.
    AccountNotFound,
    /// The enclave's share storage failed (I/O, sealing, a corrupt blob).
    KeystoreError,
    /// The MPC protocol aborted: the peer's message failed a cryptographic check.
    MpcError,
    /// A protocol step did not arrive in time.
    MpcTimeout,
    /// The other party of the protocol is not reachable.
    MpcPartyMissing,
    /// A key share is corrupt, of an unknown format, or does not belong to the account.
    MpcInvalidShare,
    /// The signature could not be produced or did not verify.
    SigningError,
    /// The recovery proof does not match the account's public key.
    RecoveryFailed,
    /// A bug or an unexpected condition on the server; details are in its logs.
    InternalError,
    /// The caller is not allowed to act on this account.
    Unauthorized,
    /// The attestation document could not be produced or verified.
    AttestationError,
    /// Too many requests; retry after the time in `Retry-After`.
    RateLimited,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The account is locked: a protocol abort showed that the other party tried to
    /// probe long-term OT state (DKLs23 requires excluding it). Only a complete refresh,
    /// authorized by the device key, unlocks it.
    AccountLocked,
    /// Stored state is older than state already seen: the store (or whoever serves it)
    /// rolled it back. Nothing was done with the older state.
    RollbackDetected,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidSession => 409,
            ErrorCode::AccountNotFound => 404,
            ErrorCode::KeystoreError => 500,
            ErrorCode::MpcError => 422,
            ErrorCode::MpcTimeout => 504,
            ErrorCode::MpcPartyMissing => 502,
            ErrorCode::MpcInvalidShare => 422,
            ErrorCode::SigningError => 422,
            ErrorCode::RecoveryFailed => 422,
            ErrorCode::InternalError => 500,
            ErrorCode::Unauthorized => 401,
            ErrorCode::AttestationError => 502,
            ErrorCode::RateLimited => 429,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::AccountLocked => 423,
            ErrorCode::RollbackDetected => 500,
        }
    }

    /// The code as it appears on the wire, e.g. `"INVALID_SESSION"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidSession => "INVALID_SESSION",
            ErrorCode::AccountNotFound => "ACCOUNT_NOT_FOUND",
            ErrorCode::KeystoreError => "KEYSTORE_ERROR",
            ErrorCode::MpcError => "MPC_ERROR",
            ErrorCode::MpcTimeout => "MPC_TIMEOUT",
            ErrorCode::MpcPartyMissing => "MPC_PARTY_MISSING",
            ErrorCode::MpcInvalidShare => "MPC_INVALID_SHARE",
            ErrorCode::SigningError => "SIGNING_ERROR",
            ErrorCode::RecoveryFailed => "RECOVERY_FAILED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::AttestationError => "ATTESTATION_ERROR",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::AccountLocked => "ACCOUNT_LOCKED",
            ErrorCode::RollbackDetected => "ROLLBACK_DETECTED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a protocol message or step was refused.
///
/// Every variant maps to one [`ErrorCode`] through [`ProtocolError::code`]; that mapping
/// is the only one, so the enclave and the SDK agree on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    // --- the message itself is bad (INVALID_REQUEST) ---
    /// The message could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The message is larger than any legitimate message of this protocol.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size received.
        len: usize,
        /// Largest size accepted.
        max: usize,
    },
    /// The message is of a format version this build does not speak.
    #[error("unsupported message format version {0}")]
    UnsupportedVersion(u8),
    /// A field of the message has an invalid value (e.g. a digest that is not 32 bytes).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),

    // --- the message belongs elsewhere (INVALID_SESSION) ---
    /// The message was made for another flow (e.g. a sign message sent to a DKG session).
    #[error("message belongs to flow {got}, expected {expected}")]
    WrongFlow {
        /// The flow this session runs.
        expected: crate::flow::Flow,
        /// The flow named by the message.
        got: crate::flow::Flow,
    },
    /// The message is bound to another session.
    #[error("message belongs to another session")]
    WrongSession,
    /// The message is for another step of this session (replayed or reordered).
    #[error("message is for step {got}, expected step {expected}")]
    WrongStep {
        /// The step this session is waiting for.
        expected: u8,
        /// The step named by the message.
        got: u8,
    },
    /// The message travels the wrong way (e.g. the enclave's own message reflected back).
    #[error("message has the wrong direction")]
    WrongDirection,
    /// The session already finished or aborted; no further step is accepted.
    #[error("session is closed")]
    SessionClosed,

    // --- the peer cheated or diverged (MPC_ERROR) ---
    /// The peer's message failed a check of the MPC protocol. When `ban` is set the check
    /// that failed protects long-term OT state: continuing with this peer could leak key
    /// bits, so the account must stop signing with it.
    #[error("peer message failed protocol checks: {reason}")]
    PeerMisbehaved {
        /// The library's reason (indices and check names only; no secret values).
        reason: String,
        /// Whether the abort requires excluding the peer from future sessions.
        ban: bool,
    },
    /// The two parties finished DKG or refresh with different results.
    #[error("the parties derived different keys")]
    KeyMismatch,

    // --- shares and results ---
    /// A stored or supplied key share is corrupt or does not belong here.
    #[error("invalid key share: {0}")]
    InvalidShare(&'static str),
    /// The recovery proof does not match the account.
    #[error("recovery proof does not match the account's public key")]
    RecoveryFailed,
    /// The assembled signature did not verify against the account's public key.
    #[error("assembled signature does not verify")]
    SignatureInvalid,
    /// A sealed payload does not open: tampered, replayed into another session or step,
    /// or reflected back. The session is aborted.
    #[error("sealed payload does not authenticate (tampered, replayed or misdirected)")]
    SealedPayloadInvalid,
    /// The payload was sealed to a channel key the enclave no longer has (it restarted):
    /// fetch and verify a new attestation, then start the flow again.
    #[error("the enclave's channel key changed; fetch a new attestation and retry")]
    ChannelKeyChanged,
    /// The enclave answered with an older generation of the account than this device
    /// already saw: its store was rolled back. The flow stops before using that state.
    #[error(
        "the enclave's state for this account is older than this device has seen (generation {got} < {seen}): refused as a rollback"
    )]
    Rollback {
        /// The largest generation this device saw before.
        seen: u64,
        /// The generation the enclave answered with.
        got: u64,
    },
    /// The device's authorization is missing, invalid, stale or replayed.
    #[error("device authorization failed: {0}")]
    Unauthorized(&'static str),
    /// An invariant of our own code failed: a bug, never the peer's fault.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProtocolError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed(_)
            | ProtocolError::TooLarge { .. }
            | ProtocolError::UnsupportedVersion(_)
            | ProtocolError::InvalidField(_) => ErrorCode::InvalidRequest,
            ProtocolError::WrongFlow { .. }
            | ProtocolError::WrongSession
            | ProtocolError::WrongStep { .. }
            | ProtocolError::WrongDirection
            | ProtocolError::SessionClosed => ErrorCode::InvalidSession,
            ProtocolError::PeerMisbehaved { .. } | ProtocolError::KeyMismatch => ErrorCode::MpcError,
            ProtocolError::InvalidShare(_) => ErrorCode::MpcInvalidShare,
            ProtocolError::RecoveryFailed => ErrorCode::RecoveryFailed,
            ProtocolError::SignatureInvalid => ErrorCode::SigningError,
            ProtocolError::SealedPayloadInvalid => ErrorCode::InvalidRequest,
            ProtocolError::ChannelKeyChanged => ErrorCode::AttestationError,
            ProtocolError::Rollback { .. } => ErrorCode::RollbackDetected,
            ProtocolError::Unauthorized(_) => ErrorCode::Unauthorized,
            ProtocolError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Whether this error requires excluding the peer from future sessions of the account
    /// (DKLs23 mandates it when an OT consistency check fails).
    pub fn requires_ban(&self) -> bool {
        matches!(self, ProtocolError::PeerMisbehaved { ban: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_screaming_snake_case() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::MpcInvalidShare,
            ErrorCode::PayloadTooLarge,
            ErrorCode::AccountLocked,
            ErrorCode::RollbackDetected,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn errors_map_to_distinct_families() {
        assert_eq!(
            ProtocolError::WrongStep { expected: 1, got: 0 }.code(),
            ErrorCode::InvalidSession
        );
        assert_eq!(ProtocolError::Malformed("x").code(), ErrorCode::InvalidRequest);
        assert_eq!(
            ProtocolError::PeerMisbehaved {
                reason: "r".into(),
                ban: true
            }
            .code(),
            ErrorCode::MpcError
        );
        assert!(
            ProtocolError::PeerMisbehaved {
                reason: "r".into(),
                ban: true
            }
            .requires_ban()
        );
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
    }
}
