//! The MPC engine: DKLs23 2-of-2 (via the `dkls23` crate) as explicit per-party state
//! machines.
//!
//! This is the only module that names `dkls23` types (DESIGN.md §2). Each flow has a
//! device-side and an enclave-side machine; both are driven by the caller:
//!
//! ```text
//!   device                                   enclave
//!   DeviceX::start() ── msg 0 ─────────────▶ EnclaveX::start(msg 0)
//!                    ◀──────────── reply 0 ──
//!   device.receive(reply 0) ── msg 1 ──────▶ enclave.step(msg 1)
//!                    ◀──────────── reply 1 ──
//!   …                                        … until Done
//! ```
//!
//! Every machine implements [`DeviceFlow`](crate::flow::DeviceFlow) or
//! [`EnclaveFlow`](crate::flow::EnclaveFlow), so one generic driver runs each side.
//! Every message is an [`Envelope`](crate::message::Envelope) bound to its flow, session,
//! step and direction. Any error poisons the machine: later calls answer
//! [`ProtocolError::SessionClosed`]. Message routing fields inside `dkls23` payloads are
//! checked here before the library sees them, because the library panics on some
//! misrouted inputs.
//!
//! Party indices: the device is party 1, the enclave party 2, of a (t = 2, n = 2) sharing.

mod dkg;
mod recover;
mod refresh;
mod sign;

pub use dkg::{Created, DeviceDkg, DkgOutput, EnclaveDkg};
pub use recover::{DeviceRecover, EnclaveRecover, RecoverStart, Recovered};
pub use refresh::{DeviceRefresh, EnclaveRefresh, RefreshKind, RefreshOutput, RefreshStart, Refreshed};
#[cfg(any(test, feature = "testing"))]
pub(crate) use sign::tamper;
pub use sign::{DeviceSign, EnclaveSign, SignStart, Signed};

use dkls23::protocols::{Abort, AbortKind, Parameters, PartiesMessage, Party, PartyIndex};
use k256::Secp256k1;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::eth::Address;
use crate::ids::ShareId;
use crate::keys::PublicKey;

type Curve = Secp256k1;

/// Which side of the 2-of-2 a share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The user's device (party 1).
    Device,
    /// The enclave (party 2).
    Enclave,
}

impl Role {
    fn index(self) -> PartyIndex {
        match self {
            Role::Device => party(1),
            Role::Enclave => party(2),
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Device => Role::Enclave,
            Role::Enclave => Role::Device,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Role::Device => 1,
            Role::Enclave => 2,
        }
    }
}

fn party(i: u8) -> PartyIndex {
    // invariant: 1 and 2 are non-zero, the only check `PartyIndex::new` makes.
    PartyIndex::new(i).unwrap_or_else(|_| unreachable!("party index {i} is non-zero"))
}

fn parameters() -> Parameters {
    Parameters {
        threshold: 2,
        share_count: 2,
    }
}

pub use crate::flow::{Next, Step};

/// One party's share of a 2-of-2 key: the long-term secret of one side.
///
/// It never leaves its owner unencrypted except through [`KeyShare::to_bytes`], which the
/// owner seals before storing. `Debug` is redacted and the inner state is zeroized on
/// drop (by `dkls23`'s `Party` destructor).
#[derive(Clone)]
pub struct KeyShare {
    role: Role,
    party: Party<Curve>,
}

const SHARE_MAGIC: &[u8; 3] = b"TKS";
const SHARE_VERSION: u8 = 1;

impl KeyShare {
    fn new(role: Role, party: Party<Curve>) -> Result<Self, ProtocolError> {
        if party.party_index != role.index() || party.parameters.threshold != 2 || party.parameters.share_count != 2 {
            return Err(ProtocolError::InvalidShare("share is not a 2-of-2 share of this role"));
        }
        PublicKey::from_affine(&party.pk).map_err(|_| ProtocolError::InvalidShare("share has no valid public key"))?;
        Ok(KeyShare { role, party })
    }

    /// Which side this share belongs to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The account's public key (the same on both sides).
    pub fn public_key(&self) -> PublicKey {
        // invariant: checked in `KeyShare::new`, the only constructor.
        PublicKey::from_affine(&self.party.pk).unwrap_or_else(|_| unreachable!("validated in KeyShare::new"))
    }

    /// The account's Ethereum address.
    pub fn address(&self) -> Address {
        Address::from_public_key(&self.public_key())
    }

    /// The generation of this key: equal on both sides after the same DKG or refresh.
    pub fn share_id(&self) -> ShareId {
        ShareId::from_protocol_session(&self.party.session_id)
    }

    /// Serializes the share (versioned) for sealing. The buffer is zeroized on drop.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        let body = Zeroizing::new(
            postcard::to_allocvec(&self.party).map_err(|_| ProtocolError::Internal("share failed to encode"))?,
        );
        let mut out = Zeroizing::new(Vec::with_capacity(5 + body.len()));
        out.extend_from_slice(SHARE_MAGIC);
        out.push(SHARE_VERSION);
        out.push(self.role.tag());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses bytes made by [`KeyShare::to_bytes`], checking role and format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() < 5 || &bytes[..3] != SHARE_MAGIC {
            return Err(ProtocolError::InvalidShare("not a Tandem key share"));
        }
        if bytes[3] != SHARE_VERSION {
            return Err(ProtocolError::InvalidShare("unknown key share version"));
        }
        let role = match bytes[4] {
            1 => Role::Device,
            2 => Role::Enclave,
            _ => return Err(ProtocolError::InvalidShare("unknown role")),
        };
        let party: Party<Curve> =
            postcard::from_bytes(&bytes[5..]).map_err(|_| ProtocolError::InvalidShare("key share does not decode"))?;
        KeyShare::new(role, party)
    }

    /// A fingerprint of this share's two-party multiplication (OT) state:
    /// `SHA-256("tandem/v1/ot-state" ‖ postcard(senders) ‖ postcard(receivers))`.
    ///
    /// The device sends it when a key generation is born (DKG, refresh) and again in the
    /// recovery check, so the enclave can tell a device share whose OT seeds rotted (which
    /// would pass the key proof and then fail an OT consistency check — a ban) from an
    /// intact one. It is a hash of 256-bit secrets taken as one value: it reveals nothing
    /// the enclave could use (review finding L7).
    pub fn ot_fingerprint(&self) -> Result<[u8; 32], ProtocolError> {
        use sha2::{Digest, Sha256};
        let senders = Zeroizing::new(
            postcard::to_allocvec(&self.party.mul_senders).map_err(|_| ProtocolError::Internal("OT state encoding"))?,
        );
        let receivers = Zeroizing::new(
            postcard::to_allocvec(&self.party.mul_receivers)
                .map_err(|_| ProtocolError::Internal("OT state encoding"))?,
        );
        let mut h = Sha256::new();
        h.update(b"tandem/v1/ot-state");
        h.update((senders.len() as u64).to_be_bytes());
        h.update(&senders[..]);
        h.update(&receivers[..]);
        Ok(h.finalize().into())
    }

    /// This party's verification share `poly_point·G`.
    fn own_point(&self) -> k256::AffinePoint {
        (k256::ProjectivePoint::GENERATOR * self.party.poly_point).to_affine()
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("role", &self.role)
            .field("public_key", &self.public_key())
            .field("share_id", &self.share_id())
            .finish_non_exhaustive()
    }
}

/// An Ethereum-style ECDSA signature: low-S normalized, with the recovery id (y parity of
/// the nonce point, 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// `r`, big-endian.
    pub r: [u8; 32],
    /// `s`, big-endian, at most n/2.
    pub s: [u8; 32],
    /// The recovery id (0 or 1).
    pub recovery_id: u8,
}

/// Turns a `dkls23` abort into our error, keeping the "ban the peer" signal.
fn abort(a: Abort) -> ProtocolError {
    ProtocolError::PeerMisbehaved {
        reason: a.reason.to_string(),
        ban: matches!(a.kind, AbortKind::BanCounterparty(_)),
    }
}

/// Checks that a point-to-point message goes from our peer to us.
fn check_route(parties: &PartiesMessage, me: Role) -> Result<(), ProtocolError> {
    if parties.sender != me.peer().index() || parties.receiver != me.index() {
        return Err(ProtocolError::PeerMisbehaved {
            reason: "message is misrouted".into(),
            ban: false,
        });
    }
    Ok(())
}

/// Takes the only element of a one-element vector (2 parties: one message per peer).
fn single<T>(mut v: Vec<T>) -> Result<T, ProtocolError> {
    if v.len() != 1 {
        return Err(ProtocolError::Internal("expected exactly one message for the peer"));
    }
    v.pop()
        .ok_or(ProtocolError::Internal("expected exactly one message for the peer"))
}

/// Refuses an enclave answer whose generation is older than the device already saw.
fn check_generation(seen: u64, got: u64) -> Result<(), ProtocolError> {
    if got < seen {
        return Err(ProtocolError::Rollback { seen, got });
    }
    Ok(())
}

/// Fresh 32 random bytes for a session nonce.
fn nonce() -> Result<[u8; 32], ProtocolError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|_| ProtocolError::Internal("system RNG failed"))?;
    Ok(n)
}

#[cfg(test)]
mod tests;
