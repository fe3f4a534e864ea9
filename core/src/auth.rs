//! Device-bound accounts: the device's auth key and its authorization of each flow.
//!
//! At createAccount the device registers an Ed25519 public key with the enclave. Every
//! flow — createAccount included, as proof that the device holds the key it registers —
//! starts with the device's signature over that session's transcript:
//!
//! ```text
//!  SHA-256("tandem/v2/authorize" ‖ account id (16; zero for createAccount) ‖ flow
//!          ‖ timestamp (u64 BE) ‖ channel key id (8) ‖ enc (32) ‖ SHA-256(first protocol message))
//! ```
//!
//! The first protocol message carries the device's fresh nonce (hence the session id) and,
//! for signing, the digest, so the authorization names exactly one session over one digest.
//! The channel key id and `enc` name the sealed channel it travels in: an enclave that
//! opens the message and re-seals it to another enclave (a relay) cannot reuse it. Later
//! steps need no signature: they travel in the same sealed channel context, which only the
//! device that opened it can extend. The enclave refuses timestamps outside its skew
//! window and channels (`enc`) it has seen (replay).

use ed25519_dalek::{Signature as EdSignature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::channel::ChannelBinding;
use crate::error::ProtocolError;
use crate::flow::Flow;
use crate::ids::AccountId;

const FIRST_MAGIC: &[u8; 3] = b"TFM";
/// The version of [`FirstMessage`]'s encoding (1 had no magic, no channel binding in the
/// authorization and its metadata outside the sealed payload; it is refused).
pub const FIRST_MESSAGE_VERSION: u8 = 2;

/// Longest label or client node id accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 64;

/// The channel plaintext of a flow's first message.
#[derive(Serialize, Deserialize)]
pub struct FirstMessage {
    /// The protocol envelope (see [`crate::message`]).
    pub protocol: Vec<u8>,
    /// createAccount only: the device's auth public key to register.
    pub auth_key: Option<[u8; 32]>,
    /// The device's authorization of this session (for createAccount, by `auth_key`).
    pub authorization: Authorization,
    /// createAccount only: a human label for the account.
    pub label: Option<String>,
    /// createAccount only: an identifier the device chooses for itself.
    pub client_node_id: Option<String>,
}

impl FirstMessage {
    /// Encodes for sealing: magic, version, postcard body.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        let body =
            postcard::to_allocvec(self).map_err(|_| ProtocolError::Internal("first message failed to encode"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(4 + body.len()));
        out.extend_from_slice(FIRST_MAGIC);
        out.push(FIRST_MESSAGE_VERSION);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes an opened first message, refusing other versions and bad metadata.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let Some(body) = bytes.strip_prefix(FIRST_MAGIC.as_slice()) else {
            // Version 1 had no magic: its first byte is a postcard length.
            return Err(ProtocolError::UnsupportedVersion(1));
        };
        match body.first() {
            Some(&FIRST_MESSAGE_VERSION) => {}
            Some(&v) => return Err(ProtocolError::UnsupportedVersion(v)),
            None => return Err(ProtocolError::Malformed("first message is empty")),
        }
        let (first, rest): (FirstMessage, _) = postcard::take_from_bytes(&body[1..])
            .map_err(|_| ProtocolError::Malformed("first message does not decode"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed("trailing bytes after the first message"));
        }
        check_text(&first.label, "label must be at most 64 printable characters")?;
        check_text(
            &first.client_node_id,
            "clientNodeId must be at most 64 printable characters",
        )?;
        Ok(first)
    }
}

fn check_text(v: &Option<String>, what: &'static str) -> Result<(), ProtocolError> {
    if v.as_ref()
        .is_some_and(|s| s.chars().count() > MAX_TEXT_CHARS || s.chars().any(char::is_control))
    {
        return Err(ProtocolError::InvalidField(what));
    }
    Ok(())
}

/// The device's signature over one session's transcript.
#[derive(Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// The device's clock when it signed, Unix seconds.
    pub timestamp: u64,
    /// Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}

fn transcript(
    account: Option<&AccountId>,
    flow: Flow,
    timestamp: u64,
    binding: &ChannelBinding,
    protocol: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tandem/v2/authorize");
    h.update(account.map_or([0u8; 16], |a| *a.as_bytes()));
    h.update([flow as u8]);
    h.update(timestamp.to_be_bytes());
    h.update(binding.key_id);
    h.update(binding.enc);
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

    /// Authorizes the session whose first protocol message is `protocol`, travelling in
    /// the channel `binding` (`account` is `None` for createAccount).
    pub fn authorize(
        &self,
        account: Option<&AccountId>,
        flow: Flow,
        binding: &ChannelBinding,
        protocol: &[u8],
        timestamp: u64,
    ) -> Authorization {
        let sig = self.0.sign(&transcript(account, flow, timestamp, binding, protocol));
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

/// Parses a device key to register, refusing keys of small order (for which signatures
/// prove nothing).
pub fn registrable_key(key: &[u8; 32]) -> Result<VerifyingKey, ProtocolError> {
    let key =
        VerifyingKey::from_bytes(key).map_err(|_| ProtocolError::Unauthorized("device key is not a valid key"))?;
    if key.is_weak() {
        return Err(ProtocolError::Unauthorized("device key is of small order"));
    }
    Ok(key)
}

/// Checks `auth` against the account's registered key: the (strict) signature over this
/// session's transcript, and a timestamp within `max_skew_secs` of `now`. (Replay of a
/// fresh authorization is the caller's to refuse, by remembering channels.)
#[allow(clippy::too_many_arguments)]
pub fn verify_authorization(
    registered: &[u8; 32],
    account: Option<&AccountId>,
    flow: Flow,
    binding: &ChannelBinding,
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
    let key = registrable_key(registered)?;
    let sig_bytes: [u8; 64] = auth
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| ProtocolError::Unauthorized("signature is not 64 bytes"))?;
    key.verify_strict(
        &transcript(account, flow, auth.timestamp, binding, protocol),
        &EdSignature::from_bytes(&sig_bytes),
    )
    .map_err(|_| ProtocolError::Unauthorized("signature does not verify with the account's device key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(b: u8) -> ChannelBinding {
        ChannelBinding {
            key_id: [b; 8],
            enc: [b; 32],
        }
    }

    #[test]
    fn authorizations_bind_account_flow_channel_message_and_time() {
        let key = DeviceAuthKey::generate().unwrap();
        let other = DeviceAuthKey::generate().unwrap();
        let account = AccountId::random().unwrap();
        let a = Some(&account);
        let auth = key.authorize(a, Flow::Sign, &binding(1), b"msg", 1000);
        let pk = key.public_key();
        verify_authorization(&pk, a, Flow::Sign, &binding(1), b"msg", &auth, 1010, 300).unwrap();
        let verify = |pk: &[u8; 32], acc, flow, b: u8, msg: &[u8], now| {
            verify_authorization(pk, acc, flow, &binding(b), msg, &auth, now, 300)
        };
        assert!(verify(&other.public_key(), a, Flow::Sign, 1, b"msg", 1010).is_err());
        assert!(verify(&pk, a, Flow::Refresh, 1, b"msg", 1010).is_err());
        assert!(verify(&pk, a, Flow::Sign, 1, b"msg2", 1010).is_err());
        assert!(verify(&pk, a, Flow::Sign, 2, b"msg", 1010).is_err(), "another channel");
        assert!(verify(&pk, None, Flow::Sign, 1, b"msg", 1010).is_err());
        let another = AccountId::random().unwrap();
        assert!(verify(&pk, Some(&another), Flow::Sign, 1, b"msg", 1010).is_err());
        assert!(verify(&pk, a, Flow::Sign, 1, b"msg", 2000).is_err());
        assert_eq!(DeviceAuthKey::from_seed(&key.seed()).public_key(), pk);
        assert!(!format!("{key:?}").contains(&hex::encode(&key.seed()[..])));
    }

    #[test]
    fn small_order_device_keys_are_refused() {
        // The identity point (a small-order key): any "signature" would be meaningless.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            registrable_key(&identity).unwrap_err(),
            ProtocolError::Unauthorized("device key is of small order")
        );
        assert!(registrable_key(&DeviceAuthKey::generate().unwrap().public_key()).is_ok());
    }

    #[test]
    fn first_messages_carry_a_version_and_refuse_the_old_format() {
        let key = DeviceAuthKey::generate().unwrap();
        let first = FirstMessage {
            protocol: vec![1, 2, 3],
            auth_key: Some(key.public_key()),
            authorization: key.authorize(None, Flow::Dkg, &binding(3), &[1, 2, 3], 5),
            label: Some("alice".into()),
            client_node_id: None,
        };
        let bytes = first.encode().unwrap();
        let back = FirstMessage::decode(&bytes).unwrap();
        assert_eq!(back.label.as_deref(), Some("alice"));
        assert_eq!(
            FirstMessage::decode(&bytes[3..]).err().unwrap(),
            ProtocolError::UnsupportedVersion(1)
        );
        let mut v3 = bytes.to_vec();
        v3[3] = 3;
        assert_eq!(
            FirstMessage::decode(&v3).err().unwrap(),
            ProtocolError::UnsupportedVersion(3)
        );
        let long = FirstMessage {
            label: Some("x".repeat(65)),
            ..first
        };
        assert!(matches!(
            FirstMessage::decode(&long.encode().unwrap()),
            Err(ProtocolError::InvalidField(_))
        ));
    }
}
