//! # tandem-testkit
//!
//! What every crate's tests share, written once:
//!
//! * [`InProcess`]: an enclave in this process (mock mode, memory store), reached by the
//!   real SDK through a [`RouterTransport`] (no socket) that records everything a host
//!   would see, plus raw JSON access for status-code assertions.
//! * [`Manual`]: a device driven step by step from the core machines, for the tests that
//!   replay, reorder, tamper — or, with `tandem_core::testing::malicious`, cheat.
//! * [`shares`]: key shares made once per test binary instead of a DKG per test.
//!
//! Nothing here is compiled into a binary: it is a dev-dependency only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed helper is a failed test

mod in_process;
mod manual;
pub mod shares;

pub use in_process::{InProcess, RouterTransport};
pub use manual::{Dev, Manual, b64, unb64, unix_now};
