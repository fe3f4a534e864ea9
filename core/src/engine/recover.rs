//! Recovery check: the device proves its (restored) share belongs to the account, without
//! revealing it, in one message.
//!
//! For a 2-of-2 sharing over indices 1 and 2 the key is `x = 2·x₁ − x₂`, so the enclave,
//! which knows its own `x₂` and the public key `X`, knows the device's verification share
//! `X₁ = (X + x₂·G)·2⁻¹`. The device sends a non-interactive (Fischlin) proof of knowledge
//! of `x₁` with `x₁·G = X₁`, bound to its nonce, the account's public key and the share
//! generation. A share from another account, an older generation or a corrupt backup
//! fails with `RECOVERY_FAILED`.

use dkls23::utilities::proofs::DLogProof;
use k256::elliptic_curve::Group;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Curve, KeyShare, Role, nonce};
use crate::error::ProtocolError;
use crate::ids::{SessionId, ShareId};
use crate::keys::PublicKey;
use crate::message::{Direction, Envelope, Expect, Flow};

#[derive(Serialize, Deserialize)]
struct Msg0 {
    share_id: ShareId,
    proof: DLogProof<Curve>,
}

fn proof_context(device_nonce: &[u8; 32], public_key: &PublicKey, share_id: &ShareId) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"tandem/v1/recover");
    h.update(device_nonce);
    h.update(public_key.to_compressed());
    h.update(share_id.0);
    h.finalize().to_vec()
}

/// The device's side of the recovery check.
pub struct DeviceRecover;

impl DeviceRecover {
    /// The `clientMessage` of `recover/start` for `share`.
    pub fn message(share: &KeyShare) -> Result<Vec<u8>, ProtocolError> {
        if share.role() != Role::Device {
            return Err(ProtocolError::InvalidShare("not a device share"));
        }
        let nonce = nonce()?;
        let context = proof_context(&nonce, &share.public_key(), &share.share_id());
        let proof = DLogProof::<Curve>::prove(&share.party.poly_point, &context)
            .map_err(|_| ProtocolError::Internal("proof search exhausted"))?;
        Envelope::seal(
            Expect {
                flow: Flow::Recover,
                direction: Direction::ToEnclave,
                step: 0,
                binding: nonce,
            },
            &Msg0 {
                share_id: share.share_id(),
                proof,
            },
        )
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
}

/// The enclave's side of the recovery check.
pub struct EnclaveRecover;

impl EnclaveRecover {
    /// Parses the device's message.
    pub fn parse_start(msg0: &[u8]) -> Result<RecoverStart, ProtocolError> {
        let got = Envelope::peek(msg0)?;
        let msg: Msg0 = Envelope::open(
            msg0,
            Expect {
                flow: Flow::Recover,
                direction: Direction::ToEnclave,
                step: 0,
                binding: got.binding,
            },
        )?;
        Ok(RecoverStart {
            device_nonce: got.binding,
            msg,
        })
    }

    /// Verifies the device's proof against the enclave's share of the account. Returns a
    /// session id for the answer.
    pub fn verify(start: &RecoverStart, share: &KeyShare) -> Result<SessionId, ProtocolError> {
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
        Ok(SessionId::derive(Flow::Recover, &start.device_nonce, &nonce()?))
    }
}
