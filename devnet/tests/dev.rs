//! `tandem-dev demo` and `tandem-dev bench --local`, run as a developer would: the whole
//! system in one process, from the binary.
#![allow(clippy::unwrap_used)]

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_verifies() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-dev"))
        .args(["demo", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    let raw = hex::decode(&v["rawTransaction"].as_str().unwrap()[2..]).unwrap();
    let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
    assert_eq!(
        tx.recover_signer().unwrap(),
        v["address"].as_str().unwrap().parse::<Address>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bench_reports_percentiles_and_no_errors() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-dev"))
        .args([
            "--json",
            "bench",
            "--local",
            "--requests",
            "8",
            "--concurrency",
            "2",
            "--baseline",
            "3",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 0);
    assert!(v["p50Ms"].as_f64().unwrap() > 0.0);
    assert!(v["endToEndOverInProcess"].as_f64().unwrap() > 0.0);
}
