//! Reading passphrases and OAuth tokens: from the terminal without echo, or from a file
//! for scripts. Never from a command-line argument (visible in `ps` and shell history) and
//! never printed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use tandem_sdk::backup::{Passphrase, check_passphrase};
use tandem_sdk::drive::{GOOGLE_APIS, OAuthToken};
use zeroize::Zeroizing;

/// Where the backup passphrase comes from.
#[derive(Args, Debug, Clone)]
pub(crate) struct PassphraseArgs {
    /// Read the passphrase from this file (its first line) instead of asking on the
    /// terminal. For scripts; keep the file private.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// Google Drive access.
#[derive(Args, Debug, Clone)]
pub(crate) struct GoogleArgs {
    /// A file holding an OAuth access token with the drive.appdata scope (default: the
    /// TANDEM_GOOGLE_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The Drive API's base URL (for tests against a local server).
    #[arg(long, default_value = GOOGLE_APIS, value_name = "URL")]
    pub(crate) drive_url: String,
}

/// What the user is asked for, and how.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A new backup: asked twice, and refused if too short.
    NewBackup,
    /// Opening an existing backup: asked once.
    OpenBackup,
}

/// Reads the passphrase from `--passphrase-file`, or from the terminal without echo.
pub(crate) fn passphrase(args: &PassphraseArgs, purpose: Purpose) -> Result<Passphrase> {
    let pass = match &args.passphrase_file {
        Some(path) => Passphrase::new(first_line(path, "--passphrase-file")?.to_string()),
        None => {
            let first = prompt(match purpose {
                Purpose::NewBackup => "New backup passphrase: ",
                Purpose::OpenBackup => "Backup passphrase: ",
            })?;
            // Checked before asking again (a weak one would be refused anyway), then asked
            // twice for a new backup: a typo would make it unreadable.
            if purpose == Purpose::NewBackup {
                check_passphrase(&first)?;
                if prompt("Repeat the passphrase: ")? != first {
                    bail!("the two passphrases differ; nothing was written");
                }
            }
            first
        }
    };
    if purpose == Purpose::NewBackup {
        // The SDK's rule, the same wherever a backup is made.
        check_passphrase(&pass)?;
    }
    Ok(pass)
}

fn prompt(text: &str) -> Result<Passphrase> {
    let entered = rpassword::prompt_password(text)
        .context("cannot read a passphrase from the terminal (no TTY?): pass --passphrase-file FILE instead")?;
    Ok(Passphrase::new(entered))
}

/// Reads the Google token from `--token-file`, else from `TANDEM_GOOGLE_TOKEN`.
pub(crate) fn google_token(args: &GoogleArgs) -> Result<OAuthToken> {
    let raw = match &args.token_file {
        Some(path) => first_line(path, "--token-file")?,
        None => match std::env::var("TANDEM_GOOGLE_TOKEN") {
            Ok(t) => Zeroizing::new(t),
            Err(_) => bail!(
                "no Google token: pass --token-file FILE or set TANDEM_GOOGLE_TOKEN (an OAuth access token with the drive.appdata scope)"
            ),
        },
    };
    OAuthToken::new(raw.to_string()).context("the Google token")
}

/// The first line of a secret file, without its line ending; refuses an empty one.
fn first_line(path: &Path, flag: &str) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {flag} {}", path.display()))?,
    );
    let line = text.split(['\n', '\r']).next().unwrap_or_default();
    if line.is_empty() {
        bail!("{flag} {} is empty", path.display());
    }
    Ok(Zeroizing::new(line.to_string()))
}
