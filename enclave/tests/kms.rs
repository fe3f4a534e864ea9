//! KMS: opening real `CiphertextForRecipient` fixtures (BER CMS EnvelopedData), and the
//! KMS key wrapper against a real AWS API emulator (moto's server).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tandem_core::AccountId;
use tandem_enclave::keystore::{
    BlobName, BlobStore, Expect, KeyWrapper, KeystoreError, MemoryBlobStore, WrapError, ring,
};
use tandem_enclave::kms::credentials::{CredentialSlot, PushedCredentials, SecretString};
use tandem_enclave::kms::http::KmsTransport;
use tandem_enclave::kms::recipient::{Envelope, RecipientError, RecipientKey};
use tandem_enclave::kms::{KmsConfig, KmsKeyWrapper, RecipientMode};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/kms")
}

fn raw(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn b64(name: &str) -> Vec<u8> {
    let text = String::from_utf8(raw(name)).unwrap();
    base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap()
}

fn enclaver() -> (Vec<u8>, RecipientKey) {
    let message = b64("enclaver-ciphertext-for-recipient.ber.b64");
    let key = RecipientKey::from_pkcs8_der(&b64("enclaver-recipient-rsa2048-pkcs8.der.b64")).unwrap();
    (message, key)
}

#[test]
fn the_enclaver_fixture_decrypts_to_hello_world() {
    let (message, key) = enclaver();
    // It really is BER with indefinite lengths (0x30 0x80), not DER.
    assert_eq!(&message[..2], &[0x30, 0x80]);
    assert_eq!(&key.open(&message).unwrap()[..], b"Hello, World");
}

#[test]
fn the_rustcrypto_fixtures_parse_including_the_chunked_one() {
    for (i, want) in [(1, 16), (2, 48), (3, 16), (4, 4112)] {
        let message = raw(&format!("rustcrypto-ciphertext-for-recipient-{i}.ber"));
        let envelope = Envelope::parse(&message).unwrap_or_else(|e| panic!("fixture {i}: {e}"));
        assert_eq!(envelope.encrypted_content_len(), want, "fixture {i}");
    }
    // The chunked one really is chunked: its content is split into 1000-byte pieces.
    let chunked = raw("rustcrypto-ciphertext-for-recipient-4.ber");
    assert!(
        chunked.windows(4).any(|w| w == [0x04, 0x82, 0x03, 0xe8]),
        "expected a 1000-byte OCTET STRING chunk"
    );
}

#[test]
fn a_wrong_key_fails_cleanly() {
    let (message, _) = enclaver();
    let other = RecipientKey::generate().unwrap();
    assert_eq!(other.open(&message).unwrap_err(), RecipientError::KeyTransport);
    // The RustCrypto fixtures are addressed to keys we do not hold: parse, then refuse.
    let (_, key) = enclaver();
    for i in 1..=4 {
        let message = raw(&format!("rustcrypto-ciphertext-for-recipient-{i}.ber"));
        assert_eq!(
            key.open(&message).unwrap_err(),
            RecipientError::KeyTransport,
            "fixture {i}"
        );
    }
}

/// Byte ranges of the enclaver fixture (from `openssl asn1parse`): the AES-CBC IV and the
/// one-block encrypted content.
const IV: std::ops::Range<usize> = 415..431;
const CONTENT: std::ops::Range<usize> = 435..451;

#[test]
fn every_tampered_byte_fails_cleanly_except_where_cbc_is_malleable() {
    let (message, key) = enclaver();
    assert_eq!(
        &message[IV.start - 2..IV.start],
        &[0x04, 0x10],
        "IV OCTET STRING header"
    );
    assert_eq!(
        &message[CONTENT.start - 2..CONTENT.start],
        &[0x04, 0x10],
        "content chunk header"
    );
    let mut refused = 0;
    for i in 0..message.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = message.clone();
            bad[i] ^= flip;
            // Never a panic: a typed error, the same text (bytes nothing reads, e.g. the
            // recipient's key identifier), or, only in the IV and content, another text:
            // CMS EnvelopedData with AES-CBC has no integrity of its own. A data key
            // altered that way is caught by the key ring (its id is recomputed from the
            // key), and TLS to KMS runs inside the enclave, so nobody on the path can do it.
            match key.open(&bad) {
                Err(_) => refused += 1,
                Ok(plain) if &plain[..] == b"Hello, World" => {}
                Ok(_) => assert!(
                    IV.contains(&i) || CONTENT.contains(&i),
                    "byte {i} ^ {flip:#x} changed the plaintext outside the IV/content"
                ),
            }
        }
    }
    assert!(refused > message.len(), "most flips must be refused ({refused})");
    // Truncations at every length fail with a parse error.
    for n in 0..message.len() {
        assert!(key.open(&message[..n]).is_err(), "truncation to {n} accepted");
    }
    // Trailing garbage is refused too.
    let mut long = message;
    long.extend_from_slice(&[0, 0]);
    assert!(matches!(key.open(&long), Err(RecipientError::Parse(_))));
}

#[test]
fn garbage_is_a_parse_error() {
    for junk in [&b""[..], b"\x30", b"\x30\x80", b"\x04\x03abc", &[0xff; 64]] {
        assert!(
            matches!(Envelope::parse(junk), Err(RecipientError::Parse(_))),
            "{junk:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// KMS against moto.

/// A `moto_server` on a free loopback port; killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var("TANDEM_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = match Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run {bin:?} ({e}): the KMS tests need moto's server. Run ./scripts/test.sh, which \
                 installs it into .tools/, or set TANDEM_MOTO_SERVER to a moto_server binary."
            ),
        };
        // Drain stderr so the server never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited at start ({status}); run ./scripts/test.sh to install it");
            }
            assert!(Instant::now() < deadline, "moto_server did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials() -> CredentialSlot {
    let slot = CredentialSlot::new();
    slot.push(PushedCredentials {
        access_key_id: "AKIDMOTOTESTING".into(),
        secret_access_key: SecretString::new("moto-secret"),
        session_token: Some(SecretString::new("moto-session")),
        expires_at: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600,
        ),
    })
    .unwrap();
    slot
}

fn config(moto: &Moto, key_id: &str) -> KmsConfig {
    KmsConfig {
        region: "eu-west-1".into(),
        endpoint: Some(moto.url.clone()),
        key_id: key_id.into(),
        transport: KmsTransport::Direct,
    }
}

/// Creates a KMS key through the same client and connector the enclave uses.
async fn create_key(moto: &Moto) -> String {
    let client = tandem_enclave::kms::client(&config(moto, "unused"), credentials()).unwrap();
    let out = client.create_key().description("tandem test").send().await.unwrap();
    out.key_metadata().unwrap().arn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_generate_and_decrypt_against_moto() {
    let moto = Moto::start();
    let arn = create_key(&moto).await;
    assert!(arn.starts_with("arn:aws:kms:eu-west-1:"), "{arn}");

    let client = tandem_enclave::kms::client(&config(&moto, &arn), credentials()).unwrap();
    let wrapper = KmsKeyWrapper::new(client, arn.clone(), RecipientMode::DangerNoRecipient);
    // GenerateDataKey, then Decrypt of what it returned: the same key.
    let (key, wrapped) = wrapper.generate().await.unwrap();
    assert!(!wrapped.is_empty());
    let again = wrapper.unwrap_key(&wrapped).await.unwrap();
    assert_eq!(again.id(), key.id());
    // A tampered wrapped key is refused by KMS, cleanly.
    let mut bad = wrapped.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(wrapper.unwrap_key(&bad).await.is_err());

    // The key ring: first boot generates and stores; the second boot decrypts.
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    let first = ring::open(&store, &wrapper).await.unwrap().sealer;
    let id = AccountId::random().unwrap();
    let blob = first.seal(&id, 1, b"server share").unwrap();
    let ring = store.get(&BlobName::KeyRing).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&ring.blob).contains("\"wrapper\": \"kms\""));
    let second = ring::open(&store, &wrapper).await.unwrap().sealer;
    assert_eq!(second.active_key_id(), first.active_key_id());
    assert_eq!(&second.open(&id, 1, &blob).unwrap()[..], b"server share");

    // Another KMS key cannot decrypt this ring's data key.
    let other_arn = create_key(&moto).await;
    let client = tandem_enclave::kms::client(&config(&moto, &other_arn), credentials()).unwrap();
    let other = KmsKeyWrapper::new(client, other_arn, RecipientMode::DangerNoRecipient);
    let err = ring::open(&store, &other).await.err().unwrap();
    assert!(matches!(err, KeystoreError::Wrap(_)), "{err:?}");
    // A local-wrapper ring is never handed to KMS (and vice versa).
    store.put(&BlobName::KeyRing, &ring.blob, Expect::Any).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_without_credentials_says_so() {
    let moto = Moto::start();
    let client = tandem_enclave::kms::client(&config(&moto, "alias/none"), CredentialSlot::new()).unwrap();
    let wrapper = KmsKeyWrapper::new(client, "alias/none", RecipientMode::DangerNoRecipient);
    let err = wrapper.generate().await.unwrap_err();
    assert!(matches!(err, WrapError::Credentials(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// The enclave binary on KMS (moto): boot waits for the parent's credential push.

async fn health(enclave: &common::Enclave) -> serde_json::Value {
    reqwest::get(format!("{}/v1/health", enclave.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn push(control: &str, expires_at: u64) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{control}/control/v1/credentials"))
        .json(&serde_json::json!({
            "accessKeyId": "AKIDPUSHED",
            "secretAccessKey": "pushed-secret-never-logged",
            "sessionToken": "pushed-session-token",
            "expiresAt": expires_at,
        }))
        .send()
        .await
        .unwrap()
}

async fn wait_ready(enclave: &common::Enclave) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(enclave).await;
        if h["ready"] == true {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 30 s: {h}\n{}",
            enclave.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_boots_on_kms_once_the_parent_pushes_credentials() {
    let moto = Moto::start();
    let arn = create_key(&moto).await;
    let root = tempfile::tempdir().unwrap();
    let control = format!(
        "127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let control_arg = format!("tcp://{control}");
    let args = [
        "--kms-key-id",
        arn.as_str(),
        "--kms-region",
        "eu-west-1",
        "--kms-endpoint",
        moto.url.as_str(),
        "--danger-kms-no-recipient",
        "--control-listen",
        control_arg.as_str(),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let enclave = common::Enclave::start_with(root.path(), &args).await;
    // Serving, attested, but waiting for credentials: not ready, and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = health(&enclave).await;
        if h["stages"][1]["state"] != "pending" || Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (h["status"].as_str(), h["ready"].as_bool()),
        (Some("starting"), Some(false)),
        "{h}"
    );
    assert_eq!(h["stages"][0]["state"], "done", "{h}");
    assert_eq!(h["stages"][1]["name"], "credentials");
    assert_eq!(h["stages"][1]["state"], "running", "{h}");
    let client = enclave.client();
    let err = client.get_public_key(AccountId::random().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("not ready"), "{err}");
    // Expired credentials are refused; good ones accepted.
    let r = push(&control, now + 5).await;
    assert_eq!(r.status(), 400);
    let r = push(&control, now + 3600).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // First boot: GenerateDataKey, ring stored; then ready.
    let h = wait_ready(&enclave).await;
    assert_eq!(h["status"], "ok");
    assert!(
        h["stages"][2]["detail"].as_str().unwrap().starts_with("kms wrapper"),
        "{h}"
    );
    let account = client.create_account(Some("kms")).await.unwrap();
    let digest = alloy_primitives::keccak256(b"sealed under a KMS data key");
    let sig = tandem_sdk::TandemSigner::new(client.clone(), account.clone())
        .sign_digest(digest)
        .await
        .unwrap();
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), account.address());
    drop(enclave);

    // Second boot: Decrypt of the stored data key, after the push.
    let enclave = common::Enclave::start_with(root.path(), &args).await;
    assert_eq!(push(&control, now + 3600).await.status(), 200);
    wait_ready(&enclave).await;
    let client = enclave.client();
    let sig = tandem_sdk::TandemSigner::new(client, account.clone())
        .sign_digest(digest)
        .await
        .unwrap();
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), account.address());
    // The secret never reached the log.
    let log = std::fs::read_to_string(root.path().join("enclave.log")).unwrap();
    assert!(log.contains("credentials received"), "the push is logged");
    assert!(
        !log.contains("pushed-secret") && !log.contains("pushed-session"),
        "a secret was logged"
    );
}

/// The parent's credential push into a booting enclave, across real processes: the
/// `tandem-proxy` binary (`--push-credentials env`, its own AWS_* variables standing in for
/// the instance role) pushes to the enclave binary's control listener, and the enclave's
/// first KMS call (GenerateDataKey at moto) is made with what the parent pushed: without
/// it the KMS client has no credentials at all (`kms_without_credentials_says_so`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_boots_on_kms_with_the_credentials_the_proxy_pushes() {
    let moto = Moto::start();
    let arn = create_key(&moto).await;
    let root = tempfile::tempdir().unwrap();
    let control = format!(
        "tcp://127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let args = [
        "--kms-key-id",
        arn.as_str(),
        "--kms-region",
        "eu-west-1",
        "--kms-endpoint",
        moto.url.as_str(),
        "--danger-kms-no-recipient",
        "--control-listen",
        control.as_str(),
    ];
    let enclave = common::Enclave::start_with(root.path(), &args).await;
    let enclave_addr = enclave.url().replace("http://", "tcp://");
    let proxy_log = root.path().join("proxy.log");
    let proxy = KillOnDrop(
        Command::new(common::proxy_bin())
            .args(["--listen", "127.0.0.1:0", "--self-signed"])
            .arg(root.path().join("tls"))
            .args(["--enclave", &enclave_addr, "--enclave-control", &control])
            .args(["--push-credentials", "env"])
            .env("AWS_ACCESS_KEY_ID", "AKIDFROMTHEPARENT")
            .env("AWS_SECRET_ACCESS_KEY", "parent-secret-never-logged")
            .env_remove("AWS_SESSION_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&proxy_log).unwrap())
            .spawn()
            .unwrap(),
    );

    let h = wait_ready(&enclave).await;
    drop(proxy);
    assert_eq!(h["stages"][1]["state"], "done", "{h}");
    assert_eq!(h["stages"][1]["detail"], "pushed by the parent; no expiry", "{h}");
    assert!(
        h["stages"][2]["detail"].as_str().unwrap().starts_with("kms wrapper"),
        "{h}"
    );
    let client = enclave.client();
    let account = client.create_account(Some("parent-pushed")).await.unwrap();
    let digest = alloy_primitives::keccak256(b"sealed with the parent's credentials");
    let sig = tandem_sdk::TandemSigner::new(client, account.clone())
        .sign_digest(digest)
        .await
        .unwrap();
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), account.address());
    let proxy_text = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(proxy_text.contains("AKIDFROMTHEPARENT"), "{proxy_text}");
    let enclave_text = std::fs::read_to_string(root.path().join("enclave.log")).unwrap();
    for log in [&proxy_text, &enclave_text] {
        assert!(!log.contains("parent-secret-never-logged"), "a secret was logged");
    }
}

/// A child process killed (and reaped) when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
