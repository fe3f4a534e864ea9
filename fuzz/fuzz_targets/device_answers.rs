//! Fuzz target `device_answers`: see `tandem_testkit::fuzz::device_answers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::device_answers(data));
