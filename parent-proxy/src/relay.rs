//! Forwarding one request to the enclave and reading its answer.
//!
//! A pooled HTTP/1.1 client (hyper-util) over the [`Connector`] reuses connections between
//! requests. When the enclave goes away, pooled connections fail and are dropped, new
//! connections are refused, and the caller gets [`RelayError::Unreachable`]; when it comes
//! back, the next request simply connects again: nothing in the proxy has to restart.
//!
//! Requests are rebuilt rather than passed through: only the path, `Content-Type` and
//! `x-request-id` reach the enclave, so client headers (notably `Authorization`) never do.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::connector::Connector;
use crate::error::ProxyError;
use crate::observability::REQUEST_ID_HEADER;

/// The authority in the URIs the client is given; the connector ignores it, and the
/// enclave does not look at `Host`.
const ENCLAVE_AUTHORITY: &str = "http://enclave";

/// The enclave's answer, read in full.
#[derive(Debug, Clone)]
pub struct EnclaveResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

/// Why a relayed request failed. The detail is for logs; clients get a [`ProxyError`].
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No connection could be opened, or the connection failed mid-request.
    #[error("enclave unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the relay timeout.
    #[error("enclave did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not usable (too large, or the body broke off).
    #[error("invalid enclave response: {0}")]
    BadResponse(String),
}

impl RelayError {
    /// A short label for metrics (`enclave_errors_total{kind=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::Unreachable(_) => "unreachable",
            RelayError::Timeout(_) => "timeout",
            RelayError::BadResponse(_) => "bad_response",
        }
    }
}

impl From<&RelayError> for ProxyError {
    fn from(e: &RelayError) -> Self {
        match e {
            RelayError::Unreachable(_) => ProxyError::EnclaveUnavailable,
            RelayError::Timeout(_) => ProxyError::EnclaveTimeout,
            RelayError::BadResponse(_) => ProxyError::EnclaveBadResponse,
        }
    }
}

/// A pooled client of the enclave.
#[derive(Clone)]
pub struct Relay {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Relay {
    /// A relay over `connector`. Each request, from send to last response byte, gets
    /// `timeout`; responses larger than `max_response_bytes` are refused; at most
    /// `max_idle` connections are kept open for reuse, each for up to 30 s.
    pub fn new(connector: Connector, timeout: Duration, max_response_bytes: usize, max_idle: usize) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Relay {
            client,
            timeout,
            max_response_bytes,
        }
    }

    /// Sends `method path` with `body` to the enclave, tagged with `request_id`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<HeaderValue>,
        body: Bytes,
        request_id: &str,
    ) -> Result<EnclaveResponse, RelayError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{ENCLAVE_AUTHORITY}{path}"))
            .header(REQUEST_ID_HEADER, request_id);
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| RelayError::BadResponse(format!("cannot build the enclave request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| RelayError::Unreachable(error_chain(&e)))?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = Limited::new(response.into_body(), self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| RelayError::BadResponse(e.to_string()))?
                .to_bytes();
            Ok(EnclaveResponse {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RelayError::Timeout(self.timeout))?
    }
}

/// The error and its causes on one line (hyper's top-level message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::Addr;

    #[tokio::test]
    async fn a_missing_enclave_is_unreachable_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let addr: Addr = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let relay = Relay::new(
            Connector::new(addr, Duration::from_secs(1)),
            Duration::from_secs(5),
            1024,
            4,
        );
        let err = relay
            .send(Method::GET, "/v1/health", None, Bytes::new(), "rid")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "unreachable");
        assert_eq!(ProxyError::from(&err), ProxyError::EnclaveUnavailable);
    }

    #[tokio::test]
    async fn a_silent_enclave_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let addr: Addr = format!("tcp://127.0.0.1:{port}").parse().unwrap();
        let relay = Relay::new(
            Connector::new(addr, Duration::from_secs(1)),
            Duration::from_millis(200),
            1024,
            4,
        );
        let err = relay
            .send(Method::GET, "/v1/health", None, Bytes::new(), "rid")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout");
        assert_eq!(ProxyError::from(&err), ProxyError::EnclaveTimeout);
    }
}
