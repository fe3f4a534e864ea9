//! Identifiers: sessions, accounts and share generations.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::flow::Flow;

/// Identifies one run of a flow. Both parties contribute 32 random bytes, so neither can
/// force a session id (and with it the Fiat–Shamir context of every proof) to repeat:
/// `sid = SHA-256("tandem/v1/session" ‖ flow ‖ device_nonce ‖ enclave_nonce)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    /// Derives the session id from both parties' nonces.
    pub fn derive(flow: Flow, device_nonce: &[u8; 32], enclave_nonce: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"tandem/v1/session");
        h.update([flow as u8]);
        h.update(device_nonce);
        h.update(enclave_nonce);
        SessionId(h.finalize().into())
    }

    /// Lowercase hex, as the wire API carries it in `sessionId`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the wire form; anything but 64 hex digits is refused.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(SessionId(out))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An account's id: 16 bytes derived from the session id of the DKG that created it (so
/// both parties compute it and the host cannot swap it), 32 lowercase hex digits on the
/// wire. Accounts created before version 2 carry ids the enclave drew at random. The strict format matters: it names files in the enclave's keystore, so anything
/// else (a path, `..`) is refused at parse time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId([u8; 16]);

/// The string is not an account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an account id is 32 lowercase hex digits")]
pub struct InvalidAccountId;

impl AccountId {
    /// A fresh random account id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(AccountId(b))
    }

    /// The id of the account created by the DKG session `sid`:
    /// `SHA-256("tandem/v2/account-id" ‖ sid)[..16]`. Both parties contributed to `sid`, so
    /// neither (nor the host) can choose or repeat it.
    pub fn from_dkg_session(sid: &SessionId) -> Self {
        let d = Sha256::digest([&b"tandem/v2/account-id"[..], &sid.0[..]].concat());
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        AccountId(out)
    }

    /// Parses 32 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self, InvalidAccountId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(InvalidAccountId);
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidAccountId)?;
        Ok(AccountId(out))
    }

    /// The raw bytes (bound into sealed blobs' associated data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl TryFrom<String> for AccountId {
    type Error = InvalidAccountId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AccountId::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> String {
        id.to_string()
    }
}

/// Names one generation of a key: both parties' shares after the same DKG or refresh have
/// the same `ShareId`, and every refresh changes it. The device sends it when it starts a
/// flow so the enclave can tell which of its shares (current or pending refresh) to use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShareId(pub [u8; 16]);

impl ShareId {
    /// Derives the id from the protocol session id the share was made in.
    pub(crate) fn from_protocol_session(protocol_session_id: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"tandem/v1/share-id");
        h.update(protocol_session_id);
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        ShareId(out)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ShareId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_refuse_paths_and_uppercase() {
        assert!(AccountId::parse("../../etc/passwd").is_err());
        assert!(AccountId::parse("0123456789ABCDEF0123456789abcdef").is_err());
        assert!(AccountId::parse("0123456789abcdef0123456789abcdef").is_ok());
        let id = AccountId::random().unwrap();
        assert_eq!(AccountId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn session_ids_depend_on_both_nonces_and_the_flow() {
        let a = SessionId::derive(Flow::Sign, &[1; 32], &[2; 32]);
        assert_ne!(a, SessionId::derive(Flow::Sign, &[1; 32], &[3; 32]));
        assert_ne!(a, SessionId::derive(Flow::Dkg, &[1; 32], &[2; 32]));
        assert_eq!(SessionId::parse(&a.to_hex()), Some(a));
        assert_eq!(SessionId::parse("zz"), None);
    }
}
