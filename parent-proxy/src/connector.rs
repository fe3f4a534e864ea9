//! The seam between the proxy and the enclave: one [`Connector`] that opens a byte stream
//! to the enclave at a [`tandem_core::Addr`], through the one dialer every binary shares
//! (`tandem_io::net`).
//!
//! In Nitro mode the enclave is reachable only over vsock (`vsock://16:5000`); on a laptop
//! and in CI the same code runs over TCP or a Unix socket. The relay's HTTP client and the
//! control calls see only a [`Stream`], so the transport is a configuration choice, not a
//! code path.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tandem_core::Addr;
pub use tandem_io::net::Stream;

/// Opens streams to one address. Cheap to clone (the HTTP client's pool holds clones).
#[derive(Debug, Clone)]
pub struct Connector {
    addr: Arc<Addr>,
    timeout: Duration,
}

impl Connector {
    /// A connector to `addr` whose connection attempts give up after `timeout`.
    pub fn new(addr: Addr, timeout: Duration) -> Self {
        Connector {
            addr: Arc::new(addr),
            timeout,
        }
    }

    /// The address dialled.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Opens one stream.
    pub async fn connect(&self) -> io::Result<Stream> {
        tandem_io::net::connect(&self.addr, self.timeout).await
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Ignores the URI: every request goes to the one address.
    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_unix_connectors_reach_a_listener() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = Connector::new(tcp.local_addr().unwrap().into(), Duration::from_secs(2));
        assert!(matches!(c.connect().await.unwrap(), Stream::Tcp(_)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let _unix = tokio::net::UnixListener::bind(&path).unwrap();
        let c = Connector::new(Addr::Unix(path), Duration::from_secs(2));
        assert!(matches!(c.connect().await.unwrap(), Stream::Unix(_)));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: Addr = tcp.local_addr().unwrap().into();
        drop(tcp);
        let c = Connector::new(addr, Duration::from_secs(2));
        assert!(c.connect().await.is_err());
    }
}
