//! An enclave in this process, in mock mode, on a free loopback port, behind the parent
//! proxy (HTTPS with a development CA, rate limits): what `tandem-dev demo` and
//! `tandem-dev bench --local` talk to. The same two pieces as production, in one process.

use anyhow::{Context, Result};
use tandem_core::Addr;
use tandem_enclave::config::Config;
use tandem_enclave::server::{Listener, Server, run};
use tokio_util::sync::CancellationToken;

/// A running in-process enclave; stops when dropped.
pub(crate) struct LocalEnclave {
    /// The enclave itself, `http://127.0.0.1:PORT` (what the proxy relays to).
    pub(crate) enclave_url: String,
    /// The proxy, `https://127.0.0.1:PORT`: what clients use.
    pub(crate) url: String,
    /// The proxy's development CA (PEM).
    ca_pem: Vec<u8>,
    _proxy: tandem_proxy::LocalProxy,
    /// The enclave's development attestation root (PEM), which its clients must trust.
    pub(crate) dev_root_pem: String,
    /// The mock image's measurements (what its clients pin).
    pub(crate) image: tandem_sdk::attestation::ImageMeasurements,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl LocalEnclave {
    /// Starts an enclave with its data (master key, sealed blobs) in a temporary directory.
    pub(crate) async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// [`LocalEnclave::start`], adjusting the proxy's configuration (rate limits for a
    /// benchmark, say).
    pub(crate) async fn start_with(configure: impl FnOnce(&mut tandem_proxy::config::ProxyConfig)) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-demo-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let server = Server::open(&Config::mock(dir.path())).context("cannot open the enclave keystore")?;
        let listener = Listener::bind(&Addr::tcp("127.0.0.1", 0))
            .await
            .context("cannot bind a loopback port")?;
        let enclave = listener.local_addr().context("cannot bind a loopback port")?;
        let enclave_url = format!("http://{}", enclave.authority().unwrap_or_default());
        let dev_root_pem = match server.dev_root_pem() {
            Some(p) => std::fs::read_to_string(p).context("cannot read the development root")?,
            None => anyhow::bail!("the local enclave has no development root"),
        };
        let measurements = server
            .measurements_path()
            .context("the local enclave publishes no measurements")?;
        let image = tandem_sdk::attestation::ImageMeasurements::from_json(
            &std::fs::read_to_string(&measurements).context("cannot read the mock image's measurements")?,
        )?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = run(server, listener, token).await {
                tracing::error!(error = %e, "in-process enclave stopped");
            }
        });
        let proxy = tandem_proxy::LocalProxy::start(enclave, &dir.path().join("tls"), configure)
            .await
            .context("cannot start the parent proxy")?;
        Ok(LocalEnclave {
            enclave_url,
            url: proxy.url.clone(),
            ca_pem: proxy.ca_pem.clone(),
            _proxy: proxy,
            dev_root_pem,
            image,
            stop,
            _dir: dir,
        })
    }
}

impl Drop for LocalEnclave {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl LocalEnclave {
    /// What a client of this enclave trusts: its development root and its mock image.
    fn policy(&self) -> Result<tandem_sdk::attestation::AttestationPolicy> {
        Ok(tandem_sdk::attestation::AttestationPolicy::nitro()
            .danger_allow_mock(&self.dev_root_pem)?
            .accept_image(self.image.clone()))
    }

    /// A client of this enclave that trusts its development root and image (and nothing
    /// else).
    pub(crate) fn client(&self) -> Result<tandem_sdk::Client> {
        let policy = self.policy()?;
        let http = tandem_sdk::http_client_trusting(&self.ca_pem)?;
        Ok(tandem_sdk::Client::builder(&self.url)
            .http_client(http)
            .attestation(policy)
            .build()?)
    }

    /// A client that bypasses the proxy and talks to the enclave directly (the bench's
    /// baseline for the proxy's cost).
    pub(crate) fn direct_client(&self) -> Result<tandem_sdk::Client> {
        let policy = self.policy()?;
        Ok(tandem_sdk::Client::builder(&self.enclave_url)
            .attestation(policy)
            .build()?)
    }
}
