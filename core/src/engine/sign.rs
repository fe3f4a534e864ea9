//! Signing a 32-byte digest: start → step, two round trips.
//!
//! ```text
//!  device                                          enclave
//!  ── m0: digest, share id ──────────────────────▶ phase1
//!  ◀─ r0: nonce, generation, phase-1 message ─────
//!  phase1, phase2 ── m1: phase-1 + phase-2 ──────▶ phase2, phase3   (OT consistency checks)
//!  ◀─ done (the partial): phase-2 + phase-3, generation
//!  phase3, phase4 → (r, s, recovery id), low-S, verified by the library
//! ```
//!
//! Both sides run OT consistency checks whose failure DKLs23 answers with a ban
//! ([`ProtocolError::requires_ban`]): the enclave's in phase 2 (its step), the device's in
//! phase 2 (on r0) and phase 3 (on the partial). The device refuses an `r0` or partial whose
//! generation is older than it saw before, before running phase 2 on it.
//!
//! The session id (and so the `dkls23` sign id) mixes both parties' nonces. The digest is
//! bound into every `dkls23` message, so a message from a session over another digest is
//! refused. The enclave never learns the final signature, only its own contribution.

use std::collections::BTreeMap;
use std::sync::Arc;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3, UniqueKeep1to2,
    UniqueKeep2to3,
};
use serde::{Deserialize, Serialize};

use super::{Curve, KeyShare, Role, Signature, abort, check_generation, check_route, nonce};
use crate::error::ProtocolError;
use crate::flow::{DeviceFlow, EnclaveFlow, Next, Receipt, Step};
use crate::ids::{SessionId, ShareId};
use crate::message::{Direction, Envelope, Expect, Flow};

#[derive(Serialize, Deserialize)]
struct Msg0 {
    digest: Vec<u8>,
    share_id: ShareId,
}

#[derive(Serialize, Deserialize)]
struct Reply0 {
    enclave_nonce: [u8; 32],
    generation: u64,
    t1: TransmitPhase1to2,
}

#[derive(Serialize, Deserialize)]
struct Msg1 {
    /// The device's phase-1 message (its OT-extension data, as receiver).
    t1: TransmitPhase1to2,
    /// The device's phase-2 message.
    t2: TransmitPhase2to3<Curve>,
}

/// What a malicious peer does to sign messages (feature `testing`; never in a release
/// build): used by the attack tests, which mount these against the real machines.
#[cfg(any(test, feature = "testing"))]
pub(crate) mod tamper {
    use super::*;

    fn flip_ote_bit(
        ote: &mut dkls23::utilities::ot::extension::OTEDataToSender,
        bit: usize,
    ) -> Result<(), ProtocolError> {
        let column = ote
            .u
            .get_mut(bit % 256)
            .ok_or(ProtocolError::Internal("OT extension data has fewer than 256 columns"))?;
        column[0] ^= 1;
        Ok(())
    }

    /// A malicious *device*'s probe of the enclave's OT correlation Δ: one bit of column
    /// `bit` of its OT-extension data flipped in its sign/step message. (The real KOS
    /// selective-failure probe also recomputes the check values so the check passes iff
    /// its guess of Δ_bit is right, leaking one bit per answer; this edit fails the
    /// enclave's consistency check every time, which is what the ban must stop.)
    pub fn probe_step(message: &[u8], bit: usize) -> Result<Vec<u8>, ProtocolError> {
        let hdr = Envelope::peek(message)?;
        let mut msg: Msg1 = Envelope::open(message, hdr)?;
        flip_ote_bit(&mut msg.t1.mul_transmit, bit)?;
        Envelope::seal(hdr, &msg)
    }

    /// The same probe run by a rogue *enclave* against the device's Δ, in its first answer
    /// (it fails the device's check every time).
    pub fn probe_reply0(message: &[u8], bit: usize) -> Result<Vec<u8>, ProtocolError> {
        let hdr = Envelope::peek(message)?;
        let mut msg: Reply0 = Envelope::open(message, hdr)?;
        flip_ote_bit(&mut msg.t1.mul_transmit, bit)?;
        Envelope::seal(hdr, &msg)
    }

    /// A device's sign/step message whose phase-2 `γᵤ` is off: the enclave's phase-3
    /// consistency check fails, deterministically, with a ban.
    pub fn corrupt_step(message: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let hdr = Envelope::peek(message)?;
        let mut msg: Msg1 = Envelope::open(message, hdr)?;
        msg.t2.gamma_u = (k256::ProjectivePoint::from(msg.t2.gamma_u) + k256::ProjectivePoint::GENERATOR).to_affine();
        Envelope::seal(hdr, &msg)
    }

    /// A rogue enclave's partial whose `γᵤ` is off: the device's phase-3 consistency check
    /// fails, deterministically, with a ban.
    pub fn corrupt_partial(message: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let hdr = Envelope::peek(message)?;
        let mut msg: Partial = Envelope::open(message, hdr)?;
        msg.t2.gamma_u = (k256::ProjectivePoint::from(msg.t2.gamma_u) + k256::ProjectivePoint::GENERATOR).to_affine();
        Envelope::seal(hdr, &msg)
    }
}

#[derive(Serialize, Deserialize)]
struct Partial {
    t2: TransmitPhase2to3<Curve>,
    b3: Broadcast3to4<Curve>,
    generation: u64,
}

fn header(direction: Direction, step: u8, binding: [u8; 32]) -> Expect {
    Expect {
        flow: Flow::Sign,
        direction,
        step,
        binding,
    }
}

fn sign_data(role: Role, sid: &SessionId, digest: [u8; 32]) -> SignData {
    SignData {
        sign_id: sid.0.to_vec(),
        counterparties: vec![role.peer().index()],
        message_hash: digest,
    }
}

/// What signing yields on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    /// The signature: low-S, with its recovery id, verified against the account's key.
    pub signature: Signature,
    /// The account's generation as the enclave reported it.
    pub generation: u64,
}

/// The device's side of signing.
pub struct DeviceSign {
    share: Arc<KeyShare>,
    digest: [u8; 32],
    seen_generation: u64,
    state: DeviceState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum DeviceState {
    AwaitReply0 { nonce: [u8; 32] },
    AwaitPartial(Box<DeviceRound>),
    Closed,
}

struct DeviceRound {
    sid: SessionId,
    data: SignData,
    generation: u64,
    unique_kept: UniqueKeep2to3<Curve>,
    kept: BTreeMap<PartyIndex, KeepPhase2to3<Curve>>,
}

impl DeviceSign {
    /// Starts signing `digest`: returns the machine and the first message of `sign/start`.
    /// `seen_generation` is the largest generation of the account this device saw: an
    /// enclave that answers with an older one is refused as a rollback.
    pub fn start(
        share: Arc<KeyShare>,
        digest: [u8; 32],
        seen_generation: u64,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        if share.role() != Role::Device {
            return Err(ProtocolError::InvalidShare("not a device share"));
        }
        let nonce = nonce()?;
        let msg = Envelope::seal(
            header(Direction::ToEnclave, 0, nonce),
            &Msg0 {
                digest: digest.to_vec(),
                share_id: share.share_id(),
            },
        )?;
        Ok((
            DeviceSign {
                share,
                digest,
                seen_generation,
                state: DeviceState::AwaitReply0 { nonce },
            },
            msg,
        ))
    }

    fn on_reply0(&mut self, nonce: [u8; 32], bytes: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let got = Envelope::peek(bytes)?;
        let reply: Reply0 = Envelope::open(bytes, header(Direction::ToDevice, 0, got.binding))?;
        let sid = SessionId::derive(Flow::Sign, &nonce, &reply.enclave_nonce);
        if sid.0 != got.binding {
            return Err(ProtocolError::WrongSession);
        }
        check_generation(self.seen_generation, reply.generation)?;
        check_route(&reply.t1.parties, Role::Device)?;
        let data = sign_data(Role::Device, &sid, self.digest);
        let party = &self.share.party;
        let (uk12, k12, t1) = party.sign_phase1(&data).map_err(abort)?;
        let (unique_kept, kept, t2) = party.sign_phase2(&data, uk12, k12, &[reply.t1]).map_err(abort)?;
        let msg = Msg1 {
            t1: super::single(t1)?,
            t2: super::single(t2)?,
        };
        let out = Envelope::seal(header(Direction::ToEnclave, 1, sid.0), &msg)?;
        self.state = DeviceState::AwaitPartial(Box::new(DeviceRound {
            sid,
            data,
            generation: reply.generation,
            unique_kept,
            kept,
        }));
        Ok(out)
    }

    /// Assembles the signature from the enclave's partial: low-S normalized, with its
    /// recovery id, and verified against the account's public key by `dkls23`.
    fn on_partial(&self, round: DeviceRound, bytes: &[u8]) -> Result<Signed, ProtocolError> {
        let p: Partial = Envelope::open(bytes, header(Direction::ToDevice, 1, round.sid.0))?;
        check_generation(round.generation, p.generation)?;
        check_route(&p.t2.parties, Role::Device)?;
        let party = &self.share.party;
        let (x_coord, own_b3) = party
            .sign_phase3(&round.data, round.unique_kept, round.kept, &[p.t2])
            .map_err(abort)?;
        let (s_hex, recovery_id) = party
            .sign_phase4(&round.data, &x_coord, &[own_b3, p.b3], true)
            .map_err(abort)?;
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        hex::decode_to_slice(&x_coord, &mut r).map_err(|_| ProtocolError::SignatureInvalid)?;
        hex::decode_to_slice(&s_hex, &mut s).map_err(|_| ProtocolError::SignatureInvalid)?;
        Ok(Signed {
            signature: Signature { r, s, recovery_id },
            generation: p.generation,
        })
    }

    /// The session id, once the enclave's first reply has been received.
    pub fn session_id(&self) -> Option<SessionId> {
        match &self.state {
            DeviceState::AwaitPartial(r) => Some(r.sid),
            _ => None,
        }
    }
}

impl DeviceFlow for DeviceSign {
    const FLOW: Flow = Flow::Sign;
    type Output = Signed;

    fn receive(&mut self, answer: &[u8]) -> Result<Next<Signed>, ProtocolError> {
        match std::mem::replace(&mut self.state, DeviceState::Closed) {
            DeviceState::AwaitReply0 { nonce } => self.on_reply0(nonce, answer).map(Next::Send),
            DeviceState::AwaitPartial(round) => self.on_partial(*round, answer).map(Next::Done),
            DeviceState::Closed => Err(ProtocolError::SessionClosed),
        }
    }
}

/// A parsed `sign/start` message: what the enclave needs to pick the share to sign with.
pub struct SignStart {
    device_nonce: [u8; 32],
    digest: [u8; 32],
    share_id: ShareId,
}

impl SignStart {
    /// The digest the device asks to sign.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The key generation the device holds.
    pub fn share_id(&self) -> ShareId {
        self.share_id
    }
}

/// The enclave's side of signing.
pub struct EnclaveSign {
    share: Arc<KeyShare>,
    sid: SessionId,
    state: EnclaveState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum EnclaveState {
    AwaitMsg1 {
        data: SignData,
        unique_kept: UniqueKeep1to2<Curve>,
        kept: BTreeMap<PartyIndex, KeepPhase1to2<Curve>>,
    },
    Done {
        t2: TransmitPhase2to3<Curve>,
        b3: Broadcast3to4<Curve>,
    },
    Closed,
}

impl EnclaveSign {
    /// Parses the device's first message (cheap; no cryptography yet).
    pub fn parse_start(msg0: &[u8]) -> Result<SignStart, ProtocolError> {
        let got = Envelope::peek(msg0)?;
        let msg: Msg0 = Envelope::open(msg0, header(Direction::ToEnclave, 0, got.binding))?;
        let digest: [u8; 32] = msg
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::InvalidField("digest must be 32 bytes"))?;
        Ok(SignStart {
            device_nonce: got.binding,
            digest,
            share_id: msg.share_id,
        })
    }

    /// Starts the enclave's side with the share the device named, at the account's
    /// `generation`. Returns the machine and its first answer.
    pub fn start(start: SignStart, share: Arc<KeyShare>, generation: u64) -> Result<(Self, Step<()>), ProtocolError> {
        if share.role() != Role::Enclave {
            return Err(ProtocolError::InvalidShare("not an enclave share"));
        }
        if share.share_id() != start.share_id {
            return Err(ProtocolError::InvalidShare(
                "the device holds another generation of this key",
            ));
        }
        let enclave_nonce = nonce()?;
        let sid = SessionId::derive(Flow::Sign, &start.device_nonce, &enclave_nonce);
        let data = sign_data(Role::Enclave, &sid, start.digest);
        let (unique_kept, kept, t1) = share.party.sign_phase1(&data).map_err(abort)?;
        let out = Envelope::seal(
            header(Direction::ToDevice, 0, sid.0),
            &Reply0 {
                enclave_nonce,
                generation,
                t1: super::single(t1)?,
            },
        )?;
        let state = EnclaveState::AwaitMsg1 {
            data,
            unique_kept,
            kept,
        };
        Ok((EnclaveSign { share, sid, state }, Step::Continue(out)))
    }

    /// The key generation this session signs with.
    pub fn share_id(&self) -> ShareId {
        self.share.share_id()
    }
}

impl EnclaveFlow for EnclaveSign {
    const FLOW: Flow = Flow::Sign;
    type Output = ();

    fn session_id(&self) -> SessionId {
        self.sid
    }

    /// Runs phases 2 and 3 on the device's `sign/step` message. Phase 2 is where the
    /// enclave, as OT-extension sender, checks the device's consistency: a failure there
    /// requires a ban (the caller serialises this step per account and records the ban).
    fn step(&mut self, bytes: &[u8]) -> Result<Step<()>, ProtocolError> {
        let EnclaveState::AwaitMsg1 {
            data,
            unique_kept,
            kept,
        } = std::mem::replace(&mut self.state, EnclaveState::Closed)
        else {
            return Err(ProtocolError::SessionClosed);
        };
        let msg: Msg1 = Envelope::open(bytes, header(Direction::ToEnclave, 1, self.sid.0))?;
        check_route(&msg.t1.parties, Role::Enclave)?;
        check_route(&msg.t2.parties, Role::Enclave)?;
        let party = &self.share.party;
        let (uk23, k23, t2) = party
            .sign_phase2(&data, unique_kept, kept, std::slice::from_ref(&msg.t1))
            .map_err(abort)?;
        let (_x_coord, b3) = party
            .sign_phase3(&data, uk23, k23, std::slice::from_ref(&msg.t2))
            .map_err(abort)?;
        self.state = EnclaveState::Done {
            t2: super::single(t2)?,
            b3,
        };
        Ok(Step::Done(()))
    }

    /// The partial (the enclave's phase-2 and phase-3 contributions) with the generation.
    fn done_message(&mut self, receipt: Receipt) -> Result<Vec<u8>, ProtocolError> {
        let EnclaveState::Done { t2, b3 } = std::mem::replace(&mut self.state, EnclaveState::Closed) else {
            return Err(ProtocolError::SessionClosed);
        };
        Envelope::seal(
            header(Direction::ToDevice, 1, self.sid.0),
            &Partial {
                t2,
                b3,
                generation: receipt.generation,
            },
        )
    }
}
