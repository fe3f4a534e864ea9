//! # tandem-io
//!
//! The operating-system plumbing every Tandem binary shares, written once:
//!
//! * [`fs`]: atomic file writes (temp file, fsync, rename, fsync the directory), for the
//!   wallet's account files, the enclave's blobs and master key, the proxy's certificates;
//! * [`blob_dir`]: a directory of versioned sealed blobs with compare-and-swap writes, the
//!   store behind both the enclave's mock-mode file store and the parent's blob service;
//! * `net` (feature `net`): the one listener and the one dialer over
//!   [`tandem_core::Addr`] (`tcp://`, `unix://`, `vsock://`), and the one accept loop;
//! * `service` (feature `service`): the shutdown signal and the logging setup of a
//!   long-running binary.
//!
//! Why a crate of its own: the address *syntax* is data and lives in `tandem-core`, which
//! does no I/O (it compiles for browsers); the sockets over it are needed by the enclave
//! *and* by the parent proxy, which must not depend on each other (docs/ARCHITECTURE.md
//! §1), so they can live in neither. A `net` module per binary crate would be the two
//! copies this crate replaces. It depends on `tandem-core` only, and every Tandem crate
//! may depend on it; features keep what each needs (the wallet takes only [`fs`]).
//!
//! vsock cannot be opened on development machines or CI: its code paths are the same as
//! their TCP and Unix twins, which the tests exercise, plus the address parsing of core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blob_dir;
pub mod fs;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "service")]
pub mod service;
