//! What the proxy costs: signatures straight to a mock-mode enclave (plain HTTP) against
//! the same signatures through the proxy (HTTPS, rate limits, relay), in one process and
//! one run, interleaved so that a noisy machine hurts both sides alike.
//!
//! ```text
//! cargo run --release -p tandem-proxy --example overhead -- [--requests M] [--concurrency 1,8]
//! ```
//!
//! Prints p50/p99 latency and signatures per second for each side and concurrency, and
//! the proxy/direct ratios. Not a test: numbers depend on the machine.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_core::Addr;
use tandem_enclave::config::{Config, StoreKind};
use tandem_enclave::server::{Listener, Server};
use tandem_proxy::config::{Rate, RateLimitConfig};
use tandem_proxy::server::LocalProxy;
use tandem_sdk::{Account, Client};
use tokio_util::sync::CancellationToken;

struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `requests` signatures, `concurrency` in flight at once.
async fn bench(client: &Client, account: &Arc<Account>, concurrency: usize, requests: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, account, next) = (client.clone(), account.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break latencies;
                    }
                    let mut digest = [0u8; 32];
                    digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    let t = Instant::now();
                    client.sign_digest(&account, digest).await.unwrap();
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    Run {
        latencies,
        wall: started.elapsed(),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let requests: usize = arg("--requests").map_or(200, |v| v.parse().unwrap());
    let levels: Vec<usize> = arg("--concurrency").map_or(vec![1, 8], |v| {
        v.split(',').map(|n| n.trim().parse().unwrap()).collect()
    });
    let dir = tempfile::tempdir().unwrap();

    // The enclave, in this process, on a free port.
    let mut config = Config::mock(dir.path().join("enclave"));
    config.store = StoreKind::Memory;
    let server = Server::open(&config).unwrap();
    let listener = Listener::bind(&Addr::tcp("127.0.0.1", 0)).await.unwrap();
    let enclave: Addr = listener.local_addr().unwrap();
    let enclave_addr = enclave.authority().unwrap();
    let dev_root_pem = std::fs::read_to_string(server.dev_root_pem().unwrap()).unwrap();
    // Both clients accept the mock enclave's attestation (its development root) and nothing else.
    let policy = || tandem_testkit::mock_policy(&dev_root_pem);
    let stop = CancellationToken::new();
    tokio::spawn(tandem_enclave::server::run(server, listener, stop.clone()));

    // The proxy, in this process, as `tandem-dev demo` runs it (development certificates),
    // with the limits out of the way: this measures the path, not the limiter's refusals.
    let proxy = LocalProxy::start(enclave, &dir.path().join("tls"), |config| {
        let unlimited = Rate::per_second(1_000_000, 1_000_000);
        config.rates = RateLimitConfig {
            per_ip: unlimited,
            create_per_ip: unlimited,
            per_account: unlimited,
            global: unlimited,
        };
    })
    .await
    .unwrap();

    let direct = Client::builder(&format!("http://{enclave_addr}"))
        .attestation(policy())
        .build()
        .unwrap();
    let proxied = Client::builder(&proxy.url)
        .http_client(tandem_sdk::http_client_trusting(&proxy.ca_pem).unwrap())
        .attestation(policy())
        .build()
        .unwrap();
    let account = Arc::new(direct.create_account(Some("bench")).await.unwrap());

    // Warm up both paths (connections, TLS sessions, allocator).
    bench(&direct, &account, 2, 10).await;
    bench(&proxied, &account, 2, 10).await;

    println!("{requests} signatures per run; each row is the median of 3 interleaved runs\n");
    println!(
        "{:>4}  {:<7} {:>9} {:>9} {:>10}",
        "N", "path", "p50 ms", "p99 ms", "signs/s"
    );
    for &n in &levels {
        let (mut d_runs, mut p_runs) = (Vec::new(), Vec::new());
        for round in 0..3 {
            // Alternate which side goes first.
            if round % 2 == 0 {
                d_runs.push(bench(&direct, &account, n, requests).await);
                p_runs.push(bench(&proxied, &account, n, requests).await);
            } else {
                p_runs.push(bench(&proxied, &account, n, requests).await);
                d_runs.push(bench(&direct, &account, n, requests).await);
            }
        }
        let median = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let row = |runs: &[Run]| {
            (
                median(runs, &|r| r.percentile(0.5)),
                median(runs, &|r| r.percentile(0.99)),
                median(runs, &|r| r.per_second()),
            )
        };
        let (dp50, dp99, dtps) = row(&d_runs);
        let (pp50, pp99, ptps) = row(&p_runs);
        println!("{n:>4}  {:<7} {dp50:>9.2} {dp99:>9.2} {dtps:>10.1}", "direct");
        println!("{n:>4}  {:<7} {pp50:>9.2} {pp99:>9.2} {ptps:>10.1}", "proxy");
        println!(
            "{n:>4}  {:<7} {:>8.3}x {:>8.3}x {:>9.3}x   (proxy / direct; throughput overhead {:.1}%)",
            "ratio",
            pp50 / dp50,
            pp99 / dp99,
            ptps / dtps,
            (1.0 - ptps / dtps) * 100.0
        );
    }
    proxy.shutdown().await;
    stop.cancel();
}
