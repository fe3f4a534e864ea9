//! A device driven by hand, message by message, from the core machines: for the tests
//! that must see or change what travels (replays, reflections, tampering, a malicious
//! device's probes).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tandem_core::auth::{DeviceAuthKey, FirstMessage};
use tandem_core::channel::ClientChannel;
use tandem_core::engine::{Created, DeviceDkg, DeviceSign, Signed};
use tandem_core::flow::{DeviceFlow, Next};
use tandem_core::wire::start_path;
use tandem_core::{AccountId, KeyShare, ProtocolError};

use crate::InProcess;

/// The clock, Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A device's material for one account.
#[derive(Clone)]
pub struct Dev {
    /// The account.
    pub account: AccountId,
    /// The device's share.
    pub share: Arc<KeyShare>,
    /// The device's auth key.
    pub auth: DeviceAuthKey,
    /// The largest generation seen.
    pub generation: u64,
}

/// A flow in progress, driven by hand.
pub struct Manual<F: DeviceFlow> {
    /// The device's machine.
    pub machine: F,
    /// The sealed channel.
    pub channel: ClientChannel,
    /// The session id the enclave gave.
    pub session_id: String,
    /// The enclave's last answer (JSON).
    pub answer: Value,
    /// The step of that answer.
    pub step: u8,
}

/// Base64 of `b`.
pub fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

/// Bytes of a base64 JSON string.
pub fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

impl InProcess {
    /// The enclave's channel key, from a verified attestation.
    pub async fn channel_key(&self) -> [u8; 32] {
        let nonce = [9u8; 32];
        let r = self.ok("/v1/attestation", json!({"nonce": b64(&nonce)})).await;
        let doc = self
            .policy()
            .verify(&unb64(&r["document"]), unix_now(), Some(&nonce))
            .unwrap();
        doc.document.public_key.unwrap().try_into().unwrap()
    }

    /// Seals `first_protocol` as the first message of `F`'s flow: authorized by `auth`
    /// over the channel, for `account` (none: createAccount, registering `auth`).
    pub async fn seal_first<F: DeviceFlow>(
        &self,
        account: Option<AccountId>,
        auth: &DeviceAuthKey,
        first_protocol: &[u8],
    ) -> (ClientChannel, Vec<u8>) {
        let (mut channel, binding) = ClientChannel::new(&self.channel_key().await, F::FLOW).unwrap();
        let first = FirstMessage {
            protocol: first_protocol.to_vec(),
            auth_key: account.is_none().then(|| auth.public_key()),
            authorization: auth.authorize(account.as_ref(), F::FLOW, &binding, first_protocol, unix_now()),
            label: None,
            client_node_id: None,
        };
        let wire = channel.seal_first(&first.encode().unwrap()).unwrap();
        (channel, wire)
    }

    /// Posts a sealed first message to `F`'s start route.
    pub async fn post_start<F: DeviceFlow>(&self, account: Option<AccountId>, wire: &[u8]) -> (StatusCode, Value) {
        let body = match account {
            Some(id) => json!({"accountId": id.to_string(), "clientMessage": b64(wire)}),
            None => json!({"clientMessage": b64(wire)}),
        };
        self.post(start_path(F::FLOW), body).await
    }

    /// Starts `machine`'s flow (first message `m0`) as `auth` on `account`.
    pub async fn start<F: DeviceFlow>(
        &self,
        machine: F,
        m0: &[u8],
        account: Option<AccountId>,
        auth: &DeviceAuthKey,
    ) -> Result<Manual<F>, (StatusCode, Value)> {
        let (channel, wire) = self.seal_first::<F>(account, auth, m0).await;
        let (status, answer) = self.post_start::<F>(account, &wire).await;
        if status != StatusCode::OK {
            return Err((status, answer));
        }
        Ok(Manual {
            machine,
            channel,
            session_id: answer["sessionId"].as_str().unwrap().to_string(),
            answer,
            step: 0,
        })
    }

    /// A new account, by a hand-driven DKG.
    pub async fn create_dev(&self) -> Dev {
        let auth = DeviceAuthKey::generate().unwrap();
        let (machine, m0) = DeviceDkg::start().unwrap();
        let manual = self.start(machine, &m0, None, &auth).await.unwrap();
        let created: Created = manual.finish(self).await.unwrap();
        Dev {
            account: created.account_id,
            share: Arc::new(created.share),
            auth,
            generation: created.generation,
        }
    }

    /// A sign by hand, to its end.
    pub async fn sign(&self, dev: &Dev, digest: [u8; 32]) -> Result<Signed, (StatusCode, Value)> {
        let (machine, m0) = DeviceSign::start(dev.share.clone(), digest, dev.generation).unwrap();
        self.start(machine, &m0, Some(dev.account), &dev.auth)
            .await?
            .finish(self)
            .await
    }

    /// A sign started and its step message made (sealed), not sent: (flow, sealed step).
    pub async fn sign_to_step(&self, dev: &Dev, digest: [u8; 32]) -> (Manual<DeviceSign>, Vec<u8>) {
        let (machine, m0) = DeviceSign::start(dev.share.clone(), digest, dev.generation).unwrap();
        let mut flow = self.start(machine, &m0, Some(dev.account), &dev.auth).await.unwrap();
        let Next::Send(m1) = flow.next_message().unwrap() else {
            panic!("a sign continues after its start")
        };
        let sealed = flow.seal(&m1);
        (flow, sealed)
    }
}

impl<F: DeviceFlow> Manual<F> {
    /// Opens the enclave's last answer and feeds it to the machine: the device's next
    /// message (plaintext), or the flow's output.
    pub fn next_message(&mut self) -> Result<Next<F::Output>, ProtocolError> {
        let answer = self.channel.open(self.step, &unb64(&self.answer["serverMessage"]))?;
        self.machine.receive(&answer)
    }

    /// Seals `plaintext` as the device's next step.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.channel.seal(self.step + 1, plaintext).unwrap()
    }

    /// Posts a sealed step to the flow's step route; on success the answer becomes current.
    pub async fn post(&mut self, enclave: &InProcess, sealed: &[u8]) -> (StatusCode, Value) {
        let path = tandem_core::wire::step_path(F::FLOW).unwrap();
        let (status, answer) = enclave
            .post(
                path,
                json!({"sessionId": self.session_id, "clientMessage": b64(sealed)}),
            )
            .await;
        if status == StatusCode::OK {
            self.answer = answer.clone();
            self.step += 1;
        }
        (status, answer)
    }

    /// Runs the flow to its end honestly.
    pub async fn finish(mut self, enclave: &InProcess) -> Result<F::Output, (StatusCode, Value)> {
        loop {
            match self.next_message() {
                Ok(Next::Done(output)) => return Ok(output),
                Ok(Next::Send(message)) => {
                    let sealed = self.seal(&message);
                    let (status, answer) = self.post(enclave, &sealed).await;
                    if status != StatusCode::OK {
                        return Err((status, answer));
                    }
                }
                Err(e) => return Err((StatusCode::IM_A_TEAPOT, json!({"device": e.to_string()}))),
            }
        }
    }
}
