//! # tandem-testkit
//!
//! What every crate's tests share, written once:
//!
//! * [`InProcess`]: an enclave in this process (mock mode, memory store), reached by the
//!   real SDK through a [`RouterTransport`] (no socket) that records everything a host
//!   would see, plus raw JSON access for status-code assertions.
//! * [`Manual`]: a device driven step by step from the core machines, for the tests that
//!   replay, reorder, tamper — or, with `tandem_core::testing::malicious`, cheat.
//! * [`Served`] and [`Tandem`]: an enclave on a loopback port, and the `tandem` binary run
//!   against it (the CLI's tests).
//! * [`RogueEnclave`]: an enclave built from the core machines that attests like a
//!   pinned image and probes the device's OT correlation when signing.
//! * [`HostileStore`]: a blob store with a malicious host's levers (veto writes, serve
//!   older blobs, relabel versions).
//! * [`fuzz`]: the fuzz targets' bodies and their seeds (the fuzz crate and the corpus
//!   replay test call the same functions).
//! * [`shares`]: key shares made once per test binary instead of a DKG per test.
//!
//! Nothing here is compiled into a binary: it is a dev-dependency only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed helper is a failed test

pub mod fuzz;
mod hostile_store;
mod in_process;
mod manual;
mod rogue;
mod served;
pub mod shares;

pub use hostile_store::HostileStore;
pub use in_process::{InProcess, RouterTransport};
pub use manual::{Dev, Manual, b64, unb64, unix_now};
pub use rogue::RogueEnclave;
pub use served::{Served, Tandem, error_of};

/// The measurements of the mock image `name` (`dev` unless the enclave was started with
/// another `--mock-image`): what a client of a mock enclave pins.
pub fn mock_image(name: &str) -> tandem_sdk::attestation::ImageMeasurements {
    let pcrs = tandem_enclave::attester::image_pcrs(name).unwrap();
    tandem_sdk::attestation::ImageMeasurements::from_json(&tandem_enclave::attester::pcr_file_json(&pcrs)).unwrap()
}

/// A policy trusting a mock enclave: its development root and the mock image `dev`.
pub fn mock_policy(dev_root_pem: &str) -> tandem_sdk::attestation::AttestationPolicy {
    tandem_sdk::attestation::AttestationPolicy::nitro()
        .danger_allow_mock(dev_root_pem)
        .unwrap()
        .accept_image(mock_image("dev"))
}
