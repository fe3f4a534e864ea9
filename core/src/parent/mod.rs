//! The contracts between the enclave and its parent instance, pure (no I/O).
//!
//! A Nitro Enclave has no disk, no network and no console; its parent instance (the EC2
//! host, running `tandem-proxy`) provides all three over vsock. Each link has one module
//! here, and its two ends carry mirror names in the two crates, so either end leads to the
//! other:
//!
//! | link | contract | enclave end (`tandem-enclave`) | parent end (`tandem-proxy`) |
//! |---|---|---|---|
//! | sealed blobs | [`blobs`]: length-prefixed postcard frames, version byte | `parent::blobs` (`ParentBlobStore`, the client) | `enclave::blobs` (the blob service) |
//! | logs | [`logs`]: JSON lines after a version hello | `parent::logs` (the shipper) | `enclave::logs` (the receiver) |
//! | control | [`control`]: JSON over HTTP/1.1, `/control/v1/…` | `parent::control` (the control listener) | `enclave::control` (clock push), `enclave::credentials` (credential push) |
//!
//! The parent is not trusted with secrets: blobs are sealed before they leave the enclave
//! (the enclave authenticates what it reads back), logs carry no secrets, and the only
//! secret the parent hands over, the instance role's AWS credentials, is the parent's own.

pub mod blobs;
pub mod control;
pub mod logs;
