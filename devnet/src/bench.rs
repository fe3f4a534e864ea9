//! `tandem-dev bench`: signing load against a server (or an enclave and proxy started in
//! this process), with an in-process baseline measured in the same run so the numbers are
//! ratios, not absolute times on a noisy machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use serde_json::json;
use tandem_core::KeyShare;
use tandem_core::engine::{DeviceDkg, DeviceSign, EnclaveDkg, EnclaveSign};
use tandem_core::flow::run_local;

use crate::local::LocalEnclave;
use tandem_cli::output::Out;

/// `tandem-dev bench` options.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// The server to load (enclave or proxy), unless --local.
    #[arg(long, env = "TANDEM_SERVER", required_unless_present = "local")]
    server: Option<String>,
    /// Trust this CA certificate (PEM) for the server's TLS (the proxy's development CA).
    #[arg(long, env = "TANDEM_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// DANGER: trust a mock-mode enclave whose development root is this PEM file.
    #[arg(long, env = "TANDEM_MOCK_ROOT")]
    mock_root: Option<std::path::PathBuf>,
    /// The measurements file of the enclave image to accept (enclave-pcr.json).
    #[arg(long, env = "TANDEM_PCR_FILE", value_delimiter = ',')]
    pcr_file: Vec<std::path::PathBuf>,
    /// Signing sessions in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Total signatures to make.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Start an enclave and a parent proxy in this process instead of using --server.
    #[arg(long)]
    local: bool,
    /// With --local: talk to the enclave directly, bypassing the proxy (the baseline for
    /// the proxy's cost).
    #[arg(long, requires = "local")]
    direct: bool,
    /// In-process signatures (both parties here, no HTTP) to measure as the baseline.
    #[arg(long, default_value_t = 30)]
    baseline: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn local_pair() -> Result<(Arc<KeyShare>, Arc<KeyShare>)> {
    let (d, m0) = DeviceDkg::start()?;
    let (created, output) = run_local(d, m0, EnclaveDkg::start, 1)?;
    Ok((Arc::new(created.share), Arc::new(output.share)))
}

fn local_sign(d: &Arc<KeyShare>, e: &Arc<KeyShare>, digest: [u8; 32]) -> Result<()> {
    let (dm, m0) = DeviceSign::start(d.clone(), digest, 0)?;
    let e = e.clone();
    run_local(dm, m0, |m0| EnclaveSign::start(EnclaveSign::parse_start(m0)?, e, 1), 1)?;
    Ok(())
}

/// Runs the benchmark.
pub(crate) async fn run(args: BenchArgs, out: Out) -> Result<()> {
    ensure!(
        args.concurrency >= 1 && args.requests >= 1,
        "--concurrency and --requests must be at least 1"
    );
    let _local;
    let (url, client) = if args.local {
        // A benchmark is not abuse: lift the proxy's rate limits for this run.
        _local = LocalEnclave::start_with(|c| {
            let unlimited = tandem_proxy::config::Rate::per_second(1_000_000, 1_000_000);
            c.rates.per_ip = unlimited;
            c.rates.per_account = unlimited;
            c.rates.global = unlimited;
            c.rates.create_per_ip = unlimited;
        })
        .await?;
        if args.direct {
            (_local.enclave_url.clone(), _local.direct_client()?)
        } else {
            (_local.url.clone(), _local.client()?)
        }
    } else {
        let url = args.server.clone().context("--server is required without --local")?;
        (url.clone(), remote_client(&url, &args)?)
    };
    client
        .health()
        .await
        .with_context(|| format!("no Tandem server answers at {url}"))?;

    // Baseline: both parties in this process, no HTTP.
    out.progress(&format!("baseline: {} in-process signatures…", args.baseline));
    let baseline_ms = tokio::task::spawn_blocking(move || -> Result<f64> {
        let (d, e) = local_pair()?;
        local_sign(&d, &e, [1; 32])?; // warm-up
        let mut times = Vec::with_capacity(args.baseline);
        for i in 0..args.baseline.max(1) {
            let t = Instant::now();
            local_sign(&d, &e, [i as u8; 32])?;
            times.push(t.elapsed());
        }
        times.sort();
        Ok(percentile(&times, 0.5))
    })
    .await??;

    out.progress("creating a bench account (DKG)…");
    let account = client
        .create_account(Some("bench"))
        .await
        .context("cannot create the bench account")?;
    client
        .sign_digest(&account, [0; 32])
        .await
        .context("warm-up signature failed")?;

    out.progress(&format!(
        "signing {} times, {} at a time, against {url}…",
        args.requests, args.concurrency
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, account, next) = (client.clone(), account.clone(), next.clone());
        let total = args.requests;
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let t = Instant::now();
                match client.sign_digest(&account, digest).await {
                    Ok(_) => times.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (times, errors)
        }));
    }
    let mut times = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (t, e) = w.await?;
        times.extend(t);
        errors += e;
    }
    let wall = started.elapsed();
    times.sort();
    let p50 = percentile(&times, 0.5);
    let result = json!({
        "server": url,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "errors": errors,
        "p50Ms": round(p50),
        "p95Ms": round(percentile(&times, 0.95)),
        "p99Ms": round(percentile(&times, 0.99)),
        "signsPerSecond": round(times.len() as f64 / wall.as_secs_f64()),
        "inProcessSignP50Ms": round(baseline_ms),
        "endToEndOverInProcess": round(p50 / baseline_ms),
    });
    out.result(&result);
    ensure!(errors == 0, "{errors} of {} signatures failed", args.requests);
    Ok(())
}

/// A client of a remote server, trusting what the options name (and nothing without an
/// accepted image).
fn remote_client(url: &str, args: &BenchArgs) -> Result<tandem_sdk::Client> {
    use tandem_sdk::attestation::{AttestationPolicy, ImageMeasurements};
    let mut policy = AttestationPolicy::nitro();
    if let Some(root) = &args.mock_root {
        policy = policy.danger_allow_mock(&std::fs::read_to_string(root).context("cannot read --mock-root")?)?;
    }
    ensure!(
        !args.pcr_file.is_empty(),
        "name the enclave image to accept with --pcr-file enclave-pcr.json"
    );
    for file in &args.pcr_file {
        policy = policy.accept_image(ImageMeasurements::from_json(
            &std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
        )?);
    }
    let mut builder = tandem_sdk::Client::builder(url).attestation(policy);
    if let Some(ca) = &args.ca_cert {
        builder = builder.http_client(tandem_sdk::http_client_trusting(
            &std::fs::read(ca).context("cannot read --ca-cert")?,
        )?);
    }
    Ok(builder.build()?)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
