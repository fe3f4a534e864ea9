//! Authenticated encryption of share blobs under the data key.
//!
//! ```text
//!  "TDB" │ version (1) │ key id (8) │ nonce (24) │ XChaCha20-Poly1305 ciphertext + tag
//!  associated data = "tandem/v1/blob" ‖ version ‖ account id (16) ‖ role (2 = enclave) ‖ key id
//! ```
//!
//! In mock mode the data key is a local master key file (mode 0600); in Nitro mode it will
//! be a KMS-wrapped key (a later issue), behind the same `Sealer`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use tandem_core::AccountId;
use zeroize::Zeroizing;

use super::KeystoreError;

const MAGIC: &[u8; 3] = b"TDB";
const VERSION: u8 = 1;
const ROLE_ENCLAVE: u8 = 2;
const HEADER_LEN: usize = 3 + 1 + 8 + 24;

/// Seals and opens blobs with one data key.
pub struct Sealer {
    key: Zeroizing<[u8; 32]>,
    key_id: [u8; 8],
}

impl Sealer {
    /// A sealer over a 32-byte data key.
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        let digest = Sha256::digest([&b"tandem/v1/key-id"[..], &key[..]].concat());
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&digest[..8]);
        Sealer { key, key_id }
    }

    /// Loads the master key file, or creates it (32 random bytes, mode 0600) if absent.
    /// A key file readable by group or others is refused: it would expose every share.
    pub fn load_or_create_master_key(path: &Path) -> Result<Self, KeystoreError> {
        let io = |what: &str, e: std::io::Error| KeystoreError::Io(format!("{what} {}: {}", path.display(), e.kind()));
        match fs::read(path) {
            Ok(bytes) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = fs::metadata(path).map_err(|e| io("stat", e))?.permissions().mode();
                    if mode & 0o077 != 0 {
                        return Err(KeystoreError::Io(format!(
                            "master key {} has mode {:o}; it must be readable by its owner only (chmod 600)",
                            path.display(),
                            mode & 0o777
                        )));
                    }
                }
                let bytes = Zeroizing::new(bytes);
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeystoreError::Corrupt("master key file is not 32 bytes"))?;
                Ok(Sealer::new(Zeroizing::new(key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut key[..]).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io("create directory for", e))?;
                }
                let mut opts = OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path).map_err(|e| io("create", e))?;
                f.write_all(&key[..]).map_err(|e| io("write", e))?;
                f.sync_all().map_err(|e| io("fsync", e))?;
                Ok(Sealer::new(key))
            }
            Err(e) => Err(io("read", e)),
        }
    }

    fn aad(&self, id: &AccountId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(b"tandem/v1/blob");
        aad.push(VERSION);
        aad.extend_from_slice(id.as_bytes());
        aad.push(ROLE_ENCLAVE);
        aad.extend_from_slice(&self.key_id);
        aad
    }

    /// Encrypts `plaintext` as the blob of account `id`.
    pub fn seal(&self, id: &AccountId, plaintext: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| KeystoreError::Seal("system RNG failed"))?;
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let aad = self.aad(id);
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
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Authenticates and decrypts the blob of account `id`.
    pub fn open(&self, id: &AccountId, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        if blob.len() < HEADER_LEN + 16 || &blob[..3] != MAGIC {
            return Err(KeystoreError::Corrupt("not a sealed blob (truncated or wrong format)"));
        }
        if blob[3] != VERSION {
            return Err(KeystoreError::Corrupt("unknown blob format version"));
        }
        if blob[4..12] != self.key_id {
            return Err(KeystoreError::Corrupt("blob was sealed under another data key"));
        }
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let aad = self.aad(id);
        cipher
            .decrypt(
                XNonce::from_slice(&blob[12..HEADER_LEN]),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeystoreError::Corrupt("blob does not authenticate (corrupt, or another account's)"))
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
        let blob = s.seal(&id, b"share bytes").unwrap();
        assert_eq!(&s.open(&id, &blob).unwrap()[..], b"share bytes");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x80;
            assert!(s.open(&id, &bad).is_err(), "flip at {i} accepted");
        }
        assert!(s.open(&id, &blob[..blob.len() - 1]).is_err());
        let other = AccountId::random().unwrap();
        assert!(
            s.open(&other, &blob).is_err(),
            "a blob copied to another account id must be refused"
        );
        assert!(
            sealer(2).open(&id, &blob).is_err(),
            "another master key must be refused"
        );
    }

    #[test]
    fn master_key_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = Sealer::load_or_create_master_key(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Sealer::load_or_create_master_key(&path).unwrap();
        let id = AccountId::random().unwrap();
        assert_eq!(&b.open(&id, &a.seal(&id, b"x").unwrap()).unwrap()[..], b"x");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Sealer::load_or_create_master_key(&path).is_err());
    }
}
