//! Shared by the cross-process tests: runs the real `tandem-enclave` binary on a free
//! loopback port and stops it when dropped.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the enclave may take to print its address and answer `/v1/health`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `tandem-enclave` binary Cargo built for these tests.
pub(crate) const ENCLAVE_BIN: &str = env!("CARGO_BIN_EXE_tandem-enclave");

/// The `tandem-proxy` binary, built by the same workspace build as these tests (a
/// dev-dependency's binaries get no `CARGO_BIN_EXE_*`, so it is found beside them).
pub(crate) fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps")
        .join("tandem-proxy");
    assert!(
        bin.exists(),
        "{} not found: build the workspace (cargo build -p tandem-proxy) or run ./scripts/test.sh",
        bin.display()
    );
    bin
}

/// A running `tandem-enclave --mock` process. Dropping it kills the process (SIGKILL, so
/// nothing is flushed on the way out: a restart test sees only what was durable) and reaps
/// it. If the test is panicking, the end of the process's log is printed to help.
pub(crate) struct Enclave {
    child: Child,
    url: String,
    log: PathBuf,
    data_dir: PathBuf,
}

impl Enclave {
    /// Starts the enclave with its data (master key, sealed blobs) in `root/data` and its
    /// log appended to `root/enclave.log`, so a second enclave on the same `root` is a
    /// restart of the first. Returns once `/v1/health` answers.
    pub(crate) async fn start(root: &Path) -> Enclave {
        Self::start_with(root, &[]).await
    }

    /// Like [`start`](Self::start), with extra command-line arguments.
    pub(crate) async fn start_with(root: &Path, extra: &[&str]) -> Enclave {
        let data_dir = root.join("data");
        let log = root.join("enclave.log");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the enclave log");
        let mut child = Command::new(ENCLAVE_BIN)
            .arg("--mock")
            .args(["--listen", "tcp://127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tandem-enclave");

        // Read stdout on a thread (a blocking read could otherwise hang the test), and keep
        // draining it afterwards so the child never writes into a closed pipe.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut enclave = Enclave {
            child,
            url: String::new(),
            log,
            data_dir: data_dir.clone(),
        };

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(_) => panic!(
                "tandem-enclave printed no address within {STARTUP_TIMEOUT:?}\n{}",
                enclave.log_tail()
            ),
        };
        let addr = line
            .trim()
            .strip_prefix("tandem-enclave listening on ")
            .and_then(|rest| rest.strip_suffix(" (mock mode)"))
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}\n{}", enclave.log_tail()));
        let port: u16 = addr
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("enclave address {addr:?} is not 127.0.0.1:PORT"));
        assert_ne!(port, 0, "the enclave must report the port it bound");
        enclave.url = format!("http://127.0.0.1:{port}");
        enclave.wait_healthy().await;
        enclave
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tandem-enclave exited during startup ({status})\n{}", self.log_tail());
            }
            if let Ok(resp) = http.get(format!("{}/v1/health", self.url)).send().await
                && resp.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/v1/health did not answer within {STARTUP_TIMEOUT:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The data directory (master key, attestation chain, `accounts/` blobs).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The enclave's base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// An SDK client of this enclave, trusting its development attestation root (mock
    /// mode) and nothing else.
    pub(crate) fn client(&self) -> tandem_sdk::Client {
        self.client_at(&self.url, None)
    }

    /// An SDK client of this enclave reached through `url` (a proxy) with `http`.
    pub(crate) fn client_via(&self, url: &str, http: reqwest::Client) -> tandem_sdk::Client {
        self.client_at(url, Some(http))
    }

    fn client_at(&self, url: &str, http: Option<reqwest::Client>) -> tandem_sdk::Client {
        let pem = std::fs::read_to_string(self.data_dir.join("attestation/dev-root.pem")).expect("dev root");
        let image = tandem_sdk::attestation::ImageMeasurements::from_json(
            &std::fs::read_to_string(self.data_dir.join("attestation/enclave-pcr.json")).expect("measurements"),
        )
        .expect("measurements file");
        let policy = tandem_sdk::attestation::AttestationPolicy::nitro()
            .danger_allow_mock(&pem)
            .expect("dev root PEM")
            .accept_image(image);
        let mut builder = tandem_sdk::Client::builder(url).attestation(policy);
        if let Some(http) = http {
            builder = builder.http_client(http);
        }
        builder.build().expect("client for the enclave")
    }

    /// The last few KB of the process's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("--- enclave log ({}) ---\n{}", self.log.display(), &text[start..])
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
