//! The AWS Nitro attestation document: its data model and its COSE_Sign1/CBOR encoding.
//!
//! Both the enclave (which produces documents: the NSM's in Nitro mode, its own mock ones
//! in mock mode) and the SDK (which verifies them) need the format, so it lives here. The
//! cryptographic checks — the ES384 signature, the certificate chain, freshness, PCRs —
//! are the SDK's (`tandem_sdk::attestation`); this module only parses and encodes,
//! strictly: an unknown algorithm, a missing field or a field of the wrong type is an
//! error, never a default.
//!
//! ```text
//!  COSE_Sign1 = [ protected: bstr {1: -35 (ES384)}, unprotected: {}, payload: bstr, signature: bstr(96) ]
//!  payload    = { module_id: tstr, digest: "SHA384", timestamp: uint (ms), pcrs: {uint => bstr},
//!                 certificate: bstr (DER), cabundle: [bstr], public_key: bstr / null,
//!                 user_data: bstr / null, nonce: bstr / null }
//! ```

use std::collections::BTreeMap;

use ciborium::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};

/// Why a document could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not a COSE_Sign1 structure (truncated, not CBOR, wrong shape).
    #[error("not a COSE_Sign1 document: {0}")]
    Cose(String),
    /// The protected header names an algorithm other than ES384.
    #[error("unsupported signature algorithm (only ES384 is accepted)")]
    Algorithm,
    /// The payload is missing or malformed.
    #[error("malformed attestation payload: {0}")]
    Payload(&'static str),
}

/// The fields of an attestation document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationDocument {
    /// The issuing NSM module (`i-…-enc…`), or a mock id.
    pub module_id: String,
    /// The digest algorithm of the PCRs: always `SHA384`.
    pub digest: String,
    /// When the document was made, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Platform configuration registers by index (48 bytes each for SHA-384).
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The leaf certificate (DER) whose key signed the document.
    pub certificate: Vec<u8>,
    /// The chain from the root (`cabundle[0]`) down to the leaf's issuer (DER).
    pub cabundle: Vec<Vec<u8>>,
    /// A public key the enclave vouches for (Tandem: its X25519 channel key).
    pub public_key: Option<Vec<u8>>,
    /// Application data.
    pub user_data: Option<Vec<u8>>,
    /// The verifier's nonce, echoed.
    pub nonce: Option<Vec<u8>>,
}

/// A parsed COSE_Sign1 document: the fields and what the signature covers.
#[derive(Debug, Clone)]
pub struct SignedDocument {
    /// The parsed payload.
    pub document: AttestationDocument,
    /// The COSE `Sig_structure` ("Signature1", protected, empty external AAD, payload):
    /// the bytes the signature covers.
    pub to_be_signed: Vec<u8>,
    /// The raw signature (`r ‖ s`, 96 bytes for ES384).
    pub signature: Vec<u8>,
}

fn field<'a>(map: &'a [(Value, Value)], name: &'static str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v)
}

fn bytes(map: &[(Value, Value)], name: &'static str) -> Result<Vec<u8>, DocumentError> {
    field(map, name)
        .and_then(Value::as_bytes)
        .cloned()
        .ok_or(DocumentError::Payload(name))
}

fn optional_bytes(map: &[(Value, Value)], name: &'static str) -> Result<Option<Vec<u8>>, DocumentError> {
    match field(map, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.clone())),
        Some(_) => Err(DocumentError::Payload(name)),
    }
}

impl SignedDocument {
    /// Parses an untagged (or tagged) COSE_Sign1 attestation document.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let sign1 = CoseSign1::from_slice(bytes)
            .or_else(|_| <CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(bytes))
            .map_err(|e| DocumentError::Cose(e.to_string()))?;
        if sign1.protected.header.alg != Some(coset::RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384)) {
            return Err(DocumentError::Algorithm);
        }
        let payload = sign1.payload.as_ref().ok_or(DocumentError::Payload("payload"))?;
        let document = AttestationDocument::from_cbor(payload)?;
        let to_be_signed = sign1.tbs_data(b"");
        Ok(SignedDocument {
            document,
            to_be_signed,
            signature: sign1.signature,
        })
    }
}

impl AttestationDocument {
    /// Parses the CBOR payload.
    pub fn from_cbor(payload: &[u8]) -> Result<Self, DocumentError> {
        let value: Value = ciborium::from_reader(payload).map_err(|_| DocumentError::Payload("payload is not CBOR"))?;
        let map = value.as_map().ok_or(DocumentError::Payload("payload is not a map"))?;
        let module_id = field(map, "module_id")
            .and_then(Value::as_text)
            .ok_or(DocumentError::Payload("module_id"))?;
        let digest = field(map, "digest")
            .and_then(Value::as_text)
            .ok_or(DocumentError::Payload("digest"))?;
        let timestamp_ms = field(map, "timestamp")
            .and_then(Value::as_integer)
            .and_then(|i| u64::try_from(i).ok())
            .ok_or(DocumentError::Payload("timestamp"))?;
        let mut pcrs = BTreeMap::new();
        for (k, v) in field(map, "pcrs")
            .and_then(Value::as_map)
            .ok_or(DocumentError::Payload("pcrs"))?
        {
            let index = k
                .as_integer()
                .and_then(|i| u8::try_from(i).ok())
                .ok_or(DocumentError::Payload("pcrs"))?;
            let value = v.as_bytes().ok_or(DocumentError::Payload("pcrs"))?;
            pcrs.insert(index, value.clone());
        }
        let cabundle = field(map, "cabundle")
            .and_then(Value::as_array)
            .ok_or(DocumentError::Payload("cabundle"))?
            .iter()
            .map(|c| c.as_bytes().cloned().ok_or(DocumentError::Payload("cabundle")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AttestationDocument {
            module_id: module_id.to_string(),
            digest: digest.to_string(),
            timestamp_ms,
            pcrs,
            certificate: bytes(map, "certificate")?,
            cabundle,
            public_key: optional_bytes(map, "public_key")?,
            user_data: optional_bytes(map, "user_data")?,
            nonce: optional_bytes(map, "nonce")?,
        })
    }

    /// Encodes the payload as CBOR, in the NSM's field order.
    pub fn to_cbor(&self) -> Result<Vec<u8>, DocumentError> {
        let opt = |b: &Option<Vec<u8>>| b.clone().map(Value::Bytes).unwrap_or(Value::Null);
        let map = Value::Map(vec![
            (Value::Text("module_id".into()), Value::Text(self.module_id.clone())),
            (Value::Text("digest".into()), Value::Text(self.digest.clone())),
            (
                Value::Text("timestamp".into()),
                Value::Integer(self.timestamp_ms.into()),
            ),
            (
                Value::Text("pcrs".into()),
                Value::Map(
                    self.pcrs
                        .iter()
                        .map(|(k, v)| (Value::Integer((*k).into()), Value::Bytes(v.clone())))
                        .collect(),
                ),
            ),
            (
                Value::Text("certificate".into()),
                Value::Bytes(self.certificate.clone()),
            ),
            (
                Value::Text("cabundle".into()),
                Value::Array(self.cabundle.iter().cloned().map(Value::Bytes).collect()),
            ),
            (Value::Text("public_key".into()), opt(&self.public_key)),
            (Value::Text("user_data".into()), opt(&self.user_data)),
            (Value::Text("nonce".into()), opt(&self.nonce)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).map_err(|_| DocumentError::Payload("payload failed to encode"))?;
        Ok(out)
    }

    /// Signs the document as an untagged COSE_Sign1 with `sign` (which must return a raw
    /// 96-byte ES384 signature over its input). Used by the mock attester.
    pub fn to_cose<E>(&self, sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) -> Result<Vec<u8>, E>
    where
        E: From<DocumentError>,
    {
        let protected = HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(self.to_cbor()?)
            .try_create_signature(b"", sign)?
            .build();
        sign1.to_vec().map_err(|e| E::from(DocumentError::Cose(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QOS: &[u8] = include_bytes!("../../fixtures/nitro/qos-2022-07-06.cose");

    #[test]
    fn parses_a_real_nitro_document() {
        let doc = SignedDocument::parse(QOS).unwrap();
        assert_eq!(doc.document.timestamp_ms, 1657117102484);
        assert_eq!(doc.document.digest, "SHA384");
        assert_eq!(doc.document.pcrs.len(), 16);
        assert_eq!(
            hex::encode(&doc.document.pcrs[&0]),
            "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6"
        );
        assert_eq!(doc.document.cabundle.len(), 4);
        assert_eq!(doc.signature.len(), 96);
        assert_eq!(
            hex::encode(doc.document.user_data.as_ref().unwrap()),
            "a2ec4272c44690b2dc32ed89d4bdd266ec2b0e753dff2f25f08b5d2a15cfe2e6"
        );
    }

    #[test]
    fn payload_round_trips_and_truncation_is_refused() {
        let doc = SignedDocument::parse(QOS).unwrap().document;
        assert_eq!(AttestationDocument::from_cbor(&doc.to_cbor().unwrap()).unwrap(), doc);
        for cut in [0, 10, QOS.len() / 2, QOS.len() - 1] {
            assert!(SignedDocument::parse(&QOS[..cut]).is_err(), "cut at {cut}");
        }
    }
}
