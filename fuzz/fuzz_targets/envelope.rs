//! Fuzz target `envelope`: see `tandem_testkit::fuzz::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::envelope(data));
