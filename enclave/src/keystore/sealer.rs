//! Authenticated encryption of share blobs under the data keys of a key ring.
//!
//! ```text
//!  "TDB" │ version (2) │ key id (8) │ nonce (24) │ XChaCha20-Poly1305 ciphertext + tag
//!  associated data = "tandem/v2/blob" ‖ version ‖ account id (16) ‖ role (2 = enclave)
//!                    ‖ key id ‖ generation (u64 BE)
//! ```
//!
//! The *generation* is the blob's version in the store (1 on creation, +1 on every write):
//! the store reports it beside the blob, and because it is bound here, a host that
//! reports another number for a blob makes it fail to open, so the only thing it can do
//! is serve an older (blob, generation) pair whole — which the keystore refuses against
//! the largest generation it saw ([`crate::guard`]). Version-1 blobs (before generations)
//! still open, under their own associated data, and are re-sealed as version 2 at boot.
//!
//! The key id names the data key (the first 8 bytes of SHA-256("tandem/v1/key-id" ‖ key)),
//! so after a rotation the sealer still opens blobs written under older keys of its ring
//! while sealing new ones under the active key. A blob that is truncated, corrupted, of
//! an unknown version, sealed under a key this enclave does not hold, or copied under
//! another account's name fails to open: [`KeystoreError::Corrupt`] for that account only.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use tandem_core::AccountId;
use zeroize::Zeroizing;

use super::KeystoreError;

const MAGIC: &[u8; 3] = b"TDB";
const VERSION: u8 = 2;
const LEGACY_VERSION: u8 = 1;
const ROLE_ENCLAVE: u8 = 2;
const HEADER_LEN: usize = 3 + 1 + 8 + 24;
const TAG_LEN: usize = 16;

/// Bytes a sealed blob adds to its plaintext (header and tag).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The id of a data key: public, derived from the key, carried in every blob header.
pub type KeyId = [u8; 8];

/// A 256-bit data key, zeroized on drop and never printed.
pub struct DataKey {
    id: KeyId,
    key: Zeroizing<[u8; 32]>,
}

impl DataKey {
    /// Wraps raw key bytes.
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        let digest = Sha256::digest([&b"tandem/v1/key-id"[..], &key[..]].concat());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        DataKey { id, key }
    }

    /// Takes a 32-byte slice (e.g. a KMS plaintext); anything else is refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeystoreError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeystoreError::Corrupt("data key is not 32 bytes"))?;
        Ok(DataKey::new(Zeroizing::new(key)))
    }

    /// A fresh random key from the OS RNG.
    pub fn generate() -> Result<Self, KeystoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
        Ok(DataKey::new(key))
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key bytes (for wrapping them).
    pub fn expose(&self) -> &[u8; 32] {
        &self.key
    }

    /// A subkey for another purpose (HKDF-SHA256, `label` as info), so the data key itself
    /// is only ever used for sealing.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // invariant: 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        let _ = hkdf::Hkdf::<Sha256>::new(None, &self.key[..]).expand(label, &mut out[..]);
        out
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({}, redacted)", hex::encode(self.id))
    }
}

/// Seals under the active data key; opens under any key of the ring.
pub struct Sealer {
    active: DataKey,
    older: Vec<DataKey>,
}

impl Sealer {
    /// A sealer with one data key.
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Sealer::with_ring(DataKey::new(key), Vec::new())
    }

    /// A sealer that seals under `active` and still opens blobs sealed under `older`
    /// (keys rotated out but not yet re-sealed away).
    pub fn with_ring(active: DataKey, older: Vec<DataKey>) -> Self {
        let older = older.into_iter().filter(|k| k.id != active.id).collect();
        Sealer { active, older }
    }

    /// The id new blobs are sealed under.
    pub fn active_key_id(&self) -> KeyId {
        self.active.id
    }

    /// The ids of every key this sealer can open with, active first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        std::iter::once(self.active.id)
            .chain(self.older.iter().map(|k| k.id))
            .collect()
    }

    /// The key id in a blob's header, if it has a well-formed header.
    pub fn blob_key_id(blob: &[u8]) -> Option<KeyId> {
        if blob.len() < HEADER_LEN || &blob[..3] != MAGIC {
            return None;
        }
        blob[4..12].try_into().ok()
    }

    fn key(&self, id: &[u8]) -> Option<&DataKey> {
        std::iter::once(&self.active)
            .chain(self.older.iter())
            .find(|k| k.id[..] == *id)
    }

    fn aad(version: u8, id: &AccountId, key_id: &KeyId, generation: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        if version == LEGACY_VERSION {
            aad.extend_from_slice(b"tandem/v1/blob");
        } else {
            aad.extend_from_slice(b"tandem/v2/blob");
        }
        aad.push(version);
        aad.extend_from_slice(id.as_bytes());
        aad.push(ROLE_ENCLAVE);
        aad.extend_from_slice(key_id);
        if version != LEGACY_VERSION {
            aad.extend_from_slice(&generation.to_be_bytes());
        }
        aad
    }

    /// The format version of a blob (1: before generations; 2: current), if well-formed.
    pub fn blob_version(blob: &[u8]) -> Option<u8> {
        (blob.len() >= HEADER_LEN && &blob[..3] == MAGIC).then(|| blob[3])
    }

    /// Encrypts `plaintext` as the blob of account `id` at `generation` (the version the
    /// store will give it), under the active key.
    pub fn seal(&self, id: &AccountId, generation: u64, plaintext: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.seal_as(VERSION, id, generation, plaintext)
    }

    /// Seals in the version-1 format (tests of the migration only).
    #[doc(hidden)]
    pub fn seal_v1_for_tests(&self, id: &AccountId, plaintext: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.seal_as(LEGACY_VERSION, id, 0, plaintext)
    }

    fn seal_as(
        &self,
        version: u8,
        id: &AccountId,
        generation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
        let cipher = XChaCha20Poly1305::new((&*self.active.key).into());
        let aad = Self::aad(version, id, &self.active.id, generation);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::Seal("encryption failed"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(version);
        out.extend_from_slice(&self.active.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Authenticates and decrypts the blob of account `id` that the store reports at
    /// `generation`. Version-1 blobs open too (the caller re-seals them); whether a
    /// version-1 blob is still acceptable is the caller's decision.
    pub fn open(&self, id: &AccountId, generation: u64, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        if blob.len() < HEADER_LEN + TAG_LEN || &blob[..3] != MAGIC {
            return Err(KeystoreError::Corrupt("not a sealed blob (truncated or wrong format)"));
        }
        let version = blob[3];
        if version != VERSION && version != LEGACY_VERSION {
            return Err(KeystoreError::Corrupt("unknown blob format version"));
        }
        let key = self.key(&blob[4..12]).ok_or(KeystoreError::Corrupt(
            "blob was sealed under a data key this enclave does not hold",
        ))?;
        let cipher = XChaCha20Poly1305::new((&*key.key).into());
        let aad = Self::aad(version, id, &key.id, generation);
        cipher
            .decrypt(
                XNonce::from_slice(&blob[12..HEADER_LEN]),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                KeystoreError::Corrupt(
                    "blob does not authenticate (corrupt, another account's, or a forged generation)",
                )
            })
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("active", &hex::encode(self.active.id))
            .field("older", &self.older.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(b: u8) -> Sealer {
        Sealer::new(Zeroizing::new([b; 32]))
    }

    #[test]
    fn round_trip_and_every_tamper_is_refused() {
        let s = sealer(1);
        let id = AccountId::random().unwrap();
        let blob = s.seal(&id, 4, b"share bytes").unwrap();
        assert_eq!(blob.len(), b"share bytes".len() + SEAL_OVERHEAD);
        assert_eq!(&s.open(&id, 4, &blob).unwrap()[..], b"share bytes");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x80;
            assert!(
                matches!(s.open(&id, 4, &bad), Err(KeystoreError::Corrupt(_))),
                "flip at {i} accepted"
            );
        }
        for n in [0, 3, HEADER_LEN, blob.len() - 1] {
            assert!(s.open(&id, 4, &blob[..n]).is_err(), "truncation to {n} accepted");
        }
        let mut future = blob.clone();
        future[3] = 3;
        assert!(matches!(
            s.open(&id, 4, &future),
            Err(KeystoreError::Corrupt("unknown blob format version"))
        ));
        let other = AccountId::random().unwrap();
        assert!(
            s.open(&other, 4, &blob).is_err(),
            "a blob copied to another account id must be refused"
        );
        assert!(
            sealer(2).open(&id, 4, &blob).is_err(),
            "another master key must be refused"
        );
        for forged in [3, 5, 0, u64::MAX] {
            assert!(
                s.open(&id, forged, &blob).is_err(),
                "a store that reports generation {forged} for a generation-4 blob must be caught"
            );
        }
        // A version-1 blob (before generations) still opens, whatever the store reports.
        let legacy = s.seal_v1_for_tests(&id, b"old").unwrap();
        assert_eq!(Sealer::blob_version(&legacy), Some(1));
        assert_eq!(&s.open(&id, 7, &legacy).unwrap()[..], b"old");
    }

    #[test]
    fn rotation_seals_under_the_new_key_and_still_opens_the_old() {
        let id = AccountId::random().unwrap();
        let old = sealer(1);
        let old_blob = old.seal(&id, 1, b"old").unwrap();
        let rotated = Sealer::with_ring(
            DataKey::new(Zeroizing::new([9; 32])),
            vec![DataKey::new(Zeroizing::new([1; 32]))],
        );
        assert_eq!(&rotated.open(&id, 1, &old_blob).unwrap()[..], b"old");
        let new_blob = rotated.seal(&id, 1, b"new").unwrap();
        assert_eq!(Sealer::blob_key_id(&new_blob), Some(rotated.active_key_id()));
        assert_eq!(Sealer::blob_key_id(&old_blob), Some(old.active_key_id()));
        assert!(old.open(&id, 1, &new_blob).is_err(), "the old ring lacks the new key");
        // Once the old key is dropped from the ring, its blobs no longer open.
        let pruned = Sealer::with_ring(DataKey::new(Zeroizing::new([9; 32])), vec![]);
        assert!(pruned.open(&id, 1, &old_blob).is_err());
        assert_eq!(&pruned.open(&id, 1, &new_blob).unwrap()[..], b"new");
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = DataKey::new(Zeroizing::new([0xab; 32]));
        let text = format!("{k:?} {:?}", sealer(0xab));
        assert!(!text.contains("abababab"), "{text}");
    }
}
