//! # tandem-proxy
//!
//! The parent proxy runs on the EC2 host, in front of the enclave. It is the only part of
//! Tandem the internet touches, so its job is to stay up under abuse and to tell operators
//! what is happening, while it never sees a secret: every MPC payload is sealed end-to-end
//! between the SDK and the enclave (DESIGN.md §5), and the proxy forwards ciphertext.
//!
//! ```text
//!  SDK ──HTTPS (rustls, h2 / http1.1)──▶ tandem-proxy ──HTTP/1.1 over vsock/TCP/Unix──▶ enclave
//!                                        │
//!                                        ├─ routing: only the wire API's paths (404 otherwise)
//!                                        ├─ rate limits: per client IP, per account, global
//!                                        ├─ hardening: body limit, timeouts, connection cap, API keys
//!                                        └─ observability: request ids, JSON access logs, /metrics
//! ```
//!
//! On a Nitro parent the same process runs every service the enclave needs from its host,
//! all started by [`run`] from one [`ParentConfig`] ([`parent`]): the blob service, the
//! enclave's log receiver, and the clock and credential pushes to its control listener
//! ([`enclave`]).
//!
//! One module per job:
//!
//! * [`parent`]: [`ParentConfig`], [`Parent`] and [`run`], the one entry point the binary
//!   ([`cli`]: flags → configuration) and the tests start the parent with;
//! * [`config`]: every limit and timeout of the HTTPS front, with defaults for one enclave;
//! * [`tls`]: the rustls server configuration (TLS 1.3 unless TLS 1.2 is asked for), PEM
//!   loading and development certificates;
//! * [`connector`]: the [`connector::Connector`] seam to the enclave (any
//!   `tandem_core::Addr`: `tcp://`, `unix://`, `vsock://`);
//! * [`relay`]: forwarding a request to the enclave over a pooled HTTP/1.1 client;
//! * [`enclave`]: the parent's ends of the other links to the enclave (blobs, logs,
//!   control), mirroring `tandem_enclave::parent`;
//! * [`exchange`]: one HTTP/1.1 request over a connector stream (hyper), for the control
//!   calls and the instance metadata service;
//! * [`ratelimit`]: governor buckets and the client address behind trusted proxies;
//! * [`hardening`]: the route table, body limit, API keys, connection slots and idle tracking;
//! * [`observability`]: request ids, access logs and Prometheus metrics;
//! * [`error`]: the one mapping from proxy errors to wire error codes;
//! * [`server`]: the HTTPS accept loop ([`serve`]), and [`LocalProxy`], a development proxy
//!   on a loopback port for `tandem-dev demo` and benchmarks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod connector;
pub mod enclave;
pub mod error;
pub mod exchange;
mod handler;
pub mod hardening;
pub mod observability;
pub mod parent;
pub mod ratelimit;
pub mod relay;
pub mod server;
pub mod tls;

pub use config::ProxyConfig;
pub use error::{ProxyError, SetupError};
pub use parent::{Parent, ParentConfig, run};
pub use server::{LocalProxy, Proxy, serve};
