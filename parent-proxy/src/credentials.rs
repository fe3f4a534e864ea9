//! Pushing AWS credentials to the enclave.
//!
//! The enclave needs credentials to call KMS (`Decrypt` with its attestation as
//! `Recipient`), but it has no network and no instance metadata service, and no
//! credential may be baked into its image. The parent fetches them — from the instance
//! role through IMDSv2, or from its own environment — and pushes them to the enclave's
//! control listener (`POST /control/v1/credentials`), again before they expire.
//!
//! The credentials are only ever held briefly here, zeroized on drop, never logged, and
//! sent only to the control listener (reachable only from the parent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::connector::{Connector, EnclaveAddr};
use crate::enclave_control;

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` of this process.
    Env,
    /// The instance role through IMDSv2 at this base URL (`http://169.254.169.254` on EC2).
    Imds(String),
}

impl std::str::FromStr for CredentialSource {
    type Err = String;

    /// `env`, `imds`, or `imds:http://HOST:PORT` (a test double of the metadata service).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "env" => Ok(CredentialSource::Env),
            "imds" => Ok(CredentialSource::Imds("http://169.254.169.254".into())),
            _ => match s.strip_prefix("imds:") {
                Some(url) if url.starts_with("http://") => Ok(CredentialSource::Imds(url.trim_end_matches('/').into())),
                _ => Err(format!(
                    "{s:?}: credentials come from env, imds, or imds:http://HOST:PORT"
                )),
            },
        }
    }
}

/// Why credentials could not be fetched or pushed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A variable is missing from the environment.
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    /// The metadata service failed or answered something unexpected.
    #[error("instance metadata: {0}")]
    Imds(String),
    /// The enclave's control listener could not be reached or refused the push.
    #[error("enclave control: {0}")]
    Push(String),
}

/// One set of AWS credentials. `Debug` shows only the access key id.
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
    expires_at: Option<u64>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Fetches credentials from `source`.
pub async fn fetch(source: &CredentialSource) -> Result<AwsCredentials, CredentialError> {
    match source {
        CredentialSource::Env => {
            let get = |k: &'static str| std::env::var(k).map_err(|_| CredentialError::MissingEnv(k));
            Ok(AwsCredentials {
                access_key_id: get("AWS_ACCESS_KEY_ID")?,
                secret_access_key: Zeroizing::new(get("AWS_SECRET_ACCESS_KEY")?),
                session_token: std::env::var("AWS_SESSION_TOKEN").ok().map(Zeroizing::new),
                expires_at: None,
            })
        }
        CredentialSource::Imds(base) => fetch_imds(base).await,
    }
}

/// One plain HTTP/1.1 exchange with the metadata service (link-local, no TLS).
async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Zeroizing<String>, CredentialError> {
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| CredentialError::Imds("base URL must be http://".into()))?;
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let io = |e: std::io::Error| CredentialError::Imds(format!("{method} {path}: {}", e.kind()));
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr))
        .await
        .map_err(|_| CredentialError::Imds(format!("{method} {path}: timed out")))?
        .map_err(io)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Zeroizing::new(Vec::new());
    tokio::time::timeout(
        Duration::from_secs(5),
        (&mut stream).take(64 * 1024).read_to_end(&mut raw),
    )
    .await
    .map_err(|_| CredentialError::Imds(format!("{method} {path}: timed out")))?
    .map_err(io)?;
    let text = Zeroizing::new(String::from_utf8_lossy(&raw).into_owned());
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status != 200 {
        return Err(CredentialError::Imds(format!("{method} {path}: HTTP {status}")));
    }
    Ok(Zeroizing::new(
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

async fn fetch_imds(base: &str) -> Result<AwsCredentials, CredentialError> {
    let token = http(
        base,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
    )
    .await?;
    let auth = [("X-aws-ec2-metadata-token", token.trim())];
    let roles = http(base, "GET", "/latest/meta-data/iam/security-credentials/", &auth).await?;
    let role = roles
        .lines()
        .next()
        .map(str::trim)
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| CredentialError::Imds("the instance has no role".into()))?
        .to_string();
    let body = http(
        base,
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &auth,
    )
    .await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| CredentialError::Imds("credentials do not parse".into()))?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
    let expires_at = field("Expiration")
        .and_then(|e| time::OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok())
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok());
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId").ok_or_else(|| CredentialError::Imds("no AccessKeyId".into()))?,
        secret_access_key: Zeroizing::new(
            field("SecretAccessKey").ok_or_else(|| CredentialError::Imds("no SecretAccessKey".into()))?,
        ),
        session_token: field("Token").map(Zeroizing::new),
        expires_at,
    })
}

/// Pushes `creds` to the enclave's control listener.
pub async fn push(connector: &Connector, creds: &AwsCredentials) -> Result<(), CredentialError> {
    let body = Zeroizing::new(
        serde_json::json!({
            "accessKeyId": creds.access_key_id,
            "secretAccessKey": creds.secret_access_key.as_str(),
            "sessionToken": creds.session_token.as_ref().map(|t| t.as_str()),
            "expiresAt": creds.expires_at,
        })
        .to_string(),
    );
    match enclave_control::post(connector, "/control/v1/credentials", &body).await {
        Ok((200, _)) => Ok(()),
        Ok((status, _)) => Err(CredentialError::Push(format!("the enclave answered HTTP {status}"))),
        Err(e) => Err(CredentialError::Push(e.kind().to_string())),
    }
}

/// When to push again: five minutes before expiry, at least every hour, at most every 30 s.
pub fn next_push(expires_at: Option<u64>, now: u64) -> Duration {
    let secs = match expires_at {
        Some(exp) => exp.saturating_sub(now).saturating_sub(300),
        None => 3600,
    };
    Duration::from_secs(secs.clamp(30, 3600))
}

/// Fetches and pushes credentials now and again before they expire, until `shutdown`.
pub async fn push_loop(source: CredentialSource, control: EnclaveAddr, shutdown: CancellationToken) {
    let connector = Connector::new(control, Duration::from_secs(5));
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match fetch(&source).await {
            Ok(creds) => match push(&connector, &creds).await {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let next = next_push(creds.expires_at, now);
                    tracing::info!(access_key_id = %creds.access_key_id, next_push_secs = next.as_secs(), "pushed AWS credentials to the enclave");
                    next
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot push credentials to the enclave yet");
                    retry
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch AWS credentials");
                retry
            }
        };
        retry = (retry * 2).min(Duration::from_secs(60));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A metadata-service double: checks the IMDSv2 token dance, answers credentials.
    async fn fake_imds() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut head = String::new();
                let mut reader = tokio::io::BufReader::new(&mut s);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                let body = if head.starts_with("PUT /latest/api/token") {
                    assert!(head.contains("X-aws-ec2-metadata-token-ttl-seconds: 300"));
                    "TOKEN123".to_string()
                } else {
                    assert!(
                        head.contains("X-aws-ec2-metadata-token: TOKEN123"),
                        "IMDSv2 token missing: {head}"
                    );
                    if head.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                        "tandem-parent\n".to_string()
                    } else {
                        assert!(head.starts_with("GET /latest/meta-data/iam/security-credentials/tandem-parent "));
                        r#"{"Code":"Success","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2030-01-01T00:00:00Z"}"#.to_string()
                    }
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn imds_credentials_are_fetched_and_pushed_to_the_control_listener() {
        let base = fake_imds().await;
        let creds = fetch(&CredentialSource::Imds(base)).await.unwrap();
        assert_eq!(creds.expires_at, Some(1_893_456_000));
        assert!(!format!("{creds:?}").contains("s3cr3t"));

        // A control-listener double records what the enclave would receive.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let connector = Connector::new(
            format!("tcp://127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        );
        push(&connector, &creds).await.unwrap();
        let request = got.await.unwrap();
        assert!(request.starts_with("POST /control/v1/credentials HTTP/1.1"));
        assert!(request.contains(r#""accessKeyId":"ASIAEXAMPLE""#));
        assert!(request.contains(r#""secretAccessKey":"s3cr3t""#));
        assert!(request.contains(r#""expiresAt":1893456000"#));
    }

    #[test]
    fn sources_parse_and_pushes_come_before_expiry() {
        assert_eq!("env".parse::<CredentialSource>().unwrap(), CredentialSource::Env);
        assert_eq!(
            "imds".parse::<CredentialSource>().unwrap(),
            CredentialSource::Imds("http://169.254.169.254".into())
        );
        assert!("imds:ftp://x".parse::<CredentialSource>().is_err());
        assert_eq!(next_push(Some(10_000), 1_000), Duration::from_secs(3600));
        assert_eq!(next_push(Some(1_000 + 900), 1_000), Duration::from_secs(600));
        assert_eq!(next_push(Some(1_000 + 100), 1_000), Duration::from_secs(30));
        assert_eq!(next_push(None, 0), Duration::from_secs(3600));
    }
}
