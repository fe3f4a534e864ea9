//! Device-bound accounts: the device's auth key and its authorization of each flow.
//!
//! At createAccount the device registers an Ed25519 public key with the enclave. Every
//! later flow on the account (sign, recover, refresh) starts with the device's signature
//! over that session's transcript:
//!
//! ```text
//!  SHA-256("tandem/v1/authorize" ‖ account id ‖ flow ‖ timestamp (u64 BE) ‖ SHA-256(first protocol message))
//! ```
//!
//! The first protocol message carries the device's fresh nonce (hence the session id) and,
//! for signing, the digest, so the authorization names exactly one session over one
//! digest. Later steps need no signature: they travel in the same sealed channel context,
//! which only the device that opened it can extend. The enclave refuses timestamps outside
//! its skew window and nonces it has seen (replay).

use ed25519_dalek::{Signature as EdSignature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::ids::AccountId;
use crate::message::Flow;

/// The channel plaintext of a flow's first message.
#[derive(Serialize, Deserialize)]
pub struct FirstMessage {
    /// The protocol envelope (see [`crate::message`]).
    pub protocol: Vec<u8>,
    /// createAccount only: the device's auth public key to register.
    pub auth_key: Option<[u8; 32]>,
    /// sign, recover, refresh: the device's authorization of this session.
    pub authorization: Option<Authorization>,
}

impl FirstMessage {
    /// Encodes for sealing.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        postcard::to_allocvec(self)
            .map(Zeroizing::new)
            .map_err(|_| ProtocolError::Internal("first message failed to encode"))
    }

    /// Decodes an opened first message.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        postcard::from_bytes(bytes).map_err(|_| ProtocolError::Malformed("first message does not decode"))
    }
}

/// The device's signature over one session's transcript.
#[derive(Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// The device's clock when it signed, Unix seconds.
    pub timestamp: u64,
    /// Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}

fn transcript(account: &AccountId, flow: Flow, timestamp: u64, protocol: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tandem/v1/authorize");
    h.update(account.as_bytes());
    h.update([flow as u8]);
    h.update(timestamp.to_be_bytes());
    h.update(Sha256::digest(protocol));
    h.finalize().into()
}

/// The device's auth key (Ed25519). Zeroized on drop; `Debug` shows only the public key.
#[derive(Clone)]
pub struct DeviceAuthKey(SigningKey);

impl DeviceAuthKey {
    /// A fresh key from the OS RNG.
    pub fn generate() -> Result<Self, ProtocolError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).map_err(|_| ProtocolError::Internal("system RNG failed"))?;
        Ok(DeviceAuthKey(SigningKey::from_bytes(&seed)))
    }

    /// Restores a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        DeviceAuthKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for the device's own storage.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key the enclave stores.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Authorizes the session whose first protocol message is `protocol`.
    pub fn authorize(&self, account: &AccountId, flow: Flow, protocol: &[u8], timestamp: u64) -> Authorization {
        let sig = self.0.sign(&transcript(account, flow, timestamp, protocol));
        Authorization {
            timestamp,
            signature: sig.to_bytes().to_vec(),
        }
    }
}

impl std::fmt::Debug for DeviceAuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceAuthKey(public {})", hex::encode(self.public_key()))
    }
}

/// Checks `auth` against the account's registered key: the signature over this session's
/// transcript, and a timestamp within `max_skew_secs` of `now`. (Replay of a fresh
/// authorization is the caller's to refuse, by remembering session nonces.)
pub fn verify_authorization(
    registered: &[u8; 32],
    account: &AccountId,
    flow: Flow,
    protocol: &[u8],
    auth: &Authorization,
    now: u64,
    max_skew_secs: u64,
) -> Result<(), ProtocolError> {
    if auth.timestamp.abs_diff(now) > max_skew_secs {
        return Err(ProtocolError::Unauthorized(
            "authorization timestamp outside the accepted window",
        ));
    }
    let key =
        VerifyingKey::from_bytes(registered).map_err(|_| ProtocolError::Unauthorized("registered key is invalid"))?;
    let sig_bytes: [u8; 64] = auth
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| ProtocolError::Unauthorized("signature is not 64 bytes"))?;
    key.verify(
        &transcript(account, flow, auth.timestamp, protocol),
        &EdSignature::from_bytes(&sig_bytes),
    )
    .map_err(|_| ProtocolError::Unauthorized("signature does not verify with the account's device key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorizations_bind_account_flow_message_and_time() {
        let key = DeviceAuthKey::generate().unwrap();
        let other = DeviceAuthKey::generate().unwrap();
        let account = AccountId::random().unwrap();
        let auth = key.authorize(&account, Flow::Sign, b"msg", 1000);
        let pk = key.public_key();
        verify_authorization(&pk, &account, Flow::Sign, b"msg", &auth, 1010, 300).unwrap();
        assert!(verify_authorization(&other.public_key(), &account, Flow::Sign, b"msg", &auth, 1010, 300).is_err());
        assert!(verify_authorization(&pk, &account, Flow::Refresh, b"msg", &auth, 1010, 300).is_err());
        assert!(verify_authorization(&pk, &account, Flow::Sign, b"msg2", &auth, 1010, 300).is_err());
        let another = AccountId::random().unwrap();
        assert!(verify_authorization(&pk, &another, Flow::Sign, b"msg", &auth, 1010, 300).is_err());
        assert!(verify_authorization(&pk, &account, Flow::Sign, b"msg", &auth, 2000, 300).is_err());
        assert_eq!(DeviceAuthKey::from_seed(&key.seed()).public_key(), pk);
        assert!(!format!("{key:?}").contains(&hex::encode(&key.seed()[..])));
    }
}
