//! An enclave in this process, in mock mode, on a free loopback port: what `tandem demo`
//! and `tandem bench --local` talk to.

use anyhow::{Context, Result};
use tandem_enclave::config::{Config, ListenAddr};
use tandem_enclave::server::{Listener, Server, run};
use tokio_util::sync::CancellationToken;

/// A running in-process enclave; stops when dropped.
pub(crate) struct LocalEnclave {
    /// `http://127.0.0.1:PORT`
    pub(crate) url: String,
    /// The enclave's development attestation root (PEM), which its clients must trust.
    pub(crate) dev_root_pem: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl LocalEnclave {
    /// Starts an enclave with its data (master key, sealed blobs) in a temporary directory.
    pub(crate) async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-demo-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let server = Server::open(&Config::mock(dir.path())).context("cannot open the enclave keystore")?;
        let addr: ListenAddr = "tcp://127.0.0.1:0".parse().map_err(anyhow::Error::msg)?;
        let listener = Listener::bind(&addr).await.context("cannot bind a loopback port")?;
        let url = format!("http://{}", listener.local_addr());
        let dev_root_pem = match server.dev_root_pem() {
            Some(p) => std::fs::read_to_string(p).context("cannot read the development root")?,
            None => anyhow::bail!("the local enclave has no development root"),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = run(server, listener, token).await {
                tracing::error!(error = %e, "in-process enclave stopped");
            }
        });
        Ok(LocalEnclave {
            url,
            dev_root_pem,
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
    /// A client of this enclave that trusts its development root (and nothing else).
    pub(crate) fn client(&self) -> Result<tandem_sdk::Client> {
        let policy = tandem_sdk::attestation::AttestationPolicy::nitro().danger_allow_mock(&self.dev_root_pem)?;
        Ok(tandem_sdk::Client::builder(&self.url).attestation(policy).build()?)
    }
}
