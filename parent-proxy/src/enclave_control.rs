//! Calls from the parent to the enclave's control listener (never the public API).
//!
//! The proxy pushes its wall clock to the enclave at start and then every minute
//! (`POST /control/v1/time`): the enclave has no time source of its own it can check, and
//! attestation freshness and authorization windows depend on its clock. The enclave logs
//! and reports (`/v1/health` `clockDriftMs`) any large drift.
//!
//! The control protocol is a single small HTTP/1.1 request per connection, written by hand
//! over the [`Connector`](crate::connector::Connector) stream: no pool, no second client
//! stack for one call a minute.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::connector::{Connector, EnclaveAddr};

/// Posts `body` (JSON) to `path` on the control listener; returns the status and body.
pub async fn post(connector: &Connector, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = connector.connect().await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: enclave\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Pushes the parent's clock now and every `every` until `shutdown`.
pub async fn push_time_loop(addr: EnclaveAddr, every: Duration, shutdown: CancellationToken) {
    let connector = Connector::new(addr, Duration::from_secs(5));
    loop {
        let mut next = every;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        match post(&connector, "/control/v1/time", &format!("{{\"unixMillis\":{now_ms}}}")).await {
            Ok((200, body)) => {
                let drift = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("driftMs").and_then(serde_json::Value::as_i64));
                match drift {
                    Some(d) if d.abs() > 2_000 => tracing::warn!(drift_ms = d, "the enclave's clock drifts from ours"),
                    Some(d) => tracing::debug!(drift_ms = d, "enclave clock checked"),
                    None => tracing::warn!("the enclave's time answer did not parse"),
                }
            }
            Ok((status, _)) => tracing::warn!(status, "the enclave refused the time push"),
            Err(e) => {
                // The enclave may still be booting: try again soon rather than in a minute.
                tracing::debug!(error = %e, "cannot reach the enclave's control listener yet");
                next = Duration::from_secs(1).min(every);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}
