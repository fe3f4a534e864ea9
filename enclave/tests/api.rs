//! Handler-level tests: the enclave's router driven in process (no socket), by the SDK
//! (through the testkit's router transport) and by hand-driven devices made of the core
//! machines, so every status code and error code can be asserted, and everything a host
//! would see can be captured.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tandem_core::auth::DeviceAuthKey;
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign, RefreshKind};
use tandem_core::flow::{DeviceFlow, Next};
use tandem_sdk::attestation::AttestationPolicy;
use tandem_testkit::{InProcess, b64, unb64, unix_now};
use tower::ServiceExt;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn health_reports_mock_mode() {
    let h = InProcess::new();
    let req = Request::get("/v1/health").body(Body::empty()).unwrap();
    let resp = h.server.app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!(v["mockMode"], true);
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn mock_attestation_verifies_only_with_the_dev_root_and_binds_the_nonce() {
    let h = InProcess::new();
    let r = h.ok("/v1/attestation", json!({"nonce": b64(b"fresh")})).await;
    let doc = unb64(&r["document"]);
    let v = h.policy().verify(&doc, unix_now(), Some(b"fresh")).unwrap();
    assert!(v.mock);
    assert_eq!(v.document.public_key.as_deref().map(<[u8]>::len), Some(32));
    assert!(h.policy().verify(&doc, unix_now(), Some(b"other")).is_err());
    // The production policy (AWS root) refuses a mock document.
    let nitro = AttestationPolicy::nitro().accept_image(h.image().clone());
    let err = nitro.verify(&doc, unix_now(), None).unwrap_err();
    assert!(
        matches!(err, tandem_sdk::attestation::AttestationError::UntrustedRoot(_)),
        "{err:?}"
    );
    // Another mock enclave's root is another root.
    let other = InProcess::new();
    assert!(other.policy().verify(&doc, unix_now(), None).is_err());
    let (status, v) = h.post("/v1/attestation", json!({"nonce": b64(&[0u8; 600])})).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
}

#[tokio::test]
async fn create_sign_recover_refresh_over_the_api() {
    let h = InProcess::new();
    let client = h.client();
    let account = client.create_account(Some("alice")).await.unwrap();
    assert_eq!(account.generation(), 1);
    let info = h
        .ok(
            "/v1/getPublicKey",
            json!({"accountId": account.id(), "requestId": "abc"}),
        )
        .await;
    assert_eq!(info["requestId"], "abc");
    assert_eq!(info["address"], account.address().to_checksum(None));
    let stored = h.server.state().keystore.load(account.id()).await.unwrap();
    assert_eq!(
        stored.label.as_deref(),
        Some("alice"),
        "the sealed label reached the record"
    );

    client.sign_digest(&account, [7; 32]).await.unwrap();
    client.recover(&account).await.unwrap();

    // Refresh, then the old share still works until the device uses the new one.
    let new = client.refresh(&account).await.unwrap();
    assert_eq!(new.public_key(), account.public_key());
    assert_eq!(new.generation(), 2, "storing the pending share is a write");

    // A second refresh before the first is confirmed is refused.
    let err = client.refresh(&new).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::MpcInvalidShare), "{err}");
    client
        .sign_digest(&account, [8; 32])
        .await
        .expect("the old share works until the new one is used");
    client.sign_digest(&new, [9; 32]).await.expect("the new share works");
    assert_eq!(new.generation(), 3, "the promotion is a write, reported in the partial");
    // Using the new share promoted it: the old one is gone.
    let err = client.sign_digest(&account, [10; 32]).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::MpcInvalidShare), "{err}");
    let err = client.recover(&account).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::RecoveryFailed), "{err}");
    client.recover(&new).await.unwrap();
}

/// Naming the new generation proves nothing: a start that never completes (say, the host
/// replays the new share id) must not retire the old share.
#[tokio::test]
async fn an_abandoned_start_with_a_pending_share_promotes_nothing() {
    let h = InProcess::new();
    let client = h.client();
    let account = client.create_account(None).await.unwrap();
    let new = client.refresh(&account).await.unwrap();
    let (machine, m0) = DeviceSign::start(new_share(&new), [11; 32], 0).unwrap();
    let _abandoned = h.start(machine, &m0, Some(new.id()), &auth(&new)).await.unwrap();
    client
        .sign_digest(&account, [12; 32])
        .await
        .expect("the old share still works");
}

fn new_share(a: &tandem_sdk::Account) -> Arc<tandem_core::KeyShare> {
    Arc::new(tandem_core::KeyShare::from_bytes(&hex::decode(json_field(a, "deviceShare")).unwrap()).unwrap())
}

fn auth(a: &tandem_sdk::Account) -> DeviceAuthKey {
    let seed: [u8; 32] = hex::decode(json_field(a, "authKey")).unwrap().try_into().unwrap();
    DeviceAuthKey::from_seed(&seed)
}

fn json_field(a: &tandem_sdk::Account, field: &str) -> String {
    let v: Value = serde_json::from_str(&a.to_json().unwrap()).unwrap();
    v[field].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_host_sees_no_protocol_plaintext() {
    let h = InProcess::new();
    let mut plaintexts: Vec<Vec<u8>> = Vec::new();
    // A DKG, recording the device's plaintexts both ways.
    let auth = DeviceAuthKey::generate().unwrap();
    let (machine, m0) = DeviceDkg::start().unwrap();
    plaintexts.push(m0.clone());
    let mut flow = h.start(machine, &m0, None, &auth).await.unwrap();
    let created = loop {
        let answer = flow
            .channel
            .open(flow.step, &unb64(&flow.answer["serverMessage"]))
            .unwrap();
        plaintexts.push(answer.to_vec());
        match flow.machine.receive(&answer).unwrap() {
            Next::Send(m) => {
                plaintexts.push(m.clone());
                let sealed = flow.seal(&m);
                assert_eq!(flow.post(&h, &sealed).await.0, StatusCode::OK);
            }
            Next::Done(created) => break created,
        }
    };
    let dev = tandem_testkit::Dev {
        account: created.account_id,
        share: Arc::new(created.share),
        auth,
        generation: created.generation,
    };
    // A sign.
    let digest = [0x5a; 32];
    let (machine, m0) = DeviceSign::start(dev.share.clone(), digest, 0).unwrap();
    plaintexts.push(m0.clone());
    let mut flow = h.start(machine, &m0, Some(dev.account), &dev.auth).await.unwrap();
    loop {
        let answer = flow
            .channel
            .open(flow.step, &unb64(&flow.answer["serverMessage"]))
            .unwrap();
        plaintexts.push(answer.to_vec());
        match flow.machine.receive(&answer).unwrap() {
            Next::Send(m) => {
                plaintexts.push(m.clone());
                let sealed = flow.seal(&m);
                assert_eq!(flow.post(&h, &sealed).await.0, StatusCode::OK);
            }
            Next::Done(_) => break,
        }
    }

    // Everything on the wire, with every base64 field decoded as the host could.
    let captured = h.captured();
    let mut haystack = captured.clone();
    for token in String::from_utf8_lossy(&captured).split('"') {
        if let Ok(bytes) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token) {
            haystack.extend_from_slice(&bytes);
        }
    }
    let seen: std::collections::HashSet<&[u8]> = haystack.windows(24).collect();
    assert!(
        !haystack.windows(32).any(|w| w == digest),
        "the digest is visible to the host"
    );
    let mut checked = 0;
    for (i, p) in plaintexts.iter().enumerate() {
        // Skip the 39-byte envelope header (magic, version, flow, direction, step, binding).
        for (j, w) in p[39..].chunks(24).enumerate().filter(|(_, c)| c.len() == 24) {
            let distinct: std::collections::HashSet<&u8> = w.iter().collect();
            if distinct.len() < 12 {
                continue; // padding, not a secret-bearing fragment
            }
            checked += 1;
            assert!(!seen.contains(w), "plaintext {i}, chunk {j} is visible to the host");
        }
    }
    assert!(checked > 10_000, "only {checked} fragments checked");
    // The DONE answers carry nothing in the clear but the session: the account id, the
    // public key and the generation travel sealed.
    let pk_hex = dev.share.public_key().to_hex();
    assert!(!String::from_utf8_lossy(&captured).contains(&pk_hex));
}

#[tokio::test]
async fn sealed_payloads_replayed_reflected_or_tampered_abort_the_session() {
    let h = InProcess::new();
    let dev = h.create_dev().await;

    // Replay: a completed step sent again finds no session.
    let (mut a, m1) = h.sign_to_step(&dev, [1; 32]).await;
    assert_eq!(a.post(&h, &m1).await.0, StatusCode::OK);
    let (status, v) = a.post(&h, &m1).await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // Another session's sealed step: does not open, and B is aborted; A still completes.
    let (mut fa, ma) = h.sign_to_step(&dev, [2; 32]).await;
    let (mut fb, mb) = h.sign_to_step(&dev, [3; 32]).await;
    let (status, v) = fb.post(&h, &ma).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("sealed payload"));
    let (status, v) = fb.post(&h, &mb).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::CONFLICT, "INVALID_SESSION"),
        "B was aborted"
    );
    assert_eq!(fa.post(&h, &ma).await.0, StatusCode::OK);
    assert!(matches!(fa.next_message().unwrap(), Next::Done(_)));

    // Reflection: the enclave's own sealed reply sent back as the device's step.
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [4; 32], 0).unwrap();
    let mut f = h.start(machine, &m0, Some(dev.account), &dev.auth).await.unwrap();
    let reflected = unb64(&f.answer["serverMessage"]);
    let (status, v) = f.post(&h, &reflected).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));

    // Tampering: one flipped ciphertext bit, and a truncation.
    for mutate in [|m: &mut Vec<u8>| m[10] ^= 1, |m: &mut Vec<u8>| m.truncate(m.len() / 2)] {
        let (mut f, mut m1) = h.sign_to_step(&dev, [5; 32]).await;
        mutate(&mut m1);
        let (status, v) = f.post(&h, &m1).await;
        assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
        assert_eq!(f.post(&h, &m1).await.0, StatusCode::CONFLICT);
    }

    // Unknown session.
    let (status, v) = h
        .post(
            "/v1/sign/step",
            json!({"sessionId": "ab".repeat(32), "clientMessage": b64(&m1)}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"));

    // Sealed to a key the enclave no longer has (it restarted): a distinct, retryable error.
    let restarted = InProcess::new();
    let (_, m0) = DeviceSign::start(dev.share.clone(), [7; 32], 0).unwrap();
    let (_, wire) = h.seal_first::<DeviceSign>(Some(dev.account), &dev.auth, &m0).await;
    let other = restarted.create_dev().await;
    let (status, v) = restarted.post_start::<DeviceSign>(Some(other.account), &wire).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_GATEWAY, "ATTESTATION_ERROR"),
        "{v}"
    );
}

/// Review finding L8: a step sent to another flow's route is refused without cancelling
/// the session (anyone who knows a session id could otherwise end it).
#[tokio::test]
async fn a_step_sent_to_another_flows_route_does_not_cancel_the_session() {
    let h = InProcess::new();
    let dev = h.create_dev().await;
    let (mut f, m1) = h.sign_to_step(&dev, [6; 32]).await;
    for route in ["/v1/createAccount/step", "/v1/refresh/step"] {
        let (status, v) = h
            .post(route, json!({"sessionId": f.session_id, "clientMessage": b64(&m1)}))
            .await;
        assert_eq!((status, code(&v)), (StatusCode::CONFLICT, "INVALID_SESSION"), "{route}");
    }
    assert_eq!(f.post(&h, &m1).await.0, StatusCode::OK, "the session survived");
    assert!(matches!(f.next_message().unwrap(), Next::Done(_)));
}

#[tokio::test]
async fn only_the_registered_device_key_authorizes_and_only_once() {
    let h = InProcess::new();
    let dev = h.create_dev().await;
    let intruder = DeviceAuthKey::generate().unwrap();

    let (machine, m0) = DeviceSign::start(dev.share.clone(), [1; 32], 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &intruder).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    let (machine, m0) = DeviceRecover::start(&dev.share, 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &intruder).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    let (machine, m0) = DeviceRefresh::start(dev.share.clone(), RefreshKind::Fast, 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &intruder).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // Another account's device key cannot act on this account.
    let other = h.create_dev().await;
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [3; 32], 0).unwrap();
    let (status, v) = h
        .start(machine, &m0, Some(dev.account), &other.auth)
        .await
        .err()
        .unwrap();
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    h.sign(&dev, [4; 32]).await.unwrap();
}

#[tokio::test]
async fn failed_and_expired_dkg_leave_nothing_behind() {
    let h = InProcess::new();
    // Failed: replay step 1's message as step 2.
    let auth = DeviceAuthKey::generate().unwrap();
    let (machine, m0) = DeviceDkg::start().unwrap();
    let mut f = h.start(machine, &m0, None, &auth).await.unwrap();
    let Next::Send(m1) = f.next_message().unwrap() else {
        panic!()
    };
    let sealed = f.seal(&m1);
    assert_eq!(f.post(&h, &sealed).await.0, StatusCode::OK);
    let (status, v) = f.post(&h, &sealed).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
    assert_eq!(h.accounts().await, 0);

    // Expired: wait past the TTL before the next step.
    let h = InProcess::with(|c| c.session_ttl = Duration::from_millis(1500));
    let (machine, m0) = DeviceDkg::start().unwrap();
    let mut f = h.start(machine, &m0, None, &auth).await.unwrap();
    let Next::Send(m1) = f.next_message().unwrap() else {
        panic!()
    };
    let sealed = f.seal(&m1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, v) = f.post(&h, &sealed).await;
    assert_eq!((status, code(&v)), (StatusCode::GATEWAY_TIMEOUT, "MPC_TIMEOUT"));
    assert_eq!(h.accounts().await, 0);
    assert!(h.server.state().sessions.is_empty());
}

#[tokio::test]
async fn malformed_requests_get_their_codes() {
    let h = InProcess::with(|c| c.max_body_bytes = 1024 * 1024);
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
    // The label travels sealed now: in the clear it is an unknown field.
    let (status, v) = h
        .post("/v1/createAccount/start", json!({"label": "x", "clientMessage": ""}))
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
    let dev = h.create_dev().await;
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [1; 32], 0).unwrap();
    let ghost = tandem_core::AccountId::parse(&"0".repeat(32)).unwrap();
    let (status, v) = h.start(machine, &m0, Some(ghost), &dev.auth).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));
    let (status, v) = h.post("/v1/getPublicKey", json!({"accountId": "1".repeat(32)})).await;
    assert_eq!((status, code(&v)), (StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"));

    // A wrong-length digest inside a well-formed, authorized, sealed envelope.
    let wrong = tandem_core::message::Envelope::seal(
        tandem_core::message::Expect {
            flow: tandem_core::Flow::Sign,
            direction: tandem_core::message::Direction::ToEnclave,
            step: 0,
            binding: [3; 32],
        },
        &(vec![0u8; 20], dev.share.share_id()),
    )
    .unwrap();
    let (_, wire) = h.seal_first::<DeviceSign>(Some(dev.account), &dev.auth, &wrong).await;
    let (status, v) = h.post_start::<DeviceSign>(Some(dev.account), &wire).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("32 bytes"));
}

#[tokio::test]
async fn session_cap_refuses_with_rate_limited() {
    let h = InProcess::with(|c| c.max_sessions = 2);
    let dev = h.create_dev().await;
    let _a = h.sign_to_step(&dev, [1; 32]).await;
    let _b = h.sign_to_step(&dev, [2; 32]).await;
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [3; 32], 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &dev.auth).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"));
}

/// Concurrent signatures on one account keep working while its consistency step is
/// serialised: 16 sessions over two accounts, all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_sessions_all_succeed() {
    let h = Arc::new(InProcess::new());
    let client = h.client();
    let accounts = Arc::new([
        client.create_account(None).await.unwrap(),
        client.create_account(None).await.unwrap(),
    ]);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (client, accounts) = (client.clone(), accounts.clone());
        tasks.push(tokio::spawn(async move {
            client.sign_digest(&accounts[usize::from(i % 2)], [i; 32]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
