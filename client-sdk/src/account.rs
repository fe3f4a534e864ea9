//! The device's material for one account.
//!
//! Besides the share and the auth key, an account carries two facts the device checks
//! and must keep across restarts (they are in [`Account::to_json`] and so in backups):
//! * the **generation** — the largest version of the enclave's record this device saw in
//!   an authenticated answer. An enclave that answers with an older one (its store was
//!   rolled back) is refused.
//! * the **misbehaved mark** — set when the enclave's messages failed an OT consistency
//!   check, which DKLs23 answers with a ban: the share whose OT state was probed is not
//!   used again; only a complete refresh (new OT state) clears the mark.
//!
//! Both live in a state shared by the account's clones, so a flow run through any clone
//! (an alloy signer, say) updates what the next `to_json` stores.
//!
//! File versions: 2 (no generation, no mark) is read as generation 0, unmarked; 3 is written.

use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use tandem_core::auth::DeviceAuthKey;
use tandem_core::{AccountId, KeyShare, PublicKey, Role};
use zeroize::Zeroizing;

use crate::SdkError;

const FILE_VERSION: u32 = 3;

/// What the device learnt about the account from the enclave (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Observed {
    generation: u64,
    misbehaved: Option<String>,
}

/// One account as the device holds it: the account's public data, the device's key
/// share, and the device's auth key (which the enclave requires for every flow on the
/// account). The share is zeroized when the last copy is dropped and never appears in
/// `Debug` output; [`Account::to_json`] is the only way it leaves memory, and callers are
/// expected to store that JSON encrypted or with owner-only permissions.
#[derive(Clone)]
pub struct Account {
    id: AccountId,
    label: Option<String>,
    share: Arc<KeyShare>,
    auth: Arc<DeviceAuthKey>,
    observed: Arc<Mutex<Observed>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredAccount {
    version: u32,
    account_id: AccountId,
    #[serde(default)]
    label: Option<String>,
    address: String,
    public_key: PublicKey,
    /// The device share, hex of `KeyShare::to_bytes`.
    device_share: String,
    /// The device's Ed25519 auth key seed, hex.
    auth_key: String,
    /// The largest generation of the enclave's record seen (version 3).
    #[serde(default)]
    generation: u64,
    /// Why the enclave is excluded from using this share, if it is (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enclave_misbehaved: Option<String>,
}

impl Account {
    /// Builds an account from the DKG's result and the device's auth key.
    pub(crate) fn new(
        id: AccountId,
        label: Option<String>,
        share: KeyShare,
        auth: DeviceAuthKey,
        generation: u64,
    ) -> Result<Self, SdkError> {
        if share.role() != Role::Device {
            return Err(SdkError::InvalidInput("not a device share".into()));
        }
        Ok(Account {
            id,
            label,
            share: Arc::new(share),
            auth: Arc::new(auth),
            observed: Arc::new(Mutex::new(Observed {
                generation,
                misbehaved: None,
            })),
        })
    }

    /// Returns a copy of this account holding `share` (after a refresh) at `generation`.
    /// A complete refresh replaces the OT state, so it clears the misbehaved mark; a fast
    /// one keeps it.
    pub(crate) fn with_share(&self, share: KeyShare, generation: u64, complete: bool) -> Self {
        let before = self.observed();
        Account {
            id: self.id,
            label: self.label.clone(),
            share: Arc::new(share),
            auth: self.auth.clone(),
            observed: Arc::new(Mutex::new(Observed {
                generation: generation.max(before.generation),
                misbehaved: if complete { None } else { before.misbehaved },
            })),
        }
    }

    fn observed(&self) -> Observed {
        match self.observed.lock() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records a generation seen in an authenticated answer (the largest is kept).
    pub(crate) fn saw_generation(&self, generation: u64) {
        if let Ok(mut o) = self.observed.lock() {
            o.generation = o.generation.max(generation);
        }
    }

    /// Marks the enclave as excluded from this share: an OT consistency check failed.
    pub(crate) fn mark_misbehaved(&self, reason: &str) {
        let mut o = match self.observed.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        o.misbehaved.get_or_insert_with(|| reason.to_string());
    }

    /// The largest generation of the enclave's record this device saw.
    pub fn generation(&self) -> u64 {
        self.observed().generation
    }

    /// Why the enclave may not use this share any more (an OT consistency check failed),
    /// if it may not. Only a complete refresh clears it.
    pub fn enclave_misbehaved(&self) -> Option<String> {
        self.observed().misbehaved
    }

    /// The account's id at the enclave.
    pub fn id(&self) -> AccountId {
        self.id
    }

    /// The label given at creation.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The account's public key.
    pub fn public_key(&self) -> PublicKey {
        self.share.public_key()
    }

    /// The account's Ethereum address.
    pub fn address(&self) -> Address {
        Address::from(self.share.address().0)
    }

    /// The device share.
    pub(crate) fn share(&self) -> &Arc<KeyShare> {
        &self.share
    }

    /// The device's auth key.
    pub(crate) fn auth(&self) -> &DeviceAuthKey {
        &self.auth
    }

    /// The device's auth public key, as registered with the enclave.
    pub fn auth_public_key(&self) -> [u8; 32] {
        self.auth.public_key()
    }

    /// Serializes the account, share included, for storage. The string holds a secret:
    /// store it encrypted or with owner-only permissions, and let it drop soon.
    pub fn to_json(&self) -> Result<Zeroizing<String>, SdkError> {
        let share = self.share.to_bytes()?;
        let observed = self.observed();
        let stored = StoredAccount {
            version: FILE_VERSION,
            account_id: self.id,
            label: self.label.clone(),
            address: self.share.address().to_checksum(),
            public_key: self.public_key(),
            device_share: hex::encode(&share[..]),
            auth_key: hex::encode(&self.auth.seed()[..]),
            generation: observed.generation,
            enclave_misbehaved: observed.misbehaved,
        };
        let json = serde_json::to_string_pretty(&stored).map_err(|e| SdkError::Storage(e.to_string()))?;
        let mut stored = stored;
        zeroize::Zeroize::zeroize(&mut stored.device_share);
        zeroize::Zeroize::zeroize(&mut stored.auth_key);
        Ok(Zeroizing::new(json))
    }

    /// Parses [`Account::to_json`] output (version 2 or 3), checking that the share
    /// matches the recorded public key and address.
    pub fn from_json(json: &str) -> Result<Self, SdkError> {
        let mut stored: StoredAccount =
            serde_json::from_str(json).map_err(|e| SdkError::Storage(format!("account file does not parse: {e}")))?;
        if stored.version != 2 && stored.version != FILE_VERSION {
            return Err(SdkError::Storage(format!(
                "unknown account file version {}",
                stored.version
            )));
        }
        let bytes = Zeroizing::new(
            hex::decode(&stored.device_share).map_err(|_| SdkError::Storage("device share is not hex".into()))?,
        );
        zeroize::Zeroize::zeroize(&mut stored.device_share);
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&stored.auth_key, &mut seed[..])
            .map_err(|_| SdkError::Storage("auth key is not 32 bytes of hex".into()))?;
        zeroize::Zeroize::zeroize(&mut stored.auth_key);
        let auth = DeviceAuthKey::from_seed(&seed);
        let share = KeyShare::from_bytes(&bytes)?;
        if share.public_key() != stored.public_key || share.address().to_checksum() != stored.address {
            return Err(SdkError::Storage(
                "device share does not match the account's public key".into(),
            ));
        }
        let account = Account::new(stored.account_id, stored.label.clone(), share, auth, stored.generation)?;
        if let Some(reason) = &stored.enclave_misbehaved {
            account.mark_misbehaved(reason);
        }
        Ok(account)
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("address", &self.address())
            .field("generation", &self.generation())
            .field("enclave_misbehaved", &self.enclave_misbehaved().is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// An account from an in-process DKG (both parties here; about a second), for tests
    /// that need real account material but no enclave.
    fn make(label: &str) -> Account {
        let (share, _, id) = tandem_core::testing::dkg().unwrap();
        let auth = DeviceAuthKey::generate().unwrap();
        Account::new(id, Some(label.into()), share, auth, 1).unwrap()
    }

    /// One account, made once per test binary.
    pub(crate) fn test_account() -> Account {
        static A: OnceLock<Account> = OnceLock::new();
        A.get_or_init(|| make("alice")).clone()
    }

    /// A second, unrelated account.
    pub(crate) fn test_account_2() -> Account {
        static B: OnceLock<Account> = OnceLock::new();
        B.get_or_init(|| make("bob")).clone()
    }

    #[test]
    fn generation_and_mark_survive_the_file_and_version_2_files_still_read() {
        let a = make("carol");
        a.saw_generation(7);
        a.saw_generation(5);
        a.mark_misbehaved("OT consistency check failed");
        let back = Account::from_json(&a.to_json().unwrap()).unwrap();
        assert_eq!(back.generation(), 7);
        assert_eq!(
            back.enclave_misbehaved().as_deref(),
            Some("OT consistency check failed")
        );

        // A version-2 file (as the CLI wrote before generations existed).
        let mut v2: serde_json::Value = serde_json::from_str(&a.to_json().unwrap()).unwrap();
        v2["version"] = 2.into();
        v2.as_object_mut().unwrap().remove("generation");
        v2.as_object_mut().unwrap().remove("enclaveMisbehaved");
        let old = Account::from_json(&v2.to_string()).unwrap();
        assert_eq!(old.generation(), 0);
        assert_eq!(old.enclave_misbehaved(), None);
        assert_eq!(old.address(), a.address());
    }
}
