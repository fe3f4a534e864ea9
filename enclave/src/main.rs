//! `tandem-enclave`: the server party. See the crate docs of `tandem_enclave`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tandem_enclave::config::StoreKind;
use tandem_enclave::server::Listener;
use tandem_enclave::{Config, ListenAddr, Server, run};
use tokio_util::sync::CancellationToken;

/// The Tandem enclave: holds the server key share of every account and answers the DKG,
/// sign, recover and refresh steps of the wire API.
///
/// Only mock mode exists in this build: TCP or a Unix socket instead of vsock, and a local
/// master key file instead of KMS. Example:
///
///   tandem-enclave --mock --listen tcp://127.0.0.1:5000 --data-dir ./enclave-data
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Run on the mock platform (laptop, CI). Required: Nitro mode (NSM attestation, KMS,
    /// vsock) is not in this build, and mock mode must never be reached by accident.
    #[arg(long)]
    mock: bool,

    /// Where to listen: tcp://HOST:PORT (port 0 picks a free one) or unix:///path.
    #[arg(long, default_value = "tcp://127.0.0.1:5000", env = "TANDEM_LISTEN")]
    listen: ListenAddr,

    /// Directory for the master key (created 0600 on first start) and sealed account blobs.
    #[arg(long, default_value = "./enclave-data", env = "TANDEM_DATA_DIR")]
    data_dir: PathBuf,

    /// Keep sealed blobs in memory only (everything is lost on exit; tests and demos).
    #[arg(long)]
    memory_store: bool,

    /// Seconds a protocol session may live before it expires.
    #[arg(long, default_value_t = 120)]
    session_ttl: u64,

    /// Most protocol sessions in flight at once.
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,

    /// Log as JSON lines (for log shipping) instead of human-readable text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }

    if !args.mock {
        eprintln!(
            "error: this build runs only in mock mode; pass --mock to run on the mock platform \
             (development attestation, local master key). Nitro mode is not available yet."
        );
        return ExitCode::from(2);
    }

    let mut config = Config::mock(&args.data_dir);
    config.session_ttl = Duration::from_secs(args.session_ttl.max(1));
    config.max_sessions = args.max_sessions.max(1);
    if args.memory_store {
        config.store = StoreKind::Memory;
    }

    let server = match Server::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the keystore in {}: {e}", args.data_dir.display());
            return ExitCode::from(1);
        }
    };
    let listener = match Listener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {:?}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    // Tests and scripts read this line to learn the address (port 0 picks a free port).
    println!("tandem-enclave listening on {} (mock mode)", listener.local_addr());
    if let Some(root) = server.dev_root_pem() {
        println!(
            "development attestation root: {} (clients must opt in to trust it)",
            root.display()
        );
    }
    tracing::warn!("MOCK MODE: development platform, not for real funds");

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    match run(server, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::from(1)
        }
    }
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
