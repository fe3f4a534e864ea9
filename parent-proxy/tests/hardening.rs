//! The proxy under abuse, as the real binary: TLS versions, slowloris, oversized bodies,
//! unknown routes, API keys, and what is (not) forwarded to the enclave.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ProxyProcess, StubEnclave, bounded, closed_port, post_json};
use rustls::ProtocolVersion;
use rustls::version::{TLS12, TLS13};
use serde_json::{Value, json};
use tandem_proxy::hardening::hash_api_key;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Reads until the peer closes (or errors), at most `limit`; returns what was read and
/// whether the connection was closed within the limit.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_clients_are_refused_unless_tls12_is_allowed() {
    bounded(async {
        let enclave = format!("tcp://127.0.0.1:{}", closed_port().await);
        let dir = tempfile::tempdir().unwrap();
        let strict = ProxyProcess::start_with_enclave(dir.path(), &enclave, &[]);
        let refused = strict.tls_connect(&[&TLS12], &[b"http/1.1"]).await;
        assert!(refused.is_err(), "a TLS 1.2-only client must be refused by default");
        let ok = strict.tls_connect(&[&TLS13], &[b"http/1.1"]).await.unwrap();
        assert_eq!(ok.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        drop(ok);
        let metrics = strict.metrics().await;
        assert!(
            metrics.contains("tandem_proxy_tls_handshake_failures_total 1"),
            "{metrics}"
        );

        let dir = tempfile::tempdir().unwrap();
        let lenient = ProxyProcess::start_with_enclave(dir.path(), &enclave, &["--allow-tls12"]);
        let ok = lenient.tls_connect(&[&TLS12], &[b"http/1.1"]).await.unwrap();
        assert_eq!(ok.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_within_the_header_timeout() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = ProxyProcess::start(
            dir.path(),
            stub.port,
            &["--header-timeout", "1s", "--idle-timeout", "30s"],
        );

        // Partial headers, then silence.
        let mut conn = proxy.tls_connect(&[&TLS13], &[b"http/1.1"]).await.unwrap();
        conn.write_all(b"POST /v1/sign/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
            .await
            .unwrap();
        conn.flush().await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(8)).await;
        let waited = started.elapsed();
        assert!(closed, "a slowloris connection must be closed");
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(8),
            "closed after {waited:?}, expected about the 1 s header timeout (not the 30 s idle timeout)"
        );

        // Silence right after the handshake is cut the same way.
        let mut conn = proxy.tls_connect(&[&TLS13], &[b"http/1.1"]).await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(8)).await;
        assert!(closed, "a silent connection must be closed by the header timeout");
        assert!(started.elapsed() < Duration::from_secs(8));

        // The proxy itself is fine, and the enclave saw none of it.
        let resp = proxy
            .http()
            .get(format!("{}/v1/health", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(stub.request_count(), 1, "only the health check reached the enclave");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_with_the_wire_body() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = ProxyProcess::start(dir.path(), stub.port, &["--max-body-bytes", "65536"]);

        // Declared by Content-Length: refused before the body is read.
        let big = "A".repeat(200_000);
        let (status, headers, body) = post_json(
            &proxy.http(),
            &format!("{}/v1/sign/start", proxy.url),
            &json!({ "accountId": "x", "clientMessage": big }),
        )
        .await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert!(body["error"]["message"].as_str().unwrap().contains("65536"));
        assert_eq!(body["requestId"].as_str(), headers["x-request-id"].to_str().ok());

        // Chunked, no length: cut off once it passes the limit.
        let mut conn = proxy.tls_connect(&[&TLS13], &[b"http/1.1"]).await.unwrap();
        conn.write_all(
            b"POST /v1/sign/step HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let chunk = vec![b'B'; 16 * 1024];
        for _ in 0..8 {
            let head = format!("{:x}\r\n", chunk.len());
            if conn.write_all(head.as_bytes()).await.is_err()
                || conn.write_all(&chunk).await.is_err()
                || conn.write_all(b"\r\n").await.is_err()
            {
                break; // the proxy may already have answered and closed
            }
        }
        let (response, _) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        let json_start = text.find('{').unwrap();
        let body: Value = serde_json::from_str(text[json_start..].trim()).unwrap();
        assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

        assert_eq!(stub.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(r#"tandem_proxy_requests_total{route="/v1/sign/start",status="413"} 1"#),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_get_404_and_only_known_authorized_requests_reach_the_enclave() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, format!("{}\n", hash_api_key("backend-key-1"))).unwrap();
        let proxy = ProxyProcess::start(dir.path(), stub.port, &["--api-keys", keys.to_str().unwrap()]);
        let http = proxy.http();

        for (method, path, expected) in [
            ("GET", "/", 404),
            ("GET", "/metrics", 404),
            ("POST", "/v1/admin", 404),
            ("POST", "/v1/sign/start/../../admin", 404),
            ("GET", "/v1/sign/start", 405),
            ("DELETE", "/v1/health", 405),
        ] {
            let resp = http
                .request(method.parse().unwrap(), format!("{}{path}", proxy.url))
                .header("authorization", "Bearer backend-key-1")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), expected, "{method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{method} {path}");
            assert!(body["requestId"].is_string());
        }

        // A known route without a valid key: 401, not forwarded either.
        for auth in [None, Some("Bearer wrong-key"), Some("Basic YmFja2VuZC1rZXktMQ==")] {
            let mut req = http
                .post(format!("{}/v1/getPublicKey", proxy.url))
                .json(&json!({ "accountId": "a" }));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        }
        assert_eq!(
            stub.connections.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing reached the enclave"
        );

        // A known, authorized request is forwarded: with the request id, without the key.
        let resp = http
            .post(format!("{}/v1/getPublicKey", proxy.url))
            .header("authorization", "Bearer backend-key-1")
            .header("x-request-id", "rid-forwarded-7")
            .header("cookie", "session=abc")
            .json(&json!({ "accountId": "a" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let heads = stub.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1);
        let head = heads[0].to_ascii_lowercase();
        assert!(head.starts_with("post /v1/getpublickey http/1.1"), "{head}");
        assert!(head.contains("x-request-id: rid-forwarded-7"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            !head.contains("authorization") && !head.contains("backend-key-1"),
            "{head}"
        );
        assert!(!head.contains("cookie"), "{head}");

        // Health needs no key (load balancers probe it).
        let resp = http.get(format!("{}/v1/health", proxy.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(r#"tandem_proxy_requests_total{route="unmatched",status="404"} 4"#),
            "{metrics}"
        );
    })
    .await;
}
