//! What operators see: a request id on every request (propagated to the enclave and into
//! every log line of the request), one JSON access-log line per request, and Prometheus
//! metrics on a separate listener.
//!
//! Logs and metrics carry method, route, status, sizes and timings, never a body, a
//! header value other than the request id, or a key: the bodies are sealed MPC payloads
//! and the `Authorization` header is a credential (DESIGN.md §5).
//!
//! Metrics use `prometheus-client` (the maintained Prometheus client of the Rust
//! ecosystem) rather than hand-written exposition, and are served in its OpenMetrics text
//! format, which Prometheus scrapes natively.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ratelimit::LimitScope;

/// The `kind` labels of `tandem_proxy_enclave_errors_total`: the relay's failures
/// ([`crate::relay::RelayError::kind`]) and enclave answers with a 5xx status.
pub const ENCLAVE_ERROR_KINDS: [&str; 4] = ["unreachable", "timeout", "bad_response", "status_5xx"];

/// The header that carries the request id, in both directions and to the enclave.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest client-supplied request id kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 64;

/// The request's id: the client's `x-request-id` if it is a sane token (at most 64 of
/// `A-Z a-z 0-9 . _ : -`), else a fresh random one. Odd ids are replaced rather than
/// refused, so a client's bad header cannot make its request fail, nor inject text into logs.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(new_request_id, str::to_string)
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No system RNG: ids need only be unique, not secret, so fall back to a counter.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&t.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    hex::encode(bytes)
}

/// One access-log line's fields.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// The route (the API path), or `unmatched`; never the raw path, which a client controls.
    pub route: &'static str,
    /// Response status.
    pub status: u16,
    /// Time from request headers to response.
    pub latency: Duration,
    /// Request body bytes read.
    pub bytes_in: usize,
    /// Response body bytes.
    pub bytes_out: usize,
    /// The client address used for rate limiting.
    pub client: IpAddr,
    /// HTTP version.
    pub version: Version,
}

/// Writes the access-log line (target `tandem_proxy::access`); called inside the request's
/// span, so the JSON line also carries the request id.
pub fn access_log(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "tandem_proxy::access",
        method = %r.method,
        route = r.route,
        status = r.status,
        latency_ms = r.latency.as_secs_f64() * 1e3,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        client = %r.client,
        version = ?r.version,
        "request"
    );
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s: a sign step is ~10 ms, a DKG step ~2 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The proxy's metrics, all labelled by bounded sets (routes, statuses, scopes), never by
/// anything a client chooses freely.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    rate_limited: Family<ScopeLabels, Counter>,
    enclave_errors: Family<KindLabels, Counter>,
    in_flight: Gauge,
    connections: Gauge,
    tls_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero, named `tandem_proxy_*`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        let enclave_errors = Family::<KindLabels, Counter>::default();
        let in_flight = Gauge::default();
        let connections = Gauge::default();
        let tls_failures = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request headers to response, by route",
            latency.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by bucket",
            rate_limited.clone(),
        );
        registry.register(
            "enclave_errors",
            "Relays to the enclave that failed (unreachable, timeout, bad_response) or got a 5xx",
            enclave_errors.clone(),
        );
        registry.register("in_flight_requests", "Requests being handled now", in_flight.clone());
        registry.register("open_connections", "Client connections open now", connections.clone());
        registry.register(
            "tls_handshake_failures",
            "Connections closed before or during the TLS handshake (incl. refused versions)",
            tls_failures.clone(),
        );
        // Every series of the bounded label sets exists from the start, at zero, so that
        // alerts on their rate work before the first event.
        for scope in LimitScope::ALL {
            drop(rate_limited.get_or_create(&ScopeLabels { scope: scope.as_str() }));
        }
        for kind in ENCLAVE_ERROR_KINDS {
            drop(enclave_errors.get_or_create(&KindLabels { kind }));
        }
        Metrics {
            registry,
            requests,
            latency,
            rate_limited,
            enclave_errors,
            in_flight,
            connections,
            tls_failures,
        }
    }

    /// Counts an answered request.
    pub fn observe(&self, route: &'static str, status: u16, latency: Duration) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(latency.as_secs_f64());
    }

    /// Counts a request refused by the `scope` bucket.
    pub fn rate_limited(&self, scope: LimitScope) {
        self.rate_limited
            .get_or_create(&ScopeLabels { scope: scope.as_str() })
            .inc();
    }

    /// Counts a failed relay (`kind`: one of [`ENCLAVE_ERROR_KINDS`]).
    pub fn enclave_error(&self, kind: &'static str) {
        self.enclave_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a failed TLS handshake.
    pub fn tls_failure(&self) {
        self.tls_failures.inc();
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn request_started(&self) -> GaugeGuard {
        GaugeGuard::new(&self.in_flight)
    }

    /// Marks a connection open until the guard is dropped.
    pub fn connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(&self.connections)
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Writing to a String cannot fail; say so rather than serve half a page.
            return "# encoding failed\n".into();
        }
        text
    }
}

/// Holds a gauge one higher while alive.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The media type of the exposition.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (plain HTTP/1.1) on `listener` until `shutdown`.
///
/// Meant for a private address (the host's loopback or an internal interface): it has no
/// TLS and no authentication, and shows only counts.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let metrics = metrics.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(metrics_response(&req, &metrics)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

fn metrics_response(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        (StatusCode::OK, METRICS_CONTENT_TYPE, metrics.encode())
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics here\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_propagated_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&h), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn metrics_encode_in_prometheus_text() {
        let m = Metrics::new();
        m.observe("/v1/sign/start", 200, Duration::from_millis(12));
        m.rate_limited(LimitScope::Ip);
        m.enclave_error("unreachable");
        let _g = m.request_started();
        let text = m.encode();
        assert!(
            text.contains(r#"tandem_proxy_requests_total{route="/v1/sign/start",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tandem_proxy_rate_limited_total{scope="ip"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tandem_proxy_enclave_errors_total{kind="unreachable"} 1"#),
            "{text}"
        );
        assert!(text.contains("tandem_proxy_in_flight_requests 1"), "{text}");
        assert!(
            text.contains("tandem_proxy_request_duration_seconds_bucket{le=\"0.016\",route=\"/v1/sign/start\"} 1"),
            "{text}"
        );
    }
}
