//! The device's material for one account.

use std::sync::Arc;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use tandem_core::auth::DeviceAuthKey;
use tandem_core::{AccountId, KeyShare, PublicKey, Role};
use zeroize::Zeroizing;

use crate::SdkError;

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
}

impl Account {
    /// Builds an account from the DKG's result and the device's auth key.
    pub(crate) fn new(
        id: AccountId,
        label: Option<String>,
        share: KeyShare,
        auth: DeviceAuthKey,
    ) -> Result<Self, SdkError> {
        if share.role() != Role::Device {
            return Err(SdkError::InvalidInput("not a device share".into()));
        }
        Ok(Account {
            id,
            label,
            share: Arc::new(share),
            auth: Arc::new(auth),
        })
    }

    /// Returns a copy of this account holding `share` (after a refresh).
    pub(crate) fn with_share(&self, share: KeyShare) -> Self {
        Account {
            id: self.id,
            label: self.label.clone(),
            share: Arc::new(share),
            auth: self.auth.clone(),
        }
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
        let stored = StoredAccount {
            version: 2,
            account_id: self.id,
            label: self.label.clone(),
            address: self.share.address().to_checksum(),
            public_key: self.public_key(),
            device_share: hex::encode(&share[..]),
            auth_key: hex::encode(&self.auth.seed()[..]),
        };
        let json = serde_json::to_string_pretty(&stored).map_err(|e| SdkError::Storage(e.to_string()))?;
        let mut stored = stored;
        zeroize::Zeroize::zeroize(&mut stored.device_share);
        zeroize::Zeroize::zeroize(&mut stored.auth_key);
        Ok(Zeroizing::new(json))
    }

    /// Parses [`Account::to_json`] output, checking that the share matches the recorded
    /// public key and address.
    pub fn from_json(json: &str) -> Result<Self, SdkError> {
        let mut stored: StoredAccount =
            serde_json::from_str(json).map_err(|e| SdkError::Storage(format!("account file does not parse: {e}")))?;
        if stored.version != 2 {
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
        Account::new(stored.account_id, stored.label, share, auth)
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use tandem_core::engine::{DeviceDkg, EnclaveDkg, Next};

    use super::*;

    /// An account from an in-process DKG (both parties here; about a second), for tests
    /// that need real account material but no enclave.
    fn make(label: &str) -> Account {
        let (mut device, m0) = DeviceDkg::start().unwrap();
        let (mut enclave, _sid, r0) = EnclaveDkg::start(&m0).unwrap();
        let m1 = device.receive(&r0).unwrap();
        let Next::Send(r1) = enclave.step(&m1).unwrap() else {
            panic!("expected a reply")
        };
        let m2 = device.receive(&r1).unwrap();
        let Next::Done(enclave_share) = enclave.step(&m2).unwrap() else {
            panic!("expected done")
        };
        let share = device.finish(&enclave_share.public_key()).unwrap();
        let auth = DeviceAuthKey::generate().unwrap();
        Account::new(AccountId::random().unwrap(), Some(label.into()), share, auth).unwrap()
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
}
