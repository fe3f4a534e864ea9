//! `tandem-enclave`: the server party. See the crate docs of `tandem_enclave` and
//! `tandem_enclave::cli` for the flags.

use std::process::ExitCode;

use clap::Parser;
use tandem_enclave::cli::{Args, run};

#[tokio::main]
async fn main() -> ExitCode {
    run(Args::parse()).await
}
