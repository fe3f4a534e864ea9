//! The control API: calls from the parent, on a listener of their own.
//!
//! It is kept off the public router on purpose: the parent proxy relays the public API to
//! anyone, while the control listener (a separate vsock port in Nitro mode, a loopback
//! port or Unix socket in mock mode) is reachable only from the parent.
//!
//! * `POST /control/v1/credentials` `{accessKeyId, secretAccessKey, sessionToken?,
//!   expiresAt?}` → `{accepted: true, expiresAt}`: stores AWS credentials for the KMS
//!   client (see [`crate::kms::credentials`]). The body is never logged.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tandem_core::ErrorCode;

use crate::api::{ApiJson, AppState};
use crate::error::ApiError;
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
        .fallback(|| async { ApiError::new(ErrorCode::InvalidRequest, "no such control route") })
        .with_state(state)
}

async fn push_credentials(
    State(state): State<Arc<AppState>>,
    ApiJson(pushed): ApiJson<PushedCredentials>,
) -> Result<Json<CredentialsAccepted>, ApiError> {
    let slot = state.credentials.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "this enclave does not use KMS (local key wrapper): no credentials needed",
        )
    })?;
    let expires_at = slot
        .push(pushed)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    Ok(Json(CredentialsAccepted {
        accepted: true,
        expires_at,
    }))
}
