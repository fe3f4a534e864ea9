//! Durable, sealed storage of the enclave's shares.
//!
//! Five parts with one job each:
//! * [`BlobStore`] keeps opaque, versioned blobs by name with compare-and-swap writes
//!   ([`FileBlobStore`]: one file per account, written atomically; [`ParentBlobStore`]:
//!   the parent's blob service over TCP/Unix/vsock; [`MemoryBlobStore`]: tests). It is
//!   untrusted: in Nitro mode it lives on the parent host.
//! * [`KeyWrapper`] protects the data keys at rest ([`LocalKeyWrapper`]: a 0600 master key
//!   file; `kms::KmsKeyWrapper`: AWS KMS with an attested `Recipient`).
//! * [`ring`] keeps the wrapped data keys in the store as an authenticated key ring.
//! * [`Sealer`] encrypts and authenticates blobs (XChaCha20-Poly1305 under a data key, the
//!   account id, role, format version, key id and *generation* bound as associated data),
//!   so a blob that was corrupted, truncated, copied to another account's name or
//!   relabelled with another version is refused.
//! * [`Keystore`] turns sealed blobs into [`StoredAccount`]s: it caches unsealed accounts
//!   in a size-bounded LRU (an unsealed share costs about 50 KB; a miss costs one unseal,
//!   under a millisecond), serializes writes, and reports every generation it reads or
//!   writes to the [`AccountGuard`](crate::guard::AccountGuard), which refuses one older
//!   than it saw (a rolled-back blob). Until boot has unwrapped the data keys it answers
//!   every call with [`KeystoreError::NotReady`].

mod blob;
mod record;
pub mod ring;
mod sealer;
mod wrapper;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::parent::blobs::ParentBlobStore;
pub use blob::{BlobName, BlobStore, Expect, FileBlobStore, MemoryBlobStore, Versioned};
use lru::LruCache;
pub use record::{Lock, Pending, StoredAccount};
pub use ring::{prune, rotate};
pub use sealer::{DataKey, KeyId, SEAL_OVERHEAD, Sealer};
use tandem_core::AccountId;
use tokio::sync::Mutex;
pub use wrapper::{KeyWrapper, LocalKeyWrapper, WrapError};

use crate::guard::{AccountGuard, MemoryGuard};

/// How many unsealed accounts the cache keeps by default (about 50 KB each).
pub const DEFAULT_CACHE_ACCOUNTS: usize = 4096;

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
    /// The store served a record older than one already seen: it was rolled back.
    #[error("stored state was rolled back (generation {got}, but {seen} was seen): refused")]
    Rollback {
        /// The largest generation seen.
        seen: u64,
        /// The generation served.
        got: u64,
    },
    /// A data key could not be wrapped or unwrapped.
    #[error(transparent)]
    Wrap(#[from] WrapError),
}

/// Accounts, sealed at rest and cached unsealed in memory (bounded).
pub struct Keystore {
    store: Arc<dyn BlobStore>,
    sealer: std::sync::RwLock<Option<Arc<Sealer>>>,
    cache: std::sync::Mutex<LruCache<AccountId, Arc<StoredAccount>>>,
    write: Mutex<()>,
    guard: Arc<dyn AccountGuard>,
    /// Whether version-1 blobs (sealed before generations) are still accepted: until the
    /// boot's migration has re-sealed them all.
    legacy_blobs: AtomicBool,
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

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeystoreError> + Send + 'static,
) -> Result<T, KeystoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))?
}

/// The generation a write with `expect` gives the blob.
fn next_generation(expect: Expect) -> Result<u64, KeystoreError> {
    match expect {
        Expect::Absent => Ok(1),
        Expect::Version(v) => v.checked_add(1).ok_or(KeystoreError::Corrupt("generation overflow")),
        Expect::Any => Err(KeystoreError::Seal(
            "account blobs are written with compare-and-swap only",
        )),
    }
}

impl Keystore {
    /// A keystore over `store`, sealing with `sealer` (ready at once).
    pub fn new(store: Arc<dyn BlobStore>, sealer: Sealer) -> Self {
        let ks = Keystore::not_ready(store);
        ks.set_sealer(sealer);
        ks
    }

    /// A keystore whose data keys are not unwrapped yet: every call answers
    /// [`KeystoreError::NotReady`] until [`set_sealer`](Self::set_sealer) or
    /// [`open_ring`](Self::open_ring).
    pub fn not_ready(store: Arc<dyn BlobStore>) -> Self {
        Keystore::with_options(store, Arc::new(MemoryGuard::default()), DEFAULT_CACHE_ACCOUNTS)
    }

    /// A keystore reporting generations to `guard`, caching at most `cache_accounts`
    /// unsealed accounts (at least one).
    pub fn with_options(store: Arc<dyn BlobStore>, guard: Arc<dyn AccountGuard>, cache_accounts: usize) -> Self {
        let capacity = NonZeroUsize::new(cache_accounts).unwrap_or(NonZeroUsize::MIN);
        Keystore {
            store,
            sealer: std::sync::RwLock::new(None),
            cache: std::sync::Mutex::new(LruCache::new(capacity)),
            write: Mutex::new(()),
            guard,
            legacy_blobs: AtomicBool::new(true),
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

    /// The per-account rules this keystore reports to.
    pub fn guard(&self) -> &Arc<dyn AccountGuard> {
        &self.guard
    }

    fn sealer(&self) -> Result<Arc<Sealer>, KeystoreError> {
        self.sealer
            .read()
            .map_err(|_| KeystoreError::NotReady("sealer lock poisoned".into()))?
            .clone()
            .ok_or_else(|| KeystoreError::NotReady("the data keys are not unwrapped yet".into()))
    }

    /// Opens the key ring with `wrapper` (first boot: creates it), migrates what earlier
    /// builds stored, and makes the keystore ready. Returns the sealer's description.
    ///
    /// A format-1 ring (no MAC) is rewritten as format 2 *before* any blob is re-sealed, so
    /// version-2 blobs never legitimately sit beside a format-1 ring: finding one there is
    /// a host downgrading the ring, and is refused.
    pub async fn open_ring(&self, wrapper: &dyn KeyWrapper) -> Result<(KeyId, usize), KeystoreError> {
        let mut opened = ring::open(&self.store, wrapper).await?;
        if opened.legacy_format {
            if self.any_blob_of_version(2).await? {
                return Err(KeystoreError::Corrupt(
                    "the key ring is of format 1 but blobs of format 2 exist: the ring was downgraded",
                ));
            }
            tracing::info!("key ring of format 1: authenticating it (format 2) before migrating blobs");
            ring::upgrade_legacy(&self.store, wrapper).await?;
            opened = ring::open(&self.store, wrapper).await?;
        }
        let description = (opened.sealer.active_key_id(), opened.sealer.key_ids().len());
        let sealer = Arc::new(opened.sealer);
        if !opened.blobs_sealed_with_generation {
            let migrated = self.migrate_legacy_blobs(&sealer).await?;
            ring::mark_blobs_sealed_with_generation(&self.store, wrapper).await?;
            tracing::info!(migrated, "every account blob is now sealed with its generation");
        }
        self.legacy_blobs.store(false, Ordering::SeqCst);
        if let Ok(mut slot) = self.sealer.write() {
            *slot = Some(sealer);
        }
        Ok(description)
    }

    async fn any_blob_of_version(&self, version: u8) -> Result<bool, KeystoreError> {
        let store = self.store.clone();
        blocking(move || {
            for name in store.list()? {
                if let BlobName::Account(_) = name
                    && let Some(v) = store.get(&name)?
                    && Sealer::blob_version(&v.blob) == Some(version)
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }

    /// Re-seals every version-1 blob as version 2 (with its generation). Blobs that do not
    /// open are left and reported by their account's loads.
    async fn migrate_legacy_blobs(&self, sealer: &Arc<Sealer>) -> Result<usize, KeystoreError> {
        let mut migrated = 0;
        for id in self.list().await? {
            let _guard = self.write.lock().await;
            let store = self.store.clone();
            let Some(stored) = blocking(move || store.get(&BlobName::Account(id))).await? else {
                continue;
            };
            if Sealer::blob_version(&stored.blob) != Some(1) {
                continue;
            }
            match self.open_blob(sealer, id, &stored, true) {
                Ok(account) => {
                    self.write_with(sealer.clone(), Arc::new(account), Expect::Version(stored.version))
                        .await?;
                    migrated += 1;
                }
                Err(e) => tracing::warn!(account = %id, error = %e, "legacy blob does not open; left as is"),
            }
        }
        Ok(migrated)
    }

    fn open_blob(
        &self,
        sealer: &Sealer,
        id: AccountId,
        stored: &Versioned,
        legacy_allowed: bool,
    ) -> Result<StoredAccount, KeystoreError> {
        if Sealer::blob_version(&stored.blob) == Some(1) && !legacy_allowed {
            return Err(KeystoreError::Corrupt(
                "a blob of format 1 after every blob was re-sealed with its generation: refused as a rollback",
            ));
        }
        let plain = sealer.open(&id, stored.version, &stored.blob)?;
        StoredAccount::decode(id, stored.version, &plain)
    }

    fn cached(&self, id: &AccountId) -> Option<Arc<StoredAccount>> {
        self.cache.lock().ok()?.get(id).cloned()
    }

    fn cache_put(&self, account: Arc<StoredAccount>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(account.id, account);
        }
    }

    fn cache_drop(&self, id: &AccountId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.pop(id);
        }
    }

    /// Unsealed accounts in memory now.
    pub fn cached_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Loads an account (from the cache, else unsealing its blob). A blob that fails to
    /// authenticate is an error for this account only; it is not cached, so a repaired
    /// blob is picked up by the next call. A blob older than one already seen is refused
    /// ([`KeystoreError::Rollback`]); a persisted lock is put in force.
    pub async fn load(&self, id: AccountId) -> Result<Arc<StoredAccount>, KeystoreError> {
        let sealer = self.sealer()?;
        if let Some(hit) = self.cached(&id) {
            return Ok(hit);
        }
        let store = self.store.clone();
        let stored = blocking(move || store.get(&BlobName::Account(id)))
            .await?
            .ok_or(KeystoreError::NotFound)?;
        let legacy_allowed = self.legacy_blobs.load(Ordering::SeqCst);
        let account = Arc::new(self.open_blob(&sealer, id, &stored, legacy_allowed)?);
        self.guard.observe(id, account.generation)?;
        if let Some(lock) = &account.locked {
            for share in &lock.share_ids {
                self.guard.ban(id, *share);
            }
        }
        self.cache_put(account.clone());
        Ok(account)
    }

    async fn write_with(
        &self,
        sealer: Arc<Sealer>,
        account: Arc<StoredAccount>,
        expect: Expect,
    ) -> Result<Arc<StoredAccount>, KeystoreError> {
        let id = account.id;
        let generation = next_generation(expect)?;
        let account = Arc::new(StoredAccount {
            generation,
            ..(*account).clone()
        });
        let store = self.store.clone();
        let to_write = account.clone();
        let result = blocking(move || {
            let plain = to_write.encode()?;
            let blob = sealer.seal(&id, generation, &plain)?;
            store.put(&BlobName::Account(id), &blob, expect)
        })
        .await;
        match result {
            Ok(version) if version == generation => {
                self.guard.observe(id, generation)?;
                self.cache_put(account.clone());
                Ok(account)
            }
            Ok(_) => {
                self.cache_drop(&id);
                Err(KeystoreError::Corrupt(
                    "the store gave the blob another version than requested",
                ))
            }
            Err(e) => {
                // The stored state is unknown to us now (conflict) or unchanged (I/O):
                // either way the next load must read it again (and the guard refuses it
                // if it is older than what we saw).
                self.cache_drop(&id);
                Err(e)
            }
        }
    }

    /// Seals and durably writes a new account (generation 1). When this returns `Ok`, the
    /// blob is durable; on error nothing was stored. An existing blob of the same id is
    /// never overwritten ([`KeystoreError::Conflict`]).
    pub async fn save(&self, account: StoredAccount) -> Result<Arc<StoredAccount>, KeystoreError> {
        let sealer = self.sealer()?;
        let _guard = self.write.lock().await;
        self.write_with(sealer, Arc::new(account), Expect::Absent).await
    }

    /// Applies `update` to the stored account under the write lock (read-modify-write
    /// with compare-and-swap on its generation, so no update is lost), then saves it.
    /// `update` returning `None` writes nothing. On error the previous blob is intact.
    pub async fn update(
        &self,
        id: AccountId,
        update: impl FnOnce(&StoredAccount) -> Option<StoredAccount>,
    ) -> Result<Arc<StoredAccount>, KeystoreError> {
        let sealer = self.sealer()?;
        let _guard = self.write.lock().await;
        let current = self.load(id).await?;
        match update(&current) {
            Some(next) => {
                self.write_with(sealer, Arc::new(next), Expect::Version(current.generation))
                    .await
            }
            None => Ok(current),
        }
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
            let legacy_allowed = self.legacy_blobs.load(Ordering::SeqCst);
            match self.open_blob(&sealer, id, &stored, legacy_allowed) {
                Ok(account) => {
                    self.guard.observe(id, account.generation)?;
                    self.write_with(sealer.clone(), Arc::new(account), Expect::Version(stored.version))
                        .await?;
                    report.resealed += 1;
                }
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
        self.cache_drop(id);
    }
}
