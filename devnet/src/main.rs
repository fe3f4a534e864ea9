//! `tandem-dev`: the whole Tandem system on one machine, for developers.
//!
//! It links the enclave and the parent proxy as libraries so that `demo` and
//! `bench --local` run them in this process (mock mode); the `tandem` wallet links neither.

mod bench;
mod demo;
mod local;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tandem_cli::output::Out;

/// Tandem for developers: the whole 2-of-2 system on this machine, in mock mode (a
/// development attestation and a local master key instead of the Nitro hardware and KMS;
/// the cryptography is the real one).
///
/// Examples:
///
///   tandem-dev demo                                  # enclave + HTTPS proxy, an account, signatures, verified
///
///   tandem-dev bench --local --concurrency 8 --requests 200
///
///   tandem-dev bench --server https://127.0.0.1:8443 --ca-cert proxy-tls/ca.pem \
///       --mock-root enclave-data/attestation/dev-root.pem --pcr-file enclave-data/attestation/enclave-pcr.json
#[derive(Parser, Debug)]
#[command(name = "tandem-dev", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole system on this machine: starts a mock-mode enclave and its HTTPS
    /// proxy, creates an account, signs a message and an EIP-1559 transaction, verifies both.
    Demo(demo::DemoArgs),
    /// Load-test signing: latency percentiles and signs per second, against a server or an
    /// enclave and proxy started here (--local), with an in-process baseline.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    tandem_cli::run_command(out, || async move {
        match cli.command {
            Command::Demo(args) => demo::run(args, out).await,
            Command::Bench(args) => bench::run(args, out).await,
        }
    })
}
