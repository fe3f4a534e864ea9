//! Both parties in one process: every flow end to end, and a peer that misbehaves.

use std::sync::Arc;

use k256::ecdsa::signature::hazmat::PrehashVerifier;

use super::*;
use crate::message::{Direction, Envelope, Expect};

/// Runs a DKG between a device and an enclave machine; returns both shares.
pub(crate) fn run_dkg() -> (KeyShare, KeyShare) {
    let (mut device, m0) = DeviceDkg::start().unwrap();
    let (mut enclave, _sid, r0) = EnclaveDkg::start(&m0).unwrap();
    let m1 = device.receive(&r0).unwrap();
    let Next::Send(r1) = enclave.step(&m1).unwrap() else {
        panic!("expected a reply")
    };
    let m2 = device.receive(&r1).unwrap();
    let Next::Done(enclave_share) = enclave.step(&m2).unwrap() else {
        panic!("expected done")
    };
    let device_share = device.finish(&enclave_share.public_key()).unwrap();
    (device_share, enclave_share)
}

pub(crate) fn run_sign(
    device: &Arc<KeyShare>,
    enclave: &Arc<KeyShare>,
    digest: [u8; 32],
) -> Result<Signature, ProtocolError> {
    let (mut d, m0) = DeviceSign::start(device.clone(), digest)?;
    let start = EnclaveSign::parse_start(&m0)?;
    let (mut e, _sid, r0) = EnclaveSign::start(start, enclave.clone())?;
    let m1 = d.receive(&r0)?;
    let partial = e.step(&m1)?;
    d.finish(&partial)
}

fn verify(pk: &PublicKey, digest: &[u8; 32], sig: &Signature) {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk.to_compressed()).unwrap();
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&sig.r);
    rs[32..].copy_from_slice(&sig.s);
    let s = k256::ecdsa::Signature::from_slice(&rs).unwrap();
    assert!(s.normalize_s() == s, "signature must be low-S");
    vk.verify_prehash(digest, &s).unwrap();
    let rid = k256::ecdsa::RecoveryId::from_byte(sig.recovery_id).unwrap();
    let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &s, rid).unwrap();
    assert_eq!(recovered, vk, "recovery id must recover the account key");
}

#[test]
fn dkg_sign_refresh_recover_end_to_end() {
    let (device, enclave) = run_dkg();
    assert_eq!(device.public_key(), enclave.public_key());
    assert_eq!(device.share_id(), enclave.share_id());
    assert_eq!(device.role(), Role::Device);

    // Shares survive serialization.
    let device = KeyShare::from_bytes(&device.to_bytes().unwrap()).unwrap();
    let enclave = KeyShare::from_bytes(&enclave.to_bytes().unwrap()).unwrap();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));

    for i in 0..3u8 {
        let digest = crate::eth::keccak256(&[i]);
        let sig = run_sign(&device, &enclave, digest).unwrap();
        verify(&device.public_key(), &digest, &sig);
    }

    // Recovery check passes for the right share.
    let m = DeviceRecover::message(&device).unwrap();
    let start = EnclaveRecover::parse_start(&m).unwrap();
    EnclaveRecover::verify(&start, &enclave).unwrap();

    // Refresh: same key, new generation; old + new cannot sign together.
    let (mut d, m0) = DeviceRefresh::start(device.clone()).unwrap();
    let (mut e, _sid, r0) = EnclaveRefresh::start(EnclaveRefresh::parse_start(&m0).unwrap(), enclave).unwrap();
    let m1 = d.receive(&r0).unwrap();
    let Next::Send(r1) = e.step(&m1).unwrap() else { panic!() };
    let m2 = d.receive(&r1).unwrap();
    let Next::Done(new_enclave) = e.step(&m2).unwrap() else {
        panic!()
    };
    let new_device = d.finish().unwrap();
    assert_eq!(new_device.public_key(), device.public_key());
    assert_ne!(new_device.share_id(), device.share_id());
    assert_eq!(new_device.share_id(), new_enclave.share_id());
    let (new_device, new_enclave) = (Arc::new(new_device), Arc::new(new_enclave));

    let digest = [0x42; 32];
    let sig = run_sign(&new_device, &new_enclave, digest).unwrap();
    verify(&device.public_key(), &digest, &sig);

    let err = run_sign(&device, &new_enclave, digest).unwrap_err();
    assert_eq!(err.code(), crate::ErrorCode::MpcInvalidShare);

    // Old device share fails the recovery check against the new enclave share...
    let m = DeviceRecover::message(&device).unwrap();
    let start = EnclaveRecover::parse_start(&m).unwrap();
    assert_eq!(
        EnclaveRecover::verify(&start, &new_enclave).unwrap_err(),
        ProtocolError::RecoveryFailed
    );
    // ...and the new one passes.
    let m = DeviceRecover::message(&new_device).unwrap();
    EnclaveRecover::verify(&EnclaveRecover::parse_start(&m).unwrap(), &new_enclave).unwrap();
}

#[test]
fn recovery_refuses_another_accounts_share() {
    let (device_a, _enclave_a) = run_dkg();
    let (_device_b, enclave_b) = run_dkg();
    let m = DeviceRecover::message(&device_a).unwrap();
    let start = EnclaveRecover::parse_start(&m).unwrap();
    assert_eq!(
        EnclaveRecover::verify(&start, &enclave_b).unwrap_err(),
        ProtocolError::RecoveryFailed
    );
}

#[test]
fn replayed_reordered_and_cross_session_messages_are_refused() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));

    // Two concurrent sign sessions on the same key.
    let (mut d1, a0) = DeviceSign::start(device.clone(), [1; 32]).unwrap();
    let (e1, _, ar0) = EnclaveSign::start(EnclaveSign::parse_start(&a0).unwrap(), enclave.clone()).unwrap();
    let (mut d2, b0) = DeviceSign::start(device.clone(), [2; 32]).unwrap();
    let (mut e2, _, br0) = EnclaveSign::start(EnclaveSign::parse_start(&b0).unwrap(), enclave.clone()).unwrap();

    let a1 = d1.receive(&ar0).unwrap();
    let b1 = d2.receive(&br0).unwrap();

    // A message of session A fed to session B: refused and B is poisoned.
    assert_eq!(e2.step(&a1).unwrap_err(), ProtocolError::WrongSession);
    assert_eq!(e2.step(&b1).unwrap_err(), ProtocolError::SessionClosed);

    // The start message replayed as a step: wrong step.
    let mut e1b = e1;
    assert!(matches!(
        e1b.step(&a0).unwrap_err(),
        ProtocolError::WrongSession | ProtocolError::WrongStep { .. }
    ));

    // Reflecting the enclave's own reply back to it: wrong direction.
    let (_d3, c0) = DeviceSign::start(device.clone(), [3; 32]).unwrap();
    let (mut e3, _, cr0) = EnclaveSign::start(EnclaveSign::parse_start(&c0).unwrap(), enclave).unwrap();
    assert_eq!(e3.step(&cr0).unwrap_err(), ProtocolError::WrongDirection);

    // A sign message sent into a DKG: wrong flow.
    assert!(matches!(
        EnclaveDkg::start(&c0).err().unwrap(),
        ProtocolError::WrongFlow { .. }
    ));

    // Finishing twice or out of order.
    let (d4, _) = DeviceSign::start(device, [4; 32]).unwrap();
    assert_eq!(d4.finish(&cr0).unwrap_err(), ProtocolError::SessionClosed);
    let _ = (&mut d1, &mut e1b);
}

#[test]
fn wrong_length_digest_is_refused() {
    let msg = Envelope::seal(
        Expect {
            flow: crate::Flow::Sign,
            direction: Direction::ToEnclave,
            step: 0,
            binding: [9; 32],
        },
        &(vec![1u8; 31], ShareId([0; 16])),
    )
    .unwrap();
    assert_eq!(
        EnclaveSign::parse_start(&msg).err().unwrap(),
        ProtocolError::InvalidField("digest must be 32 bytes")
    );
}

/// Flips one bit at positions spread over the device's sign/step message (header and
/// payload): every variant makes the flow fail with a typed error, and none panics or
/// yields a signature. Truncations are refused by the enclave outright.
#[test]
fn bit_flipped_and_truncated_messages_are_refused() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let fresh = || {
        let (mut d, m0) = DeviceSign::start(device.clone(), [5; 32]).unwrap();
        let (e, _, r0) = EnclaveSign::start(EnclaveSign::parse_start(&m0).unwrap(), enclave.clone()).unwrap();
        let m1 = d.receive(&r0).unwrap();
        (d, e, m1)
    };
    let (_, _, sample) = fresh();
    let positions: Vec<usize> = (0..sample.len()).step_by((sample.len() / 60).max(1)).collect();
    let mut refused_by_enclave = 0;
    for &pos in &positions {
        let (d, mut e, mut m1) = fresh();
        m1[pos] ^= 0x01;
        match e.step(&m1) {
            Err(_) => refused_by_enclave += 1,
            Ok(partial) => assert!(d.finish(&partial).is_err(), "flip at {pos} produced a signature"),
        }
    }
    // Header flips and most payload flips are caught by the enclave itself.
    assert!(
        refused_by_enclave >= positions.len() / 2,
        "{refused_by_enclave} of {}",
        positions.len()
    );
    for cut in [0, 10, sample.len() / 2, sample.len() - 1] {
        let (_, mut e, m1) = fresh();
        assert!(e.step(&m1[..cut]).is_err());
    }
}

/// A malicious device that tampers with protocol values (not the envelope) is caught.
#[test]
fn tampered_protocol_values_abort() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let (mut d, m0) = DeviceSign::start(device, [6; 32]).unwrap();
    let (mut e, _, r0) = EnclaveSign::start(EnclaveSign::parse_start(&m0).unwrap(), enclave).unwrap();
    let m1 = d.receive(&r0).unwrap();
    // Decode, change one scalar of the phase-2 message (psi), re-encode with a valid header.
    let hdr = Envelope::peek(&m1).unwrap();
    let mut msg: sign::tamper::Msg1 = Envelope::open(&m1, hdr).unwrap();
    msg.t2.psi += k256::Scalar::ONE;
    let bad = Envelope::seal(hdr, &msg).unwrap();
    let err = e.step(&bad).unwrap_err();
    assert_eq!(err.code(), crate::ErrorCode::MpcError, "{err:?}");
}
