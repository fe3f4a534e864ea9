//! Fuzz target `blob_records`: see `tandem_testkit::fuzz::blob_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::blob_records(data));
