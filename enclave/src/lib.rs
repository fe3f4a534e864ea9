//! # tandem-enclave
//!
//! The server party of Tandem. It holds the enclave's key share of every account and
//! answers the DKG (createAccount), sign, recover and refresh steps of the wire API
//! (DESIGN.md §4) over HTTP, on TCP or a Unix socket (vsock in Nitro mode, later).
//!
//! ```text
//!  HTTP (axum) ─▶ api ─▶ sessions (in memory, TTL, one step at a time)
//!                  │        └─ tandem-core engine machines, run on the blocking pool
//!                  └─▶ keystore ─▶ Sealer (AEAD, master key) ─▶ BlobStore (file | memory)
//! ```
//!
//! Every protocol payload travels sealed end to end (HPKE to the enclave's channel key,
//! published in its attestation document), and every flow on an account must be
//! authorized by the device key registered at createAccount (DESIGN.md §5).
//!
//! Only mock mode runs so far: a local master key file instead of KMS and a development
//! attestation chain instead of the NSM. `/v1/health` reports `mockMode` so no client can
//! mistake it for Nitro.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod attester;
pub mod config;
pub mod error;
pub mod keystore;
pub mod replay;
pub mod server;
pub mod sessions;

pub use config::{Config, ListenAddr};
pub use server::{Server, run};
