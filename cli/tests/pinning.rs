//! Issue item 1, "no flow without a pinned image", through the CLI: an enclave is trusted
//! only when its measurements are pinned from a file given out of band, mock enclaves
//! included; another image is refused for every flow, naming the PCR; several accepted
//! images work side by side (a rolling upgrade).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tandem_testkit::{Served, Tandem, error_of};

/// Runs `tandem --server URL --wallet WALLET --json [--mock-root ROOT] ARGS`, with no pin
/// but the wallet's.
async fn tandem(url: &str, wallet: &Path, mock_root: Option<&str>, args: &[&str]) -> (bool, serde_json::Value) {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"), url, wallet, mock_root, None)
        .json(args)
        .await
}

/// A server that presents a genuine Nitro attestation document (a real one, from the
/// fixtures) and counts every request it gets.
async fn genuine_nitro_server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let doc = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nitro/qos-2022-07-06.cose"
    ))
    .unwrap();
    let attestations = Arc::new(AtomicUsize::new(0));
    let others = Arc::new(AtomicUsize::new(0));
    let (a, o) = (attestations.clone(), others.clone());
    let app = axum::Router::new()
        .route(
            "/v1/attestation",
            axum::routing::post(move || {
                let (a, doc) = (a.clone(), doc.clone());
                async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &doc);
                    axum::Json(serde_json::json!({ "document": b64 }))
                }
            }),
        )
        .fallback(move || {
            let o = o.clone();
            async move {
                o.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NOT_FOUND
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, attestations, others)
}

/// Review finding C1: with no measurements configured, an enclave presenting a genuine
/// Nitro document (any AWS customer's enclave is genuine) is refused by the CLI before
/// anything is sealed to its key — no flow request ever reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_nitro_enclave_is_refused_when_no_image_is_pinned() {
    let (url, attestations, others) = genuine_nitro_server().await;
    let wallet = tempfile::tempdir().unwrap();
    for args in [&["account", "create"][..], &["attestation", "fetch"][..]] {
        let (ok, v) = tandem(&url, wallet.path(), None, args).await;
        assert!(!ok, "{args:?}");
        assert!(error_of(&v).contains("no enclave image is pinned"), "{args:?}: {v}");
    }
    assert_eq!(others.load(Ordering::SeqCst), 0, "no flow request was sent");
    assert_eq!(attestations.load(Ordering::SeqCst), 0, "refused before even asking");
}

/// With the mock root trusted but the measurements of another image pinned, every flow
/// is refused, naming the mismatching PCR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_of_another_image_is_refused_for_every_flow_naming_the_pcr() {
    let e = Served::start("dev").await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = dir.path().join("w");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let pass = pass.to_str().unwrap().to_string();
    let root = Some(e.mock_root.as_str());
    // An account made while the right image was pinned (then the pin changes).
    let (ok, v) = tandem(
        &e.url,
        &wallet,
        root,
        &["attestation", "pin", "--pcr-file", &e.pcr_file],
    )
    .await;
    assert!(ok, "{v}");
    let (ok, v) = tandem(&e.url, &wallet, root, &["account", "create", "--label", "a"]).await;
    assert!(ok, "{v}");
    let backup = dir.path().join("a.backup");
    let (ok, v) = tandem(
        &e.url,
        &wallet,
        root,
        &[
            "backup",
            "create",
            "--out",
            backup.to_str().unwrap(),
            "--passphrase-file",
            &pass,
        ],
    )
    .await;
    assert!(ok, "{v}");

    let other: PathBuf = dir.path().join("other-pcr.json");
    std::fs::write(
        &other,
        tandem_enclave::attester::pcr_file_json(&tandem_enclave::attester::image_pcrs("v2").unwrap()),
    )
    .unwrap();
    let (ok, _) = tandem(&e.url, &wallet, root, &["attestation", "unpin", "--all"]).await;
    assert!(ok);
    let (ok, v) = tandem(
        &e.url,
        &wallet,
        root,
        &["attestation", "pin", "--pcr-file", other.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{v}");
    let flows: [&[&str]; 6] = [
        &["account", "create"],
        &["sign", "message", "gm"],
        &["account", "verify"],
        &["account", "refresh"],
        &["account", "show"],
        &["attestation", "fetch"],
    ];
    for args in flows {
        let (ok, v) = tandem(&e.url, &wallet, root, args).await;
        assert!(!ok, "{args:?} ran against another image");
        assert!(error_of(&v).contains("PCR0"), "{args:?}: {v}");
    }
    let fresh = dir.path().join("fresh");
    let (ok, _) = tandem(
        &e.url,
        &fresh,
        root,
        &["attestation", "pin", "--pcr-file", other.to_str().unwrap()],
    )
    .await;
    assert!(ok);
    let (ok, v) = tandem(
        &e.url,
        &fresh,
        root,
        &[
            "backup",
            "restore",
            "--in",
            backup.to_str().unwrap(),
            "--passphrase-file",
            &pass,
        ],
    )
    .await;
    assert!(!ok);
    assert!(error_of(&v).contains("PCR0"), "restore: {v}");
}

/// A set of two accepted images works for either (a rolling upgrade needs no release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_accepting_two_images_works_with_either() {
    let (old, new) = (Served::start("dev").await, Served::start("v2").await);
    assert_ne!(
        std::fs::read_to_string(&old.pcr_file).unwrap(),
        std::fs::read_to_string(&new.pcr_file).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let wallet = dir.path().join("w");
    for e in [&old, &new] {
        let (ok, v) = tandem(
            &e.url,
            &wallet,
            Some(&e.mock_root),
            &["attestation", "pin", "--pcr-file", &e.pcr_file],
        )
        .await;
        assert!(ok, "{v}");
    }
    let (ok, v) = tandem(&old.url, &wallet, Some(&old.mock_root), &["attestation", "pins"]).await;
    assert!(ok);
    assert_eq!(v["acceptedImages"].as_array().unwrap().len(), 2);
    for (label, e) in [("on-dev", &old), ("on-v2", &new)] {
        let root = Some(e.mock_root.as_str());
        let (ok, v) = tandem(&e.url, &wallet, root, &["account", "create", "--label", label]).await;
        assert!(ok, "{label}: {v}");
        let (ok, v) = tandem(&e.url, &wallet, root, &["sign", "message", "--account", label, "gm"]).await;
        assert!(ok, "{label}: {v}");
    }
}
