//! Durable, sealed storage of the enclave's shares.
//!
//! Four layers with one job each:
//! * [`BlobStore`] keeps opaque, versioned blobs by name with compare-and-swap writes
//!   ([`FileBlobStore`]: one file per account, written atomically; [`ParentBlobStore`]:
//!   the parent's blob service over TCP/Unix/vsock; [`MemoryBlobStore`]: tests). It is
//!   untrusted: in Nitro mode it lives on the parent host.
//! * [`KeyWrapper`] protects the data keys at rest ([`LocalKeyWrapper`]: a 0600 master key
//!   file; `kms::KmsKeyWrapper`: AWS KMS with an attested `Recipient`). The wrapped keys
//!   live in the store as the key ring.
//! * [`Sealer`] encrypts and authenticates blobs (XChaCha20-Poly1305 under a data key, the
//!   account id, role, format version and key id bound as associated data), so a blob
//!   that was corrupted, truncated or copied to another account's name is refused.
//! * [`Keystore`] turns sealed blobs into [`StoredAccount`]s, caches the unsealed shares
//!   in memory (no unsealing per request), and serializes writes. Until boot has unwrapped
//!   the data keys it answers every call with [`KeystoreError::NotReady`].

mod blob;
mod record;
mod sealer;
mod wrapper;

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::parent::blobs::ParentBlobStore;
pub use blob::{BlobName, BlobStore, Expect, FileBlobStore, MemoryBlobStore, Versioned};
pub use record::StoredAccount;
pub use sealer::{DataKey, KeyId, SEAL_OVERHEAD, Sealer};
use tandem_core::AccountId;
use tokio::sync::{Mutex, RwLock};
pub use wrapper::{KeyWrapper, LocalKeyWrapper, WrapError, open_key_ring, prune, rotate};

/// Why a keystore operation failed. Messages name the operation, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No blob for this account id.
    #[error("no such account")]
    NotFound,
    /// The blob store's I/O failed (disk full, parent service unreachable, ...).
    #[error("share storage I/O failed: {0}")]
    Io(String),
    /// The blob does not authenticate or decode (corrupt, truncated, swapped, unknown version).
    #[error("stored share blob is invalid: {0}")]
    Corrupt(&'static str),
    /// Sealing failed (RNG or encoding).
    #[error("sealing failed: {0}")]
    Seal(&'static str),
    /// A compare-and-swap write found another version: someone else wrote first. Nothing
    /// was written; the caller may reload and retry.
    #[error("share storage write conflict (the stored version changed to {current:?})")]
    Conflict {
        /// The version now stored (`None`: absent).
        current: Option<u64>,
    },
    /// Boot has not unwrapped the data keys (yet, or it failed).
    #[error("keystore is not ready: {0}")]
    NotReady(String),
    /// A data key could not be wrapped or unwrapped.
    #[error(transparent)]
    Wrap(#[from] WrapError),
}

struct Cached {
    version: u64,
    account: Arc<StoredAccount>,
}

/// Accounts, sealed at rest and cached unsealed in memory.
pub struct Keystore {
    store: Arc<dyn BlobStore>,
    sealer: std::sync::RwLock<Option<Arc<Sealer>>>,
    cache: RwLock<HashMap<AccountId, Cached>>,
    write: Mutex<()>,
}

/// What [`Keystore::reseal_all`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Blobs re-sealed under the active key.
    pub resealed: usize,
    /// Blobs already under the active key.
    pub current: usize,
    /// Blobs that did not open (left untouched, reported per account on load).
    pub failed: usize,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeystoreError> + Send + 'static,
) -> Result<T, KeystoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))?
}

impl Keystore {
    /// A keystore over `store`, sealing with `sealer` (ready at once).
    pub fn new(store: Arc<dyn BlobStore>, sealer: Sealer) -> Self {
        let ks = Keystore::not_ready(store);
        ks.set_sealer(sealer);
        ks
    }

    /// A keystore whose data keys are not unwrapped yet: every call answers
    /// [`KeystoreError::NotReady`] until [`set_sealer`](Self::set_sealer).
    pub fn not_ready(store: Arc<dyn BlobStore>) -> Self {
        Keystore {
            store,
            sealer: std::sync::RwLock::new(None),
            cache: RwLock::new(HashMap::new()),
            write: Mutex::new(()),
        }
    }

    /// Installs (or, after a rotation, replaces) the sealer: the keystore is ready.
    pub fn set_sealer(&self, sealer: Sealer) {
        if let Ok(mut slot) = self.sealer.write() {
            *slot = Some(Arc::new(sealer));
        }
    }

    /// Whether the data keys are unwrapped.
    pub fn is_ready(&self) -> bool {
        self.sealer.read().is_ok_and(|s| s.is_some())
    }

    /// The blob store (boot uses it for the key ring).
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    fn sealer(&self) -> Result<Arc<Sealer>, KeystoreError> {
        self.sealer
            .read()
            .map_err(|_| KeystoreError::NotReady("sealer lock poisoned".into()))?
            .clone()
            .ok_or_else(|| KeystoreError::NotReady("the data keys are not unwrapped yet".into()))
    }

    /// Loads an account (from the cache, else unsealing its blob). A blob that fails to
    /// authenticate is an error for this account only; it is not cached, so a repaired
    /// blob is picked up by the next call.
    pub async fn load(&self, id: AccountId) -> Result<Arc<StoredAccount>, KeystoreError> {
        let sealer = self.sealer()?;
        if let Some(hit) = self.cache.read().await.get(&id) {
            return Ok(hit.account.clone());
        }
        let (version, account) = self.read_and_open(sealer, id).await?;
        let account = Arc::new(account);
        self.cache.write().await.insert(
            id,
            Cached {
                version,
                account: account.clone(),
            },
        );
        Ok(account)
    }

    async fn read_and_open(&self, sealer: Arc<Sealer>, id: AccountId) -> Result<(u64, StoredAccount), KeystoreError> {
        let store = self.store.clone();
        blocking(move || {
            let v = store.get(&BlobName::Account(id))?.ok_or(KeystoreError::NotFound)?;
            let plain = sealer.open(&id, &v.blob)?;
            Ok((v.version, StoredAccount::decode(id, &plain)?))
        })
        .await
    }

    async fn write(&self, account: Arc<StoredAccount>, expect: Expect) -> Result<(), KeystoreError> {
        let sealer = self.sealer()?;
        let id = account.id;
        let store = self.store.clone();
        let to_write = account.clone();
        let result = blocking(move || {
            let plain = to_write.encode()?;
            let blob = sealer.seal(&id, &plain)?;
            store.put(&BlobName::Account(id), &blob, expect)
        })
        .await;
        match result {
            Ok(version) => {
                self.cache.write().await.insert(id, Cached { version, account });
                Ok(())
            }
            Err(e) => {
                // The stored state is unknown to us now (conflict) or unchanged (I/O):
                // either way the next load must read it again.
                self.cache.write().await.remove(&id);
                Err(e)
            }
        }
    }

    /// Seals and durably writes a new account. When this returns `Ok`, the blob is on
    /// disk (fsynced); on error nothing was stored. An existing blob of the same id is
    /// never overwritten ([`KeystoreError::Conflict`]).
    pub async fn save(&self, account: StoredAccount) -> Result<(), KeystoreError> {
        let _guard = self.write.lock().await;
        self.write(Arc::new(account), Expect::Absent).await
    }

    /// Applies `update` to the stored account under the write lock (read-modify-write
    /// with compare-and-swap on the stored version, so no update is lost), then saves it.
    /// On error the previous blob is intact.
    pub async fn update(
        &self,
        id: AccountId,
        update: impl FnOnce(&StoredAccount) -> StoredAccount,
    ) -> Result<Arc<StoredAccount>, KeystoreError> {
        let _guard = self.write.lock().await;
        self.load(id).await?;
        let version = self.cache.read().await.get(&id).map(|c| (c.version, c.account.clone()));
        let (version, current) = version.ok_or(KeystoreError::NotFound)?;
        let next = Arc::new(update(&current));
        self.write(next.clone(), Expect::Version(version)).await?;
        Ok(next)
    }

    /// The ids of all stored accounts.
    pub async fn list(&self) -> Result<Vec<AccountId>, KeystoreError> {
        let store = self.store.clone();
        let names = blocking(move || store.list()).await?;
        Ok(names
            .into_iter()
            .filter_map(|n| match n {
                BlobName::Account(id) => Some(id),
                BlobName::KeyRing => None,
            })
            .collect())
    }

    /// Re-seals every blob not under the active data key (after a rotation), so older
    /// keys can be pruned from the ring. Blobs that do not open are counted and left.
    pub async fn reseal_all(&self) -> Result<ResealReport, KeystoreError> {
        let sealer = self.sealer()?;
        let active = sealer.active_key_id();
        let mut report = ResealReport::default();
        for id in self.list().await? {
            let _guard = self.write.lock().await;
            let store = self.store.clone();
            let stored = blocking(move || store.get(&BlobName::Account(id))).await?;
            let Some(stored) = stored else { continue };
            if Sealer::blob_key_id(&stored.blob) == Some(active) {
                report.current += 1;
                continue;
            }
            match self.read_and_open(sealer.clone(), id).await {
                Ok((version, account)) if version == stored.version => {
                    self.write(Arc::new(account), Expect::Version(version)).await?;
                    report.resealed += 1;
                }
                Ok(_) => return Err(KeystoreError::Conflict { current: None }),
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "blob does not open; left as is");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// The data key ids the stored blobs use (for pruning the ring).
    pub async fn key_ids_in_use(&self) -> Result<Vec<KeyId>, KeystoreError> {
        let store = self.store.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for name in store.list()? {
                if let BlobName::Account(_) = name
                    && let Some(v) = store.get(&name)?
                    && let Some(k) = Sealer::blob_key_id(&v.blob)
                    && !ids.contains(&k)
                {
                    ids.push(k);
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Drops an account from the in-memory cache (tests measure cold unsealing with it).
    pub async fn evict(&self, id: &AccountId) {
        self.cache.write().await.remove(id);
    }
}
