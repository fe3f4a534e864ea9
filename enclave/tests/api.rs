//! Handler-level tests: the enclave's router driven in process (no socket) by the device
//! machines of `tandem-core`, so every status code and error code can be asserted.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign};
use tandem_core::{KeyShare, PublicKey};
use tandem_enclave::config::StoreKind;
use tandem_enclave::{Config, Server};
use tower::ServiceExt;

struct Harness {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::mock(dir.path());
        config.store = StoreKind::Memory;
        f(&mut config);
        Harness {
            server: Server::open(&config).unwrap(),
            _dir: dir,
        }
    }

    async fn raw(&self, path: &str, body: Body) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let resp = self.server.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(path, Body::from(body.to_string())).await
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }

    async fn create_account(&self) -> (String, Arc<KeyShare>) {
        let (mut d, m0) = DeviceDkg::start().unwrap();
        let r = self
            .ok(
                "/v1/createAccount/start",
                json!({"label": "t", "clientMessage": b64(&m0)}),
            )
            .await;
        let sid = r["sessionId"].as_str().unwrap().to_string();
        let m1 = d.receive(&unb64(&r["serverMessage"])).unwrap();
        let r = self
            .ok(
                "/v1/createAccount/step",
                json!({"sessionId": sid, "clientMessage": b64(&m1)}),
            )
            .await;
        assert_eq!(r["status"], "CONTINUE");
        let m2 = d.receive(&unb64(&r["serverMessage"])).unwrap();
        let r = self
            .ok(
                "/v1/createAccount/step",
                json!({"sessionId": sid, "clientMessage": b64(&m2)}),
            )
            .await;
        assert_eq!(r["status"], "DONE");
        let pk: PublicKey = serde_json::from_value(r["publicKey"].clone()).unwrap();
        let share = d.finish(&pk).unwrap();
        assert_eq!(r["address"], share.address().to_checksum());
        (r["accountId"].as_str().unwrap().to_string(), Arc::new(share))
    }

    /// Starts a sign session; returns the device machine, the session id and step message.
    async fn sign_start(
        &self,
        account: &str,
        share: &Arc<KeyShare>,
        digest: [u8; 32],
    ) -> (DeviceSign, String, Vec<u8>) {
        let (mut d, m0) = DeviceSign::start(share.clone(), digest).unwrap();
        let r = self
            .ok(
                "/v1/sign/start",
                json!({"accountId": account, "clientMessage": b64(&m0)}),
            )
            .await;
        let m1 = d.receive(&unb64(&r["serverMessage"])).unwrap();
        (d, r["sessionId"].as_str().unwrap().to_string(), m1)
    }

    async fn sign(
        &self,
        account: &str,
        share: &Arc<KeyShare>,
        digest: [u8; 32],
    ) -> Result<tandem_core::Signature, (StatusCode, Value)> {
        let (d, sid, m1) = self.sign_start(account, share, digest).await;
        let (status, r) = self
            .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
            .await;
        if status != StatusCode::OK {
            return Err((status, r));
        }
        assert_eq!(r["status"], "DONE");
        Ok(d.finish(&unb64(&r["serverPartial"])).unwrap())
    }

    async fn accounts(&self) -> usize {
        self.server.state().keystore.list().await.unwrap().len()
    }
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn health_reports_mock_mode() {
    let h = Harness::new();
    let req = Request::get("/v1/health").body(Body::empty()).unwrap();
    let resp = h.server.app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!(v["mockMode"], true);
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn create_sign_recover_refresh_over_the_api() {
    let h = Harness::new();
    let (account, share) = h.create_account().await;
    let info = h
        .ok("/v1/getPublicKey", json!({"accountId": account, "requestId": "abc"}))
        .await;
    assert_eq!(info["requestId"], "abc");
    assert_eq!(info["address"], share.address().to_checksum());

    h.sign(&account, &share, [7; 32]).await.unwrap();

    let m = DeviceRecover::message(&share).unwrap();
    let r = h
        .ok(
            "/v1/recover/start",
            json!({"accountId": account, "clientMessage": b64(&m)}),
        )
        .await;
    assert_eq!(r["status"], "DONE");
    assert_eq!(r["address"], share.address().to_checksum());

    // Refresh, then the old share still works until the device uses the new one.
    let (mut d, m0) = DeviceRefresh::start(share.clone()).unwrap();
    let r = h
        .ok(
            "/v1/refresh/start",
            json!({"accountId": account, "clientMessage": b64(&m0)}),
        )
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = d.receive(&unb64(&r["serverMessage"])).unwrap();
    let r = h
        .ok("/v1/refresh/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    let m2 = d.receive(&unb64(&r["serverMessage"])).unwrap();
    let r = h
        .ok("/v1/refresh/step", json!({"sessionId": sid, "clientMessage": b64(&m2)}))
        .await;
    assert_eq!(r["status"], "DONE");
    let new_share = Arc::new(d.finish().unwrap());
    assert_eq!(new_share.public_key(), share.public_key());

    // Naming the new generation proves nothing: a start that never completes (say, the
    // host replays the new share id) must not retire the old share.
    let _abandoned = h.sign_start(&account, &new_share, [11; 32]).await;
    // A second refresh before the first is confirmed is refused.
    let (_, m0) = DeviceRefresh::start(new_share.clone()).unwrap();
    let (status, v) = h
        .post(
            "/v1/refresh/start",
            json!({"accountId": account, "clientMessage": b64(&m0)}),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "MPC_INVALID_SHARE")
    );
    let old = h.sign(&account, &share, [8; 32]).await;
    assert!(old.is_ok(), "old share works until the new one is used: {old:?}");
    h.sign(&account, &new_share, [9; 32])
        .await
        .expect("the new share works");
    // Using the new share promoted it: the old one is gone.
    let (_, m0) = DeviceSign::start(share.clone(), [10; 32]).unwrap();
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": account, "clientMessage": b64(&m0)}),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "MPC_INVALID_SHARE")
    );
    let m = DeviceRecover::message(&share).unwrap();
    let (status, v) = h
        .post(
            "/v1/recover/start",
            json!({"accountId": account, "clientMessage": b64(&m)}),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "RECOVERY_FAILED")
    );
}

#[tokio::test]
async fn replayed_cross_session_and_out_of_order_messages() {
    let h = Harness::new();
    let (account, share) = h.create_account().await;

    // Replay: a completed step sent again finds no session.
    let (_d, sid, m1) = h.sign_start(&account, &share, [1; 32]).await;
    h.ok("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // Cross-session: A's message into B's session is refused; A still completes.
    let (da, sa, ma) = h.sign_start(&account, &share, [2; 32]).await;
    let (_db, sb, _mb) = h.sign_start(&account, &share, [3; 32]).await;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sb, "clientMessage": b64(&ma)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"), "{v}");
    let r = h
        .ok("/v1/sign/step", json!({"sessionId": sa, "clientMessage": b64(&ma)}))
        .await;
    da.finish(&unb64(&r["serverPartial"])).unwrap();

    // Out of order: a start message sent as a step, and a DKG step sent to the sign route.
    let (_dc, sc, _mc) = h.sign_start(&account, &share, [4; 32]).await;
    let (_, m0) = DeviceSign::start(share.clone(), [4; 32]).unwrap();
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sc, "clientMessage": b64(&m0)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));
    let (_dd, sd, md) = h.sign_start(&account, &share, [5; 32]).await;
    let (status, v) = h
        .post(
            "/v1/createAccount/step",
            json!({"sessionId": sd, "clientMessage": b64(&md)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // Unknown session.
    let (status, v) = h
        .post(
            "/v1/sign/step",
            json!({"sessionId": "ab".repeat(32), "clientMessage": b64(&m1)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));
    assert!(h.server.state().sessions.is_empty() || h.server.state().sessions.len() <= 1);
}

#[tokio::test]
async fn truncated_and_bit_flipped_messages_fail_and_the_server_keeps_serving() {
    let h = Harness::new();
    let (account, share) = h.create_account().await;
    let (_d, sid, m1) = h.sign_start(&account, &share, [1; 32]).await;
    let (status, v) = h
        .post(
            "/v1/sign/step",
            json!({"sessionId": sid, "clientMessage": b64(&m1[..m1.len() / 2])}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));

    // A flipped header byte (the step number).
    let (_d, sid, mut m1) = h.sign_start(&account, &share, [2; 32]).await;
    m1[6] ^= 0x01;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // A flipped payload byte near the end (inside the phase-2 message).
    let (_d, sid, mut m1) = h.sign_start(&account, &share, [3; 32]).await;
    let n = m1.len();
    m1[n - 40] ^= 0x01;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    assert!(status.is_client_error(), "{status} {v}");

    // The server still signs for a fresh account (the first may be locked if the flip hit
    // an OT check, which is the protocol's mandated response).
    let (account2, share2) = h.create_account().await;
    h.sign(&account2, &share2, [4; 32]).await.unwrap();
}

#[tokio::test]
async fn failed_and_expired_dkg_leave_nothing_behind() {
    let h = Harness::new();
    // Failed: replay step 1's message as step 2.
    let (mut d, m0) = DeviceDkg::start().unwrap();
    let r = h
        .ok("/v1/createAccount/start", json!({"clientMessage": b64(&m0)}))
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = d.receive(&unb64(&r["serverMessage"])).unwrap();
    h.ok(
        "/v1/createAccount/step",
        json!({"sessionId": sid, "clientMessage": b64(&m1)}),
    )
    .await;
    let (status, v) = h
        .post(
            "/v1/createAccount/step",
            json!({"sessionId": sid, "clientMessage": b64(&m1)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));
    assert_eq!(h.accounts().await, 0);

    // Expired: wait past the TTL before the next step.
    let h = Harness::with(|c| c.session_ttl = Duration::from_millis(1500));
    let (mut d, m0) = DeviceDkg::start().unwrap();
    let r = h
        .ok("/v1/createAccount/start", json!({"clientMessage": b64(&m0)}))
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = d.receive(&unb64(&r["serverMessage"])).unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, v) = h
        .post(
            "/v1/createAccount/step",
            json!({"sessionId": sid, "clientMessage": b64(&m1)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::GATEWAY_TIMEOUT, "MPC_TIMEOUT"));
    assert_eq!(h.accounts().await, 0);
    assert!(h.server.state().sessions.is_empty());
}

#[tokio::test]
async fn malformed_requests_get_their_codes() {
    let h = Harness::with(|c| c.max_body_bytes = 1024 * 1024);
    let (status, v) = h.raw("/v1/sign/start", Body::from("{not json")).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": "../etc/passwd", "clientMessage": ""}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": "0".repeat(32), "clientMessage": "%%%"}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let (status, v) = h
        .post(
            "/v1/createAccount/start",
            json!({"label": "x".repeat(65), "clientMessage": ""}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let big = "A".repeat(1100 * 1024);
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": "0".repeat(32), "clientMessage": big}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"));
    let (status, v) = h.post("/v1/nope", json!({})).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));

    // Unknown account (with a well-formed message).
    let (account, share) = h.create_account().await;
    let (_, m0) = DeviceSign::start(share.clone(), [1; 32]).unwrap();
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": "0".repeat(32), "clientMessage": b64(&m0)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));
    let (status, v) = h.post("/v1/getPublicKey", json!({"accountId": "1".repeat(32)})).await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));

    // A wrong-length digest inside a well-formed envelope.
    let wrong = tandem_core::message::Envelope::seal(
        tandem_core::message::Expect {
            flow: tandem_core::Flow::Sign,
            direction: tandem_core::message::Direction::ToEnclave,
            step: 0,
            binding: [3; 32],
        },
        &(vec![0u8; 20], share.share_id()),
    )
    .unwrap();
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": account, "clientMessage": b64(&wrong)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("32 bytes"));
}

#[tokio::test]
async fn session_cap_refuses_with_rate_limited() {
    let h = Harness::with(|c| c.max_sessions = 2);
    let (account, share) = h.create_account().await;
    let _a = h.sign_start(&account, &share, [1; 32]).await;
    let _b = h.sign_start(&account, &share, [2; 32]).await;
    let (_, m0) = DeviceSign::start(share.clone(), [3; 32]).unwrap();
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": account, "clientMessage": b64(&m0)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_sessions_all_succeed() {
    let h = Arc::new(Harness::new());
    let (a1, s1) = h.create_account().await;
    let (a2, s2) = h.create_account().await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let h = h.clone();
        let (account, share) = if i % 2 == 0 {
            (a1.clone(), s1.clone())
        } else {
            (a2.clone(), s2.clone())
        };
        tasks.push(tokio::spawn(
            async move { h.sign(&account, &share, [i; 32]).await.is_ok() },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
}
