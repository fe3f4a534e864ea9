//! Today's code on yesterday's data: an enclave data directory, a wallet and a backup made
//! by the build before generations and authenticated key rings (`fixtures/legacy-v1/`,
//! made by its `make.sh` with commit cd92e63's binaries). The enclave migrates its key ring
//! and every blob at boot; the wallet's files and its pinned PCRs are read as they are and
//! rewritten in the new format at the next flow; the backup restores. Nothing is lost, and
//! after the migration the pre-migration blobs are refused (a host serving them is
//! rolling back).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_testkit::{Served, Tandem};

fn legacy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/legacy-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["master.key", "attestation/dev-leaf.key"] {
            let p = to.join(name);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
}

fn tandem(enclave: &Served, data: &Path, wallet: &Path) -> Tandem {
    Tandem::new(
        env!("CARGO_BIN_EXE_tandem"),
        &enclave.url,
        wallet,
        data.join("attestation/dev-root.pem").to_str(),
        None,
    )
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yesterdays_enclave_wallet_and_backup_work_after_the_upgrade() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("enclave");
    let wallet = work.path().join("wallet");
    copy_dir(&legacy().join("enclave"), &data);
    copy_dir(&legacy().join("wallet"), &wallet);
    let created = json_file(&legacy().join("created.json"));
    let id = created["accountId"].as_str().unwrap().to_string();
    let account_file = wallet.join(format!("{id}.json"));
    assert_eq!(
        json_file(&account_file)["version"],
        2,
        "the fixture is a version-2 wallet file"
    );

    // Boot: the ring and every blob are migrated.
    let enclave = Served::in_dir(&data).await;
    let ring = std::fs::read(data.join("accounts/keyring.blob")).unwrap();
    let ring: Value = serde_json::from_slice(&ring[12..]).unwrap();
    assert_eq!(ring["format"], 2);
    assert_eq!(ring["blobsSealedWithGeneration"], true);
    assert!(ring["mac"].as_str().is_some());

    // The old wallet (its config.json pins the old PCRs) signs, and its file becomes v3.
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["sign", "message", "--account", "legacy", "gm"])
        .await;
    assert!(ok, "{v}");
    assert_eq!(v["address"], created["address"]);
    let file = json_file(&account_file);
    assert_eq!(file["version"], 3);
    assert!(file["generation"].as_u64().unwrap() >= 1);
    // The recovery check learns the device's OT fingerprint (the old record had none) and
    // the record is rewritten in the new format; a refresh works.
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["account", "verify", "--account", "legacy"])
        .await;
    assert!(ok, "{v}");
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["account", "refresh", "--account", "legacy"])
        .await;
    assert!(ok, "{v}");
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["sign", "message", "--account", "second", "gm"])
        .await;
    assert!(ok, "the second account, untouched since the old build: {v}");

    // Yesterday's backup restores into a fresh wallet (it was made before the refresh
    // above, so the enclave now refuses its share — as it refused it before the upgrade).
    let fresh = work.path().join("fresh");
    let pass = legacy().join("pass");
    let (ok, v) = tandem(&enclave, &data, &fresh)
        .json(&[
            "backup",
            "restore",
            "--in",
            legacy().join("legacy.backup").to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
        .await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("RECOVERY_FAILED"), "{v}");
    let config = fresh.join("config.json");
    assert!(
        !config.exists() || json_file(&config).get("acceptedImages").is_none(),
        "no image adopted on failure"
    );
    let restored: Vec<_> = std::fs::read_dir(&fresh)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        restored.iter().all(|n| n == "config.json"),
        "no account file written on failure: {restored:?}"
    );

    // After a restart nothing is left to migrate, and it still works.
    drop(enclave);
    let enclave = Served::in_dir(&data).await;
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["sign", "message", "--account", "legacy", "again"])
        .await;
    assert!(ok, "{v}");

    // A host that serves a pre-migration blob again is refused: version-1 blobs are not
    // accepted once every blob carries its generation.
    drop(enclave);
    for entry in std::fs::read_dir(legacy().join("enclave/accounts")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "keyring.blob" {
            std::fs::copy(entry.path(), data.join("accounts").join(entry.file_name())).unwrap();
        }
    }
    let enclave = Served::in_dir(&data).await;
    let (ok, v) = tandem(&enclave, &data, &wallet)
        .json(&["sign", "message", "--account", "second", "gm"])
        .await;
    assert!(!ok, "a pre-migration blob was accepted");
    assert!(v["error"].as_str().unwrap().contains("KEYSTORE_ERROR"), "{v}");
}

/// Yesterday's backup, restored against yesterday's enclave data before anything else
/// moved: its contents (version 1, one PCR map) become an accepted image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yesterdays_backup_restores_and_its_pcrs_become_an_accepted_image() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("enclave");
    copy_dir(&legacy().join("enclave"), &data);
    let enclave = Served::in_dir(&data).await;
    let fresh = work.path().join("fresh");
    let (ok, v) = tandem(&enclave, &data, &fresh)
        .json(&[
            "backup",
            "restore",
            "--in",
            legacy().join("legacy.backup").to_str().unwrap(),
            "--passphrase-file",
            legacy().join("pass").to_str().unwrap(),
        ])
        .await;
    assert!(ok, "{v}");
    assert_eq!(v["imagesAdopted"], true);
    let config = json_file(&fresh.join("config.json"));
    assert!(
        config["acceptedImages"][0]["PCR0"]
            .as_str()
            .unwrap()
            .starts_with(&hex::encode("TANDEM-DEV-PCR0"))
    );
}
