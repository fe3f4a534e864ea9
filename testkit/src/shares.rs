//! Key shares made once per test binary (a DKG costs about a second in a debug build):
//! tests that need real shares but not a fresh account take these.

use std::sync::{Arc, OnceLock};

use tandem_core::{AccountId, KeyShare};

/// One account's shares: (device, enclave, account id).
pub type Pair = (Arc<KeyShare>, Arc<KeyShare>, AccountId);

fn make() -> Pair {
    let (device, enclave, id) = tandem_core::testing::dkg().unwrap();
    (Arc::new(device), Arc::new(enclave), id)
}

/// The first cached account.
pub fn first() -> Pair {
    static A: OnceLock<Pair> = OnceLock::new();
    A.get_or_init(make).clone()
}

/// A second, unrelated cached account.
pub fn second() -> Pair {
    static B: OnceLock<Pair> = OnceLock::new();
    B.get_or_init(make).clone()
}
