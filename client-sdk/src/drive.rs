//! Encrypted backups in the user's Google Drive, through the Drive v3 REST API.
//!
//! Backups go to the *app data folder* (`appDataFolder`): a hidden folder only this app's
//! OAuth client can see, so the backup neither clutters the user's Drive nor is readable
//! by other Drive apps. One file per account, named [`backup_file_name`]; a second backup
//! of the same account overwrites the first (the latest share is the only useful one
//! after a refresh). What Drive stores is the encrypted file of [`crate::backup`]: Google
//! sees the account id and public key in its header, never the share.
//!
//! The OAuth flow belongs to the host app (it has the browser, the client id and the
//! consent screen): the SDK takes an access token with the
//! `https://www.googleapis.com/auth/drive.appdata` scope. Tokens are zeroized, never
//! printed by `Debug`, never logged and never put in a URL.
//!
//! The subset of Drive v3 used:
//!
//! | what | request |
//! |---|---|
//! | find by name | `GET {base}/drive/v3/files?spaces=appDataFolder&q=name='…' and trashed=false&fields=files(id,name,modifiedTime)&orderBy=modifiedTime desc` |
//! | create | `POST {base}/upload/drive/v3/files?uploadType=multipart` (multipart/related: JSON metadata with `parents: ["appDataFolder"]`, then the bytes) |
//! | overwrite | `PATCH {base}/upload/drive/v3/files/{id}?uploadType=media` |
//! | download | `GET {base}/drive/v3/files/{id}?alt=media` |

use std::time::Duration;

use serde::Deserialize;
use tandem_core::AccountId;
use zeroize::Zeroizing;

use crate::backup::{self, BackupContents, DecryptOptions, MAX_BACKUP_LEN, Passphrase};
use crate::{Account, SdkError};

/// Google's API host, the default base URL.
pub const GOOGLE_APIS: &str = "https://www.googleapis.com";

/// The name of an account's backup file in the app data folder.
pub fn backup_file_name(account_id: AccountId) -> String {
    format!("tandem-backup-{account_id}.bin")
}

const BACKUP_PREFIX: &str = "tandem-backup-";

/// An OAuth 2.0 access token for Drive (scope `drive.appdata`). Zeroized on drop; `Debug`
/// does not show it.
#[derive(Clone)]
pub struct OAuthToken(Zeroizing<String>);

impl OAuthToken {
    /// Wraps a token, trimming surrounding whitespace (a token file ends with a newline).
    pub fn new(token: String) -> Result<Self, DriveError> {
        let token = Zeroizing::new(token);
        let trimmed = token.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DriveError::InvalidToken);
        }
        Ok(OAuthToken(Zeroizing::new(trimmed.to_string())))
    }

    /// The `Authorization` header value, marked sensitive so that HTTP-layer `Debug`
    /// output and logs show it as `Sensitive`.
    fn bearer(&self) -> Result<reqwest::header::HeaderValue, DriveError> {
        let text = Zeroizing::new(format!("Bearer {}", self.0.as_str()));
        let mut value = reqwest::header::HeaderValue::from_str(&text).map_err(|_| DriveError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuthToken(<redacted>)")
    }
}

/// What went wrong talking to Drive. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The token is empty or not a token.
    #[error("the Google access token is empty or malformed")]
    InvalidToken,
    /// HTTP 401: the token is expired, revoked or for another app.
    #[error(
        "Google refused the access token (HTTP 401: expired, revoked or not for this app): get a fresh token with the drive.appdata scope"
    )]
    Unauthorized,
    /// HTTP 403 with a quota reason, or HTTP 429: storage full or too many requests.
    #[error("Google Drive quota exceeded ({reason}): {message}")]
    Quota {
        /// Drive's reason, e.g. `storageQuotaExceeded`, `userRateLimitExceeded`.
        reason: String,
        /// Drive's explanation.
        message: String,
    },
    /// HTTP 403 for another reason (e.g. the token lacks the `drive.appdata` scope).
    #[error("Google Drive refused the request ({reason}): {message}")]
    Forbidden {
        /// Drive's reason, e.g. `insufficientPermissions`.
        reason: String,
        /// Drive's explanation.
        message: String,
    },
    /// No backup of the account in the app data folder (or the file vanished).
    #[error("no backup found in Google Drive: {0}")]
    NotFound(String),
    /// Any other HTTP error.
    #[error("Google Drive answered HTTP {status}: {message}")]
    Http {
        /// The status.
        status: u16,
        /// Drive's explanation, if any.
        message: String,
    },
    /// Drive could not be reached.
    #[error("cannot reach Google Drive: {0}")]
    Transport(String),
    /// Drive's answer is not what its API promises.
    #[error("unexpected answer from Google Drive: {0}")]
    BadResponse(String),
}

/// A file in the app data folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveFile {
    /// Drive's file id.
    pub id: String,
    /// The file name.
    pub name: String,
    /// RFC 3339 time of the last change, when Drive reports it.
    #[serde(default)]
    pub modified_time: Option<String>,
}

#[derive(Deserialize)]
struct FileList {
    #[serde(default)]
    files: Vec<DriveFile>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// A Drive v3 client: a base URL (Google's, or a test server's) and an HTTP client.
#[derive(Clone, Debug)]
pub struct DriveClient {
    base_url: String,
    http: reqwest::Client,
}

impl DriveClient {
    /// A client of Google's API ([`GOOGLE_APIS`]).
    pub fn new() -> Result<Self, SdkError> {
        Self::with_base_url(GOOGLE_APIS)
    }

    /// A client of another base URL (a test server, a proxy). `http://` is accepted only
    /// for loopback addresses: anything else would send the token in clear.
    pub fn with_base_url(base_url: &str) -> Result<Self, SdkError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| SdkError::InvalidInput(format!("the Drive URL {base_url:?} does not parse: {e}")))?;
        let loopback = match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) || url.query().is_some() {
            return Err(SdkError::InvalidInput(format!(
                "the Drive URL must be https:// (or http:// on loopback), without a query, got {base_url:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SdkError::InvalidInput(format!("cannot build the HTTP client: {e}")))?;
        Ok(DriveClient { base_url, http })
    }

    /// Uses a caller-configured `reqwest::Client` (proxies, timeouts, roots).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn list(&self, token: &OAuthToken, q: &str) -> Result<Vec<DriveFile>, DriveError> {
        let resp = self
            .http
            .get(format!("{}/drive/v3/files", self.base_url))
            .header(reqwest::header::AUTHORIZATION, token.bearer()?)
            .query(&[
                ("spaces", "appDataFolder"),
                ("q", q),
                ("fields", "files(id,name,modifiedTime)"),
                ("orderBy", "modifiedTime desc"),
            ])
            .send()
            .await
            .map_err(transport)?;
        let body = read_body(check(resp).await?, 1 << 20).await?;
        let list: FileList = serde_json::from_slice(&body)
            .map_err(|e| DriveError::BadResponse(format!("the file list does not parse: {e}")))?;
        for f in &list.files {
            check_file_id(&f.id)?;
        }
        Ok(list.files)
    }

    /// The newest file called `name` in the app data folder, if any.
    pub async fn find(&self, token: &OAuthToken, name: &str) -> Result<Option<DriveFile>, DriveError> {
        let q = format!("name='{}' and trashed=false", escape_query(name));
        let files = self.list(token, &q).await?;
        Ok(files.into_iter().find(|f| f.name == name))
    }

    /// Every Tandem backup in the app data folder, newest first (to find an account id
    /// on a device that has lost everything).
    pub async fn list_backups(&self, token: &OAuthToken) -> Result<Vec<DriveFile>, DriveError> {
        let q = format!("name contains '{BACKUP_PREFIX}' and trashed=false");
        let files = self.list(token, &q).await?;
        Ok(files
            .into_iter()
            .filter(|f| f.name.starts_with(BACKUP_PREFIX))
            .collect())
    }

    /// Downloads a file's content (at most [`MAX_BACKUP_LEN`] bytes).
    pub async fn download(&self, token: &OAuthToken, file_id: &str) -> Result<Vec<u8>, DriveError> {
        check_file_id(file_id)?;
        let resp = self
            .http
            .get(format!("{}/drive/v3/files/{file_id}", self.base_url))
            .header(reqwest::header::AUTHORIZATION, token.bearer()?)
            .query(&[("alt", "media")])
            .send()
            .await
            .map_err(transport)?;
        read_body(check(resp).await?, MAX_BACKUP_LEN).await
    }

    /// Stores `content` as `name` in the app data folder: overwrites the newest file of
    /// that name if there is one, else creates it (multipart upload).
    pub async fn upload(&self, token: &OAuthToken, name: &str, content: &[u8]) -> Result<DriveFile, DriveError> {
        let resp = match self.find(token, name).await? {
            Some(existing) => self
                .http
                .patch(format!("{}/upload/drive/v3/files/{}", self.base_url, existing.id))
                .header(reqwest::header::AUTHORIZATION, token.bearer()?)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .query(&[("uploadType", "media"), ("fields", "id,name,modifiedTime")])
                .body(content.to_vec())
                .send()
                .await
                .map_err(transport)?,
            None => {
                let metadata = serde_json::json!({
                    "name": name,
                    "parents": ["appDataFolder"],
                    "mimeType": "application/octet-stream",
                });
                let (boundary, body) = multipart_related(&metadata.to_string(), content)?;
                self.http
                    .post(format!("{}/upload/drive/v3/files", self.base_url))
                    .header(reqwest::header::AUTHORIZATION, token.bearer()?)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        format!("multipart/related; boundary={boundary}"),
                    )
                    .query(&[("uploadType", "multipart"), ("fields", "id,name,modifiedTime")])
                    .body(body)
                    .send()
                    .await
                    .map_err(transport)?
            }
        };
        let body = read_body(check(resp).await?, 1 << 20).await?;
        let file: DriveFile = serde_json::from_slice(&body)
            .map_err(|e| DriveError::BadResponse(format!("the uploaded file's metadata does not parse: {e}")))?;
        check_file_id(&file.id)?;
        Ok(file)
    }

    /// Uploads an encrypted backup file of `account_id` (made with [`crate::backup`]),
    /// overwriting the previous one. The file's header must name that account.
    pub async fn push_backup(
        &self,
        token: &OAuthToken,
        account_id: AccountId,
        file: &[u8],
    ) -> Result<DriveFile, SdkError> {
        let header = backup::BackupHeader::parse(file)?;
        if header.account_id != account_id {
            return Err(backup::BackupError::WrongAccount {
                expected: account_id,
                found: header.account_id,
            }
            .into());
        }
        Ok(self.upload(token, &backup_file_name(account_id), file).await?)
    }

    /// Downloads the encrypted backup file of `account_id`.
    pub async fn pull_backup(&self, token: &OAuthToken, account_id: AccountId) -> Result<Vec<u8>, SdkError> {
        let name = backup_file_name(account_id);
        let file = self
            .find(token, &name)
            .await?
            .ok_or_else(|| DriveError::NotFound(format!("no {name} in this Google account's app data")))?;
        Ok(self.download(token, &file.id).await?)
    }

    /// Encrypts `account` under `passphrase` (default Argon2id parameters, off the async
    /// workers) and stores it in the app data folder, replacing an earlier backup.
    pub async fn backup_to_google(
        &self,
        account: &Account,
        passphrase: &Passphrase,
        oauth_token: &OAuthToken,
    ) -> Result<DriveFile, SdkError> {
        let contents = BackupContents::new(account.clone());
        let passphrase = passphrase.clone();
        let file = tokio::task::spawn_blocking(move || backup::encrypt(&contents, &passphrase))
            .await
            .map_err(|_| SdkError::Storage("the encryption task was cancelled".into()))??;
        self.push_backup(oauth_token, account.id(), &file).await
    }

    /// Downloads and decrypts the backup of `account_id`. The result is *not yet trusted*:
    /// run the recovery check ([`crate::Client::recover`]) before using or storing it, or
    /// use [`crate::Client::restore_backup`] on [`DriveClient::pull_backup`]'s bytes.
    pub async fn recover_from_google(
        &self,
        account_id: AccountId,
        passphrase: &Passphrase,
        oauth_token: &OAuthToken,
    ) -> Result<BackupContents, SdkError> {
        let file = self.pull_backup(oauth_token, account_id).await?;
        let passphrase = passphrase.clone();
        let opts = DecryptOptions::new().expect_account(account_id);
        Ok(
            tokio::task::spawn_blocking(move || backup::decrypt_with(&file, &passphrase, &opts))
                .await
                .map_err(|_| SdkError::Storage("the decryption task was cancelled".into()))??,
        )
    }
}

/// [`DriveClient::backup_to_google`] against Google's API.
pub async fn backup_to_google(
    account: &Account,
    passphrase: &Passphrase,
    oauth_token: &OAuthToken,
) -> Result<DriveFile, SdkError> {
    DriveClient::new()?
        .backup_to_google(account, passphrase, oauth_token)
        .await
}

/// [`DriveClient::recover_from_google`] against Google's API.
pub async fn recover_from_google(
    account_id: AccountId,
    passphrase: &Passphrase,
    oauth_token: &OAuthToken,
) -> Result<BackupContents, SdkError> {
    DriveClient::new()?
        .recover_from_google(account_id, passphrase, oauth_token)
        .await
}

/// A `multipart/related` body (RFC 2387) as Drive's multipart upload takes it: the JSON
/// metadata part, then the content part. The boundary is random and checked not to occur
/// in either part.
fn multipart_related(metadata: &str, content: &[u8]) -> Result<(String, Vec<u8>), DriveError> {
    let boundary = loop {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| DriveError::Transport("system RNG failed".into()))?;
        let b = format!("tandem-{}", hex::encode(raw));
        let delimiter = format!("--{b}");
        if !metadata.contains(&delimiter) && !contains(content, delimiter.as_bytes()) {
            break b;
        }
    };
    let mut body = Vec::with_capacity(content.len() + metadata.len() + 256);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes());
    body.extend_from_slice(metadata.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((boundary, body))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Escapes a value for a single-quoted string in a Drive query.
fn escape_query(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Drive file ids are URL-safe base64-like strings; anything else (from a hostile or
/// broken server) must not reach a URL path.
fn check_file_id(id: &str) -> Result<(), DriveError> {
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(DriveError::BadResponse("a file id is not a Drive file id".into()));
    }
    Ok(())
}

fn transport(e: reqwest::Error) -> DriveError {
    // reqwest's message names the URL (no secrets there: the token is only in a header).
    DriveError::Transport(e.without_url().to_string())
}

/// Maps an HTTP error status to a [`DriveError`], reading Drive's error body.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, DriveError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = read_body(resp, 64 * 1024).await.unwrap_or_default();
    let (message, reason) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => (
            truncate(&b.error.message),
            b.error.errors.into_iter().map(|e| e.reason).find(|r| !r.is_empty()),
        ),
        Err(_) => (String::new(), None),
    };
    let reason = reason.unwrap_or_default();
    Err(match status.as_u16() {
        401 => DriveError::Unauthorized,
        429 => DriveError::Quota {
            reason: if reason.is_empty() {
                "rateLimitExceeded".into()
            } else {
                reason
            },
            message,
        },
        403 if QUOTA_REASONS.contains(&reason.as_str()) => DriveError::Quota { reason, message },
        403 => DriveError::Forbidden { reason, message },
        404 => DriveError::NotFound(if message.is_empty() { "HTTP 404".into() } else { message }),
        s => DriveError::Http { status: s, message },
    })
}

/// Drive's 403 reasons that mean "over a quota" rather than "not allowed".
const QUOTA_REASONS: &[&str] = &[
    "storageQuotaExceeded",
    "quotaExceeded",
    "userRateLimitExceeded",
    "rateLimitExceeded",
    "dailyLimitExceeded",
    "sharingRateLimitExceeded",
];

fn truncate(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, DriveError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(DriveError::BadResponse(format!(
            "the answer is larger than {limit} bytes"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if out.len() + chunk.len() > limit {
            return Err(DriveError::BadResponse(format!(
                "the answer is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
