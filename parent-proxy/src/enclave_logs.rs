//! Receiving the enclave's logs.
//!
//! A Nitro Enclave has no console in production, so the enclave streams its structured
//! logs (JSON lines) to the parent over vsock (TCP in mock mode), and the proxy writes
//! them into its own log under the target `enclave`, keeping the enclave's request id as a
//! field so one request can be followed across both processes.
//!
//! The enclave is trusted not to put secrets in its logs (it never logs bodies, shares or
//! keys); the proxy still bounds what it accepts: lines over 16 KiB are cut, and a
//! connection that sends garbage only produces log lines, never an error elsewhere.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest log line accepted from the enclave.
const MAX_LINE: usize = 16 * 1024;

/// Where the proxy listens for the enclave's log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogListenAddr {
    /// `tcp://HOST:PORT` (mock mode).
    Tcp(SocketAddr),
    /// `vsock://PORT` or `vsock://ANY:PORT`: any CID (the enclave dials the parent, CID 3).
    Vsock(u32),
}

impl std::str::FromStr for LogListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            return rest
                .parse()
                .map(LogListenAddr::Tcp)
                .map_err(|_| format!("{s:?} is not tcp://IP:PORT"));
        }
        if let Some(rest) = s.strip_prefix("vsock://") {
            let port = rest.rsplit(':').next().unwrap_or(rest);
            return port
                .parse()
                .map(LogListenAddr::Vsock)
                .map_err(|_| format!("{s:?} is not vsock://PORT"));
        }
        Err(format!("{s:?}: the log listener must be tcp://IP:PORT or vsock://PORT"))
    }
}

/// Accepts log streams on `addr` until `shutdown`.
pub async fn receive(addr: LogListenAddr, shutdown: CancellationToken) -> std::io::Result<()> {
    match addr {
        LogListenAddr::Tcp(a) => {
            let listener = TcpListener::bind(a).await?;
            tracing::info!(addr = %listener.local_addr()?, "receiving enclave logs");
            accept_loop(|| async { listener.accept().await.map(|(s, _)| s) }, shutdown).await
        }
        LogListenAddr::Vsock(port) => {
            let listener =
                tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port))?;
            tracing::info!(port, "receiving enclave logs over vsock");
            accept_loop(|| async { listener.accept().await.map(|(s, _)| s) }, shutdown).await
        }
    }
}

/// Accepts streams with `accept` and relays each on its own task; accept errors back off.
async fn accept_loop<S, F, Fut>(accept: F, shutdown: CancellationToken) -> std::io::Result<()>
where
    S: AsyncRead + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = accept() => match accepted {
                Ok(stream) => { tokio::spawn(relay(stream)); }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an enclave log stream failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Writes each line of one stream into the proxy's log.
async fn relay<S: AsyncRead + Unpin>(stream: S) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                if !buf.ends_with(b"\n") {
                    // Over-long line: drop the rest of it.
                    let mut rest = Vec::new();
                    if reader.read_until(b'\n', &mut rest).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                emit(&buf);
            }
            Err(_) => return,
        }
    }
}

/// Re-emits one enclave log line, lifting its request id and level.
fn emit(line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let request_id = parsed.as_ref().and_then(find_request_id).unwrap_or_default();
    let level = parsed
        .as_ref()
        .and_then(|v| v.get("level"))
        .and_then(|v| v.as_str())
        .unwrap_or("INFO")
        .to_string();
    tracing::info!(target: "enclave", request_id = %request_id, enclave_level = %level, enclave = %text, "enclave log");
}

/// The enclave's request id: a top-level field, or a field of its current span.
fn find_request_id(v: &serde_json::Value) -> Option<String> {
    for path in [&["request_id"][..], &["span", "request_id"], &["fields", "request_id"]] {
        let mut cur = v;
        let mut found = true;
        for key in path {
            match cur.get(*key) {
                Some(next) => cur = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            return cur.as_str().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "tcp://127.0.0.1:5001".parse::<LogListenAddr>().unwrap(),
            LogListenAddr::Tcp("127.0.0.1:5001".parse().unwrap())
        );
        assert_eq!(
            "vsock://5001".parse::<LogListenAddr>().unwrap(),
            LogListenAddr::Vsock(5001)
        );
        assert_eq!(
            "vsock://3:5001".parse::<LogListenAddr>().unwrap(),
            LogListenAddr::Vsock(5001)
        );
        assert!("udp://x".parse::<LogListenAddr>().is_err());
    }

    #[test]
    fn finds_request_ids_where_tracing_puts_them() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"span":{"request_id":"abc"},"fields":{"message":"m"}}"#).unwrap();
        assert_eq!(find_request_id(&v).as_deref(), Some("abc"));
        let v: serde_json::Value = serde_json::from_str(r#"{"request_id":"top"}"#).unwrap();
        assert_eq!(find_request_id(&v).as_deref(), Some("top"));
    }
}
