//! Key refresh: both shares are replaced by fresh ones of the same public key, in the
//! same three flights as DKG (start → step → step).
//!
//! ```text
//!  device                                          enclave
//!  ── m0: share id, kind, fragment ──────────────▶ phase1, phase2
//!  ◀─ r0: nonce, generation, fragment, commitment ─
//!  phase2, phase3 ── m1: proof, zero shares
//!                        (complete: OT setup) ───▶ phase3, phase4  (enclave has its new share)
//!  ◀─ r1: proof, zero shares (complete: OT setup) ─
//!  phase4 ── m2: new share id, OT fingerprint ───▶ compare; the caller stores it as pending
//!  ◀─ done: new share id, generation (sealed) ─────
//! ```
//!
//! Two kinds, chosen by the device ([`RefreshKind`]):
//! * **fast** — `dkls23`'s refresh from the "Refresh When You Wake Up" paper: a DKG of a
//!   zero-constant polynomial whose result is added to each share (each side checks the
//!   correction sums to the identity, so the key cannot change), with the OT correlations
//!   re-randomized from the new zero-share seeds. Cheap, but the new OT correlation is the
//!   old one XOR a value both parties derive, so bits of it that leaked stay leaked.
//! * **complete** — the same, but the two-party multiplication (base OTs and their
//!   extension) is set up again from scratch, as in a DKG. This is the only way back after
//!   a ban: it replaces every piece of OT state a probe could have learnt about.
//!
//! As in DKG, the enclave commits to its correction's public fragment in r0 and reveals it
//! in r1 (review finding L1). The refreshed shares carry a new protocol session id, hence a
//! new [`ShareId`](crate::ShareId): an old share cannot sign with a new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use dkls23::protocols::dkg::{
    KeepInitMulPhase3to4, KeepInitZeroSharePhase2to3, KeepInitZeroSharePhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::refresh::{
    KeepRefreshPhase2to3, KeepRefreshPhase3to4, TransmitRefreshPhase2to4, TransmitRefreshPhase3to4,
};
use dkls23::protocols::{Party, PartyIndex};
use dkls23::utilities::proofs::DLogProof;
use k256::Scalar;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::dkg::Commitment;
use super::{Curve, KeyShare, Role, abort, check_generation, check_route, nonce, single};
use crate::error::ProtocolError;
use crate::flow::{DeviceFlow, EnclaveFlow, Next, Receipt, Step};
use crate::ids::{SessionId, ShareId};
use crate::message::{Direction, Envelope, Expect, Flow};

/// Which refresh to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshKind {
    /// Re-randomize the shares and the existing OT correlations (about 10× cheaper).
    Fast,
    /// Re-randomize the shares and set the OT correlations up again from scratch; the
    /// only refresh a locked (banned) account accepts.
    Complete,
}

#[derive(Serialize, Deserialize)]
struct Msg0 {
    share_id: ShareId,
    kind: RefreshKind,
    fragment: Scalar,
}

/// Phase-2 zero-share commitments, of either kind.
#[derive(Serialize, Deserialize)]
enum ZeroCommit {
    Fast(TransmitRefreshPhase2to4),
    Complete(TransmitInitZeroSharePhase2to4),
}

/// Phase-3 zero-share reveals (and, for a complete refresh, the new OT setup). Sent once
/// per refresh: boxing the large variant buys nothing.
#[derive(Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
enum ZeroReveal {
    Fast(TransmitRefreshPhase3to4),
    Complete {
        zero: TransmitInitZeroSharePhase3to4,
        mul: TransmitInitMulPhase3to4<Curve>,
    },
}

#[derive(Serialize, Deserialize)]
struct Reply0 {
    enclave_nonce: [u8; 32],
    generation: u64,
    fragment: Scalar,
    commitment: Commitment,
    zero: ZeroCommit,
}

#[derive(Serialize, Deserialize)]
struct Msg1 {
    proof_commitment: ProofCommitment<Curve>,
    zero2: ZeroCommit,
    zero3: ZeroReveal,
}

#[derive(Serialize, Deserialize)]
struct Reply1 {
    proof: DLogProof<Curve>,
    zero3: ZeroReveal,
}

#[derive(Serialize, Deserialize)]
struct Msg2 {
    new_share_id: ShareId,
    ot_fingerprint: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Done {
    new_share_id: ShareId,
    generation: u64,
}

fn header(direction: Direction, step: u8, binding: [u8; 32]) -> Expect {
    Expect {
        flow: Flow::Refresh,
        direction,
        step,
        binding,
    }
}

fn kinds_differ() -> ProtocolError {
    ProtocolError::PeerMisbehaved {
        reason: "the parties run different kinds of refresh".into(),
        ban: false,
    }
}

/// What one party keeps between phase 2 and phase 3.
enum Kept2 {
    Fast(BTreeMap<PartyIndex, KeepRefreshPhase2to3>),
    Complete(BTreeMap<PartyIndex, KeepInitZeroSharePhase2to3>),
}

/// What one party keeps between phase 3 and phase 4.
enum Kept3 {
    Fast(BTreeMap<PartyIndex, KeepRefreshPhase3to4>),
    Complete {
        zero: BTreeMap<PartyIndex, KeepInitZeroSharePhase3to4>,
        mul: BTreeMap<PartyIndex, KeepInitMulPhase3to4<Curve>>,
    },
}

/// The `dkls23` refresh phases of one party, for either kind.
struct Phases<'a> {
    party: &'a Party<Curve>,
    kind: RefreshKind,
}

impl Phases<'_> {
    fn phase1(&self) -> Result<(Scalar, Scalar), ProtocolError> {
        let fragments = Zeroizing::new(match self.kind {
            RefreshKind::Fast => self.party.refresh_phase1(),
            RefreshKind::Complete => self.party.refresh_complete_phase1(),
        });
        match fragments.as_slice() {
            [a, b] => Ok((*a, *b)),
            _ => Err(ProtocolError::Internal("phase 1 must yield two fragments")),
        }
    }

    fn phase2(
        &self,
        sid: &SessionId,
        fragments: &[Scalar; 2],
    ) -> Result<(Zeroizing<Scalar>, ProofCommitment<Curve>, Kept2, ZeroCommit), ProtocolError> {
        Ok(match self.kind {
            RefreshKind::Fast => {
                let (c, pc, keep, transmit) = self.party.refresh_phase2(&sid.0, fragments);
                (
                    Zeroizing::new(c),
                    pc,
                    Kept2::Fast(keep),
                    ZeroCommit::Fast(single(transmit)?),
                )
            }
            RefreshKind::Complete => {
                let (c, pc, keep, transmit) = self.party.refresh_complete_phase2(&sid.0, fragments);
                (
                    Zeroizing::new(c),
                    pc,
                    Kept2::Complete(keep),
                    ZeroCommit::Complete(single(transmit)?),
                )
            }
        })
    }

    fn phase3(&self, sid: &SessionId, kept: &Kept2) -> Result<(Kept3, ZeroReveal), ProtocolError> {
        Ok(match kept {
            Kept2::Fast(keep) => {
                let (kept, transmit) = self.party.refresh_phase3(keep);
                (Kept3::Fast(kept), ZeroReveal::Fast(single(transmit)?))
            }
            Kept2::Complete(keep) => {
                let (zero, zero_t, mul, mul_t) = self.party.refresh_complete_phase3(&sid.0, keep);
                (
                    Kept3::Complete { zero, mul },
                    ZeroReveal::Complete {
                        zero: single(zero_t)?,
                        mul: single(mul_t)?,
                    },
                )
            }
        })
    }

    #[allow(clippy::too_many_arguments)] // dkls23's phase 4 takes these; they are one round's state
    fn phase4(
        &self,
        sid: &SessionId,
        correction: &Scalar,
        proofs: &[ProofCommitment<Curve>],
        kept: &Kept3,
        received2: ZeroCommit,
        received3: ZeroReveal,
        me: Role,
    ) -> Result<Party<Curve>, ProtocolError> {
        match (kept, received2, received3) {
            (Kept3::Fast(kept), ZeroCommit::Fast(z2), ZeroReveal::Fast(z3)) => {
                check_route(&z2.parties, me)?;
                check_route(&z3.parties, me)?;
                self.party
                    .refresh_phase4(&sid.0, correction, proofs, kept, &[z2], &[z3])
                    .map_err(abort)
            }
            (Kept3::Complete { zero, mul }, ZeroCommit::Complete(z2), ZeroReveal::Complete { zero: z3, mul: m3 }) => {
                check_route(&z2.parties, me)?;
                check_route(&z3.parties, me)?;
                check_route(&m3.parties, me)?;
                self.party
                    .refresh_complete_phase4(&sid.0, correction, proofs, zero, &[z2], &[z3], mul, &[m3])
                    .map_err(abort)
            }
            _ => Err(kinds_differ()),
        }
    }
}

fn check_commitment_kind(kind: RefreshKind, zero: &ZeroCommit) -> Result<(), ProtocolError> {
    match (kind, zero) {
        (RefreshKind::Fast, ZeroCommit::Fast(_)) | (RefreshKind::Complete, ZeroCommit::Complete(_)) => Ok(()),
        _ => Err(kinds_differ()),
    }
}

fn check_index(index: PartyIndex, from: Role) -> Result<(), ProtocolError> {
    if index != from.index() {
        return Err(ProtocolError::PeerMisbehaved {
            reason: "commitment from the wrong party".into(),
            ban: false,
        });
    }
    Ok(())
}

/// What a refresh yields on the device.
pub struct Refreshed {
    /// The new device share: persist it, then confirm it (sign, or the recovery check).
    pub share: KeyShare,
    /// The account's generation as the enclave reported it.
    pub generation: u64,
}

/// The device's side of a refresh.
pub struct DeviceRefresh {
    share: Arc<KeyShare>,
    kind: RefreshKind,
    seen_generation: u64,
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
        sid: SessionId,
        new_share: KeyShare,
        generation: u64,
    },
    Closed,
}

struct DeviceRound {
    sid: SessionId,
    generation: u64,
    correction: Zeroizing<Scalar>,
    own_proof: ProofCommitment<Curve>,
    enclave_commitment: Commitment,
    kept: Kept3,
    zero2_received: ZeroCommit,
}

impl DeviceRefresh {
    /// Starts a refresh of `share`: returns the machine and the first message of
    /// `refresh/start`. `seen_generation` as for signing.
    pub fn start(
        share: Arc<KeyShare>,
        kind: RefreshKind,
        seen_generation: u64,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        if share.role() != Role::Device {
            return Err(ProtocolError::InvalidShare("not a device share"));
        }
        let nonce = nonce()?;
        let (own, for_enclave) = Phases {
            party: &share.party,
            kind,
        }
        .phase1()?;
        let msg = Envelope::seal(
            header(Direction::ToEnclave, 0, nonce),
            &Msg0 {
                share_id: share.share_id(),
                kind,
                fragment: for_enclave,
            },
        )?;
        Ok((
            DeviceRefresh {
                share,
                kind,
                seen_generation,
                state: DeviceState::AwaitReply0 {
                    nonce,
                    own_fragment: Zeroizing::new(own),
                },
            },
            msg,
        ))
    }

    fn phases(&self) -> Phases<'_> {
        Phases {
            party: &self.share.party,
            kind: self.kind,
        }
    }

    fn on_reply0(
        &self,
        nonce: [u8; 32],
        own_fragment: &Scalar,
        bytes: &[u8],
    ) -> Result<(DeviceRound, Vec<u8>), ProtocolError> {
        let got = Envelope::peek(bytes)?;
        let reply: Reply0 = Envelope::open(bytes, header(Direction::ToDevice, 0, got.binding))?;
        let sid = SessionId::derive(Flow::Refresh, &nonce, &reply.enclave_nonce);
        if sid.0 != got.binding {
            return Err(ProtocolError::WrongSession);
        }
        check_generation(self.seen_generation, reply.generation)?;
        check_index(reply.commitment.index, Role::Enclave)?;
        check_commitment_kind(self.kind, &reply.zero)?;
        let phases = self.phases();
        let (correction, pc, kept2, zero2) = phases.phase2(&sid, &[*own_fragment, reply.fragment])?;
        let (kept3, zero3) = phases.phase3(&sid, &kept2)?;
        let msg = Msg1 {
            proof_commitment: pc.clone(),
            zero2,
            zero3,
        };
        let out = Envelope::seal(header(Direction::ToEnclave, 1, sid.0), &msg)?;
        Ok((
            DeviceRound {
                sid,
                generation: reply.generation,
                correction,
                own_proof: pc,
                enclave_commitment: reply.commitment,
                kept: kept3,
                zero2_received: reply.zero,
            },
            out,
        ))
    }

    fn on_reply1(&self, round: DeviceRound, bytes: &[u8]) -> Result<(KeyShare, Vec<u8>), ProtocolError> {
        let reply: Reply1 = Envelope::open(bytes, header(Direction::ToDevice, 1, round.sid.0))?;
        let proofs = [round.own_proof, round.enclave_commitment.with_proof(reply.proof)];
        let party = self.phases().phase4(
            &round.sid,
            &round.correction,
            &proofs,
            &round.kept,
            round.zero2_received,
            reply.zero3,
            Role::Device,
        )?;
        let new_share = KeyShare::new(Role::Device, party)?;
        if new_share.public_key() != self.share.public_key() {
            return Err(ProtocolError::KeyMismatch);
        }
        let out = Envelope::seal(
            header(Direction::ToEnclave, 2, round.sid.0),
            &Msg2 {
                new_share_id: new_share.share_id(),
                ot_fingerprint: new_share.ot_fingerprint()?,
            },
        )?;
        Ok((new_share, out))
    }
}

impl DeviceFlow for DeviceRefresh {
    const FLOW: Flow = Flow::Refresh;
    type Output = Refreshed;

    fn receive(&mut self, answer: &[u8]) -> Result<Next<Refreshed>, ProtocolError> {
        match std::mem::replace(&mut self.state, DeviceState::Closed) {
            DeviceState::AwaitReply0 { nonce, own_fragment } => {
                let (round, msg) = self.on_reply0(nonce, &own_fragment, answer)?;
                self.state = DeviceState::AwaitReply1(Box::new(round));
                Ok(Next::Send(msg))
            }
            DeviceState::AwaitReply1(round) => {
                let (sid, generation) = (round.sid, round.generation);
                let (new_share, msg) = self.on_reply1(*round, answer)?;
                self.state = DeviceState::AwaitDone {
                    sid,
                    new_share,
                    generation,
                };
                Ok(Next::Send(msg))
            }
            DeviceState::AwaitDone {
                sid,
                new_share,
                generation,
            } => {
                let done: Done = Envelope::open(answer, header(Direction::ToDevice, 2, sid.0))?;
                check_generation(generation, done.generation)?;
                if done.new_share_id != new_share.share_id() {
                    return Err(ProtocolError::KeyMismatch);
                }
                Ok(Next::Done(Refreshed {
                    share: new_share,
                    generation: done.generation,
                }))
            }
            DeviceState::Closed => Err(ProtocolError::SessionClosed),
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

    /// The kind of refresh the device asks for.
    pub fn kind(&self) -> RefreshKind {
        self.msg.kind
    }
}

/// What a refresh yields on the enclave: what it stores (as pending) before DONE.
pub struct RefreshOutput {
    /// The new enclave share.
    pub share: KeyShare,
    /// The kind of refresh that made it.
    pub kind: RefreshKind,
    /// The device's OT-state fingerprint for the new share.
    pub device_ot_fingerprint: [u8; 32],
}

/// The enclave's side of a refresh.
pub struct EnclaveRefresh {
    share: Arc<KeyShare>,
    kind: RefreshKind,
    sid: SessionId,
    state: EnclaveState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum EnclaveState {
    AwaitMsg1 {
        correction: Zeroizing<Scalar>,
        own_proof: ProofCommitment<Curve>,
        kept: Kept2,
    },
    AwaitMsg2 {
        new_share: KeyShare,
    },
    Done {
        new_share_id: ShareId,
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

    /// Starts the enclave's side with its current share of the account, at the account's
    /// `generation`.
    pub fn start(
        start: RefreshStart,
        share: Arc<KeyShare>,
        generation: u64,
    ) -> Result<(Self, Step<RefreshOutput>), ProtocolError> {
        if share.role() != Role::Enclave {
            return Err(ProtocolError::InvalidShare("not an enclave share"));
        }
        if share.share_id() != start.msg.share_id {
            return Err(ProtocolError::InvalidShare(
                "the device holds another generation of this key",
            ));
        }
        let kind = start.msg.kind;
        let enclave_nonce = nonce()?;
        let sid = SessionId::derive(Flow::Refresh, &start.device_nonce, &enclave_nonce);
        let phases = Phases {
            party: &share.party,
            kind,
        };
        let (for_device, own) = phases.phase1()?;
        let (correction, pc, kept, zero) = phases.phase2(&sid, &[start.msg.fragment, own])?;
        let reply = Reply0 {
            enclave_nonce,
            generation,
            fragment: for_device,
            commitment: Commitment::of(&pc),
            zero,
        };
        let out = Envelope::seal(header(Direction::ToDevice, 0, sid.0), &reply)?;
        let state = EnclaveState::AwaitMsg1 {
            correction,
            own_proof: pc,
            kept,
        };
        Ok((
            EnclaveRefresh {
                share,
                kind,
                sid,
                state,
            },
            Step::Continue(out),
        ))
    }
}

impl EnclaveFlow for EnclaveRefresh {
    const FLOW: Flow = Flow::Refresh;
    type Output = RefreshOutput;

    fn session_id(&self) -> SessionId {
        self.sid
    }

    /// Feeds a device message of `refresh/step`. Returns the next answer, or the new
    /// enclave share once the device confirmed it holds the matching one: the caller
    /// stores it (as pending, beside the current share) before answering DONE.
    fn step(&mut self, bytes: &[u8]) -> Result<Step<RefreshOutput>, ProtocolError> {
        match std::mem::replace(&mut self.state, EnclaveState::Closed) {
            EnclaveState::AwaitMsg1 {
                correction,
                own_proof,
                kept,
            } => {
                let msg: Msg1 = Envelope::open(bytes, header(Direction::ToEnclave, 1, self.sid.0))?;
                check_index(msg.proof_commitment.index, Role::Device)?;
                check_commitment_kind(self.kind, &msg.zero2)?;
                let phases = Phases {
                    party: &self.share.party,
                    kind: self.kind,
                };
                let (kept3, zero3) = phases.phase3(&self.sid, &kept)?;
                let own_reveal = own_proof.proof.clone();
                let new_party = phases.phase4(
                    &self.sid,
                    &correction,
                    &[msg.proof_commitment, own_proof],
                    &kept3,
                    msg.zero2,
                    msg.zero3,
                    Role::Enclave,
                )?;
                let new_share = KeyShare::new(Role::Enclave, new_party)?;
                if new_share.public_key() != self.share.public_key() {
                    return Err(ProtocolError::KeyMismatch);
                }
                let out = Envelope::seal(
                    header(Direction::ToDevice, 1, self.sid.0),
                    &Reply1 {
                        proof: own_reveal,
                        zero3,
                    },
                )?;
                self.state = EnclaveState::AwaitMsg2 { new_share };
                Ok(Step::Continue(out))
            }
            EnclaveState::AwaitMsg2 { new_share } => {
                let msg: Msg2 = Envelope::open(bytes, header(Direction::ToEnclave, 2, self.sid.0))?;
                if msg.new_share_id != new_share.share_id() {
                    return Err(ProtocolError::KeyMismatch);
                }
                self.state = EnclaveState::Done {
                    new_share_id: new_share.share_id(),
                };
                Ok(Step::Done(RefreshOutput {
                    share: new_share,
                    kind: self.kind,
                    device_ot_fingerprint: msg.ot_fingerprint,
                }))
            }
            EnclaveState::Done { .. } | EnclaveState::Closed => Err(ProtocolError::SessionClosed),
        }
    }

    fn done_message(&mut self, receipt: Receipt) -> Result<Vec<u8>, ProtocolError> {
        let EnclaveState::Done { new_share_id } = std::mem::replace(&mut self.state, EnclaveState::Closed) else {
            return Err(ProtocolError::SessionClosed);
        };
        Envelope::seal(
            header(Direction::ToDevice, 2, self.sid.0),
            &Done {
                new_share_id,
                generation: receipt.generation,
            },
        )
    }
}
