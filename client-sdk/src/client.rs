//! The HTTP client that runs the device side of every flow.
//!
//! Before a flow the client needs the enclave's channel key, which it trusts only from a
//! verified attestation document ([`crate::attestation`]): it sends a fresh nonce, checks
//! the document against its [`AttestationPolicy`], and caches the key for a short while
//! (`reattest_after`, default 60 s) so that signing stays fast. Every protocol message is
//! then sealed to that key ([`tandem_core::channel`]); the proxy and the host see only
//! ciphertext. If the enclave restarted (new key), the first request of a flow answers
//! `ATTESTATION_ERROR`; the client re-attests and retries once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::auth::{DeviceAuthKey, FirstMessage};
use tandem_core::channel::ClientChannel;
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign};
use tandem_core::wire::{
    AccountInfo, AccountStartRequest, AttestationRequest, AttestationResponse, B64, CreateAccountStartRequest,
    CreateAccountStepResponse, ErrorResponse, GetPublicKeyRequest, HealthResponse, RecoverResponse,
    RefreshStepResponse, SignStepResponse, StartResponse, Status, StepRequest,
};
use tandem_core::{AccountId, ErrorCode, Flow, Signature};
use tokio::sync::Mutex;
use tracing::instrument;

use crate::attestation::{AttestationPolicy, VerifiedDocument};
use crate::{Account, SdkError};

/// A client of one Tandem server (an enclave, or the parent proxy in front of it).
///
/// Cheap to clone: clones share one connection pool and one attestation cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    policy: AttestationPolicy,
    reattest_after: Duration,
    channel_key: Mutex<Option<([u8; 32], Instant)>>,
}

/// Configures a [`Client`].
pub struct ClientBuilder {
    base: String,
    http: Option<reqwest::Client>,
    policy: AttestationPolicy,
    reattest_after: Duration,
}

impl ClientBuilder {
    /// The attestation policy: which root, PCRs and document age to trust.
    pub fn attestation(mut self, policy: AttestationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A caller-configured `reqwest::Client` (custom roots, proxies, timeouts).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
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
        let base = self.base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SdkError::InvalidInput(format!(
                "server URL must start with http:// or https://, got {base:?}"
            )));
        }
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| SdkError::InvalidInput(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                http,
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

impl Client {
    /// A client for the server at `base_url` that trusts only genuine Nitro enclaves (the
    /// pinned AWS root; pin PCRs with [`Client::builder`]).
    pub fn new(base_url: &str) -> Result<Self, SdkError> {
        Self::builder(base_url).build()
    }

    /// Starts configuring a client for `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_string(),
            http: None,
            policy: AttestationPolicy::nitro(),
            reattest_after: Duration::from_secs(60),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(&self, path: &str, body: &Req) -> Result<Resp, SdkError> {
        let url = format!("{}{}", self.inner.base, path);
        let resp = self.inner.http.post(&url).json(body).send().await.map_err(transport)?;
        decode(resp).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<HealthResponse, SdkError> {
        let url = format!("{}/v1/health", self.inner.base);
        let resp = self.inner.http.get(&url).send().await.map_err(transport)?;
        decode(resp).await
    }

    /// `POST /v1/getPublicKey`.
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
        let mut nonce = [0u8; 32];
        getrandom_fill(&mut nonce)?;
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

    /// Seals `first` to the enclave's attested key and posts it to `path`. If the enclave
    /// answers that its channel key changed (it restarted), attests again and retries once.
    async fn start_flow<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        flow: Flow,
        first: &FirstMessage,
        request: impl Fn(B64) -> Req,
    ) -> Result<(ClientChannel, Resp), SdkError> {
        let plaintext = first.encode()?;
        for attempt in 0..2 {
            let key = self.channel_key().await?;
            let (channel, wire) = ClientChannel::seal_first(&key, flow, &plaintext)?;
            match self.post::<Req, Resp>(path, &request(B64(wire))).await {
                Err(SdkError::Server {
                    code: ErrorCode::AttestationError,
                    ..
                }) if attempt == 0 => {
                    *self.inner.channel_key.lock().await = None;
                }
                other => return other.map(|r| (channel, r)),
            }
        }
        Err(SdkError::BadResponse(
            "the enclave refused its own attested channel key".into(),
        ))
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
        progress: impl Fn(u8, &'static str),
    ) -> Result<Account, SdkError> {
        progress(1, "attesting the enclave and generating the device's polynomial");
        let auth = DeviceAuthKey::generate()?;
        let (mut machine, m0) = blocking(DeviceDkg::start).await??;
        let first = FirstMessage {
            protocol: m0,
            auth_key: Some(auth.public_key()),
            authorization: None,
        };
        let label_owned = label.map(str::to_string);
        let (mut channel, start): (ClientChannel, StartResponse) = self
            .start_flow("/v1/createAccount/start", Flow::Dkg, &first, |m| {
                CreateAccountStartRequest {
                    request_id: None,
                    label: label_owned.clone(),
                    client_node_id: None,
                    client_message: m,
                }
            })
            .await?;
        progress(2, "committing and setting up oblivious transfer");
        let reply = channel.open(0, &start.server_message.0)?;
        let (mut machine, m1) = blocking(move || {
            let m = machine.receive(&reply);
            (machine, m)
        })
        .await?;
        let m1 = channel.seal(1, &m1?)?;
        let r1: CreateAccountStepResponse = self.step("/v1/createAccount/step", &start.session_id, m1).await?;
        let server_message = match (r1.status, r1.server_message) {
            (Status::Continue, Some(m)) => m,
            _ => {
                return Err(SdkError::BadResponse(
                    "createAccount step 1 must continue with a serverMessage".into(),
                ));
            }
        };
        progress(3, "deriving the key share");
        let reply = channel.open(1, &server_message.0)?;
        let (machine, m2) = blocking(move || {
            let m = machine.receive(&reply);
            (machine, m)
        })
        .await?;
        let m2 = channel.seal(2, &m2?)?;
        let done: CreateAccountStepResponse = self.step("/v1/createAccount/step", &start.session_id, m2).await?;
        let (Status::Done, Some(account_id), Some(public_key), Some(address)) =
            (done.status, done.account_id, done.public_key, done.address)
        else {
            return Err(SdkError::BadResponse(
                "createAccount must finish with DONE, accountId, address, publicKey".into(),
            ));
        };
        let share = machine.finish(&public_key)?;
        if share.address().to_checksum() != address {
            return Err(SdkError::BadResponse(
                "the server reports another address for this key".into(),
            ));
        }
        progress(4, "key generated");
        Account::new(account_id, label.map(str::to_string), share, auth)
    }

    async fn step<Resp: DeserializeOwned>(
        &self,
        path: &str,
        session_id: &str,
        message: Vec<u8>,
    ) -> Result<Resp, SdkError> {
        self.post(
            path,
            &StepRequest {
                request_id: None,
                session_id: session_id.to_string(),
                client_message: B64(message),
            },
        )
        .await
    }

    fn authorized(account: &Account, flow: Flow, protocol: Vec<u8>) -> FirstMessage {
        let authorization = account.auth().authorize(&account.id(), flow, &protocol, unix_now());
        FirstMessage {
            protocol,
            auth_key: None,
            authorization: Some(authorization),
        }
    }

    /// Signs a 32-byte digest with the enclave. The result is low-S, carries its recovery
    /// id, and has been verified against the account's public key by the MPC library;
    /// [`crate::eth::assemble`] checks it once more, independently, before Ethereum use.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn sign_digest(&self, account: &Account, digest: [u8; 32]) -> Result<Signature, SdkError> {
        let (mut machine, m0) = DeviceSign::start(account.share().clone(), digest)?;
        let first = Self::authorized(account, Flow::Sign, m0);
        let id = account.id();
        let (mut channel, start): (ClientChannel, StartResponse) = self
            .start_flow("/v1/sign/start", Flow::Sign, &first, |m| AccountStartRequest {
                request_id: None,
                account_id: id,
                client_message: m,
            })
            .await?;
        let reply = channel.open(0, &start.server_message.0)?;
        let (machine, m1) = blocking(move || {
            let m = machine.receive(&reply);
            (machine, m)
        })
        .await?;
        let m1 = channel.seal(1, &m1?)?;
        let done: SignStepResponse = self.step("/v1/sign/step", &start.session_id, m1).await?;
        let partial = match (done.status, done.server_partial) {
            (Status::Done, Some(p)) => channel.open(1, &p.0)?,
            _ => {
                return Err(SdkError::BadResponse(
                    "sign must finish with DONE and a serverPartial".into(),
                ));
            }
        };
        Ok(blocking(move || machine.finish(&partial)).await??)
    }

    /// Proves to the enclave that `account`'s device share (e.g. restored from a backup)
    /// matches the account, without revealing it. Fails with `RECOVERY_FAILED` otherwise.
    /// After a refresh, this also confirms the new share to the enclave.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn recover(&self, account: &Account) -> Result<(), SdkError> {
        let share = account.share().clone();
        let m0 = blocking(move || DeviceRecover::message(&share)).await??;
        let first = Self::authorized(account, Flow::Recover, m0);
        let id = account.id();
        let (_channel, done): (ClientChannel, RecoverResponse) = self
            .start_flow("/v1/recover/start", Flow::Recover, &first, |m| AccountStartRequest {
                request_id: None,
                account_id: id,
                client_message: m,
            })
            .await?;
        if done.status != Status::Done || done.address != account.share().address().to_checksum() {
            return Err(SdkError::BadResponse(
                "recover must answer DONE with the account's address".into(),
            ));
        }
        Ok(())
    }

    /// Refreshes both shares of `account`. Returns the account with its new device share.
    /// The enclave keeps its old share until the device uses the new one: persist the
    /// returned account first, then confirm with [`Client::recover`] (or simply sign).
    pub async fn refresh(&self, account: &Account) -> Result<Account, SdkError> {
        self.refresh_with_progress(account, |_, _| {}).await
    }

    /// [`Client::refresh`], calling `progress(stage, what)` as each of its three stages
    /// begins: 1 attest and start, 2 exchange the re-sharing messages, 3 the final message
    /// (after which the enclave stores its new share as pending). If the flow breaks off
    /// anywhere (network, enclave restart), the account's current shares stay valid: the
    /// enclave replaces nothing until the device has proved it holds the new share.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn refresh_with_progress(
        &self,
        account: &Account,
        progress: impl Fn(u8, &'static str),
    ) -> Result<Account, SdkError> {
        progress(1, "attesting the enclave and starting the refresh");
        let (mut machine, m0) = DeviceRefresh::start(account.share().clone())?;
        let first = Self::authorized(account, Flow::Refresh, m0);
        let id = account.id();
        let (mut channel, start): (ClientChannel, StartResponse) = self
            .start_flow("/v1/refresh/start", Flow::Refresh, &first, |m| AccountStartRequest {
                request_id: None,
                account_id: id,
                client_message: m,
            })
            .await?;
        progress(2, "exchanging the re-sharing messages");
        let reply = channel.open(0, &start.server_message.0)?;
        let (mut machine, m1) = blocking(move || {
            let m = machine.receive(&reply);
            (machine, m)
        })
        .await?;
        let m1 = channel.seal(1, &m1?)?;
        let r1: RefreshStepResponse = self.step("/v1/refresh/step", &start.session_id, m1).await?;
        let server_message = match (r1.status, r1.server_message) {
            (Status::Continue, Some(m)) => m,
            _ => {
                return Err(SdkError::BadResponse(
                    "refresh step 1 must continue with a serverMessage".into(),
                ));
            }
        };
        let reply = channel.open(1, &server_message.0)?;
        let (machine, m2) = blocking(move || {
            let m = machine.receive(&reply);
            (machine, m)
        })
        .await?;
        let m2 = channel.seal(2, &m2?)?;
        progress(
            3,
            "finishing: the enclave stores its new share (pending until confirmed)",
        );
        let done: RefreshStepResponse = self.step("/v1/refresh/step", &start.session_id, m2).await?;
        if done.status != Status::Done {
            return Err(SdkError::BadResponse("refresh must finish with DONE".into()));
        }
        Ok(account.with_share(machine.finish()?))
    }
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), SdkError> {
    getrandom::fill(buf).map_err(|_| SdkError::Transport("system RNG failed".into()))
}

fn transport(e: reqwest::Error) -> SdkError {
    SdkError::Transport(e.to_string())
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, SdkError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| SdkError::BadResponse(format!("response does not parse: {e}")));
    }
    match serde_json::from_slice::<ErrorResponse>(&bytes) {
        Ok(err) => Err(SdkError::Server {
            code: err.error.code,
            status: status.as_u16(),
            message: err.error.message,
        }),
        Err(_) => Err(SdkError::Server {
            code: if status.as_u16() == 429 {
                ErrorCode::RateLimited
            } else {
                ErrorCode::InternalError
            },
            status: status.as_u16(),
            message: format!("HTTP {status} without an error body"),
        }),
    }
}
