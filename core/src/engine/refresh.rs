//! Key refresh: both shares are replaced by fresh ones of the same public key, in the
//! same three flights as DKG (start → step → step).
//!
//! This is `dkls23`'s fast refresh: a DKG of a zero-constant polynomial whose result is
//! added to each share (each side checks the correction sums to the identity, so the key
//! cannot change), with the OT correlations re-randomized from the new zero-share seeds.
//! The refreshed shares carry a new protocol session id, hence a new
//! [`ShareId`](crate::ShareId): an old share cannot sign with a new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::dkg::ProofCommitment;
use dkls23::protocols::refresh::{
    KeepRefreshPhase2to3, KeepRefreshPhase3to4, TransmitRefreshPhase2to4, TransmitRefreshPhase3to4,
};
use k256::Scalar;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Curve, KeyShare, Next, Role, abort, check_route, nonce, single};
use crate::error::ProtocolError;
use crate::ids::{SessionId, ShareId};
use crate::message::{Direction, Envelope, Expect, Flow};

#[derive(Serialize, Deserialize)]
struct Msg0 {
    share_id: ShareId,
    fragment: Scalar,
}

#[derive(Serialize, Deserialize)]
struct Reply0 {
    enclave_nonce: [u8; 32],
    fragment: Scalar,
    proof_commitment: ProofCommitment<Curve>,
    zero: TransmitRefreshPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct Msg1 {
    proof_commitment: ProofCommitment<Curve>,
    zero2: TransmitRefreshPhase2to4,
    zero3: TransmitRefreshPhase3to4,
}

#[derive(Serialize, Deserialize)]
struct Reply1 {
    zero3: TransmitRefreshPhase3to4,
}

#[derive(Serialize, Deserialize)]
struct Msg2 {
    new_share_id: ShareId,
}

fn header(direction: Direction, step: u8, binding: [u8; 32]) -> Expect {
    Expect {
        flow: Flow::Refresh,
        direction,
        step,
        binding,
    }
}

fn check_commitment(pc: &ProofCommitment<Curve>, from: Role) -> Result<(), ProtocolError> {
    if pc.index != from.index() {
        return Err(ProtocolError::PeerMisbehaved {
            reason: "commitment from the wrong party".into(),
            ban: false,
        });
    }
    Ok(())
}

fn split_fragments(fragments: &[Scalar]) -> Result<(Scalar, Scalar), ProtocolError> {
    match fragments {
        [a, b] => Ok((*a, *b)),
        _ => Err(ProtocolError::Internal("phase 1 must yield two fragments")),
    }
}

/// The device's side of a refresh.
pub struct DeviceRefresh {
    share: Arc<KeyShare>,
    state: DeviceState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum DeviceState {
    AwaitReply0 {
        nonce: [u8; 32],
        own_fragment: Zeroizing<Scalar>,
    },
    AwaitReply1(Box<DeviceRound>),
    AwaitDone {
        new_share: KeyShare,
    },
    Closed,
}

struct DeviceRound {
    sid: SessionId,
    correction: Zeroizing<Scalar>,
    proofs: Vec<ProofCommitment<Curve>>,
    kept: BTreeMap<PartyIndex, KeepRefreshPhase3to4>,
    zero2_received: TransmitRefreshPhase2to4,
}

impl DeviceRefresh {
    /// Starts a refresh of `share`: returns the machine and the `clientMessage` of
    /// `refresh/start`.
    pub fn start(share: Arc<KeyShare>) -> Result<(Self, Vec<u8>), ProtocolError> {
        if share.role() != Role::Device {
            return Err(ProtocolError::InvalidShare("not a device share"));
        }
        let nonce = nonce()?;
        let fragments = Zeroizing::new(share.party.refresh_phase1());
        let (own, for_enclave) = split_fragments(&fragments)?;
        let msg = Envelope::seal(
            header(Direction::ToEnclave, 0, nonce),
            &Msg0 {
                share_id: share.share_id(),
                fragment: for_enclave,
            },
        )?;
        Ok((
            DeviceRefresh {
                share,
                state: DeviceState::AwaitReply0 {
                    nonce,
                    own_fragment: Zeroizing::new(own),
                },
            },
            msg,
        ))
    }

    /// Feeds a `serverMessage`; returns the next `clientMessage`.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        match std::mem::replace(&mut self.state, DeviceState::Closed) {
            DeviceState::AwaitReply0 { nonce, own_fragment } => {
                let got = Envelope::peek(bytes)?;
                let reply: Reply0 = Envelope::open(bytes, header(Direction::ToDevice, 0, got.binding))?;
                let sid = SessionId::derive(Flow::Refresh, &nonce, &reply.enclave_nonce);
                if sid.0 != got.binding {
                    return Err(ProtocolError::WrongSession);
                }
                check_commitment(&reply.proof_commitment, Role::Enclave)?;
                check_route(&reply.zero.parties, Role::Device)?;
                let party = &self.share.party;
                let (correction, pc, keep, transmit) = party.refresh_phase2(&sid.0, &[*own_fragment, reply.fragment]);
                let (kept, transmit3) = party.refresh_phase3(&keep);
                let msg = Msg1 {
                    proof_commitment: pc.clone(),
                    zero2: single(transmit)?,
                    zero3: single(transmit3)?,
                };
                let out = Envelope::seal(header(Direction::ToEnclave, 1, sid.0), &msg)?;
                self.state = DeviceState::AwaitReply1(Box::new(DeviceRound {
                    sid,
                    correction: Zeroizing::new(correction),
                    proofs: vec![pc, reply.proof_commitment],
                    kept,
                    zero2_received: reply.zero,
                }));
                Ok(out)
            }
            DeviceState::AwaitReply1(round) => {
                let round = *round;
                let reply: Reply1 = Envelope::open(bytes, header(Direction::ToDevice, 1, round.sid.0))?;
                check_route(&reply.zero3.parties, Role::Device)?;
                let party = self
                    .share
                    .party
                    .refresh_phase4(
                        &round.sid.0,
                        &round.correction,
                        &round.proofs,
                        &round.kept,
                        &[round.zero2_received],
                        &[reply.zero3],
                    )
                    .map_err(abort)?;
                let new_share = KeyShare::new(Role::Device, party)?;
                if new_share.public_key() != self.share.public_key() {
                    return Err(ProtocolError::KeyMismatch);
                }
                let out = Envelope::seal(
                    header(Direction::ToEnclave, 2, round.sid.0),
                    &Msg2 {
                        new_share_id: new_share.share_id(),
                    },
                )?;
                self.state = DeviceState::AwaitDone { new_share };
                Ok(out)
            }
            DeviceState::AwaitDone { .. } | DeviceState::Closed => Err(ProtocolError::SessionClosed),
        }
    }

    /// Completes the refresh after the enclave answered DONE: the new device share.
    pub fn finish(mut self) -> Result<KeyShare, ProtocolError> {
        match std::mem::replace(&mut self.state, DeviceState::Closed) {
            DeviceState::AwaitDone { new_share } => Ok(new_share),
            _ => Err(ProtocolError::SessionClosed),
        }
    }
}

/// A parsed `refresh/start` message.
pub struct RefreshStart {
    device_nonce: [u8; 32],
    msg: Msg0,
}

impl RefreshStart {
    /// The key generation the device holds.
    pub fn share_id(&self) -> ShareId {
        self.msg.share_id
    }
}

/// The enclave's side of a refresh.
pub struct EnclaveRefresh {
    share: Arc<KeyShare>,
    sid: SessionId,
    state: EnclaveState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum EnclaveState {
    AwaitMsg1 {
        correction: Zeroizing<Scalar>,
        own_proof: ProofCommitment<Curve>,
        keep: BTreeMap<PartyIndex, KeepRefreshPhase2to3>,
    },
    AwaitMsg2 {
        new_share: KeyShare,
    },
    Closed,
}

impl EnclaveRefresh {
    /// Parses the device's first message.
    pub fn parse_start(msg0: &[u8]) -> Result<RefreshStart, ProtocolError> {
        let got = Envelope::peek(msg0)?;
        let msg: Msg0 = Envelope::open(msg0, header(Direction::ToEnclave, 0, got.binding))?;
        Ok(RefreshStart {
            device_nonce: got.binding,
            msg,
        })
    }

    /// Starts the enclave's side with its current share of the account.
    pub fn start(start: RefreshStart, share: Arc<KeyShare>) -> Result<(Self, SessionId, Vec<u8>), ProtocolError> {
        if share.role() != Role::Enclave {
            return Err(ProtocolError::InvalidShare("not an enclave share"));
        }
        if share.share_id() != start.msg.share_id {
            return Err(ProtocolError::InvalidShare(
                "the device holds another generation of this key",
            ));
        }
        let enclave_nonce = nonce()?;
        let sid = SessionId::derive(Flow::Refresh, &start.device_nonce, &enclave_nonce);
        let fragments = Zeroizing::new(share.party.refresh_phase1());
        let (for_device, own) = split_fragments(&fragments)?;
        let (correction, pc, keep, transmit) = share.party.refresh_phase2(&sid.0, &[start.msg.fragment, own]);
        let reply = Reply0 {
            enclave_nonce,
            fragment: for_device,
            proof_commitment: pc.clone(),
            zero: single(transmit)?,
        };
        let out = Envelope::seal(header(Direction::ToDevice, 0, sid.0), &reply)?;
        let state = EnclaveState::AwaitMsg1 {
            correction: Zeroizing::new(correction),
            own_proof: pc,
            keep,
        };
        Ok((EnclaveRefresh { share, sid, state }, sid, out))
    }

    /// The session id.
    pub fn session_id(&self) -> SessionId {
        self.sid
    }

    /// Feeds a `clientMessage` of `refresh/step`. Returns the next `serverMessage`, or the
    /// new enclave share once the device confirmed it holds the matching one: the caller
    /// stores it (as pending, beside the current share) before answering DONE.
    pub fn step(&mut self, bytes: &[u8]) -> Result<Next<KeyShare>, ProtocolError> {
        match std::mem::replace(&mut self.state, EnclaveState::Closed) {
            EnclaveState::AwaitMsg1 {
                correction,
                own_proof,
                keep,
            } => {
                let msg: Msg1 = Envelope::open(bytes, header(Direction::ToEnclave, 1, self.sid.0))?;
                check_commitment(&msg.proof_commitment, Role::Device)?;
                check_route(&msg.zero2.parties, Role::Enclave)?;
                check_route(&msg.zero3.parties, Role::Enclave)?;
                let party = &self.share.party;
                let (kept, transmit3) = party.refresh_phase3(&keep);
                let new_party = party
                    .refresh_phase4(
                        &self.sid.0,
                        &correction,
                        &[msg.proof_commitment, own_proof],
                        &kept,
                        &[msg.zero2],
                        &[msg.zero3],
                    )
                    .map_err(abort)?;
                let new_share = KeyShare::new(Role::Enclave, new_party)?;
                if new_share.public_key() != self.share.public_key() {
                    return Err(ProtocolError::KeyMismatch);
                }
                let out = Envelope::seal(
                    header(Direction::ToDevice, 1, self.sid.0),
                    &Reply1 {
                        zero3: single(transmit3)?,
                    },
                )?;
                self.state = EnclaveState::AwaitMsg2 { new_share };
                Ok(Next::Send(out))
            }
            EnclaveState::AwaitMsg2 { new_share } => {
                let msg: Msg2 = Envelope::open(bytes, header(Direction::ToEnclave, 2, self.sid.0))?;
                if msg.new_share_id != new_share.share_id() {
                    return Err(ProtocolError::KeyMismatch);
                }
                Ok(Next::Done(new_share))
            }
            EnclaveState::Closed => Err(ProtocolError::SessionClosed),
        }
    }
}
