//! The key ring: the wrapped data keys, stored beside the blobs they open, authenticated.
//!
//! ```json
//! { "format": 2, "wrapper": "kms", "active": "<key id>",
//!   "keys": [ { "id": "<key id>", "wrapped": "<base64>", "createdAt": 1700000000 } ],
//!   "blobsSealedWithGeneration": true,
//!   "mac": "<hex HMAC-SHA256>" }
//! ```
//!
//! The ring is JSON so operators can read it; it holds only wrapped keys. Format 2 carries
//! a MAC under a key derived from the active data key — which only the enclave can unwrap —
//! over the ring and its store version, so a host cannot name another key active, add or
//! drop keys, or relabel the version (review finding H2). What it still can do is serve an
//! older ring whole after a restart; `SECURITY.md` states it. Format 1 (no MAC) is read
//! once at boot and rewritten as format 2 after every blob has been re-sealed with its
//! generation ([`super::Keystore::open_ring`]); from then on version-1 blobs are refused.
//!
//! Rotation ([`rotate`]) adds a new active key; blobs sealed under older keys stay
//! readable until they are re-sealed ([`super::Keystore::reseal_all`]) and the keys no
//! blob uses are pruned ([`prune`]).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::blob::{BlobName, BlobStore, Expect};
use super::sealer::{DataKey, KeyId, Sealer};
use super::wrapper::{KeyWrapper, WrapError};
use super::{KeystoreError, blocking};

const FORMAT: u8 = 2;
const LEGACY_FORMAT: u8 = 1;

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRingFile {
    format: u8,
    wrapper: String,
    /// Hex id of the key new blobs are sealed under.
    active: String,
    keys: Vec<WrappedKey>,
    /// Every account blob is sealed with its generation: version-1 blobs are refused.
    #[serde(default)]
    blobs_sealed_with_generation: bool,
    /// Format 2: HMAC-SHA256 (hex) over this ring with `mac` absent and its store version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WrappedKey {
    id: String,
    /// Base64 of the wrapper's output (local: nonce ‖ AEAD; KMS: `CiphertextBlob`).
    wrapped: String,
    created_at: u64,
}

/// A ring opened and checked.
pub struct OpenedRing {
    /// Seals under the active key, opens under any key of the ring.
    pub sealer: Sealer,
    /// The ring's version in the store.
    pub generation: u64,
    /// Whether every blob is known to be sealed with its generation (else version-1
    /// blobs are still accepted, until the boot's migration completes).
    pub blobs_sealed_with_generation: bool,
    /// Whether the ring was of format 1.
    pub legacy_format: bool,
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

impl KeyRingFile {
    /// A ring holding one new data key (`wrapped` by `wrapper`), in `format`: format 2
    /// seals blobs with their generation, format 1 (legacy tests only) did not.
    fn first(format: u8, wrapper: &dyn KeyWrapper, key: &DataKey, wrapped: &[u8]) -> Self {
        KeyRingFile {
            format,
            wrapper: wrapper.kind().into(),
            active: hex::encode(key.id()),
            keys: vec![WrappedKey {
                id: hex::encode(key.id()),
                wrapped: base64::Engine::encode(&b64(), wrapped),
                created_at: now(),
            }],
            blobs_sealed_with_generation: format >= FORMAT,
            mac: None,
        }
    }
}

fn mac(key: &DataKey, ring: &KeyRingFile, generation: u64) -> Result<[u8; 32], KeystoreError> {
    let unsigned = KeyRingFile {
        mac: None,
        ..ring.clone()
    };
    let body = serde_json::to_vec(&unsigned).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    let mac_key = key.derive(b"tandem/v2/key-ring-mac");
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(&mac_key[..]).map_err(|_| KeystoreError::Seal("key ring MAC key"))?;
    m.update(b"tandem/v2/key-ring");
    m.update(&generation.to_be_bytes());
    m.update(&body);
    Ok(m.finalize().into_bytes().into())
}

/// Loads the key ring from `store` and unwraps and checks it, or (first boot) generates
/// the first data key and stores a new ring.
pub async fn open(store: &Arc<dyn BlobStore>, wrapper: &dyn KeyWrapper) -> Result<OpenedRing, KeystoreError> {
    let s = store.clone();
    match blocking(move || s.get(&BlobName::KeyRing)).await? {
        Some(v) => unwrap(&v.blob, v.version, wrapper).await.map(|(opened, _, _)| opened),
        None => {
            let (key, wrapped) = wrapper.generate().await?;
            let ring = KeyRingFile::first(FORMAT, wrapper, &key, &wrapped);
            let generation = write(store, ring, &key, Expect::Absent).await?;
            let older = wrapper.legacy_key().into_iter().collect();
            tracing::info!(key_id = %hex::encode(key.id()), wrapper = wrapper.kind(), "first boot: new data key generated and stored wrapped");
            Ok(OpenedRing {
                sealer: Sealer::with_ring(key, older),
                generation,
                blobs_sealed_with_generation: true,
                legacy_format: false,
            })
        }
    }
}

/// Seals `ring` with its MAC under `active` at the version it will get and stores it.
async fn write(
    store: &Arc<dyn BlobStore>,
    mut ring: KeyRingFile,
    active: &DataKey,
    expect: Expect,
) -> Result<u64, KeystoreError> {
    let generation = match expect {
        Expect::Absent => 1,
        Expect::Version(v) => v + 1,
        Expect::Any => {
            return Err(KeystoreError::Seal(
                "the key ring is written with compare-and-swap only",
            ));
        }
    };
    ring.format = FORMAT;
    ring.mac = Some(hex::encode(mac(active, &ring, generation)?));
    let bytes = serde_json::to_vec_pretty(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    let s = store.clone();
    let written = blocking(move || s.put(&BlobName::KeyRing, &bytes, expect)).await?;
    if written != generation {
        return Err(KeystoreError::Corrupt(
            "the store gave the key ring another version than requested",
        ));
    }
    Ok(generation)
}

/// Unwraps every key of a stored ring and checks its MAC. Returns the opened ring, the
/// file and the active key (for rewriting it).
async fn unwrap(
    bytes: &[u8],
    generation: u64,
    wrapper: &dyn KeyWrapper,
) -> Result<(OpenedRing, KeyRingFile, DataKey), KeystoreError> {
    let ring: KeyRingFile =
        serde_json::from_slice(bytes).map_err(|_| KeystoreError::Corrupt("key ring does not decode"))?;
    if ring.format != FORMAT && ring.format != LEGACY_FORMAT {
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
    let legacy_format = ring.format == LEGACY_FORMAT;
    if !legacy_format {
        let expected = mac(&active, &ring, generation)?;
        let stored = ring
            .mac
            .as_deref()
            .and_then(|m| hex::decode(m).ok())
            .ok_or(KeystoreError::Corrupt("key ring carries no MAC"))?;
        if !constant_time_eq(&stored, &expected) {
            return Err(KeystoreError::Corrupt(
                "key ring does not authenticate (edited, or reported at another version)",
            ));
        }
    }
    older.extend(wrapper.legacy_key());
    let blobs_sealed_with_generation = !legacy_format && ring.blobs_sealed_with_generation;
    // A second copy of the active key for the caller (rewrites are MACed under it).
    let active_copy = DataKey::from_slice(active.expose())?;
    Ok((
        OpenedRing {
            sealer: Sealer::with_ring(active, older),
            generation,
            blobs_sealed_with_generation,
            legacy_format,
        },
        ring,
        active_copy,
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a stored ring's format without unwrapping any key (what the keystore does before
/// it asks the wrapper): it decodes, is of a known format, and names its active key among
/// its keys.
pub fn check_format(bytes: &[u8]) -> Result<(), KeystoreError> {
    let ring: KeyRingFile =
        serde_json::from_slice(bytes).map_err(|_| KeystoreError::Corrupt("key ring does not decode"))?;
    if ring.format != FORMAT && ring.format != LEGACY_FORMAT {
        return Err(KeystoreError::Corrupt("unknown key ring format"));
    }
    if !ring.keys.iter().any(|k| k.id == ring.active) {
        return Err(KeystoreError::Corrupt("key ring names no usable active key"));
    }
    for k in &ring.keys {
        base64::Engine::decode(&b64(), &k.wrapped)
            .map_err(|_| KeystoreError::Corrupt("key ring entry is not base64"))?;
    }
    Ok(())
}

/// Reads and checks the stored ring (for the operations that rewrite it).
async fn current(
    store: &Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
) -> Result<(OpenedRing, KeyRingFile, DataKey), KeystoreError> {
    let s = store.clone();
    let v = blocking(move || s.get(&BlobName::KeyRing))
        .await?
        .ok_or(KeystoreError::Corrupt("no key ring"))?;
    unwrap(&v.blob, v.version, wrapper).await
}

/// Rewrites a format-1 ring as format 2 (authenticated), its blobs not yet migrated.
pub async fn upgrade_legacy(store: &Arc<dyn BlobStore>, wrapper: &dyn KeyWrapper) -> Result<u64, KeystoreError> {
    let (opened, mut ring, active) = current(store, wrapper).await?;
    ring.blobs_sealed_with_generation = false;
    write(store, ring, &active, Expect::Version(opened.generation)).await
}

/// Rewrites the ring as format 2 with `blobs_sealed_with_generation` set: called once the
/// boot's migration re-sealed every version-1 blob. Returns the ring's new generation.
pub async fn mark_blobs_sealed_with_generation(
    store: &Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
) -> Result<u64, KeystoreError> {
    let (opened, mut ring, active) = current(store, wrapper).await?;
    ring.blobs_sealed_with_generation = true;
    write(store, ring, &active, Expect::Version(opened.generation)).await
}

/// Rotates the data key: generates a new one, makes it active in the stored ring (older
/// keys stay, so their blobs still open), and returns the new sealer. Compare-and-swap on
/// the ring, so two rotations cannot drop each other's key.
pub async fn rotate(store: &Arc<dyn BlobStore>, wrapper: &dyn KeyWrapper) -> Result<Sealer, KeystoreError> {
    let (opened, mut ring, _) = current(store, wrapper).await?;
    let (key, wrapped) = wrapper.generate().await?;
    ring.active = hex::encode(key.id());
    ring.keys.push(WrappedKey {
        id: hex::encode(key.id()),
        wrapped: base64::Engine::encode(&b64(), &wrapped),
        created_at: now(),
    });
    write(store, ring, &key, Expect::Version(opened.generation)).await?;
    tracing::info!(key_id = %hex::encode(key.id()), "data key rotated; older keys kept until their blobs are re-sealed");
    Ok(current(store, wrapper).await?.0.sealer)
}

/// Drops from the stored ring every key that no blob still uses (after
/// [`super::Keystore::reseal_all`]); returns the ids dropped.
pub async fn prune(
    store: &Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
    in_use: &[KeyId],
) -> Result<Vec<KeyId>, KeystoreError> {
    let (opened, mut ring, active) = current(store, wrapper).await?;
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
    write(store, ring, &active, Expect::Version(opened.generation)).await?;
    Ok(dropped)
}

/// Writes a format-1 ring (tests of the migration only): what builds before format 2
/// stored.
#[doc(hidden)]
pub async fn write_legacy_for_tests(
    store: &Arc<dyn BlobStore>,
    wrapper: &dyn KeyWrapper,
) -> Result<Sealer, KeystoreError> {
    let (key, wrapped) = wrapper.generate().await?;
    let ring = KeyRingFile::first(LEGACY_FORMAT, wrapper, &key, &wrapped);
    let mut json = serde_json::to_value(&ring).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    if let Some(obj) = json.as_object_mut() {
        obj.remove("blobsSealedWithGeneration");
    }
    let bytes = serde_json::to_vec_pretty(&json).map_err(|_| KeystoreError::Seal("key ring encoding"))?;
    let s = store.clone();
    blocking(move || s.put(&BlobName::KeyRing, &bytes, Expect::Absent)).await?;
    let older = wrapper.legacy_key().into_iter().collect();
    Ok(Sealer::with_ring(key, older))
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::keystore::{LocalKeyWrapper, MemoryBlobStore};
    use tandem_core::AccountId;

    #[tokio::test]
    async fn a_ring_opens_only_under_its_own_master_key() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let a = LocalKeyWrapper::new(Zeroizing::new([1; 32]));
        let sealer = open(&store, &a).await.unwrap().sealer;
        let id = AccountId::random().unwrap();
        let blob = sealer.seal(&id, 1, b"share").unwrap();
        // Second boot, same master key: same active key, the blob opens.
        let again = open(&store, &a).await.unwrap().sealer;
        assert_eq!(again.active_key_id(), sealer.active_key_id());
        assert_eq!(&again.open(&id, 1, &blob).unwrap()[..], b"share");
        // Another master key cannot unwrap the ring at all.
        let b = LocalKeyWrapper::new(Zeroizing::new([2; 32]));
        let err = open(&store, &b).await.err().unwrap();
        assert!(matches!(err, KeystoreError::Wrap(WrapError::Unwrap(_))), "{err:?}");
        // And a blob of another enclave (its own ring) does not open here.
        let other_store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let other = open(&other_store, &b).await.unwrap().sealer;
        assert!(matches!(other.open(&id, 1, &blob), Err(KeystoreError::Corrupt(_))));
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_until_pruned() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([3; 32]));
        let first = open(&store, &w).await.unwrap().sealer;
        let id = AccountId::random().unwrap();
        let old_blob = first.seal(&id, 1, b"old").unwrap();
        let rotated = rotate(&store, &w).await.unwrap();
        assert_ne!(rotated.active_key_id(), first.active_key_id());
        assert_eq!(&rotated.open(&id, 1, &old_blob).unwrap()[..], b"old");
        // A reboot sees the rotation.
        let rebooted = open(&store, &w).await.unwrap().sealer;
        assert_eq!(rebooted.active_key_id(), rotated.active_key_id());
        assert_eq!(&rebooted.open(&id, 1, &old_blob).unwrap()[..], b"old");
        // Nothing uses the first key any more: prune it; its blobs stop opening.
        let dropped = prune(&store, &w, &[rotated.active_key_id()]).await.unwrap();
        assert_eq!(dropped, vec![first.active_key_id()]);
        let pruned = open(&store, &w).await.unwrap().sealer;
        assert!(pruned.open(&id, 1, &old_blob).is_err());
    }

    async fn edited(store: &Arc<dyn BlobStore>, edit: impl FnOnce(&mut serde_json::Value)) {
        let ring = store.get(&BlobName::KeyRing).unwrap().unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&ring.blob).unwrap();
        edit(&mut json);
        store
            .put(&BlobName::KeyRing, &serde_json::to_vec(&json).unwrap(), Expect::Any)
            .unwrap();
    }

    #[tokio::test]
    async fn a_tampered_ring_is_refused() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([4; 32]));
        open(&store, &w).await.unwrap();
        edited(&store, |json| {
            json["keys"][0]["id"] = serde_json::Value::String("0000000000000000".into())
        })
        .await;
        assert!(matches!(open(&store, &w).await, Err(KeystoreError::Corrupt(_))));
    }

    /// Review finding H2, attack 3: the host names an older key of the ring active (to
    /// make new blobs use a rotated-out key). The ring's MAC refuses the edit.
    #[tokio::test]
    async fn host_renaming_the_active_key_of_the_ring_is_refused() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([5; 32]));
        let first = open(&store, &w).await.unwrap().sealer;
        rotate(&store, &w).await.unwrap();
        edited(&store, |json| {
            json["active"] = serde_json::Value::String(hex::encode(first.active_key_id()))
        })
        .await;
        let err = open(&store, &w).await.err().unwrap();
        assert!(
            matches!(err, KeystoreError::Corrupt(m) if m.contains("does not authenticate")),
            "{err:?}"
        );
    }

    /// Dropping the MAC (downgrading the ring to format 1) is an edit too.
    #[tokio::test]
    async fn host_stripping_the_rings_mac_is_refused() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        let w = LocalKeyWrapper::new(Zeroizing::new([6; 32]));
        open(&store, &w).await.unwrap();
        edited(&store, |json| {
            json.as_object_mut().unwrap().remove("mac");
        })
        .await;
        assert!(matches!(open(&store, &w).await, Err(KeystoreError::Corrupt(_))));
    }
}
