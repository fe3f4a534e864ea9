//! Opening KMS `CiphertextForRecipient`: the answer to `Decrypt`/`GenerateDataKey` with a
//! `Recipient` attestation.
//!
//! KMS encrypts the plaintext to the RSA public key the enclave put in its attestation
//! document and returns it as CMS `EnvelopedData` (RFC 5652), BER-encoded with indefinite
//! lengths and the encrypted content possibly split into a constructed OCTET STRING:
//!
//! ```text
//! ContentInfo { id-envelopedData, [0] EnvelopedData {
//!   version, recipientInfos { KeyTransRecipientInfo {
//!       rid, keyEncryptionAlgorithm = id-RSAES-OAEP (SHA-256, MGF1-SHA-256), encryptedKey } },
//!   encryptedContentInfo { id-data, aes256-CBC (IV), [0] encryptedContent } } }
//! ```
//!
//! `der` 0.8 with its `ber` feature reads indefinite lengths and reassembles constructed
//! OCTET STRINGs, so `cms` types decode the message directly; no hand-written BER
//! normalizer is needed. Everything that can be checked is: the content type, exactly one
//! key-transport recipient, OAEP with SHA-256 for both the hash and MGF1 (any other
//! parameters are refused, not defaulted), AES-256-CBC with a 16-byte IV, PKCS#7 padding.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use cms::enveloped_data::{EnvelopedData, RecipientInfo};
use cms::spki;
use der::asn1::ObjectIdentifier;
use der::{Decode, EncodingRules, Reader, Sequence, SliceReader};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::{Oaep, RsaPrivateKey};
use sha2::Sha256;
use zeroize::Zeroizing;

/// `id-envelopedData` (RFC 5652 §6).
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
/// `id-data` (RFC 5652 §4).
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// `id-RSAES-OAEP` (RFC 4055 / RFC 8017).
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// `id-mgf1`.
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// `id-sha256`.
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `id-aes256-CBC`.
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// Largest message accepted: KMS plaintexts are at most 4 KiB, so the envelope is a few KiB.
const MAX_MESSAGE: usize = 64 * 1024;

/// Why a `CiphertextForRecipient` could not be opened. Messages never carry key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecipientError {
    /// Not a BER/DER CMS `ContentInfo` holding `EnvelopedData` (or too large).
    #[error("CiphertextForRecipient does not parse as CMS EnvelopedData: {0}")]
    Parse(String),
    /// Well-formed CMS, but not the profile KMS uses (algorithm, parameters, recipients).
    #[error("CiphertextForRecipient uses an unsupported CMS profile: {0}")]
    Unsupported(&'static str),
    /// RSA-OAEP refused the encrypted key: another recipient's key, or a tampered message.
    #[error("the content key does not decrypt with this recipient key")]
    KeyTransport,
    /// The content does not decrypt (bad padding): tampered ciphertext or IV.
    #[error("the encrypted content does not decrypt")]
    Content,
    /// Generating or encoding the ephemeral RSA key failed.
    #[error("recipient key: {0}")]
    Key(String),
}

/// `ContentInfo` with its content typed as `EnvelopedData`, so the whole message decodes
/// in one BER pass (`cms::content_info::ContentInfo` holds an `Any`, which cannot be
/// re-decoded once it was read with indefinite lengths).
#[derive(Sequence)]
struct EnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: EnvelopedData,
}

/// `RSAES-OAEP-params` (RFC 8017 A.2.1), every field present as KMS sends it.
#[derive(Sequence)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<spki::AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<spki::AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label: Option<spki::AlgorithmIdentifierOwned>,
}

/// Decodes a BER `ContentInfo(EnvelopedData)`.
fn parse(message: &[u8]) -> Result<EnvelopedData, RecipientError> {
    if message.len() > MAX_MESSAGE {
        return Err(RecipientError::Parse(format!("{} bytes is too large", message.len())));
    }
    let err = |e: der::Error| RecipientError::Parse(e.to_string());
    let mut reader = SliceReader::new_with_encoding_rules(message, EncodingRules::Ber).map_err(err)?;
    let info = EnvelopedContentInfo::decode(&mut reader).map_err(err)?;
    reader.finish().map_err(err)?;
    if info.content_type != ID_ENVELOPED_DATA {
        return Err(RecipientError::Unsupported("content type is not envelopedData"));
    }
    Ok(info.content)
}

/// True when `alg` is SHA-256, with absent or NULL parameters.
fn is_sha256(alg: &spki::AlgorithmIdentifierOwned) -> bool {
    alg.oid == ID_SHA256 && alg.parameters.as_ref().is_none_or(|p| p.is_null())
}

/// Checks the key-transport algorithm is RSAES-OAEP with SHA-256 and MGF1-SHA-256.
/// Absent OAEP parameters mean SHA-1 (RFC 8017 defaults), which KMS never uses: refused.
fn check_oaep(alg: &spki::AlgorithmIdentifierOwned) -> Result<(), RecipientError> {
    if alg.oid != ID_RSAES_OAEP {
        return Err(RecipientError::Unsupported("key transport is not RSAES-OAEP"));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or(RecipientError::Unsupported("RSAES-OAEP without parameters (SHA-1)"))?;
    let params: OaepParams = params
        .decode_as()
        .map_err(|_| RecipientError::Unsupported("RSAES-OAEP parameters do not parse"))?;
    if !params.hash.as_ref().is_some_and(is_sha256) {
        return Err(RecipientError::Unsupported("RSAES-OAEP hash is not SHA-256"));
    }
    let mgf = params.mgf.as_ref().ok_or(RecipientError::Unsupported(
        "RSAES-OAEP mask generation is not MGF1-SHA-256",
    ))?;
    let mgf_hash: Option<spki::AlgorithmIdentifierOwned> = mgf.parameters.as_ref().and_then(|p| p.decode_as().ok());
    if mgf.oid != ID_MGF1 || !mgf_hash.as_ref().is_some_and(is_sha256) {
        return Err(RecipientError::Unsupported(
            "RSAES-OAEP mask generation is not MGF1-SHA-256",
        ));
    }
    if params.label.is_some() {
        return Err(RecipientError::Unsupported("RSAES-OAEP with a label"));
    }
    Ok(())
}

/// The parts of a KMS envelope after its profile was checked.
pub struct Envelope {
    encrypted_key: Vec<u8>,
    iv: [u8; 16],
    encrypted_content: Vec<u8>,
}

impl Envelope {
    /// Parses `message` and checks it is the profile KMS uses (see the module docs).
    pub fn parse(message: &[u8]) -> Result<Self, RecipientError> {
        let data = parse(message)?;
        let mut recipients = data.recip_infos.0.iter();
        let ktri = match (recipients.next(), recipients.next()) {
            (Some(RecipientInfo::Ktri(k)), None) => k,
            (Some(_), None) => return Err(RecipientError::Unsupported("recipient is not key transport")),
            _ => return Err(RecipientError::Unsupported("expected exactly one recipient")),
        };
        check_oaep(&ktri.key_enc_alg)?;
        let content = &data.encrypted_content;
        if content.content_type != ID_DATA {
            return Err(RecipientError::Unsupported("encrypted content type is not id-data"));
        }
        if content.content_enc_alg.oid != ID_AES256_CBC {
            return Err(RecipientError::Unsupported("content encryption is not AES-256-CBC"));
        }
        let iv: der::asn1::OctetString = content
            .content_enc_alg
            .parameters
            .as_ref()
            .ok_or(RecipientError::Unsupported("AES-256-CBC without an IV"))?
            .decode_as()
            .map_err(|_| RecipientError::Unsupported("AES-256-CBC IV is not an OCTET STRING"))?;
        let iv: [u8; 16] = iv
            .as_bytes()
            .try_into()
            .map_err(|_| RecipientError::Unsupported("AES-256-CBC IV is not 16 bytes"))?;
        let encrypted_content = content
            .encrypted_content
            .as_ref()
            .ok_or(RecipientError::Unsupported("no encrypted content (detached)"))?
            .as_bytes()
            .to_vec();
        if encrypted_content.is_empty() || encrypted_content.len() % 16 != 0 {
            return Err(RecipientError::Unsupported("encrypted content is not whole AES blocks"));
        }
        Ok(Envelope {
            encrypted_key: ktri.enc_key.as_bytes().to_vec(),
            iv,
            encrypted_content,
        })
    }

    /// Length of the encrypted content (a multiple of 16).
    pub fn encrypted_content_len(&self) -> usize {
        self.encrypted_content.len()
    }

    /// Decrypts the content key with `key` (RSA-OAEP-SHA-256) and the content with it
    /// (AES-256-CBC, PKCS#7 padding).
    pub fn open(&self, key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, RecipientError> {
        let cek = Zeroizing::new(
            key.decrypt(Oaep::new::<Sha256>(), &self.encrypted_key)
                .map_err(|_| RecipientError::KeyTransport)?,
        );
        let cek: &[u8; 32] = cek
            .as_slice()
            .try_into()
            .map_err(|_| RecipientError::Unsupported("content key is not 32 bytes"))?;
        let mut buf = Zeroizing::new(self.encrypted_content.clone());
        let n = cbc::Decryptor::<aes::Aes256>::new(cek.into(), (&self.iv).into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| RecipientError::Content)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// An RSA-2048 key pair made for one KMS call: its public half goes into the attestation
/// document, its private half opens the answer, then it is dropped.
pub struct RecipientKey {
    key: RsaPrivateKey,
}

impl RecipientKey {
    /// Generates a fresh RSA-2048 key from the OS RNG.
    pub fn generate() -> Result<Self, RecipientError> {
        let key = RsaPrivateKey::new(&mut rand_core_06::OsRng, 2048).map_err(|e| RecipientError::Key(e.to_string()))?;
        Ok(RecipientKey { key })
    }

    /// Loads a PKCS#8 DER private key (tests, fixtures).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, RecipientError> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(|key| RecipientKey { key })
            .map_err(|e| RecipientError::Key(e.to_string()))
    }

    /// The public key as DER `SubjectPublicKeyInfo`: what the attestation document's
    /// `public_key` must hold for KMS to encrypt to it.
    pub fn public_key_der(&self) -> Result<Vec<u8>, RecipientError> {
        self.key
            .to_public_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| RecipientError::Key(e.to_string()))
    }

    /// Opens a `CiphertextForRecipient` addressed to this key.
    pub fn open(&self, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, RecipientError> {
        Envelope::parse(message)?.open(&self.key)
    }
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientKey(RSA-2048, private half redacted)")
    }
}
