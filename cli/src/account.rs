//! `tandem account …`: create, list, show, export, import, refresh, verify.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use tandem_core::ErrorCode;
use tandem_core::engine::RefreshKind;

use crate::backup::recovery_error;
use crate::conn::Conn;
use crate::wallet::Wallet;
use tandem_cli::output::Out;

/// `tandem account …`
#[derive(Subcommand, Debug)]
pub(crate) enum AccountCmd {
    /// Create an account: runs distributed key generation with the enclave (a few
    /// seconds) and stores this device's share in the wallet.
    Create {
        /// A name to find the account by later.
        #[arg(long)]
        label: Option<String>,
    },
    /// List the accounts in the wallet.
    List,
    /// Show one account and its state; unless --offline, run the recovery check (the
    /// enclave's sealed answer confirms it holds the account and accepts this share).
    Show {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
        /// Do not contact the server.
        #[arg(long)]
        offline: bool,
    },
    /// Export an account to a file: encrypted under a passphrase (the backup format) unless
    /// --unencrypted is given.
    Export {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
        /// The file to write (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// DANGER: write the device share in clear (plain account JSON).
        #[arg(long)]
        unencrypted: bool,
        #[command(flatten)]
        passphrase: crate::secrets::PassphraseArgs,
    },
    /// Import an account file (encrypted or plain JSON); it is written to the wallet only
    /// after the enclave's recovery check accepts its share.
    Import {
        /// The file to import.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Replace the wallet's file if it already holds this account.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: crate::secrets::PassphraseArgs,
    },
    /// Refresh an account's key shares (same key and address, new shares on both sides):
    /// the new device share is saved, then confirmed to the enclave. Older backups stop
    /// working once it is confirmed.
    Refresh {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
        /// A complete refresh: the OT setup is redone from scratch (about as slow as
        /// creating the account). The only refresh a locked account accepts.
        #[arg(long)]
        complete: bool,
    },
    /// Run the recovery check: the enclave confirms this wallet's share matches the account
    /// (and a refreshed share is confirmed).
    Verify {
        /// Account id, address or label (optional when the wallet has one account).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Runs `tandem account …`.
pub(crate) async fn run(cmd: AccountCmd, conn: &Conn, out: Out) -> Result<()> {
    let wallet_dir = conn.wallet.as_path();
    let wallet = Wallet::open(wallet_dir)?;
    match cmd {
        AccountCmd::Create { label } => {
            if let Some(l) = &label
                && wallet.list()?.iter().any(|a| a.label() == Some(l.as_str()))
            {
                bail!("an account labelled {l:?} already exists in this wallet");
            }
            let client = conn.client()?;
            let started = Instant::now();
            let account = client
                .create_account_with_progress(label.as_deref(), |step, what| {
                    out.progress(&format!(
                        "  [{step}/4] {what} ({:.1}s)",
                        started.elapsed().as_secs_f64()
                    ));
                })
                .await
                .context("account creation failed")?;
            let path = wallet.save(&account)?;
            out.result(&json!({
                "accountId": account.id().to_string(),
                "address": account.address().to_string(),
                "publicKey": account.public_key().to_hex(),
                "label": account.label(),
                "file": path.display().to_string(),
                "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            }));
        }
        AccountCmd::List => {
            let accounts = wallet.list()?;
            if out.json {
                let list: Vec<_> = accounts
                    .iter()
                    .map(|a| json!({"accountId": a.id().to_string(), "address": a.address().to_string(), "label": a.label()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if accounts.is_empty() {
                println!(
                    "no accounts in {} (create one with `tandem account create`)",
                    wallet_dir.display()
                );
            } else {
                for a in accounts {
                    println!("{}  {}  {}", a.id(), a.address(), a.label().unwrap_or("-"));
                }
            }
        }
        AccountCmd::Show { account, offline } => {
            let account = wallet.find(account.as_deref())?;
            let mut v = json!({
                "accountId": account.id().to_string(),
                "address": account.address().to_string(),
                "publicKey": account.public_key().to_hex(),
                "label": account.label(),
                "generation": account.generation(),
                "locked": account.enclave_misbehaved(),
            });
            if !offline {
                // The authenticated check: a sealed answer only the enclave holding this
                // account can make (the plain getPublicKey could be answered by the host).
                let checked = conn.client()?.recover(&account).await;
                wallet.save(&account)?;
                v["generation"] = json!(account.generation());
                if let Err(e) = checked {
                    return Err(anyhow::Error::new(e).context("the enclave did not confirm this account's share"));
                }
                v["enclaveConfirms"] = json!(true);
            }
            out.result(&v);
        }
        AccountCmd::Export {
            account,
            out: path,
            unencrypted,
            passphrase,
        } => crate::backup::export(conn, out, account.as_deref(), &path, unencrypted, &passphrase).await?,
        AccountCmd::Import {
            input,
            force,
            passphrase,
        } => crate::backup::import(conn, out, &input, force, &passphrase).await?,
        AccountCmd::Refresh { account, complete } => refresh(conn, out, account.as_deref(), complete).await?,
        AccountCmd::Verify { account } => verify(conn, out, account.as_deref()).await?,
    }
    Ok(())
}

/// `tandem account refresh`: new shares for the same key, the new device share persisted
/// atomically, then confirmed to the enclave.
pub(crate) async fn refresh(conn: &Conn, out: Out, selector: Option<&str>, complete: bool) -> Result<()> {
    let wallet = Wallet::open(&conn.wallet)?;
    let old = wallet.find(selector)?;
    let client = conn.client()?;
    let kind = if complete {
        RefreshKind::Complete
    } else {
        RefreshKind::Fast
    };
    let started = Instant::now();
    let progress = |stage: u8, what: &'static str| {
        out.progress(&format!(
            "  [{stage}/3] {what} ({:.2}s)",
            started.elapsed().as_secs_f64()
        ));
    };
    let new = match client.refresh_with_progress(&old, kind, progress).await {
        // The wallet holds the share of an earlier refresh the enclave has not seen used
        // yet (its confirmation was cut off): confirm it, then refresh.
        Err(e) if e.code() == Some(ErrorCode::MpcInvalidShare) => {
            out.progress("  an earlier refresh is unconfirmed: confirming it first (recovery check)…");
            client.recover(&old).await.map_err(recovery_error)?;
            client.refresh_with_progress(&old, kind, progress).await
        }
        other => other,
    };
    // What the attempt learnt (a newer generation) is kept, whatever the outcome.
    wallet.save(&old)?;
    let new =
        new.context("the refresh failed; the account keeps its current shares (nothing changed in the wallet)")?;
    let refresh_ms = started.elapsed().as_millis() as u64;
    if new.address() != old.address() || new.public_key() != old.public_key() {
        bail!("the refresh produced another key; the wallet keeps the old share");
    }
    // The enclave's sealed done message confirmed it stored the new share (pending): only
    // now is the wallet's share replaced. Persist before confirming: until the enclave
    // sees the new share used, it keeps the old one, so a crash here loses nothing. The old
    // file stays in place until the new one is complete on disk.
    let t = Instant::now();
    wallet
        .save(&new)
        .context("cannot write the new share; the enclave still accepts the old one, which the wallet keeps")?;
    let persist_ms = t.elapsed().as_millis() as u64;
    out.progress("  confirming the new share with the enclave (recovery check)…");
    let t = Instant::now();
    let confirmed = client.recover(&new).await;
    let confirm_ms = t.elapsed().as_millis() as u64;
    let mut report = json!({
        "accountId": new.id().to_string(),
        "address": new.address().to_string(),
        "refreshMs": refresh_ms,
        "persistMs": persist_ms,
        "confirmMs": confirm_ms,
        "totalMs": started.elapsed().as_millis() as u64,
        "confirmed": confirmed.is_ok(),
        "kind": if complete { "complete" } else { "fast" },
    });
    wallet.save(&new)?;
    if let Err(e) = confirmed {
        out.result(&report);
        return Err(anyhow::Error::new(e).context(
            "the new share is saved but not confirmed yet; the next `tandem sign …` or `tandem account verify` confirms it",
        ));
    }
    report["note"] =
        json!("backups made before this refresh no longer work: make a new one (tandem backup create / google push)");
    out.result(&report);
    Ok(())
}

/// `tandem account verify`: the recovery check for an account already in the wallet (also
/// confirms a refreshed share).
pub(crate) async fn verify(conn: &Conn, out: Out, selector: Option<&str>) -> Result<()> {
    let wallet = Wallet::open(&conn.wallet)?;
    let account = wallet.find(selector)?;
    let started = Instant::now();
    conn.client()?.recover(&account).await.map_err(recovery_error)?;
    out.result(&json!({
        "accountId": account.id().to_string(),
        "address": account.address().to_string(),
        "verified": true,
        "ms": started.elapsed().as_millis() as u64,
    }));
    Ok(())
}
