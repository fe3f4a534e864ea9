//! JSON request and response types of the HTTP API (DESIGN.md §4), shared by the enclave,
//! the proxy and the SDK so the three cannot drift apart.
//!
//! Field names are camelCase on the wire. Binary fields are standard padded base64
//! ([`B64`]). Every request may carry `requestId`, and every response echoes it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ErrorCode;
use crate::flow::Flow;
use crate::ids::AccountId;
use crate::keys::PublicKey;

/// Bytes carried as standard padded base64 in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print payloads: they may be (sealed) protocol messages.
        write!(f, "B64({} bytes)", self.0.len())
    }
}

/// Whether a multi-step flow continues or is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Send the next `clientMessage` to `…/step`.
    Continue,
    /// The flow is complete.
    Done,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `"ok"` when the enclave can serve requests.
    pub status: String,
    /// Server time, Unix seconds.
    pub timestamp: u64,
    /// True when running on the mock platform (no Nitro hardware). Clients must treat
    /// such a server as a development server.
    pub mock_mode: bool,
    /// Server version.
    pub version: String,
    /// Whether the enclave can sign now (its data keys are unwrapped). Absent from
    /// servers that predate boot stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The enclave's wall clock minus the parent's, in milliseconds, as last measured
    /// (the parent pushes its time at boot and periodically). Absent until measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_drift_ms: Option<i64>,
    /// The boot sequence (attest → credentials → unwrapDataKey → ready), stage by stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<BootStage>,
}

/// One stage of the enclave's boot sequence, as `/v1/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootStage {
    /// `attest`, `credentials`, `unwrapDataKey` or `ready`.
    pub name: String,
    /// `pending`, `running`, `done`, `skipped` or `failed`.
    pub state: String,
    /// What happened (or what it waits for), without secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds from process start to the end of the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

/// `POST /v1/attestation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationRequest {
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The verifier's fresh nonce (1–512 bytes), echoed inside the document.
    pub nonce: B64,
}

/// The answer to `POST /v1/attestation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationResponse {
    /// Echo of the request's `requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The COSE_Sign1 attestation document; its `public_key` is the enclave's channel key.
    pub document: B64,
}

/// `POST /v1/createAccount/start`. The label and device id travel inside the sealed
/// first message (the host cannot read or change them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccountStartRequest {
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The device's sealed first DKG message.
    pub client_message: B64,
}

/// The answer to every `…/start` and `…/step`: the session and the enclave's sealed
/// answer. With `DONE`, the sealed answer is the flow's done message (its result and the
/// account's generation), which only the device can open and the host cannot forge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowResponse {
    /// Echo of the request's `requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The session to name in `…/step`.
    pub session_id: String,
    /// Whether another step follows.
    pub status: Status,
    /// The enclave's sealed answer.
    pub server_message: B64,
}

/// `POST /v1/{createAccount,sign,refresh}/step`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepRequest {
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The session, as returned by `…/start`.
    pub session_id: String,
    /// The device's next protocol message.
    pub client_message: B64,
}

/// The path of a flow's `…/start` route.
pub fn start_path(flow: Flow) -> &'static str {
    match flow {
        Flow::Dkg => "/v1/createAccount/start",
        Flow::Sign => "/v1/sign/start",
        Flow::Refresh => "/v1/refresh/start",
        Flow::Recover => "/v1/recover/start",
    }
}

/// The path of a flow's `…/step` route (recover has none: it is done in one message).
pub fn step_path(flow: Flow) -> Option<&'static str> {
    match flow {
        Flow::Dkg => Some("/v1/createAccount/step"),
        Flow::Sign => Some("/v1/sign/step"),
        Flow::Refresh => Some("/v1/refresh/step"),
        Flow::Recover => None,
    }
}

/// `POST /v1/getPublicKey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetPublicKeyRequest {
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The account.
    pub account_id: AccountId,
}

/// An account's public data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// Echo of the request's `requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The account.
    pub account_id: AccountId,
    /// EIP-55 address.
    pub address: String,
    /// Compressed public key, hex.
    pub public_key: PublicKey,
}

/// `POST /v1/sign/start`, `/v1/recover/start`, `/v1/refresh/start`: a flow on an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountStartRequest {
    /// Optional correlation id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The account.
    pub account_id: AccountId,
    /// The device's first protocol message.
    pub client_message: B64,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// Echo of the request's `requestId`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What went wrong.
    pub error: ErrorBody,
}

/// What went wrong, machine- and human-readable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation; never contains secret material.
    pub message: String,
    /// Optional structured details (e.g. which field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_and_base64_on_the_wire() {
        let req = StepRequest {
            request_id: Some("r1".into()),
            session_id: "ab".into(),
            client_message: B64(vec![0, 1, 2]),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["clientMessage"], "AAEC");
        assert_eq!(json["sessionId"], "ab");
        assert_eq!(json["requestId"], "r1");
        let bad = r#"{"sessionId":"ab","clientMessage":"!!!"}"#;
        assert!(serde_json::from_str::<StepRequest>(bad).is_err());
        let unknown = r#"{"sessionId":"ab","clientMessage":"AAEC","extra":1}"#;
        assert!(serde_json::from_str::<StepRequest>(unknown).is_err());
    }

    #[test]
    fn error_body_shape() {
        let e = ErrorResponse {
            request_id: None,
            error: ErrorBody {
                code: ErrorCode::InvalidSession,
                message: "m".into(),
                details: None,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["error"]["code"], "INVALID_SESSION");
    }
}
