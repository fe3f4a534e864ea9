//! Fuzz target `attestation`: see `tandem_testkit::fuzz::attestation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::attestation(data));
