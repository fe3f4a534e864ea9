//! The device-share lifecycle: `tandem backup …` (encrypted files, Google Drive) and
//! `tandem account export|import`.
//!
//! Restoring always runs the enclave's recovery check before anything is written: a share
//! that decrypts but does not match the account (a stale backup from before a refresh, a
//! file from another device) fails with `RECOVERY_FAILED` and leaves the wallet as it was.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tandem_core::{AccountId, ErrorCode};
use tandem_sdk::backup::{self, BackupContents, BackupHeader, DecryptOptions, KdfParams, MAGIC, Passphrase};
use tandem_sdk::drive::{DriveClient, backup_file_name};
use tandem_sdk::{Account, SdkError};

use crate::conn::{Conn, WalletConfig};
use crate::secrets::{self, GoogleArgs, PassphraseArgs, Purpose};
use crate::wallet::{Wallet, write_private};
use tandem_cli::output::Out;

/// `tandem backup …`
#[derive(Subcommand, Debug)]
pub(crate) enum BackupCmd {
    /// Write an encrypted backup of an account (device share, auth key, the enclave PCRs
    /// this wallet expects) to a file. Argon2id (64 MiB) + XChaCha20-Poly1305.
    Create {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
        /// The backup file to write (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore an account from an encrypted backup: decrypt, prove to the enclave (via
    /// --server) that the share matches the account, and only then write it to the wallet.
    Restore {
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Replace the wallet's file if it already holds this account.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Keep the encrypted backup in Google Drive's app data folder.
    #[command(subcommand)]
    Google(GoogleCmd),
}

/// `tandem backup google …`
#[derive(Subcommand, Debug)]
pub(crate) enum GoogleCmd {
    /// Encrypt an account and upload it (replacing this account's previous backup).
    Push {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        #[command(flatten)]
        google: GoogleArgs,
    },
    /// Download an account's backup and restore it (recovery check, then the wallet).
    Pull {
        /// The account id (32 hex digits); optional when Drive holds a single backup.
        #[arg(long)]
        account: Option<String>,
        /// Replace the wallet's file if it already holds this account.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        #[command(flatten)]
        google: GoogleArgs,
    },
}

/// Runs `tandem backup …`.
pub(crate) async fn run(cmd: BackupCmd, conn: &Conn, out: Out) -> Result<()> {
    match cmd {
        BackupCmd::Create {
            account,
            out: path,
            passphrase,
        } => {
            let wallet = Wallet::open(&conn.wallet)?;
            let account = wallet.find(account.as_deref())?;
            let (file, mut report) = encrypt(conn, &account, &passphrase, out).await?;
            write_private(&path, &file)?;
            report["file"] = json!(path.display().to_string());
            out.result(&report);
        }
        BackupCmd::Restore {
            input,
            force,
            passphrase,
        } => {
            let bytes = read_file(&input)?;
            restore(conn, out, bytes, &passphrase, force, None).await?;
        }
        BackupCmd::Google(GoogleCmd::Push {
            account,
            passphrase,
            google,
        }) => {
            let wallet = Wallet::open(&conn.wallet)?;
            let account = wallet.find(account.as_deref())?;
            let token = secrets::google_token(&google)?;
            let drive = DriveClient::with_base_url(&google.drive_url)?;
            let (file, mut report) = encrypt(conn, &account, &passphrase, out).await?;
            out.progress("  uploading to Google Drive (app data folder)…");
            let started = Instant::now();
            let stored = drive
                .push_backup(&token, account.id(), &file)
                .await
                .context("the upload to Google Drive failed")?;
            report["driveFileId"] = json!(stored.id);
            report["driveFileName"] = json!(stored.name);
            report["modifiedTime"] = json!(stored.modified_time);
            report["uploadSeconds"] = json!(seconds(started));
            out.result(&report);
        }
        BackupCmd::Google(GoogleCmd::Pull {
            account,
            force,
            passphrase,
            google,
        }) => {
            let token = secrets::google_token(&google)?;
            let drive = DriveClient::with_base_url(&google.drive_url)?;
            let id = match account {
                Some(a) => AccountId::parse(&a).with_context(|| format!("--account {a:?} is not an account id"))?,
                None => {
                    let found = drive
                        .list_backups(&token)
                        .await
                        .context("cannot list the backups in Drive")?;
                    let ids: Vec<AccountId> = found
                        .iter()
                        .filter_map(|f| {
                            let id = f.name.strip_prefix("tandem-backup-")?.strip_suffix(".bin")?;
                            AccountId::parse(id).ok()
                        })
                        .collect();
                    match ids.as_slice() {
                        [one] => *one,
                        [] => bail!("this Google account's Drive holds no Tandem backup"),
                        many => bail!(
                            "Drive holds backups of {} accounts; choose one with --account: {}",
                            many.len(),
                            many.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    }
                }
            };
            out.progress(&format!("  downloading {} from Google Drive…", backup_file_name(id)));
            let bytes = drive
                .pull_backup(&token, id)
                .await
                .context("the download from Google Drive failed")?;
            restore(conn, out, bytes, &passphrase, force, Some(id)).await?;
        }
    }
    Ok(())
}

/// `tandem account export`: an encrypted backup file, or with `unencrypted` the plain
/// account JSON (the device share in clear).
pub(crate) async fn export(
    conn: &Conn,
    out: Out,
    account: Option<&str>,
    path: &Path,
    unencrypted: bool,
    passphrase: &PassphraseArgs,
) -> Result<()> {
    let wallet = Wallet::open(&conn.wallet)?;
    let account = wallet.find(account)?;
    if unencrypted {
        let json = account.to_json()?;
        write_private(path, json.as_bytes())?;
        out.progress("  WARNING: this file holds the device share in clear; anyone who reads it and can reach the enclave as this device can sign");
        out.result(&json!({
            "accountId": account.id().to_string(),
            "address": account.address().to_string(),
            "file": path.display().to_string(),
            "encrypted": false,
        }));
        return Ok(());
    }
    let (file, mut report) = encrypt(conn, &account, passphrase, out).await?;
    write_private(path, &file)?;
    report["file"] = json!(path.display().to_string());
    report["encrypted"] = json!(true);
    out.result(&report);
    Ok(())
}

/// `tandem account import`: an encrypted backup or a plain account JSON file, written to
/// the wallet only after the recovery check passed.
pub(crate) async fn import(conn: &Conn, out: Out, path: &Path, force: bool, passphrase: &PassphraseArgs) -> Result<()> {
    let bytes = read_file(path)?;
    if bytes.starts_with(MAGIC) {
        return restore(conn, out, bytes, passphrase, force, None).await;
    }
    let text = zeroize::Zeroizing::new(
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is neither a backup nor JSON", path.display()))?,
    );
    let account = Account::from_json(&text).with_context(|| format!("{} is not an account file", path.display()))?;
    let config = WalletConfig::load(&conn.wallet)?;
    let report = verify_and_store(conn, out, account, &config, force).await?;
    out.result(&report);
    Ok(())
}

/// Encrypts `account` with the wallet's accepted images, showing progress while Argon2id
/// runs.
async fn encrypt(conn: &Conn, account: &Account, passphrase: &PassphraseArgs, out: Out) -> Result<(Vec<u8>, Value)> {
    let pass = secrets::passphrase(passphrase, Purpose::NewBackup)?;
    let images = WalletConfig::load(&conn.wallet)?.images()?;
    let image_count = images.len();
    let contents = BackupContents::new(account.clone()).with_accepted_images(&images);
    let kdf = KdfParams::DEFAULT;
    out.progress(&format!(
        "  deriving the backup key (Argon2id, {} MiB, {} passes)…",
        kdf.m_cost_kib / 1024,
        kdf.t_cost
    ));
    let started = Instant::now();
    let file = tokio::task::spawn_blocking(move || backup::encrypt(&contents, &pass))
        .await
        .context("the encryption task failed")??;
    let secs = seconds(started);
    out.progress(&format!("  encrypted in {secs:.2}s"));
    let report = json!({
        "accountId": account.id().to_string(),
        "address": account.address().to_string(),
        "bytes": file.len(),
        "kdf": format!("argon2id m={}KiB t={} p={}", kdf.m_cost_kib, kdf.t_cost, kdf.p_cost),
        "acceptedImages": image_count,
        "encryptSeconds": secs,
    });
    Ok((file, report))
}

/// Decrypts `bytes`, runs the recovery check, and only then writes the account (and the
/// backup's accepted images, if the wallet accepts none) to the wallet.
async fn restore(
    conn: &Conn,
    out: Out,
    bytes: Vec<u8>,
    passphrase: &PassphraseArgs,
    force: bool,
    expect: Option<AccountId>,
) -> Result<()> {
    let header = BackupHeader::parse(&bytes).context("cannot read the backup")?;
    let wallet = Wallet::open(&conn.wallet)?;
    if wallet.contains(header.account_id) && !force {
        bail!(
            "the wallet already holds account {} ({}); pass --force to replace its file",
            header.account_id,
            wallet.path_of(header.account_id).display()
        );
    }
    out.progress(&format!(
        "  backup of account {} (public key {})",
        header.account_id, header.public_key
    ));
    let pass: Passphrase = secrets::passphrase(passphrase, Purpose::OpenBackup)?;
    out.progress(&format!(
        "  deriving the backup key (Argon2id, {} MiB, {} passes)…",
        header.kdf.m_cost_kib / 1024,
        header.kdf.t_cost
    ));
    let started = Instant::now();
    let mut opts = DecryptOptions::new();
    if let Some(id) = expect {
        opts = opts.expect_account(id);
    }
    let contents = tokio::task::spawn_blocking(move || backup::decrypt_with(&bytes, &pass, &opts))
        .await
        .context("the decryption task failed")?
        .context("cannot decrypt the backup")?;
    let decrypt_secs = seconds(started);
    out.progress(&format!("  decrypted in {decrypt_secs:.2}s"));

    // A wallet that accepts no image adopts the backup's (the user's own, encrypted), so
    // the restored device trusts the same enclave images as before; a wallet with its own
    // keeps them.
    let mut config = WalletConfig::load(&conn.wallet)?;
    let adopt = config.accepted_images.is_empty() && !contents.images().is_empty();
    if adopt {
        for image in contents.images() {
            config.add(&image);
        }
    }
    let mut report = verify_and_store(conn, out, contents.account, &config, force).await?;
    if adopt {
        config.save(&conn.wallet)?;
    }
    report["decryptSeconds"] = json!(decrypt_secs);
    report["imagesAdopted"] = json!(adopt);
    report["backupCreatedAt"] = json!(contents.created_at);
    out.result(&report);
    Ok(())
}

/// The recovery check, then the wallet write. Nothing is written if the check fails.
async fn verify_and_store(
    conn: &Conn,
    out: Out,
    account: Account,
    config: &WalletConfig,
    force: bool,
) -> Result<Value> {
    let wallet = Wallet::open(&conn.wallet)?;
    if wallet.contains(account.id()) && !force {
        bail!(
            "the wallet already holds account {}; pass --force to replace its file",
            account.id()
        );
    }
    out.progress("  recovery check: proving to the enclave that the share matches the account…");
    let started = Instant::now();
    conn.client_for(config)?
        .recover(&account)
        .await
        .map_err(recovery_error)?;
    let recover_ms = started.elapsed().as_millis() as u64;
    let path = wallet.save(&account)?;
    Ok(json!({
        "accountId": account.id().to_string(),
        "address": account.address().to_string(),
        "label": account.label(),
        "file": path.display().to_string(),
        "recovered": true,
        "recoverMs": recover_ms,
    }))
}

/// Explains a failed recovery check; the wallet was not touched.
pub(crate) fn recovery_error(e: SdkError) -> anyhow::Error {
    let hint = match e.code() {
        Some(ErrorCode::RecoveryFailed) => {
            "RECOVERY_FAILED: the enclave does not accept this share for the account (a backup from before a refresh, or another device's); nothing was written"
        }
        Some(ErrorCode::Unauthorized) => {
            "the enclave does not recognise this device key for the account; nothing was written"
        }
        _ => "the recovery check did not complete; nothing was written",
    };
    anyhow::Error::new(e).context(hint)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > backup::MAX_BACKUP_LEN as u64 {
        bail!("{} is too large to be a backup or an account file", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn seconds(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 100.0).round() / 100.0
}
