//! Signing a 32-byte digest: start → step, two round trips.
//!
//! ```text
//!  device                                          enclave
//!  ── m0: digest, share id ──────────────────────▶ phase1
//!  ◀─ r0: nonce, phase-1 message ─────────────────
//!  phase1, phase2 ── m1: phase-1 + phase-2 ──────▶ phase2, phase3
//!  ◀─ r1 (serverPartial): phase-2 + phase-3 ──────
//!  phase3, phase4 → (r, s, recovery id), low-S, verified by the library
//! ```
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

use super::{Curve, KeyShare, Role, Signature, abort, check_route, nonce};
use crate::error::ProtocolError;
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
    t1: TransmitPhase1to2,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Msg1 {
    pub(super) t1: TransmitPhase1to2,
    pub(super) t2: TransmitPhase2to3<Curve>,
}

/// Test access to the message types, for the malicious-peer tests.
#[cfg(test)]
pub(super) mod tamper {
    pub(in crate::engine) use super::Msg1;
}

#[derive(Serialize, Deserialize)]
struct Partial {
    t2: TransmitPhase2to3<Curve>,
    b3: Broadcast3to4<Curve>,
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

/// The device's side of signing.
pub struct DeviceSign {
    share: Arc<KeyShare>,
    digest: [u8; 32],
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
    unique_kept: UniqueKeep2to3<Curve>,
    kept: BTreeMap<PartyIndex, KeepPhase2to3<Curve>>,
}

impl DeviceSign {
    /// Starts signing `digest`: returns the machine and the `clientMessage` of `sign/start`.
    pub fn start(share: Arc<KeyShare>, digest: [u8; 32]) -> Result<(Self, Vec<u8>), ProtocolError> {
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
                state: DeviceState::AwaitReply0 { nonce },
            },
            msg,
        ))
    }

    /// Feeds the `serverMessage` of `sign/start`; returns the `clientMessage` of `sign/step`.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let DeviceState::AwaitReply0 { nonce } = std::mem::replace(&mut self.state, DeviceState::Closed) else {
            return Err(ProtocolError::SessionClosed);
        };
        let got = Envelope::peek(bytes)?;
        let reply: Reply0 = Envelope::open(bytes, header(Direction::ToDevice, 0, got.binding))?;
        let sid = SessionId::derive(Flow::Sign, &nonce, &reply.enclave_nonce);
        if sid.0 != got.binding {
            return Err(ProtocolError::WrongSession);
        }
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
            unique_kept,
            kept,
        }));
        Ok(out)
    }

    /// Feeds the enclave's `serverPartial` and assembles the signature: low-S normalized,
    /// with its recovery id, and verified against the account's public key by `dkls23`.
    pub fn finish(mut self, partial: &[u8]) -> Result<Signature, ProtocolError> {
        let DeviceState::AwaitPartial(round) = std::mem::replace(&mut self.state, DeviceState::Closed) else {
            return Err(ProtocolError::SessionClosed);
        };
        let round = *round;
        let p: Partial = Envelope::open(partial, header(Direction::ToDevice, 1, round.sid.0))?;
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
        Ok(Signature { r, s, recovery_id })
    }

    /// The session id, once the enclave's first reply has been received.
    pub fn session_id(&self) -> Option<SessionId> {
        match &self.state {
            DeviceState::AwaitPartial(r) => Some(r.sid),
            _ => None,
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

    /// Starts the enclave's side with the share the device named. Returns the machine,
    /// the session id and the `serverMessage` of `sign/start`.
    pub fn start(start: SignStart, share: Arc<KeyShare>) -> Result<(Self, SessionId, Vec<u8>), ProtocolError> {
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
                t1: super::single(t1)?,
            },
        )?;
        Ok((
            EnclaveSign {
                share,
                sid,
                state: EnclaveState::AwaitMsg1 {
                    data,
                    unique_kept,
                    kept,
                },
            },
            sid,
            out,
        ))
    }

    /// The session id.
    pub fn session_id(&self) -> SessionId {
        self.sid
    }

    /// The key generation this session signs with.
    pub fn share_id(&self) -> ShareId {
        self.share.share_id()
    }

    /// Feeds the `clientMessage` of `sign/step`; returns the `serverPartial`.
    pub fn step(&mut self, bytes: &[u8]) -> Result<Vec<u8>, ProtocolError> {
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
        Envelope::seal(
            header(Direction::ToDevice, 1, self.sid.0),
            &Partial {
                t2: super::single(t2)?,
                b3,
            },
        )
    }
}
