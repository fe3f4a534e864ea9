//! What keeps the proxy up under abuse, apart from rate limits: the route table (unknown
//! paths never reach the enclave), the body limit, API-key authentication, the cap on
//! concurrent connections and the idle-connection tracker.
//!
//! Header-read (slowloris) and TLS-handshake timeouts are set where connections are
//! served, in [`crate::server`]; their values live in [`crate::config::Timeouts`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ProxyError, SetupError};

/// A route of the wire API (DESIGN.md §4). Anything else is answered `404` by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /v1/health`: answered by the proxy, with the enclave's health inside.
    Health,
    /// `POST /v1/attestation`.
    Attestation,
    /// `POST /v1/createAccount/start`.
    CreateAccountStart,
    /// `POST /v1/createAccount/step`.
    CreateAccountStep,
    /// `POST /v1/getPublicKey`.
    GetPublicKey,
    /// `POST /v1/sign/start`.
    SignStart,
    /// `POST /v1/sign/step`.
    SignStep,
    /// `POST /v1/recover/start`.
    RecoverStart,
    /// `POST /v1/refresh/start`.
    RefreshStart,
    /// `POST /v1/refresh/step`.
    RefreshStep,
}

impl Route {
    /// Every route, for tables and metrics.
    pub const ALL: [Route; 10] = [
        Route::Health,
        Route::Attestation,
        Route::CreateAccountStart,
        Route::CreateAccountStep,
        Route::GetPublicKey,
        Route::SignStart,
        Route::SignStep,
        Route::RecoverStart,
        Route::RefreshStart,
        Route::RefreshStep,
    ];

    /// The path, which is also the route's metrics label.
    pub fn path(self) -> &'static str {
        match self {
            Route::Health => "/v1/health",
            Route::Attestation => "/v1/attestation",
            Route::CreateAccountStart => "/v1/createAccount/start",
            Route::CreateAccountStep => "/v1/createAccount/step",
            Route::GetPublicKey => "/v1/getPublicKey",
            Route::SignStart => "/v1/sign/start",
            Route::SignStep => "/v1/sign/step",
            Route::RecoverStart => "/v1/recover/start",
            Route::RefreshStart => "/v1/refresh/start",
            Route::RefreshStep => "/v1/refresh/step",
        }
    }

    /// The method the route takes.
    pub fn method(self) -> Method {
        match self {
            Route::Health => Method::GET,
            _ => Method::POST,
        }
    }

    /// Whether the route starts a flow on an existing account (`accountId` in the body),
    /// and so is charged to that account's bucket.
    pub fn starts_account_flow(self) -> bool {
        matches!(self, Route::SignStart | Route::RecoverStart | Route::RefreshStart)
    }

    /// The route for `method path`: `NotFound` for a path outside the API,
    /// `MethodNotAllowed` for a known path with the wrong method.
    pub fn resolve(method: &Method, path: &str) -> Result<Route, ProxyError> {
        let route = Route::ALL
            .into_iter()
            .find(|r| r.path() == path)
            .ok_or(ProxyError::NotFound)?;
        if *method != route.method() {
            return Err(ProxyError::MethodNotAllowed {
                allow: if route == Route::Health { "GET" } else { "POST" },
            });
        }
        Ok(route)
    }
}

/// How much of an oversized body is read and thrown away before answering `413`, and for
/// how long. A server that answers and closes while the client is still sending makes the
/// client's kernel see a reset, and the client may never read the answer; draining a
/// moderate excess (as nginx's lingering close does) lets an honest client get its `413`.
/// Beyond these bounds the connection is simply closed.
const DRAIN_BYTES: u64 = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads a request body of at most `max` bytes within `timeout`.
///
/// A declared `Content-Length` above `max` is refused without buffering a byte; a chunked
/// body is refused as soon as it passes `max`. Either way the answer is
/// `PAYLOAD_TOO_LARGE`, and the proxy never holds more than `max` bytes of it.
pub async fn read_body<B>(headers: &HeaderMap, body: B, max: usize, timeout: Duration) -> Result<Bytes, ProxyError>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(body);
    if let Some(len) = declared.filter(|n| *n > max as u64) {
        if len - max as u64 <= DRAIN_BYTES {
            drain(body.as_mut()).await;
        }
        return Err(ProxyError::PayloadTooLarge { limit: max });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ProxyError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ProxyError::BadRequest("the request body could not be read")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > max {
            drain(body.as_mut()).await;
            return Err(ProxyError::PayloadTooLarge { limit: max });
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards up to `DRAIN_BYTES` more of `body` within `DRAIN_TIME` (see there).
async fn drain<B: hyper::body::Body<Data = Bytes>>(mut body: std::pin::Pin<&mut B>) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut seen: u64 = 0;
    while seen <= DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => break,
        }
    }
}

/// The API keys allowed to call the API, stored as SHA-256 hashes.
///
/// Only hashes are kept, on disk and in memory, so the key file and a memory dump do not
/// reveal a usable key. The file has one key per line, `<64 hex digits> [name]`; blank
/// lines and `#` comments are skipped. Make a line with
/// `printf %s "$KEY" | sha256sum` (or [`hash_api_key`]). The name is what logs show.
pub struct ApiKeys {
    keys: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

/// The line to put in an API key file for `key` (its SHA-256, hex).
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Reads an API key file.
    pub fn load(path: &std::path::Path) -> Result<Self, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| SetupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the contents of an API key file (`path` only names it in errors).
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Self, SetupError> {
        let error = |line: usize, what: &'static str| SetupError::ApiKeys {
            path: path.to_path_buf(),
            line,
            what,
        };
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (hash, name) = match line.split_once(char::is_whitespace) {
                Some((h, n)) => (h, n.trim().to_string()),
                None => (line, format!("key{}", keys.len() + 1)),
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest)
                .map_err(|_| error(i + 1, "expected the SHA-256 of a key as 64 hex digits"))?;
            keys.push((digest, name));
        }
        if keys.is_empty() {
            return Err(error(0, "no keys: an empty file would refuse every request"));
        }
        Ok(ApiKeys { keys })
    }

    /// Checks `Authorization: Bearer <key>`; returns the key's name.
    ///
    /// The presented key is hashed and compared with every stored hash without stopping
    /// at the first difference, so timing says nothing about which bytes matched.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<&str, ProxyError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(ProxyError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (stored, name) in &self.keys {
            let diff = stored
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found.ok_or(ProxyError::Unauthorized)
    }
}

/// The cap on concurrent client connections: a permit per connection, taken before
/// `accept`, so that past the cap new connections wait in the kernel's backlog instead of
/// costing the proxy memory and a TLS handshake.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl ConnectionSlots {
    /// `max` slots.
    pub fn new(max: usize) -> Self {
        ConnectionSlots {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Waits for a free slot; the slot is released when the permit is dropped.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().acquire_owned().await.ok()
    }

    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

/// Tracks whether a connection is idle: no request in flight, and none finished recently.
///
/// Idleness is judged by requests, not bytes, so a client cannot keep a connection (and
/// its slot) alive by trickling bytes or HTTP/2 pings without ever sending a request.
#[derive(Debug)]
pub struct IdleTracker {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_active_ms: AtomicU64,
}

impl IdleTracker {
    /// A tracker for a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(IdleTracker {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActiveRequest(self.clone())
    }

    /// How long the connection has been idle, or `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.now_ms().saturating_sub(self.last_active_ms.load(Ordering::SeqCst));
        Some(Duration::from_millis(since))
    }
}

/// A request in flight on a connection (see [`IdleTracker::begin`]).
#[derive(Debug)]
pub struct ActiveRequest(Arc<IdleTracker>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.last_active_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::Full;

    use super::*;

    #[test]
    fn routes_resolve_only_the_wire_api() {
        assert_eq!(
            Route::resolve(&Method::POST, "/v1/sign/start").unwrap(),
            Route::SignStart
        );
        assert_eq!(Route::resolve(&Method::GET, "/v1/health").unwrap(), Route::Health);
        assert_eq!(Route::resolve(&Method::POST, "/v1/nope"), Err(ProxyError::NotFound));
        assert_eq!(
            Route::resolve(&Method::POST, "/v1/sign/start/"),
            Err(ProxyError::NotFound)
        );
        assert_eq!(Route::resolve(&Method::GET, "/metrics"), Err(ProxyError::NotFound));
        assert_eq!(
            Route::resolve(&Method::GET, "/v1/sign/start"),
            Err(ProxyError::MethodNotAllowed { allow: "POST" })
        );
        assert!(Route::RecoverStart.starts_account_flow());
        assert!(!Route::CreateAccountStart.starts_account_flow());
        assert!(!Route::SignStep.starts_account_flow());
    }

    #[test]
    fn api_keys_are_checked_by_hash() {
        let file = format!(
            "# app backends\n{} billing\n\n{}\n",
            hash_api_key("s3cret"),
            hash_api_key("other")
        );
        let keys = ApiKeys::parse(&file, "keys".as_ref()).unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(keys.authorize(&with("Bearer s3cret")).unwrap(), "billing");
        assert_eq!(keys.authorize(&with("bearer other")).unwrap(), "key2");
        assert_eq!(keys.authorize(&with("Bearer wrong")), Err(ProxyError::Unauthorized));
        assert_eq!(keys.authorize(&with("Basic s3cret")), Err(ProxyError::Unauthorized));
        assert_eq!(keys.authorize(&with("Bearer ")), Err(ProxyError::Unauthorized));
        assert_eq!(keys.authorize(&HeaderMap::new()), Err(ProxyError::Unauthorized));
        assert!(!format!("{keys:?}").contains(&hash_api_key("s3cret")));
        assert!(ApiKeys::parse("# nothing\n", "k".as_ref()).is_err());
        assert!(ApiKeys::parse("abc billing\n", "k".as_ref()).is_err());
    }

    #[tokio::test]
    async fn bodies_are_cut_at_the_limit() {
        let ok = read_body(
            &HeaderMap::new(),
            Full::new(Bytes::from_static(b"{}")),
            10,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"{}"));

        let big = Full::new(Bytes::from(vec![b'a'; 11]));
        let err = read_body(&HeaderMap::new(), big, 10, Duration::from_secs(1)).await;
        assert_eq!(err, Err(ProxyError::PayloadTooLarge { limit: 10 }));

        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        let err = read_body(&declared, Full::new(Bytes::new()), 10, Duration::from_secs(1)).await;
        assert_eq!(err, Err(ProxyError::PayloadTooLarge { limit: 10 }));
    }

    /// A body that never yields a byte.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let err = read_body(&HeaderMap::new(), Stalled, 10, Duration::from_millis(50)).await;
        assert_eq!(err, Err(ProxyError::BodyTimeout));
    }

    #[test]
    fn idle_is_judged_by_requests() {
        let t = IdleTracker::new();
        assert!(t.idle_for().is_some());
        let guard = t.begin();
        assert_eq!(t.idle_for(), None);
        drop(guard);
        assert!(t.idle_for().unwrap() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn connection_slots_count() {
        let slots = ConnectionSlots::new(2);
        let a = slots.acquire().await.unwrap();
        let _b = slots.acquire().await.unwrap();
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert_eq!(slots.in_use(), 1);
    }
}
