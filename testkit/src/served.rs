//! An enclave served on a loopback port in this process, and the `tandem` binary run
//! against it: what the CLI's tests need, written once.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_enclave::server::{Listener, run};
use tandem_enclave::{Config, Server};
use tokio_util::sync::CancellationToken;

/// A mock enclave on `http://127.0.0.1:PORT`, stopped when dropped.
pub struct Served {
    /// Its URL.
    pub url: String,
    /// Its development root (PEM file), for `--mock-root`.
    pub mock_root: String,
    /// Its image's measurements file, for `--pcr-file`.
    pub pcr_file: String,
    stop: CancellationToken,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Served {
    /// An enclave of the mock image `image` with its data in a new temporary directory.
    pub async fn start(image: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::mock(data.path());
        config.mock_image = image.into();
        let mut served = Self::with_config(&config).await;
        served._data = Some(data);
        served
    }

    /// An enclave with its data in `dir` (kept after it stops: starting it again there is a
    /// restart).
    pub async fn in_dir(dir: &Path) -> Self {
        Self::with_config(&Config::mock(dir)).await
    }

    async fn with_config(config: &Config) -> Self {
        let server = Server::open(config).unwrap();
        let mock_root = server.dev_root_pem().unwrap().to_str().unwrap().to_string();
        let pcr_file = server.measurements_path().unwrap().to_str().unwrap().to_string();
        let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap().authority().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(run(server, listener, stop.clone()));
        Served {
            url,
            mock_root,
            pcr_file,
            stop,
            _data: None,
        }
    }

    /// A `tandem` runner for this enclave (its root and image trusted) and `wallet`.
    pub fn tandem(&self, bin: &str, wallet: &Path) -> Tandem {
        Tandem {
            bin: bin.into(),
            server: self.url.clone(),
            wallet: wallet.to_path_buf(),
            mock_root: Some(self.mock_root.clone()),
            pcr_file: Some(self.pcr_file.clone()),
            env: Vec::new(),
        }
    }
}

/// Runs the `tandem` binary with `--server`, `--wallet`, `--json` and the trust options.
#[derive(Clone)]
pub struct Tandem {
    /// The binary (`env!("CARGO_BIN_EXE_tandem")` in the CLI's tests).
    pub bin: PathBuf,
    /// `--server`.
    pub server: String,
    /// `--wallet`.
    pub wallet: PathBuf,
    /// `--mock-root`, if any.
    pub mock_root: Option<String>,
    /// `--pcr-file`, if any (none: only the wallet's pins apply).
    pub pcr_file: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Tandem {
    /// A runner for any server, trusting what `mock_root` and `pcr_file` name.
    pub fn new(bin: &str, server: &str, wallet: &Path, mock_root: Option<&str>, pcr_file: Option<&str>) -> Self {
        Tandem {
            bin: bin.into(),
            server: server.into(),
            wallet: wallet.to_path_buf(),
            mock_root: mock_root.map(str::to_string),
            pcr_file: pcr_file.map(str::to_string),
            env: Vec::new(),
        }
    }

    /// The same runner without `--pcr-file`.
    pub fn unpinned(&self) -> Self {
        Tandem {
            pcr_file: None,
            ..self.clone()
        }
    }

    /// The same runner on another wallet.
    pub fn wallet(&self, wallet: &Path) -> Self {
        Tandem {
            wallet: wallet.to_path_buf(),
            ..self.clone()
        }
    }

    /// Runs `tandem ARGS`: (success, stdout as JSON or Null, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, Value, String) {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["--server", &self.server, "--wallet"])
            .arg(&self.wallet)
            .arg("--json");
        if let Some(root) = &self.mock_root {
            cmd.args(["--mock-root", root]);
        }
        if let Some(pcr) = &self.pcr_file {
            cmd.args(["--pcr-file", pcr]);
        }
        let out = cmd
            .args(args)
            .env_remove("TANDEM_PCR_FILE")
            .env_remove("TANDEM_MOCK_ROOT")
            .env_remove("TANDEM_GOOGLE_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Runs and returns (success, JSON).
    pub async fn json(&self, args: &[&str]) -> (bool, Value) {
        let (ok, v, _) = self.run(args).await;
        (ok, v)
    }
}

/// The `error` text of a failed command's JSON.
pub fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}
