//! Blob stores: where sealed blobs live. They see only ciphertext and are not trusted:
//! whatever they return is authenticated by the [`Sealer`](super::Sealer) before use.
//!
//! Every blob carries a store-side *version* (1 on first write, +1 on each replace), and
//! writes are compare-and-swap on it ([`Expect`]): two writers that both read version 4
//! cannot both write version 5, so neither silently loses the other's update.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use tandem_core::parent::blobs::BlobName;
use tandem_core::parent::blobs::ExpectVersion;
use tandem_io::blob_dir::{BlobDir, BlobDirError, StoredBlob};

use super::KeystoreError;

/// A blob and its store-side version.
#[derive(Clone, PartialEq, Eq)]
pub struct Versioned {
    /// 1 for the first write, +1 for each replace.
    pub version: u64,
    /// The sealed bytes.
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Versioned(v{}, {} bytes)", self.version, self.blob.len())
    }
}

/// The precondition of a write (compare-and-swap).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Expect {
    /// Write whatever is there (only for tools and tests).
    Any,
    /// The blob must not exist yet (creating an account).
    Absent,
    /// The blob must be at exactly this version (read-modify-write).
    Version(u64),
}

impl Expect {
    /// Checks the precondition against the current version (`None`: absent).
    pub fn check(self, current: Option<u64>) -> Result<(), KeystoreError> {
        let ok = match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        };
        if ok {
            Ok(())
        } else {
            Err(KeystoreError::Conflict { current })
        }
    }
}

impl From<Expect> for ExpectVersion {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Any => ExpectVersion::Any,
            Expect::Absent => ExpectVersion::Absent,
            Expect::Version(v) => ExpectVersion::Version(v),
        }
    }
}

impl From<ExpectVersion> for Expect {
    fn from(e: ExpectVersion) -> Self {
        match e {
            ExpectVersion::Any => Expect::Any,
            ExpectVersion::Absent => Expect::Absent,
            ExpectVersion::Version(v) => Expect::Version(v),
        }
    }
}

/// Keeps opaque blobs by name. `put` must be atomic and durable: after a crash a reader
/// sees either the old blob or the new one, never a mix, and an `Ok` means it is on disk.
pub trait BlobStore: Send + Sync + 'static {
    /// The blob named `name`, with its version, if any.
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError>;
    /// Replaces the blob if `expect` holds; returns the new version. A failed
    /// precondition is [`KeystoreError::Conflict`] and changes nothing.
    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError>;
    /// Removes the blob (no error if absent).
    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError>;
    /// All names with a blob, sorted.
    fn list(&self) -> Result<Vec<BlobName>, KeystoreError>;
}

/// One file per blob under a directory (`tandem_io::blob_dir`: atomic, durable,
/// versioned writes; the same format the parent's blob service keeps). One process owns
/// the directory: the enclave in mock mode, the parent's blob service in Nitro mode.
pub struct FileBlobStore {
    dir: BlobDir,
}

impl From<BlobDirError> for KeystoreError {
    fn from(e: BlobDirError) -> Self {
        match e {
            BlobDirError::Conflict { current } => KeystoreError::Conflict { current },
            io @ BlobDirError::Io { .. } => KeystoreError::Io(io.to_string()),
        }
    }
}

impl From<StoredBlob> for Versioned {
    fn from(b: StoredBlob) -> Self {
        Versioned {
            version: b.version,
            blob: b.blob,
        }
    }
}

impl FileBlobStore {
    /// Opens (creating if needed, mode 0700) the blob directory, and removes temp files
    /// left by a crash mid-write.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeystoreError> {
        Ok(FileBlobStore {
            dir: BlobDir::open(dir)?,
        })
    }

    /// The directory holding the blobs.
    pub fn dir(&self) -> &Path {
        self.dir.dir()
    }

    /// The file holding `name` (tests corrupt it on purpose).
    pub fn path(&self, name: &BlobName) -> PathBuf {
        self.dir.path(name)
    }
}

impl BlobStore for FileBlobStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        Ok(self.dir.get(name)?.map(Versioned::from))
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        Ok(self.dir.put(name, blob, expect.into())?)
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        Ok(self.dir.delete(name)?)
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        Ok(self.dir.list()?)
    }
}

/// Blobs in memory: for tests and throwaway demos.
#[derive(Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<BlobName, Versioned>>,
}

impl MemoryBlobStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<BlobName, Versioned>>, KeystoreError> {
        self.blobs
            .lock()
            .map_err(|_| KeystoreError::Io("memory store lock poisoned".into()))
    }
}

impl BlobStore for MemoryBlobStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        Ok(self.lock()?.get(name).cloned())
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        let mut blobs = self.lock()?;
        let current = blobs.get(name).map(|v| v.version);
        expect.check(current)?;
        let version = current.map_or(1, |v| v + 1);
        blobs.insert(
            *name,
            Versioned {
                version,
                blob: blob.to_vec(),
            },
        );
        Ok(version)
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        self.lock()?.remove(name);
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        let mut names: Vec<_> = self.lock()?.keys().copied().collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tandem_core::AccountId;

    fn acct() -> BlobName {
        BlobName::Account(AccountId::random().unwrap())
    }

    fn stores() -> Vec<(tempfile::TempDir, Box<dyn BlobStore>)> {
        let dir = tempfile::tempdir().unwrap();
        let file = FileBlobStore::open(dir.path()).unwrap();
        vec![
            (dir, Box::new(file)),
            (tempfile::tempdir().unwrap(), Box::new(MemoryBlobStore::default())),
        ]
    }

    #[test]
    fn versions_count_up_and_compare_and_swap_refuses_stale_writers() {
        for (_dir, store) in stores() {
            let name = acct();
            assert_eq!(store.get(&name).unwrap(), None);
            assert_eq!(store.put(&name, b"one", Expect::Absent).unwrap(), 1);
            // A second creator of the same name loses, and changes nothing.
            let err = store.put(&name, b"rival", Expect::Absent).unwrap_err();
            assert!(matches!(err, KeystoreError::Conflict { current: Some(1) }), "{err:?}");
            // Two writers read version 1; the first wins, the second is refused.
            assert_eq!(store.put(&name, b"two", Expect::Version(1)).unwrap(), 2);
            let err = store.put(&name, b"lost update", Expect::Version(1)).unwrap_err();
            assert!(matches!(err, KeystoreError::Conflict { current: Some(2) }), "{err:?}");
            let got = store.get(&name).unwrap().unwrap();
            assert_eq!((got.version, &got.blob[..]), (2, &b"two"[..]));
            assert_eq!(store.put(&name, b"three", Expect::Any).unwrap(), 3);
            store.put(&BlobName::KeyRing, b"ring", Expect::Absent).unwrap();
            let mut want = vec![name, BlobName::KeyRing];
            want.sort();
            assert_eq!(store.list().unwrap(), want);
            store.delete(&name).unwrap();
            store.delete(&name).unwrap();
            assert_eq!(store.get(&name).unwrap(), None);
        }
    }

    #[test]
    fn a_failed_rename_leaves_no_temp_file_and_reports_io() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        let name = acct();
        // A non-empty directory where the blob should go: the rename fails, even as root.
        fs::create_dir_all(store.path(&name).join("x")).unwrap();
        let err = store.put(&name, b"data", Expect::Any).unwrap_err();
        assert!(matches!(err, KeystoreError::Io(_)), "{err:?}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
