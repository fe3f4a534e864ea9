//! Handler-level tests: the enclave's router driven in process (no socket) by the device
//! machines of `tandem-core` through the sealed channel, so every status code and error
//! code can be asserted, and everything a host would see can be captured.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tandem_core::Flow;
use tandem_core::auth::{DeviceAuthKey, FirstMessage};
use tandem_core::channel::ClientChannel;
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign};
use tandem_core::{KeyShare, PublicKey};
use tandem_enclave::config::StoreKind;
use tandem_enclave::{Config, Server};
use tandem_sdk::attestation::AttestationPolicy;
use tower::ServiceExt;

struct Harness {
    server: Server,
    policy: AttestationPolicy,
    /// Every request and response body, as the host would see them.
    capture: Mutex<Vec<u8>>,
    _dir: tempfile::TempDir,
}

/// A device: its share and auth key for one account.
struct Dev {
    account: String,
    share: Arc<KeyShare>,
    auth: DeviceAuthKey,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
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
        let server = Server::open(&config).unwrap();
        let pem = std::fs::read_to_string(server.dev_root_pem().unwrap()).unwrap();
        let policy = AttestationPolicy::nitro().danger_allow_mock(&pem).unwrap();
        Harness {
            server,
            policy,
            capture: Mutex::new(Vec::new()),
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
        self.capture.lock().unwrap().extend_from_slice(&bytes);
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let text = body.to_string();
        self.capture.lock().unwrap().extend_from_slice(text.as_bytes());
        self.raw(path, Body::from(text)).await
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }

    /// Fetches and verifies the enclave's attestation; returns its channel key.
    async fn key(&self) -> [u8; 32] {
        let nonce = [9u8; 32];
        let r = self.ok("/v1/attestation", json!({"nonce": b64(&nonce)})).await;
        let doc = self
            .policy
            .verify(&unb64(&r["document"]), unix_now(), Some(&nonce))
            .unwrap();
        doc.document.public_key.unwrap().try_into().unwrap()
    }

    async fn create_account(&self) -> Dev {
        let auth = DeviceAuthKey::generate().unwrap();
        let (mut d, m0) = DeviceDkg::start().unwrap();
        let first = FirstMessage {
            protocol: m0,
            auth_key: Some(auth.public_key()),
            authorization: None,
        };
        let (mut ch, wire) = ClientChannel::seal_first(&self.key().await, Flow::Dkg, &first.encode().unwrap()).unwrap();
        let r = self
            .ok(
                "/v1/createAccount/start",
                json!({"label": "t", "clientMessage": b64(&wire)}),
            )
            .await;
        let sid = r["sessionId"].as_str().unwrap().to_string();
        let m1 = d.receive(&ch.open(0, &unb64(&r["serverMessage"])).unwrap()).unwrap();
        let m1 = ch.seal(1, &m1).unwrap();
        let r = self
            .ok(
                "/v1/createAccount/step",
                json!({"sessionId": sid, "clientMessage": b64(&m1)}),
            )
            .await;
        assert_eq!(r["status"], "CONTINUE");
        let m2 = d.receive(&ch.open(1, &unb64(&r["serverMessage"])).unwrap()).unwrap();
        let m2 = ch.seal(2, &m2).unwrap();
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
        Dev {
            account: r["accountId"].as_str().unwrap().to_string(),
            share: Arc::new(share),
            auth,
        }
    }

    /// The sealed first message of an account flow, authorized by `auth`.
    async fn first(&self, dev: &Dev, auth: &DeviceAuthKey, flow: Flow, protocol: Vec<u8>) -> (ClientChannel, Vec<u8>) {
        let account: tandem_core::AccountId = dev.account.parse_id();
        let authorization = auth.authorize(&account, flow, &protocol, unix_now());
        let first = FirstMessage {
            protocol,
            auth_key: None,
            authorization: Some(authorization),
        };
        ClientChannel::seal_first(&self.key().await, flow, &first.encode().unwrap()).unwrap()
    }

    /// Starts a sign session; returns the device machine, channel, session id and the
    /// sealed step message.
    async fn sign_start(&self, dev: &Dev, digest: [u8; 32]) -> (DeviceSign, ClientChannel, String, Vec<u8>) {
        let (mut d, m0) = DeviceSign::start(dev.share.clone(), digest).unwrap();
        let (mut ch, wire) = self.first(dev, &dev.auth, Flow::Sign, m0).await;
        let r = self
            .ok(
                "/v1/sign/start",
                json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
            )
            .await;
        let m1 = d.receive(&ch.open(0, &unb64(&r["serverMessage"])).unwrap()).unwrap();
        let m1 = ch.seal(1, &m1).unwrap();
        (d, ch, r["sessionId"].as_str().unwrap().to_string(), m1)
    }

    async fn sign(&self, dev: &Dev, digest: [u8; 32]) -> Result<tandem_core::Signature, (StatusCode, Value)> {
        let (d, ch, sid, m1) = self.sign_start(dev, digest).await;
        let (status, r) = self
            .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
            .await;
        if status != StatusCode::OK {
            return Err((status, r));
        }
        assert_eq!(r["status"], "DONE");
        Ok(d.finish(&ch.open(1, &unb64(&r["serverPartial"])).unwrap()).unwrap())
    }

    /// A sign start authorized by `auth` (maybe not the account's key); returns the answer.
    async fn try_sign_start(&self, dev: &Dev, auth: &DeviceAuthKey, digest: [u8; 32]) -> (StatusCode, Value, Vec<u8>) {
        let (_d, m0) = DeviceSign::start(dev.share.clone(), digest).unwrap();
        let (_ch, wire) = self.first(dev, auth, Flow::Sign, m0).await;
        let (status, v) = self
            .post(
                "/v1/sign/start",
                json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
            )
            .await;
        (status, v, wire)
    }

    async fn accounts(&self) -> usize {
        self.server.state().keystore.list().await.unwrap().len()
    }
}

trait ParseId {
    fn parse_id(&self) -> tandem_core::AccountId;
}

impl ParseId for String {
    fn parse_id(&self) -> tandem_core::AccountId {
        tandem_core::AccountId::parse(self).unwrap()
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
async fn mock_attestation_verifies_only_with_the_dev_root_and_binds_the_nonce() {
    let h = Harness::new();
    let r = h.ok("/v1/attestation", json!({"nonce": b64(b"fresh")})).await;
    let doc = unb64(&r["document"]);
    let v = h.policy.verify(&doc, unix_now(), Some(b"fresh")).unwrap();
    assert!(v.mock);
    assert_eq!(v.document.public_key.as_deref().map(<[u8]>::len), Some(32));
    assert!(h.policy.verify(&doc, unix_now(), Some(b"other")).is_err());
    // The production policy (AWS root) refuses a mock document.
    let err = AttestationPolicy::nitro().verify(&doc, unix_now(), None).unwrap_err();
    assert!(
        matches!(err, tandem_sdk::attestation::AttestationError::UntrustedRoot(_)),
        "{err:?}"
    );
    // Another mock enclave's root is another root.
    let other = Harness::new();
    assert!(other.policy.verify(&doc, unix_now(), None).is_err());
    let (status, v) = h.post("/v1/attestation", json!({"nonce": b64(&[0u8; 600])})).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
}

#[tokio::test]
async fn create_sign_recover_refresh_over_the_api() {
    let h = Harness::new();
    let dev = h.create_account().await;
    let info = h
        .ok(
            "/v1/getPublicKey",
            json!({"accountId": dev.account, "requestId": "abc"}),
        )
        .await;
    assert_eq!(info["requestId"], "abc");
    assert_eq!(info["address"], dev.share.address().to_checksum());

    h.sign(&dev, [7; 32]).await.unwrap();

    let m = DeviceRecover::message(&dev.share).unwrap();
    let (_, wire) = h.first(&dev, &dev.auth, Flow::Recover, m).await;
    let r = h
        .ok(
            "/v1/recover/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!(r["status"], "DONE");
    assert_eq!(r["address"], dev.share.address().to_checksum());

    // Refresh, then the old share still works until the device uses the new one.
    let (mut d, m0) = DeviceRefresh::start(dev.share.clone()).unwrap();
    let (mut ch, wire) = h.first(&dev, &dev.auth, Flow::Refresh, m0).await;
    let r = h
        .ok(
            "/v1/refresh/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = ch
        .seal(
            1,
            &d.receive(&ch.open(0, &unb64(&r["serverMessage"])).unwrap()).unwrap(),
        )
        .unwrap();
    let r = h
        .ok("/v1/refresh/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    let m2 = ch
        .seal(
            2,
            &d.receive(&ch.open(1, &unb64(&r["serverMessage"])).unwrap()).unwrap(),
        )
        .unwrap();
    let r = h
        .ok("/v1/refresh/step", json!({"sessionId": sid, "clientMessage": b64(&m2)}))
        .await;
    assert_eq!(r["status"], "DONE");
    let new = Dev {
        account: dev.account.clone(),
        share: Arc::new(d.finish().unwrap()),
        auth: dev.auth.clone(),
    };
    assert_eq!(new.share.public_key(), dev.share.public_key());

    // Naming the new generation proves nothing: a start that never completes (say, the
    // host replays the new share id) must not retire the old share.
    let _abandoned = h.sign_start(&new, [11; 32]).await;
    // A second refresh before the first is confirmed is refused.
    let (_, m0) = DeviceRefresh::start(new.share.clone()).unwrap();
    let (_, wire) = h.first(&new, &new.auth, Flow::Refresh, m0).await;
    let (status, v) = h
        .post(
            "/v1/refresh/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "MPC_INVALID_SHARE")
    );
    let old = h.sign(&dev, [8; 32]).await;
    assert!(old.is_ok(), "old share works until the new one is used: {old:?}");
    h.sign(&new, [9; 32]).await.expect("the new share works");
    // Using the new share promoted it: the old one is gone.
    let (status, v, _) = h.try_sign_start(&dev, &dev.auth, [10; 32]).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "MPC_INVALID_SHARE")
    );
    let m = DeviceRecover::message(&dev.share).unwrap();
    let (_, wire) = h.first(&dev, &dev.auth, Flow::Recover, m).await;
    let (status, v) = h
        .post(
            "/v1/recover/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "RECOVERY_FAILED")
    );
}

#[tokio::test]
async fn the_host_sees_no_protocol_plaintext() {
    let h = Harness::new();
    // Run a DKG and a sign while recording the device's plaintexts.
    let auth = DeviceAuthKey::generate().unwrap();
    let mut plaintexts: Vec<Vec<u8>> = Vec::new();
    let (mut d, m0) = DeviceDkg::start().unwrap();
    plaintexts.push(m0.clone());
    let first = FirstMessage {
        protocol: m0,
        auth_key: Some(auth.public_key()),
        authorization: None,
    };
    let (mut ch, wire) = ClientChannel::seal_first(&h.key().await, Flow::Dkg, &first.encode().unwrap()).unwrap();
    let r = h
        .ok("/v1/createAccount/start", json!({"clientMessage": b64(&wire)}))
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let r0 = ch.open(0, &unb64(&r["serverMessage"])).unwrap().to_vec();
    let m1 = d.receive(&r0).unwrap();
    plaintexts.extend([r0, m1.clone()]);
    let r = h
        .ok(
            "/v1/createAccount/step",
            json!({"sessionId": sid, "clientMessage": b64(&ch.seal(1, &m1).unwrap())}),
        )
        .await;
    let r1 = ch.open(1, &unb64(&r["serverMessage"])).unwrap().to_vec();
    let m2 = d.receive(&r1).unwrap();
    plaintexts.extend([r1, m2.clone()]);
    let r = h
        .ok(
            "/v1/createAccount/step",
            json!({"sessionId": sid, "clientMessage": b64(&ch.seal(2, &m2).unwrap())}),
        )
        .await;
    let pk: PublicKey = serde_json::from_value(r["publicKey"].clone()).unwrap();
    let dev = Dev {
        account: r["accountId"].as_str().unwrap().into(),
        share: Arc::new(d.finish(&pk).unwrap()),
        auth,
    };

    let digest = [0x5a; 32];
    let (mut d, m0) = DeviceSign::start(dev.share.clone(), digest).unwrap();
    plaintexts.push(m0.clone());
    let (mut ch, wire) = h.first(&dev, &dev.auth, Flow::Sign, m0).await;
    let r = h
        .ok(
            "/v1/sign/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    let r0 = ch.open(0, &unb64(&r["serverMessage"])).unwrap().to_vec();
    let m1 = d.receive(&r0).unwrap();
    plaintexts.extend([r0, m1.clone()]);
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let r = h
        .ok(
            "/v1/sign/step",
            json!({"sessionId": sid, "clientMessage": b64(&ch.seal(1, &m1).unwrap())}),
        )
        .await;
    let partial = ch.open(1, &unb64(&r["serverPartial"])).unwrap().to_vec();
    d.finish(&partial).unwrap();
    plaintexts.push(partial);

    // Everything on the wire, with every base64 field decoded as the host could.
    let captured = h.capture.lock().unwrap().clone();
    let mut haystack = captured.clone();
    for token in String::from_utf8_lossy(&captured).split('"') {
        if let Ok(bytes) = B64.decode(token) {
            haystack.extend_from_slice(&bytes);
        }
    }
    let seen: std::collections::HashSet<&[u8]> = haystack.windows(24).collect();
    assert!(
        !haystack.windows(32).any(|w| w == digest),
        "the digest is visible to the host"
    );
    // Public values may legitimately appear (the DONE answer carries the public key).
    let pk = dev.share.public_key();
    let public: Vec<u8> = [
        pk.to_compressed().to_vec(),
        pk.to_uncompressed().to_vec(),
        pk.to_hex().into_bytes(),
    ]
    .concat();
    let mut checked = 0;
    for (i, p) in plaintexts.iter().enumerate() {
        // Skip the 39-byte envelope header (magic, version, flow, direction, step, binding).
        for (j, w) in p[39..].chunks(24).enumerate().filter(|(_, c)| c.len() == 24) {
            let distinct: std::collections::HashSet<&u8> = w.iter().collect();
            if distinct.len() < 12 || public.windows(24).any(|x| x == w) {
                continue; // padding or public data, not a secret-bearing fragment
            }
            checked += 1;
            assert!(!seen.contains(w), "plaintext {i}, chunk {j} is visible to the host");
        }
    }
    assert!(checked > 10_000, "only {checked} fragments checked");
}

#[tokio::test]
async fn sealed_payloads_replayed_reflected_or_tampered_abort_the_session() {
    let h = Harness::new();
    let dev = h.create_account().await;

    // Replay: a completed step sent again finds no session.
    let (_d, _ch, sid, m1) = h.sign_start(&dev, [1; 32]).await;
    h.ok("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // Another session's sealed step: does not open, and B is aborted; A still completes.
    let (da, cha, sa, ma) = h.sign_start(&dev, [2; 32]).await;
    let (_db, _chb, sb, mb) = h.sign_start(&dev, [3; 32]).await;
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sb, "clientMessage": b64(&ma)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("sealed payload"));
    let (status, v) = h
        .post("/v1/sign/step", json!({"sessionId": sb, "clientMessage": b64(&mb)}))
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::CONFLICT, "INVALID_SESSION"),
        "B was aborted"
    );
    let r = h
        .ok("/v1/sign/step", json!({"sessionId": sa, "clientMessage": b64(&ma)}))
        .await;
    da.finish(&cha.open(1, &unb64(&r["serverPartial"])).unwrap()).unwrap();

    // Reflection: the enclave's own sealed reply sent back as the device's step.
    let (mut d, m0) = DeviceSign::start(dev.share.clone(), [4; 32]).unwrap();
    let (_ch, wire) = h.first(&dev, &dev.auth, Flow::Sign, m0).await;
    let r = h
        .ok(
            "/v1/sign/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let (status, v) = h
        .post(
            "/v1/sign/step",
            json!({"sessionId": sid, "clientMessage": r["serverMessage"]}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    let _ = &mut d;

    // Tampering: one flipped ciphertext bit, and a truncation.
    for mutate in [|m: &mut Vec<u8>| m[10] ^= 1, |m: &mut Vec<u8>| m.truncate(m.len() / 2)] {
        let (_d, _ch, sid, mut m1) = h.sign_start(&dev, [5; 32]).await;
        mutate(&mut m1);
        let (status, v) = h
            .post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
            .await;
        assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
        assert!(
            h.post("/v1/sign/step", json!({"sessionId": sid, "clientMessage": b64(&m1)}))
                .await
                .0
                == StatusCode::CONFLICT
        );
    }

    // A sign session's step sent to the DKG route: wrong flow.
    let (_d, _ch, sd, md) = h.sign_start(&dev, [6; 32]).await;
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

    // Sealed to a key the enclave no longer has (it restarted): a distinct, retryable error.
    let restarted = Harness::new();
    let (_, m0) = DeviceSign::start(dev.share.clone(), [7; 32]).unwrap();
    let (_, wire) = h.first(&dev, &dev.auth, Flow::Sign, m0).await;
    let (status, v) = restarted
        .post(
            "/v1/sign/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    // (This enclave has no such account either; the key check comes after the account.)
    assert!(status.is_client_error(), "{v}");
}

#[tokio::test]
async fn only_the_registered_device_key_authorizes_and_only_once() {
    let h = Harness::new();
    let dev = h.create_account().await;
    let intruder = DeviceAuthKey::generate().unwrap();

    let (status, v, _) = h.try_sign_start(&dev, &intruder, [1; 32]).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    let m = DeviceRecover::message(&dev.share).unwrap();
    let (_, wire) = h.first(&dev, &intruder, Flow::Recover, m).await;
    let (status, v) = h
        .post(
            "/v1/recover/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    let (_, m0) = DeviceRefresh::start(dev.share.clone()).unwrap();
    let (_, wire) = h.first(&dev, &intruder, Flow::Refresh, m0).await;
    let (status, v) = h
        .post(
            "/v1/refresh/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // The right key works once; the same authorized request replayed is refused.
    let (status, v, wire) = h.try_sign_start(&dev, &dev.auth, [2; 32]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(v["error"]["message"].as_str().unwrap().contains("already used"));

    // Another account's device key cannot act on this account.
    let other = h.create_account().await;
    let (status, v, _) = h.try_sign_start(&dev, &other.auth, [3; 32]).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    h.sign(&dev, [4; 32]).await.unwrap();
}

#[tokio::test]
async fn failed_and_expired_dkg_leave_nothing_behind() {
    let h = Harness::new();
    // Failed: replay step 1's message as step 2.
    let auth = DeviceAuthKey::generate().unwrap();
    let (mut d, m0) = DeviceDkg::start().unwrap();
    let first = FirstMessage {
        protocol: m0,
        auth_key: Some(auth.public_key()),
        authorization: None,
    };
    let (mut ch, wire) = ClientChannel::seal_first(&h.key().await, Flow::Dkg, &first.encode().unwrap()).unwrap();
    let r = h
        .ok("/v1/createAccount/start", json!({"clientMessage": b64(&wire)}))
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = ch
        .seal(
            1,
            &d.receive(&ch.open(0, &unb64(&r["serverMessage"])).unwrap()).unwrap(),
        )
        .unwrap();
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
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    assert_eq!(h.accounts().await, 0);

    // A DKG without a device key is refused outright.
    let (_, m0) = DeviceDkg::start().unwrap();
    let first = FirstMessage {
        protocol: m0,
        auth_key: None,
        authorization: None,
    };
    let (_, wire) = ClientChannel::seal_first(&h.key().await, Flow::Dkg, &first.encode().unwrap()).unwrap();
    let (status, v) = h
        .post("/v1/createAccount/start", json!({"clientMessage": b64(&wire)}))
        .await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // Expired: wait past the TTL before the next step.
    let h = Harness::with(|c| c.session_ttl = Duration::from_millis(1500));
    let (mut d, m0) = DeviceDkg::start().unwrap();
    let first = FirstMessage {
        protocol: m0,
        auth_key: Some(auth.public_key()),
        authorization: None,
    };
    let (mut ch, wire) = ClientChannel::seal_first(&h.key().await, Flow::Dkg, &first.encode().unwrap()).unwrap();
    let r = h
        .ok("/v1/createAccount/start", json!({"clientMessage": b64(&wire)}))
        .await;
    let sid = r["sessionId"].as_str().unwrap().to_string();
    let m1 = ch
        .seal(
            1,
            &d.receive(&ch.open(0, &unb64(&r["serverMessage"])).unwrap()).unwrap(),
        )
        .unwrap();
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

    // Unknown account.
    let dev = h.create_account().await;
    let ghost = Dev {
        account: "0".repeat(32),
        share: dev.share.clone(),
        auth: dev.auth.clone(),
    };
    let (status, v, _) = h.try_sign_start(&ghost, &dev.auth, [1; 32]).await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));
    let (status, v) = h.post("/v1/getPublicKey", json!({"accountId": "1".repeat(32)})).await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));

    // A wrong-length digest inside a well-formed, authorized, sealed envelope.
    let wrong = tandem_core::message::Envelope::seal(
        tandem_core::message::Expect {
            flow: Flow::Sign,
            direction: tandem_core::message::Direction::ToEnclave,
            step: 0,
            binding: [3; 32],
        },
        &(vec![0u8; 20], dev.share.share_id()),
    )
    .unwrap();
    let (_, wire) = h.first(&dev, &dev.auth, Flow::Sign, wrong).await;
    let (status, v) = h
        .post(
            "/v1/sign/start",
            json!({"accountId": dev.account, "clientMessage": b64(&wire)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("32 bytes"));
}

#[tokio::test]
async fn session_cap_refuses_with_rate_limited() {
    let h = Harness::with(|c| c.max_sessions = 2);
    let dev = h.create_account().await;
    let _a = h.sign_start(&dev, [1; 32]).await;
    let _b = h.sign_start(&dev, [2; 32]).await;
    let (status, v, _) = h.try_sign_start(&dev, &dev.auth, [3; 32]).await;
    assert_eq!((status, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_sessions_all_succeed() {
    let h = Arc::new(Harness::new());
    let devs = Arc::new([h.create_account().await, h.create_account().await]);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (h, devs) = (h.clone(), devs.clone());
        tasks.push(tokio::spawn(async move {
            h.sign(&devs[usize::from(i % 2)], [i; 32]).await.is_ok()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
}
