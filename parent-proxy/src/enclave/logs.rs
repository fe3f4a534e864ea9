//! The log link, parent end: receiving the enclave's log stream.
//!
//! A Nitro Enclave has no console in production, so the enclave streams its structured
//! logs (`tandem_core::parent::logs`: a hello, then JSON lines) to the parent over vsock
//! (TCP in mock mode), and the proxy writes them into its own log under the target
//! `enclave`, keeping the enclave's request id as a field so one request can be followed
//! across both processes.
//!
//! The enclave is trusted not to put secrets in its logs (it never logs bodies, shares or
//! keys); the proxy still bounds what it accepts: lines over `MAX_LINE` are cut, a few
//! streams at once, and a connection that sends garbage only produces log lines.

use std::time::Duration;

use tandem_core::parent::logs::{MAX_LINE, STREAM_VERSION, ShippedLine, StreamHello};
use tandem_io::net::{Listener, ServeLimits, serve_each};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;

/// Log streams relayed at once (one enclave keeps one open; reconnects overlap briefly).
const MAX_STREAMS: usize = 8;

/// Relays the log streams accepted on `listener` into this process's log until
/// `shutdown`.
pub async fn receive(listener: Listener, shutdown: CancellationToken) {
    let limits = ServeLimits {
        max_connections: MAX_STREAMS,
        drain: Duration::from_millis(500),
    };
    serve_each(listener, limits, shutdown, relay).await;
}

/// How the lines of one stream are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Version 1: fields are lifted (request id, level).
    V1,
    /// A version this build does not know: relayed as text.
    Unknown(u32),
}

/// Writes each line of one stream into the proxy's log.
async fn relay<S: AsyncRead + Unpin>(stream: S) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut schema = None;
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !buf.ends_with(b"\n") {
                    // Over-long line: drop the rest of it.
                    let mut rest = Vec::new();
                    if reader.read_until(b'\n', &mut rest).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let text = text.trim_end();
                if schema.is_none() {
                    if let Some(hello) = StreamHello::parse(text) {
                        schema = Some(match hello.version {
                            STREAM_VERSION => Schema::V1,
                            v => {
                                tracing::warn!(
                                    version = v,
                                    "unknown enclave log stream version: relaying lines as text"
                                );
                                Schema::Unknown(v)
                            }
                        });
                        continue;
                    }
                    // No hello: an older enclave, version 1.
                    schema = Some(Schema::V1);
                }
                emit(text, schema.unwrap_or(Schema::V1));
            }
        }
    }
}

/// Re-emits one enclave log line, lifting its request id and level.
fn emit(text: &str, schema: Schema) {
    if text.is_empty() {
        return;
    }
    let parsed = match schema {
        Schema::V1 => ShippedLine::parse(text),
        Schema::Unknown(_) => None,
    };
    let request_id = parsed.as_ref().and_then(ShippedLine::request_id).unwrap_or_default();
    let level = parsed.as_ref().and_then(|l| l.level.as_deref()).unwrap_or("INFO");
    tracing::info!(target: "enclave", request_id = %request_id, enclave_level = %level, enclave = %text, "enclave log");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Captures what `relay` logs.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn relayed(input: &[u8]) -> Vec<serde_json::Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        relay(input).await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn lines_after_the_hello_keep_their_request_ids_and_levels() {
        let input = b"{\"tandemLogStream\":1}\n{\"level\":\"WARN\",\"message\":\"m\",\"span\":{\"request_id\":\"abc\"}}\nnot json\n";
        let lines = relayed(input).await;
        assert_eq!(lines.len(), 2, "the hello is not relayed: {lines:?}");
        assert_eq!(lines[0]["target"], "enclave");
        assert_eq!(lines[0]["request_id"], "abc");
        assert_eq!(lines[0]["enclave_level"], "WARN");
        assert_eq!(lines[1]["enclave"], "not json");
        assert_eq!(lines[1]["request_id"], "");
    }

    #[tokio::test]
    async fn streams_without_a_hello_or_with_an_unknown_version_are_still_relayed() {
        let old = relayed(b"{\"level\":\"INFO\",\"request_id\":\"r1\"}\n").await;
        assert_eq!(old.len(), 1);
        assert_eq!(old[0]["request_id"], "r1");
        let future = relayed(b"{\"tandemLogStream\":9}\n{\"level\":\"INFO\",\"request_id\":\"r2\"}\n").await;
        let relayed_lines: Vec<_> = future.iter().filter(|l| l["target"] == "enclave").collect();
        assert_eq!(relayed_lines.len(), 1);
        assert_eq!(relayed_lines[0]["request_id"], "", "unknown schema: not interpreted");
    }

    #[tokio::test]
    async fn over_long_lines_are_cut() {
        let mut input = vec![b'x'; MAX_LINE + 100];
        input.extend_from_slice(b"\n{\"request_id\":\"after\"}\n");
        let lines = relayed(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["enclave"].as_str().unwrap().len(), MAX_LINE + 1);
        assert_eq!(lines[1]["request_id"], "after");
    }
}
