//! Everything the parent instance runs, from one configuration, started by one call.
//!
//! ```text
//!  ParentConfig ──▶ Parent::start ──▶ Parent::run(shutdown)
//!                   (check, load,       ├─ HTTPS proxy (+ /metrics)        always
//!                    bind every         ├─ blob service                    blob_service
//!                    listener)          ├─ enclave log receiver            enclave_logs
//!                                       ├─ clock push                      enclave_control
//!                                       └─ credential push                 credentials (needs enclave_control)
//! ```
//!
//! The binary is clap → [`ParentConfig`] → [`run`]; tests start the parent the same way.
//! A service is configured or it is not: there is no second place where one has to be
//! remembered, which is how the credential push was once parsed but never started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::Addr;
use tandem_io::blob_dir::BlobDir;
use tandem_io::net::Listener;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ProxyConfig;
use crate::enclave::control::{ControlClient, push_time_loop};
use crate::enclave::credentials::{CredentialPush, push_loop};
use crate::enclave::{blobs, logs};
use crate::error::SetupError;
use crate::server::{Proxy, serve};

/// How often the parent's clock is pushed to the enclave.
pub const CLOCK_PUSH_EVERY: Duration = Duration::from_secs(60);

/// The parent's blob service: a directory served to an enclave that has no disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobService {
    /// The blob directory (created 0700).
    pub dir: PathBuf,
    /// Where the enclave reaches it (`vsock://any:7000` on a Nitro parent).
    pub listen: Addr,
}

/// Everything the parent runs, and where.
#[derive(Debug, Clone)]
pub struct ParentConfig {
    /// The HTTPS front: the enclave's address, TLS, limits, rates, timeouts.
    pub proxy: ProxyConfig,
    /// Where HTTPS is served.
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served (plain HTTP: a private address), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The enclave's control listener: the clock is pushed there, and the credentials.
    pub enclave_control: Option<Addr>,
    /// AWS credentials to push to the enclave (needs `enclave_control`).
    pub credentials: Option<CredentialPush>,
    /// Where the enclave's log stream is received.
    pub enclave_logs: Option<Addr>,
    /// The blob service, for an enclave that keeps its blobs on the parent.
    pub blob_service: Option<BlobService>,
}

impl ParentConfig {
    /// The HTTPS front alone, on `listen`; no parent services.
    pub fn new(proxy: ProxyConfig, listen: SocketAddr) -> Self {
        ParentConfig {
            proxy,
            listen,
            metrics_listen: None,
            enclave_control: None,
            credentials: None,
            enclave_logs: None,
            blob_service: None,
        }
    }

    /// Refuses what cannot work: credentials with nowhere to push them, and addresses
    /// that cannot be dialled (`enclave_control`) or bound by this process.
    pub fn validate(&self) -> Result<(), SetupError> {
        if self.credentials.is_some() && self.enclave_control.is_none() {
            return Err(SetupError::Config(
                "credentials are pushed to the enclave's control listener: set the enclave control address".into(),
            ));
        }
        let dialled = std::iter::once(&self.proxy.enclave).chain(self.enclave_control.as_ref());
        for addr in dialled {
            addr.check_dial().map_err(|e| SetupError::Config(e.to_string()))?;
        }
        Ok(())
    }
}

/// The addresses the parent is bound to (the real ports, after binding port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// HTTPS.
    pub https: SocketAddr,
    /// `/metrics`.
    pub metrics: Option<SocketAddr>,
    /// The blob service.
    pub blob_service: Option<Addr>,
    /// The enclave log receiver.
    pub enclave_logs: Option<Addr>,
}

/// A parent with everything loaded and bound, ready to [`run`](Parent::run).
pub struct Parent {
    proxy: Proxy,
    https: TcpListener,
    metrics: Option<TcpListener>,
    blobs: Option<(Listener, Arc<BlobDir>)>,
    logs: Option<Listener>,
    control: Option<ControlClient>,
    credentials: Option<CredentialPush>,
    bound: Bound,
}

fn listen_error(addr: impl ToString) -> impl FnOnce(std::io::Error) -> SetupError {
    move |source| SetupError::Listen {
        addr: addr.to_string(),
        source,
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SetupError> {
    let listener = TcpListener::bind(addr).await.map_err(listen_error(addr))?;
    let bound = listener.local_addr().map_err(listen_error(addr))?;
    Ok((listener, bound))
}

async fn bind(addr: &Addr) -> Result<(Listener, Addr), SetupError> {
    let listener = Listener::bind(addr).await.map_err(listen_error(addr))?;
    let bound = listener.local_addr().map_err(listen_error(addr))?;
    Ok((listener, bound))
}

impl Parent {
    /// Checks `config`, loads the certificates and API keys, opens the blob directory and
    /// binds every listener: every setup error surfaces here, before anything is served.
    pub async fn start(config: ParentConfig) -> Result<Parent, SetupError> {
        config.validate()?;
        let proxy = Proxy::new(config.proxy.clone())?;
        let (https, https_addr) = bind_tcp(config.listen).await?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let blobs = match &config.blob_service {
            Some(service) => {
                let store = Arc::new(BlobDir::open(&service.dir)?);
                let (listener, bound) = bind(&service.listen).await?;
                Some((listener, store, bound))
            }
            None => None,
        };
        let logs = match &config.enclave_logs {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let bound = Bound {
            https: https_addr,
            metrics: metrics.as_ref().map(|(_, a)| *a),
            blob_service: blobs.as_ref().map(|(_, _, a)| a.clone()),
            enclave_logs: logs.as_ref().map(|(_, a)| a.clone()),
        };
        Ok(Parent {
            proxy,
            https,
            metrics: metrics.map(|(l, _)| l),
            blobs: blobs.map(|(l, store, _)| (l, store)),
            logs: logs.map(|(l, _)| l),
            control: config.enclave_control.map(ControlClient::new),
            credentials: config.credentials,
            bound,
        })
    }

    /// Where the parent is bound.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Runs every configured service until `shutdown`, then lets each drain; returns when
    /// all have stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        if let Some((listener, store)) = self.blobs {
            tracing::info!(addr = %self.bound.blob_service.as_ref().map(Addr::to_string).unwrap_or_default(), "blob service started");
            tasks.spawn(blobs::serve(listener, store, shutdown.clone()));
        }
        if let Some(listener) = self.logs {
            tracing::info!(addr = %self.bound.enclave_logs.as_ref().map(Addr::to_string).unwrap_or_default(), "receiving enclave logs");
            tasks.spawn(logs::receive(listener, shutdown.clone()));
        }
        if let Some(control) = self.control {
            if let Some(push) = self.credentials {
                tracing::info!(control = %control.addr(), source = ?push.source, "pushing AWS credentials to the enclave");
                tasks.spawn(push_loop(push, control.clone(), shutdown.clone()));
            }
            tasks.spawn(push_time_loop(control, CLOCK_PUSH_EVERY, shutdown.clone()));
        }
        tasks.spawn(serve(self.proxy, self.https, self.metrics, shutdown));
        tasks.close();
        tasks.wait().await;
    }
}

/// Starts every parent service of `config` and runs them until `shutdown`: the entry
/// point of `tandem-proxy`. Setup errors come back before anything is served.
pub async fn run(config: ParentConfig, shutdown: CancellationToken) -> Result<(), SetupError> {
    Parent::start(config).await?.run(shutdown).await;
    Ok(())
}
