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
//! The ring itself (its format, its authentication, rotation and pruning) is
//! [`super::ring`].

use std::fs;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::sealer::DataKey;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
