//! Black-box tests of the device-share lifecycle commands (`tandem backup …`, `tandem
//! account export|import|refresh|verify`): the `tandem` binary against an enclave on a
//! loopback port, with the wallet wiped between backup and restore.
#![allow(clippy::unwrap_used)] // test helpers unwrap: a panic is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy_primitives::{Address, Signature};
use serde_json::Value;
use tandem_testkit::{Served, error_of};

const PASSPHRASE: &str = "correct horse battery staple";

struct Env {
    served: Served,
    /// Holds the wallets, passphrase files and backups of one test.
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
    std::fs::write(dir.path().join("wrong-pass"), "not the passphrase at all\n").unwrap();
    Env {
        served: Served::start("dev").await,
        dir,
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// Runs `tandem --server … --wallet DIR/<wallet> --json ARGS`; (success, JSON, stderr).
    async fn tandem(&self, wallet: &str, args: &[&str]) -> (bool, Value, String) {
        self.tandem_env(wallet, args, &[]).await
    }

    async fn tandem_env(&self, wallet: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, Value, String) {
        let mut cli = self.served.tandem(env!("CARGO_BIN_EXE_tandem"), &self.path(wallet));
        cli.env = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        cli.run(args).await
    }

    /// Creates an account in `wallet`; returns (id, address).
    async fn create(&self, wallet: &str, label: &str) -> (String, Address) {
        let (ok, v, err) = self.tandem(wallet, &["account", "create", "--label", label]).await;
        assert!(ok, "{err}");
        (
            v["accountId"].as_str().unwrap().to_string(),
            v["address"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// Signs `text` with `account` from `wallet` and checks the signature recovers `address`.
    async fn signs(&self, wallet: &str, account: &str, text: &str, address: Address) {
        let (ok, v, err) = self
            .tandem(wallet, &["sign", "message", "--account", account, text])
            .await;
        assert!(ok, "signing from {wallet} failed: {v} {err}");
        let sig = v["signature"].as_str().unwrap();
        let sig = Signature::try_from(hex::decode(&sig[2..]).unwrap().as_slice()).unwrap();
        assert_eq!(sig.recover_address_from_msg(text).unwrap(), address);
    }

    fn account_files(&self, wallet: &str) -> Vec<PathBuf> {
        match std::fs::read_dir(self.path(wallet)) {
            Ok(dir) => dir
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().len() == 37 && p.extension().is_some_and(|e| e == "json"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// `tandem backup restore --in DIR/<file> --passphrase-file DIR/<pass>` into `wallet`.
async fn restore(env: &Env, wallet: &str, file: &str, pass: &str) -> (bool, Value, String) {
    env.tandem(
        wallet,
        &[
            "backup",
            "restore",
            "--in",
            &env.p(file),
            "--passphrase-file",
            &env.p(pass),
        ],
    )
    .await
}

fn device_share(path: &Path) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["deviceShare"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_restore_recover_sign() {
    let env = env().await;
    let (id, address) = env.create("w", "alice").await;
    env.signs("w", &id, "before the backup", address).await;
    let share = device_share(&env.path("w").join(format!("{id}.json")));
    // Pin the enclave's image: the backup carries it to the restored device.
    let (ok, _, err) = env
        .tandem("w", &["attestation", "pin", "--pcr-file", &env.served.pcr_file])
        .await;
    assert!(ok, "{err}");
    let config = std::fs::read_to_string(env.path("w").join("config.json")).unwrap();

    let started = Instant::now();
    let (ok, v, err) = env
        .tandem(
            "w",
            &[
                "backup",
                "create",
                "--account",
                "alice",
                "--out",
                &env.p("alice.backup"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");
    eprintln!(
        "backup create: {}s in Argon2id+encryption, {:?} wall (process included)",
        v["encryptSeconds"],
        started.elapsed()
    );
    assert_eq!(v["kdf"], "argon2id m=65536KiB t=3 p=1");
    assert_eq!(v["acceptedImages"], 1, "the pinned image travels in the backup");
    let file = std::fs::read(env.path("alice.backup")).unwrap();
    assert_eq!(&file[..8], b"TANDEMBK");
    let text = String::from_utf8_lossy(&file);
    assert!(!text.contains(&share[..64]), "the share must not appear in the backup");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(env.path("alice.backup"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Wipe the device.
    std::fs::remove_dir_all(env.path("w")).unwrap();

    // The wrong passphrase: refused, nothing written.
    let (ok, v, _) = restore(&env, "w", "alice.backup", "wrong-pass").await;
    assert!(!ok);
    assert!(error_of(&v).contains("wrong passphrase"), "{v}");
    assert!(env.account_files("w").is_empty());

    // The right one: decrypt, recovery check, then the wallet.
    let started = Instant::now();
    let (ok, v, err) = restore(&env, "w", "alice.backup", "pass").await;
    assert!(ok, "{v} {err}");
    eprintln!(
        "backup restore: {}s decryption, {} ms recovery check, {:?} wall (process included)",
        v["decryptSeconds"],
        v["recoverMs"],
        started.elapsed()
    );
    assert_eq!(v["recovered"], true);
    assert_eq!(v["accountId"], id.as_str());
    assert_eq!(v["imagesAdopted"], true);
    let restored: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("w").join("config.json")).unwrap()).unwrap();
    let original: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(restored["acceptedImages"], original["acceptedImages"]);
    assert_eq!(env.account_files("w").len(), 1);
    assert_eq!(device_share(&env.path("w").join(format!("{id}.json"))), share);
    env.signs("w", "alice", "after the restore", address).await;

    // A second restore would replace the wallet's file: only with --force.
    let (ok, v, _) = restore(&env, "w", "alice.backup", "pass").await;
    assert!(!ok);
    assert!(error_of(&v).contains("--force"), "{v}");
    let (ok, _, err) = env
        .tandem(
            "w",
            &[
                "backup",
                "restore",
                "--in",
                &env.p("alice.backup"),
                "--force",
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");

    // Not a backup at all.
    std::fs::write(env.path("junk"), b"TANDEMBK\x07rest").unwrap();
    let (ok, v, _) = env
        .tandem(
            "w2",
            &[
                "backup",
                "restore",
                "--in",
                &env.p("junk"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(!ok);
    assert!(error_of(&v).contains("unsupported backup format version 7"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_retires_old_shares_and_stale_backups() {
    let env = env().await;
    let (id, address) = env.create("w", "bob").await;
    let file = env.path("w").join(format!("{id}.json"));
    let (ok, _, err) = env
        .tandem(
            "w",
            &[
                "backup",
                "create",
                "--out",
                &env.p("old.backup"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");
    // Keep the pre-refresh wallet, as a device that missed the refresh would have it.
    std::fs::create_dir(env.path("old-wallet")).unwrap();
    std::fs::copy(&file, env.path("old-wallet").join(format!("{id}.json"))).unwrap();
    let old_share = device_share(&file);

    let (ok, v, err) = env.tandem("w", &["account", "refresh", "--account", "bob"]).await;
    assert!(ok, "{v} {err}");
    eprintln!(
        "account refresh: refresh {} ms, persist {} ms, confirm {} ms, total {} ms",
        v["refreshMs"], v["persistMs"], v["confirmMs"], v["totalMs"]
    );
    assert_eq!(v["confirmed"], true);
    assert_eq!(v["address"], address.to_string());
    assert_ne!(device_share(&file), old_share, "the wallet holds the new share");
    env.signs("w", "bob", "after the refresh", address).await;

    // The old device share with the enclave's new share: refused.
    let (ok, v, _) = env.tandem("old-wallet", &["sign", "message", "gm"]).await;
    assert!(!ok);
    assert!(error_of(&v).contains("MPC_INVALID_SHARE"), "{v}");
    let (ok, v, _) = env.tandem("old-wallet", &["account", "verify"]).await;
    assert!(!ok);
    assert!(error_of(&v).contains("RECOVERY_FAILED"), "{v}");

    // A refresh whose confirmation was cut off (the device saved the new share, the
    // enclave never saw it used): `tandem account refresh` confirms it, then refreshes.
    let pem = std::fs::read_to_string(&env.served.mock_root).unwrap();
    let client = tandem_sdk::Client::builder(&env.served.url)
        .attestation(tandem_testkit::mock_policy(&pem))
        .build()
        .unwrap();
    let current = tandem_sdk::Account::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let unconfirmed = client.refresh(&current).await.unwrap();
    std::fs::write(&file, unconfirmed.to_json().unwrap().as_bytes()).unwrap();
    let (ok, v, err) = env.tandem("w", &["account", "refresh"]).await;
    assert!(ok, "{v} {err}");
    assert_eq!(v["confirmed"], true);
    assert_eq!(v["address"], address.to_string());
    env.signs("w", "bob", "after the unconfirmed refresh", address).await;

    // A backup made now holds the new share.
    let (ok, _, err) = env
        .tandem(
            "w",
            &[
                "backup",
                "create",
                "--out",
                &env.p("new.backup"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");

    // The backup from before the refresh decrypts but fails the recovery check; nothing
    // is written. The one from after restores.
    std::fs::remove_dir_all(env.path("w")).unwrap();
    let (ok, v, _) = restore(&env, "w", "old.backup", "pass").await;
    assert!(!ok);
    let msg = error_of(&v);
    assert!(
        msg.contains("RECOVERY_FAILED") && msg.contains("nothing was written"),
        "{v}"
    );
    assert!(env.account_files("w").is_empty());
    let (ok, v, err) = restore(&env, "w", "new.backup", "pass").await;
    assert!(ok, "{v} {err}");
    env.signs("w", "bob", "restored after the refresh", address).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_encrypted_unless_asked_and_import_checks_the_share() {
    let env = env().await;
    let (a_id, a_addr) = env.create("w", "a").await;
    let (b_id, _) = env.create("w", "b").await;

    // Default: the backup format.
    let (ok, v, err) = env
        .tandem(
            "w",
            &[
                "account",
                "export",
                "--account",
                "a",
                "--out",
                &env.p("a.export"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(v["encrypted"], true);
    assert_eq!(&std::fs::read(env.path("a.export")).unwrap()[..8], b"TANDEMBK");
    let (ok, v, err) = env
        .tandem(
            "fresh",
            &[
                "account",
                "import",
                "--in",
                &env.p("a.export"),
                "--passphrase-file",
                &env.p("pass"),
            ],
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(v["recovered"], true);
    env.signs("fresh", &a_id, "imported, encrypted", a_addr).await;

    // --unencrypted: plain JSON, and it imports.
    let (ok, v, err) = env
        .tandem(
            "w",
            &[
                "account",
                "export",
                "--account",
                "a",
                "--unencrypted",
                "--out",
                &env.p("a.json"),
            ],
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(v["encrypted"], false);
    let plain: Value = serde_json::from_str(&std::fs::read_to_string(env.path("a.json")).unwrap()).unwrap();
    assert_eq!(plain["accountId"], a_id.as_str());
    let (ok, _, err) = env
        .tandem("fresh2", &["account", "import", "--in", &env.p("a.json")])
        .await;
    assert!(ok, "{err}");
    env.signs("fresh2", &a_id, "imported, plain", a_addr).await;

    // B's share under A's id, with A's device key: it loads, but the enclave's recovery
    // check refuses it, and nothing is written.
    let b_json: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("w").join(format!("{b_id}.json"))).unwrap()).unwrap();
    let mut forged = b_json.clone();
    forged["accountId"] = plain["accountId"].clone();
    forged["authKey"] = plain["authKey"].clone();
    std::fs::write(env.path("forged.json"), forged.to_string()).unwrap();
    let (ok, v, _) = env
        .tandem("fresh3", &["account", "import", "--in", &env.p("forged.json")])
        .await;
    assert!(!ok);
    assert!(error_of(&v).contains("RECOVERY_FAILED"), "{v}");
    assert!(env.account_files("fresh3").is_empty());

    // Passphrases never come from an argument; without a terminal or a file, a clear error.
    let (ok, _, err) = env
        .tandem(
            "w",
            &["account", "export", "--out", &env.p("x"), "--passphrase", PASSPHRASE],
        )
        .await;
    assert!(!ok);
    assert!(err.contains("unexpected argument '--passphrase'"), "{err}");
    if std::fs::File::open("/dev/tty").is_err() {
        let (ok, v, _) = env
            .tandem("w", &["account", "export", "--account", "a", "--out", &env.p("x")])
            .await;
        assert!(!ok);
        assert!(error_of(&v).contains("--passphrase-file"), "{v}");
    }
    // A short passphrase is refused for a new backup.
    std::fs::write(env.path("short"), "abc\n").unwrap();
    let (ok, v, _) = env
        .tandem(
            "w",
            &[
                "account",
                "export",
                "--account",
                "a",
                "--out",
                &env.p("x"),
                "--passphrase-file",
                &env.p("short"),
            ],
        )
        .await;
    assert!(!ok);
    assert!(error_of(&v).contains("at least 8 characters"), "{v}");
    assert!(!env.path("x").exists());
}

/// A stand-in for the Drive v3 subset the SDK uses (the SDK's own tests check every
/// request's shape; this one only has to store and serve).
#[derive(Default)]
struct Drive {
    files: BTreeMap<String, (String, Vec<u8>)>,
    uploads: usize,
}

async fn fake_drive(token: &'static str) -> (String, Arc<Mutex<Drive>>) {
    use axum::body::Bytes;
    use axum::extract::{Path as UrlPath, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, patch, post};

    type S = Arc<Mutex<Drive>>;
    type Q = Query<BTreeMap<String, String>>;
    #[allow(clippy::result_large_err)] // a test server's early-return response
    fn authed(h: &HeaderMap, token: &str) -> Result<(), Response> {
        if h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}")) {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    serde_json::json!({"error": {"code": 401, "message": "Invalid Credentials",
                    "errors": [{"reason": "authError"}]}}),
                ),
            )
                .into_response())
        }
    }
    let state: S = Arc::default();
    let app = axum::Router::new()
        .route(
            "/drive/v3/files",
            get(move |State(s): State<S>, h: HeaderMap, Query(q): Q| async move {
                if let Err(r) = authed(&h, token) {
                    return r;
                }
                let query = q.get("q").cloned().unwrap_or_default();
                let d = s.lock().unwrap();
                let files: Vec<Value> = d
                    .files
                    .iter()
                    .filter(|(_, (name, _))| {
                        query == format!("name='{name}' and trashed=false")
                            || (query.starts_with("name contains 'tandem-backup-'")
                                && name.starts_with("tandem-backup-"))
                    })
                    .map(|(id, (name, _))| serde_json::json!({"id": id, "name": name}))
                    .collect();
                axum::Json(serde_json::json!({ "files": files })).into_response()
            }),
        )
        .route(
            "/drive/v3/files/{id}",
            get(
                move |State(s): State<S>, h: HeaderMap, UrlPath(id): UrlPath<String>| async move {
                    if let Err(r) = authed(&h, token) {
                        return r;
                    }
                    match s.lock().unwrap().files.get(&id) {
                        Some((_, content)) => content.clone().into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/upload/drive/v3/files",
            post(move |State(s): State<S>, h: HeaderMap, body: Bytes| async move {
                if let Err(r) = authed(&h, token) {
                    return r;
                }
                // Metadata part, then content part; the boundary is in the Content-Type.
                let ct = h.get("content-type").unwrap().to_str().unwrap();
                let boundary = ct.strip_prefix("multipart/related; boundary=").unwrap();
                let text = body.to_vec();
                let sep = format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n");
                let at = text.windows(sep.len()).position(|w| w == sep.as_bytes()).unwrap();
                let meta_start = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let meta: Value = serde_json::from_slice(&text[meta_start..at]).unwrap();
                let end = format!("\r\n--{boundary}--\r\n");
                let content = text[at + sep.len()..text.len() - end.len()].to_vec();
                let mut d = s.lock().unwrap();
                d.uploads += 1;
                let id = format!("file{}", d.uploads);
                let name = meta["name"].as_str().unwrap().to_string();
                d.files.insert(id.clone(), (name.clone(), content));
                axum::Json(serde_json::json!({"id": id, "name": name})).into_response()
            }),
        )
        .route(
            "/upload/drive/v3/files/{id}",
            patch(
                move |State(s): State<S>, h: HeaderMap, UrlPath(id): UrlPath<String>, body: Bytes| async move {
                    if let Err(r) = authed(&h, token) {
                        return r;
                    }
                    let mut d = s.lock().unwrap();
                    d.uploads += 1;
                    match d.files.get_mut(&id) {
                        Some((name, content)) => {
                            *content = body.to_vec();
                            axum::Json(serde_json::json!({"id": id, "name": name})).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_drive_push_wipe_pull_sign() {
    let env = env().await;
    let (drive_url, drive) = fake_drive("ya29.cli-test").await;
    std::fs::write(env.path("token"), "ya29.cli-test\n").unwrap();
    let (id, address) = env.create("w", "carol").await;
    let google = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["--drive-url".into(), drive_url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let push = google(&["--token-file", &env.p("token"), "--passphrase-file", &env.p("pass")]);
    let mut args = vec!["backup", "google", "push"];
    args.extend(push.iter().map(String::as_str));
    let (ok, v, err) = env.tandem("w", &args).await;
    assert!(ok, "{err}");
    assert_eq!(v["driveFileName"], format!("tandem-backup-{id}.bin"));
    // Again: the same file is overwritten.
    let (ok, v2, err) = env.tandem("w", &args).await;
    assert!(ok, "{err}");
    assert_eq!(v2["driveFileId"], v["driveFileId"]);
    assert_eq!(drive.lock().unwrap().files.len(), 1);

    // The token from the environment; a wrong one is reported as such.
    let pull_args = google(&["--passphrase-file", &env.p("pass")]);
    let mut args = vec!["backup", "google", "pull"];
    args.extend(pull_args.iter().map(String::as_str));
    let (ok, v, _) = env
        .tandem_env("w2", &args, &[("TANDEM_GOOGLE_TOKEN", "ya29.expired")])
        .await;
    assert!(!ok);
    assert!(error_of(&v).contains("refused the access token"), "{v}");
    assert!(!error_of(&v).contains("ya29"), "the token must not be shown: {v}");
    let (ok, v, _) = env.tandem("w2", &args).await;
    assert!(!ok);
    assert!(error_of(&v).contains("TANDEM_GOOGLE_TOKEN"), "{v}");

    // Wipe, pull (the only backup in Drive), recovery check, sign.
    std::fs::remove_dir_all(env.path("w")).unwrap();
    let (ok, v, err) = env
        .tandem_env("w", &args, &[("TANDEM_GOOGLE_TOKEN", "ya29.cli-test")])
        .await;
    assert!(ok, "{v} {err}");
    assert_eq!(v["recovered"], true);
    assert_eq!(v["accountId"], id.as_str());
    env.signs("w", "carol", "restored from Drive", address).await;
}
