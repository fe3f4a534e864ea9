//! The `kms` key wrapper: data keys protected by AWS KMS, unwrapped only by an attested
//! enclave (DESIGN.md §5).
//!
//! ```text
//!  first boot:  GenerateDataKey(KeyId, AES_256, Recipient{doc(pk), RSAES_OAEP_SHA_256})
//!                 → CiphertextBlob (stored in the key ring) + CiphertextForRecipient
//!  every boot:  Decrypt(CiphertextBlob, KeyId, Recipient{doc(pk), RSAES_OAEP_SHA_256})
//!                 → CiphertextForRecipient ── CMS, RSA-OAEP, AES-CBC ──▶ data key
//! ```
//!
//! `pk` is an RSA-2048 key made for that one call ([`recipient::RecipientKey`]), placed in
//! an attestation document from the [`Attester`]; KMS checks the document's signature and
//! PCRs against the key policy (`kms:RecipientAttestation:PCR0`/`ImageSha384`) and then
//! encrypts the plaintext to `pk` only, so neither the parent nor the network ever sees
//! it. The data key stays in memory (zeroized on drop): KMS is never called per request.
//!
//! Transport ([`http`]): TLS inside the enclave over the parent's vsock-proxy; credentials
//! ([`credentials`]): pushed by the parent. A local emulator cannot attest, so
//! [`RecipientMode::DangerNoRecipient`] exists for tests only; it takes the key from the
//! `Plaintext` field and is refused outside mock mode by the server configuration.

pub mod credentials;
pub mod http;
pub mod recipient;

use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use zeroize::Zeroizing;

use crate::attester::Attester;
use crate::keystore::{DataKey, KeyWrapper, WrapError};
use credentials::CredentialSlot;
use http::{KmsConnector, KmsTransport};
use recipient::{RecipientError, RecipientKey};

/// Where and how to reach KMS.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// Endpoint override (tests: a local emulator); `None` = the regional KMS endpoint.
    pub endpoint: Option<String>,
    /// The KMS key (id, ARN or alias) that wraps the data keys.
    pub key_id: String,
    /// How to reach the endpoint.
    pub transport: KmsTransport,
}

/// Builds the KMS client with our connector and the parent-pushed credentials.
pub fn client(config: &KmsConfig, credentials: CredentialSlot) -> Result<aws_sdk_kms::Client, WrapError> {
    let connector = KmsConnector::new(config.transport.clone()).map_err(WrapError::Kms)?;
    Ok(client_with(config, credentials, connector))
}

/// Builds the KMS client over any HTTP client (tests capture requests with this).
pub fn client_with(
    config: &KmsConfig,
    credentials: CredentialSlot,
    http: impl aws_smithy_runtime_api::client::http::HttpClient + 'static,
) -> aws_sdk_kms::Client {
    let mut builder = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .http_client(http);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_kms::Client::from_conf(builder.build())
}

/// Whether KMS must encrypt its answers to an attested enclave key.
pub enum RecipientMode {
    /// Production: every answer comes as `CiphertextForRecipient` to a one-time RSA key
    /// bound into an attestation document by this attester.
    Attested(Arc<dyn Attester>),
    /// Tests against an emulator that cannot attest: the data key travels in `Plaintext`.
    /// Never used in Nitro mode.
    DangerNoRecipient,
}

/// The `kms` [`KeyWrapper`].
pub struct KmsKeyWrapper {
    client: aws_sdk_kms::Client,
    key_id: String,
    recipient: RecipientMode,
    make_key: fn() -> Result<RecipientKey, RecipientError>,
}

fn kms_err<E: std::error::Error + 'static>(e: aws_sdk_kms::error::SdkError<E>) -> WrapError {
    use aws_sdk_kms::error::DisplayErrorContext;
    let text = DisplayErrorContext(&e).to_string();
    // Our own provider's messages (see `credentials::CredentialSlot::current`).
    if text.contains("no credentials pushed") || text.contains("credentials expired") {
        WrapError::Credentials(text)
    } else {
        WrapError::Kms(text)
    }
}

impl KmsKeyWrapper {
    /// A wrapper using `key_id` through `client`.
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>, recipient: RecipientMode) -> Self {
        KmsKeyWrapper {
            client,
            key_id: key_id.into(),
            recipient,
            make_key: RecipientKey::generate,
        }
    }

    /// The `Recipient` for one call: a fresh RSA key and an attestation document binding
    /// its public half. `None` in [`RecipientMode::DangerNoRecipient`].
    async fn recipient(&self) -> Result<Option<(RecipientKey, RecipientInfo)>, WrapError> {
        let RecipientMode::Attested(attester) = &self.recipient else {
            return Ok(None);
        };
        let attester = attester.clone();
        let make_key = self.make_key;
        // RSA key generation takes tens of milliseconds: off the async runtime.
        let (key, document) = tokio::task::spawn_blocking(move || -> Result<_, WrapError> {
            let key = make_key()?;
            let public = key.public_key_der()?;
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut nonce).map_err(|_| WrapError::Rng)?;
            let document = attester
                .attest(&public, &nonce)
                .map_err(|e| WrapError::Attestation(e.to_string()))?;
            Ok((key, document))
        })
        .await
        .map_err(|_| WrapError::Attestation("attestation task failed".into()))??;
        let info = RecipientInfo::builder()
            .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
            .attestation_document(Blob::new(document))
            .build();
        Ok(Some((key, info)))
    }

    /// Refuses an answer about another KMS key than the configured one (when the
    /// configuration names a key ARN, which is what KMS echoes).
    fn check_key(&self, answered: Option<&str>) -> Result<(), WrapError> {
        if self.key_id.starts_with("arn:") && answered != Some(self.key_id.as_str()) {
            return Err(WrapError::Kms(format!(
                "KMS answered for key {answered:?}, expected {}",
                self.key_id
            )));
        }
        Ok(())
    }

    /// The data key from an answer: opened from `CiphertextForRecipient` with our one-time
    /// key, or (no recipient) taken from `Plaintext`.
    fn data_key(
        recipient: Option<RecipientKey>,
        for_recipient: Option<&Blob>,
        plaintext: Option<&Blob>,
    ) -> Result<DataKey, WrapError> {
        let plain = match recipient {
            Some(key) => {
                let envelope =
                    for_recipient.ok_or_else(|| WrapError::Kms("answer lacks CiphertextForRecipient".into()))?;
                key.open(envelope.as_ref())?
            }
            None => Zeroizing::new(
                plaintext
                    .ok_or_else(|| WrapError::Kms("answer lacks Plaintext".into()))?
                    .as_ref()
                    .to_vec(),
            ),
        };
        DataKey::from_slice(&plain).map_err(|_| WrapError::Unwrap("KMS plaintext is not a 32-byte key".into()))
    }
}

#[async_trait::async_trait]
impl KeyWrapper for KmsKeyWrapper {
    fn kind(&self) -> &'static str {
        "kms"
    }

    async fn generate(&self) -> Result<(DataKey, Vec<u8>), WrapError> {
        let recipient = self.recipient().await?;
        let mut request = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256);
        let key = match recipient {
            Some((key, info)) => {
                request = request.recipient(info);
                Some(key)
            }
            None => None,
        };
        let out = request.send().await.map_err(kms_err)?;
        self.check_key(out.key_id())?;
        let wrapped = out
            .ciphertext_blob()
            .ok_or_else(|| WrapError::Kms("answer lacks CiphertextBlob".into()))?
            .as_ref()
            .to_vec();
        let data_key = Self::data_key(key, out.ciphertext_for_recipient(), out.plaintext())?;
        Ok((data_key, wrapped))
    }

    async fn unwrap_key(&self, wrapped: &[u8]) -> Result<DataKey, WrapError> {
        let recipient = self.recipient().await?;
        let mut request = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped.to_vec()));
        let key = match recipient {
            Some((key, info)) => {
                request = request.recipient(info);
                Some(key)
            }
            None => None,
        };
        let out = request.send().await.map_err(kms_err)?;
        self.check_key(out.key_id())?;
        Self::data_key(key, out.ciphertext_for_recipient(), out.plaintext())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use base64::Engine as _;

    use super::*;
    use crate::attester::MockAttester;

    /// Records each request and answers with a canned KMS response.
    #[derive(Debug, Clone)]
    struct Capture {
        seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
        answer: String,
    }

    impl HttpConnector for Capture {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let target = request.headers().get("x-amz-target").unwrap_or_default().to_string();
            let body: serde_json::Value = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
            self.seen.lock().unwrap().push((target, body));
            let response = ::http::Response::builder()
                .status(200)
                .header("content-type", "application/x-amz-json-1.1")
                .body(SdkBody::from(self.answer.clone()))
                .unwrap();
            HttpConnectorFuture::ready(Ok(HttpResponse::try_from(response).unwrap()))
        }
    }

    impl HttpClient for Capture {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/kms/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap()
    }

    type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

    fn wrapper(answer: serde_json::Value) -> (KmsKeyWrapper, Seen, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let attester: Arc<dyn Attester> = Arc::new(MockAttester::load_or_create(dir.path()).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let capture = Capture {
            seen: seen.clone(),
            answer: answer.to_string(),
        };
        let slot = CredentialSlot::new();
        slot.push(credentials::PushedCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: credentials::SecretString::new("secret"),
            session_token: None,
            expires_at: None,
        })
        .unwrap();
        let config = KmsConfig {
            region: "eu-west-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            key_id: KEY_ARN.into(),
            transport: KmsTransport::Direct,
        };
        let client = client_with(&config, slot, capture);
        (
            KmsKeyWrapper::new(client, KEY_ARN, RecipientMode::Attested(attester)),
            seen,
            dir,
        )
    }

    #[tokio::test]
    async fn decrypt_carries_an_attested_recipient_and_opens_the_answer() {
        let answer = serde_json::json!({
            "KeyId": KEY_ARN,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "CiphertextForRecipient": base64::engine::general_purpose::STANDARD
                .encode(fixture("enclaver-ciphertext-for-recipient.ber.b64")),
        });
        let (mut wrapper, seen, _dir) = wrapper(answer);
        // The fixture is addressed to the fixture's RSA key: use it as the "one-time" key
        // so the whole answer path runs (it then holds 12 bytes, not a 32-byte key).
        fn fixture_key() -> Result<RecipientKey, RecipientError> {
            RecipientKey::from_pkcs8_der(&fixture("enclaver-recipient-rsa2048-pkcs8.der.b64"))
        }
        wrapper.make_key = fixture_key;
        let err = wrapper.unwrap_key(b"wrapped-data-key").await.unwrap_err();
        assert!(
            matches!(&err, WrapError::Unwrap(m) if m.contains("not a 32-byte key")),
            "the answer must open to the fixture's 12-byte plaintext: {err:?}"
        );

        let seen = seen.lock().unwrap();
        let (target, body) = &seen[0];
        assert_eq!(target, "TrentService.Decrypt");
        assert_eq!(body["KeyId"], KEY_ARN);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(body["CiphertextBlob"].as_str().unwrap())
                .unwrap(),
            b"wrapped-data-key"
        );
        let recipient = &body["Recipient"];
        assert_eq!(recipient["KeyEncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
        let document = base64::engine::general_purpose::STANDARD
            .decode(recipient["AttestationDocument"].as_str().unwrap())
            .unwrap();
        let parsed = tandem_core::attestation::SignedDocument::parse(&document).unwrap();
        let public = parsed
            .document
            .public_key
            .expect("the document binds the recipient key");
        let expected = fixture_key().unwrap().public_key_der().unwrap();
        assert_eq!(
            public, expected,
            "the document's public_key is the one-time RSA key (SPKI DER)"
        );
        assert_eq!(parsed.document.nonce.map(|n| n.len()), Some(32));
    }

    #[tokio::test]
    async fn an_answer_for_another_key_is_refused_cleanly() {
        let answer = serde_json::json!({
            "KeyId": KEY_ARN,
            "CiphertextForRecipient": base64::engine::general_purpose::STANDARD
                .encode(fixture("enclaver-ciphertext-for-recipient.ber.b64")),
        });
        // A real one-time key (not the fixture's): the envelope is not ours.
        let (wrapper, seen, _dir) = wrapper(answer);
        let err = wrapper.unwrap_key(b"x").await.unwrap_err();
        assert!(
            matches!(err, WrapError::Recipient(RecipientError::KeyTransport)),
            "{err:?}"
        );
        // GenerateDataKey carries the same recipient and asks for AES-256.
        let err = wrapper.generate().await.unwrap_err();
        assert!(
            matches!(err, WrapError::Kms(_)),
            "no CiphertextBlob in the answer: {err:?}"
        );
        let seen = seen.lock().unwrap();
        let (target, body) = &seen[1];
        assert_eq!(target, "TrentService.GenerateDataKey");
        assert_eq!(body["KeySpec"], "AES_256");
        assert_eq!(body["Recipient"]["KeyEncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
    }

    #[tokio::test]
    async fn an_answer_about_another_kms_key_is_refused() {
        let answer = serde_json::json!({
            "KeyId": "arn:aws:kms:eu-west-1:999999999999:key/attacker",
            "CiphertextForRecipient": "AA==",
        });
        let (wrapper, _, _dir) = wrapper(answer);
        let err = wrapper.unwrap_key(b"x").await.unwrap_err();
        assert!(matches!(&err, WrapError::Kms(m) if m.contains("expected")), "{err:?}");
    }
}
