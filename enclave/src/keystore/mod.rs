//! Durable, sealed storage of the enclave's shares.
//!
//! Three layers with one job each:
//! * [`BlobStore`] keeps opaque blobs by account id ([`FileBlobStore`]: one file per
//!   account, written atomically; [`MemoryBlobStore`]: tests). It is untrusted: in Nitro
//!   mode it lives on the parent host.
//! * [`Sealer`] encrypts and authenticates blobs (XChaCha20-Poly1305 under a data key, the
//!   account id, role, format version and key id bound as associated data), so a blob
//!   that was corrupted, truncated or copied to another account's name is refused.
//! * [`Keystore`] turns sealed blobs into [`StoredAccount`]s, caches the unsealed shares
//!   in memory (no unsealing per request), and serializes writes.

mod blob;
mod record;
mod sealer;

use std::collections::HashMap;
use std::sync::Arc;

pub use blob::{BlobStore, FileBlobStore, MemoryBlobStore};
pub use record::StoredAccount;
pub use sealer::Sealer;
use tandem_core::AccountId;
use tokio::sync::{Mutex, RwLock};

/// Why a keystore operation failed. Messages name the operation, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No blob for this account id.
    #[error("no such account")]
    NotFound,
    /// The blob store's I/O failed.
    #[error("share storage I/O failed: {0}")]
    Io(String),
    /// The blob does not authenticate or decode (corrupt, truncated, swapped, unknown version).
    #[error("stored share blob is invalid: {0}")]
    Corrupt(&'static str),
    /// Sealing failed (RNG or encoding).
    #[error("sealing failed: {0}")]
    Seal(&'static str),
}

/// Accounts, sealed at rest and cached unsealed in memory.
pub struct Keystore {
    store: Arc<dyn BlobStore>,
    sealer: Arc<Sealer>,
    cache: RwLock<HashMap<AccountId, Arc<StoredAccount>>>,
    write: Mutex<()>,
}

impl Keystore {
    /// A keystore over `store`, sealing with `sealer`.
    pub fn new(store: Arc<dyn BlobStore>, sealer: Sealer) -> Self {
        Keystore {
            store,
            sealer: Arc::new(sealer),
            cache: RwLock::new(HashMap::new()),
            write: Mutex::new(()),
        }
    }

    /// Loads an account (from the cache, else unsealing its blob).
    pub async fn load(&self, id: AccountId) -> Result<Arc<StoredAccount>, KeystoreError> {
        if let Some(hit) = self.cache.read().await.get(&id) {
            return Ok(hit.clone());
        }
        let store = self.store.clone();
        let sealer = self.sealer.clone();
        let account = tokio::task::spawn_blocking(move || -> Result<StoredAccount, KeystoreError> {
            let blob = store.get(&id)?.ok_or(KeystoreError::NotFound)?;
            let plain = sealer.open(&id, &blob)?;
            StoredAccount::decode(id, &plain)
        })
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))??;
        let account = Arc::new(account);
        self.cache.write().await.insert(id, account.clone());
        Ok(account)
    }

    /// Seals and durably writes `account`, replacing any earlier version. When this
    /// returns `Ok`, the blob is on disk (fsynced); on error the previous blob is intact.
    pub async fn save(&self, account: StoredAccount) -> Result<(), KeystoreError> {
        let _guard = self.write.lock().await;
        let id = account.id;
        let store = self.store.clone();
        let sealer = self.sealer.clone();
        let account = Arc::new(account);
        let to_write = account.clone();
        tokio::task::spawn_blocking(move || -> Result<(), KeystoreError> {
            let plain = to_write.encode()?;
            let blob = sealer.seal(&id, &plain)?;
            store.put(&id, &blob)
        })
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))??;
        self.cache.write().await.insert(id, account);
        Ok(())
    }

    /// Applies `update` to the stored account under the write lock (read-modify-write
    /// without lost updates), then saves it.
    pub async fn update(
        &self,
        id: AccountId,
        update: impl FnOnce(&StoredAccount) -> StoredAccount,
    ) -> Result<Arc<StoredAccount>, KeystoreError> {
        let current = self.load(id).await?;
        let _guard = self.write.lock().await;
        let current = self.cache.read().await.get(&id).cloned().unwrap_or(current);
        let next = Arc::new(update(&current));
        let store = self.store.clone();
        let sealer = self.sealer.clone();
        let to_write = next.clone();
        tokio::task::spawn_blocking(move || -> Result<(), KeystoreError> {
            let plain = to_write.encode()?;
            let blob = sealer.seal(&id, &plain)?;
            store.put(&id, &blob)
        })
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))??;
        self.cache.write().await.insert(id, next.clone());
        Ok(next)
    }

    /// The ids of all stored accounts.
    pub async fn list(&self) -> Result<Vec<AccountId>, KeystoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|_| KeystoreError::Io("keystore task failed".into()))?
    }
}
