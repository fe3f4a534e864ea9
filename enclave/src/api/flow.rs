//! The generic start and step handlers: every flow's request goes through here, so the
//! checks that protect accounts live in one place.
//!
//! ```text
//!  …/start  load the account ─ open the sealed channel ─ refuse a replayed channel ─
//!           check the device's authorization (covering the channel) ─ flow's start
//!           (blocking pool) ─┬─ Continue: keep the session, answer CONTINUE
//!                            └─ Done (recover): finish, answer DONE
//!  …/step   take the session ─ [guarded flows: wait for the account's consistency step,
//!           refused if the share is banned] ─ open and step (blocking pool) ─┬─ error: ban
//!           if the abort demands it (before the next step may run), drop the session
//!                            ├─ Continue: put the session back, answer CONTINUE
//!                            └─ Done: finish (persist) ─ answer DONE (sealed result)
//! ```
//!
//! A flow's `finish` (persisting what the flow produced) runs in a task of its own, so a
//! request timeout or a client that hangs up cannot cut it between the store's write and
//! the bookkeeping that follows it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tandem_core::auth::{FirstMessage, verify_authorization};
use tandem_core::channel::{ChannelBinding, EnclaveChannel};
use tandem_core::flow::{EnclaveFlow, Receipt, Step};
use tandem_core::wire::{AccountStartRequest, B64, CreateAccountStartRequest, FlowResponse, Status, StepRequest};
use tandem_core::{AccountId, Flow, ProtocolError, SessionId, ShareId};
use tracing::{info, warn};

use super::{AUTH_SKEW_SECS, ApiJson, AppState, HeaderRequestId, cpu, now};
use crate::error::EnclaveError;
use crate::keystore::StoredAccount;
use crate::replay::Refusal;
use crate::sessions::Live;

/// A flow's start request: createAccount's has no account, the others name one.
pub(crate) trait StartRequest: DeserializeOwned + Send + 'static {
    /// The account the flow acts on.
    fn account(&self) -> Option<AccountId>;
    /// The request id in the body.
    fn request_id(&self) -> &Option<String>;
    /// The sealed first message.
    fn into_client_message(self) -> Vec<u8>;
}

impl StartRequest for CreateAccountStartRequest {
    fn account(&self) -> Option<AccountId> {
        None
    }
    fn request_id(&self) -> &Option<String> {
        &self.request_id
    }
    fn into_client_message(self) -> Vec<u8> {
        self.client_message.0
    }
}

impl StartRequest for AccountStartRequest {
    fn account(&self) -> Option<AccountId> {
        Some(self.account_id)
    }
    fn request_id(&self) -> &Option<String> {
        &self.request_id
    }
    fn into_client_message(self) -> Vec<u8> {
        self.client_message.0
    }
}

/// What a flow's machine yields when done.
pub(crate) type Output<F> = <<F as FlowHandler>::Machine as EnclaveFlow>::Output;

/// A started flow: what the session carries, the machine, and its first answer.
pub(crate) type Started<F> = (F, <F as FlowHandler>::Machine, Step<Output<F>>);

/// One flow on the enclave: how it starts and what it does with its result. The value of
/// the implementing type is what the session carries beside the machine.
#[async_trait::async_trait]
pub(crate) trait FlowHandler: Sized + Send + 'static {
    /// The flow.
    const FLOW: Flow;
    /// The core machine.
    type Machine: EnclaveFlow;
    /// The start request's body.
    type Request: StartRequest;

    /// Starts the machine, on the blocking pool, once the first message is open and the
    /// device's authorization is checked. `account` is the account the request names.
    fn start(
        state: &AppState,
        account: Option<Arc<StoredAccount>>,
        first: FirstMessage,
    ) -> Result<Started<Self>, EnclaveError>;

    /// The account and share whose OT consistency this flow's steps check: such steps
    /// run one at a time per account, and not at all once the share is banned.
    fn guarded(&self) -> Option<(AccountId, ShareId)> {
        None
    }

    /// Acts on the machine's output before the DONE answer (persists it); returns the
    /// receipt the answer carries.
    async fn finish(self, state: &AppState, output: Output<Self>) -> Result<Receipt, EnclaveError>;
}

fn short(sid: &SessionId) -> String {
    sid.to_hex()[..12].to_string()
}

fn respond(rid: Option<String>, result: Result<FlowResponse, EnclaveError>) -> Response {
    match result {
        Ok(mut answer) => {
            answer.request_id = rid;
            Json(answer).into_response()
        }
        Err(e) => e.into_response_with(rid),
    }
}

fn answer(sid: SessionId, status: Status, server_message: Vec<u8>) -> FlowResponse {
    FlowResponse {
        request_id: None,
        session_id: sid.to_hex(),
        status,
        server_message: B64(server_message),
    }
}

/// `POST /v1/{flow}/start`.
pub(crate) async fn start<F: FlowHandler>(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<F::Request>,
) -> Response {
    let rid = hid.or_body(req.request_id());
    let result = start_flow::<F>(&state, req).await;
    if let Err(e) = &result {
        warn!(flow = %F::FLOW, code = %e.code(), error = %e, "start refused");
    }
    respond(rid, result)
}

async fn start_flow<F: FlowHandler>(state: &Arc<AppState>, req: F::Request) -> Result<FlowResponse, EnclaveError> {
    let account = match req.account() {
        Some(id) => Some(state.keystore.load(id).await?),
        None => None,
    };
    state.sessions.check_capacity()?;
    let wire = req.into_client_message();
    let st = state.clone();
    let (channel, plaintext) = cpu(move || EnclaveChannel::open_first(&st.channel, F::FLOW, &wire)).await??;
    let binding = channel.binding();
    state.replay.admit(binding.enc).map_err(|r| match r {
        Refusal::Replayed => EnclaveError::Protocol(ProtocolError::Unauthorized("this flow start was already used")),
        Refusal::Full => EnclaveError::Busy("too many flow starts in the replay window"),
    })?;
    let first = FirstMessage::decode(&plaintext)?;
    authorize(F::FLOW, account.as_deref(), &first, &binding)?;
    let account_id = account.as_ref().map(|a| a.id);
    let st = state.clone();
    let (handler, machine, step) = cpu(move || F::start(&st, account, first)).await??;
    let sid = machine.session_id();
    match step {
        Step::Continue(reply) => {
            let server_message = channel.seal(0, &reply)?;
            state
                .sessions
                .insert(sid, Live::new(F::FLOW, account_id, channel, 1, (handler, machine)))?;
            info!(flow = %F::FLOW, session = %short(&sid), account = ?account_id, "session started");
            Ok(answer(sid, Status::Continue, server_message))
        }
        Step::Done(output) => {
            let done = finish(state, handler, machine, output).await?;
            info!(flow = %F::FLOW, session = %short(&sid), account = ?account_id, "done");
            Ok(answer(sid, Status::Done, channel.seal(0, &done)?))
        }
    }
}

/// Checks the device's authorization of this session: a signature, fresh, by the
/// account's registered device key (for createAccount, by the key it registers), over the
/// first protocol message and the channel it travels in.
fn authorize(
    flow: Flow,
    account: Option<&StoredAccount>,
    first: &FirstMessage,
    binding: &ChannelBinding,
) -> Result<(), EnclaveError> {
    let registered = match account {
        Some(a) => a
            .auth_key
            .ok_or(ProtocolError::Unauthorized("the account has no registered device key"))?,
        None => first
            .auth_key
            .ok_or(ProtocolError::Unauthorized("createAccount must register a device key"))?,
    };
    verify_authorization(
        &registered,
        account.map(|a| &a.id),
        flow,
        binding,
        &first.protocol,
        &first.authorization,
        now(),
        AUTH_SKEW_SECS,
    )?;
    Ok(())
}

/// `POST /v1/{flow}/step`.
pub(crate) async fn step<F: FlowHandler>(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<StepRequest>,
) -> Response {
    let rid = hid.or_body(&req.request_id);
    let Some(sid) = SessionId::parse(&req.session_id) else {
        return EnclaveError::InvalidRequest("sessionId is not a session id".into()).into_response_with(rid);
    };
    let result = step_flow::<F>(&state, sid, req.client_message.0).await;
    if let Err(e) = &result {
        if e.ends_session() {
            state.sessions.remove(&sid);
        }
        warn!(flow = %F::FLOW, session = %short(&sid), code = %e.code(), error = %e, "step failed");
    }
    respond(rid, result)
}

async fn step_flow<F: FlowHandler>(
    state: &Arc<AppState>,
    sid: SessionId,
    wire: Vec<u8>,
) -> Result<FlowResponse, EnclaveError> {
    let live = state.sessions.take(&sid, F::FLOW)?;
    let ((handler, machine), parts): ((F, F::Machine), _) = live.take_state()?;
    let guarded = handler.guarded();
    let permit = match guarded {
        Some((account, share)) => Some(state.keystore.guard().enter(account, share).await?),
        None => None,
    };
    let step_no = parts.next_step;
    let mut channel = parts.channel;
    let mut machine = machine;
    let (machine, channel, result) = cpu(move || {
        let result = channel.open(step_no, &wire).and_then(|m| machine.step(&m));
        (machine, channel, result)
    })
    .await?;
    let parts = crate::sessions::LiveParts {
        channel,
        next_step: step_no,
        flow: parts.flow,
        account: parts.account,
    };
    match result {
        Err(e) => {
            if e.requires_ban()
                && let Some((account, share)) = guarded
            {
                // In force before the permit is released: no other step of this account
                // runs before it.
                ban(state, account, share, &e).await;
            }
            drop(permit);
            Err(e.into())
        }
        Ok(Step::Continue(reply)) => {
            drop(permit);
            let server_message = parts.channel.seal(step_no, &reply)?;
            let next = step_no
                .checked_add(1)
                .ok_or(EnclaveError::Internal("flow has too many steps"))?;
            state
                .sessions
                .put_back(&sid, parts.with_state(next, (handler, machine)))?;
            Ok(answer(sid, Status::Continue, server_message))
        }
        Ok(Step::Done(output)) => {
            drop(permit);
            let done = finish(state, handler, machine, output).await?;
            let server_message = parts.channel.seal(step_no, &done)?;
            state.sessions.remove(&sid);
            info!(flow = %F::FLOW, session = %short(&sid), account = ?parts.account, "done");
            Ok(answer(sid, Status::Done, server_message))
        }
    }
}

/// Runs the flow's finish and builds the done message, in a task of its own (so it runs
/// to completion even if the request is dropped).
async fn finish<F: FlowHandler>(
    state: &Arc<AppState>,
    handler: F,
    mut machine: F::Machine,
    output: Output<F>,
) -> Result<Vec<u8>, EnclaveError> {
    let st = state.clone();
    tokio::spawn(async move {
        let receipt = handler.finish(&st, output).await?;
        machine.done_message(receipt).map_err(EnclaveError::from)
    })
    .await
    .map_err(|_| EnclaveError::Internal("finish task failed"))?
}

/// Records a ban after an OT consistency failure on `share` of `account`: in memory at
/// once, for every share the account has (a fast refresh carries leaked OT bits over),
/// then persisted in the sealed record. If it cannot be persisted the account stays
/// locked in memory for the life of this process (fail closed) and the error is logged.
async fn ban(state: &Arc<AppState>, account: AccountId, share: ShareId, cause: &ProtocolError) {
    let guard = state.keystore.guard();
    guard.ban(account, share);
    let record = state.keystore.load(account).await;
    if let Ok(record) = &record {
        for id in record.live_share_ids() {
            guard.ban(account, id);
        }
    }
    warn!(account = %account, reason = %cause, "account locked: an OT consistency check failed (DKLs23 requires excluding the device)");
    let reason = cause.to_string();
    let st = state.clone();
    let persisted = tokio::spawn(async move {
        st.keystore
            .update(account, move |a| Some(a.locked_now(reason, now())))
            .await
    })
    .await;
    match persisted {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(account = %account, error = %e, "the lock could not be persisted: the account stays locked in this process (fail closed)")
        }
        Err(_) => tracing::error!(account = %account, "the lock task failed: the account stays locked in this process"),
    }
}
