//! The HTTP client that runs the device side of every flow.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::engine::{DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign};
use tandem_core::wire::{
    AccountInfo, AccountStartRequest, B64, CreateAccountStartRequest, CreateAccountStepResponse, ErrorResponse,
    GetPublicKeyRequest, HealthResponse, RecoverResponse, RefreshStepResponse, SignStepResponse, StartResponse, Status,
    StepRequest,
};
use tandem_core::{AccountId, ErrorCode, Signature};
use tracing::instrument;

use crate::{Account, SdkError};

/// A client of one Tandem server (an enclave, or the parent proxy in front of it).
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
}

/// Runs CPU-heavy protocol work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, SdkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| SdkError::Transport("protocol task was cancelled".into()))
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:5000`), with a 60 s
    /// request timeout.
    pub fn new(base_url: &str) -> Result<Self, SdkError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SdkError::InvalidInput(format!("cannot build the HTTP client: {e}")))?;
        Self::with_http_client(base_url, http)
    }

    /// A client using a caller-configured `reqwest::Client` (custom roots, proxies, timeouts).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self, SdkError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SdkError::InvalidInput(format!(
                "server URL must start with http:// or https://, got {base_url:?}"
            )));
        }
        Ok(Client {
            inner: Arc::new(Inner { base, http }),
        })
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

    /// Creates an account: runs DKG with the enclave. The device's share never leaves this
    /// process; the returned [`Account`] holds it and must be persisted by the caller.
    pub async fn create_account(&self, label: Option<&str>) -> Result<Account, SdkError> {
        self.create_account_with_progress(label, |_, _| {}).await
    }

    /// [`Client::create_account`], calling `progress(step, total, what)` as each of the
    /// DKG's flights completes (DKG takes about two seconds of computation).
    #[instrument(skip_all, err)]
    pub async fn create_account_with_progress(
        &self,
        label: Option<&str>,
        progress: impl Fn(u8, &'static str),
    ) -> Result<Account, SdkError> {
        progress(1, "generating the device's polynomial");
        let (mut machine, m0) = blocking(DeviceDkg::start).await??;
        let start: StartResponse = self
            .post(
                "/v1/createAccount/start",
                &CreateAccountStartRequest {
                    request_id: None,
                    label: label.map(str::to_string),
                    client_node_id: None,
                    client_message: B64(m0),
                },
            )
            .await?;
        progress(2, "committing and setting up oblivious transfer");
        let (mut machine, m1) = blocking(move || {
            let m = machine.receive(&start.server_message.0);
            (machine, m)
        })
        .await?;
        let m1 = m1?;
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
        let (machine, m2) = blocking(move || {
            let m = machine.receive(&server_message.0);
            (machine, m)
        })
        .await?;
        let m2 = m2?;
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
        Account::new(account_id, label.map(str::to_string), share)
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

    /// Signs a 32-byte digest with the enclave. The result is low-S, carries its recovery
    /// id, and has been verified against the account's public key by the MPC library;
    /// [`crate::eth::assemble`] checks it once more, independently, before Ethereum use.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn sign_digest(&self, account: &Account, digest: [u8; 32]) -> Result<Signature, SdkError> {
        let (mut machine, m0) = DeviceSign::start(account.share().clone(), digest)?;
        let start: StartResponse = self
            .post(
                "/v1/sign/start",
                &AccountStartRequest {
                    request_id: None,
                    account_id: account.id(),
                    client_message: B64(m0),
                },
            )
            .await?;
        let (machine, m1) = blocking(move || {
            let m = machine.receive(&start.server_message.0);
            (machine, m)
        })
        .await?;
        let m1 = m1?;
        let done: SignStepResponse = self.step("/v1/sign/step", &start.session_id, m1).await?;
        let partial = match (done.status, done.server_partial) {
            (Status::Done, Some(p)) => p,
            _ => {
                return Err(SdkError::BadResponse(
                    "sign must finish with DONE and a serverPartial".into(),
                ));
            }
        };
        Ok(blocking(move || machine.finish(&partial.0)).await??)
    }

    /// Proves to the enclave that `account`'s device share (e.g. restored from a backup)
    /// matches the account, without revealing it. Fails with `RECOVERY_FAILED` otherwise.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn recover(&self, account: &Account) -> Result<(), SdkError> {
        let share = account.share().clone();
        let m0 = blocking(move || DeviceRecover::message(&share)).await??;
        let done: RecoverResponse = self
            .post(
                "/v1/recover/start",
                &AccountStartRequest {
                    request_id: None,
                    account_id: account.id(),
                    client_message: B64(m0),
                },
            )
            .await?;
        if done.status != Status::Done || done.address != account.share().address().to_checksum() {
            return Err(SdkError::BadResponse(
                "recover must answer DONE with the account's address".into(),
            ));
        }
        Ok(())
    }

    /// Refreshes both shares of `account`. Returns the account with its new device share,
    /// which the caller must persist (replacing the old one) before signing again.
    #[instrument(skip_all, fields(account = %account.id()), err)]
    pub async fn refresh(&self, account: &Account) -> Result<Account, SdkError> {
        let (mut machine, m0) = DeviceRefresh::start(account.share().clone())?;
        let start: StartResponse = self
            .post(
                "/v1/refresh/start",
                &AccountStartRequest {
                    request_id: None,
                    account_id: account.id(),
                    client_message: B64(m0),
                },
            )
            .await?;
        let (mut machine, m1) = blocking(move || {
            let m = machine.receive(&start.server_message.0);
            (machine, m)
        })
        .await?;
        let r1: RefreshStepResponse = self.step("/v1/refresh/step", &start.session_id, m1?).await?;
        let server_message = match (r1.status, r1.server_message) {
            (Status::Continue, Some(m)) => m,
            _ => {
                return Err(SdkError::BadResponse(
                    "refresh step 1 must continue with a serverMessage".into(),
                ));
            }
        };
        let (machine, m2) = blocking(move || {
            let m = machine.receive(&server_message.0);
            (machine, m)
        })
        .await?;
        let done: RefreshStepResponse = self.step("/v1/refresh/step", &start.session_id, m2?).await?;
        if done.status != Status::Done {
            return Err(SdkError::BadResponse("refresh must finish with DONE".into()));
        }
        Ok(account.with_share(machine.finish()?))
    }
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
