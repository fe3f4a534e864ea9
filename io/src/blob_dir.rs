//! A directory of sealed blobs: one file per [`BlobName`], versioned, written with
//! compare-and-swap.
//!
//! Two processes keep blobs this way: the enclave in mock mode (its `file` store, under
//! its data directory) and the parent's blob service in Nitro mode (for an enclave that has
//! no disk). Both must read what the other wrote (a directory can move from one to the
//! other), so the format is here, once:
//!
//! * `<dir>/<account id>.blob` and `<dir>/keyring.blob`, each `TBV1 ‖ u64 BE version ‖
//!   sealed bytes`; a file without the magic predates versions and reads as version 0;
//! * every write is atomic and durable ([`crate::fs::write_atomically`]), so a crash never
//!   leaves a half-written blob, and temporary files left by a crash are removed at open;
//! * writes are compare-and-swap on the version ([`ExpectVersion`]) and serialized in this
//!   process; one process owns a directory.
//!
//! The blobs are ciphertext, sealed in the enclave; this store is not trusted with them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tandem_core::parent::blobs::{BlobName, ExpectVersion};

/// A blob and its store-side version.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// 1 for the first write, +1 for each replace (0: a file from before versions).
    pub version: u64,
    /// The sealed bytes.
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for StoredBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredBlob(v{}, {} bytes)", self.version, self.blob.len())
    }
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobDirError {
    /// The file system failed (names the operation, e.g. `rename blob into place`).
    #[error("{what}: {kind}")]
    Io {
        /// The operation.
        what: &'static str,
        /// How it failed.
        kind: io::ErrorKind,
    },
    /// The compare-and-swap found another version (`None`: absent); nothing was written.
    #[error("the stored version changed to {current:?}")]
    Conflict {
        /// The version stored now.
        current: Option<u64>,
    },
}

fn io_error(what: &'static str) -> impl Fn(io::Error) -> BlobDirError {
    move |e| BlobDirError::Io { what, kind: e.kind() }
}

/// On-disk framing of one blob file.
const FILE_MAGIC: &[u8; 4] = b"TBV1";

fn encode_file(version: u64, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + blob.len());
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(blob);
    out
}

fn decode_file(bytes: Vec<u8>) -> StoredBlob {
    match bytes.strip_prefix(FILE_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&rest[..8]);
            StoredBlob {
                version: u64::from_be_bytes(v),
                blob: rest[8..].to_vec(),
            }
        }
        // Legacy or damaged framing: hand the bytes on; the enclave's sealer decides.
        _ => StoredBlob {
            version: 0,
            blob: bytes,
        },
    }
}

/// Checks a compare-and-swap precondition against the stored version (`None`: absent).
pub fn check_expect(expect: ExpectVersion, current: Option<u64>) -> Result<(), BlobDirError> {
    let ok = match expect {
        ExpectVersion::Any => true,
        ExpectVersion::Absent => current.is_none(),
        ExpectVersion::Version(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(BlobDirError::Conflict { current })
    }
}

/// A blob directory (see the module docs).
#[derive(Debug)]
pub struct BlobDir {
    dir: PathBuf,
    write: Mutex<()>,
}

impl BlobDir {
    /// Opens the directory, creating it (mode 0700) if needed, and removes the temporary
    /// files a crash mid-write left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlobDirError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error("create blob directory"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_error("chmod blob directory"))?;
        }
        for entry in fs::read_dir(&dir).map_err(io_error("list blob directory"))? {
            let entry = entry.map_err(io_error("list blob directory"))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(BlobDir {
            dir,
            write: Mutex::new(()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `name` (tests damage it on purpose).
    pub fn path(&self, name: &BlobName) -> PathBuf {
        self.dir.join(name.file_name())
    }

    /// The blob named `name`, with its version, if any.
    pub fn get(&self, name: &BlobName) -> Result<Option<StoredBlob>, BlobDirError> {
        match fs::read(self.path(name)) {
            Ok(b) => Ok(Some(decode_file(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read blob")(e)),
        }
    }

    /// Replaces the blob if `expect` holds; returns the new version.
    pub fn put(&self, name: &BlobName, blob: &[u8], expect: ExpectVersion) -> Result<u64, BlobDirError> {
        let _guard = self.lock()?;
        let current = self.get(name)?.map(|v| v.version);
        check_expect(expect, current)?;
        let version = current.map_or(1, |v| v + 1);
        crate::fs::write_atomically(&self.path(name), &encode_file(version, blob), 0o600)
            .map_err(io_error("write blob"))?;
        Ok(version)
    }

    /// Removes the blob (no error if absent).
    pub fn delete(&self, name: &BlobName) -> Result<(), BlobDirError> {
        let _guard = self.lock()?;
        match fs::remove_file(self.path(name)) {
            Ok(()) => crate::fs::fsync_dir(&self.dir).map_err(io_error("fsync blob directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete blob")(e)),
        }
    }

    /// Every name with a blob, sorted.
    pub fn list(&self) -> Result<Vec<BlobName>, BlobDirError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("list blob directory"))? {
            let entry = entry.map_err(io_error("list blob directory"))?;
            if let Some(name) = BlobName::from_file_name(&entry.file_name().to_string_lossy()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, BlobDirError> {
        self.write.lock().map_err(|_| BlobDirError::Io {
            what: "blob directory lock poisoned",
            kind: io::ErrorKind::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::AccountId;

    fn acct() -> BlobName {
        BlobName::Account(AccountId::random().unwrap())
    }

    #[test]
    fn versions_count_up_and_compare_and_swap_refuses_stale_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobDir::open(dir.path()).unwrap();
        let name = acct();
        assert_eq!(store.get(&name).unwrap(), None);
        assert_eq!(store.put(&name, b"one", ExpectVersion::Absent).unwrap(), 1);
        let err = store.put(&name, b"rival", ExpectVersion::Absent).unwrap_err();
        assert!(matches!(err, BlobDirError::Conflict { current: Some(1) }), "{err:?}");
        assert_eq!(store.put(&name, b"two", ExpectVersion::Version(1)).unwrap(), 2);
        let got = store.get(&name).unwrap().unwrap();
        assert_eq!((got.version, &got.blob[..]), (2, &b"two"[..]));
        assert_eq!(store.list().unwrap(), vec![name]);
        store.delete(&name).unwrap();
        store.delete(&name).unwrap();
        assert_eq!(store.list().unwrap(), vec![]);
    }

    #[test]
    fn crash_leftovers_are_cleaned_and_legacy_files_read_as_version_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobDir::open(dir.path()).unwrap();
        let name = acct();
        store.put(&name, b"one", ExpectVersion::Absent).unwrap();
        fs::write(dir.path().join(format!(".{}.00.tmp", name.file_name())), b"half").unwrap();
        let store = BlobDir::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap(), vec![name]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(store.path(&name), b"TDB legacy").unwrap();
        let got = store.get(&name).unwrap().unwrap();
        assert_eq!((got.version, &got.blob[..]), (0, &b"TDB legacy"[..]));
        assert_eq!(store.put(&name, b"new", ExpectVersion::Version(0)).unwrap(), 1);
        // The on-disk layout is a contract between the enclave's store and the parent's.
        let raw = fs::read(store.path(&name)).unwrap();
        assert_eq!(&raw[..12], b"TBV1\0\0\0\0\0\0\0\x01");
        assert_eq!(&raw[12..], b"new");
    }
}
