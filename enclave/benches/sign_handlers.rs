//! What the security checks cost the enclave's sign handlers, in process, same run.
//!
//! Two enclaves in this process: one with the per-account rules (`MemoryGuard`: the sign
//! step serialised per account with the ban checked inside it, generation marks on every
//! load and write), one with a guard that does nothing. Both serve the same signatures, in
//! alternating rounds so the machine's noise falls on both alike; only the time spent in
//! the enclave's handlers (`sign/start` and `sign/step`, called in process through the
//! router) is counted — the device's half runs outside the timed sections.
//!
//! Run: `cargo bench -p tandem-enclave --bench sign_handlers` (release). Prints the median
//! handler time per signature of each and their ratio.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tandem_core::auth::{DeviceAuthKey, FirstMessage};
use tandem_core::channel::ClientChannel;
use tandem_core::engine::DeviceSign;
use tandem_core::flow::{DeviceFlow, Next};
use tandem_core::{AccountId, Flow, KeyShare, ShareId};
use tandem_enclave::config::StoreKind;
use tandem_enclave::error::EnclaveError;
use tandem_enclave::guard::{AccountGuard, GuardPermit, MemoryGuard};
use tandem_enclave::keystore::KeystoreError;
use tandem_enclave::{Config, Server};
use tandem_testkit::{b64, unb64, unix_now};
use tower::ServiceExt;

/// The per-account rules switched off.
struct NoGuard;

#[async_trait::async_trait]
impl AccountGuard for NoGuard {
    async fn enter(&self, _: AccountId, _: ShareId) -> Result<GuardPermit, EnclaveError> {
        Ok(GuardPermit::new(()))
    }
    fn is_banned(&self, _: AccountId, _: ShareId) -> bool {
        false
    }
    fn ban(&self, _: AccountId, _: ShareId) {}
    fn observe(&self, _: AccountId, _: u64) -> Result<(), KeystoreError> {
        Ok(())
    }
}

struct Bench {
    server: Server,
    key: [u8; 32],
    account: AccountId,
    share: Arc<KeyShare>,
    auth: DeviceAuthKey,
    _dir: tempfile::TempDir,
}

async fn post(server: &Server, path: &str, body: Value) -> (Value, Duration) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let t = Instant::now();
    let resp = server.app().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let elapsed = t.elapsed();
    (serde_json::from_slice(&bytes).unwrap(), elapsed)
}

impl Bench {
    async fn new(guard: Option<Arc<dyn AccountGuard>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::mock(dir.path());
        config.store = StoreKind::Memory;
        let server = match guard {
            Some(g) => Server::open_with_guard(&config, g).unwrap(),
            None => Server::open(&config).unwrap(),
        };
        // The account, by a DKG over the router (not timed).
        let pem = std::fs::read_to_string(server.dev_root_pem().unwrap()).unwrap();
        let policy = tandem_testkit::mock_policy(&pem);
        let (r, _) = post(&server, "/v1/attestation", json!({"nonce": b64(&[1; 32])})).await;
        let doc = policy
            .verify(&unb64(&r["document"]), unix_now(), Some(&[1; 32]))
            .unwrap();
        let key: [u8; 32] = doc.document.public_key.unwrap().try_into().unwrap();
        let auth = DeviceAuthKey::generate().unwrap();
        let (mut machine, m0) = tandem_core::engine::DeviceDkg::start().unwrap();
        let (mut channel, binding) = ClientChannel::new(&key, Flow::Dkg).unwrap();
        let first = FirstMessage {
            protocol: m0.clone(),
            auth_key: Some(auth.public_key()),
            authorization: auth.authorize(None, Flow::Dkg, &binding, &m0, unix_now()),
            label: None,
            client_node_id: None,
        };
        let wire = channel.seal_first(&first.encode().unwrap()).unwrap();
        let (mut answer, _) = post(&server, "/v1/createAccount/start", json!({"clientMessage": b64(&wire)})).await;
        let mut step = 0u8;
        let created = loop {
            let opened = channel.open(step, &unb64(&answer["serverMessage"])).unwrap();
            match machine.receive(&opened).unwrap() {
                Next::Send(m) => {
                    step += 1;
                    let sealed = channel.seal(step, &m).unwrap();
                    answer = post(
                        &server,
                        "/v1/createAccount/step",
                        json!({"sessionId": answer["sessionId"], "clientMessage": b64(&sealed)}),
                    )
                    .await
                    .0;
                }
                Next::Done(created) => break created,
            }
        };
        Bench {
            server,
            key,
            account: created.account_id,
            share: Arc::new(created.share),
            auth,
            _dir: dir,
        }
    }

    /// One signature; returns the time spent in the enclave's two handlers.
    async fn sign(&self, digest: [u8; 32]) -> Duration {
        let (mut machine, m0) = DeviceSign::start(self.share.clone(), digest, 0).unwrap();
        let (mut channel, binding) = ClientChannel::new(&self.key, Flow::Sign).unwrap();
        let first = FirstMessage {
            protocol: m0.clone(),
            auth_key: None,
            authorization: self
                .auth
                .authorize(Some(&self.account), Flow::Sign, &binding, &m0, unix_now()),
            label: None,
            client_node_id: None,
        };
        let wire = channel.seal_first(&first.encode().unwrap()).unwrap();
        let (r0, t0) = post(
            &self.server,
            "/v1/sign/start",
            json!({"accountId": self.account.to_string(), "clientMessage": b64(&wire)}),
        )
        .await;
        let Next::Send(m1) = machine
            .receive(&channel.open(0, &unb64(&r0["serverMessage"])).unwrap())
            .unwrap()
        else {
            panic!("a sign continues")
        };
        let sealed = channel.seal(1, &m1).unwrap();
        let (done, t1) = post(
            &self.server,
            "/v1/sign/step",
            json!({"sessionId": r0["sessionId"], "clientMessage": b64(&sealed)}),
        )
        .await;
        let Next::Done(_) = machine
            .receive(&channel.open(1, &unb64(&done["serverMessage"])).unwrap())
            .unwrap()
        else {
            panic!("a sign ends after its step")
        };
        t0 + t1
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let per_round = 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let checked = Bench::new(Some(Arc::new(MemoryGuard::default()))).await;
        let unchecked = Bench::new(Some(Arc::new(NoGuard))).await;
        for b in [&checked, &unchecked] {
            for i in 0..5u8 {
                b.sign([i; 32]).await; // warm-up
            }
        }
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first, so drift in the machine's load falls on both.
            let order: [(&Bench, bool); 2] = if round % 2 == 0 {
                [(&checked, true), (&unchecked, false)]
            } else {
                [(&unchecked, false), (&checked, true)]
            };
            for (b, is_checked) in order {
                for i in 0..per_round {
                    let t = b.sign([(round * per_round + i) as u8; 32]).await;
                    if is_checked { with.push(t) } else { without.push(t) }
                }
            }
        }
        let (a, b) = (median(with.clone()), median(without.clone()));
        println!(
            "sign handlers (start + step), {} signatures each: with the checks {:.3} ms, without {:.3} ms, ratio {:.4} ({:+.2}%)",
            with.len(),
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            a.as_secs_f64() / b.as_secs_f64(),
            (a.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
        );
    });
}
