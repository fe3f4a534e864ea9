//! The control link, parent end: pushing AWS credentials to the enclave.
//!
//! The enclave needs credentials to call KMS (`Decrypt` with its attestation as
//! `Recipient`), but it has no network and no instance metadata service, and no
//! credential may be baked into its image. The parent fetches them, from the instance
//! role through IMDSv2 or from its own environment, and pushes them to the enclave's
//! control listener (`POST /control/v1/credentials`), again before they expire
//! ([`RefreshPolicy`]).
//!
//! The credentials are held only briefly here, in `tandem_core`'s zeroizing
//! [`PushedCredentials`], never logged (only the access key id is), and sent only to the
//! control listener, which only the parent can reach.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, header};
use serde::Deserialize;
use tandem_core::Addr;
use tandem_core::parent::control::{CREDENTIALS_PATH, CredentialsAccepted, PushedCredentials, SecretString};
use tokio_util::sync::CancellationToken;

use super::control::{ControlClient, ControlError};
use crate::connector::Connector;
use crate::exchange::{ExchangeError, SecretBody, exchange};

/// The instance metadata service on EC2.
const IMDS: (&str, u16) = ("169.254.169.254", 80);
/// Largest answer read from the metadata service.
const MAX_IMDS_ANSWER: usize = 64 * 1024;
/// One metadata call, connect to answer (it is link-local: it answers fast or not at all).
const IMDS_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between failed attempts: the enclave waits for credentials at boot.
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` of this process.
    Env,
    /// The instance role through IMDSv2 at this address (`tcp://169.254.169.254:80` on EC2).
    Imds(Addr),
}

impl std::str::FromStr for CredentialSource {
    type Err = String;

    /// `env`, `imds`, or `imds:http://HOST[:PORT]` (a stand-in of the metadata service).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{s:?}: credentials come from env, imds, or imds:http://HOST:PORT");
        match s {
            "env" => Ok(CredentialSource::Env),
            "imds" => Ok(CredentialSource::Imds(Addr::tcp(IMDS.0, IMDS.1))),
            _ => {
                let authority = s
                    .strip_prefix("imds:http://")
                    .map(|a| a.trim_end_matches('/'))
                    .ok_or_else(usage)?;
                let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| !p.ends_with(']')) {
                    authority.to_string()
                } else {
                    format!("{authority}:80")
                };
                Addr::parse_dial(&format!("tcp://{with_port}"))
                    .map(CredentialSource::Imds)
                    .map_err(|_| usage())
            }
        }
    }
}

/// When to push again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Push this long before the credentials expire (the enclave refuses credentials
    /// within a minute of expiry, so this must be well over a minute).
    pub before_expiry: Duration,
    /// Never push more often than this.
    pub min_interval: Duration,
    /// Push at least this often (also for credentials that do not expire).
    pub max_interval: Duration,
}

impl Default for RefreshPolicy {
    /// Five minutes before expiry (IMDS rotates role credentials about five minutes before
    /// their expiry, and they last hours), at most every 30 s, at least hourly.
    fn default() -> Self {
        RefreshPolicy {
            before_expiry: Duration::from_secs(300),
            min_interval: Duration::from_secs(30),
            max_interval: Duration::from_secs(3600),
        }
    }
}

impl RefreshPolicy {
    /// How long to wait before the next push, for credentials expiring at `expires_at`
    /// (Unix seconds) when it is `now`.
    pub fn next_push(&self, expires_at: Option<u64>, now: u64) -> Duration {
        let wait = match expires_at {
            Some(exp) => Duration::from_secs(exp.saturating_sub(now)).saturating_sub(self.before_expiry),
            None => self.max_interval,
        };
        wait.clamp(self.min_interval, self.max_interval.max(self.min_interval))
    }
}

/// What the parent pushes, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPush {
    /// Where the credentials come from.
    pub source: CredentialSource,
    /// When they are pushed again.
    pub refresh: RefreshPolicy,
}

/// Why credentials could not be fetched or pushed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A variable is missing from the environment.
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    /// The metadata service could not be reached.
    #[error("instance metadata: {0}")]
    ImdsUnreachable(#[from] ExchangeError),
    /// The metadata service answered something unexpected.
    #[error("instance metadata: {0}")]
    Imds(String),
    /// The enclave's control listener could not be reached or refused the push.
    #[error("enclave control: {0}")]
    Push(#[from] ControlError),
}

/// Fetches credentials from `source`.
pub async fn fetch(source: &CredentialSource) -> Result<PushedCredentials, CredentialError> {
    match source {
        CredentialSource::Env => {
            let get = |k: &'static str| std::env::var(k).map_err(|_| CredentialError::MissingEnv(k));
            Ok(PushedCredentials {
                access_key_id: get("AWS_ACCESS_KEY_ID")?,
                secret_access_key: SecretString::new(get("AWS_SECRET_ACCESS_KEY")?),
                session_token: std::env::var("AWS_SESSION_TOKEN").ok().map(SecretString::new),
                expires_at: None,
            })
        }
        CredentialSource::Imds(addr) => fetch_imds(addr).await,
    }
}

/// The role credentials document of IMDS (`…/iam/security-credentials/ROLE`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials {
    #[serde(default)]
    code: Option<String>,
    access_key_id: String,
    secret_access_key: SecretString,
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default)]
    expiration: Option<String>,
}

/// One IMDS call: `method path` with `headers`; the body of a 200 answer.
async fn imds(
    connector: &Connector,
    method: http::Method,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<zeroize::Zeroizing<Vec<u8>>, CredentialError> {
    let host = connector.addr().authority().unwrap_or_default();
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, host);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(SecretBody::empty())
        .map_err(|_| CredentialError::Imds(format!("{method} {path}: invalid request")))?;
    let (status, body) = exchange(connector, request, MAX_IMDS_ANSWER, IMDS_TIMEOUT).await?;
    if status != http::StatusCode::OK {
        return Err(CredentialError::Imds(format!("{method} {path}: HTTP {status}")));
    }
    Ok(body)
}

/// The IMDSv2 dance: a session token, the role's name, then the role's credentials.
async fn fetch_imds(addr: &Addr) -> Result<PushedCredentials, CredentialError> {
    let connector = Connector::new(addr.clone(), IMDS_TIMEOUT);
    let token = imds(
        &connector,
        http::Method::PUT,
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "300")],
    )
    .await?;
    let token = std::str::from_utf8(&token)
        .map_err(|_| CredentialError::Imds("the session token is not text".into()))?
        .trim()
        .to_string();
    let token = zeroize::Zeroizing::new(token);
    let auth = [("x-aws-ec2-metadata-token", token.as_str())];
    let roles = imds(
        &connector,
        http::Method::GET,
        "/latest/meta-data/iam/security-credentials/",
        &auth,
    )
    .await?;
    let role = std::str::from_utf8(&roles)
        .ok()
        .and_then(|r| r.lines().next())
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)))
        .ok_or_else(|| CredentialError::Imds("the instance has no role".into()))?
        .to_string();
    let body = imds(
        &connector,
        http::Method::GET,
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &auth,
    )
    .await?;
    let doc: ImdsCredentials =
        serde_json::from_slice(&body).map_err(|_| CredentialError::Imds("the credentials do not parse".into()))?;
    if doc.code.as_deref().is_some_and(|c| c != "Success") {
        return Err(CredentialError::Imds(format!(
            "the credentials are not available (Code {:?})",
            doc.code.unwrap_or_default()
        )));
    }
    let expires_at = doc
        .expiration
        .as_deref()
        .and_then(|e| time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok())
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok());
    Ok(PushedCredentials {
        access_key_id: doc.access_key_id,
        secret_access_key: doc.secret_access_key,
        session_token: doc.token,
        expires_at,
    })
}

/// Pushes `creds` to the enclave's control listener; returns the expiry it stored.
pub async fn push(control: &ControlClient, creds: &PushedCredentials) -> Result<Option<u64>, CredentialError> {
    let accepted: CredentialsAccepted = control.post(CREDENTIALS_PATH, creds).await?;
    Ok(accepted.expires_at)
}

/// Fetches and pushes credentials now, and again as `push.refresh` says, until
/// `shutdown`. Failures (the enclave still booting, IMDS briefly away) are retried after
/// 1 s, doubling up to [`MAX_RETRY`], so a restarted enclave is not left waiting long.
pub async fn push_loop(push_config: CredentialPush, control: ControlClient, shutdown: CancellationToken) {
    let mut retry = Duration::from_secs(1);
    loop {
        let outcome = match fetch(&push_config.source).await {
            Ok(creds) => push(&control, &creds).await.map(|_| creds),
            Err(e) => Err(e),
        };
        let wait = match outcome {
            Ok(creds) => {
                retry = Duration::from_secs(1);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let next = push_config.refresh.next_push(creds.expires_at, now);
                tracing::info!(
                    access_key_id = %creds.access_key_id,
                    expires_at = ?creds.expires_at,
                    next_push_secs = next.as_secs(),
                    "pushed AWS credentials to the enclave"
                );
                next
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_secs = retry.as_secs(), "cannot push AWS credentials to the enclave yet");
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_pushes_come_before_expiry() {
        assert_eq!("env".parse::<CredentialSource>().unwrap(), CredentialSource::Env);
        assert_eq!(
            "imds".parse::<CredentialSource>().unwrap(),
            CredentialSource::Imds(Addr::tcp("169.254.169.254", 80))
        );
        assert_eq!(
            "imds:http://127.0.0.1:8080/".parse::<CredentialSource>().unwrap(),
            CredentialSource::Imds(Addr::tcp("127.0.0.1", 8080))
        );
        assert_eq!(
            "imds:http://[::1]".parse::<CredentialSource>().unwrap(),
            CredentialSource::Imds(Addr::tcp("::1", 80))
        );
        for bad in ["imds:ftp://x", "imds:http://", "imds:http://x:0", "aws"] {
            assert!(bad.parse::<CredentialSource>().is_err(), "{bad}");
        }
        let p = RefreshPolicy::default();
        assert_eq!(p.next_push(Some(10_000), 1_000), Duration::from_secs(3600));
        assert_eq!(p.next_push(Some(1_000 + 900), 1_000), Duration::from_secs(600));
        assert_eq!(p.next_push(Some(1_000 + 100), 1_000), Duration::from_secs(30));
        assert_eq!(p.next_push(None, 0), Duration::from_secs(3600));
    }
}
