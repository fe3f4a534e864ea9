//! # tandem-core
//!
//! The pure heart of Tandem, a two-party (2-of-2) threshold ECDSA signer for Ethereum.
//! Everything here is shared by the device (the `tandem-sdk` crate) and the enclave
//! (`tandem-enclave`), and nothing here does I/O or async work:
//!
//! ```text
//!   device (SDK)                         enclave
//!   ────────────                         ───────
//!   engine::DeviceDkg ──clientMessage──▶ engine::EnclaveDkg
//!                     ◀─serverMessage──
//!        …  each message is a versioned `message::Envelope` bound to
//!           (flow, session id, step, direction)  …
//! ```
//!
//! * [`engine`] wraps the `dkls23` MPC library as explicit per-party state machines for
//!   DKG, signing, refresh and recovery. No other module names a `dkls23` type, so the
//!   engine can be replaced without touching the flows.
//! * [`message`] is the binary envelope every protocol message travels in.
//! * [`wire`] holds the JSON request/response types of the HTTP API (DESIGN.md §4) and
//!   [`error`] the wire error codes.
//! * [`eth`] holds the Ethereum primitives both sides need: keccak-256, addresses, EIP-55.
//! * [`addr`] is the one socket address syntax of every binary (`tcp://`, `unix://`,
//!   `vsock://`), and [`parent`] the contracts between the enclave and its parent instance
//!   (sealed blobs, logs, control calls): data and rules only, the sockets are elsewhere.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod attestation;
pub mod auth;
pub mod channel;
pub mod engine;
pub mod error;
pub mod eth;
pub mod flow;
pub mod ids;
pub mod keys;
pub mod message;
pub mod parent;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wire;

pub use addr::Addr;
pub use engine::{KeyShare, Role, Signature};
pub use error::{ErrorCode, ProtocolError};
pub use eth::Address;
pub use flow::Flow;
pub use ids::{AccountId, SessionId, ShareId};
pub use keys::PublicKey;
