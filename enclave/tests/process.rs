//! Cross-process tests: the real `tandem-enclave` binary on a loopback TCP socket, driven
//! over HTTP by the SDK (`tandem_sdk::Client`, `TandemSigner`), with every signature checked
//! independently of the SDK.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_network::TxSigner;
use alloy_primitives::{Address, B256, Bytes, Signature, U256, address, b256, keccak256, uint};
use alloy_signer::Signer;
use common::{ENCLAVE_BIN, Enclave};
use serde_json::Value;
use tandem_core::ErrorCode;
use tandem_sdk::eth::{self, TxKindParams, TxParams};
use tandem_sdk::{Account, SdkError, TandemSigner};

/// `n / 2` for secp256k1: the largest `s` Ethereum accepts (EIP-2).
const HALF_N: U256 = uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

const CHAIN_ID: u64 = 31337;

/// The EIP-712 "Mail" example, exactly as in the EIP.
const MAIL_JSON: &str = r#"{
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"}
        ],
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "wallet", "type": "address"}
        ],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"}
        ]
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!"
    }
}"#;

/// The EIP's digest of [`MAIL_JSON`] (ETHEREUM-VECTORS.md), not recomputed by the SDK.
const MAIL_DIGEST: B256 = b256!("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2");

/// Checks a signature without the SDK: low-S, and it recovers `expected` from `digest`.
#[track_caller]
fn check(sig: &Signature, digest: &B256, expected: Address) {
    assert!(!sig.r().is_zero() && !sig.s().is_zero(), "degenerate signature {sig:?}");
    assert!(sig.s() <= HALF_N, "s is high (s > n/2): {sig:?}");
    let recovered = sig
        .recover_address_from_prehash(digest)
        .expect("a key recovers from the signature");
    assert_eq!(
        recovered, expected,
        "the signature does not recover the account's address"
    );
}

fn tx_params(nonce: u64, kind: TxKindParams) -> TxParams {
    TxParams {
        chain_id: CHAIN_ID,
        nonce,
        to: Some(address!("70997970C51812dc3A010C7d01b50e0d17dc79C8")),
        value: U256::from(1_234_567_890_000_000u64),
        gas_limit: 60_000,
        kind,
        data: Bytes::from_static(b"tandem"),
    }
}

/// Decodes a raw signed transaction with alloy and checks its sender and fields.
#[track_caller]
fn check_raw(raw: &[u8], expected_type: u8, params: &TxParams, sender: Address) -> TxEnvelope {
    if expected_type == 0 {
        assert!(raw[0] >= 0xc0, "a legacy transaction is a bare RLP list");
    } else {
        assert_eq!(raw[0], expected_type, "a typed transaction starts with its type byte");
    }
    let decoded = TxEnvelope::decode_2718(&mut &raw[..]).expect("the raw transaction decodes");
    assert_eq!(u8::from(decoded.tx_type()), expected_type);
    assert_eq!(decoded.recover_signer().expect("the sender recovers"), sender);
    assert!(decoded.signature().s() <= HALF_N, "high s in the encoded transaction");
    assert_eq!(decoded.chain_id(), Some(params.chain_id));
    assert_eq!(decoded.nonce(), params.nonce);
    assert_eq!(decoded.to(), params.to);
    assert_eq!(decoded.value(), params.value);
    assert_eq!(decoded.input(), &params.data);
    assert_eq!(decoded.gas_limit(), params.gas_limit);
    decoded
}

fn server_code(err: &SdkError) -> Option<ErrorCode> {
    match err {
        SdkError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn every_payload_kind_is_signed_and_verifies() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let health = client.health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert!(health.mock_mode, "a --mock enclave must say so in /v1/health");

    let account = client.create_account(Some("kinds")).await.unwrap();
    let addr = account.address();
    let info = client.get_public_key(account.id()).await.unwrap();
    assert_eq!(info.address, addr.to_checksum(None));
    assert_eq!(info.public_key, account.public_key());
    let signer = TandemSigner::new(client.clone(), account).with_chain_id(Some(CHAIN_ID));

    // A raw 32-byte hash, signed as given.
    let hash = keccak256(b"tandem: a raw digest");
    let sig = signer.sign_hash(&hash).await.unwrap();
    check(&sig, &hash, addr);

    // EIP-191 personal_sign.
    let message = b"Hello from the tandem process test";
    let sig = signer.sign_message(message).await.unwrap();
    check(&sig, &alloy_primitives::eip191_hash_message(message), addr);
    assert_eq!(sig.recover_address_from_msg(message).unwrap(), addr);

    // EIP-712 typed data, checked against the EIP's own digest.
    let sig = signer.sign_typed_data_json(MAIL_JSON).await.unwrap();
    check(&sig, &MAIL_DIGEST, addr);

    // Legacy with EIP-155: sign the signing hash.
    let params = tx_params(
        0,
        TxKindParams::Legacy {
            gas_price: 2_000_000_000,
        },
    );
    let tx = eth::build_tx(&params);
    let hash = eth::signing_hash(&tx);
    let sig = signer.sign_hash(&hash).await.unwrap();
    check(&sig, &hash, addr);
    let raw = eth::encode_signed(tx, sig);
    let TxEnvelope::Legacy(signed) = check_raw(&raw, 0, &params, addr) else {
        panic!("expected a legacy envelope")
    };
    assert_eq!(
        signed.tx().chain_id,
        Some(CHAIN_ID),
        "legacy transactions carry the EIP-155 chain id"
    );

    // EIP-2930 and EIP-1559 through alloy's TxSigner.
    let access_list = AccessList(vec![AccessListItem {
        address: address!("de0B295669a9FD93d5F28D9Ec85E40f4cb697BAe"),
        storage_keys: vec![B256::ZERO, B256::with_last_byte(7)],
    }]);
    let typed = [
        (
            1u8,
            TxKindParams::Eip2930 {
                gas_price: 2_000_000_000,
                access_list: access_list.clone(),
            },
        ),
        (
            2u8,
            TxKindParams::Eip1559 {
                max_fee_per_gas: 3_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
                access_list: access_list.clone(),
            },
        ),
    ];
    for (nonce, (ty, kind)) in (1u64..).zip(typed) {
        let params = tx_params(nonce, kind);
        let mut tx = eth::build_tx(&params);
        let hash = eth::signing_hash(&tx);
        let sig = TxSigner::sign_transaction(&signer, &mut tx).await.unwrap();
        assert_eq!(
            eth::signing_hash(&tx),
            hash,
            "a matching chain id leaves the transaction as built"
        );
        check(&sig, &hash, addr);
        let raw = eth::encode_signed(tx, sig);
        let decoded = check_raw(&raw, ty, &params, addr);
        assert_eq!(decoded.access_list(), Some(&access_list));
    }
}

#[tokio::test]
async fn accounts_survive_an_enclave_restart() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let old_client = enclave.client();
    let account = old_client.create_account(Some("restart")).await.unwrap();
    let digest = keccak256(b"before the restart");
    let sig = TandemSigner::new(old_client.clone(), account.clone())
        .sign_digest(digest)
        .await
        .unwrap();
    check(&sig, &digest, account.address());
    let stored = account.to_json().unwrap();

    // SIGKILL: nothing is flushed on the way out, so only what was durable at DONE survives.
    drop(enclave);
    let err = old_client.health().await.unwrap_err();
    assert!(
        matches!(err, SdkError::Transport(_)),
        "the killed enclave still answers: {err:?}"
    );

    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    assert_ne!(client.base_url(), old_client.base_url());

    // The device's side of a restart: its account file, read back.
    let restored = Account::from_json(&stored).unwrap();
    assert_eq!(restored.id(), account.id());
    assert_eq!(restored.label(), Some("restart"));
    assert_eq!(restored.address(), account.address());
    assert_eq!(restored.public_key(), account.public_key());
    assert_eq!(
        *restored.to_json().unwrap(),
        *stored,
        "to_json/from_json round trip is lossless"
    );

    let info = client.get_public_key(account.id()).await.unwrap();
    assert_eq!(info.address, account.address().to_checksum(None));

    let signer = TandemSigner::new(client.clone(), restored.clone());
    let digest = keccak256(b"after the restart");
    let sig = signer.sign_digest(digest).await.unwrap();
    check(&sig, &digest, account.address());
    let sig = signer.sign_message(b"after the restart").await.unwrap();
    check(
        &sig,
        &alloy_primitives::eip191_hash_message(b"after the restart"),
        account.address(),
    );
    // The in-memory account from before the restart is the same account.
    let digest = keccak256(b"after the restart, original object");
    let sig = client.sign_digest(&account, digest.0).await.unwrap();
    let sig = eth::assemble(&sig, &digest, account.address()).unwrap();
    check(&sig, &digest, account.address());
    client.recover(&restored).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_signing_sessions_over_http() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let (a, b) = tokio::join!(client.create_account(Some("a")), client.create_account(Some("b")));
    let signers = [
        TandemSigner::new(client.clone(), a.unwrap()),
        TandemSigner::new(client.clone(), b.unwrap()),
    ];
    assert_ne!(signers[0].address(), signers[1].address());

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let signer = signers[usize::from(i % 2)].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let digest = keccak256([b'c', i]);
            barrier.wait().await;
            let result = signer.sign_digest(digest).await;
            (i, digest, signer.address(), result)
        });
    }
    let all = async {
        let mut per_account = [0usize; 2];
        while let Some(joined) = tasks.join_next().await {
            let (i, digest, addr, result) = joined.expect("signing task panicked");
            let sig = result.unwrap_or_else(|e| panic!("session {i} failed: {e}"));
            check(&sig, &digest, addr);
            per_account[usize::from(i % 2)] += 1;
        }
        per_account
    };
    let per_account = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("16 sessions within 120 s");
    assert_eq!(per_account, [8, 8]);
}

#[tokio::test]
async fn recover_accepts_the_accounts_own_share_only() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let (a, b) = tokio::join!(client.create_account(Some("a")), client.create_account(Some("b")));
    let (a, b) = (a.unwrap(), b.unwrap());
    client.recover(&a).await.unwrap();
    client.recover(&b).await.unwrap();

    // B's share presented under A's id. `from_json` checks the share against the recorded
    // public key and address, not against the account id, so the forgery loads.
    let a_json: Value = serde_json::from_str(a.to_json().unwrap().as_str()).unwrap();
    let mut json: Value = serde_json::from_str(b.to_json().unwrap().as_str()).unwrap();
    json["accountId"] = Value::String(a.id().to_string());
    let foreign_device = Account::from_json(&json.to_string()).unwrap();
    // With B's device key, A's account refuses even to look at the proof.
    let err = client.recover(&foreign_device).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::Unauthorized), "{err:?}");
    // With A's own device key (A's device, restored from a wrong backup), the proof runs
    // and fails: the share is not A's.
    json["authKey"] = a_json["authKey"].clone();
    let forged = Account::from_json(&json.to_string()).unwrap();
    assert_eq!(forged.id(), a.id());
    assert_eq!(forged.address(), b.address());

    let err = client.recover(&forged).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::RecoveryFailed), "{err:?}");
    let err = client.sign_digest(&forged, [7; 32]).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");

    // Neither account was harmed by the attempts.
    client.recover(&a).await.unwrap();
    for account in [&a, &b] {
        let digest = keccak256(account.id().as_bytes());
        let sig = TandemSigner::new(client.clone(), account.clone())
            .sign_digest(digest)
            .await
            .unwrap();
        check(&sig, &digest, account.address());
    }
}

#[tokio::test]
async fn refresh_keeps_the_address_and_retires_the_old_share() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let old = client.create_account(Some("refresh")).await.unwrap();
    let addr = old.address();
    let sign = |client: &tandem_sdk::Client, account: &Account, text: &'static str| {
        let signer = TandemSigner::new(client.clone(), account.clone());
        async move {
            signer
                .sign_message(text.as_bytes())
                .await
                .map_err(|e| e.to_string())
                .map(|sig| (sig, text))
        }
    };
    let (sig, text) = sign(&client, &old, "before the refresh").await.unwrap();
    check(&sig, &alloy_primitives::eip191_hash_message(text), addr);

    let new = client.refresh(&old).await.unwrap();
    assert_eq!(new.id(), old.id());
    assert_eq!(new.address(), addr);
    assert_eq!(new.public_key(), old.public_key());
    let share = |a: &Account| {
        let v: Value = serde_json::from_str(a.to_json().unwrap().as_str()).unwrap();
        v["deviceShare"].as_str().unwrap().to_string()
    };
    assert_ne!(share(&new), share(&old), "refresh must replace the device share");

    // Until the device has used its new share, the enclave keeps the old one too, so a
    // device that lost the refresh's answer can still sign.
    let (sig, text) = sign(&client, &old, "old share, refresh unconfirmed").await.unwrap();
    check(&sig, &alloy_primitives::eip191_hash_message(text), addr);

    let (sig, text) = sign(&client, &new, "new share").await.unwrap();
    check(&sig, &alloy_primitives::eip191_hash_message(text), addr);

    // The new share has signed: the old one is gone for good.
    let err = TandemSigner::new(client.clone(), old.clone())
        .sign_digest(keccak256(b"old share, retired"))
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
    let err = client.recover(&old).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::RecoveryFailed), "{err:?}");
    client.recover(&new).await.unwrap();

    // And that retirement is durable across a restart.
    drop(enclave);
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let (sig, text) = sign(&client, &new, "new share after a restart").await.unwrap();
    check(&sig, &alloy_primitives::eip191_hash_message(text), addr);
    let err = client.sign_digest(&old, [9; 32]).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
}

#[test]
fn the_binary_refuses_to_run_without_mock() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mut child = Command::new(ENCLAVE_BIN)
        .args(["--listen", "tcp://127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tandem-enclave without --mock still ran after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "exit status {status}");
    assert!(status.code().is_some(), "it must exit, not die from a signal: {status}");
    assert!(stderr.contains("mock mode"), "stderr does not explain: {stderr}");
    assert!(!stdout.contains("listening"), "it must not listen: {stdout}");
    assert!(!data_dir.exists(), "nothing may be created before the mode is settled");
}
