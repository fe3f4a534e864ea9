//! `tandem-enclave`: the server party. See the crate docs of `tandem_enclave`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tandem_enclave::config::{StoreKind, WrapperKind};
use tandem_enclave::kms::KmsConfig;
use tandem_enclave::kms::http::KmsTransport;
use tandem_enclave::server::{Listener, run_with_control};
use tandem_enclave::{Config, ListenAddr, Server};
use tokio_util::sync::CancellationToken;

/// The Tandem enclave: holds the server key share of every account and answers the DKG,
/// sign, recover and refresh steps of the wire API.
///
/// Mock mode (`--mock`: laptop, CI) uses a development attestation chain and, by default,
/// a local master key file and a blob directory. Nitro mode (no `--mock`) needs the NSM
/// (`/dev/nsm`), KMS (`--kms-key-id`) and the parent's blob service. Examples:
///
///   tandem-enclave --mock --listen tcp://127.0.0.1:5000 --data-dir ./enclave-data
///
///   tandem-enclave --listen vsock://4294967295:5000 --control-listen vsock://4294967295:5001 \
///       --blob-store parent:vsock://3:7000 --kms-region eu-west-1 --kms-key-id arn:aws:kms:...
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Run on the mock platform (laptop, CI): development attestation. Without it the
    /// enclave runs in Nitro mode and refuses to start outside a Nitro Enclave.
    #[arg(long)]
    mock: bool,

    /// Where to listen: tcp://HOST:PORT (port 0 picks a free one), unix:///path or
    /// vsock://CID:PORT.
    #[arg(long, default_value = "tcp://127.0.0.1:5000", env = "TANDEM_LISTEN")]
    listen: ListenAddr,

    /// Where the parent pushes AWS credentials (control API; never relay it publicly).
    #[arg(long, env = "TANDEM_CONTROL_LISTEN")]
    control_listen: Option<ListenAddr>,

    /// Directory for the master key (created 0600 on first start), the development
    /// attestation chain and (file store) the sealed account blobs.
    #[arg(long, default_value = "./enclave-data", env = "TANDEM_DATA_DIR")]
    data_dir: PathBuf,

    /// Where sealed blobs live: file (under --data-dir), memory, or parent:ADDR (the
    /// parent's blob service at tcp://HOST:PORT, unix:///path or vsock://3:PORT).
    #[arg(long, env = "TANDEM_BLOB_STORE")]
    blob_store: Option<StoreKind>,

    /// Keep sealed blobs in memory only (same as --blob-store memory).
    #[arg(long)]
    memory_store: bool,

    /// Wrap data keys with this KMS key (id, ARN or alias) instead of a local master key.
    #[arg(long, env = "TANDEM_KMS_KEY_ID")]
    kms_key_id: Option<String>,

    /// AWS region of the KMS key.
    #[arg(long, default_value = "us-east-1", env = "TANDEM_KMS_REGION")]
    kms_region: String,

    /// KMS endpoint override (e.g. a local emulator, http://127.0.0.1:PORT).
    #[arg(long, env = "TANDEM_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,

    /// How to reach KMS: tcp, vsock (the parent's vsock-proxy, CID 3 port 8000) or
    /// vsock://CID:PORT. Default: vsock in Nitro mode, tcp in mock mode.
    #[arg(long, env = "TANDEM_KMS_TRANSPORT")]
    kms_transport: Option<KmsTransport>,

    /// Mock mode only: call KMS without an attested Recipient (an emulator cannot
    /// attest); the data key then crosses the connection in the clear.
    #[arg(long)]
    danger_kms_no_recipient: bool,

    /// Seconds a protocol session may live before it expires.
    #[arg(long, default_value_t = 120)]
    session_ttl: u64,

    /// Most protocol sessions in flight at once.
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,

    /// Most unsealed accounts kept in memory (about 50 KB each); others are unsealed from
    /// their blob on use (well under a millisecond).
    #[arg(long, default_value_t = tandem_enclave::keystore::DEFAULT_CACHE_ACCOUNTS, env = "TANDEM_CACHE_ACCOUNTS")]
    cache_accounts: usize,

    /// Mock mode: the name of the development "image", from which its PCRs are derived
    /// (`TANDEM-<NAME>-PCR<i>`); clients pin them from `<data-dir>/attestation/enclave-pcr.json`.
    #[arg(long, default_value = "dev", value_name = "NAME")]
    mock_image: String,

    /// Log as JSON lines (for log shipping) instead of human-readable text.
    #[arg(long)]
    log_json: bool,

    /// Also stream the logs as JSON lines to the parent proxy (`tandem-proxy
    /// --enclave-logs`): vsock://3:5001 in Nitro mode (no console there), tcp://… in mock mode.
    #[arg(long, value_name = "ADDR", env = "TANDEM_SHIP_LOGS")]
    ship_logs: Option<tandem_enclave::logship::ShipAddr>,
}

/// Logs to stderr (text or JSON) and, with `--ship-logs`, as JSON lines to the parent.
fn init_logging(args: &Args) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info"))
    };
    let stderr = if args.log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let ship = args.ship_logs.clone().map(|addr| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(tandem_enclave::logship::start(addr))
            .with_filter(filter())
    });
    tracing_subscriber::registry().with(stderr).with(ship).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);

    if !args.mock && !std::path::Path::new("/dev/nsm").exists() {
        eprintln!(
            "error: Nitro mode needs /dev/nsm, and this is not a Nitro Enclave. Pass --mock to run in mock mode \
             (development attestation, local master key) on a laptop or CI."
        );
        return ExitCode::from(2);
    }
    if !args.mock
        && let Err(e) =
            tandem_enclave::runtime::check_nitro_entropy(std::path::Path::new(tandem_enclave::runtime::RNG_CURRENT))
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if !args.mock && args.danger_kms_no_recipient {
        eprintln!("error: --danger-kms-no-recipient is refused in Nitro mode");
        return ExitCode::from(2);
    }

    let mut config = Config::mock(&args.data_dir);
    config.nitro = !args.mock;
    config.session_ttl = Duration::from_secs(args.session_ttl.max(1));
    config.max_sessions = args.max_sessions.max(1);
    config.cache_accounts = args.cache_accounts.max(1);
    config.mock_image = args.mock_image.clone();
    if let Some(store) = args.blob_store.clone() {
        config.store = store;
    }
    if args.memory_store {
        config.store = StoreKind::Memory;
    }
    if let Some(key_id) = args.kms_key_id.clone() {
        let transport = args.kms_transport.clone().unwrap_or(if args.mock {
            KmsTransport::Tcp
        } else {
            KmsTransport::Vsock { cid: 3, port: 8000 }
        });
        config.wrapper = WrapperKind::Kms {
            kms: KmsConfig {
                region: args.kms_region.clone(),
                endpoint: args.kms_endpoint.clone(),
                key_id,
                transport,
            },
            danger_no_recipient: args.danger_kms_no_recipient,
        };
    }

    let server = match Server::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot start the enclave (data in {}): {e}",
                args.data_dir.display()
            );
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
    let control = match &args.control_listen {
        Some(addr) => match Listener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: cannot listen on {addr:?} (control): {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let mode = if args.mock { "mock mode" } else { "Nitro mode" };
    // Tests and scripts read this line to learn the address (port 0 picks a free port).
    println!("tandem-enclave listening on {} ({mode})", listener.local_addr());
    if let Some(control) = &control {
        println!("control API on {}", control.local_addr());
    }
    if let Some(root) = server.dev_root_pem() {
        println!(
            "development attestation root: {} (clients must opt in to trust it)",
            root.display()
        );
    }
    if args.mock {
        tracing::warn!("MOCK MODE: development platform, not for real funds");
    }

    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    match run_with_control(server, listener, control, shutdown).await {
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
