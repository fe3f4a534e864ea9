//! # tandem-sdk
//!
//! The device side of Tandem, a two-party (2-of-2) threshold ECDSA signer for Ethereum.
//! The device holds one key share, an enclave holds the other; neither ever holds the
//! whole key. This crate runs the device's half of every flow over HTTP and turns the
//! result into Ethereum signatures.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use alloy_signer::Signer;
//! use tandem_sdk::{Client, TandemSigner};
//!
//! use tandem_sdk::attestation::{AttestationPolicy, ImageMeasurements};
//!
//! // Trust only the image your build published (its enclave-pcr.json), never the host's word.
//! let image = ImageMeasurements::from_json(&std::fs::read_to_string("enclave-pcr.json")?)?;
//! let client = Client::builder("https://signer.example.com")
//!     .attestation(AttestationPolicy::nitro().accept_image(image))
//!     .build()?;
//! let account = client.create_account(Some("alice")).await?;      // DKG with the enclave
//! println!("address {}", account.address());
//! let signer = TandemSigner::new(client.clone(), account);
//! let sig = signer.sign_message(b"hello").await?;                 // EIP-191, low-S, verified
//! # let _ = sig; Ok(()) }
//! ```
//!
//! * [`Client`] speaks the wire API (docs/ARCHITECTURE.md §4) and drives `tandem-core`'s
//!   state machines with one driver over a [`transport::Transport`]:
//!   [`Client::create_account`], [`Client::sign_digest`], [`Client::recover`],
//!   [`Client::refresh`]. It trusts no enclave until its [`attestation::AttestationPolicy`]
//!   accepts an image.
//! * [`Account`] is the device's material for one account: its share (zeroized on drop,
//!   redacted in `Debug`) and public data; it serializes for storage.
//! * [`TandemSigner`] implements alloy's `Signer` and `TxSigner<Signature>`, so it drops
//!   into alloy wallets and providers; [`eth`] has the payload hashing (EIP-191, EIP-712)
//!   and signature assembly it uses.
//! * [`backup`] encrypts an account's material under a passphrase (Argon2id +
//!   XChaCha20-Poly1305, versioned header); [`Client::restore_backup`] decrypts and runs
//!   the enclave's recovery check before handing the account back; [`drive`] keeps the
//!   encrypted file in the user's Google Drive app data folder.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
pub mod attestation;
pub mod backup;
mod client;
pub mod drive;
mod error;
pub mod eth;
mod signer;
mod tls;
pub mod transport;

pub use account::Account;
pub use client::{Client, ClientBuilder};
pub use error::SdkError;
pub use signer::TandemSigner;
pub use tandem_core;
pub use tls::http_client_trusting;
