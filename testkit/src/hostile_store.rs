//! A blob store that does what a malicious host can do to the enclave's storage: veto
//! writes, serve an older blob, relabel a blob's version.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tandem_enclave::keystore::{BlobName, BlobStore, Expect, KeystoreError, MemoryBlobStore, Versioned};

/// An honest memory store with a host's levers.
#[derive(Default)]
pub struct HostileStore {
    inner: MemoryBlobStore,
    fail_puts: AtomicBool,
    served: Mutex<HashMap<BlobName, Versioned>>,
}

impl HostileStore {
    /// A store that behaves until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses (or accepts again) every write, as a host that vetoes them.
    pub fn fail_puts(&self, fail: bool) {
        self.fail_puts.store(fail, Ordering::SeqCst);
    }

    /// What is stored now under `name` (a host keeps such copies).
    pub fn snapshot(&self, name: &BlobName) -> Versioned {
        self.inner.get(name).unwrap().unwrap()
    }

    /// Serves `blob` for `name` from now on, whatever is stored.
    pub fn serve(&self, name: BlobName, blob: Versioned) {
        self.served.lock().unwrap().insert(name, blob);
    }

    /// Serves what is stored again.
    pub fn behave(&self) {
        self.served.lock().unwrap().clear();
        self.fail_puts(false);
    }
}

impl BlobStore for HostileStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        if let Some(v) = self.served.lock().unwrap().get(name) {
            return Ok(Some(v.clone()));
        }
        self.inner.get(name)
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(KeystoreError::Io("the host refused the write".into()));
        }
        self.inner.put(name, blob, expect)
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        self.inner.delete(name)
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        self.inner.list()
    }
}
