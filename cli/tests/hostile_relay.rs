//! Review finding M1 through the CLI: a hostile relay between the wallet and the enclave
//! (the host) forges the DONE answers of createAccount, refresh and recover. The wallet
//! never writes an account, never replaces a share and never reports a passed check on
//! the host's word: the answers are sealed, and the forgery is detected.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use tandem_testkit::{Served, Tandem};

struct Relay {
    upstream: String,
    http: reqwest::Client,
    hostile: AtomicBool,
}

/// Forwards everything; once hostile, flips a bit of every DONE answer's sealed message.
async fn relay(State(r): State<Arc<Relay>>, uri: Uri, _: HeaderMap, body: Bytes) -> (StatusCode, Bytes) {
    let url = format!("{}{}", r.upstream, uri.path());
    let resp = if body.is_empty() {
        r.http.get(&url).send().await.unwrap()
    } else {
        r.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    if r.hostile.load(Ordering::SeqCst)
        && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
        && v["status"] == "DONE"
    {
        let mut sealed = tandem_testkit::unb64(&v["serverMessage"]);
        sealed[0] ^= 1;
        v["serverMessage"] = Value::String(tandem_testkit::b64(&sealed));
        return (status, Bytes::from(serde_json::to_vec(&v).unwrap()));
    }
    (status, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_forging_done_answers_changes_nothing_in_the_wallet() {
    let enclave = Served::start("dev").await;
    let state = Arc::new(Relay {
        upstream: enclave.url.clone(),
        http: reqwest::Client::new(),
        hostile: AtomicBool::new(false),
    });
    let app = axum::Router::new().fallback(relay).with_state(state.clone());
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", relay_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(relay_listener, app).await });

    let wallet = tempfile::tempdir().unwrap();
    let cli = Tandem::new(
        env!("CARGO_BIN_EXE_tandem"),
        &url,
        wallet.path(),
        Some(&enclave.mock_root),
        Some(&enclave.pcr_file),
    );
    let (ok, created) = cli.json(&["account", "create", "--label", "a"]).await;
    assert!(ok, "{created}");
    let file = wallet
        .path()
        .join(format!("{}.json", created["accountId"].as_str().unwrap()));
    let before = std::fs::read_to_string(&file).unwrap();

    state.hostile.store(true, Ordering::SeqCst);
    let (ok, v) = cli.json(&["account", "create", "--label", "b"]).await;
    assert!(!ok, "a forged createAccount DONE was accepted: {v}");
    assert_eq!(
        std::fs::read_dir(wallet.path()).unwrap().count(),
        1,
        "no account was written"
    );
    let (ok, v) = cli.json(&["account", "refresh"]).await;
    assert!(!ok, "a forged refresh DONE was accepted: {v}");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let before: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        after["deviceShare"], before["deviceShare"],
        "the share was not replaced"
    );
    let (ok, v) = cli.json(&["account", "verify"]).await;
    assert!(!ok, "a forged recovery answer was reported as verified: {v}");

    // The account still works once the host behaves.
    state.hostile.store(false, Ordering::SeqCst);
    let (ok, v) = cli.json(&["sign", "message", "gm"]).await;
    assert!(ok, "{v}");
}
