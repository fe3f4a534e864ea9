//! Full flows across real processes and real sockets: the SDK → HTTPS (a development CA
//! from `--self-signed`) → the `tandem-proxy` binary → a mock-mode enclave over TCP. Also:
//! the enclave going down and coming back under a proxy that keeps running, and what the
//! proxy's logs and metrics show of a whole run.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use alloy_primitives::B256;
use base64::Engine as _;
use bytes::Bytes;
use common::{LocalEnclave, ProxyProcess, bounded, post_json, sdk_client};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tandem_proxy::hardening::hash_api_key;
use tandem_sdk::SdkError;
use tandem_sdk::tandem_core::{ErrorCode, Signature};

const API_KEY: &str = "tk_live_7f3a9c2e51d04b8aa6f1";

/// An HTTPS client that trusts the proxy's CA and sends the API key on every request.
fn authorized_http(proxy: &ProxyProcess) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&proxy.ca_pem).unwrap())
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Checks `sig` over `digest` against `address` with an independent implementation (alloy).
fn assert_signed_by(sig: &Signature, digest: [u8; 32], address: &str) {
    let alloy_sig = alloy_primitives::Signature::from_scalars_and_parity(
        B256::from(sig.r),
        B256::from(sig.s),
        sig.recovery_id == 1,
    );
    let recovered = alloy_sig.recover_address_from_prehash(&B256::from(digest)).unwrap();
    assert_eq!(recovered.to_checksum(None), address);
}

/// Every run of at least 48 base64 characters in `text` (payloads are kilobytes of it;
/// nothing legitimate in a log line is that long).
fn base64_runs(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .filter(|run| run.len() >= 48)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flows_through_the_tls_proxy_with_clean_logs_and_metrics() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let enclave = LocalEnclave::start(&dir.path().join("enclave"), 0).await;
        let keys = dir.path().join("api-keys");
        std::fs::write(&keys, format!("# test keys\n{} test-backend\n", hash_api_key(API_KEY))).unwrap();
        let proxy = ProxyProcess::start(dir.path(), enclave.port, &["--api-keys", keys.to_str().unwrap()]);
        let http = authorized_http(&proxy);
        let client = sdk_client(&proxy.url, http.clone(), &enclave.dev_root_pem);

        // Health through the proxy still reads as the enclave's health for the SDK.
        let health = client.health().await.unwrap();
        assert_eq!(health.status, "ok");
        assert!(health.mock_mode);

        // createAccount, sign (twice: pooled connections are reused), recover.
        let account = client.create_account(Some("via-proxy")).await.unwrap();
        let address = account.address().to_checksum(None);
        for byte in [0x11u8, 0x22] {
            let digest = [byte; 32];
            let sig = client.sign_digest(&account, digest).await.unwrap();
            assert_signed_by(&sig, digest, &address);
        }
        client.recover(&account).await.unwrap();

        // Without the API key: 401 UNAUTHORIZED, from the proxy.
        let anonymous = proxy.client(&enclave);
        let err = anonymous.get_public_key(account.id()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");

        // A raw request with a known payload and request id: relayed (the enclave refuses
        // the garbage payload), the id propagated both ways.
        let payload = base64::engine::general_purpose::STANDARD.encode(
            (0..3000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect::<Vec<_>>(),
        );
        let request_id = "trace-me-0042";
        let resp = http
            .post(format!("{}/v1/sign/start", proxy.url))
            .header("x-request-id", request_id)
            .json(&json!({ "accountId": account.id(), "clientMessage": payload }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(resp.headers()["x-request-id"], request_id);
        let body: Value = resp.json().await.unwrap();
        // The enclave's own refusal, relayed as it is (which code is the enclave's business).
        assert!(
            !status.is_success(),
            "the enclave refuses a garbage payload, got {status}: {body}"
        );
        assert!(body["error"]["code"].is_string(), "{body}");
        assert_eq!(
            body["requestId"], request_id,
            "the enclave saw the proxy's x-request-id"
        );

        // HTTP/2, chosen by ALPN.
        let tls = proxy.tls_connect(&[&rustls::version::TLS13], &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("https://localhost/v1/health")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let report: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(report["proxy"]["status"], "ok");
        assert_eq!(report["mockMode"], true);

        // Metrics count all of it.
        let metrics = proxy.metrics().await;
        for needle in [
            r#"tandem_proxy_requests_total{route="/v1/createAccount/start",status="200"} 1"#,
            r#"tandem_proxy_requests_total{route="/v1/createAccount/step",status="200"} 2"#,
            r#"tandem_proxy_requests_total{route="/v1/sign/start",status="200"} 2"#,
            r#"tandem_proxy_requests_total{route="/v1/recover/start",status="200"} 1"#,
            r#"tandem_proxy_requests_total{route="/v1/getPublicKey",status="401"} 1"#,
            r#"tandem_proxy_request_duration_seconds_count{route="/v1/sign/step"} 2"#,
            r#"tandem_proxy_rate_limited_total{scope="ip"} 0"#,
            r#"tandem_proxy_enclave_errors_total{kind="unreachable"} 0"#,
            "tandem_proxy_in_flight_requests 0",
            "tandem_proxy_open_connections",
        ] {
            assert!(metrics.contains(needle), "metrics lack {needle:?}:\n{metrics}");
        }

        // The logs of the whole run: JSON lines with the access fields, and no secrets.
        let log = proxy.log_text();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
            .collect();
        let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "tandem_proxy::access").collect();
        assert!(access.len() >= 10, "one access line per request:\n{log}");
        assert!(
            access
                .iter()
                .all(|l| l["latency_ms"].is_number() && l["bytes_out"].is_number())
        );
        let traced = access
            .iter()
            .find(|l| l["span"]["request_id"] == request_id)
            .expect("the access line carries the propagated request id");
        assert_eq!(traced["route"], "/v1/sign/start");
        assert_eq!(traced["method"], "POST");
        assert_eq!(
            traced["span"]["api_key"], "test-backend",
            "the key's name, never the key"
        );
        assert!(traced["bytes_in"].as_u64().unwrap() > 4000);
        assert!(
            access
                .iter()
                .any(|l| l["route"] == "/v1/sign/step" && l["status"] == 200),
            "{log}"
        );

        assert!(!log.contains(API_KEY), "the API key leaked into the log");
        assert!(
            !log.to_ascii_lowercase().contains("bearer"),
            "an auth header leaked into the log"
        );
        assert!(
            !log.contains("clientMessage") && !log.contains("serverMessage"),
            "a body leaked"
        );
        for offset in [0, 100, 1000, 3000] {
            assert!(
                !log.contains(&payload[offset..offset + 32]),
                "the payload leaked into the log"
            );
        }
        assert_eq!(base64_runs(&log), Vec::<&str>::new(), "base64 payloads in the log");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_down_gives_503_and_it_recovers_without_restarting_the_proxy() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("enclave");
        let enclave = LocalEnclave::start(&data, 0).await;
        let proxy = ProxyProcess::start(dir.path(), enclave.port, &[]);
        let client = proxy.client(&enclave);
        let account = client.create_account(None).await.unwrap();
        let address = account.address().to_checksum(None);
        client.sign_digest(&account, [1; 32]).await.unwrap();

        // Kill the enclave: clean 503s with the wire error body, not hangs or resets.
        let port = enclave.port;
        enclave.stop().await;
        match client.sign_digest(&account, [2; 32]).await {
            Err(SdkError::Server { code, status, .. }) => {
                assert_eq!((code, status), (ErrorCode::MpcPartyMissing, 503));
            }
            other => panic!("expected a 503 MPC_PARTY_MISSING, got {other:?}"),
        }
        let http = proxy.http();
        let (status, headers, body) = post_json(
            &http,
            &format!("{}/v1/getPublicKey", proxy.url),
            &json!({ "accountId": account.id() }),
        )
        .await;
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "MPC_PARTY_MISSING");
        assert!(body["error"]["message"].as_str().unwrap().contains("not reachable"));
        assert_eq!(body["requestId"].as_str(), headers["x-request-id"].to_str().ok());
        assert!(headers.contains_key("retry-after"));
        let resp = http.get(format!("{}/v1/health", proxy.url)).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        let report: Value = resp.json().await.unwrap();
        assert_eq!(report["proxy"]["status"], "ok", "the proxy reports itself up");
        assert_eq!(report["enclave"]["status"], "unreachable");
        assert_eq!(report["error"]["code"], "MPC_PARTY_MISSING");

        // Bring it back on the same port: the same proxy process serves again, and the
        // account (sealed on disk) still signs.
        let enclave = LocalEnclave::start(&data, port).await;
        // A fresh client: the restarted enclave has a new channel key to attest.
        let client = proxy.client(&enclave);
        // The very first request after the restart succeeds: no stale pooled connection.
        let sig = client.sign_digest(&account, [3; 32]).await.unwrap();
        assert_signed_by(&sig, [3; 32], &address);

        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(r#"tandem_proxy_enclave_errors_total{kind="unreachable"}"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"tandem_proxy_requests_total{route="/v1/sign/start",status="503"} 1"#),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_proxy_serves_like_the_binary() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let enclave = LocalEnclave::start(&dir.path().join("enclave"), 0).await;
        let proxy = tandem_proxy::LocalProxy::start(
            format!("tcp://127.0.0.1:{}", enclave.port).parse().unwrap(),
            &dir.path().join("tls"),
            |config| config.limits.max_body_bytes = 4 << 20,
        )
        .await
        .unwrap();
        assert!(proxy.url.starts_with("https://127.0.0.1:"));
        assert_eq!(std::fs::read(&proxy.ca_cert).unwrap(), proxy.ca_pem);
        let client = sdk_client(
            &proxy.url,
            tandem_sdk::http_client_trusting(&proxy.ca_pem).unwrap(),
            &enclave.dev_root_pem,
        );
        let health = client.health().await.unwrap();
        assert!(health.mock_mode);
        // Plain HTTP to an HTTPS-only client is refused, not silently downgraded.
        let plain = tandem_sdk::http_client_trusting(&proxy.ca_pem).unwrap();
        assert!(
            plain
                .get(format!("http://127.0.0.1:{}/v1/health", enclave.port))
                .send()
                .await
                .is_err()
        );
        tokio::time::timeout(Duration::from_secs(15), proxy.shutdown())
            .await
            .expect("the in-process proxy shuts down");
    })
    .await;
}
