//! Shared by the proxy's cross-process tests: a mock-mode enclave in this process (on a
//! loopback port, stoppable and restartable on the same port), the real `tandem-proxy`
//! binary in front of it with a development CA, and clients that trust that CA.
//!
//! Every wait is bounded; child processes are killed when their handle drops.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod imds;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tandem_core::Addr;
use tandem_enclave::config::Config;
use tandem_enclave::server::{Listener, Server, run};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// The proxy binary Cargo built for these tests.
pub(crate) const PROXY_BIN: &str = env!("CARGO_BIN_EXE_tandem-proxy");

/// How long the proxy may take to print its addresses.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The bound on any single test: a hung test fails instead of hanging CI.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `f` under [`TEST_TIMEOUT`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// A mock-mode enclave served by this process.
pub(crate) struct LocalEnclave {
    pub(crate) port: u16,
    pub(crate) url: String,
    /// The enclave's development attestation root (PEM), which its clients must trust.
    pub(crate) dev_root_pem: String,
    config: Config,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl LocalEnclave {
    /// Starts an enclave with its keystore in `data_dir`, on `port` (0: any free port).
    /// Binding is retried for a few seconds, for a restart on the port just released.
    pub(crate) async fn start(data_dir: &Path, port: u16) -> LocalEnclave {
        Self::start_with(Config::mock(data_dir), port).await
    }

    /// Like [`LocalEnclave::start`], with any configuration (e.g. the parent's blob store).
    pub(crate) async fn start_with(config: Config, port: u16) -> LocalEnclave {
        let server = Server::open(&config).expect("open the enclave keystore");
        let addr = Addr::tcp("127.0.0.1", port);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match Listener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("enclave bind on {port} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind the enclave on port {port}: {e}"),
            }
        };
        let bound: SocketAddr = listener
            .local_addr()
            .ok()
            .and_then(|a| a.authority())
            .and_then(|a| a.parse().ok())
            .expect("a TCP address");
        let dev_root = server.dev_root_pem().expect("a mock enclave has a development root");
        let dev_root_pem = std::fs::read_to_string(dev_root).expect("read the development root");
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = run(server, listener, token).await;
        });
        LocalEnclave {
            port: bound.port(),
            url: format!("http://127.0.0.1:{}", bound.port()),
            dev_root_pem,
            config,
            stop,
            task: Some(task),
        }
    }

    /// Stops the enclave and waits (bounded) until its port is closed.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the enclave stops within 20 s")
                .expect("the enclave task ends cleanly");
        }
    }

    /// Starts a new enclave with the same configuration (data directory) and port.
    pub(crate) async fn restart(self) -> LocalEnclave {
        let (config, port) = (self.config.clone(), self.port);
        self.stop().await;
        LocalEnclave::start_with(config, port).await
    }
}

impl Drop for LocalEnclave {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running `tandem-proxy` process with a development CA.
pub(crate) struct ProxyProcess {
    child: Child,
    /// `https://127.0.0.1:PORT`
    pub(crate) url: String,
    /// The HTTPS listener's address.
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:PORT/metrics`
    pub(crate) metrics_url: String,
    /// The development CA (PEM) clients must trust.
    pub(crate) ca_pem: Vec<u8>,
    log: PathBuf,
    /// Its stdout, line by line, and the lines read so far.
    stdout: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl ProxyProcess {
    /// Starts the proxy in front of the enclave on `enclave_port`, with its development
    /// certificates in `dir/tls`, its JSON log in `dir/proxy.log`, and `extra` flags.
    pub(crate) fn start(dir: &Path, enclave_port: u16, extra: &[&str]) -> ProxyProcess {
        Self::start_with_enclave(dir, &format!("tcp://127.0.0.1:{enclave_port}"), extra)
    }

    /// Like [`ProxyProcess::start`], for any `--enclave` address.
    pub(crate) fn start_with_enclave(dir: &Path, enclave: &str, extra: &[&str]) -> ProxyProcess {
        let log = dir.join("proxy.log");
        let stderr = File::create(&log).expect("create the proxy log");
        let tls_dir = dir.join("tls");
        let mut child = Command::new(PROXY_BIN)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--enclave", enclave])
            .arg("--self-signed")
            .arg(&tls_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tandem-proxy");

        // Read stdout on a thread (a blocking read could hang the test), then keep
        // draining it so the child never writes into a closed pipe.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut proxy = ProxyProcess {
            child,
            url: String::new(),
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_url: String::new(),
            ca_pem: Vec::new(),
            log,
            stdout: rx,
            printed: Vec::new(),
        };
        proxy.url = proxy.printed_after("tandem-proxy listening on ");
        proxy.addr = proxy
            .url
            .trim_start_matches("https://")
            .parse()
            .expect("a socket address");
        proxy.metrics_url = proxy.printed_after("tandem-proxy metrics on ");
        proxy.ca_pem = std::fs::read(tls_dir.join("ca.pem")).expect("the proxy wrote its CA");
        proxy
    }

    /// The rest of the stdout line that starts with `prefix` (e.g. the address after
    /// `tandem-proxy blob service on `), waiting for it up to the startup timeout.
    pub(crate) fn printed_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(rest) = self.printed.iter().find_map(|l| l.strip_prefix(prefix)) {
                return rest.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.printed.push(line.trim().to_string()),
                Err(_) => panic!(
                    "tandem-proxy printed no line {prefix:?} within {STARTUP_TIMEOUT:?}\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// Everything the proxy logged so far.
    pub(crate) fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// An HTTPS client (reqwest) that trusts the proxy's CA, made by the SDK's helper.
    pub(crate) fn http(&self) -> reqwest::Client {
        tandem_sdk::http_client_trusting(&self.ca_pem).expect("an HTTPS client")
    }

    /// An SDK client of the proxy, trusting the enclave's development attestation root.
    pub(crate) fn client(&self, enclave: &LocalEnclave) -> tandem_sdk::Client {
        sdk_client(&self.url, self.http(), &enclave.dev_root_pem)
    }

    /// The `/metrics` page.
    pub(crate) async fn metrics(&self) -> String {
        let resp = reqwest::get(&self.metrics_url).await.expect("metrics answer");
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// A raw TLS connection to the proxy with the given versions and ALPN protocols.
    pub(crate) async fn tls_connect(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(&self.ca_pem).expect("a PEM certificate");
        roots.add(ca).expect("the CA parses");
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("versions supported")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let start = text.len().saturating_sub(6000);
            let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            eprintln!("--- proxy log ({}) ---\n{}", self.log.display(), &text[start..]);
        }
    }
}

/// An SDK client of `url` over `http` that accepts the mock enclave's attestation
/// documents (chained to `dev_root_pem`), and nothing else.
pub(crate) fn sdk_client(url: &str, http: reqwest::Client, dev_root_pem: &str) -> tandem_sdk::Client {
    let policy = tandem_testkit::mock_policy(dev_root_pem);
    tandem_sdk::Client::builder(url)
        .http_client(http)
        .attestation(policy)
        .build()
        .expect("an SDK client")
}

/// A JSON body and its response, for raw requests.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let resp = http.post(url).json(body).send().await.expect("the proxy answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// A stand-in enclave that records what reaches it and answers every request with
/// `200 {"status":"ok"}`: for tests about what the proxy does or does not forward.
pub(crate) struct StubEnclave {
    /// Its port.
    pub(crate) port: u16,
    /// Connections accepted so far.
    pub(crate) connections: Arc<std::sync::atomic::AtomicUsize>,
    /// The head (request line and headers) of every request received, in order.
    pub(crate) heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl StubEnclave {
    /// Starts the stub on a free loopback port.
    pub(crate) async fn start() -> StubEnclave {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, h) = (connections.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let heads = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One request: its head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0usize);
                        while buf.len() < head_end + len {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        heads.lock().unwrap().push(head);
                        let body = br#"{"status":"ok","timestamp":0,"mockMode":true,"version":"stub"}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() || stream.write_all(body).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        StubEnclave {
            port,
            connections,
            heads,
            task,
        }
    }

    /// Requests received so far.
    pub(crate) fn request_count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

impl Drop for StubEnclave {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port with nothing listening on it.
pub(crate) async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
