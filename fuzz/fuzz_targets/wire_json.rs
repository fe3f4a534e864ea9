//! Fuzz target `wire_json`: see `tandem_testkit::fuzz::wire_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::wire_json(data));
