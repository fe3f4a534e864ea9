//! One HTTP/1.1 request and its answer over a [`Connector`] stream, with hyper's client
//! connection (`hyper::client::conn::http1`): what the parent's small calls need (the
//! enclave's control listener, the instance metadata service), without a pool.
//!
//! Bodies may be secret (AWS credentials, both ways), so they are held in zeroizing
//! buffers: the request body is handed to hyper as a buffer that wipes itself when written
//! (`writev`, so hyper queues it instead of copying it into its own buffer), and the
//! answer is copied frame by frame into a zeroizing buffer. hyper's read buffer and the
//! kernel's socket buffers are beyond reach; they are reused and overwritten.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use zeroize::Zeroizing;

use crate::connector::Connector;

/// A request body in a buffer that is zeroized when dropped.
#[derive(Default)]
pub struct SecretBody(Option<Zeroizing<Vec<u8>>>);

impl SecretBody {
    /// A body holding `bytes`.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretBody(Some(bytes))
    }

    /// No body.
    pub fn empty() -> Self {
        SecretBody(None)
    }
}

/// One chunk of a [`SecretBody`]: zeroized when hyper drops it after writing.
pub struct SecretChunk {
    bytes: Zeroizing<Vec<u8>>,
    at: usize,
}

impl Buf for SecretChunk {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    fn advance(&mut self, n: usize) {
        self.at = (self.at + n).min(self.bytes.len());
    }
}

impl Body for SecretBody {
    type Data = SecretChunk;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<SecretChunk>, Infallible>>> {
        let chunk = self
            .get_mut()
            .0
            .take()
            .filter(|b| !b.is_empty())
            .map(|bytes| Ok(Frame::data(SecretChunk { bytes, at: 0 })));
        Poll::Ready(chunk)
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// Why an exchange failed. Never carries a body.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No connection.
    #[error("cannot connect to {addr}: {kind}")]
    Connect {
        /// Where to.
        addr: String,
        /// How it failed.
        kind: std::io::ErrorKind,
    },
    /// The HTTP exchange broke off or was malformed.
    #[error("HTTP exchange with {addr} failed: {detail}")]
    Http {
        /// With whom.
        addr: String,
        /// hyper's description.
        detail: String,
    },
    /// The answer was longer than allowed.
    #[error("the answer from {addr} is over {limit} bytes")]
    TooLarge {
        /// From whom.
        addr: String,
        /// The limit.
        limit: usize,
    },
    /// No complete answer in time.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// Who.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// Sends `request` on a new connection from `connector` and reads the whole answer (at most
/// `max_answer` bytes), all within `timeout`.
pub async fn exchange(
    connector: &Connector,
    request: Request<SecretBody>,
    max_answer: usize,
    timeout: Duration,
) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ExchangeError> {
    let addr = connector.addr().to_string();
    match tokio::time::timeout(timeout, exchange_once(connector, request, max_answer, &addr)).await {
        Ok(result) => result,
        Err(_) => Err(ExchangeError::Timeout { addr, timeout }),
    }
}

async fn exchange_once(
    connector: &Connector,
    request: Request<SecretBody>,
    max_answer: usize,
    addr: &str,
) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ExchangeError> {
    let http = |e: hyper::Error| ExchangeError::Http {
        addr: addr.to_string(),
        detail: e.to_string(),
    };
    let stream = connector.connect().await.map_err(|e| ExchangeError::Connect {
        addr: addr.to_string(),
        kind: e.kind(),
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(true)
        .handshake::<_, SecretBody>(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let mut body = response.into_body();
        let mut answer = Zeroizing::new(Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(http)?.into_data() {
                if answer.len() + data.len() > max_answer {
                    return Err(ExchangeError::TooLarge {
                        addr: addr.to_string(),
                        limit: max_answer,
                    });
                }
                answer.extend_from_slice(&data);
            }
        }
        Ok((status, answer))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-connection server that records the request and sends `answer` raw.
    async fn server(answer: &'static [u8]) -> (Connector, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connector = Connector::new(l.local_addr().unwrap().into(), Duration::from_secs(2));
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(answer).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (connector, task)
    }

    fn post(body: &[u8]) -> Request<SecretBody> {
        Request::post("/control/v1/time")
            .header(http::header::HOST, "enclave")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(SecretBody::new(Zeroizing::new(body.to_vec())))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_goes_out_whole_and_a_chunked_answer_comes_back_whole() {
        let (c, seen) =
            server(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
        let (status, answer) = exchange(&c, post(b"{\"unixMillis\":1}"), 1024, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(&answer[..], b"abcde");
        let request = seen.await.unwrap();
        assert!(request.starts_with("POST /control/v1/time HTTP/1.1\r\n"), "{request}");
        assert!(
            request.to_ascii_lowercase().contains("content-length: 16\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"unixMillis\":1}"), "{request}");
    }

    #[tokio::test]
    async fn oversized_garbled_and_silent_answers_are_errors() {
        let (c, _) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let err = exchange(&c, post(b"{}"), 4, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, ExchangeError::TooLarge { limit: 4, .. }), "{err}");

        let (c, _) = server(b"this is not HTTP\r\n\r\n").await;
        let err = exchange(&c, post(b"{}"), 1024, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Http { .. }), "{err}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = Connector::new(l.local_addr().unwrap().into(), Duration::from_secs(2));
        let err = exchange(&c, post(b"{}"), 1024, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Timeout { .. }), "{err}");
        drop(l);
    }
}
