//! The seam between the proxy and the enclave: one [`Connector`] that opens a byte stream
//! to the enclave over TCP, a Unix socket or vsock, chosen by an [`EnclaveAddr`].
//!
//! In Nitro mode the enclave is reachable only over vsock (`vsock://16:5000`); on a laptop
//! and in CI the same code runs over TCP or a Unix socket. The relay's HTTP client sees
//! only [`EnclaveStream`], so the transport is a configuration choice, not a code path.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_vsock::{VsockAddr, VsockStream};

/// Where the enclave listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnclaveAddr {
    /// `tcp://HOST:PORT` (mock mode).
    Tcp {
        /// Host name or IP address (IPv6 in brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// `unix:///path/to/socket` (mock mode).
    Unix(PathBuf),
    /// `vsock://CID:PORT` (Nitro: the enclave's context id, e.g. 16, and port 5000).
    Vsock {
        /// The enclave's context id.
        cid: u32,
        /// The port.
        port: u32,
    },
}

impl FromStr for EnclaveAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path, e.g. unix:///run/tandem.sock".into());
            }
            return Ok(EnclaveAddr::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vsock://") {
            let bad = || format!("{s:?} is not vsock://CID:PORT, e.g. vsock://16:5000");
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            return Ok(EnclaveAddr::Vsock {
                cid: cid.parse().map_err(|_| bad())?,
                port: port.parse().map_err(|_| bad())?,
            });
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let bad = || format!("{s:?} is not tcp://HOST:PORT");
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let bracketed = host.starts_with('[') && host.ends_with(']');
            if host.is_empty() || (host.contains(':') && !bracketed) || host.contains('/') {
                return Err(bad());
            }
            return Ok(EnclaveAddr::Tcp {
                host: host.to_string(),
                port,
            });
        }
        Err(format!(
            "{s:?}: the enclave address must be tcp://HOST:PORT, unix:///path or vsock://CID:PORT"
        ))
    }
}

impl std::fmt::Display for EnclaveAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnclaveAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            EnclaveAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            EnclaveAddr::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

/// Opens streams to the enclave. Cheap to clone (the HTTP client's pool holds clones).
#[derive(Debug, Clone)]
pub struct Connector {
    addr: Arc<EnclaveAddr>,
    timeout: Duration,
}

impl Connector {
    /// A connector to `addr` whose connection attempts give up after `timeout`.
    pub fn new(addr: EnclaveAddr, timeout: Duration) -> Self {
        Connector {
            addr: Arc::new(addr),
            timeout,
        }
    }

    /// The enclave's address.
    pub fn addr(&self) -> &EnclaveAddr {
        &self.addr
    }

    /// Opens one stream to the enclave.
    pub async fn connect(&self) -> io::Result<EnclaveStream> {
        let attempt = async {
            match &*self.addr {
                EnclaveAddr::Tcp { host, port } => {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let stream = TcpStream::connect((host, *port)).await?;
                    // Small request/response exchanges: do not wait to fill a segment.
                    stream.set_nodelay(true)?;
                    Ok(EnclaveStream::Tcp(stream))
                }
                EnclaveAddr::Unix(path) => Ok(EnclaveStream::Unix(UnixStream::connect(path).await?)),
                EnclaveAddr::Vsock { cid, port } => Ok(EnclaveStream::Vsock(
                    VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
                )),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to the enclave timed out",
            )),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<EnclaveStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Ignores the URI: every request goes to the one enclave.
    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

/// A connected stream to the enclave, whatever the transport.
#[derive(Debug)]
pub enum EnclaveStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
    /// vsock.
    Vsock(VsockStream),
}

impl Connection for EnclaveStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for EnclaveStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EnclaveStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            EnclaveStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            EnclaveStream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EnclaveStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EnclaveStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            EnclaveStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            EnclaveStream::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EnclaveStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            EnclaveStream::Unix(s) => Pin::new(s).poll_flush(cx),
            EnclaveStream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EnclaveStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            EnclaveStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            EnclaveStream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enclave_addresses() {
        assert_eq!(
            "tcp://127.0.0.1:5000".parse::<EnclaveAddr>().unwrap(),
            EnclaveAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 5000
            }
        );
        assert_eq!(
            "tcp://[::1]:5000".parse::<EnclaveAddr>().unwrap(),
            EnclaveAddr::Tcp {
                host: "[::1]".into(),
                port: 5000
            }
        );
        assert_eq!(
            "tcp://enclave.internal:80".parse::<EnclaveAddr>().unwrap().to_string(),
            "tcp://enclave.internal:80"
        );
        assert_eq!(
            "unix:///run/tandem.sock".parse::<EnclaveAddr>().unwrap(),
            EnclaveAddr::Unix("/run/tandem.sock".into())
        );
        assert_eq!(
            "vsock://16:5000".parse::<EnclaveAddr>().unwrap(),
            EnclaveAddr::Vsock { cid: 16, port: 5000 }
        );
        assert_eq!(
            "vsock://16:5000".parse::<EnclaveAddr>().unwrap().to_string(),
            "vsock://16:5000"
        );
        for bad in [
            "127.0.0.1:5000",
            "tcp://127.0.0.1",
            "tcp://:5000",
            "tcp://::1:5000",
            "tcp://host:99999",
            "unix://",
            "vsock://16",
            "vsock://x:5000",
            "vsock://16:-1",
            "http://127.0.0.1:5000",
        ] {
            assert!(bad.parse::<EnclaveAddr>().is_err(), "{bad} must be refused");
        }
    }

    #[tokio::test]
    async fn tcp_and_unix_connectors_reach_a_listener() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let c = Connector::new(
            format!("tcp://127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        );
        assert!(matches!(c.connect().await.unwrap(), EnclaveStream::Tcp(_)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let _unix = tokio::net::UnixListener::bind(&path).unwrap();
        let c = Connector::new(EnclaveAddr::Unix(path), Duration::from_secs(2));
        assert!(matches!(c.connect().await.unwrap(), EnclaveStream::Unix(_)));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        drop(tcp);
        let c = Connector::new(
            format!("tcp://127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        );
        assert!(c.connect().await.is_err());
    }
}
