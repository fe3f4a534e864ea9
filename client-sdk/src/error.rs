//! The SDK's error type.

use tandem_core::{ErrorCode, ProtocolError};

/// Everything that can go wrong on the device side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The server answered with a wire error.
    #[error("server refused the request ({code}, HTTP {status}): {message}")]
    Server {
        /// The wire error code.
        code: ErrorCode,
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server's answer is not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    BadResponse(String),
    /// The device's protocol machine refused a message or aborted.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The assembled signature failed the final check against the account's key.
    #[error("signature check failed: {0}")]
    SignatureCheck(&'static str),
    /// The account may not sign with its share: the enclave failed an OT consistency
    /// check with it (DKLs23 requires excluding it). Run a complete refresh.
    #[error("this account's share is locked: the enclave failed an OT consistency check ({0}); run a complete refresh")]
    AccountLocked(String),
    /// Invalid input from the caller (a bad URL, typed data that does not parse, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The enclave's attestation did not verify: its channel key is not trusted.
    #[error("attestation refused: {0}")]
    Attestation(#[from] crate::attestation::AttestationError),
    /// Reading or writing account material failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// An encrypted backup could not be written or read (wrong passphrase, tampered
    /// file, another account's backup, parameters out of bounds, …).
    #[error("backup: {0}")]
    Backup(#[from] crate::backup::BackupError),
    /// Google Drive refused or failed a request (auth, quota, transport).
    #[error(transparent)]
    Drive(#[from] crate::drive::DriveError),
}

impl SdkError {
    /// The wire error code this error corresponds to, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Server { code, .. } => Some(*code),
            SdkError::Protocol(p) => Some(p.code()),
            SdkError::SignatureCheck(_) => Some(ErrorCode::SigningError),
            SdkError::Attestation(_) => Some(ErrorCode::AttestationError),
            SdkError::AccountLocked(_) => Some(ErrorCode::AccountLocked),
            _ => None,
        }
    }
}

impl From<SdkError> for alloy_signer::Error {
    fn from(e: SdkError) -> Self {
        alloy_signer::Error::other(e)
    }
}
