//! Fuzz target `parent_links`: see `tandem_testkit::fuzz::parent_links`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_testkit::fuzz::parent_links(data));
