//! The CLI's wallet: one JSON file per account (device share included) in a directory.
//!
//! Files are written atomically (temp file, fsync, rename) with mode 0600 inside a 0700
//! directory, because they hold the device's key share. Encrypted backups of them are
//! `tandem backup …` (see `backup.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tandem_sdk::Account;

/// A directory of account files.
pub(crate) struct Wallet {
    dir: PathBuf,
}

impl Wallet {
    /// Opens (creating, mode 0700) the wallet directory.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create the wallet directory {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
        }
        Ok(Wallet { dir: dir.to_path_buf() })
    }

    /// Stores `account` (replacing an earlier file of the same id). Atomic: until the new
    /// file is complete and on disk, the old one stays in place untouched, so a crash
    /// mid-write (e.g. during a refresh) leaves the previous share, never half of one.
    pub(crate) fn save(&self, account: &Account) -> Result<PathBuf> {
        let json = account.to_json()?;
        let path = self.path_of(account.id());
        write_private(&path, json.as_bytes())?;
        Ok(path)
    }

    /// Where the account `id`'s file lives (whether or not it exists).
    pub(crate) fn path_of(&self, id: tandem_core::AccountId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Whether the wallet has a file for account `id`.
    pub(crate) fn contains(&self, id: tandem_core::AccountId) -> bool {
        self.path_of(id).exists()
    }

    /// All accounts, sorted by label then id.
    pub(crate) fn list(&self) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))? {
            let path = entry?.path();
            // Account files are `<account id>.json`; anything else (config.json, a
            // temporary file) is not an account.
            let is_account = path.extension().and_then(|e| e.to_str()) == Some("json")
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| tandem_core::AccountId::parse(s).is_ok());
            if !is_account {
                continue;
            }
            let text = zeroize::Zeroizing::new(
                fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
            );
            out.push(
                Account::from_json(&text).with_context(|| format!("{} is not a valid account file", path.display()))?,
            );
        }
        out.sort_by(|a, b| (a.label(), a.id()).cmp(&(b.label(), b.id())));
        Ok(out)
    }

    /// Finds one account by id, address (any case) or label. With no selector, the only
    /// account in the wallet.
    pub(crate) fn find(&self, selector: Option<&str>) -> Result<Account> {
        let accounts = self.list()?;
        let Some(sel) = selector else {
            return match accounts.len() {
                1 => Ok(accounts.into_iter().next().ok_or_else(|| anyhow!("wallet is empty"))?),
                0 => bail!(
                    "the wallet at {} has no accounts; create one with `tandem account create`",
                    self.dir.display()
                ),
                n => bail!("the wallet has {n} accounts; choose one with --account ID|ADDRESS|LABEL"),
            };
        };
        let want = sel.to_ascii_lowercase();
        let mut hits: Vec<Account> = accounts
            .into_iter()
            .filter(|a| {
                a.id().to_string() == want
                    || a.address().to_string().to_ascii_lowercase() == want
                    || a.label().is_some_and(|l| l == sel)
            })
            .collect();
        match hits.len() {
            1 => Ok(hits.remove(0)),
            0 => bail!(
                "no account matches {sel:?} in {} (see `tandem account list`)",
                self.dir.display()
            ),
            n => bail!("{n} accounts match {sel:?}; use the account id instead"),
        }
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file beside it, fsync,
/// rename over the target, fsync of the directory. Readers see the old content or the new,
/// never a mix, and the new content is durable once this returns.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    tandem_io::fs::write_atomically(path, bytes, 0o600).with_context(|| format!("cannot write {}", path.display()))
}
