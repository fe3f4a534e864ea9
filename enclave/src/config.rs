//! The enclave's configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, e.g. `127.0.0.1:5000` (port 0 picks a free port).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    /// Parses `tcp://HOST:PORT`, `unix:///path`, or a bare `HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path, e.g. unix:///run/tandem.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s.starts_with("vsock://") {
            return Err("vsock listening arrives with Nitro mode; use tcp:// or unix:// in mock mode".into());
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        addr.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is not tcp://HOST:PORT or unix:///path"))
    }
}

/// Which backend stores the sealed share blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One file per account under the data directory (survives restarts).
    File,
    /// In memory only (tests; everything is lost on exit).
    Memory,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the master key and the account blobs.
    pub data_dir: PathBuf,
    /// Which blob store to use.
    pub store: StoreKind,
    /// How long a session may sit between steps before it expires.
    pub session_ttl: Duration,
    /// The most sessions in flight at once; more are refused with `RATE_LIMITED`.
    pub max_sessions: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Config {
    /// Mock-mode defaults with data under `data_dir`: 120 s TTL, 1024 sessions, 2 MiB bodies.
    pub fn mock(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store: StoreKind::File,
            session_ttl: Duration::from_secs(120),
            max_sessions: 1024,
            max_body_bytes: 2 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "tcp://127.0.0.1:5000".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(
            "127.0.0.1:0".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            "unix:///tmp/x.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert!("unix://".parse::<ListenAddr>().is_err());
        assert!("vsock://16:5000".parse::<ListenAddr>().is_err());
        assert!("nonsense".parse::<ListenAddr>().is_err());
    }
}
