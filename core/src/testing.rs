//! Test support, compiled only for tests (feature `testing`, which no release build
//! enables): both parties of a flow in one process, and the tools of a malicious peer.
//!
//! The attack tests mount these against the real machines: a malicious device is the
//! device machine plus one of the [`malicious`] edits to its message, a rogue enclave the
//! enclave machine plus one to its answer.

use std::sync::Arc;

use crate::engine::{Created, DeviceDkg, DeviceSign, DkgOutput, EnclaveDkg, EnclaveSign, KeyShare, Signature, Signed};
use crate::error::ProtocolError;
pub use crate::flow::run_local as drive;
use crate::ids::AccountId;

/// A fresh account: the device's and the enclave's shares and the account id.
pub fn dkg() -> Result<(KeyShare, KeyShare, AccountId), ProtocolError> {
    let (device, m0) = DeviceDkg::start()?;
    let (created, output): (Created, DkgOutput) = drive(device, m0, EnclaveDkg::start, 1)?;
    Ok((created.share, output.share, created.account_id))
}

/// Signs `digest` with both shares.
pub fn sign(device: &Arc<KeyShare>, enclave: &Arc<KeyShare>, digest: [u8; 32]) -> Result<Signature, ProtocolError> {
    let (d, m0) = DeviceSign::start(device.clone(), digest, 0)?;
    let enclave = enclave.clone();
    let (signed, ()): (Signed, ()) = drive(
        d,
        m0,
        |m0| EnclaveSign::start(EnclaveSign::parse_start(m0)?, enclave, 1),
        1,
    )?;
    Ok(signed.signature)
}

/// What a malicious peer does to (opened) protocol messages.
pub mod malicious {
    pub use crate::engine::tamper::{corrupt_partial, corrupt_step, probe_reply0, probe_step};
}
