//! Accepting and serving client connections until shutdown.
//!
//! The caller owns the listeners and the shutdown signal ([`serve`]), so the parent
//! ([`crate::Parent`]), `tandem-dev demo` and the tests start the HTTPS front the same
//! way, on any port.
//!
//! Per connection: a slot from the connection cap, a TLS handshake under a timeout, then
//! HTTP/2 or HTTP/1.1 as ALPN chose, with hyper's header-read timeout against slowloris
//! (HTTP/1.1) and an idle check that closes connections with no request for a while.
//! On shutdown the listener stops, connections are asked to finish (HTTP/2 `GOAWAY`,
//! HTTP/1.1 close after the current response), and anything still open after the drain
//! timeout is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tandem_core::Addr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ProxyConfig;
use crate::connector::Connector;
use crate::error::SetupError;
use crate::handler;
use crate::hardening::{ApiKeys, ConnectionSlots, IdleTracker};
use crate::observability::{Metrics, serve_metrics};
use crate::ratelimit::RateLimiters;
use crate::relay::Relay;
use crate::tls;

/// How often rate-limit tables are swept of clients that went quiet.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// State shared by every connection and request.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) relay: Relay,
    pub(crate) limits: RateLimiters,
    pub(crate) api_keys: Option<ApiKeys>,
    pub(crate) metrics: Arc<Metrics>,
    tls: TlsAcceptor,
}

/// A configured proxy, ready to [`serve`]: certificates and API keys are loaded, so every
/// configuration error surfaces here, before a port is served.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Loads the certificate, key and API keys named in `config`.
    pub fn new(config: ProxyConfig) -> Result<Self, SetupError> {
        config.validate()?;
        let tls = tls::server_config(&config.tls)?;
        Self::with_tls_config(config, tls)
    }

    /// Like [`Proxy::new`], with a ready rustls configuration instead of `config.tls`'s
    /// files (for callers that hold their certificate in memory). The configuration should
    /// come from [`tls::server_config_from_der`] to keep the version policy and ALPN.
    pub fn with_tls_config(config: ProxyConfig, tls: Arc<rustls::ServerConfig>) -> Result<Self, SetupError> {
        config.validate()?;
        let api_keys = config.api_keys.as_deref().map(ApiKeys::load).transpose()?;
        let connector = Connector::new(config.enclave.clone(), config.timeouts.enclave_connect);
        let relay = Relay::new(
            connector,
            config.timeouts.enclave,
            config.limits.max_response_bytes,
            config.limits.max_idle_enclave_connections,
        );
        let shared = Shared {
            limits: RateLimiters::new(&config.rates),
            relay,
            api_keys,
            metrics: Arc::new(Metrics::new()),
            tls: TlsAcceptor::from(tls),
            config,
        };
        Ok(Proxy {
            shared: Arc::new(shared),
        })
    }

    /// The proxy's metrics (also served on the metrics listener, if [`serve`] is given one).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }
}

/// Serves HTTPS on `listener` (and `GET /metrics` on `metrics_listener`, plain HTTP, if
/// given) until `shutdown` is cancelled, then drains: in-flight requests get up to the
/// configured drain timeout to finish.
///
/// Accept errors (e.g. out of file descriptors) are logged and retried with a backoff; they
/// do not stop the proxy.
pub async fn serve(
    proxy: Proxy,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    let shared = proxy.shared;
    let tracker = TaskTracker::new();
    if let Some(l) = metrics_listener {
        tracker.spawn(serve_metrics(l, shared.metrics.clone(), shutdown.clone()));
    }
    tracker.spawn(sweep_rate_limits(shared.clone(), shutdown.clone()));

    let slots = ConnectionSlots::new(shared.config.limits.max_connections);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = slots.acquire() => p,
            _ = shutdown.cancelled() => break,
        };
        let Some(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                tracker.spawn(serve_connection(shared.clone(), stream, peer, permit, shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    tracker.close();
    let grace = shared.config.timeouts.drain + Duration::from_secs(1);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout were dropped");
    }
}

/// A development proxy on a free loopback port with self-signed certificates: what
/// `tandem-dev demo` (and benchmarks) run in-process in front of an in-process enclave.
/// It stops when [`LocalProxy::shutdown`] is awaited or when it is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tandem_proxy::server::LocalProxy;
///
/// let dir = std::env::temp_dir().join("tandem-demo-tls");
/// let proxy = LocalProxy::start("tcp://127.0.0.1:5000".parse()?, &dir, |_config| {}).await?;
/// // An HTTPS client that trusts the development CA, for an SDK client of `proxy.url`.
/// let http = tandem_sdk::http_client_trusting(&proxy.ca_pem)?;
/// # let _ = http; Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalProxy {
    /// `https://127.0.0.1:PORT`: the base URL for the SDK.
    pub url: String,
    /// The development CA (PEM) that clients must trust, e.g. with
    /// `tandem_sdk::http_client_trusting`.
    pub ca_pem: Vec<u8>,
    /// Where the CA certificate is on disk (for a `--ca-cert` flag).
    pub ca_cert: PathBuf,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl LocalProxy {
    /// Writes (or reuses) development certificates for `127.0.0.1` and `localhost` in
    /// `tls_dir`, builds a proxy to `enclave` with the default configuration adjusted by
    /// `configure` (e.g. to raise rate limits for a benchmark), binds `127.0.0.1:0` and
    /// serves until shut down.
    pub async fn start(
        enclave: Addr,
        tls_dir: &Path,
        configure: impl FnOnce(&mut ProxyConfig),
    ) -> Result<LocalProxy, SetupError> {
        let certs = tls::write_self_signed(tls_dir, &["127.0.0.1".into(), "localhost".into(), "::1".into()])?;
        let ca_pem = std::fs::read(&certs.ca_cert).map_err(|source| SetupError::Read {
            path: certs.ca_cert.clone(),
            source,
        })?;
        let mut config = ProxyConfig::new(enclave, certs.tls_settings(false));
        configure(&mut config);
        let proxy = Proxy::new(config)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| SetupError::Listen {
                addr: "127.0.0.1:0".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SetupError::Listen {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(proxy, listener, None, stop.clone()));
        Ok(LocalProxy {
            url: format!("https://{addr}"),
            ca_pem,
            ca_cert: certs.ca_cert,
            stop,
            task: Some(task),
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout) and waits
    /// for the proxy to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sweep_rate_limits(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.limits.forget_idle(),
            _ = shutdown.cancelled() => break,
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let _open = shared.metrics.connection_opened();
    let timeouts = shared.config.timeouts.clone();
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(timeouts.tls_handshake, shared.tls.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.metrics.tls_failure();
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_failure();
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());

    let idle = IdleTracker::new();
    let service = {
        let shared = shared.clone();
        let idle = idle.clone();
        service_fn(move |req: hyper::Request<Incoming>| {
            let active = idle.begin();
            let shared = shared.clone();
            async move {
                let response = handler::handle(shared, peer.ip(), req).await;
                drop(active);
                Ok::<_, Infallible>(response)
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(64 * 1024)
        .max_headers(64);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(16 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    // ALPN already chose: skip the preface sniffing, which has no timeout of its own.
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);

    let check_every = (timeouts.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(check_every);
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tick.tick() => match closing {
                Some(since) if since.elapsed() > timeouts.drain => break,
                Some(_) => {}
                None => {
                    if idle.idle_for().is_some_and(|d| d >= timeouts.idle) {
                        tracing::debug!(peer = %peer, "closing idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
            },
        }
    }
}
