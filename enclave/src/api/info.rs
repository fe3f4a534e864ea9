//! The routes that are not flows: health, attestation, an account's public data.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tandem_core::wire::{AccountInfo, AttestationRequest, AttestationResponse, B64, HealthResponse};

use super::{ApiJson, AppState, HeaderRequestId, cpu, now};
use crate::error::EnclaveError;

pub(super) async fn health(State(state): State<Arc<AppState>>) -> Json<HealthResponse> {
    let ready = state.boot.is_ready() && state.keystore.is_ready();
    let status = if ready {
        "ok"
    } else if state.boot.has_failed() {
        "failed"
    } else {
        "starting"
    };
    let stages = state
        .boot
        .stages()
        .into_iter()
        .map(|(name, st, detail, elapsed_ms)| tandem_core::wire::BootStage {
            name,
            state: st.as_str().into(),
            detail,
            elapsed_ms,
        })
        .collect();
    Json(HealthResponse {
        status: status.into(),
        timestamp: now(),
        mock_mode: state.mock_mode,
        version: env!("CARGO_PKG_VERSION").into(),
        ready: Some(ready),
        clock_drift_ms: state.clock.measured().then(|| state.clock.millis()),
        stages,
    })
}

pub(super) async fn attestation(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<AttestationRequest>,
) -> Response {
    let rid = hid.or_body(&req.request_id);
    let result = async {
        if req.nonce.0.is_empty() || req.nonce.0.len() > 512 {
            return Err(EnclaveError::InvalidRequest("nonce must be 1 to 512 bytes".into()));
        }
        let _slot = state
            .attestation_slots
            .try_acquire()
            .map_err(|_| EnclaveError::Busy("too many attestation requests at once"))?;
        let attester = state.attester.clone();
        let public_key = state.channel.public_key();
        let nonce = req.nonce.0;
        let document = cpu(move || attester.attest(&public_key, &nonce))
            .await?
            .map_err(|e| EnclaveError::Attestation(e.to_string()))?;
        Ok(AttestationResponse {
            request_id: rid.clone(),
            document: B64(document),
        })
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response_with(rid),
    }
}

/// An account's public data. Unauthenticated (the host can answer it itself): clients
/// use it for display; the authenticated check that the enclave holds the account is the
/// recovery flow.
pub(super) async fn get_public_key(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<tandem_core::wire::GetPublicKeyRequest>,
) -> Response {
    let rid = hid.or_body(&req.request_id);
    match state.keystore.load(req.account_id).await {
        Ok(account) => Json(AccountInfo {
            request_id: rid,
            account_id: account.id,
            address: account.current.address().to_checksum(),
            public_key: account.public_key(),
        })
        .into_response(),
        Err(e) => EnclaveError::from(e).into_response_with(rid),
    }
}
