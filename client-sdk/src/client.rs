//! The client that runs the device side of every flow.
//!
//! Before a flow the client needs the enclave's channel key, which it trusts only from a
//! verified attestation document ([`crate::attestation`]): it sends a fresh nonce, checks
//! the document against its [`AttestationPolicy`] (which accepts nothing until an image is
//! pinned), and caches the key for a short while (`reattest_after`, default 60 s) so that
//! signing stays fast. Every flow then goes through one driver ([`Client::run`]): it opens
//! a [`DeviceSession`] (the sealed channel, the device's authorization over it, the state
//! machine), posts what the session produces and feeds back what the enclave answers,
//! until the enclave's sealed done message has been checked. The driver does no I/O
//! itself: requests go through a [`Transport`] (HTTPS by default). If the enclave
//! restarted (new channel key), the first request answers `ATTESTATION_ERROR`; the client
//! re-attests and retries once.
//!
//! The device honours the ban: when the enclave's messages fail an OT consistency check,
//! the account is marked ([`Account::enclave_misbehaved`]) and refuses to sign or to run a
//! fast refresh until a complete refresh replaces its OT state. The account also records
//! the enclave's generation from every done message and refuses an older one. Persist the
//! account ([`Account::to_json`]) after every flow, failed or not, to keep both.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::auth::{DeviceAuthKey, FirstMessage};
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign, RefreshKind};
use tandem_core::flow::{DeviceFlow, DeviceSession, Next};
use tandem_core::wire::{
    AccountInfo, AccountStartRequest, AttestationRequest, AttestationResponse, B64, CreateAccountStartRequest,
    ErrorResponse, FlowResponse, GetPublicKeyRequest, HealthResponse, Status, StepRequest, start_path, step_path,
};
use tandem_core::{AccountId, ErrorCode, Signature};
use tokio::sync::Mutex;
use tracing::instrument;

use crate::attestation::{AttestationPolicy, VerifiedDocument};
use crate::transport::{HttpTransport, Method, Transport};
use crate::{Account, SdkError};

/// A client of one Tandem server (an enclave, or the parent proxy in front of it).
///
/// Cheap to clone: clones share one transport and one attestation cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    policy: AttestationPolicy,
    reattest_after: Duration,
    channel_key: Mutex<Option<([u8; 32], Instant)>>,
}

/// Configures a [`Client`].
pub struct ClientBuilder {
    base: String,
    http: Option<reqwest::Client>,
    transport: Option<Arc<dyn Transport>>,
    policy: AttestationPolicy,
    reattest_after: Duration,
}

impl ClientBuilder {
    /// The attestation policy: which root, images and document age to trust. The default
    /// trusts nothing until an image is accepted.
    pub fn attestation(mut self, policy: AttestationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A caller-configured `reqwest::Client` (custom roots, proxies, timeouts).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Another way to reach the server (an in-process router in tests, a custom stack).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// How long a verified channel key is reused before the next flow attests again.
    /// `Duration::ZERO` attests before every flow.
    pub fn reattest_after(mut self, after: Duration) -> Self {
        self.reattest_after = after;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, SdkError> {
        let transport = match self.transport {
            Some(t) => t,
            None => Arc::new(HttpTransport::new(&self.base, self.http)?),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                policy: self.policy,
                reattest_after: self.reattest_after,
                channel_key: Mutex::new(None),
            }),
        })
    }
}

/// Runs CPU-heavy protocol work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, SdkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| SdkError::Transport("protocol task was cancelled".into()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who starts a flow: the device key that authorizes it, and for createAccount what it
/// registers.
struct Starter<'a> {
    account: Option<&'a Account>,
    auth: &'a DeviceAuthKey,
    register: bool,
    label: Option<String>,
}

impl<'a> Starter<'a> {
    /// A flow on an existing account, authorized by its device key.
    fn existing(account: &'a Account) -> Self {
        Starter {
            account: Some(account),
            auth: account.auth(),
            register: false,
            label: None,
        }
    }
}

impl Client {
    /// A client for the server at `base_url`. It trusts no enclave until its attestation
    /// policy accepts an image: build it with [`Client::builder`] and
    /// [`ClientBuilder::attestation`].
    pub fn new(base_url: &str) -> Result<Self, SdkError> {
        Self::builder(base_url).build()
    }

    /// Starts configuring a client for `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_string(),
            http: None,
            transport: None,
            policy: AttestationPolicy::nitro(),
            reattest_after: Duration::from_secs(60),
        }
    }

    /// The server, for display.
    pub fn base_url(&self) -> String {
        self.inner.transport.describe()
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, SdkError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| SdkError::InvalidInput(e.to_string()))?),
            None => None,
        };
        let resp = self.inner.transport.send(method, path, body).await?;
        if (200..300).contains(&resp.status) {
            return serde_json::from_slice(&resp.body)
                .map_err(|e| SdkError::BadResponse(format!("response does not parse: {e}")));
        }
        match serde_json::from_slice::<ErrorResponse>(&resp.body) {
            Ok(err) => Err(SdkError::Server {
                code: err.error.code,
                status: resp.status,
                message: err.error.message,
            }),
            Err(_) => Err(SdkError::Server {
                code: if resp.status == 429 {
                    ErrorCode::RateLimited
                } else {
                    ErrorCode::InternalError
                },
                status: resp.status,
                message: format!("HTTP {} without an error body", resp.status),
            }),
        }
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(&self, path: &str, body: &Req) -> Result<Resp, SdkError> {
        self.call(Method::Post, path, Some(body)).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<HealthResponse, SdkError> {
        self.call::<(), _>(Method::Get, "/v1/health", None).await
    }

    /// `POST /v1/getPublicKey`. Unauthenticated: the host could answer it; use it for
    /// display. [`Client::recover`] is the authenticated check that the enclave holds the
    /// account.
    pub async fn get_public_key(&self, account_id: AccountId) -> Result<AccountInfo, SdkError> {
        self.post(
            "/v1/getPublicKey",
            &GetPublicKeyRequest {
                request_id: None,
                account_id,
            },
        )
        .await
    }

    /// Fetches the enclave's attestation document with a fresh nonce and verifies it
    /// against this client's policy. On success the document's channel key is trusted for
    /// the next flows (see [`ClientBuilder::reattest_after`]).
    #[instrument(skip_all, err)]
    pub async fn attest(&self) -> Result<VerifiedDocument, SdkError> {
        if !self.inner.policy.trusts_an_image() {
            // Refuse before any request: there is nothing this document could prove.
            return Err(crate::attestation::AttestationError::NoPinnedImage.into());
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|_| SdkError::Transport("system RNG failed".into()))?;
        let document = self.fetch_attestation_document(&nonce).await?;
        let verified = self.inner.policy.verify(&document, unix_now(), Some(&nonce))?;
        let key: [u8; 32] = verified
            .document
            .public_key
            .as_deref()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| SdkError::BadResponse("the attestation document carries no 32-byte channel key".into()))?;
        *self.inner.channel_key.lock().await = Some((key, Instant::now()));
        Ok(verified)
    }

    /// The raw attestation document (unverified), for tools that verify it themselves.
    pub async fn fetch_attestation_document(&self, nonce: &[u8]) -> Result<Vec<u8>, SdkError> {
        let resp: AttestationResponse = self
            .post(
                "/v1/attestation",
                &AttestationRequest {
                    request_id: None,
                    nonce: B64(nonce.to_vec()),
                },
            )
            .await?;
        Ok(resp.document.0)
    }

    async fn channel_key(&self) -> Result<[u8; 32], SdkError> {
        if let Some((key, at)) = *self.inner.channel_key.lock().await
            && at.elapsed() < self.inner.reattest_after
        {
            return Ok(key);
        }
        self.attest().await?;
        self.inner
            .channel_key
            .lock()
            .await
            .map(|(k, _)| k)
            .ok_or_else(|| SdkError::BadResponse("no channel key".into()))
    }

    /// The one driver of every flow: seals the first message to the attested channel key
    /// (with the device's authorization over that channel), posts it, then feeds each
    /// sealed answer to the machine and posts what it asks for, until its done message is
    /// checked. `progress(n)` is called as the n-th answer (0-based) is processed.
    async fn run<F: DeviceFlow>(
        &self,
        machine: F,
        first_protocol: Vec<u8>,
        starter: Starter<'_>,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<F::Output, SdkError> {
        let account_id = starter.account.map(|a| a.id());
        let mut machine = Some(machine);
        for attempt in 0..2 {
            let key = self.channel_key().await?;
            let m = machine
                .take()
                .ok_or(SdkError::Transport("no machine to retry with".into()))?;
            let (session, wire) = DeviceSession::open(&key, m, |binding| FirstMessage {
                protocol: first_protocol.clone(),
                auth_key: starter.register.then(|| starter.auth.public_key()),
                authorization: starter.auth.authorize(
                    account_id.as_ref(),
                    F::FLOW,
                    binding,
                    &first_protocol,
                    unix_now(),
                ),
                label: starter.label.clone(),
                client_node_id: None,
            })?;
            let start = match account_id {
                Some(id) => {
                    self.post::<_, FlowResponse>(
                        start_path(F::FLOW),
                        &AccountStartRequest {
                            request_id: None,
                            account_id: id,
                            client_message: B64(wire),
                        },
                    )
                    .await
                }
                None => {
                    self.post::<_, FlowResponse>(
                        start_path(F::FLOW),
                        &CreateAccountStartRequest {
                            request_id: None,
                            client_message: B64(wire),
                        },
                    )
                    .await
                }
            };
            match start {
                Err(SdkError::Server {
                    code: ErrorCode::AttestationError,
                    ..
                }) if attempt == 0 => {
                    *self.inner.channel_key.lock().await = None;
                    machine = Some(session.into_machine());
                }
                Err(e) => return Err(e),
                Ok(answer) => {
                    let result = self.drive(session, answer, progress).await;
                    if let (Err(SdkError::Protocol(e)), Some(account)) = (&result, starter.account)
                        && e.requires_ban()
                    {
                        tracing::warn!(account = %account.id(), "the enclave failed an OT consistency check: this share will not be used with it again");
                        account.mark_misbehaved(&e.to_string());
                    }
                    return result;
                }
            }
        }
        Err(SdkError::BadResponse(
            "the enclave refused its own attested channel key".into(),
        ))
    }

    async fn drive<F: DeviceFlow>(
        &self,
        mut session: DeviceSession<F>,
        mut answer: FlowResponse,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<F::Output, SdkError> {
        let step_path = step_path(F::FLOW);
        for n in 0u8.. {
            progress(n);
            let done = answer.status == Status::Done;
            let sealed = answer.server_message.0;
            let (s, next) = blocking(move || {
                let next = session.on_answer(&sealed, done);
                (session, next)
            })
            .await?;
            session = s;
            match next? {
                Next::Done(output) => return Ok(output),
                Next::Send(message) => {
                    let path = step_path.ok_or(SdkError::BadResponse("this flow has no steps".into()))?;
                    answer = self
                        .post(
                            path,
                            &StepRequest {
                                request_id: None,
                                session_id: answer.session_id,
                                client_message: B64(message),
                            },
                        )
                        .await?;
                }
            }
        }
        Err(SdkError::BadResponse("the flow did not end".into()))
    }

    /// Creates an account: runs DKG with the enclave. The device's share never leaves this
    /// process; the returned [`Account`] holds it and must be persisted by the caller.
    pub async fn create_account(&self, label: Option<&str>) -> Result<Account, SdkError> {
        self.create_account_with_progress(label, |_, _| {}).await
    }

    /// [`Client::create_account`], calling `progress(step, what)` as each of the DKG's
    /// four stages begins (DKG takes one to two seconds of computation).
    #[instrument(skip_all, err)]
    pub async fn create_account_with_progress(
        &self,
        label: Option<&str>,
        progress: impl Fn(u8, &'static str) + Sync,
    ) -> Result<Account, SdkError> {
        progress(1, "attesting the enclave and generating the device's polynomial");
        let auth = DeviceAuthKey::generate()?;
        let (machine, m0) = blocking(DeviceDkg::start).await??;
        let stages = |n: u8| match n {
            0 => progress(2, "committing and setting up oblivious transfer"),
            1 => progress(3, "deriving the key share"),
            _ => {}
        };
        let created = self
            .run(
                machine,
                m0,
                Starter {
                    account: None,
                    auth: &auth,
                    register: true,
                    label: label.map(str::to_string),
                },
                &stages,
            )
            .await?;
        progress(4, "key generated");
        Account::new(
            created.account_id,
            label.map(str::to_string),
            created.share,
            auth,
            created.generation,
        )
    }

    fn usable(account: &Account) -> Result<(), SdkError> {
        match account.enclave_misbehaved() {
            Some(reason) => Err(SdkError::AccountLocked(reason)),
            None => Ok(()),
        }
    }

    /// Signs a 32-byte digest with the enclave. The result is low-S, carries its recovery
    /// id, and has been verified against the account's public key by the MPC library;
    /// [`crate::eth::assemble`] checks it once more, independently, before Ethereum use.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn sign_digest(&self, account: &Account, digest: [u8; 32]) -> Result<Signature, SdkError> {
        Self::usable(account)?;
        let (machine, m0) = DeviceSign::start(account.share().clone(), digest, account.generation())?;
        let signed = self.run(machine, m0, Starter::existing(account), &|_| {}).await?;
        account.saw_generation(signed.generation);
        Ok(signed.signature)
    }

    /// Proves to the enclave that `account`'s device share (e.g. restored from a backup)
    /// matches the account, and that its OT state is intact, without revealing it. Fails
    /// with `RECOVERY_FAILED` otherwise. The enclave's answer is sealed: a host cannot fake
    /// a passed check. After a refresh, this also confirms the new share to the enclave.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn recover(&self, account: &Account) -> Result<(), SdkError> {
        let share = account.share().clone();
        let seen = account.generation();
        let (machine, m0) = blocking(move || DeviceRecover::start(&share, seen)).await??;
        let recovered = self.run(machine, m0, Starter::existing(account), &|_| {}).await?;
        account.saw_generation(recovered.generation);
        Ok(())
    }

    /// Refreshes both shares of `account` (a fast refresh). Returns the account with its
    /// new device share. The enclave keeps its old share until the device uses the new one:
    /// persist the returned account first, then confirm with [`Client::recover`] (or sign).
    pub async fn refresh(&self, account: &Account) -> Result<Account, SdkError> {
        self.refresh_with_progress(account, RefreshKind::Fast, |_, _| {}).await
    }

    /// [`Client::refresh`] of the given kind, calling `progress(stage, what)` as each of
    /// its three stages begins: 1 attest and start, 2 exchange the re-sharing messages, 3
    /// the final message (after which the enclave stores its new share as pending). If the
    /// flow breaks off anywhere (network, enclave restart), the account's current shares
    /// stay valid: the enclave replaces nothing until the device has proved it holds the
    /// new share. A complete refresh sets up the OT state from scratch: it is the only
    /// refresh a locked account (on either side) accepts.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn refresh_with_progress(
        &self,
        account: &Account,
        kind: RefreshKind,
        progress: impl Fn(u8, &'static str) + Sync,
    ) -> Result<Account, SdkError> {
        if kind == RefreshKind::Fast {
            Self::usable(account)?;
        }
        progress(1, "attesting the enclave and starting the refresh");
        let share = account.share().clone();
        let seen = account.generation();
        let (machine, m0) = blocking(move || DeviceRefresh::start(share, kind, seen)).await??;
        let stages = |n: u8| match n {
            0 => progress(2, "exchanging the re-sharing messages"),
            1 => progress(
                3,
                "finishing: the enclave stores its new share (pending until confirmed)",
            ),
            _ => {}
        };
        let refreshed = self.run(machine, m0, Starter::existing(account), &stages).await?;
        Ok(account.with_share(refreshed.share, refreshed.generation, kind == RefreshKind::Complete))
    }
}
