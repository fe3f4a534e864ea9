//! The `tandem-enclave` command line: flags → [`Config`] → a running server.
//!
//! `main.rs` only parses [`Args`] and calls [`run`]; the mapping from flags to the
//! configuration ([`Args::config`]) is a plain function, tested without starting anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tandem_core::Addr;
use tandem_io::service::{LogFormat, init_logging, shutdown_on_signal};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{Config, StoreKind, WrapperKind};
use crate::kms::KmsConfig;
use crate::kms::http::KmsTransport;
use crate::server::{Listener, Server, run_with_control};

/// The Tandem enclave: holds the server key share of every account and answers the DKG,
/// sign, recover and refresh steps of the wire API.
///
/// Mock mode (`--mock`: laptop, CI) uses a development attestation chain and, by default,
/// a local master key file and a blob directory. Nitro mode (no `--mock`) needs the NSM
/// (`/dev/nsm`), KMS (`--kms-key-id`) and the parent's blob service. Examples:
///
///   tandem-enclave --mock --listen tcp://127.0.0.1:5000 --data-dir ./enclave-data
///
///   tandem-enclave --listen vsock://any:5000 --control-listen vsock://any:5001 \
///       --blob-store parent:vsock://3:7000 --kms-region eu-west-1 --kms-key-id arn:aws:kms:...
#[derive(Parser, Debug)]
#[command(name = "tandem-enclave", version, about, long_about)]
pub struct Args {
    /// Run on the mock platform (laptop, CI): development attestation. Without it the
    /// enclave runs in Nitro mode and refuses to start outside a Nitro Enclave.
    #[arg(long)]
    pub mock: bool,

    /// Where to listen: tcp://HOST:PORT (port 0 picks a free one), unix:///path or
    /// vsock://CID:PORT (vsock://any:PORT in an enclave).
    #[arg(long, default_value = "tcp://127.0.0.1:5000", env = "TANDEM_LISTEN")]
    pub listen: Addr,

    /// Where the parent pushes AWS credentials and its clock (control API; never relay it
    /// publicly). An address as for --listen.
    #[arg(long, env = "TANDEM_CONTROL_LISTEN")]
    pub control_listen: Option<Addr>,

    /// Directory for the master key (created 0600 on first start), the development
    /// attestation chain and (file store) the sealed account blobs.
    #[arg(long, default_value = "./enclave-data", env = "TANDEM_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Where sealed blobs live: file (under --data-dir), memory, or parent:ADDR (the
    /// parent's blob service, `tandem-proxy --blob-listen`: vsock://3:PORT, or
    /// tcp://HOST:PORT or unix:///path in mock mode).
    #[arg(long, env = "TANDEM_BLOB_STORE")]
    pub blob_store: Option<StoreKind>,

    /// Keep sealed blobs in memory only (same as --blob-store memory).
    #[arg(long)]
    pub memory_store: bool,

    /// Wrap data keys with this KMS key (id, ARN or alias) instead of a local master key.
    #[arg(long, env = "TANDEM_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,

    /// AWS region of the KMS key.
    #[arg(long, default_value = "us-east-1", env = "TANDEM_KMS_REGION")]
    pub kms_region: String,

    /// KMS endpoint override (e.g. a local emulator, http://127.0.0.1:PORT).
    #[arg(long, env = "TANDEM_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,

    /// How to reach KMS: tcp (directly), vsock (the parent's vsock-proxy, vsock://3:8000)
    /// or the address of another relay (vsock://CID:PORT, tcp://HOST:PORT).
    /// Default: vsock in Nitro mode, tcp in mock mode.
    #[arg(long, env = "TANDEM_KMS_TRANSPORT")]
    pub kms_transport: Option<KmsTransport>,

    /// Mock mode only: call KMS without an attested Recipient (an emulator cannot
    /// attest); the data key then crosses the connection in the clear.
    #[arg(long)]
    pub danger_kms_no_recipient: bool,

    /// Seconds a protocol session may live before it expires.
    #[arg(long, default_value_t = 120)]
    pub session_ttl: u64,

    /// Most protocol sessions in flight at once.
    #[arg(long, default_value_t = 1024)]
    pub max_sessions: usize,

    /// Most unsealed accounts kept in memory (about 50 KB each); others are unsealed from
    /// their blob on use (well under a millisecond).
    #[arg(long, default_value_t = crate::keystore::DEFAULT_CACHE_ACCOUNTS, env = "TANDEM_CACHE_ACCOUNTS")]
    pub cache_accounts: usize,

    /// Mock mode: the name of the development "image", from which its PCRs are derived
    /// (`TANDEM-<NAME>-PCR<i>`); clients pin them from `<data-dir>/attestation/enclave-pcr.json`.
    #[arg(long, default_value = "dev", value_name = "NAME")]
    pub mock_image: String,

    /// Log as JSON lines (for log shipping) instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,

    /// Also stream the logs as JSON lines to the parent (`tandem-proxy --enclave-logs`):
    /// vsock://3:5002 in Nitro mode (no console there), tcp://… in mock mode.
    #[arg(long, value_name = "ADDR", env = "TANDEM_SHIP_LOGS", value_parser = Addr::parse_dial)]
    pub ship_logs: Option<Addr>,
}

impl Args {
    /// The server's configuration. Refuses what Nitro mode must never run with.
    pub fn config(&self) -> Result<Config, String> {
        if !self.mock && self.danger_kms_no_recipient {
            return Err("--danger-kms-no-recipient is refused in Nitro mode".into());
        }
        let mut config = Config::mock(&self.data_dir);
        config.nitro = !self.mock;
        config.session_ttl = Duration::from_secs(self.session_ttl.max(1));
        config.max_sessions = self.max_sessions.max(1);
        config.cache_accounts = self.cache_accounts.max(1);
        config.mock_image.clone_from(&self.mock_image);
        if let Some(store) = self.blob_store.clone() {
            config.store = store;
        }
        if self.memory_store {
            config.store = StoreKind::Memory;
        }
        if let Some(key_id) = self.kms_key_id.clone() {
            let transport = self.kms_transport.clone().unwrap_or(if self.mock {
                KmsTransport::Direct
            } else {
                KmsTransport::parent_vsock_proxy()
            });
            config.wrapper = WrapperKind::Kms {
                kms: KmsConfig {
                    region: self.kms_region.clone(),
                    endpoint: self.kms_endpoint.clone(),
                    key_id,
                    transport,
                },
                danger_no_recipient: self.danger_kms_no_recipient,
            };
        }
        Ok(config)
    }
}

/// Nitro mode runs only inside a Nitro Enclave whose hardware RNG feeds the kernel.
fn check_platform(args: &Args) -> Result<(), String> {
    if args.mock {
        return Ok(());
    }
    if !Path::new("/dev/nsm").exists() {
        return Err(
            "Nitro mode needs /dev/nsm, and this is not a Nitro Enclave. Pass --mock to run in mock mode \
             (development attestation, local master key) on a laptop or CI."
                .into(),
        );
    }
    crate::runtime::check_nitro_entropy(Path::new(crate::runtime::RNG_CURRENT))
}

/// How an address is printed on stdout: TCP as `HOST:PORT`, which scripts and tests put
/// after `http://`; the others in their `unix://` / `vsock://` form.
fn printable(addr: &Addr) -> String {
    addr.authority().unwrap_or_else(|| addr.to_string())
}

/// Runs the enclave as `args` say until SIGINT/SIGTERM: logging (and shipping), platform
/// checks, the server, its listeners. The exit code: 0 after a clean shutdown, 2 for a
/// refused configuration, 1 for a failure to start or serve.
pub async fn run(args: Args) -> ExitCode {
    let ship = args
        .ship_logs
        .clone()
        .map(|addr| BoxMakeWriter::new(crate::parent::logs::start(addr)));
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    init_logging(format, "info,tower_http=info", ship);

    if let Err(e) = check_platform(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    let bind = async |addr: &Addr, what: &str| {
        Listener::bind(addr)
            .await
            .and_then(|l| l.local_addr().map(|bound| (l, bound)))
            .map_err(|e| eprintln!("error: cannot listen on {addr}{what}: {e}"))
    };
    let Ok((listener, bound)) = bind(&args.listen, "").await else {
        return ExitCode::from(1);
    };
    let control = match &args.control_listen {
        Some(addr) => match bind(addr, " (control)").await {
            Ok(l) => Some(l),
            Err(()) => return ExitCode::from(1),
        },
        None => None,
    };
    let mode = if args.mock { "mock mode" } else { "Nitro mode" };
    // Tests and scripts read this line to learn the address (port 0 picks a free port).
    println!("tandem-enclave listening on {} ({mode})", printable(&bound));
    if let Some((_, bound)) = &control {
        println!("control API on {}", printable(bound));
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

    let shutdown = shutdown_on_signal();
    match run_with_control(server, listener, control.map(|(l, _)| l), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tandem-enclave").chain(args.iter().copied())).unwrap()
    }

    /// The flags of `Dockerfile.enclave`'s CMD, read from the file, as the image runs them
    /// (the KMS key comes from the image's environment).
    #[test]
    fn the_image_flags_give_a_nitro_config_on_vsock() {
        let dockerfile =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile.enclave")).unwrap();
        let joined = dockerfile.replace("\\\n", " ");
        let cmd = joined.lines().find_map(|l| l.strip_prefix("CMD ")).unwrap();
        // The whole command line (program first: the image has no ENTRYPOINT).
        let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
        assert_eq!(cmd[0], "/usr/local/bin/tandem-enclave");
        let argv = cmd
            .into_iter()
            .chain(["--kms-key-id".into(), "arn:aws:kms:us-east-1:111122223333:key/x".into()]);
        let args = Args::try_parse_from(argv).unwrap();
        assert_eq!(args.listen, Addr::vsock(tandem_core::addr::VSOCK_CID_ANY, 5000));
        assert_eq!(
            args.control_listen,
            Some(Addr::vsock(tandem_core::addr::VSOCK_CID_ANY, 5001))
        );
        assert_eq!(args.ship_logs, Some(Addr::vsock(3, 5002)));
        assert!(args.log_json);
        let config = args.config().unwrap();
        assert!(config.nitro);
        assert_eq!(config.store, StoreKind::Parent(Addr::vsock(3, 7000)));
        let WrapperKind::Kms {
            kms,
            danger_no_recipient,
        } = &config.wrapper
        else {
            panic!("KMS wrapper expected")
        };
        assert!(!danger_no_recipient);
        assert_eq!(kms.transport, KmsTransport::Relay(Addr::vsock(3, 8000)));
    }

    #[test]
    fn mock_mode_defaults_and_refusals() {
        let args = parse(&["--mock", "--listen", "tcp://127.0.0.1:0", "--kms-key-id", "k"]);
        let config = args.config().unwrap();
        assert!(!config.nitro);
        let WrapperKind::Kms { kms, .. } = &config.wrapper else {
            panic!("KMS wrapper expected")
        };
        assert_eq!(kms.transport, KmsTransport::Direct);
        assert!(parse(&["--danger-kms-no-recipient"]).config().is_err());
        for bad in [
            &["--listen", "127.0.0.1:5000"][..],
            &["--ship-logs", "vsock://any:5002"],
            &["--ship-logs", "tcp://127.0.0.1:0"],
            &["--blob-store", "parent:vsock://1:7000"],
            &["--kms-transport", "vsock://:8000"],
        ] {
            let argv = std::iter::once("tandem-enclave").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(printable(&Addr::tcp("127.0.0.1", 5)), "127.0.0.1:5");
        assert_eq!(printable(&Addr::vsock(16, 5000)), "vsock://16:5000");
    }
}
