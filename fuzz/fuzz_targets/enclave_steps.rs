//! Fuzz target `enclave_steps`: see `tandem_testkit::fuzz::enclave_steps`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::enclave_steps(data));
