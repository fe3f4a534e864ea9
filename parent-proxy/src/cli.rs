//! The `tandem-proxy` command line: flags → [`ParentConfig`] → [`crate::run`].
//!
//! `main.rs` only parses [`Args`] and calls [`run`]; [`Args::config`] maps the flags to the
//! configuration without starting anything, so the mapping is tested on its own.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tandem_core::Addr;
use tandem_io::service::{LogFormat as StderrFormat, init_logging, shutdown_on_signal};

use crate::config::{IpNet, ProxyConfig, Rate, TlsSettings, parse_duration};
use crate::enclave::credentials::{CredentialPush, CredentialSource, RefreshPolicy};
use crate::error::SetupError;
use crate::parent::{BlobService, Parent, ParentConfig};
use crate::tls;

/// The Tandem parent proxy: terminates HTTPS, rate-limits, and relays the wire API to the
/// enclave over vsock (Nitro) or TCP / a Unix socket (mock mode).
///
/// Laptop, against a mock-mode enclave on port 5000:
///
///   tandem-proxy --enclave tcp://127.0.0.1:5000 --self-signed ./proxy-tls
///
/// then point clients at https://127.0.0.1:8443 trusting ./proxy-tls/ca.pem.
/// On the EC2 parent:
///
///   tandem-proxy --listen 0.0.0.0:443 --enclave vsock://16:5000 --cert fullchain.pem --key key.pem
#[derive(Parser, Debug)]
#[command(name = "tandem-proxy", version, about, long_about)]
pub struct Args {
    /// Address to serve HTTPS on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8443", env = "TANDEM_PROXY_LISTEN")]
    pub listen: SocketAddr,

    /// The enclave: vsock://CID:PORT (Nitro), tcp://HOST:PORT or unix:///path (mock mode).
    #[arg(long, default_value = "tcp://127.0.0.1:5000", env = "TANDEM_ENCLAVE", value_parser = Addr::parse_dial)]
    pub enclave: Addr,

    /// PEM file with the server certificate chain, leaf first.
    #[arg(
        long,
        requires = "key",
        conflicts_with = "self_signed",
        required_unless_present = "self_signed",
        env = "TANDEM_TLS_CERT"
    )]
    pub cert: Option<PathBuf>,

    /// PEM file with the server's private key.
    #[arg(long, requires = "cert", env = "TANDEM_TLS_KEY")]
    pub key: Option<PathBuf>,

    /// Development only: write (or reuse) a CA and a server certificate in DIR and serve
    /// with them; clients trust DIR/ca.pem.
    #[arg(long, value_name = "DIR")]
    pub self_signed: Option<PathBuf>,

    /// Extra DNS name or IP for the development certificate (localhost, 127.0.0.1 and ::1
    /// are always included). Repeatable.
    #[arg(long = "self-signed-host", value_name = "NAME")]
    pub self_signed_hosts: Vec<String>,

    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    allow_tls12: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP: use a private address).
    #[arg(long, value_name = "ADDR", env = "TANDEM_PROXY_METRICS")]
    pub metrics_listen: Option<SocketAddr>,

    /// Require `Authorization: Bearer <key>`; FILE lists SHA-256 hashes of the keys, one
    /// per line as `<hex> [name]` (make one with: printf %s "$KEY" | sha256sum).
    #[arg(long, value_name = "FILE")]
    pub api_keys: Option<PathBuf>,

    /// A load balancer whose X-Forwarded-For is believed (IP or CIDR). Repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<IpNet>,

    /// Largest request body in bytes [default: 1048576].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,

    /// Most client connections at once [default: 1024].
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Requests per client IP, e.g. 50/s,burst=100 [default: 50/s,burst=100].
    #[arg(long, value_name = "RATE")]
    pub ip_rate: Option<Rate>,

    /// Account creations per client IP [default: 10/min,burst=5].
    #[arg(long, value_name = "RATE")]
    pub create_rate: Option<Rate>,

    /// sign/recover/refresh starts per account [default: 10/s,burst=20].
    #[arg(long, value_name = "RATE")]
    pub account_rate: Option<Rate>,

    /// All requests together [default: 400/s,burst=800].
    #[arg(long, value_name = "RATE")]
    pub global_rate: Option<Rate>,

    /// TLS handshake timeout, e.g. 10s [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Option<Duration>,

    /// Time allowed to send the request headers (slowloris guard) [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Option<Duration>,

    /// Close connections with no request for this long [default: 60s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,

    /// Time allowed to send the request body [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Option<Duration>,

    /// Time the enclave gets to answer one request [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub enclave_timeout: Option<Duration>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Receive the enclave's log stream here and write it into this log (target
    /// `enclave`): vsock://any:5002 on a Nitro parent, tcp://127.0.0.1:5002 in mock mode.
    #[arg(long, value_name = "ADDR", env = "TANDEM_ENCLAVE_LOGS")]
    pub enclave_logs: Option<Addr>,

    /// The enclave's control listener (`tandem-enclave --control-listen`): the proxy pushes
    /// its wall clock there at start and every minute, and the AWS credentials.
    #[arg(long, value_name = "ADDR", env = "TANDEM_ENCLAVE_CONTROL", value_parser = Addr::parse_dial)]
    pub enclave_control: Option<Addr>,

    /// Push AWS credentials for KMS to the enclave's control listener (needs
    /// --enclave-control): `imds` (the instance role, IMDSv2) or `env` (this process's
    /// AWS_* variables). Pushed at start and again five minutes before they expire.
    #[arg(
        long,
        value_name = "SOURCE",
        requires = "enclave_control",
        env = "TANDEM_PUSH_CREDENTIALS"
    )]
    pub push_credentials: Option<CredentialSource>,

    /// Serve the enclave's sealed blobs from this directory (created 0700; it holds
    /// ciphertext only): the blob service of an enclave without a disk (needs --blob-listen).
    #[arg(long, value_name = "DIR", env = "TANDEM_BLOB_DIR", requires = "blob_listen")]
    pub blob_dir: Option<PathBuf>,

    /// Where the blob service listens (the enclave's --blob-store parent:ADDR):
    /// vsock://any:7000 on a Nitro parent, tcp://127.0.0.1:7000 or unix:///path in mock mode.
    #[arg(long, value_name = "ADDR", env = "TANDEM_BLOB_LISTEN", requires = "blob_dir")]
    pub blob_listen: Option<Addr>,
}
/// Log format on stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log shipping).
    Json,
    /// Human-readable.
    Text,
}

impl Args {
    /// The parent's configuration. With `--self-signed DIR` this writes (or reuses) the
    /// development certificates in DIR.
    pub fn config(&self) -> Result<ParentConfig, SetupError> {
        let tls = self.tls_settings()?;
        let mut c = ProxyConfig::new(self.enclave.clone(), tls);
        c.api_keys.clone_from(&self.api_keys);
        c.trusted_proxies.clone_from(&self.trusted_proxies);
        override_with(&mut c.limits.max_body_bytes, self.max_body_bytes);
        override_with(&mut c.limits.max_connections, self.max_connections);
        override_with(&mut c.rates.per_ip, self.ip_rate);
        override_with(&mut c.rates.create_per_ip, self.create_rate);
        override_with(&mut c.rates.per_account, self.account_rate);
        override_with(&mut c.rates.global, self.global_rate);
        override_with(&mut c.timeouts.tls_handshake, self.handshake_timeout);
        override_with(&mut c.timeouts.header_read, self.header_timeout);
        override_with(&mut c.timeouts.idle, self.idle_timeout);
        override_with(&mut c.timeouts.request, self.request_timeout);
        override_with(&mut c.timeouts.enclave, self.enclave_timeout);
        let mut parent = ParentConfig::new(c, self.listen);
        parent.metrics_listen = self.metrics_listen;
        parent.enclave_control.clone_from(&self.enclave_control);
        parent.enclave_logs.clone_from(&self.enclave_logs);
        parent.credentials = self.push_credentials.clone().map(|source| CredentialPush {
            source,
            refresh: RefreshPolicy::default(),
        });
        parent.blob_service = match (&self.blob_dir, &self.blob_listen) {
            (Some(dir), Some(listen)) => Some(BlobService {
                dir: dir.clone(),
                listen: listen.clone(),
            }),
            (None, None) => None,
            _ => return Err(SetupError::Config("--blob-dir and --blob-listen go together".into())),
        };
        parent.validate()?;
        Ok(parent)
    }

    fn tls_settings(&self) -> Result<TlsSettings, SetupError> {
        match (&self.self_signed, &self.cert, &self.key) {
            (Some(dir), _, _) => {
                let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
                hosts.extend(self.self_signed_hosts.iter().cloned());
                let certs = tls::write_self_signed(dir, &hosts)?;
                tracing::warn!(
                    ca = %certs.ca_cert.display(),
                    "DEVELOPMENT CERTIFICATE: clients must trust this CA; not for production"
                );
                Ok(certs.tls_settings(self.allow_tls12))
            }
            (None, Some(cert), Some(key)) => Ok(TlsSettings {
                cert_chain: cert.clone(),
                private_key: key.clone(),
                allow_tls12: self.allow_tls12,
            }),
            // clap requires --cert with --key, or --self-signed.
            _ => Err(SetupError::Config("pass --cert and --key, or --self-signed DIR".into())),
        }
    }
}

/// Replaces a default with the flag's value, when the flag was given.
fn override_with<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Runs the parent as `args` say until SIGINT/SIGTERM. Prints one line per bound
/// listener on stdout (scripts and tests read them to learn ports picked for port 0).
pub async fn run(args: Args) -> ExitCode {
    let format = match args.log_format {
        LogFormat::Json => StderrFormat::Json,
        LogFormat::Text => StderrFormat::Text,
    };
    init_logging(format, "info", None);
    let parent = match args.config() {
        Ok(config) => Parent::start(config).await,
        Err(e) => Err(e),
    };
    let parent = match parent {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let bound = parent.bound().clone();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tandem-proxy listening on https://{}", bound.https);
    if let Some(addr) = bound.metrics {
        let _ = writeln!(out, "tandem-proxy metrics on http://{addr}/metrics");
    }
    if let Some(addr) = &bound.blob_service {
        let _ = writeln!(out, "tandem-proxy blob service on {addr}");
    }
    if let Some(addr) = &bound.enclave_logs {
        let _ = writeln!(out, "tandem-proxy enclave logs on {addr}");
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(enclave = %args.enclave, tls12 = args.allow_tls12, "proxy started");
    parent.run(shutdown_on_signal()).await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["tandem-proxy", "--cert", "c.pem", "--key", "k.pem"];
        Args::try_parse_from(base.iter().chain(extra))
    }

    /// The flags and values of `deploy/systemd/tandem-proxy.service` and `tandem.env`.
    #[test]
    fn the_deployed_flags_start_every_parent_service() {
        let a = args(&[
            "--listen",
            "0.0.0.0:443",
            "--enclave",
            "vsock://16:5000",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--enclave-logs",
            "vsock://any:5002",
            "--enclave-control",
            "vsock://16:5001",
            "--push-credentials",
            "imds",
            "--blob-dir",
            "/var/lib/tandem/blobs",
            "--blob-listen",
            "vsock://any:7000",
        ])
        .unwrap();
        let c = a.config().unwrap();
        assert_eq!(c.proxy.enclave, Addr::vsock(16, 5000));
        assert_eq!(c.enclave_control, Some(Addr::vsock(16, 5001)));
        assert_eq!(c.enclave_logs, Some("vsock://any:5002".parse().unwrap()));
        assert_eq!(
            c.credentials.map(|p| p.source),
            Some(CredentialSource::Imds(Addr::tcp("169.254.169.254", 80)))
        );
        assert_eq!(
            c.blob_service,
            Some(BlobService {
                dir: "/var/lib/tandem/blobs".into(),
                listen: "vsock://any:7000".parse().unwrap()
            })
        );
    }

    /// `deploy/systemd/tandem.env` names only variables the flags read, the unit uses only
    /// variables the file defines, and the unit's command line, expanded with the file,
    /// starts every parent service.
    #[test]
    fn the_systemd_unit_and_its_env_file_agree_with_the_flags() {
        use clap::CommandFactory as _;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
        let env_file = std::fs::read_to_string(dir.join("tandem.env")).unwrap();
        let env: std::collections::HashMap<&str, &str> = env_file
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_once('=').unwrap())
            .collect();
        let flag_vars: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for name in env.keys().filter(|k| k.starts_with("TANDEM_")) {
            assert!(
                flag_vars.iter().any(|v| v == name),
                "{name} is read by no tandem-proxy flag"
            );
        }
        let unit = std::fs::read_to_string(dir.join("tandem-proxy.service")).unwrap();
        let exec = unit.replace("\\\n", " ");
        let exec = exec.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let argv: Vec<String> = exec
            .split_whitespace()
            .map(|word| match word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                Some(var) => env
                    .get(var)
                    .unwrap_or_else(|| panic!("${{{var}}} is not in tandem.env"))
                    .to_string(),
                None => word.to_string(),
            })
            .collect();
        assert_eq!(argv[0], "/usr/local/bin/tandem-proxy");
        let config = Args::try_parse_from(&argv).unwrap().config().unwrap();
        assert!(config.blob_service.is_some(), "the blob service");
        assert!(config.enclave_logs.is_some(), "the log receiver");
        assert!(config.enclave_control.is_some(), "the clock push");
        assert!(config.credentials.is_some(), "the credential push");
    }

    #[test]
    fn half_configured_services_are_refused() {
        assert!(
            args(&["--push-credentials", "imds"]).is_err(),
            "needs --enclave-control"
        );
        assert!(args(&["--blob-dir", "/tmp/b"]).is_err(), "needs --blob-listen");
        assert!(
            args(&["--blob-listen", "tcp://127.0.0.1:0"]).is_err(),
            "needs --blob-dir"
        );
        assert!(
            args(&["--enclave", "tcp://127.0.0.1:0"]).is_err(),
            "the enclave is dialled"
        );
        assert!(args(&["--enclave-control", "vsock://any:5001"]).is_err());
        assert!(args(&["--enclave-logs", "vsock://5002"]).is_err(), "a CID is required");
        let a = args(&["--blob-dir", "/tmp/b", "--blob-listen", "tcp://127.0.0.1:0"]).unwrap();
        assert!(a.config().unwrap().blob_service.is_some(), "a listener may take port 0");
    }
}
