//! The log link, enclave end: shipping the enclave's logs to the parent
//! (`tandem_proxy::enclave::logs`).
//!
//! In production a Nitro Enclave has no console, so its structured logs stream to the
//! parent, which writes them into its own log with the enclave's request ids. Each
//! connection starts with the stream hello and then carries JSON lines
//! (`tandem_core::parent::logs`). In mock mode the same stream runs over TCP.
//!
//! Logging must never block a request: lines go through a bounded queue and are dropped
//! (and counted) when the parent is slow or absent; the shipper reconnects with backoff.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_core::Addr;
use tandem_core::parent::logs::StreamHello;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How long one connection attempt to the parent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Starts the shipper task on the current runtime, dialling the parent at `addr`;
/// returns the writer for the JSON logging layer.
pub fn start(addr: Addr) -> ShipWriter {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
    let writer = ShipWriter {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match tandem_io::net::connect(&addr, CONNECT_TIMEOUT).await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    if stream.write_all(&StreamHello::current().line()).await.is_ok() {
                        while let Some(line) = rx.recv().await {
                            if stream.write_all(&line).await.is_err() {
                                break;
                            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt as _;

    #[tokio::test]
    async fn a_stream_starts_with_the_hello_and_carries_the_lines() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: Addr = listener.local_addr().unwrap().into();
        let writer = start(addr);
        {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            line.write_all(b"{\"msg\":\"hello\"}\n").unwrap();
        }
        let (stream, _) = listener.accept().await.unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        };
        assert_eq!(StreamHello::parse(&next().await), Some(StreamHello::current()));
        assert_eq!(next().await, "{\"msg\":\"hello\"}");
        assert_eq!(writer.dropped(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_lines_instead_of_blocking() {
        // Nothing listens: the shipper drains and retries, and writers never wait.
        let writer = start(Addr::tcp("127.0.0.1", 1));
        for _ in 0..10_000 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            line.write_all(b"x\n").unwrap();
        }
        assert!(writer.dropped() > 0, "10 000 lines into a 4096-line queue");
    }
}
