//! The control API: calls from the parent, on a listener of their own.
//!
//! It is kept off the public router on purpose: the parent proxy relays the public API to
//! anyone, while the control listener (a separate vsock port in Nitro mode, a loopback
//! port or Unix socket in mock mode) is reachable only from the parent.
//!
//! * `POST /control/v1/credentials` `{accessKeyId, secretAccessKey, sessionToken?,
//!   expiresAt?}` → `{accepted: true, expiresAt}`: stores AWS credentials for the KMS
//!   client (see [`crate::kms::credentials`]). The body is never logged.
//! * `POST /control/v1/time` `{unixMillis}` → `{driftMs}`: the parent's wall clock, pushed
//!   at boot and periodically; a large drift is logged and reported by `/v1/health`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::api::{ApiJson, AppState};
use crate::error::EnclaveError;
use crate::kms::credentials::PushedCredentials;

/// The answer to a credential push.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsAccepted {
    /// Always true (refusals are errors).
    pub accepted: bool,
    /// The expiry stored, Unix seconds.
    pub expires_at: Option<u64>,
}

/// The control router.
pub fn control_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/control/v1/credentials", post(push_credentials))
        .route("/control/v1/time", post(push_time))
        .fallback(|| async { EnclaveError::InvalidRequest("no such control route".into()) })
        .with_state(state)
}

async fn push_credentials(
    State(state): State<Arc<AppState>>,
    ApiJson(pushed): ApiJson<PushedCredentials>,
) -> Result<Json<CredentialsAccepted>, EnclaveError> {
    let slot = state.credentials.as_ref().ok_or_else(|| {
        EnclaveError::InvalidRequest("this enclave does not use KMS (local key wrapper): no credentials needed".into())
    })?;
    let expires_at = slot
        .push(pushed)
        .map_err(|e| EnclaveError::InvalidRequest(e.to_string()))?;
    Ok(Json(CredentialsAccepted {
        accepted: true,
        expires_at,
    }))
}

/// The parent's clock.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentTime {
    /// The parent's wall clock, Unix milliseconds.
    pub unix_millis: i64,
}

/// The measured drift.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeAccepted {
    /// The enclave's clock minus the parent's, milliseconds.
    pub drift_ms: i64,
}

async fn push_time(State(state): State<Arc<AppState>>, ApiJson(t): ApiJson<ParentTime>) -> Json<TimeAccepted> {
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Json(TimeAccepted {
        drift_ms: state.clock.observe(t.unix_millis, ours),
    })
}
