//! Distributed key generation (createAccount): three flights, start → step → step.
//!
//! ```text
//!  device                                          enclave
//!  phase1 ── m0: fragment for enclave ───────────▶ phase1, phase2
//!         ◀─ r0: nonce, fragment for device,
//!               commitment to its key fragment ──
//!  phase2, phase3 ── m1: key fragment + proof,
//!                        phase-3 values ─────────▶ phase3, phase4  (enclave has its share)
//!         ◀─ r1: its proof (opens r0's commitment), phase-3 values, OT setup
//!  phase4 ── m2: public key, share id,
//!                OT-state fingerprint ───────────▶ compare; the caller persists the share
//!         ◀─ done: account id, public key, share id, generation (sealed)
//!  compare; the device persists
//! ```
//!
//! The enclave sends only the *commitment* to its public key fragment in r0, and its proof
//! (the fragment itself) in r1, after it has the device's fragment, as `dkls23` requires
//! ("after phase 2 only the index and commitment are broadcast; the proof after phase 3"):
//! neither side can choose its fragment after seeing the other's, so neither can bias the
//! public key (review finding L1). The enclave answers DONE only after the device proved
//! (m2) that it derived the same key, and after persisting its share; the account id is
//! derived from the session id on both sides, so the host can neither choose nor swap it.

use std::collections::BTreeMap;

use dkls23::protocols::dkg::{
    self, BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, KeepInitMulPhase3to4, KeepInitZeroSharePhase2to3,
    KeepInitZeroSharePhase3to4, ProofCommitment, SessionData, TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4,
    TransmitInitZeroSharePhase3to4, UniqueKeepDerivationPhase2to3,
};
use dkls23::utilities::hashes::HashOutput;
use dkls23::utilities::proofs::DLogProof;
use k256::Scalar;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Curve, KeyShare, Role, abort, check_route, nonce, parameters, single};
use crate::error::ProtocolError;
use crate::eth::Address;
use crate::flow::{DeviceFlow, EnclaveFlow, Next, Receipt, Step};
use crate::ids::{AccountId, SessionId, ShareId};
use crate::keys::PublicKey;
use crate::message::{Direction, Envelope, Expect, Flow};

#[derive(Serialize, Deserialize)]
struct Msg0 {
    fragment: Scalar,
}

/// A party's commitment to its public key fragment, without the fragment (the proof).
#[derive(Serialize, Deserialize)]
pub(super) struct Commitment {
    pub(super) index: dkls23::protocols::PartyIndex,
    pub(super) commitment: HashOutput,
}

impl Commitment {
    pub(super) fn of(pc: &ProofCommitment<Curve>) -> Self {
        Commitment {
            index: pc.index,
            commitment: pc.commitment,
        }
    }

    /// The full proof-commitment once the proof is revealed (the library checks that the
    /// proof opens the commitment).
    pub(super) fn with_proof(self, proof: DLogProof<Curve>) -> ProofCommitment<Curve> {
        ProofCommitment {
            index: self.index,
            proof,
            commitment: self.commitment,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Reply0 {
    enclave_nonce: [u8; 32],
    fragment: Scalar,
    commitment: Commitment,
    zero: TransmitInitZeroSharePhase2to4,
    bip: BroadcastDerivationPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct Msg1 {
    proof_commitment: ProofCommitment<Curve>,
    zero2: TransmitInitZeroSharePhase2to4,
    bip2: BroadcastDerivationPhase2to4,
    zero3: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<Curve>,
    bip3: BroadcastDerivationPhase3to4,
}

#[derive(Serialize, Deserialize)]
struct Reply1 {
    proof: DLogProof<Curve>,
    zero3: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<Curve>,
    bip3: BroadcastDerivationPhase3to4,
}

#[derive(Serialize, Deserialize)]
struct Msg2 {
    public_key: PublicKey,
    share_id: ShareId,
    ot_fingerprint: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Done {
    account_id: AccountId,
    public_key: PublicKey,
    share_id: ShareId,
    generation: u64,
}

fn header(direction: Direction, step: u8, binding: [u8; 32]) -> Expect {
    Expect {
        flow: Flow::Dkg,
        direction,
        step,
        binding,
    }
}

fn session_data(role: Role, sid: &SessionId) -> SessionData {
    SessionData {
        parameters: parameters(),
        party_index: role.index(),
        session_id: sid.0.to_vec(),
    }
}

fn address_string(point: &k256::AffinePoint) -> String {
    PublicKey::from_affine(point)
        .map(|pk| Address::from_public_key(&pk).to_checksum())
        .unwrap_or_default()
}

fn check_index(index: dkls23::protocols::PartyIndex, from: Role) -> Result<(), ProtocolError> {
    if index != from.index() {
        return Err(ProtocolError::PeerMisbehaved {
            reason: "commitment from the wrong party".into(),
            ban: false,
        });
    }
    Ok(())
}

fn check_sender(sender: dkls23::protocols::PartyIndex, from: Role) -> Result<(), ProtocolError> {
    if sender != from.index() {
        return Err(ProtocolError::PeerMisbehaved {
            reason: "broadcast from the wrong party".into(),
            ban: false,
        });
    }
    Ok(())
}

/// What a DKG yields on the device.
pub struct Created {
    /// The new account's id (derived from the session id; the enclave confirmed it).
    pub account_id: AccountId,
    /// The device's share, ready to persist.
    pub share: KeyShare,
    /// The account's generation as the enclave reported it.
    pub generation: u64,
}

/// The device's side of DKG.
pub struct DeviceDkg {
    state: DeviceState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum DeviceState {
    AwaitReply0 {
        nonce: [u8; 32],
        own_fragment: Zeroizing<Scalar>,
    },
    AwaitReply1(Box<DeviceRound2>),
    AwaitDone {
        sid: SessionId,
        share: KeyShare,
    },
    Closed,
}

struct DeviceRound2 {
    sid: SessionId,
    data: SessionData,
    poly_point: Zeroizing<Scalar>,
    own_proof: ProofCommitment<Curve>,
    enclave_commitment: Commitment,
    zero_kept: BTreeMap<dkls23::protocols::PartyIndex, KeepInitZeroSharePhase3to4>,
    mul_kept: BTreeMap<dkls23::protocols::PartyIndex, KeepInitMulPhase3to4<Curve>>,
    zero2_received: TransmitInitZeroSharePhase2to4,
    bip2: BTreeMap<dkls23::protocols::PartyIndex, BroadcastDerivationPhase2to4>,
    own_bip3: BroadcastDerivationPhase3to4,
}

impl DeviceDkg {
    /// Starts a DKG: returns the machine and the first message of `createAccount/start`.
    pub fn start() -> Result<(Self, Vec<u8>), ProtocolError> {
        let nonce = nonce()?;
        // Phase 1 does not use the session id, which needs the enclave's nonce.
        let data = SessionData {
            parameters: parameters(),
            party_index: Role::Device.index(),
            session_id: Vec::new(),
        };
        let fragments = Zeroizing::new(dkg::phase1::<Curve>(&data));
        let (own, for_enclave) = match fragments.as_slice() {
            [own, for_enclave] => (*own, *for_enclave),
            _ => return Err(ProtocolError::Internal("phase 1 must yield two fragments")),
        };
        let msg = Envelope::seal(header(Direction::ToEnclave, 0, nonce), &Msg0 { fragment: for_enclave })?;
        Ok((
            DeviceDkg {
                state: DeviceState::AwaitReply0 {
                    nonce,
                    own_fragment: Zeroizing::new(own),
                },
            },
            msg,
        ))
    }

    /// The session id, once the enclave's first reply has been received.
    pub fn session_id(&self) -> Option<SessionId> {
        match &self.state {
            DeviceState::AwaitReply1(r) => Some(r.sid),
            DeviceState::AwaitDone { sid, .. } => Some(*sid),
            _ => None,
        }
    }

    fn on_reply0(
        nonce: [u8; 32],
        own_fragment: &Scalar,
        bytes: &[u8],
    ) -> Result<(DeviceRound2, Vec<u8>), ProtocolError> {
        let got = Envelope::peek(bytes)?;
        let reply: Reply0 = Envelope::open(bytes, header(Direction::ToDevice, 0, got.binding))?;
        let sid = SessionId::derive(Flow::Dkg, &nonce, &reply.enclave_nonce);
        if sid.0 != got.binding {
            return Err(ProtocolError::WrongSession);
        }
        check_index(reply.commitment.index, Role::Enclave)?;
        check_route(&reply.zero.parties, Role::Device)?;
        check_sender(reply.bip.sender_index, Role::Enclave)?;

        let data = session_data(Role::Device, &sid);
        let (poly_point, pc, zero_keep, zero_transmit, bip_keep, bip2) =
            dkg::phase2::<Curve>(&data, &[*own_fragment, reply.fragment]);
        let (zero_kept, zero3, mul_kept, mul, bip3) = dkg::phase3::<Curve>(&data, &zero_keep, &bip_keep);
        let msg = Msg1 {
            proof_commitment: pc.clone(),
            zero2: single(zero_transmit)?,
            bip2: bip2.clone(),
            zero3: single(zero3)?,
            mul: single(mul)?,
            bip3: bip3.clone(),
        };
        let out = Envelope::seal(header(Direction::ToEnclave, 1, sid.0), &msg)?;
        let round = DeviceRound2 {
            sid,
            data,
            poly_point: Zeroizing::new(poly_point),
            own_proof: pc,
            enclave_commitment: reply.commitment,
            zero_kept,
            mul_kept,
            zero2_received: reply.zero,
            bip2: BTreeMap::from([(Role::Device.index(), bip2), (Role::Enclave.index(), reply.bip)]),
            own_bip3: bip3,
        };
        Ok((round, out))
    }

    fn on_reply1(round: DeviceRound2, bytes: &[u8]) -> Result<(KeyShare, Vec<u8>), ProtocolError> {
        let reply: Reply1 = Envelope::open(bytes, header(Direction::ToDevice, 1, round.sid.0))?;
        check_route(&reply.zero3.parties, Role::Device)?;
        check_route(&reply.mul.parties, Role::Device)?;
        check_sender(reply.bip3.sender_index, Role::Enclave)?;
        let bip3 = BTreeMap::from([
            (Role::Device.index(), round.own_bip3),
            (Role::Enclave.index(), reply.bip3),
        ]);
        let enclave_proof = round.enclave_commitment.with_proof(reply.proof);
        let (party, _package) = dkg::phase4::<Curve>(
            &round.data,
            &round.poly_point,
            &[round.own_proof, enclave_proof],
            &round.zero_kept,
            &[round.zero2_received],
            &[reply.zero3],
            &round.mul_kept,
            &[reply.mul],
            &round.bip2,
            &bip3,
            address_string,
        )
        .map_err(abort)?;
        let share = KeyShare::new(Role::Device, party)?;
        let msg = Envelope::seal(
            header(Direction::ToEnclave, 2, round.sid.0),
            &Msg2 {
                public_key: share.public_key(),
                share_id: share.share_id(),
                ot_fingerprint: share.ot_fingerprint()?,
            },
        )?;
        Ok((share, msg))
    }

    fn on_done(sid: SessionId, share: KeyShare, bytes: &[u8]) -> Result<Created, ProtocolError> {
        let done: Done = Envelope::open(bytes, header(Direction::ToDevice, 2, sid.0))?;
        let account_id = AccountId::from_dkg_session(&sid);
        if done.account_id != account_id || done.public_key != share.public_key() || done.share_id != share.share_id() {
            return Err(ProtocolError::KeyMismatch);
        }
        Ok(Created {
            account_id,
            share,
            generation: done.generation,
        })
    }
}

impl DeviceFlow for DeviceDkg {
    const FLOW: Flow = Flow::Dkg;
    type Output = Created;

    fn receive(&mut self, answer: &[u8]) -> Result<Next<Created>, ProtocolError> {
        match std::mem::replace(&mut self.state, DeviceState::Closed) {
            DeviceState::AwaitReply0 { nonce, own_fragment } => {
                let (round, msg) = Self::on_reply0(nonce, &own_fragment, answer)?;
                self.state = DeviceState::AwaitReply1(Box::new(round));
                Ok(Next::Send(msg))
            }
            DeviceState::AwaitReply1(round) => {
                let sid = round.sid;
                let (share, msg) = Self::on_reply1(*round, answer)?;
                self.state = DeviceState::AwaitDone { sid, share };
                Ok(Next::Send(msg))
            }
            DeviceState::AwaitDone { sid, share } => Self::on_done(sid, share, answer).map(Next::Done),
            DeviceState::Closed => Err(ProtocolError::SessionClosed),
        }
    }
}

/// What a DKG yields on the enclave: what it persists before answering DONE.
pub struct DkgOutput {
    /// The new account's id.
    pub account_id: AccountId,
    /// The enclave's share.
    pub share: KeyShare,
    /// The device's OT-state fingerprint ([`KeyShare::ot_fingerprint`]), kept for the
    /// recovery check.
    pub device_ot_fingerprint: [u8; 32],
}

impl std::fmt::Debug for DkgOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field("account_id", &self.account_id)
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

/// The enclave's side of DKG.
pub struct EnclaveDkg {
    sid: SessionId,
    state: EnclaveState,
}

// A machine is moved once per protocol step; boxing its states buys nothing measurable.
#[allow(clippy::large_enum_variant)]
enum EnclaveState {
    AwaitMsg1(Box<EnclaveRound2>),
    AwaitMsg2 { share: KeyShare },
    Done { public_key: PublicKey, share_id: ShareId },
    Closed,
}

struct EnclaveRound2 {
    data: SessionData,
    poly_point: Zeroizing<Scalar>,
    own_proof: ProofCommitment<Curve>,
    zero_keep: BTreeMap<dkls23::protocols::PartyIndex, KeepInitZeroSharePhase2to3>,
    bip_keep: UniqueKeepDerivationPhase2to3,
    own_bip2: BroadcastDerivationPhase2to4,
}

impl EnclaveDkg {
    /// Answers the device's first message: returns the machine and its first answer.
    pub fn start(msg0: &[u8]) -> Result<(Self, Step<DkgOutput>), ProtocolError> {
        let got = Envelope::peek(msg0)?;
        let msg: Msg0 = Envelope::open(msg0, header(Direction::ToEnclave, 0, got.binding))?;
        let enclave_nonce = nonce()?;
        let sid = SessionId::derive(Flow::Dkg, &got.binding, &enclave_nonce);
        let data = session_data(Role::Enclave, &sid);
        let fragments = Zeroizing::new(dkg::phase1::<Curve>(&data));
        let (for_device, own) = match fragments.as_slice() {
            [for_device, own] => (*for_device, *own),
            _ => return Err(ProtocolError::Internal("phase 1 must yield two fragments")),
        };
        // Fragments are summed by phase 2; order them by sender.
        let (poly_point, pc, zero_keep, zero_transmit, bip_keep, bip2) =
            dkg::phase2::<Curve>(&data, &[msg.fragment, own]);
        let reply = Reply0 {
            enclave_nonce,
            fragment: for_device,
            commitment: Commitment::of(&pc),
            zero: single(zero_transmit)?,
            bip: bip2.clone(),
        };
        let out = Envelope::seal(header(Direction::ToDevice, 0, sid.0), &reply)?;
        let round = EnclaveRound2 {
            data,
            poly_point: Zeroizing::new(poly_point),
            own_proof: pc,
            zero_keep,
            bip_keep,
            own_bip2: bip2,
        };
        Ok((
            EnclaveDkg {
                sid,
                state: EnclaveState::AwaitMsg1(Box::new(round)),
            },
            Step::Continue(out),
        ))
    }

    fn on_msg1(&self, round: EnclaveRound2, bytes: &[u8]) -> Result<(KeyShare, Vec<u8>), ProtocolError> {
        let msg: Msg1 = Envelope::open(bytes, header(Direction::ToEnclave, 1, self.sid.0))?;
        check_index(msg.proof_commitment.index, Role::Device)?;
        check_route(&msg.zero2.parties, Role::Enclave)?;
        check_route(&msg.zero3.parties, Role::Enclave)?;
        check_route(&msg.mul.parties, Role::Enclave)?;
        check_sender(msg.bip2.sender_index, Role::Device)?;
        check_sender(msg.bip3.sender_index, Role::Device)?;

        let (zero_kept, zero3, mul_kept, mul, bip3) =
            dkg::phase3::<Curve>(&round.data, &round.zero_keep, &round.bip_keep);
        let bip2_all = BTreeMap::from([
            (Role::Device.index(), msg.bip2),
            (Role::Enclave.index(), round.own_bip2),
        ]);
        let bip3_all = BTreeMap::from([(Role::Device.index(), msg.bip3), (Role::Enclave.index(), bip3.clone())]);
        let own_proof = round.own_proof.proof.clone();
        let (party, _package) = dkg::phase4::<Curve>(
            &round.data,
            &round.poly_point,
            &[msg.proof_commitment, round.own_proof],
            &zero_kept,
            &[msg.zero2],
            &[msg.zero3],
            &mul_kept,
            &[msg.mul],
            &bip2_all,
            &bip3_all,
            address_string,
        )
        .map_err(abort)?;
        let share = KeyShare::new(Role::Enclave, party)?;
        let reply = Reply1 {
            proof: own_proof,
            zero3: single(zero3)?,
            mul: single(mul)?,
            bip3,
        };
        let out = Envelope::seal(header(Direction::ToDevice, 1, self.sid.0), &reply)?;
        Ok((share, out))
    }
}

impl EnclaveFlow for EnclaveDkg {
    const FLOW: Flow = Flow::Dkg;
    type Output = DkgOutput;

    fn session_id(&self) -> SessionId {
        self.sid
    }

    /// Feeds a device message of `createAccount/step`. Returns the next answer, or — once
    /// the device confirmed the same public key — the enclave's share: the caller must
    /// persist it before answering DONE.
    fn step(&mut self, bytes: &[u8]) -> Result<Step<DkgOutput>, ProtocolError> {
        match std::mem::replace(&mut self.state, EnclaveState::Closed) {
            EnclaveState::AwaitMsg1(round) => {
                let (share, reply) = self.on_msg1(*round, bytes)?;
                self.state = EnclaveState::AwaitMsg2 { share };
                Ok(Step::Continue(reply))
            }
            EnclaveState::AwaitMsg2 { share } => {
                let msg: Msg2 = Envelope::open(bytes, header(Direction::ToEnclave, 2, self.sid.0))?;
                if msg.public_key != share.public_key() || msg.share_id != share.share_id() {
                    return Err(ProtocolError::KeyMismatch);
                }
                self.state = EnclaveState::Done {
                    public_key: share.public_key(),
                    share_id: share.share_id(),
                };
                Ok(Step::Done(DkgOutput {
                    account_id: AccountId::from_dkg_session(&self.sid),
                    share,
                    device_ot_fingerprint: msg.ot_fingerprint,
                }))
            }
            EnclaveState::Done { .. } | EnclaveState::Closed => Err(ProtocolError::SessionClosed),
        }
    }

    fn done_message(&mut self, receipt: Receipt) -> Result<Vec<u8>, ProtocolError> {
        let EnclaveState::Done { public_key, share_id } = std::mem::replace(&mut self.state, EnclaveState::Closed)
        else {
            return Err(ProtocolError::SessionClosed);
        };
        Envelope::seal(
            header(Direction::ToDevice, 2, self.sid.0),
            &Done {
                account_id: AccountId::from_dkg_session(&self.sid),
                public_key,
                share_id,
                generation: receipt.generation,
            },
        )
    }
}
