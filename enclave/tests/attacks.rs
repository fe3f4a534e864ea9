//! The attacks of the security review, each mounted against the real enclave and shown to
//! gain nothing: a malicious device (built from the core machines, with the malicious
//! peer's edits of `tandem_core::testing::malicious`), a hostile host's blob store, a
//! hostile relay between the SDK and the enclave, and a relaying enclave. Each test is
//! named after the attack it mounts.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use tandem_core::auth::DeviceAuthKey;
use tandem_core::engine::{DeviceRecover, DeviceRefresh, DeviceSign, RefreshKind};
use tandem_core::flow::Next;
use tandem_core::testing::malicious;
use tandem_enclave::keystore::{BlobName, FileBlobStore, Versioned};
use tandem_sdk::transport::{HttpResponse, Method, Transport};
use tandem_sdk::{Client, SdkError};
use tandem_testkit::{Dev, HostileStore, InProcess, b64};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// Opens `n` sign sessions on `dev`'s account and makes, in each, the device's step
/// message with `edit` applied to its plaintext; returns the sessions ready to post.
async fn sessions_with(
    h: &InProcess,
    dev: &Dev,
    n: usize,
    edit: impl Fn(&[u8], usize) -> Vec<u8>,
) -> Vec<(tandem_testkit::Manual<DeviceSign>, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (machine, m0) = DeviceSign::start(dev.share.clone(), [i as u8; 32], dev.generation).unwrap();
        let mut flow = h.start(machine, &m0, Some(dev.account), &dev.auth).await.unwrap();
        let Next::Send(m1) = flow.next_message().unwrap() else {
            panic!()
        };
        let sealed = flow.seal(&edit(&m1, i));
        out.push((flow, sealed));
    }
    out
}

/// Posts every prepared step at once; returns each answer's code ("OK" for success).
async fn post_all(h: &Arc<InProcess>, flows: Vec<(tandem_testkit::Manual<DeviceSign>, Vec<u8>)>) -> Vec<String> {
    let tasks: Vec<_> = flows
        .into_iter()
        .map(|(mut flow, sealed)| {
            let h = h.clone();
            tokio::spawn(async move {
                let (status, v) = flow.post(&h, &sealed).await;
                if status == StatusCode::OK {
                    "OK".to_string()
                } else {
                    code(&v).to_string()
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|c| *c == code).count()
}

/// Review finding H1. A malicious device opens many sign sessions on its account and, in
/// each, sends an OT-extension probe of the enclave's correlation — all at once, so that
/// steps already in flight would be answered after the first failure. The enclave runs
/// the consistency step of one account one at a time and checks the ban inside it: the
/// device gets exactly one failure, every other probe is refused ACCOUNT_LOCKED without
/// reaching the engine, and the lock survives a restart of the enclave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_device_probing_ot_in_parallel_sessions_gets_one_answer_then_account_locked() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("accounts");
    let h = Arc::new(InProcess::in_dir(dir, Arc::new(FileBlobStore::open(&blobs).unwrap())));
    let dev = h.create_dev().await;
    let n = 24;
    let flows = sessions_with(&h, &dev, n, |m1, i| malicious::probe_step(m1, i).unwrap()).await;
    assert_eq!(
        h.server.state().sessions.len(),
        n,
        "all probes are in flight before any step"
    );
    let codes = post_all(&h, flows).await;
    assert_eq!(
        count(&codes, "MPC_ERROR"),
        1,
        "exactly one probe is answered: {codes:?}"
    );
    assert_eq!(count(&codes, "ACCOUNT_LOCKED"), n - 1, "{codes:?}");

    // New flows on the locked share are refused at once.
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [99; 32], 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &dev.auth).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::LOCKED, "ACCOUNT_LOCKED"));
    let (machine, m0) = DeviceRecover::start(&dev.share, 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &dev.auth).await.err().unwrap();
    assert_eq!(code(&v), "ACCOUNT_LOCKED", "{status}");
    let (machine, m0) = DeviceRefresh::start(dev.share.clone(), RefreshKind::Fast, 0).unwrap();
    let (_, v) = h.start(machine, &m0, Some(dev.account), &dev.auth).await.err().unwrap();
    assert_eq!(
        code(&v),
        "ACCOUNT_LOCKED",
        "a fast refresh would keep the probed OT state"
    );

    // After a restart (memory lost, the sealed record kept) the lock holds.
    let h = Arc::try_unwrap(h).ok().unwrap();
    let dir = h.stop();
    let h = InProcess::in_dir(dir, Arc::new(FileBlobStore::open(&blobs).unwrap()));
    let (machine, m0) = DeviceSign::start(dev.share.clone(), [98; 32], 0).unwrap();
    let (status, v) = h.start(machine, &m0, Some(dev.account), &dev.auth).await.err().unwrap();
    assert_eq!((status, code(&v)), (StatusCode::LOCKED, "ACCOUNT_LOCKED"));
}

/// Issue item 4: the only way back from a lock is a complete refresh (new OT state),
/// authorized by the device key. Another key cannot unlock it; after it the account signs
/// again with the same address, and the probed share is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_account_unlocks_only_by_a_complete_refresh_authorized_by_the_device() {
    let h = Arc::new(InProcess::new());
    let dev = h.create_dev().await;
    let flows = sessions_with(&h, &dev, 1, |m1, _| malicious::corrupt_step(m1).unwrap()).await;
    assert_eq!(post_all(&h, flows).await, vec!["MPC_ERROR".to_string()]);
    assert!(h.sign(&dev, [1; 32]).await.is_err());

    let intruder = DeviceAuthKey::generate().unwrap();
    let (machine, m0) = DeviceRefresh::start(dev.share.clone(), RefreshKind::Complete, 0).unwrap();
    let (_, v) = h.start(machine, &m0, Some(dev.account), &intruder).await.err().unwrap();
    assert_eq!(code(&v), "UNAUTHORIZED");

    let (machine, m0) = DeviceRefresh::start(dev.share.clone(), RefreshKind::Complete, dev.generation).unwrap();
    let refreshed = h
        .start(machine, &m0, Some(dev.account), &dev.auth)
        .await
        .unwrap()
        .finish(&h)
        .await
        .unwrap();
    let new = Dev {
        share: Arc::new(refreshed.share),
        generation: refreshed.generation,
        ..dev.clone()
    };
    let signed = h.sign(&new, [2; 32]).await.expect("the new share signs");
    assert_eq!(new.share.address(), dev.share.address(), "same account, same address");
    let _ = signed;
    let record = h.server.state().keystore.load(dev.account).await.unwrap();
    assert!(record.locked.is_none(), "the lock went with the probed share");
    let err = h.sign(&dev, [3; 32]).await.err().unwrap();
    assert_eq!(code(&err.1), "MPC_INVALID_SHARE", "the probed share is gone");
}

/// Review finding H2, attack 1: the host vetoes the write of the lock (and then serves
/// the unlocked blob again). The enclave keeps the account locked in memory and refuses
/// service (fail closed), even after its cache forgot the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_vetoing_the_lock_write_keeps_the_account_locked() {
    let store = Arc::new(HostileStore::new());
    let h = Arc::new(InProcess::with_store(store.clone(), |_| {}));
    let dev = h.create_dev().await;
    store.fail_puts(true);
    let flows = sessions_with(&h, &dev, 1, |m1, _| malicious::corrupt_step(m1).unwrap()).await;
    assert_eq!(post_all(&h, flows).await, vec!["MPC_ERROR".to_string()]);
    let record = store.snapshot(&BlobName::Account(dev.account));
    assert_eq!(record.version, 1, "the lock was not written");
    h.server.state().keystore.evict(&dev.account).await;
    let err = h.sign(&dev, [1; 32]).await.err().unwrap();
    assert_eq!(code(&err.1), "ACCOUNT_LOCKED");
    store.behave();
    let err = h.sign(&dev, [2; 32]).await.err().unwrap();
    assert_eq!(code(&err.1), "ACCOUNT_LOCKED");
}

/// Review finding H2, attack 2 (and the removed lock): the host keeps a copy of an
/// account's blob and serves it after later writes — to revive a refreshed-out share, or
/// to drop a lock. The enclave refuses any blob older than the newest it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_serving_an_older_blob_is_refused_as_a_rollback() {
    let store = Arc::new(HostileStore::new());
    let h = Arc::new(InProcess::with_store(store.clone(), |_| {}));
    let client = h.client();
    let account = client.create_account(None).await.unwrap();
    let name = BlobName::Account(account.id());
    let pre_refresh = store.snapshot(&name);

    let new = client.refresh(&account).await.unwrap();
    client.recover(&new).await.unwrap();
    assert_eq!(store.snapshot(&name).version, 3);

    store.serve(name, pre_refresh);
    h.server.state().keystore.evict(&account.id()).await;
    let err = client.sign_digest(&account, [1; 32]).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::RollbackDetected), "{err}");
    let err = client.sign_digest(&new, [1; 32]).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::RollbackDetected), "{err}");
    store.behave();
    h.server.state().keystore.evict(&account.id()).await;
    client
        .sign_digest(&new, [2; 32])
        .await
        .expect("the current blob still works");

    // The removed lock: lock the account, then serve the blob from before the lock.
    let dev_store = Arc::new(HostileStore::new());
    let h = Arc::new(InProcess::with_store(dev_store.clone(), |_| {}));
    let dev = h.create_dev().await;
    let name = BlobName::Account(dev.account);
    let unlocked = dev_store.snapshot(&name);
    let flows = sessions_with(&h, &dev, 1, |m1, _| malicious::corrupt_step(m1).unwrap()).await;
    assert_eq!(post_all(&h, flows).await, vec!["MPC_ERROR".to_string()]);
    assert_eq!(dev_store.snapshot(&name).version, 2, "the lock was written");
    dev_store.serve(name, unlocked);
    h.server.state().keystore.evict(&dev.account).await;
    let err = h.sign(&dev, [3; 32]).await.err().unwrap();
    assert_eq!(code(&err.1), "ROLLBACK_DETECTED", "{}", err.1);
}

/// The host reports another version for a blob than the one it was sealed at (to make a
/// stale blob pass as a fresh one): the generation is bound into the blob's associated
/// data, so the blob no longer opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_relabelling_a_blobs_generation_is_refused() {
    let store = Arc::new(HostileStore::new());
    let h = Arc::new(InProcess::with_store(store.clone(), |_| {}));
    let dev = h.create_dev().await;
    let name = BlobName::Account(dev.account);
    let stored = store.snapshot(&name);
    store.serve(
        name,
        Versioned {
            version: stored.version + 5,
            blob: stored.blob,
        },
    );
    h.server.state().keystore.evict(&dev.account).await;
    let err = h.sign(&dev, [1; 32]).await.err().unwrap();
    assert_eq!(code(&err.1), "KEYSTORE_ERROR", "{}", err.1);
}

/// Rollback across a restart: the host restarts the enclave (its generation marks are
/// gone) on a store rolled back to before a refresh was confirmed. The enclave cannot tell;
/// the device can — every answer carries the generation, and the device refuses one older
/// than it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_restarted_on_a_rolled_back_store_is_refused_by_the_device() {
    let store = Arc::new(HostileStore::new());
    let dir = tempfile::tempdir().unwrap();
    let h = InProcess::in_dir(dir, store.clone());
    let client = h.client();
    let account = client.create_account(None).await.unwrap();
    let new = client.refresh(&account).await.unwrap();
    let name = BlobName::Account(account.id());
    let pending = store.snapshot(&name);
    client.recover(&new).await.unwrap();
    assert_eq!(new.generation(), 3);

    let dir = h.stop();
    store.serve(name, pending);
    let h = InProcess::in_dir(dir, store.clone());
    let client = h.client();
    let err = client.sign_digest(&new, [1; 32]).await.unwrap_err();
    assert_eq!(err.code(), Some(tandem_core::ErrorCode::RollbackDetected), "{err}");
    assert!(matches!(err, SdkError::Protocol(_)), "the device caught it: {err:?}");
}

/// Issue item 6: the host replays the start of each flow, byte for byte. Every replay is
/// refused (its channel was seen), so no second session answers under the first one's
/// key and no authorization is used twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_start_of_every_flow_is_refused() {
    let h = InProcess::new();
    let dev = h.create_dev().await;
    let auth = DeviceAuthKey::generate().unwrap();
    let (_, m0) = tandem_core::engine::DeviceDkg::start().unwrap();
    let (_, dkg) = h.seal_first::<tandem_core::engine::DeviceDkg>(None, &auth, &m0).await;
    let (_, m0) = DeviceSign::start(dev.share.clone(), [1; 32], 0).unwrap();
    let (_, sign) = h.seal_first::<DeviceSign>(Some(dev.account), &dev.auth, &m0).await;
    let (_, m0) = DeviceRecover::start(&dev.share, 0).unwrap();
    let (_, recover) = h.seal_first::<DeviceRecover>(Some(dev.account), &dev.auth, &m0).await;
    let (_, m0) = DeviceRefresh::start(dev.share.clone(), RefreshKind::Fast, 0).unwrap();
    let (_, refresh) = h.seal_first::<DeviceRefresh>(Some(dev.account), &dev.auth, &m0).await;

    let replays = [
        (
            "dkg",
            h.post_start::<tandem_core::engine::DeviceDkg>(None, &dkg).await,
            h.post_start::<tandem_core::engine::DeviceDkg>(None, &dkg).await,
        ),
        (
            "sign",
            h.post_start::<DeviceSign>(Some(dev.account), &sign).await,
            h.post_start::<DeviceSign>(Some(dev.account), &sign).await,
        ),
        (
            "recover",
            h.post_start::<DeviceRecover>(Some(dev.account), &recover).await,
            h.post_start::<DeviceRecover>(Some(dev.account), &recover).await,
        ),
        (
            "refresh",
            h.post_start::<DeviceRefresh>(Some(dev.account), &refresh).await,
            h.post_start::<DeviceRefresh>(Some(dev.account), &refresh).await,
        ),
    ];
    for (flow, first, replay) in replays {
        assert_eq!(first.0, StatusCode::OK, "{flow}: {}", first.1);
        assert_eq!(
            (replay.0, code(&replay.1)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{flow}"
        );
        assert!(
            replay.1["error"]["message"].as_str().unwrap().contains("already used"),
            "{flow}"
        );
    }
}

/// Review finding C1, part 3: an enclave the device talks to (a rogue one) opens the
/// device's first message and re-seals it, authorization and all, to the real enclave. The
/// authorization covers the channel it was made for, so the real enclave refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_enclave_cannot_reuse_the_devices_authorization() {
    let real = InProcess::new();
    let rogue = InProcess::new();
    let dev = real.create_dev().await;
    let (_, m0) = DeviceSign::start(dev.share.clone(), [1; 32], 0).unwrap();
    // What the device sent to the rogue enclave, as the rogue reads it:
    let (mut to_rogue, binding) =
        tandem_core::channel::ClientChannel::new(&rogue.channel_key().await, tandem_core::Flow::Sign).unwrap();
    let first = tandem_core::auth::FirstMessage {
        protocol: m0.clone(),
        auth_key: None,
        authorization: dev.auth.authorize(
            Some(&dev.account),
            tandem_core::Flow::Sign,
            &binding,
            &m0,
            tandem_testkit::unix_now(),
        ),
        label: None,
        client_node_id: None,
    };
    let _sent_to_rogue = to_rogue.seal_first(&first.encode().unwrap()).unwrap();
    // The rogue re-seals the same plaintext to the real enclave under a channel of its own.
    let (mut relay, _) =
        tandem_core::channel::ClientChannel::new(&real.channel_key().await, tandem_core::Flow::Sign).unwrap();
    let wire = relay.seal_first(&first.encode().unwrap()).unwrap();
    let (status, v) = real.post_start::<DeviceSign>(Some(dev.account), &wire).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{v}");
}

/// What a hostile relay between the SDK and the enclave does to DONE answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rewrite {
    /// Flip one bit of the sealed answer.
    FlipBit,
    /// Replace it with a DONE answer of another session (captured earlier).
    OtherSession,
    /// Answer DONE itself, without forwarding the step (so the enclave never persists).
    Fabricate,
}

/// A relay that forwards to an in-process enclave; once armed, it rewrites DONE answers.
struct HostileRelay {
    inner: Arc<dyn Transport>,
    rewrite: Rewrite,
    armed: std::sync::atomic::AtomicBool,
    captured: std::sync::Mutex<Option<Value>>,
}

#[async_trait::async_trait]
impl Transport for HostileRelay {
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<HttpResponse, SdkError> {
        let armed = self.armed.load(std::sync::atomic::Ordering::SeqCst);
        if armed && self.rewrite == Rewrite::Fabricate && path.ends_with("/step") {
            let mut fake = self.captured.lock().unwrap().clone().unwrap();
            let req: Value = serde_json::from_slice(body.as_deref().unwrap_or_default()).unwrap();
            fake["sessionId"] = req["sessionId"].clone();
            return Ok(HttpResponse {
                status: 200,
                body: serde_json::to_vec(&fake).unwrap(),
            });
        }
        let mut resp = self.inner.send(method, path, body).await?;
        let Ok(mut v) = serde_json::from_slice::<Value>(&resp.body) else {
            return Ok(resp);
        };
        if v["status"] != "DONE" {
            return Ok(resp);
        }
        if !armed {
            *self.captured.lock().unwrap() = Some(v);
            return Ok(resp);
        }
        match self.rewrite {
            Rewrite::FlipBit => {
                let mut sealed = tandem_testkit::unb64(&v["serverMessage"]);
                let last = sealed.len() - 1;
                sealed[last] ^= 1;
                v["serverMessage"] = Value::String(b64(&sealed));
            }
            Rewrite::OtherSession => {
                v["serverMessage"] = self.captured.lock().unwrap().clone().unwrap()["serverMessage"].clone();
            }
            Rewrite::Fabricate => {}
        }
        resp.body = serde_json::to_vec(&v).unwrap();
        Ok(resp)
    }

    fn describe(&self) -> String {
        "hostile relay".into()
    }
}

/// Review finding M1: the host forges the DONE answers of createAccount, refresh,
/// recover and sign — flips a bit, substitutes another session's DONE, or answers DONE
/// without forwarding the last step. The answers are sealed and bound to their session, so
/// the device detects every rewrite: no account, new share, passed recovery check or
/// signature is accepted on the host's word, and the account keeps its working share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_rewriting_done_answers_is_detected() {
    let h = InProcess::new();
    let honest = h.client();
    for rewrite in [Rewrite::FlipBit, Rewrite::OtherSession, Rewrite::Fabricate] {
        let account = honest.create_account(None).await.unwrap();
        let relay = Arc::new(HostileRelay {
            inner: h.transport(),
            rewrite,
            armed: std::sync::atomic::AtomicBool::new(false),
            captured: std::sync::Mutex::new(None),
        });
        let client = Client::builder("relay")
            .transport(relay.clone())
            .attestation(h.policy())
            .build()
            .unwrap();
        // A genuine DONE passes through and is kept by the relay, then it turns hostile.
        client
            .create_account(None)
            .await
            .expect("the relay is honest until armed");
        relay.armed.store(true, std::sync::atomic::Ordering::SeqCst);

        let err = client.create_account(None).await.unwrap_err();
        assert!(
            matches!(err, SdkError::Protocol(_)),
            "{rewrite:?} createAccount: {err:?}"
        );
        let err = client.refresh(&account).await.unwrap_err();
        assert!(matches!(err, SdkError::Protocol(_)), "{rewrite:?} refresh: {err:?}");
        if rewrite != Rewrite::Fabricate {
            // (Recovery has no step to skip; a fabricated partial is the FlipBit case.)
            let err = client.recover(&account).await.unwrap_err();
            assert!(matches!(err, SdkError::Protocol(_)), "{rewrite:?} recover: {err:?}");
            let err = client.sign_digest(&account, [1; 32]).await.unwrap_err();
            assert!(matches!(err, SdkError::Protocol(_)), "{rewrite:?} sign: {err:?}");
        }
        honest
            .sign_digest(&account, [2; 32])
            .await
            .unwrap_or_else(|e| panic!("{rewrite:?}: the account lost its working share: {e}"));
    }
}

/// Review finding H2, attack 3, by downgrade: the host rewrites the authenticated key ring
/// as the format before authentication (no MAC), naming another key active. Version-2 blobs
/// never legitimately sit beside a format-1 ring (the ring is upgraded before any blob is
/// re-sealed), so the keystore refuses to open at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_downgrading_the_key_ring_to_its_unauthenticated_format_is_refused() {
    use tandem_enclave::keystore::{BlobStore, Expect, Keystore, LocalKeyWrapper};
    let store = Arc::new(HostileStore::new());
    let h = InProcess::with_store(store.clone(), |_| {});
    h.create_dev().await;
    let ring = store.snapshot(&BlobName::KeyRing);
    let mut json: Value = serde_json::from_slice(&ring.blob).unwrap();
    json["format"] = 1.into();
    let obj = json.as_object_mut().unwrap();
    obj.remove("mac");
    obj.remove("blobsSealedWithGeneration");
    store
        .put(&BlobName::KeyRing, &serde_json::to_vec(&json).unwrap(), Expect::Any)
        .unwrap();
    // The enclave's own master key (it would unwrap the ring's keys just fine).
    let dir = h.stop();
    let master: [u8; 32] = std::fs::read(dir.path().join("master.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let ks = Keystore::not_ready(store.clone());
    let err = ks
        .open_ring(&LocalKeyWrapper::new(zeroize::Zeroizing::new(master)))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("downgraded"), "{err}");
}
