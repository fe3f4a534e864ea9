//! Fuzz target `backup`: see `tandem_testkit::fuzz::backup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::backup(data));
