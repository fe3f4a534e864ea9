//! The `KeyWrapper` seam: who protects the data keys at rest.
//!
//! Data keys seal the share blobs; they are stored *wrapped* in a key ring blob beside
//! the blobs they open ([`BlobName::KeyRing`]), so the store (untrusted, on the parent in
//! Nitro mode) holds only ciphertext. At boot the enclave unwraps every key of the ring
//! once and keeps them in memory (zeroized on drop): no wrapper call per request.
//!
//! * [`LocalKeyWrapper`] (mock mode): a 32-byte master key file, mode 0600, wraps data keys
//!   with XChaCha20-Poly1305. Its master key also opens blobs sealed directly under it by
//!   builds that predate the key ring.
//! * [`crate::kms::KmsKeyWrapper`] (Nitro mode): AWS KMS `GenerateDataKey` / `Decrypt`
//!   with a `Recipient` attestation, so only an enclave with the expected PCRs can unwrap.
//!
//! Rotation ([`rotate`]) adds a new active key to the ring; blobs sealed under older keys
//! stay readable until they are re-sealed ([`super::Keystore::reseal_all`]).

use std::fs;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::KeystoreError;
use super::blob::{BlobName, BlobStore, Expect};
use super::sealer::{DataKey, KeyId, Sealer};

/// Why wrapping or unwrapping a data key failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    /// The local master key file is missing, unreadable, too open, or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A wrapped key does not authenticate under this wrapper (another master key or KMS
    /// key, or tampered).
    #[error("wrapped data key does not unwrap: {0}")]
    Unwrap(String),
    /// The KMS call failed (network, credentials, policy).
    #[error("KMS: {0}")]
    Kms(String),
    /// No credentials yet (the parent has not pushed them) or they expired.
    #[error("KMS credentials: {0}")]
    Credentials(String),
    /// The attestation document for the `Recipient` could not be produced.
    #[error("attestation for KMS recipient: {0}")]
    Attestation(String),
    /// The `CiphertextForRecipient` did not open.
    #[error(transparent)]
    Recipient(#[from] crate::kms::recipient::RecipientError),
    /// The RNG failed.
    #[error("system RNG failed")]
    Rng,
}

/// Wraps and unwraps data keys. Implementations are called at boot and on rotation only.
#[async_trait::async_trait]
pub trait KeyWrapper: Send + Sync + 'static {
    /// `"local"` or `"kms"`: recorded in the key ring so a ring is never handed to the
    /// wrong wrapper.
    fn kind(&self) -> &'static str;
    /// Makes a new data key: the key, and its wrapped form to store.
    async fn generate(&self) -> Result<(DataKey, Vec<u8>), WrapError>;
    /// Unwraps a stored wrapped key.
    async fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, WrapError>;
    /// A key that opens blobs written before the key ring existed (the local master key
    /// itself); `None` for wrappers that never sealed directly.
    fn legacy_key(&self) -> Option<DataKey> {
        None
    }
}

/// Mock mode: data keys wrapped under a local master key file.
pub struct LocalKeyWrapper {
    master: Zeroizing<[u8; 32]>,
}

const LOCAL_WRAP_AD: &[u8] = b"tandem/v1/local-wrap";

impl LocalKeyWrapper {
    /// A wrapper over raw master key bytes (tests).
    pub fn new(master: Zeroizing<[u8; 32]>) -> Self {
        LocalKeyWrapper { master }
    }

    /// Loads the master key file, or creates it (32 random bytes, mode 0600) if absent.
    /// A key file readable by group or others is refused: it would expose every share.
    pub fn load_or_create(path: &Path) -> Result<Self, WrapError> {
        let io =
            |what: &str, e: std::io::Error| WrapError::MasterKey(format!("{what} {}: {}", path.display(), e.kind()));
        match fs::read(path) {
            Ok(bytes) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = fs::metadata(path).map_err(|e| io("stat", e))?.permissions().mode();
                    if mode & 0o077 != 0 {
                        return Err(WrapError::MasterKey(format!(
                            "{} has mode {:o}; it must be readable by its owner only (chmod 600)",
                            path.display(),
                            mode & 0o777
                        )));
                    }
                }
                let bytes = Zeroizing::new(bytes);
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| WrapError::MasterKey(format!("{} is not 32 bytes", path.display())))?;
                Ok(LocalKeyWrapper::new(Zeroizing::new(key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut key[..]).map_err(|_| WrapError::Rng)?;
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io("create directory for", e))?;
                }
                tandem_io::fs::create_atomically(path, &key[..], 0o600).map_err(|e| io("create", e))?;
                Ok(LocalKeyWrapper::new(key))
            }
            Err(e) => Err(io("read", e)),
        }
    }

    fn wrap(&self, key: &DataKey) -> Result<Vec<u8>, WrapError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| WrapError::Rng)?;
        let ct = XChaCha20Poly1305::new((&*self.master).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: LOCAL_WRAP_AD,
                },
            )
            .map_err(|_| WrapError::Unwrap("encryption failed".into()))?;
        Ok([&nonce[..], &ct].concat())
    }
}

#[async_trait::async_trait]
impl KeyWrapper for LocalKeyWrapper {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn generate(&self) -> Result<(DataKey, Vec<u8>), WrapError> {
        let key = DataKey::generate().map_err(|_| WrapError::Rng)?;
        let wrapped = self.wrap(&key)?;
        Ok((key, wrapped))
    }

    async fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, WrapError> {
        if wrapped.len() != 24 + 32 + 16 {
            return Err(WrapError::Unwrap("wrapped key has the wrong length".into()));
        }
        let plain = XChaCha20Poly1305::new((&*self.master).into())
            .decrypt(
                XNonce::from_slice(&wrapped[..24]),
                Payload {
                    msg: &wrapped[24..],
                    aad: LOCAL_WRAP_AD,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| WrapError::Unwrap("does not authenticate under this master key".into()))?;
        DataKey::from_slice(&plain).map_err(|e| WrapError::Unwrap(e.to_string()))
    }

    fn legacy_key(&self) -> Option<DataKey> {
        Some(DataKey::new(self.master.clone()))
    }
}

/// The key ring as stored (JSON, readable by operators; it holds only wrapped keys).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRingFile {
    format: u8,
    wrapper: String,
    /// Hex id of the key new blobs are sealed under.
    active: String,
    keys: Vec<WrappedKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WrappedKey {
    id: String,
    /// Base64 of the wrapper's output (local: nonce ‖ AEAD; KMS: `CiphertextBlob`).
    wrapped: String,
    created_at: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a blocking store call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeystoreError> + Send + 'static,
) -> Result<T, KeystoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KeystoreError::Io("keystore task failed".into()))?
}

/// Loads the key ring from `store` and unwraps every key, or (first boot) generates the
/// first data key and stores the ring. Returns the sealer for the keystore.
pub async fn open_key_ring(
    store: &std::sync::Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
) -> Result<Sealer, KeystoreError> {
    let s = store.clone();
    let existing = blocking(move || s.get(&BlobName::KeyRing)).await?;
    match existing {
        Some(v) => {
            let (sealer, _) = unwrap_ring(&v.blob, wrapper).await?;
            Ok(sealer)
        }
        None => {
            let (key, wrapped) = wrapper.generate().await?;
            let ring = KeyRingFile {
                format: 1,
                wrapper: wrapper.kind().into(),
                active: hex::encode(key.id()),
                keys: vec![WrappedKey {
                    id: hex::encode(key.id()),
                    wrapped: base64::Engine::encode(&b64(), &wrapped),
                    created_at: now(),
                }],
            };
            let bytes = serde_json::to_vec_pretty(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
            let s = store.clone();
            blocking(move || s.put(&BlobName::KeyRing, &bytes, Expect::Absent)).await?;
            let older = wrapper.legacy_key().into_iter().collect();
            tracing::info!(key_id = %hex::encode(key.id()), wrapper = wrapper.kind(), "first boot: new data key generated and stored wrapped");
            Ok(Sealer::with_ring(key, older))
        }
    }
}

async fn unwrap_ring(bytes: &[u8], wrapper: &dyn KeyWrapper) -> Result<(Sealer, KeyRingFile), KeystoreError> {
    let ring: KeyRingFile =
        serde_json::from_slice(bytes).map_err(|_| KeystoreError::Corrupt("key ring does not decode"))?;
    if ring.format != 1 {
        return Err(KeystoreError::Corrupt("unknown key ring format"));
    }
    if ring.wrapper != wrapper.kind() {
        return Err(KeystoreError::Wrap(WrapError::Unwrap(format!(
            "the key ring was written by the {:?} wrapper, this enclave uses {:?}",
            ring.wrapper,
            wrapper.kind()
        ))));
    }
    let mut active = None;
    let mut older = Vec::new();
    for entry in &ring.keys {
        let wrapped = base64::Engine::decode(&b64(), &entry.wrapped)
            .map_err(|_| KeystoreError::Corrupt("key ring entry is not base64"))?;
        let key = wrapper.unwrap_key(&wrapped).await?;
        // The id is recomputed from the unwrapped key: a ring entry cannot claim another id.
        if hex::encode(key.id()) != entry.id {
            return Err(KeystoreError::Corrupt("key ring entry does not match its id"));
        }
        if entry.id == ring.active {
            active = Some(key);
        } else {
            older.push(key);
        }
    }
    let active = active.ok_or(KeystoreError::Corrupt("key ring names no usable active key"))?;
    older.extend(wrapper.legacy_key());
    Ok((Sealer::with_ring(active, older), ring))
}

/// Rotates the data key: generates a new one, makes it active in the stored ring (older
/// keys stay, so their blobs still open), and returns the new sealer. Compare-and-swap on
/// the ring, so two rotations cannot drop each other's key.
pub async fn rotate(store: &std::sync::Arc<dyn BlobStore>, wrapper: &dyn KeyWrapper) -> Result<Sealer, KeystoreError> {
    let s = store.clone();
    let current = blocking(move || s.get(&BlobName::KeyRing))
        .await?
        .ok_or(KeystoreError::Corrupt("no key ring to rotate"))?;
    let (_, mut ring) = unwrap_ring(&current.blob, wrapper).await?;
    let (key, wrapped) = wrapper.generate().await?;
    ring.active = hex::encode(key.id());
    ring.keys.push(WrappedKey {
        id: hex::encode(key.id()),
        wrapped: base64::Engine::encode(&b64(), &wrapped),
        created_at: now(),
    });
    let bytes = serde_json::to_vec_pretty(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    let s = store.clone();
    let version = current.version;
    blocking(move || s.put(&BlobName::KeyRing, &bytes, Expect::Version(version))).await?;
    tracing::info!(key_id = %hex::encode(key.id()), "data key rotated; older keys kept until their blobs are re-sealed");
    let (sealer, _) = unwrap_ring(
        &serde_json::to_vec(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?,
        wrapper,
    )
    .await?;
    Ok(sealer)
}

/// Drops from the stored ring every key that no blob still uses (after
/// [`super::Keystore::reseal_all`]); returns the ids dropped.
pub async fn prune(
    store: &std::sync::Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
    in_use: &[KeyId],
) -> Result<Vec<KeyId>, KeystoreError> {
    let s = store.clone();
    let current = blocking(move || s.get(&BlobName::KeyRing))
        .await?
        .ok_or(KeystoreError::Corrupt("no key ring to prune"))?;
    let (_, mut ring) = unwrap_ring(&current.blob, wrapper).await?;
    let in_use: Vec<String> = in_use.iter().map(hex::encode).collect();
    let mut dropped = Vec::new();
    ring.keys.retain(|k| {
        let keep = k.id == ring.active || in_use.contains(&k.id);
        if !keep
            && let Ok(bytes) = hex::decode(&k.id)
            && let Ok(id) = KeyId::try_from(bytes.as_slice())
        {
            dropped.push(id);
        }
        keep
    });
    let bytes = serde_json::to_vec_pretty(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    let s = store.clone();
    let version = current.version;
    blocking(move || s.put(&BlobName::KeyRing, &bytes, Expect::Version(version))).await?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keystore::MemoryBlobStore;
    use tandem_core::AccountId;

    #[test]
    fn master_key_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = LocalKeyWrapper::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = LocalKeyWrapper::load_or_create(&path).unwrap();
        assert_eq!(a.master, b.master);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            LocalKeyWrapper::load_or_create(&path),
            Err(WrapError::MasterKey(_))
        ));
    }

    #[tokio::test]
    async fn a_ring_opens_only_under_its_own_master_key() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let a = LocalKeyWrapper::new(Zeroizing::new([1; 32]));
        let sealer = open_key_ring(&store, &a).await.unwrap();
        let id = AccountId::random().unwrap();
        let blob = sealer.seal(&id, b"share").unwrap();
        // Second boot, same master key: same active key, the blob opens.
        let again = open_key_ring(&store, &a).await.unwrap();
        assert_eq!(again.active_key_id(), sealer.active_key_id());
        assert_eq!(&again.open(&id, &blob).unwrap()[..], b"share");
        // Another master key cannot unwrap the ring at all.
        let b = LocalKeyWrapper::new(Zeroizing::new([2; 32]));
        let err = open_key_ring(&store, &b).await.unwrap_err();
        assert!(matches!(err, KeystoreError::Wrap(WrapError::Unwrap(_))), "{err:?}");
        // And a blob of another enclave (its own ring) does not open here.
        let other_store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let other = open_key_ring(&other_store, &b).await.unwrap();
        assert!(matches!(other.open(&id, &blob), Err(KeystoreError::Corrupt(_))));
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_until_pruned() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([3; 32]));
        let first = open_key_ring(&store, &w).await.unwrap();
        let id = AccountId::random().unwrap();
        let old_blob = first.seal(&id, b"old").unwrap();
        let rotated = rotate(&store, &w).await.unwrap();
        assert_ne!(rotated.active_key_id(), first.active_key_id());
        assert_eq!(&rotated.open(&id, &old_blob).unwrap()[..], b"old");
        // A reboot sees the rotation.
        let rebooted = open_key_ring(&store, &w).await.unwrap();
        assert_eq!(rebooted.active_key_id(), rotated.active_key_id());
        assert_eq!(&rebooted.open(&id, &old_blob).unwrap()[..], b"old");
        // Nothing uses the first key any more: prune it; its blobs stop opening.
        let dropped = prune(&store, &w, &[rotated.active_key_id()]).await.unwrap();
        assert_eq!(dropped, vec![first.active_key_id()]);
        let pruned = open_key_ring(&store, &w).await.unwrap();
        assert!(pruned.open(&id, &old_blob).is_err());
    }

    #[tokio::test]
    async fn a_tampered_ring_is_refused() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([4; 32]));
        open_key_ring(&store, &w).await.unwrap();
        let ring = store.get(&BlobName::KeyRing).unwrap().unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&ring.blob).unwrap();
        json["keys"][0]["id"] = serde_json::Value::String("0000000000000000".into());
        store
            .put(&BlobName::KeyRing, &serde_json::to_vec(&json).unwrap(), Expect::Any)
            .unwrap();
        assert!(matches!(
            open_key_ring(&store, &w).await,
            Err(KeystoreError::Corrupt(_))
        ));
    }
}
