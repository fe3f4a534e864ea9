//! The enclave's ends of its links to the parent instance.
//!
//! A Nitro Enclave has no disk, no network and no console: the parent provides them. The
//! contracts are in `tandem_core::parent`; the parent's ends are in `tandem-proxy`'s
//! `enclave` module, under the same names:
//!
//! | link | here | the parent's end |
//! |---|---|---|
//! | sealed blobs | [`blobs`]: [`ParentBlobStore`](blobs::ParentBlobStore), a `BlobStore` client | `tandem_proxy::enclave::blobs`: the blob service |
//! | logs | [`logs`]: the log shipper (a `tracing` writer) | `tandem_proxy::enclave::logs`: the receiver |
//! | control | [`control`]: the control listener's routes | `tandem_proxy::enclave::{control, credentials}`: clock and credential pushes |
//!
//! In mock mode the same links run over TCP or Unix sockets (`tandem_core::Addr`).

pub mod blobs;
pub mod control;
pub mod logs;
