//! The control link: the parent's calls to the enclave's control listener.
//!
//! The control listener is a listener of its own (a separate vsock port), never the
//! public API the proxy relays to anyone: only the parent can reach it. JSON over
//! HTTP/1.1, camelCase fields, the version in the path:
//!
//! * `POST /control/v1/credentials` [`PushedCredentials`] → [`CredentialsAccepted`]: the
//!   instance role's AWS credentials for the enclave's KMS calls, pushed at start and again
//!   before they expire (the enclave has no network and no metadata service of its own).
//! * `POST /control/v1/time` [`ParentTime`] → [`TimeAccepted`]: the parent's wall clock,
//!   pushed at start and every minute; the enclave reports the drift in `/v1/health`.
//!
//! Refusals are the wire API's error body (`{requestId, error: {code, message}}`) with a
//! 4xx status.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The credential push's path.
pub const CREDENTIALS_PATH: &str = "/control/v1/credentials";

/// The clock push's path.
pub const TIME_PATH: &str = "/control/v1/time";

/// A secret string: zeroized on drop, never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    /// The secret, to hand to whoever needs it (a credential provider).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

/// `POST /control/v1/credentials`: one set of (usually temporary) AWS credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushedCredentials {
    /// `AWS_ACCESS_KEY_ID` (not secret; it names the key in logs).
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: SecretString,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    #[serde(default)]
    pub session_token: Option<SecretString>,
    /// Expiry, Unix seconds; `None` for credentials that do not expire.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for PushedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The answer to a credential push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsAccepted {
    /// Always true (refusals are errors).
    pub accepted: bool,
    /// The expiry stored, Unix seconds.
    pub expires_at: Option<u64>,
}

/// `POST /control/v1/time`: the parent's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentTime {
    /// The parent's wall clock, Unix milliseconds.
    pub unix_millis: i64,
}

/// The answer to a clock push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeAccepted {
    /// The enclave's clock minus the parent's, milliseconds.
    pub drift_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_travel_in_camel_case_and_never_print_their_secrets() {
        let pushed = PushedCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretString::new("s3cr3t"),
            session_token: Some(SecretString::new("tok")),
            expires_at: Some(1_893_456_000),
        };
        let json = serde_json::to_string(&pushed).unwrap();
        assert_eq!(
            json,
            r#"{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s3cr3t","sessionToken":"tok","expiresAt":1893456000}"#
        );
        let back: PushedCredentials = serde_json::from_str(&json).unwrap();
        assert_eq!(back.secret_access_key.expose(), "s3cr3t");
        let debug = format!("{pushed:?} {:?}", pushed.session_token);
        assert!(!debug.contains("s3cr3t") && !debug.contains("tok\""), "{debug}");
        // Optional fields may be absent or null; unknown fields are refused.
        let minimal: PushedCredentials =
            serde_json::from_str(r#"{"accessKeyId":"A","secretAccessKey":"B","sessionToken":null}"#).unwrap();
        assert_eq!(minimal.expires_at, None);
        assert!(
            serde_json::from_str::<PushedCredentials>(r#"{"accessKeyId":"A","secretAccessKey":"B","x":1}"#).is_err()
        );
    }

    #[test]
    fn the_clock_push_and_answers_have_fixed_names() {
        assert_eq!(
            serde_json::to_string(&ParentTime { unix_millis: 5 }).unwrap(),
            r#"{"unixMillis":5}"#
        );
        assert_eq!(
            serde_json::from_str::<TimeAccepted>(r#"{"driftMs":-3}"#).unwrap(),
            TimeAccepted { drift_ms: -3 }
        );
        assert_eq!(
            serde_json::to_string(&CredentialsAccepted {
                accepted: true,
                expires_at: None
            })
            .unwrap(),
            r#"{"accepted":true,"expiresAt":null}"#
        );
    }
}
