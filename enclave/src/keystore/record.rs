//! What the enclave stores per account (inside the sealed blob).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tandem_core::{AccountId, KeyShare, PublicKey, ShareId};
use zeroize::Zeroizing;

use super::KeystoreError;

/// One account as the enclave holds it, unsealed.
#[derive(Clone)]
pub struct StoredAccount {
    /// The account id (bound into the blob's associated data, not stored inside).
    pub id: AccountId,
    /// Label given at creation.
    pub label: Option<String>,
    /// The device's self-chosen id given at creation.
    pub client_node_id: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// The device's registered auth public key (Ed25519): every flow on the account must
    /// be authorized by it.
    pub auth_key: Option<[u8; 32]>,
    /// The enclave's current share.
    pub current: Arc<KeyShare>,
    /// A refreshed share the device has not used yet. It replaces `current` as soon as the
    /// device starts a flow with it, which proves the device stored its half.
    pub pending: Option<Arc<KeyShare>>,
    /// Set when a protocol abort required excluding the device (DKLs23 OT consistency
    /// failure); the account then refuses to sign.
    pub locked: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    version: u8,
    label: Option<String>,
    client_node_id: Option<String>,
    created_at: u64,
    auth_key: Option<[u8; 32]>,
    current: Vec<u8>,
    pending: Option<Vec<u8>>,
    locked: Option<String>,
}

impl StoredAccount {
    /// The account's public key.
    pub fn public_key(&self) -> PublicKey {
        self.current.public_key()
    }

    /// The share of generation `id`, current or pending, and whether it is the pending one.
    pub fn share_for(&self, id: ShareId) -> Option<(Arc<KeyShare>, bool)> {
        if self.current.share_id() == id {
            return Some((self.current.clone(), false));
        }
        match &self.pending {
            Some(p) if p.share_id() == id => Some((p.clone(), true)),
            _ => None,
        }
    }

    pub(super) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let share = |s: &KeyShare| s.to_bytes().map_err(|_| KeystoreError::Seal("share failed to encode"));
        let current = share(&self.current)?;
        let pending = match &self.pending {
            Some(p) => Some(share(p)?),
            None => None,
        };
        let enc = Encoded {
            version: 2,
            label: self.label.clone(),
            client_node_id: self.client_node_id.clone(),
            created_at: self.created_at,
            auth_key: self.auth_key,
            current: current.to_vec(),
            pending: pending.as_ref().map(|p| p.to_vec()),
            locked: self.locked.clone(),
        };
        let out = postcard::to_allocvec(&enc).map_err(|_| KeystoreError::Seal("record failed to encode"));
        let mut enc = enc;
        zeroize::Zeroize::zeroize(&mut enc.current);
        if let Some(p) = enc.pending.as_mut() {
            zeroize::Zeroize::zeroize(p);
        }
        out.map(Zeroizing::new)
    }

    pub(super) fn decode(id: AccountId, bytes: &[u8]) -> Result<Self, KeystoreError> {
        let mut enc: Encoded =
            postcard::from_bytes(bytes).map_err(|_| KeystoreError::Corrupt("record does not decode"))?;
        if enc.version != 2 {
            return Err(KeystoreError::Corrupt("unknown record version"));
        }
        let share = |b: &[u8]| {
            KeyShare::from_bytes(b)
                .map(Arc::new)
                .map_err(|_| KeystoreError::Corrupt("stored share does not decode"))
        };
        let current = share(&enc.current)?;
        let pending = match &enc.pending {
            Some(p) => Some(share(p)?),
            None => None,
        };
        zeroize::Zeroize::zeroize(&mut enc.current);
        if let Some(p) = enc.pending.as_mut() {
            zeroize::Zeroize::zeroize(p);
        }
        if pending.as_ref().is_some_and(|p| p.public_key() != current.public_key()) {
            return Err(KeystoreError::Corrupt("pending share is of another key"));
        }
        Ok(StoredAccount {
            id,
            label: enc.label,
            client_node_id: enc.client_node_id,
            created_at: enc.created_at,
            auth_key: enc.auth_key,
            current,
            pending,
            locked: enc.locked,
        })
    }
}

impl std::fmt::Debug for StoredAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccount")
            .field("id", &self.id)
            .field("public_key", &self.public_key())
            .field("has_pending", &self.pending.is_some())
            .field("locked", &self.locked.is_some())
            .finish_non_exhaustive()
    }
}
