//! What the `tandem` wallet and the `tandem-dev` tool share: how results and errors are
//! printed (`--json` or text) and how a command runs to an exit status, so both binaries
//! behave alike for scripts.

pub mod output;

use std::future::Future;
use std::process::ExitCode;

use output::{Out, Reported};

/// Runs `command` on a new multi-threaded runtime with `TANDEM_LOG` logging to stderr
/// (default `warn`), and turns its result into the exit status: an error is printed once
/// (as `{"error": …}` on stdout with `--json`, on stderr otherwise) unless the command
/// already reported it.
pub fn run_command<F>(out: Out, command: impl FnOnce() -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::FAILURE,
        Err(e) => {
            if out.json {
                println!("{}", serde_json::json!({"error": format!("{e:#}")}));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
