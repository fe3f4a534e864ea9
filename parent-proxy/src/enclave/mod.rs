//! The parent's ends of its links to the enclave (besides the public API, which
//! [`crate::relay`] forwards).
//!
//! A Nitro Enclave has no disk, no network and no console; the parent provides them. The
//! contracts are in `tandem_core::parent`; the enclave's ends are in `tandem-enclave`'s
//! `parent` module, under the same names:
//!
//! | link | here | the enclave's end |
//! |---|---|---|
//! | sealed blobs | [`blobs`]: the blob service over a blob directory | `tandem_enclave::parent::blobs`: `ParentBlobStore` |
//! | logs | [`logs`]: the receiver, into this process's log | `tandem_enclave::parent::logs`: the shipper |
//! | control | [`control`]: the control client and the clock push; [`credentials`]: the credential push | `tandem_enclave::parent::control`: the control listener |
//!
//! All of them are started by [`crate::Parent`], from one configuration, so none can be
//! left out of a deployment by accident.

pub mod blobs;
pub mod control;
pub mod credentials;
pub mod logs;
