//! Socket addresses: where Tandem's processes listen and what they dial.
//!
//! Every address flag of every binary (the enclave's API and control listeners, its
//! blob store and log destination, the KMS relay, the proxy's enclave, control and log
//! addresses, the parent's blob service) is one [`Addr`], written one way:
//!
//! | scheme | form | used for |
//! |---|---|---|
//! | TCP | `tcp://HOST:PORT`, `tcp://[IPv6]:PORT` | mock mode, laptops, CI |
//! | Unix socket | `unix:///path/to.sock` | mock mode on one machine |
//! | vsock | `vsock://CID:PORT`, `vsock://any:PORT` | Nitro: the enclave ⇄ its parent |
//!
//! One set of rules, checked here and nowhere else:
//!
//! * a scheme is required: a bare `HOST:PORT` is refused rather than guessed at;
//! * a TCP host is a name or an IPv4 address, or an IPv6 address in brackets; port 0 means
//!   "pick a free port", which only a listener can do, so dialing it is refused
//!   ([`Addr::check_dial`]);
//! * a Unix path is non-empty and fits a socket address (at most [`MAX_UNIX_PATH`] bytes);
//! * a vsock CID is 2 or more (0 is the hypervisor, 1 the local loopback, neither is a
//!   peer here), or `any` (`VMADDR_CID_ANY`, also written `4294967295`), which only a
//!   listener can bind; port 0 is refused. An enclave dials its parent at CID 3
//!   ([`VSOCK_CID_PARENT`]); the parent dials the enclave at the CID it was started with.
//!
//! `Display` writes the canonical form, which `FromStr` reads back to the same value.
//! This module does no I/O: the listener and the dialer over these addresses are in the
//! `tandem-io` crate.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// `VMADDR_CID_ANY`: a vsock listener on every local CID. Written `any`.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// The parent instance's vsock CID, as an enclave dials it.
pub const VSOCK_CID_PARENT: u32 = 3;

/// The longest Unix socket path (`sun_path` is 108 bytes with its terminating NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// Where a process listens, or what it dials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// `tcp://HOST:PORT`.
    Tcp {
        /// A host name, an IPv4 address, or an IPv6 address (kept without brackets).
        host: String,
        /// The port; 0 lets a listener pick a free one.
        port: u16,
    },
    /// `unix:///path`.
    Unix(PathBuf),
    /// `vsock://CID:PORT`.
    Vsock {
        /// The context id: 2 or more, or [`VSOCK_CID_ANY`] for a listener.
        cid: u32,
        /// The port (not 0).
        port: u32,
    },
}

/// Why a string is not an [`Addr`], or an address cannot be dialled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// No `scheme://` in front.
    #[error("{0:?} has no scheme: write tcp://HOST:PORT, unix:///path or vsock://CID:PORT")]
    NoScheme(String),
    /// A scheme other than tcp, unix and vsock.
    #[error("{0:?}: the scheme must be tcp://, unix:// or vsock://")]
    UnknownScheme(String),
    /// A malformed TCP address.
    #[error("{0:?} is not tcp://HOST:PORT (an IPv6 host goes in brackets: tcp://[::1]:5000)")]
    Tcp(String),
    /// A missing, over-long or NUL-carrying Unix socket path.
    #[error("{0:?} is not unix:///path (a non-empty path of at most 107 bytes)")]
    Unix(String),
    /// A malformed vsock address.
    #[error("{0:?} is not vsock://CID:PORT (CID a number from 2, or any; port a number from 1)")]
    Vsock(String),
    /// vsock CID 0 or 1.
    #[error("vsock CID {0} is reserved (0: the hypervisor, 1: loopback); the parent is 3, an enclave e.g. 16")]
    ReservedCid(u32),
    /// A listener-only address given where something is dialled.
    #[error("{addr} cannot be dialled: {why}")]
    NotDialable {
        /// The address, canonical form.
        addr: String,
        /// What makes it listener-only.
        why: &'static str,
    },
}

impl Addr {
    /// `tcp://HOST:PORT` (`host` without brackets, also for IPv6).
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Addr::Tcp {
            host: host.into(),
            port,
        }
    }

    /// `vsock://CID:PORT`.
    pub fn vsock(cid: u32, port: u32) -> Self {
        Addr::Vsock { cid, port }
    }

    /// Parses an address that will be dialled: [`FromStr`], then [`Addr::check_dial`].
    /// Use it as the value parser of flags naming a peer.
    pub fn parse_dial(s: &str) -> Result<Self, AddrError> {
        let addr: Addr = s.parse()?;
        addr.check_dial()?;
        Ok(addr)
    }

    /// Refuses what only a listener can use: TCP port 0 and vsock CID `any`.
    pub fn check_dial(&self) -> Result<(), AddrError> {
        let why = match self {
            Addr::Tcp { port: 0, .. } => "port 0 means \"any free port\", which only a listener can pick",
            Addr::Vsock { cid: VSOCK_CID_ANY, .. } => "CID any is for listeners; dial the peer's CID",
            _ => return Ok(()),
        };
        Err(AddrError::NotDialable {
            addr: self.to_string(),
            why,
        })
    }

    /// For TCP, `HOST:PORT` as it goes after `http://` (IPv6 in brackets); `None` for
    /// Unix and vsock, which have no URL form.
    pub fn authority(&self) -> Option<String> {
        match self {
            Addr::Tcp { host, port } if host.contains(':') => Some(format!("[{host}]:{port}")),
            Addr::Tcp { host, port } => Some(format!("{host}:{port}")),
            Addr::Unix(_) | Addr::Vsock { .. } => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::tcp(a.ip().to_string(), a.port())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp { .. } => {
                let authority = self.authority().unwrap_or_default();
                write!(f, "tcp://{authority}")
            }
            Addr::Unix(path) => write!(f, "unix://{}", path.display()),
            Addr::Vsock {
                cid: VSOCK_CID_ANY,
                port,
            } => write!(f, "vsock://any:{port}"),
            Addr::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
        }
    }
}

impl FromStr for Addr {
    type Err = AddrError;

    /// Reads `tcp://HOST:PORT`, `unix:///path` or `vsock://CID:PORT` (see the module docs
    /// for the rules).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(AddrError::NoScheme(s.to_string()));
        };
        match scheme {
            "tcp" => parse_tcp(rest).ok_or_else(|| AddrError::Tcp(s.to_string())),
            "unix" => parse_unix(rest).ok_or_else(|| AddrError::Unix(s.to_string())),
            "vsock" => parse_vsock(s, rest),
            _ => Err(AddrError::UnknownScheme(s.to_string())),
        }
    }
}

/// Digits only: `u16`/`u32` parsing alone would also take a leading `+`.
fn number<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_tcp(rest: &str) -> Option<Addr> {
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']')?;
        inner.parse::<Ipv6Addr>().ok()?;
        (inner, after.strip_prefix(':')?)
    } else {
        let (host, port) = rest.rsplit_once(':')?;
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if host.is_empty() || !host.chars().all(name_char) {
            return None;
        }
        (host, port)
    };
    Some(Addr::tcp(host, number(port)?))
}

fn parse_unix(path: &str) -> Option<Addr> {
    if path.is_empty() || path.len() > MAX_UNIX_PATH || path.contains('\0') {
        return None;
    }
    Some(Addr::Unix(PathBuf::from(path)))
}

fn parse_vsock(input: &str, rest: &str) -> Result<Addr, AddrError> {
    let bad = || AddrError::Vsock(input.to_string());
    let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
    let cid = if cid.eq_ignore_ascii_case("any") {
        VSOCK_CID_ANY
    } else {
        number::<u32>(cid).ok_or_else(bad)?
    };
    if cid < 2 {
        return Err(AddrError::ReservedCid(cid));
    }
    let port = number::<u32>(port).filter(|&p| p != 0).ok_or_else(bad)?;
    Ok(Addr::vsock(cid, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form the binaries, `deploy/` and the docs use, and what it means.
    #[test]
    fn accepted_addresses_and_their_canonical_form() {
        let cases: &[(&str, Addr, &str)] = &[
            (
                "tcp://127.0.0.1:5000",
                Addr::tcp("127.0.0.1", 5000),
                "tcp://127.0.0.1:5000",
            ),
            ("tcp://127.0.0.1:0", Addr::tcp("127.0.0.1", 0), "tcp://127.0.0.1:0"),
            ("tcp://localhost:80", Addr::tcp("localhost", 80), "tcp://localhost:80"),
            (
                "tcp://enclave-1.internal:5000",
                Addr::tcp("enclave-1.internal", 5000),
                "tcp://enclave-1.internal:5000",
            ),
            ("tcp://[::1]:5000", Addr::tcp("::1", 5000), "tcp://[::1]:5000"),
            (
                "tcp://[fe80::1]:65535",
                Addr::tcp("fe80::1", 65535),
                "tcp://[fe80::1]:65535",
            ),
            (
                "unix:///run/tandem.sock",
                Addr::Unix("/run/tandem.sock".into()),
                "unix:///run/tandem.sock",
            ),
            ("unix://rel.sock", Addr::Unix("rel.sock".into()), "unix://rel.sock"),
            ("vsock://16:5000", Addr::vsock(16, 5000), "vsock://16:5000"),
            ("vsock://3:7000", Addr::vsock(3, 7000), "vsock://3:7000"),
            ("vsock://2:1", Addr::vsock(2, 1), "vsock://2:1"),
            ("vsock://any:5002", Addr::vsock(VSOCK_CID_ANY, 5002), "vsock://any:5002"),
            ("vsock://ANY:5002", Addr::vsock(VSOCK_CID_ANY, 5002), "vsock://any:5002"),
            // The Dockerfile's spelling of VMADDR_CID_ANY.
            (
                "vsock://4294967295:5000",
                Addr::vsock(VSOCK_CID_ANY, 5000),
                "vsock://any:5000",
            ),
        ];
        for (text, addr, canonical) in cases {
            let parsed: Addr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&parsed, addr, "{text}");
            assert_eq!(parsed.to_string(), *canonical, "{text}");
            assert_eq!(canonical.parse::<Addr>().as_ref(), Ok(addr), "{canonical} round trip");
        }
    }

    /// Which refusal an input gets.
    type Expected = fn(&AddrError) -> bool;

    #[test]
    fn refused_addresses_say_why() {
        let cases: &[(&str, Expected)] = &[
            ("127.0.0.1:5000", |e| matches!(e, AddrError::NoScheme(_))),
            ("", |e| matches!(e, AddrError::NoScheme(_))),
            ("nonsense", |e| matches!(e, AddrError::NoScheme(_))),
            ("http://127.0.0.1:5000", |e| matches!(e, AddrError::UnknownScheme(_))),
            ("udp://x:1", |e| matches!(e, AddrError::UnknownScheme(_))),
            ("file:///x", |e| matches!(e, AddrError::UnknownScheme(_))),
            ("tcp://127.0.0.1", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://:5000", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://::1:5000", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://[::1]", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://[nope]:80", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://[127.0.0.1]:80", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://host:99999", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://host:+80", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://host:80/", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://user@host:80", |e| matches!(e, AddrError::Tcp(_))),
            ("tcp://nope", |e| matches!(e, AddrError::Tcp(_))),
            ("unix://", |e| matches!(e, AddrError::Unix(_))),
            ("vsock://16", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://5002", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://:8000", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://x:5000", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://16:-1", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://16:0", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://3:99999999999", |e| matches!(e, AddrError::Vsock(_))),
            ("vsock://0:5000", |e| matches!(e, AddrError::ReservedCid(0))),
            ("vsock://1:8000", |e| matches!(e, AddrError::ReservedCid(1))),
        ];
        for (text, expected) in cases {
            match text.parse::<Addr>() {
                Ok(a) => panic!("{text:?} must be refused, got {a:?}"),
                Err(e) => {
                    assert!(expected(&e), "{text:?}: unexpected {e:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        let long = format!("unix:///{}", "a".repeat(MAX_UNIX_PATH));
        assert!(matches!(long.parse::<Addr>(), Err(AddrError::Unix(_))));
        let fits = format!("unix:///{}", "a".repeat(MAX_UNIX_PATH - 1));
        assert!(fits.parse::<Addr>().is_ok());
    }

    #[test]
    fn only_listeners_take_port_zero_and_cid_any() {
        for listen_only in ["tcp://127.0.0.1:0", "vsock://any:5000"] {
            assert!(
                listen_only.parse::<Addr>().is_ok(),
                "{listen_only} is a listener address"
            );
            let err = Addr::parse_dial(listen_only).unwrap_err();
            assert!(matches!(err, AddrError::NotDialable { .. }), "{listen_only}: {err}");
        }
        for dialable in ["tcp://127.0.0.1:5000", "unix:///run/x.sock", "vsock://3:7000"] {
            assert!(Addr::parse_dial(dialable).is_ok(), "{dialable}");
        }
    }

    #[test]
    fn authorities_are_what_follows_http() {
        assert_eq!(Addr::tcp("127.0.0.1", 8).authority().as_deref(), Some("127.0.0.1:8"));
        assert_eq!(Addr::tcp("::1", 8).authority().as_deref(), Some("[::1]:8"));
        assert_eq!(Addr::vsock(16, 5000).authority(), None);
        assert_eq!(Addr::Unix("/x".into()).authority(), None);
        let from: Addr = "[::1]:9".parse::<SocketAddr>().unwrap().into();
        assert_eq!(from, Addr::tcp("::1", 9));
    }
}
