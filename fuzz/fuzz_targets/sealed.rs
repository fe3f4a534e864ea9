//! Fuzz target `sealed`: see `tandem_testkit::fuzz::sealed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::sealed(data));
