//! # tandem-enclave
//!
//! The server party of Tandem. It holds the enclave's key share of every account and
//! answers the DKG (createAccount), sign, recover and refresh steps of the wire API
//! (DESIGN.md §4) over HTTP, on TCP or a Unix socket in mock mode, vsock in Nitro mode.
//!
//! ```text
//!  HTTP (axum) ─▶ api ─▶ sessions (in memory, TTL, one step at a time)
//!                  │        └─ tandem-core engine machines, run on the blocking pool
//!                  └─▶ keystore ─▶ Sealer (AEAD, data-key ring) ─▶ BlobStore (file | parent | memory)
//!                                    ▲
//!  boot: attest ─▶ credentials ─▶ unwrap data keys (KeyWrapper: local master key | KMS
//!        with an attested Recipient) ─▶ ready          control API ─▶ credentials
//! ```
//!
//! Every protocol payload travels sealed end to end (HPKE to the enclave's channel key,
//! published in its attestation document), and every flow on an account must be
//! authorized by the device key registered at createAccount (DESIGN.md §5).
//!
//! Mock mode uses a local master key file and a development attestation chain; Nitro mode
//! the NSM, KMS (through the parent's vsock-proxy) and the parent's blob service. Every
//! link to the parent instance (blobs, logs, the control listener) is in [`parent`]; the
//! command line is [`cli`].
//! `/v1/health` reports `mockMode`, each boot stage and `ready`, so no client can mistake
//! one for the other or sign against an enclave that has not unwrapped its keys.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod attester;
pub mod boot;
pub mod cli;
pub mod config;
pub mod error;
pub mod guard;
pub mod keystore;
pub mod kms;
pub mod parent;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod sessions;

pub use config::Config;
pub use server::{Server, run};
