//! Rate limits of the real binary: per client IP (with and without a trusted load
//! balancer in front), per account for flow starts, `429` with `Retry-After` and the wire
//! body. Two client IPs are simulated from 127.0.0.1 with `X-Forwarded-For`, which the
//! proxy believes only when 127.0.0.1 is configured as a trusted proxy.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ProxyProcess, StubEnclave, bounded};
use serde_json::{Value, json};

/// `GET /v1/health` as the client `xff` (if any): the status, `Retry-After` and body.
async fn health_as(proxy: &ProxyProcess, http: &reqwest::Client, xff: Option<&str>) -> (u16, Option<u64>, Value) {
    let mut req = http.get(format!("{}/v1/health", proxy.url));
    if let Some(v) = xff {
        req = req.header("x-forwarded-for", v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_per_ip_limit_gets_429_while_another_ip_is_unaffected() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = ProxyProcess::start(
            dir.path(),
            stub.port,
            &["--trusted-proxy", "127.0.0.1", "--ip-rate", "1/min,burst=3"],
        );
        let http = proxy.http();

        // Client A (as reported by the trusted "load balancer" at 127.0.0.1) bursts.
        for _ in 0..3 {
            assert_eq!(health_as(&proxy, &http, Some("203.0.113.1")).await.0, 200);
        }
        let (status, retry_after, body) = health_as(&proxy, &http, Some("203.0.113.1")).await;
        assert_eq!(status, 429);
        let retry_after = retry_after.expect("a 429 carries Retry-After");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(body["error"]["code"], "RATE_LIMITED");
        assert!(body["error"]["message"].as_str().unwrap().contains("ip"));
        assert!(body["requestId"].is_string());

        // Client B is unaffected, and so is the balancer's own address.
        assert_eq!(health_as(&proxy, &http, Some("203.0.113.2")).await.0, 200);
        assert_eq!(health_as(&proxy, &http, None).await.0, 200);

        // What the client wrote to the left of the balancer's entry does not count: A
        // cannot escape its bucket by prepending an address.
        let (status, _, _) = health_as(&proxy, &http, Some("198.51.100.77, 203.0.113.1")).await;
        assert_eq!(status, 429, "the rightmost untrusted entry is the client");

        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(r#"tandem_proxy_rate_limited_total{scope="ip"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"tandem_proxy_requests_total{route="/v1/health",status="429"} 2"#),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_bucket() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        // No trusted proxies: 127.0.0.1 is a client like any other.
        let proxy = ProxyProcess::start(dir.path(), stub.port, &["--ip-rate", "1/min,burst=3"]);
        let http = proxy.http();
        for spoof in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
            assert_eq!(health_as(&proxy, &http, Some(spoof)).await.0, 200);
        }
        let (status, retry_after, body) = health_as(&proxy, &http, Some("198.51.100.4")).await;
        assert_eq!(status, 429, "a fresh X-Forwarded-For must not buy a fresh bucket");
        assert!(retry_after.is_some());
        assert_eq!(body["error"]["code"], "RATE_LIMITED");
        assert_eq!(stub.request_count(), 3, "refused requests never reach the enclave");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_starts_are_limited_per_account_across_client_ips() {
    bounded(async {
        let stub = StubEnclave::start().await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = ProxyProcess::start(
            dir.path(),
            stub.port,
            &["--trusted-proxy", "127.0.0.1", "--account-rate", "1/min,burst=2"],
        );
        let http = proxy.http();
        let start = |ip: &'static str, account: &'static str| {
            http.post(format!("{}/v1/sign/start", proxy.url))
                .header("x-forwarded-for", ip)
                .json(&json!({ "accountId": account, "clientMessage": "AAAA" }))
                .send()
        };
        assert_eq!(start("203.0.113.1", "acct-a").await.unwrap().status(), 200);
        assert_eq!(start("203.0.113.2", "acct-a").await.unwrap().status(), 200);
        let resp = start("203.0.113.3", "acct-a").await.unwrap();
        assert_eq!(resp.status(), 429, "a third start on the account, from a third IP");
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("account"));
        assert_eq!(
            start("203.0.113.3", "acct-b").await.unwrap().status(),
            200,
            "other accounts are unaffected"
        );

        // Steps are not flow starts: they are charged to the IP only.
        for _ in 0..3 {
            let resp = http
                .post(format!("{}/v1/sign/step", proxy.url))
                .json(&json!({ "sessionId": "s", "clientMessage": "AAAA" }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        // A flow start without an account id is refused by the proxy, not relayed.
        let resp = http
            .post(format!("{}/v1/recover/start", proxy.url))
            .json(&json!({ "clientMessage": "AAAA" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(stub.request_count(), 6);
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(r#"tandem_proxy_rate_limited_total{scope="account"} 1"#),
            "{metrics}"
        );
    })
    .await;
}
