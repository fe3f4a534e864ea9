//! `tandem-blob-service`: the parent's blob store for a Nitro Enclave.
//!
//! A Nitro Enclave has no disk. Its sealed share blobs (ciphertext only: the data key never
//! leaves the enclave) live on the parent instance, in a directory served by this small
//! program over vsock. Writes are atomic (temp file, fsync, rename, fsync dir) and
//! versioned with compare-and-swap, so two writers cannot lose an update; the enclave
//! authenticates every blob it reads back, so this service is not trusted with anything.
//!
//!   tandem-blob-service --dir /var/lib/tandem/blobs --listen vsock://3:7000
//!   tandem-blob-service --dir ./blobs --listen tcp://127.0.0.1:7000      # mock mode

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tandem_enclave::keystore::parent_service::{ServiceAddr, ServiceListener, serve};
use tandem_enclave::keystore::{BlobStore, FileBlobStore};
use tokio_util::sync::CancellationToken;

/// Serves a directory of sealed blobs to the enclave (the enclave's `--blob-store
/// parent:ADDR`).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The directory holding the blobs (created 0700).
    #[arg(long, env = "TANDEM_BLOB_DIR")]
    dir: PathBuf,
    /// Where to listen: vsock://CID:PORT on a Nitro parent (CID 3 = the parent itself, or
    /// 4294967295 for any), tcp://HOST:PORT or unix:///path in mock mode.
    #[arg(long, env = "TANDEM_BLOB_LISTEN")]
    listen: ServiceAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let store: Arc<dyn BlobStore> = match FileBlobStore::open(&args.dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", args.dir.display());
            return ExitCode::from(1);
        }
    };
    let listener = match ServiceListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {:?}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!("tandem-blob-service listening on {}", listener.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    serve(listener, store, shutdown).await;
    ExitCode::SUCCESS
}
