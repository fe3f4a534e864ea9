//! The HTTP API (docs/ARCHITECTURE.md §4): the router, the shared state, and one file per
//! flow.
//!
//! ```text
//!  mod.rs      router and AppState
//!  extract.rs  JSON bodies and request ids, with wire errors for bad input
//!  info.rs     health, attestation, getPublicKey
//!  flow.rs     the generic start and step handlers every flow goes through: load the
//!              account, open the sealed channel, refuse replays, check the device's
//!              authorization, run the machine on the blocking pool, serialise the OT
//!              consistency step per account and record bans, persist, seal the answer
//!  dkg.rs, sign.rs, refresh.rs, recover.rs
//!              each flow's own rules: which share it uses, what it persists before DONE
//! ```
//!
//! Handlers parse and check cheaply on the async runtime, then run every protocol step on
//! the blocking pool (`spawn_blocking`), so a two-second DKG never stalls other requests.

mod dkg;
mod extract;
mod flow;
mod info;
mod recover;
mod refresh;
mod sign;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tandem_core::channel::ChannelKeypair;

pub use extract::{ApiJson, HeaderRequestId};

use crate::attester::Attester;
use crate::error::EnclaveError;
use crate::keystore::Keystore;
use crate::replay::ReplayCache;
use crate::sessions::Sessions;

/// How far a device's clock may be from ours for its authorization to count.
pub const AUTH_SKEW_SECS: u64 = 300;

/// How many attestation documents are made at once (each is an NSM call on the blocking
/// pool; the route needs no authentication, so it is bounded — review finding L8).
pub const ATTESTATION_SLOTS: usize = 8;

/// Shared state of all handlers.
pub struct AppState {
    /// Live sessions.
    pub sessions: Sessions,
    /// Sealed account storage (and, through it, the per-account rules).
    pub keystore: Keystore,
    /// Whether this is a mock-platform server (reported by `/v1/health`).
    pub mock_mode: bool,
    /// The channel key pair, made at boot and held only in memory.
    pub channel: ChannelKeypair,
    /// Who signs attestation documents.
    pub attester: Arc<dyn Attester>,
    /// Channels of recent flow starts, to refuse replays.
    pub replay: ReplayCache,
    /// Attestation documents being made now.
    pub attestation_slots: tokio::sync::Semaphore,
    /// The boot sequence's progress (reported by `/v1/health`).
    pub boot: Arc<crate::boot::BootStatus>,
    /// Where the parent's credential pushes land (KMS key wrapper only).
    pub credentials: Option<crate::kms::credentials::CredentialSlot>,
    /// The wall-clock drift from the parent, as last pushed by it.
    pub clock: crate::runtime::ClockDrift,
}

/// The API router. Body size is limited by the caller (see `server`).
pub fn router(state: Arc<AppState>) -> Router {
    use flow::{start, step};
    Router::new()
        .route("/v1/health", get(info::health))
        .route("/v1/attestation", post(info::attestation))
        .route("/v1/getPublicKey", post(info::get_public_key))
        .route("/v1/createAccount/start", post(start::<dkg::Dkg>))
        .route("/v1/createAccount/step", post(step::<dkg::Dkg>))
        .route("/v1/sign/start", post(start::<sign::Sign>))
        .route("/v1/sign/step", post(step::<sign::Sign>))
        .route("/v1/refresh/start", post(start::<refresh::Refresh>))
        .route("/v1/refresh/step", post(step::<refresh::Refresh>))
        .route("/v1/recover/start", post(start::<recover::Recover>))
        .fallback(|| async { EnclaveError::InvalidRequest("no such route".into()) })
        .with_state(state)
}

/// The clock, Unix seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs protocol work on the blocking pool.
pub(crate) async fn cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, EnclaveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| EnclaveError::Internal("protocol task failed"))
}
