//! `tandem`: a command-line wallet over the Tandem SDK.
//!
//! Every account is a 2-of-2 key: this CLI holds the device share (in the wallet
//! directory), the enclave holds the other; signatures need both.

mod account;
mod attestation;
mod backup;
mod conn;
mod secrets;
mod sign;
mod wallet;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tandem_cli::output::Out;

/// Tandem: a two-party (2-of-2) threshold ECDSA wallet for Ethereum.
///
/// Your device holds one key share, the enclave the other; neither ever holds the whole
/// key. To try the whole system on this machine first, run `tandem-dev demo`.
///
/// Against a running enclave (see `tandem-enclave --help`):
///
///   tandem --server http://127.0.0.1:5000 account create --label alice
///   tandem sign message --account alice "hello"
///   tandem sign tx --account alice --chain-id 1 --nonce 0 --to 0x… --value 1000 \
///       --gas-limit 21000 --max-fee 30000000000 --max-priority-fee 1000000000
#[derive(Parser, Debug)]
#[command(name = "tandem", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
struct Global {
    /// The Tandem server (enclave or proxy) to talk to.
    #[arg(long, global = true, env = "TANDEM_SERVER", default_value = "http://127.0.0.1:5000")]
    server: String,
    /// Directory holding this device's account files (device shares: keep it private).
    #[arg(long, global = true, env = "TANDEM_WALLET")]
    wallet: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// DANGER: trust a mock-mode enclave whose development attestation root is this PEM
    /// file (the enclave prints its path at startup). Never for real funds.
    #[arg(long, global = true, env = "TANDEM_MOCK_ROOT")]
    mock_root: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for the server's TLS instead of the system roots,
    /// e.g. the `ca.pem` that `tandem-proxy --self-signed DIR` writes.
    #[arg(long, global = true, env = "TANDEM_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Also accept the enclave image measured in this file (the build's enclave-pcr.json),
    /// for this command, beside the wallet's pinned images (`tandem attestation pin`).
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(
        long,
        global = true,
        env = "TANDEM_PCR_FILE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pcr_file: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, show, export, import, refresh and verify accounts.
    #[command(subcommand)]
    Account(account::AccountCmd),
    /// Verify attestation documents, offline or from a live enclave.
    #[command(subcommand)]
    Attestation(attestation::AttestationCmd),
    /// Sign a hash, a message, typed data or a transaction.
    #[command(subcommand)]
    Sign(sign::SignCmd),
    /// Encrypted backups of the device share: to a file or Google Drive, and restore.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
}

fn default_wallet() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".tandem")
        .join("wallet")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.global.json };
    let conn = conn::Conn {
        server: cli.global.server.clone(),
        wallet: cli.global.wallet.clone().unwrap_or_else(default_wallet),
        mock_root: cli.global.mock_root.clone(),
        ca_cert: cli.global.ca_cert.clone(),
        pcr_files: cli.global.pcr_file.clone(),
    };
    tandem_cli::run_command(out, || async move {
        match cli.command {
            Command::Account(cmd) => account::run(cmd, &conn, out).await,
            Command::Attestation(cmd) => attestation::run(cmd, &conn, out).await,
            Command::Sign(cmd) => sign::run(cmd, &conn, out).await,
            Command::Backup(cmd) => backup::run(cmd, &conn, out).await,
        }
    })
}
