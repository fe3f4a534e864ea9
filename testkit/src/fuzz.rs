//! The fuzz targets' bodies: every decoder that takes bytes from the other party or from
//! the host, each behind one function that must never panic (or abort) on any input.
//!
//! `fuzz/fuzz_targets/*.rs` are one-line `libfuzzer` wrappers around these (run by
//! `scripts/fuzz.sh` on the nightly toolchain); `testkit/tests/fuzz_corpus.rs` replays the
//! corpora kept in `fuzz/corpus/` through the same functions as ordinary tests. A panic
//! inside `dkls23` on such input counts as a crash: the machines validate before the engine
//! sees a message.

use std::sync::{Arc, OnceLock};

use tandem_core::AccountId;
use tandem_core::auth::FirstMessage;
use tandem_core::channel::{ChannelKeypair, ClientChannel, EnclaveChannel};
use tandem_core::engine::{
    DeviceDkg, DeviceRecover, DeviceRefresh, DeviceSign, EnclaveDkg, EnclaveRecover, EnclaveRefresh, EnclaveSign,
    KeyShare, RefreshKind,
};
use tandem_core::flow::{DeviceFlow, EnclaveFlow, Next, Step};
use tandem_core::message::{Envelope, Expect};
use tandem_core::wire;

/// A target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: &[Target] = &[
    ("envelope", envelope),
    ("device_answers", device_answers),
    ("enclave_steps", enclave_steps),
    ("sealed", sealed),
    ("wire_json", wire_json),
    ("attestation", attestation),
    ("backup", backup),
    ("blob_records", blob_records),
    ("parent_links", parent_links),
];

fn pair() -> &'static (Arc<KeyShare>, Arc<KeyShare>, AccountId) {
    static P: OnceLock<(Arc<KeyShare>, Arc<KeyShare>, AccountId)> = OnceLock::new();
    P.get_or_init(crate::shares::first)
}

fn keys() -> &'static ChannelKeypair {
    static K: OnceLock<ChannelKeypair> = OnceLock::new();
    K.get_or_init(ChannelKeypair::generate)
}

/// Envelopes and the first messages the enclave parses before any session exists.
pub fn envelope(data: &[u8]) {
    if let Ok(header) = Envelope::peek(data) {
        let _ = Envelope::open::<Vec<u8>>(data, header);
        let _ = Envelope::open::<(u64, Vec<u8>)>(
            data,
            Expect {
                step: header.step.wrapping_add(1),
                ..header
            },
        );
    }
    let _ = FirstMessage::decode(data);
    let _ = EnclaveSign::parse_start(data);
    let _ = EnclaveRefresh::parse_start(data);
    if let Ok(start) = EnclaveRecover::parse_start(data) {
        let _ = EnclaveRecover::start(&start, &pair().1);
    }
    let _ = EnclaveDkg::start(data);
}

/// Fresh device machines fed `data` as the enclave's answer: what a host or a rogue
/// enclave can send the device.
pub fn device_answers(data: &[u8]) {
    let (device, _, _) = pair();
    let _ = DeviceSign::start(device.clone(), [1; 32], 0).map(|(mut m, _)| m.receive(data));
    let _ = DeviceRefresh::start(device.clone(), RefreshKind::Fast, 0).map(|(mut m, _)| m.receive(data));
    let _ = DeviceRecover::start(device, 0).map(|(mut m, _)| m.receive(data));
    if let Ok((mut m, _)) = DeviceDkg::start() {
        let _ = m.receive(data);
    }
}

/// Enclave machines after a genuine start, fed `data` as the device's next message: what a
/// malicious device can send the enclave.
pub fn enclave_steps(data: &[u8]) {
    let (device, enclave, _) = pair();
    if let Ok((mut d, m0)) = DeviceSign::start(device.clone(), [2; 32], 0)
        && let Ok(start) = EnclaveSign::parse_start(&m0)
        && let Ok((mut e, Step::Continue(r0))) = EnclaveSign::start(start, enclave.clone(), 1)
    {
        let _ = e.step(data);
        // The same, one step later in a genuine run: the device's real message with the
        // fuzz input spliced over part of it (reaches the engine's phase 2 and 3 checks).
        if let Ok(start) = EnclaveSign::parse_start(&m0)
            && let Ok((mut e2, Step::Continue(_))) = EnclaveSign::start(start, enclave.clone(), 1)
            && let Ok(Next::Send(m1)) = d.receive(&r0)
        {
            let mut spliced = m1;
            let at = data.first().map_or(0, |b| usize::from(*b) * spliced.len() / 256);
            let tail = &data[data.len().min(1)..];
            let end = (at + tail.len()).min(spliced.len());
            spliced[at..end].copy_from_slice(&tail[..end - at]);
            let _ = e2.step(&spliced);
        }
    }
    if let Ok((_, m0)) = DeviceRefresh::start(device.clone(), RefreshKind::Complete, 0)
        && let Ok(start) = EnclaveRefresh::parse_start(&m0)
        && let Ok((mut e, _)) = EnclaveRefresh::start(start, enclave.clone(), 1)
    {
        let _ = e.step(data);
    }
    if let Ok((_, m0)) = DeviceDkg::start()
        && let Ok((mut e, _)) = EnclaveDkg::start(&m0)
    {
        let _ = e.step(data);
    }
}

/// Sealed payloads: the enclave opening a first message and a later step, the device
/// opening an answer.
pub fn sealed(data: &[u8]) {
    for flow in tandem_core::Flow::ALL {
        if let Ok((mut channel, _)) = EnclaveChannel::open_first(keys(), flow, data) {
            let _ = channel.open(1, data);
        }
    }
    if let Ok((mut client, _)) = ClientChannel::new(&keys().public_key(), tandem_core::Flow::Sign) {
        let _ = client.open(0, data);
        let _ = client.open(1, data);
    }
}

/// The JSON bodies of the wire API, both directions.
pub fn wire_json(data: &[u8]) {
    let _ = serde_json::from_slice::<wire::CreateAccountStartRequest>(data);
    let _ = serde_json::from_slice::<wire::AccountStartRequest>(data);
    let _ = serde_json::from_slice::<wire::StepRequest>(data);
    let _ = serde_json::from_slice::<wire::AttestationRequest>(data);
    let _ = serde_json::from_slice::<wire::GetPublicKeyRequest>(data);
    let _ = serde_json::from_slice::<wire::FlowResponse>(data);
    let _ = serde_json::from_slice::<wire::AttestationResponse>(data);
    let _ = serde_json::from_slice::<wire::AccountInfo>(data);
    let _ = serde_json::from_slice::<wire::HealthResponse>(data);
    let _ = serde_json::from_slice::<wire::ErrorResponse>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tandem_core::SessionId::parse(text);
        let _ = AccountId::parse(text);
    }
}

/// Attestation documents, through the whole verifier (every check but the image's).
pub fn attestation(data: &[u8]) {
    let _ = tandem_core::attestation::SignedDocument::parse(data);
    let policy = tandem_sdk::attestation::AttestationPolicy::nitro().danger_accept_any_image();
    let _ = policy.verify(data, 1_700_000_000, Some(b"nonce"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tandem_sdk::attestation::ImageMeasurements::from_json(text);
    }
}

/// Backup files: the header, the decryption (cheap parameters only: a file that asks for
/// more is refused before any work, which is also exercised), and decrypted contents.
pub fn backup(data: &[u8]) {
    use tandem_sdk::backup::{BackupContents, BackupHeader, DecryptOptions, KdfLimits, Passphrase, decrypt_with};
    if let Ok(header) = BackupHeader::parse(data) {
        let cheap = header.kdf.m_cost_kib <= 64 && header.kdf.t_cost <= 2;
        let limits = if cheap {
            KdfLimits::danger_allow_weak()
        } else {
            KdfLimits::STANDARD
        };
        let opts = DecryptOptions::new().limits(limits);
        if cheap || KdfLimits::STANDARD.check(header.kdf).is_err() {
            let _ = decrypt_with(data, &Passphrase::new("correct horse battery".into()), &opts);
        }
    }
    let _ = BackupContents::from_plaintext(data);
}

/// What the host serves the enclave from storage: sealed blobs (opened under a known key
/// at any claimed generation), decrypted records, and key rings.
pub fn blob_records(data: &[u8]) {
    use tandem_enclave::keystore::{Sealer, StoredAccount, ring};
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    let sealer = SEALER.get_or_init(|| Sealer::new(zeroize::Zeroizing::new([7; 32])));
    let id = AccountId::parse("0123456789abcdef0123456789abcdef").unwrap_or_else(|_| unreachable!());
    let generation = data.first().map_or(0, |b| u64::from(*b));
    let _ = sealer.open(&id, generation, data);
    let _ = StoredAccount::decode(id, generation, data);
    let _ = ring::check_format(data);
}

/// What crosses the parent↔enclave links (`tandem_core::parent`): blob-service frames both
/// ways (the enclave reads the host's answers), the control API's JSON (the host pushes
/// credentials and time into the enclave), and the enclave's log stream (read by the parent).
pub fn parent_links(data: &[u8]) {
    use tandem_core::parent::blobs::{BlobName, BlobRequest, BlobResponse, body_len, decode_body};
    use tandem_core::parent::control::{ParentTime, PushedCredentials};
    use tandem_core::parent::logs::{ShippedLine, StreamHello};
    if let Some(header) = data.get(..4).and_then(|h| <[u8; 4]>::try_from(h).ok())
        && let Ok(len) = body_len(header)
        && let Some(body) = data.get(4..4 + len)
    {
        let _ = decode_body::<BlobResponse>(body);
    }
    let _ = decode_body::<BlobResponse>(data);
    let _ = decode_body::<BlobRequest>(data);
    let _ = serde_json::from_slice::<PushedCredentials>(data);
    let _ = serde_json::from_slice::<ParentTime>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = BlobName::parse(text);
        let _ = BlobName::from_file_name(text);
        for line in text.lines() {
            let _ = StreamHello::parse(line);
            if let Some(shipped) = ShippedLine::parse(line) {
                let _ = shipped.request_id();
            }
        }
    }
}

/// Genuine inputs for each target (the fuzzer's starting corpus; also replayed as tests):
/// real first messages, answers, sealed payloads, wire bodies, a real Nitro document, a
/// backup file, a sealed blob, a record and a key ring.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use tandem_core::auth::DeviceAuthKey;
    let (device, enclave, account) = pair().clone();
    let mut out = Vec::new();
    // First messages and answers of every flow, in the clear.
    let (sign, m0) = DeviceSign::start(device.clone(), [3; 32], 0).unwrap();
    out.push(("envelope", m0.clone()));
    let start = EnclaveSign::parse_start(&m0).unwrap();
    if let Ok((_, Step::Continue(r0))) = EnclaveSign::start(start, enclave.clone(), 1) {
        out.push(("device_answers", r0.clone()));
        let mut sign = sign;
        if let Ok(Next::Send(m1)) = sign.receive(&r0) {
            out.push(("enclave_steps", m1));
        }
    }
    let (_, m0) = DeviceRefresh::start(device.clone(), RefreshKind::Fast, 0).unwrap();
    out.push(("envelope", m0));
    let (_, m0) = DeviceRecover::start(&device, 0).unwrap();
    out.push(("envelope", m0));
    let (_, m0) = DeviceDkg::start().unwrap();
    if let Ok((_, Step::Continue(r0))) = EnclaveDkg::start(&m0) {
        out.push(("device_answers", r0));
    }
    out.push(("envelope", m0.clone()));
    // A sealed first message and a sealed answer.
    let auth = DeviceAuthKey::generate().unwrap();
    let (mut client, binding) = ClientChannel::new(&keys().public_key(), tandem_core::Flow::Dkg).unwrap();
    let first = FirstMessage {
        protocol: m0.clone(),
        auth_key: Some(auth.public_key()),
        authorization: auth.authorize(None, tandem_core::Flow::Dkg, &binding, &m0, 1),
        label: Some("seed".into()),
        client_node_id: None,
    };
    let plain = first.encode().unwrap();
    out.push(("envelope", plain.to_vec()));
    let wire_first = client.seal_first(&plain).unwrap();
    out.push(("sealed", wire_first.clone()));
    if let Ok((enclave_channel, _)) = EnclaveChannel::open_first(keys(), tandem_core::Flow::Dkg, &wire_first) {
        out.push(("sealed", enclave_channel.seal(0, b"answer").unwrap()));
    }
    // Wire bodies.
    for body in [
        serde_json::json!({"clientMessage": "AAEC"}),
        serde_json::json!({"accountId": account.to_string(), "clientMessage": "AAEC", "requestId": "r"}),
        serde_json::json!({"sessionId": "ab".repeat(32), "clientMessage": "AAEC"}),
        serde_json::json!({"nonce": "AAEC"}),
        serde_json::json!({"sessionId": "ab".repeat(32), "status": "DONE", "serverMessage": "AAEC"}),
        serde_json::json!({"error": {"code": "ACCOUNT_LOCKED", "message": "m"}}),
        serde_json::json!({"status": "ok", "timestamp": 1, "mockMode": true, "version": "0", "stages": [{"name": "ready", "state": "done"}]}),
    ] {
        out.push(("wire_json", body.to_string().into_bytes()));
    }
    // A real Nitro document and a measurements file.
    out.push((
        "attestation",
        include_bytes!("../../fixtures/nitro/qos-2022-07-06.cose").to_vec(),
    ));
    out.push((
        "attestation",
        serde_json::json!({"PCR0": "11".repeat(48), "PCR1": "22".repeat(48), "PCR2": "33".repeat(48)})
            .to_string()
            .into_bytes(),
    ));
    // A backup (cheap parameters, so the fuzzer's mutations of it decrypt quickly).
    {
        use tandem_sdk::backup::{BackupContents, KdfLimits, KdfParams, Passphrase, encrypt_with};
        let json = serde_json::json!({
            "version": 3, "accountId": account.to_string(), "address": device.address().to_checksum(),
            "publicKey": device.public_key().to_hex(),
            "deviceShare": hex::encode(&device.to_bytes().unwrap()[..]),
            "authKey": hex::encode([5u8; 32]), "generation": 1,
        });
        if let Ok(account) = tandem_sdk::Account::from_json(&json.to_string()) {
            let contents = BackupContents::new(account);
            let cheap = KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 1,
            };
            if let Ok(file) = encrypt_with(
                &contents,
                &Passphrase::new("correct horse battery".into()),
                cheap,
                &KdfLimits::danger_allow_weak(),
            ) {
                out.push(("backup", file));
            }
        }
    }
    // A sealed blob, its record and a key ring.
    {
        use tandem_enclave::keystore::{Sealer, StoredAccount};
        let record = StoredAccount {
            id: account,
            generation: 0,
            label: Some("seed".into()),
            client_node_id: None,
            created_at: 1,
            auth_key: Some([9; 32]),
            current: enclave,
            device_ot: Some([1; 32]),
            pending: None,
            locked: None,
        };
        if let Ok(plain) = record.encode_for_seeds() {
            out.push(("blob_records", plain.to_vec()));
            let sealer = Sealer::new(zeroize::Zeroizing::new([7; 32]));
            if let Ok(blob) = sealer.seal(&account, 3, &plain) {
                out.push(("blob_records", blob));
            }
        }
        out.push((
            "blob_records",
            br#"{"format":2,"wrapper":"local","active":"00","keys":[{"id":"00","wrapped":"AAEC","createdAt":1}],"blobsSealedWithGeneration":true,"mac":"00"}"#.to_vec(),
        ));
    }
    // The parent links: a blob answer frame, a request body, the control JSON, log lines.
    {
        use tandem_core::parent::blobs::{BlobRequest, BlobResponse, ExpectVersion, encode_frame};
        use tandem_core::parent::logs::StreamHello;
        if let Ok(frame) = encode_frame(&BlobResponse::Blob(Some((4, vec![1, 2, 3])))) {
            out.push(("parent_links", frame));
        }
        if let Ok(frame) = encode_frame(&BlobRequest::Put {
            name: account.to_string(),
            blob: vec![5; 8],
            expect: ExpectVersion::Version(3),
        }) {
            out.push(("parent_links", frame[4..].to_vec()));
        }
        out.push((
            "parent_links",
            br#"{"accessKeyId":"AKIA","secretAccessKey":"s","sessionToken":"t","expiresAt":1}"#.to_vec(),
        ));
        out.push(("parent_links", br#"{"unixMillis":1700000000000}"#.to_vec()));
        let mut logs = StreamHello::current().line();
        logs.extend_from_slice(br#"{"level":"INFO","fields":{"message":"m"},"request_id":"r"}"#);
        out.push(("parent_links", logs));
    }
    out
}
