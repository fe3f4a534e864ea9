//! How the CLI reaches a server: URL, trust policy and the wallet's configuration.
//!
//! The wallet directory holds `config.json` with the PCRs the user expects of the enclave
//! (`tandem attestation fetch --save-pcrs` writes it):
//!
//! ```json
//! { "expectedPcrs": { "0": "<96 hex digits>", "8": "…" }, "allowDebug": false }
//! ```
//!
//! A mock-mode enclave is trusted only when its development root is named explicitly
//! with `--mock-root FILE` (or `TANDEM_MOCK_ROOT`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tandem_sdk::Client;
use tandem_sdk::attestation::AttestationPolicy;

/// Wallet-level settings.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WalletConfig {
    /// PCR index → expected value (hex).
    #[serde(default)]
    pub(crate) expected_pcrs: BTreeMap<u8, String>,
    /// Accept a debug-mode enclave (PCR0–2 zero). Development only.
    #[serde(default)]
    pub(crate) allow_debug: bool,
}

impl WalletConfig {
    fn path(wallet: &Path) -> PathBuf {
        wallet.join("config.json")
    }

    /// Reads `config.json` (defaults when absent).
    pub(crate) fn load(wallet: &Path) -> Result<Self> {
        match std::fs::read_to_string(Self::path(wallet)) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("{} is not valid", Self::path(wallet).display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", Self::path(wallet).display())),
        }
    }

    /// The pinned PCRs as bytes (what a backup carries).
    pub(crate) fn pcr_bytes(&self) -> Result<BTreeMap<u8, Vec<u8>>> {
        self.expected_pcrs
            .iter()
            .map(|(i, v)| {
                Ok((
                    *i,
                    hex::decode(v).with_context(|| format!("PCR{i} in config.json is not hex"))?,
                ))
            })
            .collect()
    }

    /// Writes `config.json`.
    pub(crate) fn save(&self, wallet: &Path) -> Result<()> {
        std::fs::create_dir_all(wallet)?;
        std::fs::write(Self::path(wallet), serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", Self::path(wallet).display()))
    }
}

/// Everything needed to talk to a server.
pub(crate) struct Conn {
    /// The server URL.
    pub(crate) server: String,
    /// The wallet directory.
    pub(crate) wallet: PathBuf,
    /// DANGER: a mock enclave's development root to trust.
    pub(crate) mock_root: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the server's TLS instead of the system roots
    /// (the proxy's `--self-signed` CA in development).
    pub(crate) ca_cert: Option<PathBuf>,
}

impl Conn {
    /// The attestation policy: `config`'s PCRs (the wallet's, or a restored backup's not
    /// saved yet), over the AWS root or the named mock root.
    pub(crate) fn policy_for(&self, config: &WalletConfig) -> Result<AttestationPolicy> {
        let mut policy = AttestationPolicy::nitro().danger_allow_debug(config.allow_debug);
        if let Some(root) = &self.mock_root {
            let pem =
                std::fs::read_to_string(root).with_context(|| format!("cannot read --mock-root {}", root.display()))?;
            policy = policy.danger_allow_mock(&pem)?;
        }
        for (index, hex_value) in &config.expected_pcrs {
            let value = hex::decode(hex_value).with_context(|| format!("PCR{index} in config.json is not hex"))?;
            if value.len() != 48 {
                bail!("PCR{index} in config.json must be 48 bytes (96 hex digits)");
            }
            policy = policy.expect_pcr(*index, value);
        }
        Ok(policy)
    }

    /// An SDK client with that policy.
    pub(crate) fn client(&self) -> Result<Client> {
        self.client_for(&WalletConfig::load(&self.wallet)?)
    }

    /// An SDK client trusting the enclave `config` pins.
    pub(crate) fn client_for(&self, config: &WalletConfig) -> Result<Client> {
        let mut builder = Client::builder(&self.server).attestation(self.policy_for(config)?);
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
            builder = builder.http_client(tandem_sdk::http_client_trusting(&pem)?);
        }
        builder
            .build()
            .with_context(|| format!("bad --server {:?}", self.server))
    }
}
