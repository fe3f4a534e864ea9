//! The proxy's errors, and the one place they become HTTP statuses and wire error codes.
//!
//! [`ProxyError`] is what a request can end in before or instead of the enclave's own
//! answer; its messages go to clients, so they name the limit or the condition and never
//! an internal address or cause (those are logged where they happen). [`SetupError`] is
//! what can stop the proxy from starting.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tandem_core::ErrorCode;
use tandem_core::wire::{ErrorBody, ErrorResponse};

use crate::ratelimit::LimitScope;

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    // --- the client asked for something that does not exist ---
    /// The path is not part of the wire API.
    #[error("no such route")]
    NotFound,
    /// The path exists but not with this method.
    #[error("method not allowed; this route takes {allow}")]
    MethodNotAllowed {
        /// The method the route takes (sent in `Allow`).
        allow: &'static str,
    },

    // --- the client is not allowed, or is asking too much ---
    /// API keys are configured and the request carries none that matches.
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// A rate limit is exhausted.
    #[error("too many requests ({scope} limit); retry after {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        /// Which bucket ran dry.
        scope: LimitScope,
        /// When the bucket will hold a token again.
        retry_after: Duration,
    },
    /// The body is larger than the configured limit.
    #[error("request body exceeds the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body did not arrive within the request timeout.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The body could not be read or is not the JSON the route takes.
    #[error("invalid request: {0}")]
    BadRequest(&'static str),

    // --- the enclave could not answer ---
    /// No connection to the enclave, or it dropped the connection mid-request.
    #[error("the enclave is not reachable; retry shortly")]
    EnclaveUnavailable,
    /// The enclave did not answer within the relay timeout.
    #[error("the enclave did not answer in time")]
    EnclaveTimeout,
    /// The enclave's answer was not valid HTTP, or too large to relay.
    #[error("the enclave sent an invalid response")]
    EnclaveBadResponse,
}

fn retry_after_secs(d: Duration) -> u64 {
    // Round up, and never say 0: a client told "retry after 0" retries at once.
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl ProxyError {
    /// The wire code, chosen from core's [`ErrorCode`]s.
    ///
    /// An unreachable enclave is `MPC_PARTY_MISSING` ("the other party of the protocol is
    /// not reachable"): that is exactly the client's situation, it tells a client to retry
    /// rather than report a bug (which `INTERNAL_ERROR` would mean), and it is the code the
    /// SDK already branches on for a missing peer. Unknown routes and methods have no code
    /// of their own in the wire API, so they are `INVALID_REQUEST` with a 404/405 status.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProxyError::NotFound | ProxyError::MethodNotAllowed { .. } | ProxyError::BadRequest(_) => {
                ErrorCode::InvalidRequest
            }
            ProxyError::BodyTimeout => ErrorCode::InvalidRequest,
            ProxyError::Unauthorized => ErrorCode::Unauthorized,
            ProxyError::RateLimited { .. } => ErrorCode::RateLimited,
            ProxyError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ProxyError::EnclaveUnavailable => ErrorCode::MpcPartyMissing,
            ProxyError::EnclaveTimeout => ErrorCode::MpcTimeout,
            ProxyError::EnclaveBadResponse => ErrorCode::InternalError,
        }
    }

    /// The HTTP status. It follows the code's own status except where HTTP has a more
    /// precise word for what the proxy saw: 404/405 for routing, 408 for a slow body, and
    /// 503 for an enclave that is down (temporary, retry) rather than core's 502.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::EnclaveUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::EnclaveTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::EnclaveBadResponse => StatusCode::BAD_GATEWAY,
            other => StatusCode::from_u16(other.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The response: the wire error body `{requestId, error: {code, message}}`, plus the
    /// headers the status calls for (`Retry-After`, `WWW-Authenticate`, `Allow`).
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = ErrorResponse {
            request_id: Some(request_id.to_string()),
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                details: None,
            },
        };
        let mut response = json_response(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            ProxyError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*retry_after)));
            }
            ProxyError::EnclaveUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with `status`. Serializing the proxy's own small types cannot fail; if
/// it ever did, the client still gets the status with an empty JSON object.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificate, the key or the protocol versions.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The development certificates could not be generated.
    #[error("cannot generate the development certificates: {0}")]
    CertificateGeneration(#[from] rcgen::Error),
    /// A line of the API key file is not `<sha256 hex> [name]`.
    #[error("API key file {}, line {line}: {what}", path.display())]
    ApiKeys {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        what: &'static str,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The blob service's directory could not be opened.
    #[error("blob directory: {0}")]
    BlobDir(#[from] tandem_io::blob_dir::BlobDirError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn errors_map_to_codes_and_statuses() {
        let cases = [
            (ProxyError::NotFound, 404, ErrorCode::InvalidRequest),
            (ProxyError::Unauthorized, 401, ErrorCode::Unauthorized),
            (
                ProxyError::RateLimited {
                    scope: LimitScope::Ip,
                    retry_after: Duration::from_millis(300),
                },
                429,
                ErrorCode::RateLimited,
            ),
            (
                ProxyError::PayloadTooLarge { limit: 10 },
                413,
                ErrorCode::PayloadTooLarge,
            ),
            (ProxyError::EnclaveUnavailable, 503, ErrorCode::MpcPartyMissing),
            (ProxyError::EnclaveTimeout, 504, ErrorCode::MpcTimeout),
            (ProxyError::BadRequest("x"), 400, ErrorCode::InvalidRequest),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn responses_carry_the_wire_body_and_headers() {
        let r = ProxyError::RateLimited {
            scope: LimitScope::Ip,
            retry_after: Duration::from_millis(1500),
        }
        .to_response("rid-1");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = ProxyError::Unauthorized.to_response("rid-2");
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
