//! Blob stores: where sealed blobs live. They see only ciphertext and are not trusted:
//! whatever they return is authenticated by the [`Sealer`](super::Sealer) before use.
//!
//! Every blob carries a store-side *version* (1 on first write, +1 on each replace), and
//! writes are compare-and-swap on it ([`Expect`]): two writers that both read version 4
//! cannot both write version 5, so neither silently loses the other's update.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tandem_core::AccountId;

use super::KeystoreError;

/// What a blob is, and so where it lives. Names are closed (no free-form paths), so a
/// store can never be asked to touch a file outside its directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum BlobName {
    /// The sealed record of one account.
    Account(AccountId),
    /// The wrapped data keys (the key ring), stored beside the blobs they open.
    KeyRing,
}

impl BlobName {
    /// The name as text: `account/<32 hex>` or `keyring` (the parent service's wire form).
    pub fn as_text(&self) -> String {
        match self {
            BlobName::Account(id) => format!("account/{id}"),
            BlobName::KeyRing => "keyring".into(),
        }
    }

    /// Parses [`as_text`](Self::as_text); anything else is refused.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "keyring" {
            return Some(BlobName::KeyRing);
        }
        s.strip_prefix("account/")
            .and_then(|h| AccountId::parse(h).ok())
            .map(BlobName::Account)
    }

    fn file_name(&self) -> String {
        match self {
            // AccountId is 32 hex digits by construction: it cannot name another directory.
            BlobName::Account(id) => format!("{id}.blob"),
            BlobName::KeyRing => "keyring.blob".into(),
        }
    }

    fn from_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".blob")?;
        if stem == "keyring" {
            return Some(BlobName::KeyRing);
        }
        AccountId::parse(stem).ok().map(BlobName::Account)
    }
}

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

/// On-disk framing of one blob file: magic, version, sealed bytes. A file without the
/// magic is a blob written before versions existed: version 0.
const FILE_MAGIC: &[u8; 4] = b"TBV1";

fn encode_file(version: u64, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + blob.len());
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(blob);
    out
}

fn decode_file(bytes: Vec<u8>) -> Versioned {
    match bytes.strip_prefix(FILE_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&rest[..8]);
            Versioned {
                version: u64::from_be_bytes(v),
                blob: rest[8..].to_vec(),
            }
        }
        // Legacy or damaged framing: hand the bytes on; the sealer decides.
        _ => Versioned {
            version: 0,
            blob: bytes,
        },
    }
}

/// One file per blob, `<dir>/<account id>.blob` (and `keyring.blob`), written as temp
/// file → fsync → rename → fsync of the directory, so a crash never leaves a half-written
/// blob. Writes are serialized in-process; one process owns the directory (the enclave
/// in mock mode, the parent's blob service in Nitro mode).
pub struct FileBlobStore {
    dir: PathBuf,
    write: Mutex<()>,
}

fn io(what: &str, e: std::io::Error) -> KeystoreError {
    KeystoreError::Io(format!("{what}: {}", e.kind()))
}

impl FileBlobStore {
    /// Opens (creating if needed, mode 0700) the blob directory, and removes temp files
    /// left by a crash mid-write.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeystoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("create blob directory", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod blob directory", e))?;
        }
        for entry in fs::read_dir(&dir).map_err(|e| io("list blob directory", e))? {
            let entry = entry.map_err(|e| io("list blob directory", e))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(FileBlobStore {
            dir,
            write: Mutex::new(()),
        })
    }

    /// The directory holding the blobs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `name` (tests corrupt it on purpose).
    pub fn path(&self, name: &BlobName) -> PathBuf {
        self.dir.join(name.file_name())
    }

    fn read(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        match fs::read(self.path(name)) {
            Ok(b) => Ok(Some(decode_file(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read blob", e)),
        }
    }

    fn write_atomically(&self, name: &BlobName, bytes: &[u8]) -> Result<(), KeystoreError> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", name.file_name(), hex::encode(suffix)));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io("create temp blob", e))?;
            f.write_all(bytes).map_err(|e| io("write temp blob", e))?;
            f.sync_all().map_err(|e| io("fsync temp blob", e))?;
            drop(f);
            fs::rename(&tmp, self.path(name)).map_err(|e| io("rename blob into place", e))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, KeystoreError> {
        self.write
            .lock()
            .map_err(|_| KeystoreError::Io("blob store lock poisoned".into()))
    }
}

fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync blob directory", e))
}

impl BlobStore for FileBlobStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        self.read(name)
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        let _guard = self.lock()?;
        let current = self.read(name)?.map(|v| v.version);
        expect.check(current)?;
        let version = current.map_or(1, |v| v + 1);
        self.write_atomically(name, &encode_file(version, blob))?;
        Ok(version)
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        let _guard = self.lock()?;
        match fs::remove_file(self.path(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete blob", e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io("list blob directory", e))? {
            let entry = entry.map_err(|e| io("list blob directory", e))?;
            if let Some(name) = BlobName::from_file_name(&entry.file_name().to_string_lossy()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
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
    fn names_round_trip_and_refuse_paths() {
        let name = acct();
        assert_eq!(BlobName::parse(&name.as_text()), Some(name));
        assert_eq!(BlobName::parse("keyring"), Some(BlobName::KeyRing));
        for bad in ["", "account/", "account/../../etc/passwd", "keyring/x", "account/ABC"] {
            assert_eq!(BlobName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_store_cleans_crash_leftovers_and_reads_legacy_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        let name = acct();
        store.put(&name, b"one", Expect::Absent).unwrap();
        // A temp file left by a crash is not a blob and is cleaned at open.
        fs::write(dir.path().join(format!(".{}.00.tmp", name.file_name())), b"half").unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap(), vec![name]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A file from before versions existed reads as version 0 and can be replaced.
        fs::write(store.path(&name), b"TDB legacy").unwrap();
        let got = store.get(&name).unwrap().unwrap();
        assert_eq!((got.version, &got.blob[..]), (0, &b"TDB legacy"[..]));
        assert_eq!(store.put(&name, b"new", Expect::Version(0)).unwrap(), 1);
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
