//! The parent's services across real processes: the enclave binary streams its JSON logs
//! over TCP (standing in for vsock) to the proxy binary, whose own log then carries the
//! enclave's lines with their request ids; and the proxy pushes its clock to the enclave's
//! control listener, whose health then reports the drift.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The proxy binary, built by the same workspace build as this test.
fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("tandem-proxy");
    assert!(
        bin.exists(),
        "{} not found: build the workspace (cargo build -p tandem-proxy) or run ./scripts/test.sh",
        bin.display()
    );
    bin
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn enclave_log_lines_reach_the_proxy_log_with_their_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (log_port, enclave_port, control_port) = (free_port(), free_port(), free_port());
    let proxy_log = dir.path().join("proxy.log");
    let proxy = Kill(
        Command::new(proxy_bin())
            .args(["--listen", "127.0.0.1:0", "--self-signed"])
            .arg(dir.path().join("tls"))
            .args(["--enclave", &format!("tcp://127.0.0.1:{enclave_port}")])
            .args(["--enclave-logs", &format!("tcp://127.0.0.1:{log_port}")])
            .args(["--enclave-control", &format!("tcp://127.0.0.1:{control_port}")])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&proxy_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut proxy = proxy;
    let line = {
        let mut first = String::new();
        BufReader::new(proxy.0.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        first
    };
    let proxy_url = line
        .trim()
        .strip_prefix("tandem-proxy listening on ")
        .unwrap()
        .to_string();

    let _enclave = Kill(
        Command::new(env!("CARGO_BIN_EXE_tandem-enclave"))
            .args(["--mock", "--listen", &format!("tcp://127.0.0.1:{enclave_port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--ship-logs", &format!("tcp://127.0.0.1:{log_port}")])
            .args(["--control-listen", &format!("tcp://127.0.0.1:{control_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let request_id = "ship-me-7f3a9c";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health: Option<serde_json::Value> = match http
            .get(format!("{proxy_url}/v1/health"))
            .header("x-request-id", request_id)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        // The proxy pushes its clock at start, retrying every second until the enclave
        // answers, then every minute.
        let drift = health
            .as_ref()
            .and_then(|h| h.get("clockDriftMs"))
            .and_then(serde_json::Value::as_i64);
        if let Some(d) = drift {
            assert!(d.abs() < 5_000, "same machine, same clock: drift {d} ms");
        }
        let ok = drift.is_some();
        let log = std::fs::read_to_string(&proxy_log).unwrap_or_default();
        let shipped = log
            .lines()
            .any(|l| l.contains("\"enclave\"") && l.contains(request_id) && l.contains("enclave log"));
        if ok && shipped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shipped enclave line with the request id in the proxy log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
