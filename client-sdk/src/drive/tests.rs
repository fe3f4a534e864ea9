//! The Drive client against a local server that implements the subset of Drive v3 the
//! SDK uses, and checks every request is one Drive would accept: the multipart/related
//! layout with its boundary, the metadata (app data folder), the query parameters, and
//! the `Authorization: Bearer` header.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::*;
use crate::account::tests::{test_account, test_account_2};
use crate::backup::{BackupError, KdfLimits, KdfParams};

const TOKEN: &str = "ya29.test-token-0123456789";

#[derive(Default)]
struct Drive {
    files: BTreeMap<String, StoredFile>,
    next_id: u32,
    clock: u32,
    /// Answer uploads with 403 storageQuotaExceeded.
    quota_exceeded: bool,
    /// Answer everything with 429.
    rate_limited: bool,
    /// Requests that Drive would not accept: each test asserts there are none.
    violations: Vec<String>,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
}

struct StoredFile {
    name: String,
    parents: Vec<String>,
    content: Vec<u8>,
    modified: u32,
}

impl StoredFile {
    fn resource(&self, id: &str) -> Value {
        json!({"id": id, "name": self.name, "modifiedTime": format!("2025-01-01T00:00:{:02}.000Z", self.modified % 60)})
    }
}

type Shared = Arc<Mutex<Drive>>;

fn drive_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"domain": "global", "reason": reason, "message": message}]}});
    (status, axum::Json(body)).into_response()
}

/// Checks what every request must carry. On a violation, records it and answers 400.
#[allow(clippy::result_large_err)] // a test server's early-return response
fn gate(state: &Shared, headers: &HeaderMap, what: String) -> Result<(), Response> {
    let mut d = state.lock().unwrap();
    d.log.push(what.clone());
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(auth) = auth else {
        d.violations.push(format!("{what}: no Authorization header"));
        return Err(drive_error(StatusCode::UNAUTHORIZED, "required", "Login Required."));
    };
    let Some(token) = auth.strip_prefix("Bearer ") else {
        d.violations
            .push(format!("{what}: Authorization is not a Bearer token: {auth:?}"));
        return Err(drive_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Invalid Credentials",
        ));
    };
    if token != TOKEN {
        return Err(drive_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        ));
    }
    if d.rate_limited {
        return Err(drive_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        ));
    }
    Ok(())
}

fn violation(state: &Shared, what: String) -> Response {
    state.lock().unwrap().violations.push(what.clone());
    drive_error(StatusCode::BAD_REQUEST, "badRequest", &what)
}

/// `GET /drive/v3/files?spaces=appDataFolder&q=…&fields=files(id,name,modifiedTime)`
async fn list(State(state): State<Shared>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(r) = gate(&state, &headers, "GET /drive/v3/files".into()) {
        return r;
    }
    if q.get("spaces").map(String::as_str) != Some("appDataFolder") {
        return violation(&state, format!("list without spaces=appDataFolder: {q:?}"));
    }
    if q.get("fields").map(String::as_str) != Some("files(id,name,modifiedTime)") {
        return violation(&state, format!("list with unexpected fields: {q:?}"));
    }
    if q.get("orderBy").is_some_and(|o| o != "modifiedTime desc") {
        return violation(&state, format!("list with unexpected orderBy: {q:?}"));
    }
    let query = q.get("q").cloned().unwrap_or_default();
    let matches: Box<dyn Fn(&str) -> bool> = if let Some(rest) = query.strip_prefix("name='")
        && let Some(name) = rest.strip_suffix("' and trashed=false")
    {
        let name = name.to_string();
        Box::new(move |n| n == name)
    } else if let Some(rest) = query.strip_prefix("name contains '")
        && let Some(part) = rest.strip_suffix("' and trashed=false")
    {
        let part = part.to_string();
        Box::new(move |n| n.contains(&part))
    } else {
        return violation(&state, format!("list with an unexpected q: {query:?}"));
    };
    let d = state.lock().unwrap();
    let mut files: Vec<_> = d
        .files
        .iter()
        .filter(|(_, f)| matches(&f.name) && f.parents == ["appDataFolder"])
        .collect();
    files.sort_by_key(|(_, f)| std::cmp::Reverse(f.modified));
    let files: Vec<Value> = files.into_iter().map(|(id, f)| f.resource(id)).collect();
    axum::Json(json!({"files": files})).into_response()
}

/// `GET /drive/v3/files/{id}?alt=media`
async fn download(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = gate(&state, &headers, format!("GET /drive/v3/files/{id}")) {
        return r;
    }
    if q.get("alt").map(String::as_str) != Some("media") {
        return violation(&state, format!("download without alt=media: {q:?}"));
    }
    let d = state.lock().unwrap();
    match d.files.get(&id) {
        Some(f) => ([(header::CONTENT_TYPE, "application/octet-stream")], f.content.clone()).into_response(),
        None => drive_error(StatusCode::NOT_FOUND, "notFound", &format!("File not found: {id}.")),
    }
}

/// Splits a multipart/related body exactly as RFC 2046 lays it out and Drive expects it:
/// two parts, each with a Content-Type header, JSON metadata first.
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<(Value, Vec<u8>), String> {
    let boundary = content_type
        .strip_prefix("multipart/related; boundary=")
        .ok_or_else(|| format!("Content-Type is not multipart/related with a boundary: {content_type:?}"))?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(format!("bad boundary {boundary:?}"));
    }
    let delimiter = format!("--{boundary}");
    let open = format!("{delimiter}\r\n");
    let rest = body
        .strip_prefix(open.as_bytes())
        .ok_or("the body does not start with the boundary")?;
    let close = format!("\r\n{delimiter}--\r\n");
    let rest = rest
        .strip_suffix(close.as_bytes())
        .ok_or("the body does not end with the closing boundary")?;
    let middle = format!("\r\n{delimiter}\r\n");
    let split = rest
        .windows(middle.len())
        .position(|w| w == middle.as_bytes())
        .ok_or("no second part")?;
    let (first, second) = (&rest[..split], &rest[split + middle.len()..]);
    if second.windows(delimiter.len()).any(|w| w == delimiter.as_bytes()) {
        return Err("more than two parts".into());
    }
    let part = |p: &[u8]| -> Result<(String, Vec<u8>), String> {
        let end = p
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("a part has no header block")?;
        let headers = std::str::from_utf8(&p[..end]).map_err(|_| "part headers are not text")?;
        let ct = headers
            .split("\r\n")
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .ok_or("a part has no Content-Type")?;
        Ok((ct, p[end + 4..].to_vec()))
    };
    let (meta_type, meta) = part(first)?;
    if !meta_type.starts_with("application/json") {
        return Err(format!("the first part is {meta_type:?}, not the JSON metadata"));
    }
    let (_, content) = part(second)?;
    let metadata: Value = serde_json::from_slice(&meta).map_err(|e| format!("metadata is not JSON: {e}"))?;
    Ok((metadata, content))
}

/// `POST /upload/drive/v3/files?uploadType=multipart`
async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&state, &headers, "POST /upload/drive/v3/files".into()) {
        return r;
    }
    if q.get("uploadType").map(String::as_str) != Some("multipart") {
        return violation(&state, format!("create without uploadType=multipart: {q:?}"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (metadata, content) = match parse_multipart(ct, &body) {
        Ok(parts) => parts,
        Err(e) => return violation(&state, format!("create: {e}")),
    };
    let name = metadata["name"].as_str().unwrap_or_default().to_string();
    if !(name.starts_with("tandem-backup-") && name.ends_with(".bin")) {
        return violation(&state, format!("create: unexpected name {name:?}"));
    }
    if metadata["parents"] != json!(["appDataFolder"]) {
        return violation(&state, format!("create: not into the app data folder: {metadata}"));
    }
    let mut d = state.lock().unwrap();
    if d.quota_exceeded {
        return drive_error(
            StatusCode::FORBIDDEN,
            "storageQuotaExceeded",
            "The user's Drive storage quota has been exceeded.",
        );
    }
    d.next_id += 1;
    d.clock += 1;
    let id = format!("1AbC-{}_xyz", d.next_id);
    let file = StoredFile {
        name,
        parents: vec!["appDataFolder".into()],
        content,
        modified: d.clock,
    };
    let resource = file.resource(&id);
    d.files.insert(id, file);
    axum::Json(resource).into_response()
}

/// `PATCH /upload/drive/v3/files/{id}?uploadType=media`
async fn overwrite(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&state, &headers, format!("PATCH /upload/drive/v3/files/{id}")) {
        return r;
    }
    if q.get("uploadType").map(String::as_str) != Some("media") {
        return violation(&state, format!("overwrite without uploadType=media: {q:?}"));
    }
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/octet-stream") {
        return violation(&state, "overwrite: the media is not application/octet-stream".into());
    }
    let mut d = state.lock().unwrap();
    if d.quota_exceeded {
        return drive_error(
            StatusCode::FORBIDDEN,
            "storageQuotaExceeded",
            "The user's Drive storage quota has been exceeded.",
        );
    }
    d.clock += 1;
    let clock = d.clock;
    match d.files.get_mut(&id) {
        Some(f) => {
            f.content = body.to_vec();
            f.modified = clock;
            axum::Json(f.resource(&id)).into_response()
        }
        None => drive_error(StatusCode::NOT_FOUND, "notFound", &format!("File not found: {id}.")),
    }
}

async fn fallback(State(state): State<Shared>, req: axum::extract::Request) -> Response {
    violation(&state, format!("unexpected request {} {}", req.method(), req.uri()))
}

struct FakeDrive {
    state: Shared,
    client: DriveClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeDrive {
    async fn start() -> FakeDrive {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/drive/v3/files", get(list))
            .route("/drive/v3/files/{id}", get(download))
            .route("/upload/drive/v3/files", post(create))
            .route("/upload/drive/v3/files/{id}", axum::routing::patch(overwrite))
            .fallback(fallback)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        FakeDrive {
            state,
            client: DriveClient::with_base_url(&url).unwrap(),
            _stop: tx,
        }
    }

    fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn token() -> OAuthToken {
    OAuthToken::new(format!("{TOKEN}\n")).unwrap()
}

/// A backup at Argon2id's minimum parameters: the Drive tests are about transport.
fn cheap_file(account: &Account) -> Vec<u8> {
    let contents = BackupContents::new(account.clone());
    backup::encrypt_with(
        &contents,
        &Passphrase::new("correct horse battery".into()),
        KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
        &KdfLimits::danger_allow_weak(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_round_trip_and_overwrite() {
    let drive = FakeDrive::start().await;
    let account = test_account();
    let passphrase = Passphrase::new("correct horse battery staple".into());

    // The issue's API: encrypt (default Argon2id) and upload; download and decrypt.
    let file = drive
        .client
        .backup_to_google(&account, &passphrase, &token())
        .await
        .unwrap();
    assert_eq!(file.name, backup_file_name(account.id()));
    let back = drive
        .client
        .recover_from_google(account.id(), &passphrase, &token())
        .await
        .unwrap();
    assert_eq!(*back.account.to_json().unwrap(), *account.to_json().unwrap());
    assert_eq!(
        drive.log(),
        [
            "GET /drive/v3/files".to_string(),
            "POST /upload/drive/v3/files".into(),
            "GET /drive/v3/files".into(),
            format!("GET /drive/v3/files/{}", file.id),
        ]
    );

    // A second backup of the same account overwrites the first: one file, new content.
    let first = drive.client.pull_backup(&token(), account.id()).await.unwrap();
    let again = drive
        .client
        .backup_to_google(&account, &passphrase, &token())
        .await
        .unwrap();
    assert_eq!(again.id, file.id, "re-backup must overwrite, not add a file");
    assert!(
        drive
            .log()
            .contains(&format!("PATCH /upload/drive/v3/files/{}", file.id))
    );
    let second = drive.client.pull_backup(&token(), account.id()).await.unwrap();
    assert_ne!(
        first, second,
        "the overwrite stored the new backup (fresh salt and nonce)"
    );
    assert_eq!(drive.state.lock().unwrap().files.len(), 1);
    let back = drive
        .client
        .recover_from_google(account.id(), &passphrase, &token())
        .await
        .unwrap();
    assert_eq!(back.account.public_key(), account.public_key());

    // Another account gets its own file; list_backups finds both.
    let other = test_account_2();
    drive
        .client
        .push_backup(&token(), other.id(), &cheap_file(&other))
        .await
        .unwrap();
    let all = drive.client.list_backups(&token()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, backup_file_name(other.id()), "newest first");
    // A file is only pushed under the account its header names.
    let err = drive
        .client
        .push_backup(&token(), account.id(), &cheap_file(&other))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::Backup(BackupError::WrongAccount { .. })),
        "{err:?}"
    );

    // The wrong passphrase, and an account with no backup.
    let err = drive
        .client
        .recover_from_google(account.id(), &Passphrase::new("not the passphrase".into()), &token())
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Backup(BackupError::Decryption)), "{err:?}");
    let nobody = AccountId::random().unwrap();
    let err = drive.client.pull_backup(&token(), nobody).await.unwrap_err();
    assert!(matches!(err, SdkError::Drive(DriveError::NotFound(_))), "{err:?}");
    assert!(err.to_string().contains(&nobody.to_string()), "{err}");

    assert_eq!(drive.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_quota_errors_are_mapped_and_tokens_never_shown() {
    let drive = FakeDrive::start().await;
    let account = test_account();
    let file = cheap_file(&account);

    let wrong = OAuthToken::new("ya29.expired-token-secret".into()).unwrap();
    let err = drive.client.push_backup(&wrong, account.id(), &file).await.unwrap_err();
    assert!(matches!(err, SdkError::Drive(DriveError::Unauthorized)), "{err:?}");
    assert!(err.to_string().contains("401"), "{err}");
    let err = drive.client.pull_backup(&wrong, account.id()).await.unwrap_err();
    assert!(matches!(err, SdkError::Drive(DriveError::Unauthorized)), "{err:?}");
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        format!("{wrong:?}"),
        format!("{:?}", drive.client),
    ] {
        assert!(!shown.contains("expired-token-secret"), "{shown}");
    }
    assert!(OAuthToken::new("  \n".into()).is_err());
    assert!(OAuthToken::new("two words".into()).is_err());

    drive.state.lock().unwrap().quota_exceeded = true;
    let err = drive
        .client
        .push_backup(&token(), account.id(), &file)
        .await
        .unwrap_err();
    match &err {
        SdkError::Drive(DriveError::Quota { reason, message }) => {
            assert_eq!(reason, "storageQuotaExceeded");
            assert!(message.contains("storage quota"), "{message}");
        }
        other => panic!("expected a quota error, got {other:?}"),
    }
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    drive.state.lock().unwrap().quota_exceeded = false;
    drive.client.push_backup(&token(), account.id(), &file).await.unwrap();
    // The overwrite path reports the quota too.
    drive.state.lock().unwrap().quota_exceeded = true;
    let err = drive
        .client
        .push_backup(&token(), account.id(), &file)
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Drive(DriveError::Quota { .. })), "{err:?}");

    drive.state.lock().unwrap().rate_limited = true;
    let err = drive.client.pull_backup(&token(), account.id()).await.unwrap_err();
    match err {
        SdkError::Drive(DriveError::Quota { reason, .. }) => assert_eq!(reason, "rateLimitExceeded"),
        other => panic!("expected a rate-limit error, got {other:?}"),
    }

    // Unreachable Drive, and a plain-HTTP URL off loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = DriveClient::with_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = down.pull_backup(&token(), account.id()).await.unwrap_err();
    assert!(matches!(err, SdkError::Drive(DriveError::Transport(_))), "{err:?}");
    for refused in [
        "http://drive.example.com",
        "http://127.0.0.1.example.com",
        "ftp://127.0.0.1",
        "https://www.googleapis.com/?x=1",
        "not a url",
    ] {
        assert!(DriveClient::with_base_url(refused).is_err(), "{refused}");
    }
    for accepted in [
        "http://localhost:1234",
        "http://[::1]:80/",
        "https://drive.example.com/",
    ] {
        assert!(DriveClient::with_base_url(accepted).is_ok(), "{accepted}");
    }
    assert_eq!(DriveClient::new().unwrap().base_url(), GOOGLE_APIS);

    assert_eq!(drive.violations(), Vec::<String>::new());
}

#[test]
fn the_multipart_body_is_what_drive_expects() {
    let metadata = r#"{"name":"tandem-backup-x.bin","parents":["appDataFolder"]}"#;
    let content = b"\x00\x01binary\r\n--not-a-boundary\r\n";
    let (boundary, body) = multipart_related(metadata, content).unwrap();
    let (meta, got) = parse_multipart(&format!("multipart/related; boundary={boundary}"), &body).unwrap();
    assert_eq!(meta["parents"], json!(["appDataFolder"]));
    assert_eq!(got, content);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with(&format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{"
    )));
    assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    assert_eq!(escape_query("a'b\\c"), "a\\'b\\\\c");
    assert!(check_file_id("1AbC-2_xyz").is_ok());
    for bad in ["", "../x", "a/b", "a?b", "a b"] {
        assert!(check_file_id(bad).is_err(), "{bad:?}");
    }
}
