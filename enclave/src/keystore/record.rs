//! What the enclave stores per account (inside the sealed blob).
//!
//! Record versions: 2 (before the security work: a free-text lock, no OT fingerprints)
//! is still read and becomes version 3 at the account's next write; 3 is written.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tandem_core::engine::RefreshKind;
use tandem_core::{AccountId, KeyShare, PublicKey, ShareId};
use zeroize::Zeroizing;

use super::KeystoreError;

const RECORD_VERSION: u8 = 3;

/// One account as the enclave holds it, unsealed.
#[derive(Clone)]
pub struct StoredAccount {
    /// The account id (bound into the blob's associated data, not stored inside).
    pub id: AccountId,
    /// The record's generation: the blob's version, bound into its associated data (not
    /// stored inside). 0 for a record not yet written.
    pub generation: u64,
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
    /// The device's OT-state fingerprint for the current share, when known (accounts made
    /// before fingerprints existed learn it at their next recovery check).
    pub device_ot: Option<[u8; 32]>,
    /// A refreshed share the device has not confirmed yet. It replaces `current` as soon
    /// as the device proves it holds its half (a signature or a recovery check with it).
    pub pending: Option<Pending>,
    /// Set when a protocol abort required excluding the device: the share whose OT state
    /// was probed may not be used again.
    pub locked: Option<Lock>,
}

/// A refreshed share waiting for the device's confirmation.
#[derive(Clone)]
pub struct Pending {
    /// The enclave's new share.
    pub share: Arc<KeyShare>,
    /// The refresh that made it (a complete one can replace a banned share).
    pub kind: RefreshKind,
    /// The device's OT-state fingerprint for its new share.
    pub device_ot: [u8; 32],
}

/// Why and which shares are locked: every share the account had when a consistency check
/// failed — the probed one and any other derived from the same OT state (a fast refresh
/// keeps leaked bits). Only a share made by a complete refresh after the lock is usable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The banned share generations.
    pub share_ids: Vec<ShareId>,
    /// The protocol's reason (check names only; no secret values).
    pub reason: String,
    /// When, Unix seconds.
    pub at: u64,
}

#[derive(Serialize, Deserialize)]
struct EncodedV2 {
    version: u8,
    label: Option<String>,
    client_node_id: Option<String>,
    created_at: u64,
    auth_key: Option<[u8; 32]>,
    current: Vec<u8>,
    pending: Option<Vec<u8>>,
    locked: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct EncodedPending {
    share: Vec<u8>,
    kind: RefreshKind,
    device_ot: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct EncodedV3 {
    version: u8,
    label: Option<String>,
    client_node_id: Option<String>,
    created_at: u64,
    auth_key: Option<[u8; 32]>,
    current: Vec<u8>,
    device_ot: Option<[u8; 32]>,
    pending: Option<EncodedPending>,
    locked: Option<Lock>,
}

impl Drop for EncodedV3 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.current);
        if let Some(p) = self.pending.as_mut() {
            zeroize::Zeroize::zeroize(&mut p.share);
        }
    }
}

impl Drop for EncodedV2 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.current);
        if let Some(p) = self.pending.as_mut() {
            zeroize::Zeroize::zeroize(p);
        }
    }
}

fn share(bytes: &[u8]) -> Result<Arc<KeyShare>, KeystoreError> {
    KeyShare::from_bytes(bytes)
        .map(Arc::new)
        .map_err(|_| KeystoreError::Corrupt("stored share does not decode"))
}

fn share_bytes(s: &KeyShare) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    s.to_bytes().map_err(|_| KeystoreError::Seal("share failed to encode"))
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
            Some(p) if p.share.share_id() == id => Some((p.share.clone(), true)),
            _ => None,
        }
    }

    /// Whether share `id` is locked.
    pub fn is_locked(&self, id: ShareId) -> bool {
        self.locked.as_ref().is_some_and(|l| l.share_ids.contains(&id))
    }

    /// The share generations a lock made now would ban: the current share and a pending
    /// one.
    pub fn live_share_ids(&self) -> Vec<ShareId> {
        std::iter::once(self.current.share_id())
            .chain(self.pending.as_ref().map(|p| p.share.share_id()))
            .collect()
    }

    /// The record with every live share locked, for `reason`.
    pub fn locked_now(&self, reason: String, at: u64) -> StoredAccount {
        let mut share_ids = self.locked.as_ref().map(|l| l.share_ids.clone()).unwrap_or_default();
        for id in self.live_share_ids() {
            if !share_ids.contains(&id) {
                share_ids.push(id);
            }
        }
        StoredAccount {
            locked: Some(Lock { share_ids, reason, at }),
            ..self.clone()
        }
    }

    /// The record after the device confirmed the pending share `id`: it becomes current
    /// and the old share is deleted. A lock goes with the shares it named (a confirmed
    /// share is never a locked one: locked shares are refused before any step).
    pub fn promoted(&self, id: ShareId) -> Option<StoredAccount> {
        let pending = self.pending.as_ref().filter(|p| p.share.share_id() == id)?;
        Some(StoredAccount {
            current: pending.share.clone(),
            device_ot: Some(pending.device_ot),
            pending: None,
            locked: self.locked.clone().filter(|l| l.share_ids.contains(&id)),
            ..self.clone()
        })
    }

    pub(super) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let current = share_bytes(&self.current)?;
        let pending = match &self.pending {
            Some(p) => Some(EncodedPending {
                share: share_bytes(&p.share)?.to_vec(),
                kind: p.kind,
                device_ot: p.device_ot,
            }),
            None => None,
        };
        let enc = EncodedV3 {
            version: RECORD_VERSION,
            label: self.label.clone(),
            client_node_id: self.client_node_id.clone(),
            created_at: self.created_at,
            auth_key: self.auth_key,
            current: current.to_vec(),
            device_ot: self.device_ot,
            pending,
            locked: self.locked.clone(),
        };
        postcard::to_allocvec(&enc)
            .map(Zeroizing::new)
            .map_err(|_| KeystoreError::Seal("record failed to encode"))
    }

    /// Decodes an opened record (version 2 or 3) of account `id` at `generation`.
    pub fn decode(id: AccountId, generation: u64, bytes: &[u8]) -> Result<Self, KeystoreError> {
        let account = match bytes.first() {
            Some(&RECORD_VERSION) => Self::decode_v3(id, bytes)?,
            Some(2) => Self::decode_v2(id, bytes)?,
            _ => return Err(KeystoreError::Corrupt("unknown record version")),
        };
        if account
            .pending
            .as_ref()
            .is_some_and(|p| p.share.public_key() != account.current.public_key())
        {
            return Err(KeystoreError::Corrupt("pending share is of another key"));
        }
        Ok(StoredAccount { generation, ..account })
    }

    fn decode_v3(id: AccountId, bytes: &[u8]) -> Result<Self, KeystoreError> {
        let enc: EncodedV3 =
            postcard::from_bytes(bytes).map_err(|_| KeystoreError::Corrupt("record does not decode"))?;
        let pending = match &enc.pending {
            Some(p) => Some(Pending {
                share: share(&p.share)?,
                kind: p.kind,
                device_ot: p.device_ot,
            }),
            None => None,
        };
        Ok(StoredAccount {
            id,
            generation: 0,
            label: enc.label.clone(),
            client_node_id: enc.client_node_id.clone(),
            created_at: enc.created_at,
            auth_key: enc.auth_key,
            current: share(&enc.current)?,
            device_ot: enc.device_ot,
            pending,
            locked: enc.locked.clone(),
        })
    }

    /// Version 2: the lock was a reason only (it applied to the current share), and no
    /// OT fingerprints were kept. A pending share of version 2 came from a fast refresh.
    fn decode_v2(id: AccountId, bytes: &[u8]) -> Result<Self, KeystoreError> {
        let enc: EncodedV2 =
            postcard::from_bytes(bytes).map_err(|_| KeystoreError::Corrupt("record does not decode"))?;
        let current = share(&enc.current)?;
        let pending = match &enc.pending {
            Some(p) => Some(Pending {
                share: share(p)?,
                kind: RefreshKind::Fast,
                // Unknown: recorded as all-zero, which no fingerprint equals; the recovery
                // check then learns the real one (see `device_ot`).
                device_ot: [0; 32],
            }),
            None => None,
        };
        let locked = enc.locked.clone().map(|reason| Lock {
            share_ids: std::iter::once(current.share_id())
                .chain(pending.as_ref().map(|p| p.share.share_id()))
                .collect(),
            reason,
            at: enc.created_at,
        });
        Ok(StoredAccount {
            id,
            generation: 0,
            label: enc.label.clone(),
            client_node_id: enc.client_node_id.clone(),
            created_at: enc.created_at,
            auth_key: enc.auth_key,
            current,
            device_ot: None,
            pending,
            locked,
        })
    }

    /// Encodes as the current record version (the fuzzer's seeds: a record as the keystore
    /// seals it).
    #[doc(hidden)]
    pub fn encode_for_seeds(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        self.encode()
    }

    /// Encodes as record version 2 (tests of the migration only).
    #[doc(hidden)]
    pub fn encode_v2_for_tests(&self) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let enc = EncodedV2 {
            version: 2,
            label: self.label.clone(),
            client_node_id: self.client_node_id.clone(),
            created_at: self.created_at,
            auth_key: self.auth_key,
            current: share_bytes(&self.current)?.to_vec(),
            pending: match &self.pending {
                Some(p) => Some(share_bytes(&p.share)?.to_vec()),
                None => None,
            },
            locked: self.locked.as_ref().map(|l| l.reason.clone()),
        };
        postcard::to_allocvec(&enc)
            .map(Zeroizing::new)
            .map_err(|_| KeystoreError::Seal("record failed to encode"))
    }
}

impl std::fmt::Debug for StoredAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccount")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("public_key", &self.public_key())
            .field("has_pending", &self.pending.is_some())
            .field("locked", &self.locked.is_some())
            .finish_non_exhaustive()
    }
}
