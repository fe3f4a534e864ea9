//! The real-chain test: a local Ethereum node (anvil) accepts transactions whose signatures
//! come out of the two-party protocol between the SDK and the real `tandem-enclave` binary.
//!
//! anvil comes from `TANDEM_ANVIL`, else from `.tools/` where `./scripts/test.sh` installs
//! it. Without it this test fails (it never passes silently).
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_eips::eip2718::Decodable2718;
use alloy_eips::eip2930::AccessList;
use alloy_network::TxSigner;
use alloy_primitives::{Address, B256, Bytes, U256, address, hex, keccak256, uint};
use common::Enclave;
use serde_json::{Value, json};
use tandem_sdk::TandemSigner;
use tandem_sdk::eth::{self, TxKindParams, TxParams};

/// `n / 2` for secp256k1: the largest `s` Ethereum accepts (EIP-2). anvil itself accepts
/// high-S signatures, so the test checks this itself.
const HALF_N: U256 = uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

const CHAIN_ID: u64 = 31337;

/// anvil's unlocked account #0.
const FUNDER: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

/// Bound on every wait (startup, receipts).
const WAIT: Duration = Duration::from_secs(30);

/// Where anvil is: `TANDEM_ANVIL`, else where `./scripts/test.sh` installs it.
fn anvil_path() -> PathBuf {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let from_env = std::env::var_os("TANDEM_ANVIL").map(PathBuf::from);
    let candidates: Vec<PathBuf> = from_env.into_iter().chain([installed]).collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "anvil not found (looked at {candidates:?}). Run ./scripts/test.sh, which installs it from the npm \
             registry into .tools/, or set TANDEM_ANVIL to an anvil binary."
        )
    })
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    probe.local_addr().expect("the probe's address").port()
}

/// A JSON-RPC client.
struct Rpc {
    http: reqwest::Client,
    url: String,
}

impl Rpc {
    fn new(url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Rpc { http, url }
    }

    async fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut value: Value = resp.json().await.map_err(|e| e.to_string())?;
        if let Some(err) = value.get("error") {
            return Err(format!("{method}: {err}"));
        }
        Ok(value["result"].take())
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("JSON-RPC call failed: {e}"))
    }

    async fn quantity(&self, method: &str, params: Value) -> U256 {
        quantity(&self.call(method, params).await)
    }

    async fn balance(&self, who: Address) -> U256 {
        self.quantity("eth_getBalance", json!([who.to_string(), "latest"]))
            .await
    }

    /// Polls for the receipt of `hash` (anvil mines at once, but bound the wait anyway).
    async fn receipt(&self, hash: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let receipt = self.call("eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                return receipt;
            }
            assert!(Instant::now() < deadline, "no receipt for {hash} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A hex quantity ("0x1a") from a JSON-RPC answer.
#[track_caller]
fn quantity(v: &Value) -> U256 {
    let s = v.as_str().unwrap_or_else(|| panic!("expected a hex quantity, got {v}"));
    let digits = s
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("quantity {s:?} lacks 0x"));
    U256::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("bad quantity {s:?}: {e}"))
}

#[track_caller]
fn address_field(v: &Value) -> Address {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected an address, got {v}"))
}

/// A running anvil, killed and reaped on drop.
struct Anvil {
    child: Child,
    rpc: Rpc,
}

impl Anvil {
    async fn start(log_dir: &Path) -> Anvil {
        let bin = anvil_path();
        let log = log_dir.join("anvil.log");
        // The free port may be taken between the probe and anvil's bind: retry a few times.
        for attempt in 1..=3 {
            let port = free_port();
            let child = Command::new(&bin)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--chain-id",
                    &CHAIN_ID.to_string(),
                ])
                .arg("--silent")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(File::create(&log).expect("create anvil.log")))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run anvil at {}: {e}", bin.display()));
            let mut anvil = Anvil {
                child,
                rpc: Rpc::new(format!("http://127.0.0.1:{port}")),
            };
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = anvil.child.try_wait().expect("poll anvil") {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    eprintln!("anvil exited ({status}) on attempt {attempt}: {text}");
                    break;
                }
                if let Ok(id) = anvil.rpc.try_call("eth_chainId", json!([])).await {
                    assert_eq!(quantity(&id), U256::from(CHAIN_ID));
                    return anvil;
                }
                assert!(
                    Instant::now() < deadline,
                    "anvil did not answer JSON-RPC within {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("anvil failed to start three times; see the messages above");
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Legacy,
    Eip2930,
    Eip1559,
}

/// Sends `value` wei from the MPC account to `to` in a transaction of `kind`, signed by
/// the two parties, and checks the node's receipt, its view of the signature, and both
/// balances to the wei.
async fn transfer(rpc: &Rpc, signer: &TandemSigner, to: Address, value: U256, kind: Kind) {
    let from = signer.address();
    let nonce: u64 = rpc
        .quantity("eth_getTransactionCount", json!([from.to_string(), "pending"]))
        .await
        .to();
    let gas_price: u128 = rpc.quantity("eth_gasPrice", json!([])).await.to();
    let tip: u128 = rpc.quantity("eth_maxPriorityFeePerGas", json!([])).await.to();
    let tx_kind = match kind {
        Kind::Legacy => TxKindParams::Legacy { gas_price },
        Kind::Eip2930 => TxKindParams::Eip2930 {
            gas_price,
            access_list: AccessList::default(),
        },
        Kind::Eip1559 => TxKindParams::Eip1559 {
            max_fee_per_gas: 2 * gas_price + tip,
            max_priority_fee_per_gas: tip,
            access_list: AccessList::default(),
        },
    };
    let params = TxParams {
        chain_id: CHAIN_ID,
        nonce,
        to: Some(to),
        value,
        gas_limit: 21_000,
        kind: tx_kind,
        data: Bytes::new(),
    };

    let mut tx = eth::build_tx(&params);
    let digest = eth::signing_hash(&tx);
    let sig = TxSigner::sign_transaction(signer, &mut tx)
        .await
        .expect("the MPC signs the transaction");
    assert!(sig.s() <= HALF_N, "{kind:?}: high s {sig:?}");
    assert_eq!(
        sig.recover_address_from_prehash(&digest).expect("recover"),
        from,
        "{kind:?}"
    );
    let raw = eth::encode_signed(tx, sig);
    let decoded = TxEnvelope::decode_2718(&mut raw.as_slice()).expect("decode");
    assert_eq!(decoded.recover_signer().expect("recover the sender"), from, "{kind:?}");

    let sender_before = rpc.balance(from).await;
    let recipient_before = rpc.balance(to).await;
    let hash = rpc
        .call("eth_sendRawTransaction", json!([hex::encode_prefixed(&raw)]))
        .await;
    let hash = hash.as_str().expect("a transaction hash").to_string();
    assert_eq!(
        hash.parse::<B256>().expect("a 32-byte hash"),
        keccak256(&raw),
        "{kind:?}: the node hashes our bytes"
    );

    let receipt = rpc.receipt(&hash).await;
    assert_eq!(receipt["status"], "0x1", "{kind:?}: {receipt}");
    assert_eq!(address_field(&receipt["from"]), from, "{kind:?}");
    assert_eq!(address_field(&receipt["to"]), to, "{kind:?}");
    let expected_type = match kind {
        Kind::Legacy => 0u8,
        Kind::Eip2930 => 1,
        Kind::Eip1559 => 2,
    };
    assert_eq!(quantity(&receipt["type"]), U256::from(expected_type), "{kind:?}");
    let gas_used = quantity(&receipt["gasUsed"]);
    let effective_gas_price = quantity(&receipt["effectiveGasPrice"]);
    assert_eq!(gas_used, U256::from(21_000u64), "{kind:?}: a plain transfer");

    // The node's copy of the signature is ours; legacy carries v = 35 + 2·chainId + parity.
    let mined = rpc.call("eth_getTransactionByHash", json!([hash])).await;
    assert_eq!(quantity(&mined["r"]), sig.r(), "{kind:?}");
    assert_eq!(quantity(&mined["s"]), sig.s(), "{kind:?}");
    assert!(quantity(&mined["s"]) <= HALF_N, "{kind:?}");
    let parity = u64::from(sig.v());
    match kind {
        Kind::Legacy => assert_eq!(quantity(&mined["v"]), U256::from(35 + 2 * CHAIN_ID + parity)),
        Kind::Eip2930 | Kind::Eip1559 => assert_eq!(quantity(&mined["yParity"]), U256::from(parity)),
    }
    assert_eq!(quantity(&mined["chainId"]), U256::from(CHAIN_ID));

    let sender_after = rpc.balance(from).await;
    let recipient_after = rpc.balance(to).await;
    assert_eq!(
        recipient_after - recipient_before,
        value,
        "{kind:?}: the recipient gets exactly the value"
    );
    assert_eq!(
        sender_before - sender_after,
        value + gas_used * effective_gas_price,
        "{kind:?}: the sender pays the value plus gasUsed × effectiveGasPrice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_accepts_mpc_signed_transfers() {
    let root = tempfile::tempdir().unwrap();
    let (anvil, enclave) = tokio::join!(Anvil::start(root.path()), Enclave::start(root.path()));
    transfers_are_mined(&anvil, enclave.client()).await;
}

/// The same, with the SDK speaking HTTPS to the parent proxy in front of the enclave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_accepts_mpc_signed_transfers_through_the_proxy() {
    let root = tempfile::tempdir().unwrap();
    let (anvil, enclave) = tokio::join!(Anvil::start(root.path()), Enclave::start(root.path()));
    let enclave_addr = enclave.url().trim_start_matches("http://").to_string();
    let proxy = tandem_proxy::LocalProxy::start(
        format!("tcp://{enclave_addr}").parse().unwrap(),
        &root.path().join("tls"),
        |_| {},
    )
    .await
    .unwrap();
    let client = enclave.client_via(&proxy.url, tandem_sdk::http_client_trusting(&proxy.ca_pem).unwrap());
    transfers_are_mined(&anvil, client).await;
}

async fn transfers_are_mined(anvil: &Anvil, client: tandem_sdk::Client) {
    let rpc = &anvil.rpc;
    let account = client.create_account(Some("chain")).await.unwrap();
    let signer = TandemSigner::new(client, account).with_chain_id(Some(CHAIN_ID));
    let from = signer.address();
    assert_eq!(rpc.balance(from).await, U256::ZERO, "a fresh key has no history");

    // Fund the MPC address from anvil's unlocked account #0.
    let ten_eth = U256::from(10u64) * U256::from(10u64).pow(U256::from(18u64));
    let hash = rpc
        .call(
            "eth_sendTransaction",
            json!([{"from": FUNDER.to_string(), "to": from.to_string(), "value": format!("{ten_eth:#x}")}]),
        )
        .await;
    let receipt = rpc.receipt(hash.as_str().expect("a transaction hash")).await;
    assert_eq!(receipt["status"], "0x1", "funding failed: {receipt}");
    assert_eq!(rpc.balance(from).await, ten_eth);

    let recipients = [
        (
            Kind::Eip1559,
            address!("1111111111111111111111111111111111111111"),
            1_500_000_000_000_000_000u128,
        ),
        (
            Kind::Legacy,
            address!("2222222222222222222222222222222222222222"),
            250_000_000_000_000_000,
        ),
        (Kind::Eip2930, address!("3333333333333333333333333333333333333333"), 42),
    ];
    for (kind, to, value) in recipients {
        transfer(rpc, &signer, to, U256::from(value), kind).await;
    }
    let nonce = rpc
        .quantity("eth_getTransactionCount", json!([from.to_string(), "latest"]))
        .await;
    assert_eq!(nonce, U256::from(3u64), "all three transfers were mined");
}
