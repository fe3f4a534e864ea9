//! The CLI's wallet: one JSON file per account (device share included) in a directory.
//!
//! Files are written atomically (temp file, fsync, rename) with mode 0600 inside a 0700
//! directory, because they hold the device's key share. Encrypted backups are a later
//! feature (the device-share lifecycle issue).

use std::fs::{self, OpenOptions};
use std::io::Write;
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

    /// Stores `account` (replacing an earlier file of the same id).
    pub(crate) fn save(&self, account: &Account) -> Result<PathBuf> {
        let json = account.to_json()?;
        let path = self.dir.join(format!("{}.json", account.id()));
        let tmp = self.dir.join(format!(".{}.json.tmp", account.id()));
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path).with_context(|| format!("cannot move the account file into {}", path.display()))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).ok();
        Ok(path)
    }

    /// All accounts, sorted by label then id.
    pub(crate) fn list(&self) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
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
