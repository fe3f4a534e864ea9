//! The parent's blob service in the real `tandem-proxy` process (`--blob-dir`,
//! `--blob-listen`): an enclave (mock mode, in this process) keeps its sealed blobs there,
//! is reached through the same proxy, and only ciphertext reaches the parent's directory.
//! TCP stands in for vsock (`--blob-listen vsock://any:7000` on a Nitro parent).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use common::{LocalEnclave, ProxyProcess, bounded};
use tandem_enclave::config::{Config, StoreKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_stores_sealed_blobs_through_the_parents_blob_service() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("parent-blobs");
        // Hold the enclave's port until the proxy has bound its own listeners (port 0):
        // a port released earlier could otherwise be handed to one of them.
        let placeholder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let enclave_port = placeholder.local_addr().unwrap().port();
        let blob_dir = blobs.to_str().unwrap();
        let mut proxy = ProxyProcess::start(
            dir.path(),
            enclave_port,
            &["--blob-dir", blob_dir, "--blob-listen", "tcp://127.0.0.1:0"],
        );
        let blob_addr = proxy.printed_after("tandem-proxy blob service on ");
        assert!(blob_addr.starts_with("tcp://127.0.0.1:"), "{blob_addr}");
        drop(placeholder);

        let mut config = Config::mock(dir.path().join("enclave-data"));
        config.store = format!("parent:{blob_addr}").parse::<StoreKind>().unwrap();
        let enclave = LocalEnclave::start_with(config, enclave_port).await;
        let client = proxy.client(&enclave);
        let account = client.create_account(Some("parent-blobs")).await.unwrap();
        client.sign_digest(&account, [3; 32]).await.unwrap();

        // The account's blob is in the parent's directory, and it is ciphertext: the device
        // share's public key (which the record holds in the clear if unsealed) is not in it.
        let found: Vec<Vec<u8>> = walk(&blobs).iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(
            found.len() >= 2,
            "the key ring and the account reach the parent: {} files",
            found.len()
        );
        let pk = account.public_key().to_compressed();
        for blob in &found {
            assert!(
                !blob.windows(pk.len()).any(|w| w == pk),
                "a blob on the parent holds plaintext"
            );
        }
        assert!(
            !dir.path().join("enclave-data/accounts").exists(),
            "nothing on the enclave's side"
        );

        // A restarted enclave finds its account on the parent.
        let enclave = enclave.restart().await;
        let client = proxy.client(&enclave);
        client.sign_digest(&account, [4; 32]).await.unwrap();
    })
    .await;
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
