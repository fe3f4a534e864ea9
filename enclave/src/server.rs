//! Building the server from a [`Config`] and running it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::{ATTESTATION_SLOTS, AUTH_SKEW_SECS, AppState, router};
use crate::attester::{AttestError, Attester, MockAttester, NitroAttester};
use crate::boot::{BootPlan, BootStatus};
use crate::config::{Config, StoreKind, WrapperKind};
use crate::guard::{AccountGuard, MemoryGuard};
use crate::keystore::{
    BlobStore, FileBlobStore, KeyWrapper, Keystore, KeystoreError, LocalKeyWrapper, MemoryBlobStore, ParentBlobStore,
    WrapError,
};
use crate::kms::credentials::CredentialSlot;
use crate::kms::{KmsKeyWrapper, RecipientMode};
use crate::replay::ReplayCache;
use crate::sessions::Sessions;
use tandem_core::channel::ChannelKeypair;

/// A configured server, ready to serve on a listener.
pub struct Server {
    state: Arc<AppState>,
    max_body_bytes: usize,
    dev_root: Option<std::path::PathBuf>,
    /// The boot sequence still to run (KMS: it waits for credentials, so it runs beside
    /// the API in [`run`]); `None` once booted.
    pending_boot: std::sync::Mutex<Option<BootPlan>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The keystore (blob directory, key ring) could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[from] KeystoreError),
    /// The key wrapper (master key file, KMS client) could not be set up.
    #[error("key wrapper: {0}")]
    Wrap(#[from] WrapError),
    /// The attester could not be set up.
    #[error("attestation: {0}")]
    Attest(#[from] AttestError),
    /// The configuration mixes modes (e.g. Nitro mode with a local master key).
    #[error("configuration: {0}")]
    Config(String),
    /// The boot sequence failed (see the stage that failed in the log).
    #[error("boot: {0}")]
    Boot(String),
}

impl Server {
    /// Builds the server from `config`. With the local key wrapper the whole boot
    /// sequence runs here (it takes milliseconds), so the server is ready to sign when
    /// this returns; with KMS the boot runs in [`run`], beside the API.
    pub fn open(config: &Config) -> Result<Self, OpenError> {
        Self::open_with(config, None, None)
    }

    /// [`Server::open`] with `store` instead of the one `config` names (tests put a
    /// hostile or failing store here).
    pub fn open_with_store(config: &Config, store: Arc<dyn BlobStore>) -> Result<Self, OpenError> {
        Self::open_with(config, Some(store), None)
    }

    /// [`Server::open`] with another backend of the per-account rules (the multi-instance
    /// store-backed one; a no-op one in the benchmark that prices the checks).
    pub fn open_with_guard(config: &Config, guard: Arc<dyn AccountGuard>) -> Result<Self, OpenError> {
        Self::open_with(config, None, Some(guard))
    }

    fn open_with(
        config: &Config,
        store: Option<Arc<dyn BlobStore>>,
        guard: Option<Arc<dyn AccountGuard>>,
    ) -> Result<Self, OpenError> {
        let attester: Arc<dyn Attester>;
        let mut dev_root = None;
        if config.nitro {
            if matches!(config.wrapper, WrapperKind::Local)
                || matches!(
                    config.wrapper,
                    WrapperKind::Kms {
                        danger_no_recipient: true,
                        ..
                    }
                )
            {
                return Err(OpenError::Config(
                    "Nitro mode needs the KMS key wrapper with an attested recipient".into(),
                ));
            }
            if !matches!(config.store, StoreKind::Parent(_)) {
                return Err(OpenError::Config(
                    "Nitro mode has no disk: use the parent's blob store (parent:vsock://3:PORT)".into(),
                ));
            }
            attester = Arc::new(NitroAttester::open()?);
        } else {
            let mock =
                MockAttester::load_or_create(&config.data_dir.join("attestation"))?.with_image(&config.mock_image)?;
            dev_root = Some(mock.root_pem_path().to_path_buf());
            attester = Arc::new(mock);
        }
        let store: Arc<dyn BlobStore> = match (store, &config.store) {
            (Some(store), _) => store,
            (None, StoreKind::File) => Arc::new(FileBlobStore::open(config.data_dir.join("accounts"))?),
            (None, StoreKind::Memory) => Arc::new(MemoryBlobStore::default()),
            (None, StoreKind::Parent(addr)) => Arc::new(ParentBlobStore::new(addr.clone())),
        };
        let (wrapper, credentials): (Arc<dyn KeyWrapper>, Option<CredentialSlot>) = match &config.wrapper {
            WrapperKind::Local => (
                Arc::new(LocalKeyWrapper::load_or_create(&config.data_dir.join("master.key"))?),
                None,
            ),
            WrapperKind::Kms {
                kms,
                danger_no_recipient,
            } => {
                let slot = CredentialSlot::new();
                let client = crate::kms::client(kms, slot.clone())?;
                let mode = if *danger_no_recipient {
                    tracing::warn!("DANGER: KMS without an attested recipient (emulator only)");
                    RecipientMode::DangerNoRecipient
                } else {
                    RecipientMode::Attested(attester.clone())
                };
                (
                    Arc::new(KmsKeyWrapper::new(client, kms.key_id.clone(), mode)),
                    Some(slot),
                )
            }
        };
        let channel = ChannelKeypair::generate();
        let plan = BootPlan {
            attester: attester.clone(),
            channel_public_key: channel.public_key().to_vec(),
            wrapper,
            credentials: credentials.clone(),
        };
        let state = AppState {
            sessions: Sessions::new(config.session_ttl, config.max_sessions),
            keystore: Keystore::with_options(
                store,
                guard.unwrap_or_else(|| Arc::new(MemoryGuard::default())),
                config.cache_accounts,
            ),
            mock_mode: attester.is_mock(),
            channel,
            attester,
            // Authorizations are accepted within ±AUTH_SKEW_SECS: remember each channel
            // for at least twice that.
            replay: ReplayCache::new(Duration::from_secs(2 * AUTH_SKEW_SECS + 60), config.max_flow_starts),
            attestation_slots: tokio::sync::Semaphore::new(ATTESTATION_SLOTS),
            boot: Arc::new(BootStatus::new()),
            credentials,
            clock: crate::runtime::ClockDrift::default(),
        };
        let server = Server {
            state: Arc::new(state),
            max_body_bytes: config.max_body_bytes,
            dev_root,
            pending_boot: std::sync::Mutex::new(None),
        };
        if matches!(config.wrapper, WrapperKind::Local) {
            server.boot_now(plan)?;
        } else if let Ok(mut slot) = server.pending_boot.lock() {
            *slot = Some(plan);
        }
        Ok(server)
    }

    /// Runs the boot sequence to completion on a helper thread with its own runtime, so
    /// `open` stays synchronous and callable from inside an async context.
    fn boot_now(&self, plan: BootPlan) -> Result<(), OpenError> {
        let state = &self.state;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| OpenError::Boot(format!("boot runtime: {e}")))?;
                    rt.block_on(crate::boot::run(plan, &state.keystore, &state.boot))
                        .map_err(OpenError::Boot)
                })
                .join()
                .map_err(|_| OpenError::Boot("boot thread panicked".into()))?
        })
    }

    /// The control router (credential pushes from the parent) with the same limits.
    pub fn control_app(&self) -> axum::Router {
        crate::parent::control::control_router(self.state.clone())
            .layer(DefaultBodyLimit::max(64 * 1024))
            .layer(TimeoutLayer::with_status_code(
                http::StatusCode::GATEWAY_TIMEOUT,
                Duration::from_secs(10),
            ))
    }

    /// The router with its limits: body size, a 60 s request timeout, request tracing.
    pub fn app(&self) -> axum::Router {
        router(self.state.clone())
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                http::StatusCode::GATEWAY_TIMEOUT,
                Duration::from_secs(60),
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
    }

    /// In mock mode, the development attestation root (PEM file) clients must be told to
    /// trust (`danger_allow_mock`).
    pub fn dev_root_pem(&self) -> Option<&std::path::Path> {
        self.dev_root.as_deref()
    }

    /// In mock mode, the mock image's measurements file (`enclave-pcr.json`) clients pin.
    pub fn measurements_path(&self) -> Option<std::path::PathBuf> {
        self.dev_root.as_deref().map(|p| p.with_file_name("enclave-pcr.json"))
    }

    /// The shared state (sessions, keystore).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

/// The span every request's log lines carry: method, path and the request id the proxy
/// assigned (`x-request-id`), so one request can be followed from the proxy's log into the
/// enclave's.
fn request_span(req: &http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %request_id)
}

/// The listener the API and the control API are served on: any [`tandem_core::Addr`]
/// (TCP, Unix, vsock), bound with `Listener::bind(&addr)`.
pub use tandem_io::net::Listener;

/// Serves `server` on `listener` until `shutdown` is cancelled, then drains in-flight
/// requests. A background task reaps expired sessions.
pub async fn run(server: Server, listener: Listener, shutdown: CancellationToken) -> std::io::Result<()> {
    run_with_control(server, listener, None, shutdown).await
}

/// Like [`run`], and also serves the control API (credential pushes from the parent) on
/// `control`. A pending boot sequence (KMS) runs beside the API: `/v1/health` shows its
/// stages while it waits.
pub async fn run_with_control(
    server: Server,
    listener: Listener,
    control: Option<Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = server.state.clone();
    let plan = server.pending_boot.lock().ok().and_then(|mut p| p.take());
    let boot = plan.map(|plan| {
        let state = state.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = crate::boot::run(plan, &state.keystore, &state.boot) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "boot failed; the enclave will not sign until restarted");
                    }
                }
                _ = stop.cancelled() => {}
            }
        })
    });
    let control_task = control.map(|l| {
        let app = server.control_app();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await {
                tracing::error!(error = %e, "control listener failed");
            }
        })
    });
    let reaper_stop = shutdown.clone();
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    state.replay.prune();
                    let n = state.sessions.reap();
                    if n > 0 {
                        tracing::info!(expired = n, "reaped expired sessions");
                    }
                }
                _ = reaper_stop.cancelled() => break,
            }
        }
    });
    let app = server.app();
    let stop = shutdown.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = reaper.await;
    if let Some(t) = boot {
        let _ = t.await;
    }
    if let Some(t) = control_task {
        let _ = t.await;
    }
    result
}
