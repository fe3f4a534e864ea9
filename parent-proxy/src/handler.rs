//! One request, start to finish: route → rate limits → API key → body → account limit →
//! relay → response, then the metrics and the access-log line.
//!
//! The order is deliberate: a request is matched against the route table before anything
//! else (unknown paths never cost more than a lookup, and never reach the enclave); the
//! client's own bucket is charged before the API key is checked (so guessing keys is rate
//! limited too) and before the body is read (so a throttled client cannot make the proxy
//! buffer megabytes).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument as _;

use crate::error::{ProxyError, json_response};
use crate::hardening::{Route, read_body};
use crate::observability::{AccessRecord, REQUEST_ID_HEADER, access_log, request_id};
use crate::ratelimit::client_ip;
use crate::relay::EnclaveResponse;
use crate::server::Shared;

/// The fields the proxy reads from a body: just enough to charge the right bucket. The
/// rest (sealed payloads) is skipped, not copied.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "accountId", borrow, default)]
    account_id: Option<Cow<'a, str>>,
}

/// Answers one request; never fails (every error becomes a wire error response).
pub(crate) async fn handle(shared: Arc<Shared>, peer: IpAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let client = client_ip(peer, req.headers(), &shared.config.trusted_proxies);
    let method = req.method().clone();
    let version = req.version();
    let route = Route::resolve(&method, req.uri().path());
    let label = route.as_ref().map_or("unmatched", |r| r.path());
    let span = tracing::info_span!("request", request_id = %request_id, api_key = tracing::field::Empty);
    let _in_flight = shared.metrics.request_started();

    let mut bytes_in = 0;
    let result = match route {
        Ok(route) => {
            process(&shared, route, client, req, &request_id, &mut bytes_in)
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(e),
    };
    let mut response = result.unwrap_or_else(|e| {
        if let ProxyError::RateLimited { scope, .. } = &e {
            shared.metrics.rate_limited(*scope);
        }
        e.to_response(&request_id)
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }

    let latency = started.elapsed();
    let status = response.status().as_u16();
    shared.metrics.observe(label, status, latency);
    span.in_scope(|| {
        access_log(&AccessRecord {
            method: &method,
            route: label,
            status,
            latency,
            bytes_in,
            bytes_out: usize::try_from(response.body().size_hint().exact().unwrap_or(0)).unwrap_or(usize::MAX),
            client,
            version,
        });
    });
    response
}

async fn process(
    shared: &Shared,
    route: Route,
    client: IpAddr,
    req: Request<Incoming>,
    request_id: &str,
    bytes_in: &mut usize,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    shared.limits.check_request(client)?;
    if route == Route::CreateAccountStart {
        shared.limits.check_create_account(client)?;
    }
    if route == Route::Health {
        return Ok(health(shared, request_id).await);
    }
    if let Some(keys) = &shared.api_keys {
        let name = keys.authorize(req.headers())?;
        tracing::Span::current().record("api_key", name);
    }

    let (parts, body) = req.into_parts();
    let limits = &shared.config.limits;
    let body = read_body(
        &parts.headers,
        body,
        limits.max_body_bytes,
        shared.config.timeouts.request,
    )
    .await?;
    *bytes_in = body.len();
    let peek: Peek<'_> =
        serde_json::from_slice(&body).map_err(|_| ProxyError::BadRequest("the body must be a JSON object"))?;
    if route.starts_account_flow() {
        let account = peek.account_id.ok_or(ProxyError::BadRequest("accountId is required"))?;
        shared.limits.check_account(&account)?;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let reply = relay(shared, route.method(), route.path(), content_type, body, request_id).await?;
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        reply
            .content_type
            .unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Ok(response)
}

/// Relays to the enclave, counting and logging failures (with their cause, which the
/// client is not told).
async fn relay(
    shared: &Shared,
    method: Method,
    path: &str,
    content_type: Option<HeaderValue>,
    body: Bytes,
    request_id: &str,
) -> Result<EnclaveResponse, ProxyError> {
    match shared.relay.send(method, path, content_type, body, request_id).await {
        Ok(reply) => {
            if reply.status.is_server_error() {
                shared.metrics.enclave_error("status_5xx");
            }
            Ok(reply)
        }
        Err(e) => {
            tracing::warn!(error = %e, enclave = %shared.config.enclave, "relay to the enclave failed");
            shared.metrics.enclave_error(e.kind());
            Err(ProxyError::from(&e))
        }
    }
}

/// `GET /v1/health`: the enclave's health JSON with a `proxy` member added, so clients
/// that read the enclave's fields (`status`, `mockMode`, `version`) keep working through
/// the proxy. When the enclave cannot answer, a `503` whose body is both the wire error
/// (`MPC_PARTY_MISSING`) and a health report (`proxy` up, `enclave` not).
async fn health(shared: &Shared, request_id: &str) -> Response<Full<Bytes>> {
    let proxy = json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") });
    let reply = relay(
        shared,
        Method::GET,
        Route::Health.path(),
        None,
        Bytes::new(),
        request_id,
    )
    .await;
    let error = match reply {
        Ok(r) if r.status.is_success() => match serde_json::from_slice::<Map<String, Value>>(&r.body) {
            Ok(mut report) => {
                report.insert("proxy".into(), proxy);
                return json_response(r.status, &report);
            }
            Err(_) => ProxyError::EnclaveBadResponse,
        },
        // The enclave answers but says it cannot serve.
        Ok(_) => ProxyError::EnclaveUnavailable,
        Err(e) => e,
    };
    let body = json!({
        "requestId": request_id,
        "status": "unavailable",
        "proxy": proxy,
        "enclave": { "status": "unreachable" },
        "error": { "code": error.code(), "message": error.to_string() },
    });
    // The error's own response for its status and headers (Retry-After), with this body.
    let mut response = error.to_response(request_id);
    *response.body_mut() = json_response(error.status(), &body).into_body();
    response
}
