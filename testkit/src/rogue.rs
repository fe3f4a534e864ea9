//! A rogue enclave built from the core machines: it attests like a genuine (mock) enclave
//! of a pinned image and runs every flow honestly — except signing, where its first answer
//! carries an OT-extension probe of the device's correlation. It is what a malicious
//! enclave image the device trusted would do; the device must detect it once and never
//! give it a second attempt with the same share.

#![allow(clippy::result_large_err)] // handlers answer an error as a whole response

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tandem_core::auth::FirstMessage;
use tandem_core::channel::{ChannelKeypair, EnclaveChannel};
use tandem_core::engine::{EnclaveDkg, EnclaveRecover, EnclaveRefresh, EnclaveSign};
use tandem_core::flow::{EnclaveFlow, Receipt, Step};
use tandem_core::testing::malicious;
use tandem_core::{AccountId, Flow, KeyShare};
use tandem_enclave::attester::{Attester, MockAttester};

use crate::{b64, unb64};

#[allow(clippy::large_enum_variant)] // one per session, in a test
enum Machine {
    Dkg(EnclaveDkg),
    Sign(EnclaveSign),
    Refresh(EnclaveRefresh, AccountId),
}

struct Session {
    machine: Machine,
    channel: EnclaveChannel,
    step: u8,
}

struct Inner {
    keys: ChannelKeypair,
    attester: MockAttester,
    accounts: Mutex<HashMap<AccountId, Arc<KeyShare>>>,
    sessions: Mutex<HashMap<String, Session>>,
    sign_starts: AtomicUsize,
}

/// A running rogue enclave on a loopback port.
pub struct RogueEnclave {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its development root (PEM file) — the device trusts it, as it would a genuine one.
    pub dev_root: std::path::PathBuf,
    /// Its image's measurements file (pinned by the device).
    pub pcr_file: std::path::PathBuf,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for RogueEnclave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RogueEnclave {
    /// Starts one, attesting as the mock image `dev`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let attester = MockAttester::load_or_create(dir.path())
            .unwrap()
            .with_image("dev")
            .unwrap();
        let dev_root = dir.path().join("dev-root.pem");
        let pcr_file = attester.measurements_path();
        let inner = Arc::new(Inner {
            keys: ChannelKeypair::generate(),
            attester,
            accounts: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            sign_starts: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/v1/attestation", post(attestation))
            .route("/v1/createAccount/start", post(start_dkg))
            .route("/v1/sign/start", post(start_sign))
            .route("/v1/refresh/start", post(start_refresh))
            .route("/v1/recover/start", post(start_recover))
            .route("/v1/createAccount/step", post(step))
            .route("/v1/sign/step", post(step))
            .route("/v1/refresh/step", post(step))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RogueEnclave {
            url,
            dev_root,
            pcr_file,
            inner,
            task,
            _dir: dir,
        }
    }

    /// How many signatures devices started with it.
    pub fn sign_starts(&self) -> usize {
        self.inner.sign_starts.load(Ordering::SeqCst)
    }
}

fn refuse(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": "INVALID_REQUEST", "message": why}})),
    )
        .into_response()
}

async fn attestation(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    let doc = s.attester.attest(&s.keys.public_key(), &unb64(&req["nonce"])).unwrap();
    Json(json!({"document": b64(&doc)})).into_response()
}

fn open(s: &Inner, flow: Flow, req: &Value) -> Result<(EnclaveChannel, FirstMessage), Response> {
    let (channel, plain) =
        EnclaveChannel::open_first(&s.keys, flow, &unb64(&req["clientMessage"])).map_err(|e| refuse(&e.to_string()))?;
    let first = FirstMessage::decode(&plain).map_err(|e| refuse(&e.to_string()))?;
    Ok((channel, first))
}

fn account(s: &Inner, req: &Value) -> Result<(AccountId, Arc<KeyShare>), Response> {
    let id = AccountId::parse(req["accountId"].as_str().unwrap_or_default()).map_err(|e| refuse(&e.to_string()))?;
    let share = s
        .accounts
        .lock()
        .unwrap()
        .get(&id)
        .cloned()
        .ok_or_else(|| refuse("no such account"))?;
    Ok((id, share))
}

fn answer(sid: &str, done: bool, sealed: Vec<u8>) -> Response {
    Json(json!({
        "sessionId": sid,
        "status": if done { "DONE" } else { "CONTINUE" },
        "serverMessage": b64(&sealed),
    }))
    .into_response()
}

fn keep(s: &Inner, machine: Machine, channel: EnclaveChannel, sid: &str) {
    s.sessions.lock().unwrap().insert(
        sid.to_string(),
        Session {
            machine,
            channel,
            step: 1,
        },
    );
}

async fn start_dkg(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    let (channel, first) = match open(&s, Flow::Dkg, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (machine, Step::Continue(reply)) = EnclaveDkg::start(&first.protocol).unwrap() else {
        unreachable!("a DKG continues after its start")
    };
    let sid = machine.session_id().to_hex();
    let sealed = channel.seal(0, &reply).unwrap();
    keep(&s, Machine::Dkg(machine), channel, &sid);
    answer(&sid, false, sealed)
}

async fn start_sign(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    s.sign_starts.fetch_add(1, Ordering::SeqCst);
    let (channel, first) = match open(&s, Flow::Sign, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (_, share) = match account(&s, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let start = EnclaveSign::parse_start(&first.protocol).unwrap();
    let (machine, Step::Continue(reply)) = EnclaveSign::start(start, share, 1).unwrap() else {
        unreachable!("a sign continues after its start")
    };
    // The rogue part: an OT-extension probe of the device's correlation.
    let reply = malicious::probe_reply0(&reply, 0).unwrap();
    let sid = machine.session_id().to_hex();
    let sealed = channel.seal(0, &reply).unwrap();
    keep(&s, Machine::Sign(machine), channel, &sid);
    answer(&sid, false, sealed)
}

async fn start_refresh(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    let (channel, first) = match open(&s, Flow::Refresh, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (id, share) = match account(&s, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let start = EnclaveRefresh::parse_start(&first.protocol).unwrap();
    let (machine, Step::Continue(reply)) = EnclaveRefresh::start(start, share, 1).unwrap() else {
        unreachable!("a refresh continues after its start")
    };
    let sid = machine.session_id().to_hex();
    let sealed = channel.seal(0, &reply).unwrap();
    keep(&s, Machine::Refresh(machine, id), channel, &sid);
    answer(&sid, false, sealed)
}

async fn start_recover(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    let (channel, first) = match open(&s, Flow::Recover, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (_, share) = match account(&s, &req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let start = EnclaveRecover::parse_start(&first.protocol).unwrap();
    match EnclaveRecover::start(&start, &share) {
        Ok((mut machine, _)) => {
            let sid = machine.session_id().to_hex();
            let done = machine.done_message(Receipt { generation: 1 }).unwrap();
            answer(&sid, true, channel.seal(0, &done).unwrap())
        }
        Err(e) => refuse(&e.to_string()),
    }
}

async fn step(State(s): State<Arc<Inner>>, Json(req): Json<Value>) -> Response {
    let sid = req["sessionId"].as_str().unwrap_or_default().to_string();
    let Some(mut session) = s.sessions.lock().unwrap().remove(&sid) else {
        return refuse("unknown session");
    };
    let message = match session.channel.open(session.step, &unb64(&req["clientMessage"])) {
        Ok(m) => m,
        Err(e) => return refuse(&e.to_string()),
    };
    let receipt = Receipt { generation: 1 };
    let result = match &mut session.machine {
        Machine::Dkg(m) => m.step(&message).map(|step| match step {
            Step::Continue(r) => Err(r),
            Step::Done(output) => {
                s.accounts
                    .lock()
                    .unwrap()
                    .insert(output.account_id, Arc::new(output.share));
                Ok(m.done_message(receipt).unwrap())
            }
        }),
        Machine::Sign(m) => m.step(&message).map(|step| match step {
            Step::Continue(r) => Err(r),
            Step::Done(()) => Ok(m.done_message(receipt).unwrap()),
        }),
        Machine::Refresh(m, id) => m.step(&message).map(|step| match step {
            Step::Continue(r) => Err(r),
            Step::Done(output) => {
                s.accounts.lock().unwrap().insert(*id, Arc::new(output.share));
                Ok(m.done_message(receipt).unwrap())
            }
        }),
    };
    match result {
        Err(e) => refuse(&e.to_string()),
        Ok(Ok(done)) => answer(&sid, true, session.channel.seal(session.step, &done).unwrap()),
        Ok(Err(reply)) => {
            let sealed = session.channel.seal(session.step, &reply).unwrap();
            session.step += 1;
            s.sessions.lock().unwrap().insert(sid.clone(), session);
            answer(&sid, false, sealed)
        }
    }
}
