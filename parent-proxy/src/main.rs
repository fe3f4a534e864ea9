//! `tandem-proxy`: the parent proxy and every parent service. See the crate docs of
//! `tandem_proxy` and `tandem_proxy::cli` for the flags.

use std::process::ExitCode;

use clap::Parser;
use tandem_proxy::cli::{Args, run};

#[tokio::main]
async fn main() -> ExitCode {
    run(Args::parse()).await
}
