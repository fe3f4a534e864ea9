//! The HTTP API (DESIGN.md §4): routing, request parsing, and the flow handlers.
//!
//! Handlers parse and check cheaply on the async runtime, then run every protocol step on
//! the blocking pool (`spawn_blocking`), so a two-second DKG never stalls other requests.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tandem_core::auth::{FirstMessage, verify_authorization};
use tandem_core::channel::{ChannelKeypair, EnclaveChannel};
use tandem_core::engine::{EnclaveDkg, EnclaveRecover, EnclaveRefresh, EnclaveSign, Next};
use tandem_core::message::Envelope;
use tandem_core::wire::{
    AccountInfo, AccountStartRequest, AttestationRequest, AttestationResponse, B64, CreateAccountStartRequest,
    CreateAccountStepResponse, GetPublicKeyRequest, HealthResponse, RecoverResponse, RefreshStepResponse,
    SignStepResponse, StartResponse, Status, StepRequest,
};
use tandem_core::{AccountId, ErrorCode, Flow, KeyShare, ProtocolError, SessionId, ShareId};
use tracing::{info, warn};

use crate::attester::Attester;
use crate::error::ApiError;
use crate::keystore::{Keystore, StoredAccount};
use crate::replay::ReplayCache;
use crate::sessions::{Live, Machine, Sessions};

/// Shared state of all handlers.
pub struct AppState {
    /// Live sessions.
    pub sessions: Sessions,
    /// Sealed account storage.
    pub keystore: Keystore,
    /// Whether this is a mock-platform server (reported by `/v1/health`).
    pub mock_mode: bool,
    /// The channel key pair, made at boot and held only in memory.
    pub channel: ChannelKeypair,
    /// Who signs attestation documents.
    pub attester: Arc<dyn Attester>,
    /// Nonces of recent flow starts, to refuse replayed authorizations.
    pub replay: ReplayCache,
    /// The boot sequence's progress (reported by `/v1/health`).
    pub boot: Arc<crate::boot::BootStatus>,
    /// Where the parent's credential pushes land (KMS key wrapper only).
    pub credentials: Option<crate::kms::credentials::CredentialSlot>,
    /// The wall-clock drift from the parent, as last pushed by it.
    pub clock: crate::runtime::ClockDrift,
}

/// How far a device's clock may be from ours for its authorization to count.
const AUTH_SKEW_SECS: u64 = 300;

/// The API router. Body size is limited by the caller (see `server`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/attestation", post(attestation))
        .route("/v1/createAccount/start", post(create_start))
        .route("/v1/createAccount/step", post(create_step))
        .route("/v1/getPublicKey", post(get_public_key))
        .route("/v1/sign/start", post(sign_start))
        .route("/v1/sign/step", post(sign_step))
        .route("/v1/recover/start", post(recover_start))
        .route("/v1/refresh/start", post(refresh_start))
        .route("/v1/refresh/step", post(refresh_step))
        .fallback(|| async { ApiError::new(ErrorCode::InvalidRequest, "no such route") })
        .with_state(state)
}

/// JSON body extractor whose rejections are wire errors (`INVALID_REQUEST`,
/// `PAYLOAD_TOO_LARGE`) instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let code = if rejection.status().as_u16() == 413 {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::InvalidRequest
                };
                let mut text = rejection.body_text();
                text.truncate(200);
                Err(ApiError::new(code, text).with_request_id(&request_id))
            }
        }
    }
}

/// The `x-request-id` header, used when the body carries no `requestId`.
pub struct HeaderRequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for HeaderRequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(HeaderRequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect()),
        ))
    }
}

fn request_id(body: &Option<String>, header: HeaderRequestId) -> Option<String> {
    body.clone().or(header.0)
}

/// Runs a protocol step on the blocking pool.
async fn cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(ErrorCode::InternalError, "protocol task failed"))
}

fn parse_session(s: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(s).ok_or_else(|| ApiError::new(ErrorCode::InvalidSession, "sessionId is not a session id"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_text(field: &'static str, v: &Option<String>) -> Result<(), ApiError> {
    if v.as_ref()
        .is_some_and(|s| s.chars().count() > 64 || s.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{field} must be at most 64 printable characters"),
        ));
    }
    Ok(())
}

async fn health(State(state): State<Arc<AppState>>) -> Json<HealthResponse> {
    let ready = state.boot.is_ready() && state.keystore.is_ready();
    let status = if ready {
        "ok"
    } else if state.boot.has_failed() {
        "failed"
    } else {
        "starting"
    };
    let stages = state
        .boot
        .stages()
        .into_iter()
        .map(|(name, st, detail, elapsed_ms)| tandem_core::wire::BootStage {
            name,
            state: st.as_str().into(),
            detail,
            elapsed_ms,
        })
        .collect();
    Json(HealthResponse {
        status: status.into(),
        timestamp: now(),
        mock_mode: state.mock_mode,
        version: env!("CARGO_PKG_VERSION").into(),
        ready: Some(ready),
        clock_drift_ms: state.clock.measured().then(|| state.clock.millis()),
        stages,
    })
}

/// Common tail of every step: on error, drop the session (its machine is poisoned), lock
/// the account if the abort requires excluding the device, and echo the request id.
async fn finish_step<T>(
    state: &AppState,
    sid: &SessionId,
    result: Result<T, ApiError>,
    rid: &Option<String>,
) -> Result<T, ApiError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            // A busy session keeps running; everything else ends the session.
            if !(e.code == ErrorCode::InvalidSession && e.message.contains("already running")) {
                state.sessions.remove(sid);
            }
            warn!(session = %short(sid), code = %e.code, error = %e.message, "step failed");
            Err(e.with_request_id(rid))
        }
    }
}

fn short(sid: &SessionId) -> String {
    sid.to_hex()[..12].to_string()
}

/// Loads an account for a flow, refusing locked ones.
async fn load_active(state: &AppState, id: AccountId) -> Result<Arc<StoredAccount>, ApiError> {
    let account = state.keystore.load(id).await?;
    if account.locked.is_some() {
        return Err(ApiError::new(
            ErrorCode::MpcError,
            "account is locked after a protocol abort that required excluding the device",
        ));
    }
    Ok(account)
}

/// Picks the enclave share matching the device's generation: the current one, or the
/// pending one from a refresh (then `true`). Naming the pending generation proves
/// nothing, so it is promoted only after a step that the device could only pass holding
/// that share (see [`promote`]).
fn share_for(account: &StoredAccount, share_id: ShareId) -> Result<(Arc<KeyShare>, bool), ApiError> {
    account
        .share_for(share_id)
        .ok_or_else(|| ProtocolError::InvalidShare("the device holds another generation of this key").into())
}

/// Makes the pending share current and deletes the old one, after the device proved it
/// holds the pending share (a successful sign step or recovery proof with it).
async fn promote(state: &AppState, id: AccountId, share_id: ShareId) -> Result<(), ApiError> {
    state
        .keystore
        .update(id, move |a| match &a.pending {
            Some(p) if p.share_id() == share_id => StoredAccount {
                current: p.clone(),
                pending: None,
                ..a.clone()
            },
            _ => a.clone(),
        })
        .await?;
    info!(account = %id, "refreshed share confirmed by the device; previous share removed");
    Ok(())
}

/// Records an abort that requires excluding the device (DKLs23 mandates it when an OT
/// consistency check fails: continuing could leak key bits).
async fn lock_account(state: &AppState, id: AccountId, reason: &str) {
    let reason = reason.to_string();
    warn!(account = %id, %reason, "locking account after a protocol abort that requires excluding the device");
    if let Err(e) = state
        .keystore
        .update(id, move |a| StoredAccount {
            locked: Some(reason),
            ..a.clone()
        })
        .await
    {
        warn!(account = %id, error = %e, "could not persist the account lock");
    }
}

async fn get_public_key(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<GetPublicKeyRequest>,
) -> Result<Json<AccountInfo>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    let account = state
        .keystore
        .load(req.account_id)
        .await
        .map_err(|e| ApiError::from(e).with_request_id(&rid))?;
    let pk = account.public_key();
    Ok(Json(AccountInfo {
        request_id: rid,
        account_id: account.id,
        address: account.current.address().to_checksum(),
        public_key: pk,
    }))
}

async fn attestation(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<AttestationRequest>,
) -> Result<Json<AttestationResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    if req.nonce.0.is_empty() || req.nonce.0.len() > 512 {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "nonce must be 1 to 512 bytes").with_request_id(&rid));
    }
    let attester = state.attester.clone();
    let public_key = state.channel.public_key();
    let nonce = req.nonce.0;
    let document = cpu(move || attester.attest(&public_key, &nonce))
        .await?
        .map_err(|e| ApiError::new(ErrorCode::AttestationError, e.to_string()).with_request_id(&rid))?;
    Ok(Json(AttestationResponse {
        request_id: rid,
        document: B64(document),
    }))
}

/// Opens the sealed first message of a flow: the channel for the rest of the session and
/// the first message's plaintext.
async fn open_first(
    state: &Arc<AppState>,
    flow: Flow,
    wire: Vec<u8>,
) -> Result<(EnclaveChannel, FirstMessage), ApiError> {
    let st = state.clone();
    let (channel, plaintext) = cpu(move || EnclaveChannel::open_first(&st.channel, flow, &wire)).await??;
    let first = FirstMessage::decode(&plaintext)?;
    Ok((channel, first))
}

/// Checks the device's authorization of a flow on `account`: a signature by the account's
/// registered device key over this session's first message, fresh, and not seen before.
fn authorize(state: &AppState, account: &StoredAccount, flow: Flow, first: &FirstMessage) -> Result<(), ApiError> {
    let registered = account
        .auth_key
        .ok_or(ProtocolError::Unauthorized("the account has no registered device key"))?;
    let auth = first
        .authorization
        .as_ref()
        .ok_or(ProtocolError::Unauthorized("the flow carries no authorization"))?;
    verify_authorization(
        &registered,
        &account.id,
        flow,
        &first.protocol,
        auth,
        now(),
        AUTH_SKEW_SECS,
    )?;
    let nonce = Envelope::peek(&first.protocol)?.binding;
    if !state.replay.first_use(nonce) {
        return Err(ProtocolError::Unauthorized("this authorization was already used").into());
    }
    Ok(())
}

/// Opens the device's sealed message of `step` and feeds it to `machine`, on the blocking
/// pool; hands the machine and channel back with the result so the session can go on.
async fn open_and_step<M: Send + 'static, T: Send + 'static>(
    mut machine: M,
    mut channel: EnclaveChannel,
    step: u8,
    wire: Vec<u8>,
    feed: impl FnOnce(&mut M, &[u8]) -> Result<T, ProtocolError> + Send + 'static,
) -> Result<(M, EnclaveChannel, Result<T, ProtocolError>), ApiError> {
    cpu(move || {
        let result = channel.open(step, &wire).and_then(|m| feed(&mut machine, &m));
        (machine, channel, result)
    })
    .await
}

fn sealed(channel: &EnclaveChannel, step: u8, plaintext: &[u8]) -> Result<B64, ApiError> {
    Ok(B64(channel.seal(step, plaintext)?))
}

async fn create_start(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<CreateAccountStartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    async {
        check_text("label", &req.label)?;
        check_text("clientNodeId", &req.client_node_id)?;
        state.sessions.check_capacity()?;
        let (channel, first) = open_first(&state, Flow::Dkg, req.client_message.0).await?;
        let auth_key = first
            .auth_key
            .ok_or(ProtocolError::Unauthorized("createAccount must register a device key"))?;
        let (machine, sid, reply) = cpu(move || EnclaveDkg::start(&first.protocol)).await??;
        let server_message = sealed(&channel, 0, &reply)?;
        let machine = Machine::Dkg {
            machine: Box::new(machine),
            label: req.label,
            client_node_id: req.client_node_id,
            auth_key,
        };
        state.sessions.insert(
            sid,
            Live {
                machine,
                channel,
                next_step: 1,
            },
        )?;
        info!(flow = "dkg", session = %short(&sid), "session started");
        Ok(Json(StartResponse {
            request_id: rid.clone(),
            session_id: sid.to_hex(),
            server_message,
        }))
    }
    .await
    .map_err(|e: ApiError| e.with_request_id(&rid))
}

async fn create_step(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<StepRequest>,
) -> Result<Json<CreateAccountStepResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    let sid = parse_session(&req.session_id).map_err(|e| e.with_request_id(&rid))?;
    let result = async {
        let Live {
            machine,
            channel,
            next_step,
        } = state.sessions.take(&sid, Flow::Dkg)?;
        let Machine::Dkg {
            machine,
            label,
            client_node_id,
            auth_key,
        } = machine
        else {
            return Err(ApiError::new(ErrorCode::InternalError, "session table mixed flows"));
        };
        let wire = req.client_message.0;
        let (machine, channel, next) = open_and_step(machine, channel, next_step, wire, |m, msg| m.step(msg)).await?;
        match next? {
            Next::Send(reply) => {
                let server_message = sealed(&channel, next_step, &reply)?;
                let machine = Machine::Dkg {
                    machine,
                    label,
                    client_node_id,
                    auth_key,
                };
                state.sessions.put_back(
                    &sid,
                    Live {
                        machine,
                        channel,
                        next_step: next_step + 1,
                    },
                )?;
                Ok(CreateAccountStepResponse {
                    request_id: rid.clone(),
                    session_id: sid.to_hex(),
                    status: Status::Continue,
                    server_message: Some(server_message),
                    account_id: None,
                    address: None,
                    public_key: None,
                })
            }
            Next::Done(share) => {
                let id =
                    AccountId::random().map_err(|_| ApiError::new(ErrorCode::InternalError, "system RNG failed"))?;
                let public_key = share.public_key();
                let address = share.address().to_checksum();
                // Persist before answering DONE: a DONE always means the share is durable.
                state
                    .keystore
                    .save(StoredAccount {
                        id,
                        label,
                        client_node_id,
                        created_at: now(),
                        auth_key: Some(auth_key),
                        current: Arc::new(share),
                        pending: None,
                        locked: None,
                    })
                    .await?;
                state.sessions.remove(&sid);
                info!(flow = "dkg", session = %short(&sid), account = %id, "account created");
                Ok(CreateAccountStepResponse {
                    request_id: rid.clone(),
                    session_id: sid.to_hex(),
                    status: Status::Done,
                    server_message: None,
                    account_id: Some(id),
                    address: Some(address),
                    public_key: Some(public_key),
                })
            }
        }
    }
    .await;
    finish_step(&state, &sid, result, &rid).await.map(Json)
}

async fn sign_start(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<AccountStartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    async {
        let account = load_active(&state, req.account_id).await?;
        state.sessions.check_capacity()?;
        let (channel, first) = open_first(&state, Flow::Sign, req.client_message.0).await?;
        let start = EnclaveSign::parse_start(&first.protocol)?;
        authorize(&state, &account, Flow::Sign, &first)?;
        let (share, pending) = share_for(&account, start.share_id())?;
        let (machine, sid, reply) = cpu(move || EnclaveSign::start(start, share)).await??;
        let server_message = sealed(&channel, 0, &reply)?;
        let machine = Machine::Sign {
            machine: Box::new(machine),
            account: req.account_id,
            confirms_refresh: pending,
        };
        state.sessions.insert(
            sid,
            Live {
                machine,
                channel,
                next_step: 1,
            },
        )?;
        info!(flow = "sign", session = %short(&sid), account = %req.account_id, "session started");
        Ok(Json(StartResponse {
            request_id: rid.clone(),
            session_id: sid.to_hex(),
            server_message,
        }))
    }
    .await
    .map_err(|e: ApiError| e.with_request_id(&rid))
}

async fn sign_step(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<StepRequest>,
) -> Result<Json<SignStepResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    let sid = parse_session(&req.session_id).map_err(|e| e.with_request_id(&rid))?;
    let result = async {
        let Live {
            machine,
            channel,
            next_step,
        } = state.sessions.take(&sid, Flow::Sign)?;
        let Machine::Sign {
            machine,
            account,
            confirms_refresh,
        } = machine
        else {
            return Err(ApiError::new(ErrorCode::InternalError, "session table mixed flows"));
        };
        let wire = req.client_message.0;
        let (machine, channel, partial) =
            open_and_step(machine, channel, next_step, wire, |m, msg| m.step(msg)).await?;
        let partial = match partial {
            Ok(p) => p,
            Err(e) => {
                if e.requires_ban() {
                    lock_account(&state, account, &e.to_string()).await;
                }
                return Err(e.into());
            }
        };
        let server_partial = sealed(&channel, next_step, &partial)?;
        if confirms_refresh {
            promote(&state, account, machine.share_id()).await?;
        }
        state.sessions.remove(&sid);
        info!(flow = "sign", session = %short(&sid), account = %account, "partial signature sent");
        Ok(SignStepResponse {
            request_id: rid.clone(),
            session_id: sid.to_hex(),
            status: Status::Done,
            server_message: None,
            server_partial: Some(server_partial),
        })
    }
    .await;
    finish_step(&state, &sid, result, &rid).await.map(Json)
}

async fn recover_start(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<AccountStartRequest>,
) -> Result<Json<RecoverResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    async {
        let account = load_active(&state, req.account_id).await?;
        let (_channel, first) = open_first(&state, Flow::Recover, req.client_message.0).await?;
        authorize(&state, &account, Flow::Recover, &first)?;
        let protocol = first.protocol;
        let start = cpu(move || EnclaveRecover::parse_start(&protocol)).await??;
        let Some((share, pending)) = account.share_for(start.share_id()) else {
            return Err(ProtocolError::RecoveryFailed.into());
        };
        let verify_share = share.clone();
        let sid = cpu(move || EnclaveRecover::verify(&start, &verify_share)).await??;
        if pending {
            promote(&state, account.id, share.share_id()).await?;
        }
        info!(flow = "recover", account = %req.account_id, "device share verified");
        Ok(Json(RecoverResponse {
            request_id: rid.clone(),
            session_id: sid.to_hex(),
            status: Status::Done,
            address: share.address().to_checksum(),
        }))
    }
    .await
    .map_err(|e: ApiError| e.with_request_id(&rid))
}

async fn refresh_start(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<AccountStartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    async {
        let account = load_active(&state, req.account_id).await?;
        state.sessions.check_capacity()?;
        let (channel, first) = open_first(&state, Flow::Refresh, req.client_message.0).await?;
        authorize(&state, &account, Flow::Refresh, &first)?;
        let protocol = first.protocol;
        let start = cpu(move || EnclaveRefresh::parse_start(&protocol)).await??;
        let (share, pending) = share_for(&account, start.share_id())?;
        if pending {
            return Err(ApiError::new(
                ErrorCode::MpcInvalidShare,
                "the previous refresh is not confirmed yet: sign or run the recovery check with the new share first",
            ));
        }
        let (machine, sid, reply) = cpu(move || EnclaveRefresh::start(start, share)).await??;
        let server_message = sealed(&channel, 0, &reply)?;
        let machine = Machine::Refresh {
            machine: Box::new(machine),
            account: req.account_id,
        };
        state.sessions.insert(
            sid,
            Live {
                machine,
                channel,
                next_step: 1,
            },
        )?;
        info!(flow = "refresh", session = %short(&sid), account = %req.account_id, "session started");
        Ok(Json(StartResponse {
            request_id: rid.clone(),
            session_id: sid.to_hex(),
            server_message,
        }))
    }
    .await
    .map_err(|e: ApiError| e.with_request_id(&rid))
}

async fn refresh_step(
    State(state): State<Arc<AppState>>,
    hid: HeaderRequestId,
    ApiJson(req): ApiJson<StepRequest>,
) -> Result<Json<RefreshStepResponse>, ApiError> {
    let rid = request_id(&req.request_id, hid);
    let sid = parse_session(&req.session_id).map_err(|e| e.with_request_id(&rid))?;
    let result = async {
        let Live {
            machine,
            channel,
            next_step,
        } = state.sessions.take(&sid, Flow::Refresh)?;
        let Machine::Refresh { machine, account } = machine else {
            return Err(ApiError::new(ErrorCode::InternalError, "session table mixed flows"));
        };
        let wire = req.client_message.0;
        let (machine, channel, next) = open_and_step(machine, channel, next_step, wire, |m, msg| m.step(msg)).await?;
        match next? {
            Next::Send(reply) => {
                let server_message = sealed(&channel, next_step, &reply)?;
                state.sessions.put_back(
                    &sid,
                    Live {
                        machine: Machine::Refresh { machine, account },
                        channel,
                        next_step: next_step + 1,
                    },
                )?;
                Ok(RefreshStepResponse {
                    request_id: rid.clone(),
                    session_id: sid.to_hex(),
                    status: Status::Continue,
                    server_message: Some(server_message),
                })
            }
            Next::Done(new_share) => {
                // Stored as pending beside the current share: the old one stays usable
                // until the device proves it holds its new half.
                let new_share = Arc::new(new_share);
                state
                    .keystore
                    .update(account, move |a| StoredAccount {
                        pending: Some(new_share),
                        ..a.clone()
                    })
                    .await?;
                state.sessions.remove(&sid);
                info!(flow = "refresh", session = %short(&sid), account = %account, "refreshed share stored (pending)");
                Ok(RefreshStepResponse {
                    request_id: rid.clone(),
                    session_id: sid.to_hex(),
                    status: Status::Done,
                    server_message: None,
                })
            }
        }
    }
    .await;
    finish_step(&state, &sid, result, &rid).await.map(Json)
}
