//! # tandem-proxy (placeholder)
//!
//! The parent proxy will run on the EC2 host: terminate HTTPS (rustls), rate-limit
//! (governor) and relay the wire API to the enclave over vsock. It is an empty crate until
//! the proxy issue lands; it exists now so the workspace layout matches DESIGN.md §1.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
