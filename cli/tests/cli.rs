//! Black-box tests of the `tandem` binary against an enclave on a loopback port.
#![allow(clippy::unwrap_used)] // test helpers unwrap: a panic is a failed test

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Signature};
use serde_json::Value;
use tandem_testkit::{Served, Tandem};

struct Env {
    served: Served,
    wallet: tempfile::TempDir,
}

impl std::ops::Deref for Env {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Env {
    /// The `tandem` runner for this test's wallet, trusting the enclave's image.
    fn cli(&self) -> Tandem {
        self.served.tandem(env!("CARGO_BIN_EXE_tandem"), self.wallet.path())
    }
}

async fn env() -> Env {
    Env {
        served: Served::start("dev").await,
        wallet: tempfile::tempdir().unwrap(),
    }
}

/// Runs `tandem --server … --wallet … --json ARGS`; returns (success, stdout JSON, stderr).
async fn tandem(env: &Env, args: &[&str]) -> (bool, Value, String) {
    env.cli().run(args).await
}

fn sig(v: &Value) -> Signature {
    let hex_sig = v["signature"].as_str().unwrap();
    Signature::try_from(hex::decode(&hex_sig[2..]).unwrap().as_slice()).unwrap()
}

const MAIL: &str = r#"{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]},"primaryType":"Mail","domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},"message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},"contents":"Hello, Bob!"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_and_sign_commands_end_to_end() {
    let env = env().await;
    let (ok, created, err) = tandem(&env, &["account", "create", "--label", "alice"]).await;
    assert!(ok, "{err}");
    let address: Address = created["address"].as_str().unwrap().parse().unwrap();
    let id = created["accountId"].as_str().unwrap().to_string();

    // A second account with the same label is refused; list and show agree.
    let (ok, _, _) = tandem(&env, &["account", "create", "--label", "alice"]).await;
    assert!(!ok);
    let (ok, list, _) = tandem(&env, &["account", "list"]).await;
    assert!(ok);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (ok, shown, err) = tandem(&env, &["account", "show", "--account", "alice"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        shown["enclaveConfirms"], true,
        "the sealed recovery answer, not the host's word"
    );
    assert_eq!(shown["generation"], 1);
    assert_eq!(shown["accountId"], id.as_str());

    // The wallet file is private.
    use std::os::unix::fs::PermissionsExt;
    let file = env.wallet.path().join(format!("{id}.json"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // sign hash
    let digest = B256::repeat_byte(0x42);
    let (ok, v, err) = tandem(&env, &["sign", "hash", &digest.to_string()]).await;
    assert!(ok, "{err}");
    assert_eq!(sig(&v).recover_address_from_prehash(&digest).unwrap(), address);

    // sign message
    let (ok, v, err) = tandem(&env, &["sign", "message", "--account", &address.to_string(), "hello"]).await;
    assert!(ok, "{err}");
    assert_eq!(sig(&v).recover_address_from_msg("hello").unwrap(), address);

    // sign typed-data: the digest is the EIP's own.
    let mail = env.wallet.path().join("..").join(format!("mail-{id}.json"));
    std::fs::write(&mail, MAIL).unwrap();
    let (ok, v, err) = tandem(&env, &["sign", "typed-data", mail.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert_eq!(
        v["digest"],
        "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    let d: B256 = v["digest"].as_str().unwrap().parse().unwrap();
    assert_eq!(sig(&v).recover_address_from_prehash(&d).unwrap(), address);
    std::fs::remove_file(&mail).unwrap();

    // sign tx: legacy (EIP-155) and EIP-1559; the raw bytes decode and recover the account.
    for extra in [
        &["--legacy", "--gas-price", "20000000000"][..],
        &["--max-fee", "30000000000", "--max-priority-fee", "1000000000"][..],
    ] {
        let mut args = vec![
            "sign",
            "tx",
            "--chain-id",
            "1",
            "--nonce",
            "9",
            "--to",
            "0x3535353535353535353535353535353535353535",
            "--value",
            "1000000000000000000",
        ];
        args.extend_from_slice(extra);
        let (ok, v, err) = tandem(&env, &args).await;
        assert!(ok, "{err}");
        let raw = hex::decode(&v["raw"].as_str().unwrap()[2..]).unwrap();
        let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
        assert_eq!(tx.recover_signer().unwrap(), address);
        assert_eq!(tx.chain_id(), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_a_failure_status() {
    let env = env().await;
    let (ok, v, _) = tandem(&env, &["sign", "hash", "0x1234"]).await;
    assert!(!ok);
    // With no account yet, the wallet says so before the hash is even used.
    assert!(v["error"].as_str().unwrap().contains("32 bytes") || v["error"].as_str().unwrap().contains("no accounts"));
    let (ok, _, err) = tandem(&env, &["account", "create"]).await;
    assert!(ok, "{err}");
    let (ok, v, _) = tandem(&env, &["sign", "hash", "0x1234"]).await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("32 bytes"), "{v}");
    let (ok, v, _) = tandem(&env, &["sign", "hash", "--account", "nobody", &B256::ZERO.to_string()]).await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("no account matches"), "{v}");
    let (ok, v, _) = tandem(
        &env,
        &[
            "sign",
            "tx",
            "--chain-id",
            "1",
            "--nonce",
            "0",
            "--to",
            "0x3535353535353535353535353535353535353535",
        ],
    )
    .await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("--max-fee"), "{v}");
    let (ok, v, _) = tandem(
        &env,
        &[
            "sign",
            "tx",
            "--chain-id",
            "1",
            "--nonce",
            "0",
            "--to",
            "0xnot",
            "--legacy",
            "--gas-price",
            "1",
        ],
    )
    .await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("not an address"), "{v}");

    // A server that is down is reported as such.
    let down = Tandem {
        server: "http://127.0.0.1:1".into(),
        ..env.cli()
    };
    let (ok, v, _) = down.run(&["account", "create"]).await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("cannot reach the server"), "{v}");
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/nitro/");

async fn verify(args: &[&str]) -> (bool, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["--json", "attestation", "verify"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// Writes an `enclave-pcr.json` with `doc`'s PCR0–2 (what its build would publish).
fn pcr_file_of(doc: &[u8]) -> tempfile::NamedTempFile {
    let pcrs = tandem_core::attestation::SignedDocument::parse(doc)
        .unwrap()
        .document
        .pcrs;
    let json = serde_json::json!({
        "PCR0": hex::encode(&pcrs[&0]),
        "PCR1": hex::encode(&pcrs[&1]),
        "PCR2": hex::encode(&pcrs[&2]),
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), json.to_string()).unwrap();
    file
}

#[tokio::test]
async fn attestation_verify_on_real_documents() {
    let qos = format!("{FIXTURES}qos-2022-07-06.cose");
    let at = (1657117102484u64 / 1000 + 60).to_string();
    let pcr0 = "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6";
    let image = pcr_file_of(&std::fs::read(&qos).unwrap());
    let (ok, v) = verify(&["--doc", &qos, "--at", &at, "--pcr-file", image.path().to_str().unwrap()]).await;
    assert!(ok, "{v}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["imageChecked"], true);
    assert_eq!(v["pcrs"]["pcr0"], pcr0);

    // Without an expected image every other check is made, and the output says so.
    let (ok, v) = verify(&["--doc", &qos, "--at", &at]).await;
    assert!(ok, "{v}");
    assert_eq!(v["imageChecked"], false);

    // Another image: refused, naming the PCR.
    let evervault = pcr_file_of(&std::fs::read(format!("{FIXTURES}evervault-2022-10-13.cose")).unwrap());
    let (ok, v) = verify(&[
        "--doc",
        &qos,
        "--at",
        &at,
        "--pcr-file",
        evervault.path().to_str().unwrap(),
    ])
    .await;
    assert!(!ok);
    assert_eq!(v["valid"], false);
    assert!(v["reason"].as_str().unwrap().contains("PCR0"), "{v}");
    // PCR0 alone does not name an image.
    let (ok, _) = verify(&["--doc", &qos, "--at", &at, "--pcr0", pcr0]).await;
    assert!(!ok);

    let (ok, v) = verify(&["--doc", &qos]).await; // today: far outside the document's freshness
    assert!(!ok);
    assert!(v["reason"].as_str().unwrap().contains("old"), "{v}");

    let debug = format!("{FIXTURES}evervault-debug-2022-10-12.cose");
    let at_debug = (1665582606081u64 / 1000 + 60).to_string();
    let (ok, v) = verify(&["--doc", &debug, "--at", &at_debug]).await;
    assert!(!ok);
    assert!(v["reason"].as_str().unwrap().contains("debug"), "{v}");
    let (ok, v) = verify(&["--doc", &debug, "--at", &at_debug, "--allow-debug"]).await;
    assert!(ok, "{v}");

    // A flipped byte in the signature.
    let mut bytes = std::fs::read(&qos).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    let (ok, v) = verify(&["--doc", tmp.path().to_str().unwrap(), "--at", &at]).await;
    assert!(!ok);
    assert!(v["reason"].as_str().unwrap().contains("signature"), "{v}");
}

/// `tandem … ARGS` without the test's `--pcr-file` (so only the wallet's pins apply).
async fn tandem_unpinned(env: &Env, args: &[&str]) -> (bool, Value, String) {
    env.cli().unpinned().run(args).await
}

/// Pinning takes the image from a file given out of band; `fetch --save-pcrs FILE` pins it
/// only when the live enclave runs it; only `--danger-pin-served-image` pins what the
/// server presents, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_fetch_pins_only_an_image_given_out_of_band() {
    let env = env().await;
    // Nothing pinned: refused, with the way out.
    let (ok, v, _) = tandem_unpinned(&env, &["attestation", "fetch"]).await;
    assert!(!ok);
    assert!(
        v["error"].as_str().unwrap().contains("no enclave image is pinned"),
        "{v}"
    );

    // Another image's file: the live enclave does not match, nothing is pinned.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        other.path(),
        tandem_enclave::attester::pcr_file_json(&tandem_enclave::attester::image_pcrs("other").unwrap()),
    )
    .unwrap();
    let (ok, v, _) = tandem_unpinned(
        &env,
        &["attestation", "fetch", "--save-pcrs", other.path().to_str().unwrap()],
    )
    .await;
    assert!(!ok);
    assert!(v["error"].as_str().unwrap().contains("PCR0"), "{v}");
    assert!(!env.wallet.path().join("config.json").exists());

    // The enclave's own file: verified against the live enclave, then pinned.
    let (ok, v, err) = tandem_unpinned(&env, &["attestation", "fetch", "--save-pcrs", &env.pcr_file]).await;
    assert!(ok, "{v} {err}");
    assert_eq!(v["mock"], true);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.wallet.path().join("config.json")).unwrap()).unwrap();
    assert!(
        config["acceptedImages"][0]["PCR0"]
            .as_str()
            .unwrap()
            .starts_with(&hex::encode("TANDEM-DEV-PCR0"))
    );
    let (ok, _, err) = tandem_unpinned(&env, &["account", "create"]).await;
    assert!(ok, "the pinned image is trusted: {err}");

    // Trust on first use only when asked for by its dangerous name, and it says what it did.
    std::fs::remove_file(env.wallet.path().join("config.json")).unwrap();
    let (ok, v, err) = tandem_unpinned(&env, &["attestation", "fetch", "--danger-pin-served-image"]).await;
    assert!(ok, "{v} {err}");
    assert!(err.contains("DANGER"), "{err}");
    assert!(v["pinned"]["PCR0"].as_str().is_some(), "{v}");

    // Without --mock-root the mock enclave is not trusted at all.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "--server",
            &env.url,
            "--wallet",
            env.wallet.path().to_str().unwrap(),
            "--json",
            "attestation",
            "fetch",
        ])
        .env_remove("TANDEM_MOCK_ROOT")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("untrusted root"));
}
