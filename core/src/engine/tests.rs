//! Both parties in one process: every flow end to end, and a peer that misbehaves.

use std::sync::Arc;

use k256::ecdsa::signature::hazmat::PrehashVerifier;

use super::*;
use crate::flow::{DeviceFlow, EnclaveFlow, Receipt};
use crate::ids::AccountId;
use crate::message::{Direction, Envelope, Expect};
use crate::testing::{drive, malicious};

/// Runs a DKG between a device and an enclave machine; returns both shares.
pub(crate) fn run_dkg() -> (KeyShare, KeyShare) {
    let (device, enclave, _) = crate::testing::dkg().unwrap();
    (device, enclave)
}

fn run_sign(device: &Arc<KeyShare>, enclave: &Arc<KeyShare>, digest: [u8; 32]) -> Result<Signature, ProtocolError> {
    crate::testing::sign(device, enclave, digest)
}

fn run_refresh(
    device: &Arc<KeyShare>,
    enclave: &Arc<KeyShare>,
    kind: RefreshKind,
) -> Result<(KeyShare, KeyShare), ProtocolError> {
    let (d, m0) = DeviceRefresh::start(device.clone(), kind, 3)?;
    let enclave = enclave.clone();
    let (refreshed, output) = drive(
        d,
        m0,
        |m0| EnclaveRefresh::start(EnclaveRefresh::parse_start(m0)?, enclave, 3),
        4,
    )?;
    assert_eq!(refreshed.generation, 4);
    assert_eq!(output.kind, kind);
    assert_eq!(output.device_ot_fingerprint, refreshed.share.ot_fingerprint().unwrap());
    Ok((refreshed.share, output.share))
}

fn run_recover(device: &KeyShare, enclave: &KeyShare) -> Result<(Recovered, ShareId), ProtocolError> {
    let (d, m0) = DeviceRecover::start(device, 1)?;
    drive(
        d,
        m0,
        |m0| EnclaveRecover::start(&EnclaveRecover::parse_start(m0)?, enclave),
        2,
    )
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
    let (device, enclave, account) = crate::testing::dkg().unwrap();
    assert_eq!(device.public_key(), enclave.public_key());
    assert_eq!(device.share_id(), enclave.share_id());
    assert_eq!(device.role(), Role::Device);
    assert_ne!(account, AccountId::random().unwrap());

    // Shares survive serialization.
    let device = KeyShare::from_bytes(&device.to_bytes().unwrap()).unwrap();
    let enclave = KeyShare::from_bytes(&enclave.to_bytes().unwrap()).unwrap();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));

    for i in 0..3u8 {
        let digest = crate::eth::keccak256(&[i]);
        let sig = run_sign(&device, &enclave, digest).unwrap();
        verify(&device.public_key(), &digest, &sig);
    }

    // Recovery check passes for the right share, with a sealed receipt.
    let (recovered, share_id) = run_recover(&device, &enclave).unwrap();
    assert_eq!(recovered.generation, 2);
    assert_eq!(share_id, device.share_id());

    // Refresh (both kinds): same key, new generation; old + new cannot sign together.
    for kind in [RefreshKind::Fast, RefreshKind::Complete] {
        let (new_device, new_enclave) = run_refresh(&device, &enclave, kind).unwrap();
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
        assert_eq!(
            run_recover(&device, &new_enclave).unwrap_err(),
            ProtocolError::RecoveryFailed
        );
        // ...and the new one passes.
        run_recover(&new_device, &new_enclave).unwrap();
    }
}

/// A complete refresh replaces the multiplication (OT) state itself; a fast one derives it
/// from the old one. The OT fingerprint shows the difference.
#[test]
fn a_complete_refresh_replaces_the_ot_state() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let before = device.ot_fingerprint().unwrap();
    let (fast, _) = run_refresh(&device, &enclave, RefreshKind::Fast).unwrap();
    let (complete, _) = run_refresh(&device, &enclave, RefreshKind::Complete).unwrap();
    assert_ne!(fast.ot_fingerprint().unwrap(), before);
    assert_ne!(complete.ot_fingerprint().unwrap(), before);
    // Fast refresh keeps each party's OT-extension correlation Δ up to a shared value; a
    // complete refresh draws a new one. Either way the stored states differ entirely.
    assert_ne!(fast.ot_fingerprint().unwrap(), complete.ot_fingerprint().unwrap());
}

#[test]
fn recovery_refuses_another_accounts_share() {
    let (device_a, _enclave_a) = run_dkg();
    let (_device_b, enclave_b) = run_dkg();
    assert_eq!(
        run_recover(&device_a, &enclave_b).unwrap_err(),
        ProtocolError::RecoveryFailed
    );
}

/// The device refuses an enclave whose answers carry an older generation than it saw:
/// in the first answer of a signature (before it runs phase 2 on it) and in the done
/// message of a recovery check.
#[test]
fn rolled_back_enclave_state_is_refused_by_the_device() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let (d, m0) = DeviceSign::start(device.clone(), [7; 32], 5).unwrap();
    let e = enclave.clone();
    let err = drive(d, m0, |m0| EnclaveSign::start(EnclaveSign::parse_start(m0)?, e, 4), 4)
        .err()
        .unwrap();
    assert_eq!(err, ProtocolError::Rollback { seen: 5, got: 4 });
    assert_eq!(err.code(), crate::ErrorCode::RollbackDetected);

    let (d, m0) = DeviceRecover::start(&device, 9).unwrap();
    let err = drive(
        d,
        m0,
        |m0| EnclaveRecover::start(&EnclaveRecover::parse_start(m0)?, &enclave),
        8,
    )
    .err()
    .unwrap();
    assert_eq!(err, ProtocolError::Rollback { seen: 9, got: 8 });
}

#[test]
fn replayed_reordered_and_cross_session_messages_are_refused() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let continue_msg = |s: Step<()>| match s {
        Step::Continue(m) => m,
        Step::Done(()) => panic!("expected a reply"),
    };
    let send_msg = |n: Next<Signed>| match n {
        Next::Send(m) => m,
        Next::Done(_) => panic!("expected a message"),
    };

    // Two concurrent sign sessions on the same key.
    let (mut d1, a0) = DeviceSign::start(device.clone(), [1; 32], 0).unwrap();
    let (e1, ar0) = EnclaveSign::start(EnclaveSign::parse_start(&a0).unwrap(), enclave.clone(), 1).unwrap();
    let (mut d2, b0) = DeviceSign::start(device.clone(), [2; 32], 0).unwrap();
    let (mut e2, br0) = EnclaveSign::start(EnclaveSign::parse_start(&b0).unwrap(), enclave.clone(), 1).unwrap();

    let a1 = send_msg(d1.receive(&continue_msg(ar0)).unwrap());
    let b1 = send_msg(d2.receive(&continue_msg(br0)).unwrap());

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
    let (_d3, c0) = DeviceSign::start(device, [3; 32], 0).unwrap();
    let (mut e3, cr0) = EnclaveSign::start(EnclaveSign::parse_start(&c0).unwrap(), enclave, 1).unwrap();
    assert_eq!(e3.step(&continue_msg(cr0)).unwrap_err(), ProtocolError::WrongDirection);

    // A sign message sent into a DKG: wrong flow.
    assert!(matches!(
        EnclaveDkg::start(&c0).err().unwrap(),
        ProtocolError::WrongFlow { .. }
    ));

    // A done message asked for before the flow is done, or twice.
    assert_eq!(
        e3.done_message(Receipt { generation: 1 }).unwrap_err(),
        ProtocolError::SessionClosed
    );
    let _ = &mut d1;
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

/// Runs a sign up to the device's step message: (device, enclave, message).
fn sign_to_step(device: &Arc<KeyShare>, enclave: &Arc<KeyShare>) -> (DeviceSign, EnclaveSign, Vec<u8>) {
    let (mut d, m0) = DeviceSign::start(device.clone(), [5; 32], 0).unwrap();
    let (e, r0) = EnclaveSign::start(EnclaveSign::parse_start(&m0).unwrap(), enclave.clone(), 1).unwrap();
    let Step::Continue(r0) = r0 else { panic!() };
    let Next::Send(m1) = d.receive(&r0).unwrap() else {
        panic!()
    };
    (d, e, m1)
}

/// Flips one bit at positions spread over the device's sign/step message (header and
/// payload): every variant makes the flow fail with a typed error, and none panics or
/// yields a signature. Truncations are refused by the enclave outright.
#[test]
fn bit_flipped_and_truncated_messages_are_refused() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let (_, _, sample) = sign_to_step(&device, &enclave);
    let positions: Vec<usize> = (0..sample.len()).step_by((sample.len() / 60).max(1)).collect();
    let mut refused_by_enclave = 0;
    for &pos in &positions {
        let (mut d, mut e, mut m1) = sign_to_step(&device, &enclave);
        m1[pos] ^= 0x01;
        match e.step(&m1) {
            Err(_) => refused_by_enclave += 1,
            Ok(_) => {
                let partial = e.done_message(Receipt { generation: 1 }).unwrap();
                assert!(d.receive(&partial).is_err(), "flip at {pos} produced a signature");
            }
        }
    }
    // Header flips and most payload flips are caught by the enclave itself.
    assert!(
        refused_by_enclave >= positions.len() / 2,
        "{refused_by_enclave} of {}",
        positions.len()
    );
    for cut in [0, 10, sample.len() / 2, sample.len() - 1] {
        let (_, mut e, m1) = sign_to_step(&device, &enclave);
        assert!(e.step(&m1[..cut]).is_err());
    }
}

/// A malicious device whose phase-2 values are off is caught by the enclave's
/// consistency check, and the abort demands a ban (DKLs23: the check protects the reused
/// OT correlation).
#[test]
fn malicious_device_with_inconsistent_values_is_caught_and_must_be_banned() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    let (_, mut e, m1) = sign_to_step(&device, &enclave);
    let err = e.step(&malicious::corrupt_step(&m1).unwrap()).unwrap_err();
    assert_eq!(err.code(), crate::ErrorCode::MpcError, "{err:?}");
    assert!(err.requires_ban(), "{err:?}");
}

/// A probe of the enclave's OT correlation: the device's OT-extension data edited in one
/// column. In the KOS selective-failure attack the prober also recomputes its check values
/// so that the check passes exactly when its guess of one bit of Δ is right, and so learns
/// one bit per answer; the crude edit here fails the check every time. Either way the
/// enclave's answer is a consistency failure that demands a ban — which is why it must
/// stop answering at the first one (see the enclave's attack tests).
#[test]
fn ot_extension_probes_fail_the_enclaves_check_with_a_ban() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    for bit in [0, 1, 77, 255] {
        let (_, mut e, m1) = sign_to_step(&device, &enclave);
        let err = e.step(&malicious::probe_step(&m1, bit).unwrap()).unwrap_err();
        assert!(err.requires_ban(), "bit {bit}: {err:?}");
    }
}

/// The same probe by a rogue enclave against the device's Δ (in its first answer), and a
/// rogue partial: the device's checks catch both with a ban.
#[test]
fn rogue_enclave_probes_are_caught_by_the_device_with_a_ban() {
    let (device, enclave) = run_dkg();
    let (device, enclave) = (Arc::new(device), Arc::new(enclave));
    for bit in [0, 3, 200] {
        let (mut d, m0) = DeviceSign::start(device.clone(), [8; 32], 0).unwrap();
        let (_e, r0) = EnclaveSign::start(EnclaveSign::parse_start(&m0).unwrap(), enclave.clone(), 1).unwrap();
        let Step::Continue(r0) = r0 else { panic!() };
        let err = d.receive(&malicious::probe_reply0(&r0, bit).unwrap()).unwrap_err();
        assert!(err.requires_ban(), "bit {bit}: {err:?}");
    }

    let (mut d, mut e, m1) = sign_to_step(&device, &enclave);
    assert!(matches!(e.step(&m1).unwrap(), Step::Done(())));
    let partial = e.done_message(Receipt { generation: 1 }).unwrap();
    let err = d.receive(&malicious::corrupt_partial(&partial).unwrap()).unwrap_err();
    assert!(err.requires_ban(), "{err:?}");
}
