//! The parent's blob service as its own process: the enclave (mock mode) keeps its sealed
//! blobs there, and only ciphertext reaches the parent's directory.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's first stdout line; the rest is drained so the child never writes into a
/// closed pipe.
fn first_line(child: &mut Child) -> String {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    line.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_stores_sealed_blobs_through_the_parent_service() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("parent-blobs");
    let mut service = Kill(
        Command::new(env!("CARGO_BIN_EXE_tandem-blob-service"))
            .arg("--dir")
            .arg(&blobs)
            .args(["--listen", "tcp://127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut service.0);
    let addr = line
        .strip_prefix("tandem-blob-service listening on ")
        .unwrap()
        .to_string();
    let addr = if addr.starts_with("tcp://") {
        addr
    } else {
        format!("tcp://{addr}")
    };

    let data = dir.path().join("enclave-data");
    let mut enclave = Kill(
        Command::new(env!("CARGO_BIN_EXE_tandem-enclave"))
            .args(["--mock", "--listen", "tcp://127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--blob-store", &format!("parent:{addr}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut enclave.0);
    let enclave_addr = line
        .strip_prefix("tandem-enclave listening on ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let url = format!("http://{enclave_addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/v1/health")).await.is_err() {
        assert!(Instant::now() < deadline, "enclave did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pem = std::fs::read_to_string(data.join("attestation/dev-root.pem")).unwrap();
    let client = tandem_sdk::Client::builder(&url)
        .attestation(tandem_testkit::mock_policy(&pem))
        .build()
        .unwrap();
    let account = client.create_account(Some("parent-blobs")).await.unwrap();
    client.sign_digest(&account, [3; 32]).await.unwrap();

    // The account's blob is in the parent's directory, and it is ciphertext: the device
    // share's public key (which the record holds in the clear if unsealed) is not in it.
    let mut found = Vec::new();
    for entry in walk(&blobs) {
        found.push(std::fs::read(entry).unwrap());
    }
    assert!(!found.is_empty(), "no blob reached the parent's directory");
    let pk = account.public_key().to_compressed();
    for blob in &found {
        assert!(
            !blob.windows(pk.len()).any(|w| w == pk),
            "a blob on the parent holds plaintext"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
