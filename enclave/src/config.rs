//! The enclave's configuration.

use std::path::PathBuf;
use std::time::Duration;

use tandem_core::Addr;

use crate::kms::KmsConfig;

/// Which backend stores the sealed share blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// One file per account under the data directory (survives restarts).
    File,
    /// In memory only (tests; everything is lost on exit).
    Memory,
    /// The parent's blob service (Nitro: `vsock://3:PORT`; mock: TCP or Unix).
    Parent(Addr),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    /// Parses `file`, `memory` or `parent:ADDR` (ADDR a dialable [`Addr`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" => Ok(StoreKind::File),
            "memory" => Ok(StoreKind::Memory),
            _ => match s.strip_prefix("parent:") {
                Some(addr) => Addr::parse_dial(addr).map(StoreKind::Parent).map_err(|e| e.to_string()),
                None => Err(format!("{s:?} is not file, memory or parent:ADDR")),
            },
        }
    }
}

/// Who wraps the data keys that seal the blobs.
#[derive(Debug, Clone)]
pub enum WrapperKind {
    /// A local master key file `<data dir>/master.key` (mock mode).
    Local,
    /// AWS KMS.
    Kms {
        /// Region, endpoint, key and transport.
        kms: KmsConfig,
        /// Call KMS without a `Recipient` (an emulator cannot attest). Mock mode only.
        danger_no_recipient: bool,
    },
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the master key, the development attestation chain and (file
    /// store) the account blobs.
    pub data_dir: PathBuf,
    /// Which blob store to use.
    pub store: StoreKind,
    /// Who wraps the data keys.
    pub wrapper: WrapperKind,
    /// Nitro mode: NSM attestation, and only KMS with a recipient and the parent store.
    pub nitro: bool,
    /// How long a session may sit between steps before it expires.
    pub session_ttl: Duration,
    /// The most sessions in flight at once; more are refused with `RATE_LIMITED`.
    pub max_sessions: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How many unsealed accounts the keystore caches (about 50 KB each).
    pub cache_accounts: usize,
    /// How many flow starts the replay window remembers; beyond it, starts are refused
    /// with `RATE_LIMITED` until older ones age out.
    pub max_flow_starts: usize,
    /// The development attestation's image name (mock mode): its PCRs are derived from
    /// it, so tests can run two "images" side by side.
    pub mock_image: String,
}

impl Config {
    /// Mock-mode defaults with data under `data_dir`: file store, local master key, 120 s
    /// TTL, 1024 sessions, 2 MiB bodies, 4096 cached accounts, 2²⁰ flow starts per replay
    /// window, the mock image `dev`.
    pub fn mock(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store: StoreKind::File,
            wrapper: WrapperKind::Local,
            nitro: false,
            session_ttl: Duration::from_secs(120),
            max_sessions: 1024,
            max_body_bytes: 2 << 20,
            cache_accounts: crate::keystore::DEFAULT_CACHE_ACCOUNTS,
            max_flow_starts: 1 << 20,
            mock_image: "dev".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_kinds() {
        assert_eq!("file".parse::<StoreKind>().unwrap(), StoreKind::File);
        assert_eq!("memory".parse::<StoreKind>().unwrap(), StoreKind::Memory);
        assert_eq!(
            "parent:vsock://3:7000".parse::<StoreKind>().unwrap(),
            StoreKind::Parent(Addr::vsock(3, 7000))
        );
        assert_eq!(
            "parent:tcp://127.0.0.1:7000".parse::<StoreKind>().unwrap(),
            StoreKind::Parent(Addr::tcp("127.0.0.1", 7000))
        );
        assert!("parent:".parse::<StoreKind>().is_err());
        assert!(
            "parent:tcp://127.0.0.1:0".parse::<StoreKind>().is_err(),
            "a store is dialled"
        );
        assert!("parent:vsock://1:7000".parse::<StoreKind>().is_err());
        assert!("s3".parse::<StoreKind>().is_err());
    }
}
