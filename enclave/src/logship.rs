//! Shipping the enclave's logs to the parent.
//!
//! In production a Nitro Enclave has no console, so its structured logs (JSON lines, with
//! the request id of the HTTP request they belong to) stream over vsock to the parent
//! proxy, which writes them into its own log (`tandem-proxy --enclave-logs`). In mock mode
//! the same stream runs over TCP.
//!
//! Logging must never block a request: lines go through a bounded queue and are dropped
//! (and counted) when the parent is slow or absent; the shipper reconnects with backoff.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Where to ship logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipAddr {
    /// `tcp://HOST:PORT` (mock mode).
    Tcp(String),
    /// `vsock://CID:PORT` (Nitro: the parent is CID 3).
    Vsock {
        /// The parent's context id.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl std::str::FromStr for ShipAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            if rest.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(format!("{s:?} is not tcp://HOST:PORT"));
            }
            return Ok(ShipAddr::Tcp(rest.to_string()));
        }
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or_else(|| format!("{s:?} is not vsock://CID:PORT"))?;
            let cid = cid.parse().map_err(|_| format!("{s:?}: bad CID"))?;
            let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
            return Ok(ShipAddr::Vsock { cid, port });
        }
        Err(format!(
            "{s:?}: the log destination must be tcp://HOST:PORT or vsock://CID:PORT"
        ))
    }
}

/// A `tracing` writer that queues each formatted line for the shipper.
#[derive(Clone)]
pub struct ShipWriter {
    tx: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

/// One log line being written.
pub struct ShipLine {
    buf: Vec<u8>,
    writer: ShipWriter,
}

impl Write for ShipLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ShipLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.writer.tx.try_send(std::mem::take(&mut self.buf)).is_err() {
            self.writer.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ShipWriter {
    type Writer = ShipLine;

    fn make_writer(&'a self) -> Self::Writer {
        ShipLine {
            buf: Vec::new(),
            writer: self.clone(),
        }
    }
}

impl ShipWriter {
    /// Lines dropped because the queue was full (the parent slow or away).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the shipper task on the current runtime; returns the writer for the JSON layer.
pub fn start(addr: ShipAddr) -> ShipWriter {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
    let writer = ShipWriter {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match connect(&addr).await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    while let Some(line) = rx.recv().await {
                        if stream.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                    if rx.is_closed() {
                        return;
                    }
                }
                Err(_) => {
                    // Keep the queue from filling with stale lines while the parent is away.
                    while rx.try_recv().is_ok() {}
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    writer
}

async fn connect(addr: &ShipAddr) -> std::io::Result<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> {
    match addr {
        ShipAddr::Tcp(a) => Ok(Box::new(tokio::net::TcpStream::connect(a.as_str()).await?)),
        ShipAddr::Vsock { cid, port } => Ok(Box::new(
            tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(
            "tcp://127.0.0.1:5001".parse::<ShipAddr>().unwrap(),
            ShipAddr::Tcp("127.0.0.1:5001".into())
        );
        assert_eq!(
            "vsock://3:5001".parse::<ShipAddr>().unwrap(),
            ShipAddr::Vsock { cid: 3, port: 5001 }
        );
        assert!("vsock://3".parse::<ShipAddr>().is_err());
        assert!("tcp://nope".parse::<ShipAddr>().is_err());
        assert!("file:///x".parse::<ShipAddr>().is_err());
    }

    #[tokio::test]
    async fn lines_reach_a_listener_and_a_full_queue_drops_instead_of_blocking() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = start(ShipAddr::Tcp(addr.to_string()));
        {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            line.write_all(b"{\"msg\":\"hello\"}\n").unwrap();
        }
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&buf[..n], b"{\"msg\":\"hello\"}\n");
    }
}
