//! Blob stores: where sealed blobs live. They see only ciphertext.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tandem_core::AccountId;

use super::KeystoreError;

/// Keeps opaque blobs by account id. Implementations must make `put` atomic: after a
/// crash a reader sees either the old blob or the new one, never a mix.
pub trait BlobStore: Send + Sync + 'static {
    /// The blob of `id`, if any.
    fn get(&self, id: &AccountId) -> Result<Option<Vec<u8>>, KeystoreError>;
    /// Replaces the blob of `id` atomically and durably.
    fn put(&self, id: &AccountId, blob: &[u8]) -> Result<(), KeystoreError>;
    /// Removes the blob of `id` (no error if absent).
    fn delete(&self, id: &AccountId) -> Result<(), KeystoreError>;
    /// All ids with a blob.
    fn list(&self) -> Result<Vec<AccountId>, KeystoreError>;
}

/// One file per account, `<dir>/<account id>.blob`, written as temp file → fsync →
/// rename → fsync of the directory, so a crash never leaves a half-written blob.
pub struct FileBlobStore {
    dir: PathBuf,
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
        Ok(FileBlobStore { dir })
    }

    fn path(&self, id: &AccountId) -> PathBuf {
        // AccountId is 32 hex digits by construction: it cannot name another directory.
        self.dir.join(format!("{id}.blob"))
    }
}

fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync blob directory", e))
}

impl BlobStore for FileBlobStore {
    fn get(&self, id: &AccountId) -> Result<Option<Vec<u8>>, KeystoreError> {
        match fs::read(self.path(id)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read blob", e)),
        }
    }

    fn put(&self, id: &AccountId, blob: &[u8]) -> Result<(), KeystoreError> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
        let tmp = self.dir.join(format!(".{id}.{}.tmp", hex::encode(suffix)));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io("create temp blob", e))?;
            f.write_all(blob).map_err(|e| io("write temp blob", e))?;
            f.sync_all().map_err(|e| io("fsync temp blob", e))?;
            drop(f);
            fs::rename(&tmp, self.path(id)).map_err(|e| io("rename blob into place", e))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn delete(&self, id: &AccountId) -> Result<(), KeystoreError> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete blob", e)),
        }
    }

    fn list(&self) -> Result<Vec<AccountId>, KeystoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io("list blob directory", e))? {
            let entry = entry.map_err(|e| io("list blob directory", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".blob").and_then(|s| AccountId::parse(s).ok()) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Blobs in memory: for tests and throwaway demos.
#[derive(Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<AccountId, Vec<u8>>>,
}

impl MemoryBlobStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<AccountId, Vec<u8>>>, KeystoreError> {
        self.blobs
            .lock()
            .map_err(|_| KeystoreError::Io("memory store lock poisoned".into()))
    }
}

impl BlobStore for MemoryBlobStore {
    fn get(&self, id: &AccountId) -> Result<Option<Vec<u8>>, KeystoreError> {
        Ok(self.lock()?.get(id).cloned())
    }

    fn put(&self, id: &AccountId, blob: &[u8]) -> Result<(), KeystoreError> {
        self.lock()?.insert(*id, blob.to_vec());
        Ok(())
    }

    fn delete(&self, id: &AccountId) -> Result<(), KeystoreError> {
        self.lock()?.remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<AccountId>, KeystoreError> {
        let mut ids: Vec<_> = self.lock()?.keys().copied().collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_replace_and_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        let id = AccountId::random().unwrap();
        assert_eq!(store.get(&id).unwrap(), None);
        store.put(&id, b"one").unwrap();
        store.put(&id, b"two").unwrap();
        assert_eq!(store.get(&id).unwrap().unwrap(), b"two");
        assert_eq!(store.list().unwrap(), vec![id]);
        // A temp file left by a crash is not an account and is cleaned at open.
        fs::write(dir.path().join(format!(".{id}.00.tmp")), b"half").unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap(), vec![id]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        store.delete(&id).unwrap();
        assert_eq!(store.get(&id).unwrap(), None);
    }

    #[test]
    fn a_failed_rename_leaves_no_temp_file_and_reports_io() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::open(dir.path()).unwrap();
        let id = AccountId::random().unwrap();
        // A non-empty directory where the blob should go: the rename fails, even as root.
        fs::create_dir_all(dir.path().join(format!("{id}.blob/x"))).unwrap();
        let err = store.put(&id, b"data").unwrap_err();
        assert!(matches!(err, KeystoreError::Io(_)), "{err:?}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
