//! How the client reaches the server: one request, one response, bytes in and out.
//!
//! The flow driver ([`crate::Client`]) does no I/O of its own; it hands JSON bodies to a
//! [`Transport`]. [`HttpTransport`] (reqwest + rustls) is the default; tests plug in an
//! in-process router, and other stacks can plug in theirs.
//!
//! Every response body is read with a size limit ([`MAX_RESPONSE_BYTES`]): the host sits
//! between the device and the enclave and must not be able to exhaust the device's memory
//! with an endless answer (review finding L2).

use std::time::Duration;

use crate::SdkError;

/// The largest response body accepted. The largest legitimate answer (a DKG step, base64
/// in JSON) is about 250 KB.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (no body).
    Get,
    /// `POST` with a JSON body.
    Post,
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Vec<u8>,
}

/// One way to reach a Tandem server.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` (JSON, for `POST`) to `path` (e.g. `/v1/sign/start`) and returns the
    /// response; only a failure to exchange it is an error.
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<HttpResponse, SdkError>;

    /// The server, for display and logs.
    fn describe(&self) -> String;
}

/// HTTP(S) with reqwest.
pub struct HttpTransport {
    base: String,
    http: reqwest::Client,
}

impl HttpTransport {
    /// A transport to `base_url` (`http://` or `https://`), with `http` or a default
    /// client (60 s per request, 10 s to connect).
    pub fn new(base_url: &str, http: Option<reqwest::Client>) -> Result<Self, SdkError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SdkError::InvalidInput(format!(
                "server URL must start with http:// or https://, got {base:?}"
            )));
        }
        let http = match http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| SdkError::InvalidInput(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(HttpTransport { base, http })
    }
}

fn transport(e: reqwest::Error) -> SdkError {
    SdkError::Transport(e.to_string())
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<HttpResponse, SdkError> {
        let url = format!("{}{}", self.base, path);
        let request = match method {
            Method::Get => self.http.get(&url),
            Method::Post => self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.unwrap_or_default()),
        };
        let mut resp = request.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
            return Err(SdkError::BadResponse(format!(
                "the server's answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(SdkError::BadResponse(format!(
                    "the server's answer is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, body })
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}
