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
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = run(server, listener, token).await {
                tracing::error!(error = %e, "in-process enclave stopped");
            }
        });
        Ok(LocalEnclave { url, stop, _dir: dir })
    }
}

impl Drop for LocalEnclave {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
