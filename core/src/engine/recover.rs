//! Recovery check: the device proves its (restored) share belongs to the account, without
//! revealing it, in one message; the enclave answers with a sealed receipt.
//!
//! For a 2-of-2 sharing over indices 1 and 2 the key is `x = 2·x₁ − x₂`, so the enclave,
//! which knows its own `x₂` and the public key `X`, knows the device's verification share
//! `X₁ = (X + x₂·G)·2⁻¹`. The device sends a non-interactive (Fischlin) proof of knowledge
//! of `x₁` with `x₁·G = X₁`, bound to its nonce, the account's public key and the share
//! generation, and the fingerprint of its OT state ([`KeyShare::ot_fingerprint`]), which
//! the enclave compares with the one recorded when that share was made: a share from
//! another account, an older generation, a corrupt backup or rotted OT seeds fails with
//! `RECOVERY_FAILED` instead of passing here and failing a consistency check (a ban) at
//! the next signature. The enclave's answer is sealed and bound to the session, so the
//! host cannot fake a passed check.

use dkls23::utilities::proofs::DLogProof;
use k256::elliptic_curve::Group;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Curve, KeyShare, Role, check_generation, nonce};
use crate::error::ProtocolError;
use crate::flow::{DeviceFlow, EnclaveFlow, Next, Receipt, Step};
use crate::ids::{SessionId, ShareId};
use crate::keys::PublicKey;
use crate::message::{Direction, Envelope, Expect, Flow};

#[derive(Serialize, Deserialize)]
struct Msg0 {
    share_id: ShareId,
    proof: DLogProof<Curve>,
    ot_fingerprint: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Done {
    enclave_nonce: [u8; 32],
    share_id: ShareId,
    generation: u64,
}

fn header(direction: Direction, binding: [u8; 32]) -> Expect {
    Expect {
        flow: Flow::Recover,
        direction,
        step: 0,
        binding,
    }
}

fn proof_context(device_nonce: &[u8; 32], public_key: &PublicKey, share_id: &ShareId) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"tandem/v1/recover");
    h.update(device_nonce);
    h.update(public_key.to_compressed());
    h.update(share_id.0);
    h.finalize().to_vec()
}

/// What a passed recovery check yields on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// The account's generation as the enclave reported it.
    pub generation: u64,
}

/// The device's side of the recovery check.
pub struct DeviceRecover {
    nonce: [u8; 32],
    share_id: ShareId,
    seen_generation: u64,
    done: bool,
}

impl DeviceRecover {
    /// Starts the check for `share`: the machine and the first message of `recover/start`.
    pub fn start(share: &KeyShare, seen_generation: u64) -> Result<(Self, Vec<u8>), ProtocolError> {
        if share.role() != Role::Device {
            return Err(ProtocolError::InvalidShare("not a device share"));
        }
        let nonce = nonce()?;
        let context = proof_context(&nonce, &share.public_key(), &share.share_id());
        let proof = DLogProof::<Curve>::prove(&share.party.poly_point, &context)
            .map_err(|_| ProtocolError::Internal("proof search exhausted"))?;
        let msg = Envelope::seal(
            header(Direction::ToEnclave, nonce),
            &Msg0 {
                share_id: share.share_id(),
                proof,
                ot_fingerprint: share.ot_fingerprint()?,
            },
        )?;
        Ok((
            DeviceRecover {
                nonce,
                share_id: share.share_id(),
                seen_generation,
                done: false,
            },
            msg,
        ))
    }
}

impl DeviceFlow for DeviceRecover {
    const FLOW: Flow = Flow::Recover;
    type Output = Recovered;

    fn receive(&mut self, answer: &[u8]) -> Result<Next<Recovered>, ProtocolError> {
        if std::mem::replace(&mut self.done, true) {
            return Err(ProtocolError::SessionClosed);
        }
        let got = Envelope::peek(answer)?;
        let done: Done = Envelope::open(answer, header(Direction::ToDevice, got.binding))?;
        if SessionId::derive(Flow::Recover, &self.nonce, &done.enclave_nonce).0 != got.binding {
            return Err(ProtocolError::WrongSession);
        }
        if done.share_id != self.share_id {
            return Err(ProtocolError::RecoveryFailed);
        }
        check_generation(self.seen_generation, done.generation)?;
        Ok(Next::Done(Recovered {
            generation: done.generation,
        }))
    }
}

/// A parsed `recover/start` message.
pub struct RecoverStart {
    device_nonce: [u8; 32],
    msg: Msg0,
}

impl RecoverStart {
    /// The key generation the device claims to hold.
    pub fn share_id(&self) -> ShareId {
        self.msg.share_id
    }

    /// The device's OT-state fingerprint, to compare with the one recorded for the share.
    pub fn ot_fingerprint(&self) -> [u8; 32] {
        self.msg.ot_fingerprint
    }
}

/// The enclave's side of the recovery check.
pub struct EnclaveRecover {
    sid: SessionId,
    enclave_nonce: [u8; 32],
    share_id: ShareId,
    answered: bool,
}

impl EnclaveRecover {
    /// Parses the device's message.
    pub fn parse_start(msg0: &[u8]) -> Result<RecoverStart, ProtocolError> {
        let got = Envelope::peek(msg0)?;
        let msg: Msg0 = Envelope::open(msg0, header(Direction::ToEnclave, got.binding))?;
        Ok(RecoverStart {
            device_nonce: got.binding,
            msg,
        })
    }

    /// Verifies the device's proof against the enclave's share of the account. The check
    /// is complete at once ([`Step::Done`]); the caller compares the OT fingerprint with
    /// the recorded one and promotes a pending share before answering.
    pub fn start(start: &RecoverStart, share: &KeyShare) -> Result<(Self, Step<ShareId>), ProtocolError> {
        if share.role() != Role::Enclave {
            return Err(ProtocolError::InvalidShare("not an enclave share"));
        }
        if start.msg.share_id != share.share_id() {
            return Err(ProtocolError::RecoveryFailed);
        }
        let public_key = share.public_key();
        let two_inv = Option::<k256::Scalar>::from(k256::Scalar::from(2u64).invert())
            .ok_or(ProtocolError::Internal("2 is invertible"))?;
        let expected = (k256::ProjectivePoint::from(public_key.to_affine())
            + k256::ProjectivePoint::from(share.own_point()))
            * two_inv;
        if bool::from(expected.is_identity()) || k256::ProjectivePoint::from(start.msg.proof.point) != expected {
            return Err(ProtocolError::RecoveryFailed);
        }
        let context = proof_context(&start.device_nonce, &public_key, &start.msg.share_id);
        if !DLogProof::<Curve>::verify(&start.msg.proof, &context) {
            return Err(ProtocolError::RecoveryFailed);
        }
        let enclave_nonce = nonce()?;
        let sid = SessionId::derive(Flow::Recover, &start.device_nonce, &enclave_nonce);
        Ok((
            EnclaveRecover {
                sid,
                enclave_nonce,
                share_id: share.share_id(),
                answered: false,
            },
            Step::Done(share.share_id()),
        ))
    }
}

impl EnclaveFlow for EnclaveRecover {
    const FLOW: Flow = Flow::Recover;
    type Output = ShareId;

    fn session_id(&self) -> SessionId {
        self.sid
    }

    fn step(&mut self, _message: &[u8]) -> Result<Step<ShareId>, ProtocolError> {
        Err(ProtocolError::SessionClosed)
    }

    fn done_message(&mut self, receipt: Receipt) -> Result<Vec<u8>, ProtocolError> {
        if std::mem::replace(&mut self.answered, true) {
            return Err(ProtocolError::SessionClosed);
        }
        Envelope::seal(
            header(Direction::ToDevice, self.sid.0),
            &Done {
                enclave_nonce: self.enclave_nonce,
                share_id: self.share_id,
                generation: receipt.generation,
            },
        )
    }
}
