//! Sealed storage across real processes: a damaged blob hurts only its own account,
//! SIGKILL in the middle of a DKG or a refresh leaves no half-written account, a full
//! disk fails the write with `KEYSTORE_ERROR` and keeps the previous blob, the parent
//! blob service, and the boot stages in `/v1/health`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::keccak256;
use common::Enclave;
use tandem_core::ErrorCode;
use tandem_io::blob_dir::BlobDir;
use tandem_io::net::Listener;
use tandem_sdk::{Account, SdkError, TandemSigner};
use tokio_util::sync::CancellationToken;

fn code(err: &SdkError) -> Option<ErrorCode> {
    match err {
        SdkError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// Signs a digest with `account` and checks the signature recovers its address.
async fn signs(client: &tandem_sdk::Client, account: &Account, text: &str) {
    let digest = keccak256(text.as_bytes());
    let sig = TandemSigner::new(client.clone(), account.clone())
        .sign_digest(digest)
        .await
        .unwrap_or_else(|e| panic!("{} cannot sign: {e}", account.id()));
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), account.address());
}

fn blob_path(data: &Path, account: &Account) -> PathBuf {
    data.join("accounts").join(format!("{}.blob", account.id()))
}

/// Every blob file in the accounts directory, and any temp file left behind.
fn blob_files(data: &Path) -> (Vec<String>, Vec<String>) {
    let mut blobs = Vec::new();
    let mut temps = Vec::new();
    for e in std::fs::read_dir(data.join("accounts")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            temps.push(name);
        } else if name.ends_with(".blob") && name != "keyring.blob" {
            blobs.push(name.trim_end_matches(".blob").to_string());
        }
    }
    (blobs, temps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blob_fails_only_its_own_account() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let a = client.create_account(Some("victim")).await.unwrap();
    let b = client.create_account(Some("bystander")).await.unwrap();
    signs(&client, &a, "before").await;
    drop(enclave);

    let path = blob_path(&root.path().join("data"), &a);
    let original = std::fs::read(&path).unwrap();
    let other = std::fs::read(blob_path(&root.path().join("data"), &b)).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let mut future = original.clone();
    future[12 + 3] = 9; // store framing (12 bytes), then "TDB", then the format version
    let variants: [(&str, Vec<u8>); 5] = [
        ("corrupted", flipped),
        ("truncated", original[..original.len() / 3].to_vec()),
        ("swapped (another account's blob)", other),
        ("unknown version", future),
        ("empty", Vec::new()),
    ];

    // A restart: nothing is cached, every load reads the file.
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    for (what, bytes) in variants {
        std::fs::write(&path, &bytes).unwrap();
        let err = client.get_public_key(a.id()).await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::KeystoreError), "{what}: {err:?}");
        let err = TandemSigner::new(client.clone(), a.clone())
            .sign_digest(keccak256(what.as_bytes()))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::KeystoreError), "{what}: {err:?}");
        // The other account is untouched and keeps signing.
        signs(&client, &b, what).await;
        let health = client.health().await.unwrap();
        assert_eq!((health.status.as_str(), health.ready), ("ok", Some(true)), "{what}");
    }
    // Put the real blob back: the account works again (a failure is never cached).
    std::fs::write(&path, &original).unwrap();
    signs(&client, &a, "repaired").await;
}

/// Kills the enclave `delay` into `flow`, restarts it, and checks the storage invariants:
/// no temp file, every account blob opens, and every account in `earlier` still signs.
async fn kill_then_check<F>(
    root: &Path,
    earlier: &[Account],
    delay: Duration,
    flow: &str,
    run: impl FnOnce(tandem_sdk::Client) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let enclave = Enclave::start(root).await;
    let client = enclave.client();
    let flow_task = tokio::spawn(run(client.clone()));
    tokio::time::sleep(delay).await;
    drop(enclave); // SIGKILL
    let _ = flow_task.await;

    let enclave = Enclave::start(root).await;
    let client = enclave.client();
    let data = enclave.data_dir().to_path_buf();
    let (blobs, temps) = blob_files(&data);
    assert!(
        temps.is_empty(),
        "{flow} at {delay:?}: temp files survived a restart: {temps:?}"
    );
    for id in &blobs {
        let id = tandem_core::AccountId::parse(id).unwrap();
        client
            .get_public_key(id)
            .await
            .unwrap_or_else(|e| panic!("{flow} at {delay:?}: stored account {id} does not open: {e}"));
    }
    for account in earlier {
        signs(&client, account, &format!("after a kill {delay:?} into {flow}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_dkg_or_a_refresh_leaves_no_half_written_account() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let t = Instant::now();
    let first = client.create_account(Some("first")).await.unwrap();
    let dkg = t.elapsed();
    let second = client.create_account(Some("second")).await.unwrap();
    let t = Instant::now();
    let refreshed = client.refresh(&second).await.unwrap();
    let refresh = t.elapsed();
    signs(&client, &refreshed, "confirm the refresh").await;
    drop(enclave);
    println!("DKG {dkg:?}, refresh {refresh:?}");

    let earlier = vec![first.clone(), refreshed.clone()];
    // Kill points spread over the whole flow, the last ones around the final write.
    for fraction in [0.3, 0.7, 0.9, 0.97, 1.0, 1.05] {
        let delay = dkg.mul_f64(fraction);
        kill_then_check(root.path(), &earlier, delay, "DKG", |client| async move {
            let _ = client.create_account(Some("killed")).await;
        })
        .await;
    }
    for fraction in [0.3, 0.6, 0.9, 1.0, 1.1] {
        let delay = refresh.mul_f64(fraction);
        let account = first.clone();
        kill_then_check(root.path(), &earlier, delay, "refresh", |client| async move {
            let _ = client.refresh(&account).await;
        })
        .await;
    }
    // Whatever a refresh left pending, the device's current share still signs and a new
    // refresh runs to the end.
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let again = client.refresh(&first).await.unwrap();
    signs(&client, &again, "refreshed after the kills").await;
}

/// Mounts a small tmpfs at `dir` (we run as root in CI); `false` if this machine refuses.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
    for _ in 0..64 {
        let _ = f.write_all(&chunk[..64]);
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_write_with_keystore_error_and_keeps_the_previous_blob() {
    let root = tempfile::tempdir().unwrap();
    let accounts = root.path().join("data/accounts");
    if !mount_tmpfs(&accounts, "2m") {
        // The in-process twin (`keystore.rs`, a store with an injected write error) covers
        // this machine; say so instead of passing silently.
        eprintln!("SKIP-NOTE: cannot mount a tmpfs here; the injected-error test in tests/keystore.rs covers it");
        return;
    }
    let _unmount = Unmount(accounts.clone());
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let account = client.create_account(Some("full")).await.unwrap();
    signs(&client, &account, "before the disk filled").await;
    let path = blob_path(&root.path().join("data"), &account);
    let before = std::fs::read(&path).unwrap();

    let filler = fill(&accounts);
    // A refresh must persist the new share before DONE: the write fails.
    let err = client.refresh(&account).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::KeystoreError), "{err:?}");
    // So does a new account.
    let err = client.create_account(Some("no room")).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::KeystoreError), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the previous blob changed");
    let (blobs, temps) = blob_files(&root.path().join("data"));
    assert_eq!(blobs, vec![account.id().to_string()]);
    assert!(temps.is_empty(), "{temps:?}");
    signs(&client, &account, "disk still full").await;

    // After a restart (disk still full) the account signs from what is on disk.
    drop(enclave);
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    signs(&client, &account, "after a restart on a full disk").await;
    // Room again: the refresh goes through.
    std::fs::remove_file(filler).unwrap();
    let refreshed = client.refresh(&account).await.unwrap();
    signs(&client, &refreshed, "after the disk was freed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_keeps_its_blobs_in_the_parents_blob_service() {
    let root = tempfile::tempdir().unwrap();
    let parent_dir = root.path().join("parent-blobs");
    // The parent's blob service (tandem-proxy's), in this process.
    let store = Arc::new(BlobDir::open(&parent_dir).unwrap());
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = format!("parent:{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let service = tokio::spawn(tandem_proxy::enclave::blobs::serve(listener, store, stop.clone()));

    let args = ["--blob-store", addr.as_str()];
    let enclave = Enclave::start_with(root.path(), &args).await;
    let client = enclave.client();
    let account = client.create_account(Some("parent")).await.unwrap();
    signs(&client, &account, "stored on the parent").await;
    // Nothing under the enclave's own data directory; the blob and key ring are on the parent.
    assert!(!root.path().join("data/accounts").exists());
    assert!(parent_dir.join(format!("{}.blob", account.id())).exists());
    assert!(parent_dir.join("keyring.blob").exists());

    drop(enclave);
    let enclave = Enclave::start_with(root.path(), &args).await;
    let client = enclave.client();
    signs(&client, &account, "after a restart").await;
    // The parent tampers with the blob: refused on read, that account only.
    let path = parent_dir.join(format!("{}.blob", account.id()));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    drop(enclave);
    let enclave = Enclave::start_with(root.path(), &args).await;
    let client = enclave.client();
    let err = client.get_public_key(account.id()).await.unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::KeystoreError), "{err:?}");
    drop(enclave);
    stop.cancel();
    service.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_boot_stage_and_boot_to_ready_is_fast() {
    let root = tempfile::tempdir().unwrap();
    let mut samples = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let enclave = Enclave::start(root.path()).await;
        let wall = t.elapsed();
        let health = enclave.client().health().await.unwrap();
        assert_eq!(health.ready, Some(true));
        assert_eq!(health.status, "ok");
        let names: Vec<_> = health.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["attest", "credentials", "unwrapDataKey", "ready"]);
        let states: Vec<_> = health.stages.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(states, ["done", "skipped", "done", "done"]);
        let ready_ms = health.stages[3].elapsed_ms.unwrap();
        samples.push((ready_ms, wall));
    }
    // The first start generated the master key, the dev chain and the key ring.
    println!("boot to ready (mock mode), [in-process ms, spawn-to-health wall]: {samples:?}");
    assert!(samples.iter().all(|(ms, _)| *ms < 5_000), "{samples:?}");
}
