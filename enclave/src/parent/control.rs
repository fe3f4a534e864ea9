//! The control link, enclave end: the routes of the control listener, where the parent
//! pushes AWS credentials and its clock (`tandem_proxy::enclave::{credentials, control}`).
//!
//! They are kept off the public router on purpose: the parent proxy relays the public API
//! to anyone, while the control listener (a separate vsock port in Nitro mode, a loopback
//! port or Unix socket in mock mode) is reachable only from the parent. The bodies are
//! `tandem_core::parent::control`'s; a credential body is never logged.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tandem_core::parent::control::{
    CREDENTIALS_PATH, CredentialsAccepted, ParentTime, PushedCredentials, TIME_PATH, TimeAccepted,
};

use crate::api::{ApiJson, AppState};
use crate::error::EnclaveError;

/// The control router.
pub fn control_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(CREDENTIALS_PATH, post(push_credentials))
        .route(TIME_PATH, post(push_time))
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

async fn push_time(State(state): State<Arc<AppState>>, ApiJson(t): ApiJson<ParentTime>) -> Json<TimeAccepted> {
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Json(TimeAccepted {
        drift_ms: state.clock.observe(t.unix_millis, ours),
    })
}
