//! How the CLI reaches a server: URL, trust policy and the wallet's configuration.
//!
//! The CLI trusts an enclave only if its attestation shows one of the images the user
//! accepts. Those come from the build (the `enclave-pcr.json` that `scripts/build-eif.sh`
//! writes, or the one a mock enclave writes to its data directory), never from the host:
//! `tandem attestation pin --pcr-file FILE` adds one to the wallet's `config.json`, and
//! `--pcr-file FILE` (or `TANDEM_PCR_FILE`) accepts one for a single command:
//!
//! ```json
//! { "acceptedImages": [ { "PCR0": "<96 hex digits>", "PCR1": "…", "PCR2": "…" } ], "allowDebug": false }
//! ```
//!
//! Several images can be accepted at once (a rolling upgrade). A `config.json` written
//! before images existed (`expectedPcrs`) is read as one image when it names PCR0–2 or
//! PCR8, and rewritten in the new form at the next save.
//!
//! A mock-mode enclave is trusted only when its development root is named explicitly
//! with `--mock-root FILE` (or `TANDEM_MOCK_ROOT`); its image must be pinned too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tandem_sdk::Client;
use tandem_sdk::attestation::{AttestationPolicy, ImageMeasurements};

/// One accepted image as `config.json` stores it: `{"PCR0": hex, …}` (the shape of
/// `enclave-pcr.json`).
pub(crate) type StoredImage = BTreeMap<String, String>;

/// Wallet-level settings.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WalletConfig {
    /// The enclave images this wallet accepts.
    #[serde(default)]
    pub(crate) accepted_images: Vec<StoredImage>,
    /// Before images existed: PCR index → expected value (hex). Read, never written.
    #[serde(default, skip_serializing)]
    expected_pcrs: BTreeMap<u8, String>,
    /// Accept a debug-mode enclave (PCR0–2 zero). Development only.
    #[serde(default)]
    pub(crate) allow_debug: bool,
}

/// The stored form of an image.
pub(crate) fn stored(image: &ImageMeasurements) -> StoredImage {
    image
        .pcrs()
        .iter()
        .map(|(i, v)| (format!("PCR{i}"), hex::encode(v)))
        .collect()
}

/// An image read from a stored form (or an `enclave-pcr.json` file's text).
pub(crate) fn parse_image(image: &StoredImage) -> Result<ImageMeasurements> {
    let json = serde_json::to_string(image)?;
    Ok(ImageMeasurements::from_json(&json)?)
}

/// Reads an `enclave-pcr.json` file.
pub(crate) fn read_pcr_file(path: &Path) -> Result<ImageMeasurements> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the measurements file {}", path.display()))?;
    ImageMeasurements::from_json(&text).with_context(|| format!("{} is not a measurements file", path.display()))
}

impl WalletConfig {
    fn path(wallet: &Path) -> PathBuf {
        wallet.join("config.json")
    }

    /// Reads `config.json` (defaults when absent), turning a pre-image `expectedPcrs`
    /// into an accepted image.
    pub(crate) fn load(wallet: &Path) -> Result<Self> {
        let path = Self::path(wallet);
        let mut config: WalletConfig = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if !config.expected_pcrs.is_empty() {
            let legacy: StoredImage = std::mem::take(&mut config.expected_pcrs)
                .into_iter()
                .map(|(i, v)| (format!("PCR{i}"), v))
                .collect();
            let image = parse_image(&legacy).with_context(|| {
                format!(
                    "{} pins PCRs that do not identify an image (an image is PCR0, PCR1 and PCR2, or PCR8): pin the build's measurements with `tandem attestation pin --pcr-file enclave-pcr.json`",
                    path.display()
                )
            })?;
            config.add(&image);
        }
        Ok(config)
    }

    /// The accepted images.
    pub(crate) fn images(&self) -> Result<Vec<ImageMeasurements>> {
        self.accepted_images
            .iter()
            .enumerate()
            .map(|(n, i)| parse_image(i).with_context(|| format!("accepted image {} in config.json", n + 1)))
            .collect()
    }

    /// Accepts `image` (no duplicate); returns whether it was new.
    pub(crate) fn add(&mut self, image: &ImageMeasurements) -> bool {
        let s = stored(image);
        if self.accepted_images.contains(&s) {
            return false;
        }
        self.accepted_images.push(s);
        true
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
    /// Measurements files of images accepted for this command, beside the wallet's.
    pub(crate) pcr_files: Vec<PathBuf>,
}

impl Conn {
    /// The attestation policy: `config`'s images (the wallet's, or a restored backup's not
    /// saved yet) and `--pcr-file`'s, over the AWS root or the named mock root. With no
    /// image at all it is refused here, with the way out.
    pub(crate) fn policy_for(&self, config: &WalletConfig) -> Result<AttestationPolicy> {
        let mut policy = self.base_policy(config)?;
        let mut images = config.images()?;
        for path in &self.pcr_files {
            images.push(read_pcr_file(path)?);
        }
        if images.is_empty() {
            bail!(
                "no enclave image is pinned, so no enclave can be trusted: pin the image your build published with `tandem attestation pin --pcr-file enclave-pcr.json` (or pass --pcr-file); a mock enclave writes its file to <data-dir>/attestation/enclave-pcr.json"
            );
        }
        for image in images {
            policy = policy.accept_image(image);
        }
        Ok(policy)
    }

    /// The policy without any image: root, mock opt-in, debug opt-in.
    pub(crate) fn base_policy(&self, config: &WalletConfig) -> Result<AttestationPolicy> {
        let mut policy = AttestationPolicy::nitro().danger_allow_debug(config.allow_debug);
        if let Some(root) = &self.mock_root {
            let pem =
                std::fs::read_to_string(root).with_context(|| format!("cannot read --mock-root {}", root.display()))?;
            policy = policy.danger_allow_mock(&pem)?;
        }
        Ok(policy)
    }

    /// An SDK client with that policy.
    pub(crate) fn client(&self) -> Result<Client> {
        self.client_for(&WalletConfig::load(&self.wallet)?)
    }

    /// An SDK client trusting the enclave `config` pins.
    pub(crate) fn client_for(&self, config: &WalletConfig) -> Result<Client> {
        self.client_with(self.policy_for(config)?)
    }

    /// An SDK client with `policy`.
    pub(crate) fn client_with(&self, policy: AttestationPolicy) -> Result<Client> {
        let mut builder = Client::builder(&self.server).attestation(policy);
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
            builder = builder.http_client(tandem_sdk::http_client_trusting(&pem)?);
        }
        builder
            .build()
            .with_context(|| format!("bad --server {:?}", self.server))
    }
}
