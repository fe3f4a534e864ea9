//! `tandem-proxy`: the parent proxy. See the crate docs of `tandem_proxy`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tandem_proxy::config::{IpNet, Rate, TlsSettings, parse_duration};
use tandem_proxy::connector::EnclaveAddr;
use tandem_proxy::{Proxy, ProxyConfig, run, tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
#[command(version, about, long_about)]
struct Args {
    /// Address to serve HTTPS on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8443", env = "TANDEM_PROXY_LISTEN")]
    listen: SocketAddr,

    /// The enclave: vsock://CID:PORT (Nitro), tcp://HOST:PORT or unix:///path (mock mode).
    #[arg(long, default_value = "tcp://127.0.0.1:5000", env = "TANDEM_ENCLAVE")]
    enclave: EnclaveAddr,

    /// PEM file with the server certificate chain, leaf first.
    #[arg(
        long,
        requires = "key",
        conflicts_with = "self_signed",
        required_unless_present = "self_signed"
    )]
    cert: Option<PathBuf>,

    /// PEM file with the server's private key.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,

    /// Development only: write (or reuse) a CA and a server certificate in DIR and serve
    /// with them; clients trust DIR/ca.pem.
    #[arg(long, value_name = "DIR")]
    self_signed: Option<PathBuf>,

    /// Extra DNS name or IP for the development certificate (localhost, 127.0.0.1 and ::1
    /// are always included). Repeatable.
    #[arg(long = "self-signed-host", value_name = "NAME")]
    self_signed_hosts: Vec<String>,

    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[arg(long)]
    allow_tls12: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP: use a private address).
    #[arg(long, value_name = "ADDR", env = "TANDEM_PROXY_METRICS")]
    metrics_listen: Option<SocketAddr>,

    /// Require `Authorization: Bearer <key>`; FILE lists SHA-256 hashes of the keys, one
    /// per line as `<hex> [name]` (make one with: printf %s "$KEY" | sha256sum).
    #[arg(long, value_name = "FILE")]
    api_keys: Option<PathBuf>,

    /// A load balancer whose X-Forwarded-For is believed (IP or CIDR). Repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<IpNet>,

    /// Largest request body in bytes [default: 1048576].
    #[arg(long)]
    max_body_bytes: Option<usize>,

    /// Most client connections at once [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,

    /// Requests per client IP, e.g. 50/s,burst=100 [default: 50/s,burst=100].
    #[arg(long, value_name = "RATE")]
    ip_rate: Option<Rate>,

    /// Account creations per client IP [default: 10/min,burst=5].
    #[arg(long, value_name = "RATE")]
    create_rate: Option<Rate>,

    /// sign/recover/refresh starts per account [default: 10/s,burst=20].
    #[arg(long, value_name = "RATE")]
    account_rate: Option<Rate>,

    /// All requests together [default: 400/s,burst=800].
    #[arg(long, value_name = "RATE")]
    global_rate: Option<Rate>,

    /// TLS handshake timeout, e.g. 10s [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    handshake_timeout: Option<Duration>,

    /// Time allowed to send the request headers (slowloris guard) [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    header_timeout: Option<Duration>,

    /// Close connections with no request for this long [default: 60s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,

    /// Time allowed to send the request body [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    request_timeout: Option<Duration>,

    /// Time the enclave gets to answer one request [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    enclave_timeout: Option<Duration>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Receive the enclave's log stream here and write it into this log (target
    /// `enclave`): `vsock://5001` on a Nitro parent, `tcp://127.0.0.1:5001` in mock mode.
    #[arg(long, value_name = "ADDR", env = "TANDEM_ENCLAVE_LOGS")]
    enclave_logs: Option<tandem_proxy::enclave_logs::LogListenAddr>,

    /// The enclave's control listener (`tandem-enclave --control-listen`): the proxy pushes
    /// its wall clock there at start and every minute, so the enclave can report drift.
    #[arg(long, value_name = "ADDR", env = "TANDEM_ENCLAVE_CONTROL")]
    enclave_control: Option<EnclaveAddr>,

    /// Push AWS credentials for KMS to the enclave's control listener (needs
    /// --enclave-control): `imds` (the instance role, IMDSv2) or `env` (this process's
    /// AWS_* variables). Pushed at start and again before they expire.
    #[arg(
        long,
        value_name = "SOURCE",
        requires = "enclave_control",
        env = "TANDEM_PUSH_CREDENTIALS"
    )]
    push_credentials: Option<tandem_proxy::credentials::CredentialSource>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for log shipping).
    Json,
    /// Human-readable.
    Text,
}

impl Args {
    fn config(&self, tls: TlsSettings) -> ProxyConfig {
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
        c
    }
}

/// Replaces a default with the flag's value, when the flag was given.
fn override_with<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);

    let tls_settings = match (&args.self_signed, &args.cert, &args.key) {
        (Some(dir), _, _) => {
            let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            hosts.extend(args.self_signed_hosts.iter().cloned());
            match tls::write_self_signed(dir, &hosts) {
                Ok(certs) => {
                    tracing::warn!(
                        ca = %certs.ca_cert.display(),
                        "DEVELOPMENT CERTIFICATE: clients must trust this CA; not for production"
                    );
                    certs.tls_settings(args.allow_tls12)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        (None, Some(cert), Some(key)) => TlsSettings {
            cert_chain: cert.clone(),
            private_key: key.clone(),
            allow_tls12: args.allow_tls12,
        },
        // clap requires --cert with --key, or --self-signed.
        _ => {
            eprintln!("error: pass --cert and --key, or --self-signed DIR");
            return ExitCode::from(2);
        }
    };

    let config = args.config(tls_settings);
    let proxy = match Proxy::new(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let metrics_listener = match args.metrics_listen {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: cannot listen on {addr} for metrics: {e}");
                return ExitCode::from(1);
            }
        },
    };

    // Scripts and tests read these lines to learn the addresses (port 0 picks a free port).
    let mut out = std::io::stdout().lock();
    if let Ok(addr) = listener.local_addr() {
        let _ = writeln!(out, "tandem-proxy listening on https://{addr}");
    }
    if let Some(addr) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        let _ = writeln!(out, "tandem-proxy metrics on http://{addr}/metrics");
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(enclave = %args.enclave, tls12 = args.allow_tls12, "proxy started");

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    if let Some(addr) = args.enclave_logs.clone() {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = tandem_proxy::enclave_logs::receive(addr, stop).await {
                tracing::error!(error = %e, "cannot receive the enclave's logs");
            }
        });
    }
    if let Some(addr) = args.enclave_control.clone() {
        tokio::spawn(tandem_proxy::enclave_control::push_time_loop(
            addr.clone(),
            Duration::from_secs(60),
            shutdown.clone(),
        ));
        if let Some(source) = args.push_credentials.clone() {
            tokio::spawn(tandem_proxy::credentials::push_loop(source, addr, shutdown.clone()));
        }
    }
    run(proxy, listener, metrics_listener, shutdown).await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}
