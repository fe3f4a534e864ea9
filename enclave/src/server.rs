//! Building the server from a [`Config`] and running it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::{AppState, router};
use crate::attester::{AttestError, Attester, MockAttester};
use crate::config::{Config, ListenAddr, StoreKind};
use crate::keystore::{BlobStore, FileBlobStore, Keystore, KeystoreError, MemoryBlobStore, Sealer};
use crate::replay::ReplayCache;
use crate::sessions::Sessions;
use tandem_core::channel::ChannelKeypair;

/// A configured server, ready to serve on a listener.
pub struct Server {
    state: Arc<AppState>,
    max_body_bytes: usize,
    dev_root: Option<std::path::PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The keystore (master key, blob directory) could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[from] KeystoreError),
    /// The attester could not be set up.
    #[error("attestation: {0}")]
    Attest(#[from] AttestError),
}

impl Server {
    /// Opens the keystore (creating the master key on first start) and builds the state.
    pub fn open(config: &Config) -> Result<Self, OpenError> {
        let sealer = Sealer::load_or_create_master_key(&config.data_dir.join("master.key"))?;
        let store: Arc<dyn BlobStore> = match config.store {
            StoreKind::File => Arc::new(FileBlobStore::open(config.data_dir.join("accounts"))?),
            StoreKind::Memory => Arc::new(MemoryBlobStore::default()),
        };
        let mock = MockAttester::load_or_create(&config.data_dir.join("attestation"))?;
        let dev_root = Some(mock.root_pem_path().to_path_buf());
        let attester: Arc<dyn Attester> = Arc::new(mock);
        let state = AppState {
            sessions: Sessions::new(config.session_ttl, config.max_sessions),
            keystore: Keystore::new(store, sealer),
            mock_mode: attester.is_mock(),
            channel: ChannelKeypair::generate(),
            attester,
            replay: ReplayCache::new(Duration::from_secs(900), 1 << 20),
        };
        Ok(Server {
            state: Arc::new(state),
            max_body_bytes: config.max_body_bytes,
            dev_root,
        })
    }

    /// The router with its limits: body size, a 60 s request timeout, request tracing.
    pub fn app(&self) -> axum::Router {
        router(self.state.clone())
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                Duration::from_secs(60),
            ))
            .layer(TraceLayer::new_for_http())
    }

    /// In mock mode, the development attestation root (PEM file) clients must be told to
    /// trust (`danger_allow_mock`).
    pub fn dev_root_pem(&self) -> Option<&std::path::Path> {
        self.dev_root.as_deref()
    }

    /// The shared state (sessions, keystore).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

/// A bound listener: TCP or Unix.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Binds `addr`. For a Unix path, a stale socket file is replaced.
    pub async fn bind(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(tokio::net::TcpListener::bind(a).await?)),
            ListenAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Ok(Listener::Unix(tokio::net::UnixListener::bind(p)?))
            }
        }
    }

    /// The bound address, for logs (and to learn the port when binding port 0).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix://{}", p.display())))
                .unwrap_or_default(),
        }
    }
}

/// Serves `server` on `listener` until `shutdown` is cancelled, then drains in-flight
/// requests. A background task reaps expired sessions.
pub async fn run(server: Server, listener: Listener, shutdown: CancellationToken) -> std::io::Result<()> {
    let state = server.state.clone();
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
    let result = match listener {
        Listener::Tcp(l) => axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await,
        Listener::Unix(l) => axum::serve(l, app).with_graceful_shutdown(stop.cancelled_owned()).await,
    };
    shutdown.cancel();
    let _ = reaper.await;
    result
}
