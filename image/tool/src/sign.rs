//! Signed images: the EIF signature section and PCR8.
//!
//! nitro-cli signs an EIF with an ECDSA P-384 key and its certificate
//! (`--signing-certificate`, `--private-key`): the signature section is the CBOR of
//! `[{signing_certificate: <PEM bytes>, signature: <COSE_Sign1>}]`, and the COSE_Sign1
//! (ES384, untagged) signs the CBOR of `{register_index: 0, register_value: <PCR0>}`. Both
//! byte strings are CBOR *arrays of integers*, because AWS serializes `Vec<u8>` fields with
//! serde_cbor, which knows no byte strings there; we must match it byte for byte, since
//! nitro-cli re-encodes the payload and compares. The hypervisor sets PCR8 to the extend of
//! SHA-384 over the certificate's DER.
//!
//! ECDSA here is RFC 6979 (deterministic): the same key signs the same PCR0 with the same
//! bytes, so a signed image is as reproducible as an unsigned one.

use coset::{CborSerializable as _, CoseSign1Builder, HeaderBuilder, iana};
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::{Deserialize, Serialize};

/// Errors signing or checking a signature section.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The private key is not a P-384 key in PEM (PKCS#8 or SEC1).
    #[error("the private key is not a P-384 PEM key (PKCS#8 or SEC1): {0}")]
    Key(String),
    /// The certificate is not a PEM X.509 certificate.
    #[error("the signing certificate is not a PEM certificate: {0}")]
    Cert(String),
    /// The certificate's key is not the private key's.
    #[error("the signing certificate's public key does not match the private key")]
    Mismatch,
    /// A signature section that does not parse or verify.
    #[error("signature section: {0}")]
    Section(String),
}

/// The signing key and its certificate.
pub struct Signer {
    key: SigningKey,
    cert_pem: Vec<u8>,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct PcrInfo {
    register_index: i32,
    register_value: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct PcrSignature {
    signing_certificate: Vec<u8>,
    signature: Vec<u8>,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// The certificate's DER and its public key.
fn parse_cert(pem: &[u8]) -> Result<(Vec<u8>, VerifyingKey), SignError> {
    let (label, der) = pem_rfc7468::decode_vec(pem).map_err(|e| SignError::Cert(e.to_string()))?;
    if label != "CERTIFICATE" {
        return Err(SignError::Cert(format!("PEM label {label:?}")));
    }
    let spki = spki_of_cert(&der).ok_or_else(|| SignError::Cert("cannot find its public key".into()))?;
    let key = VerifyingKey::from_public_key_der(spki).map_err(|e| SignError::Cert(format!("not a P-384 key: {e}")))?;
    Ok((der, key))
}

/// The SubjectPublicKeyInfo of an X.509 certificate: the 7th element of tbsCertificate
/// (after the optional `[0]` version: serial, signature, issuer, validity, subject, spki).
fn spki_of_cert(der: &[u8]) -> Option<&[u8]> {
    /// Splits one DER TLV off the front: (whole TLV, its content, the rest).
    fn tlv(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
        let first_len = *b.get(1)?;
        let (len, head) = if first_len < 0x80 {
            (first_len as usize, 2)
        } else {
            let n = (first_len & 0x7f) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize);
            (len, 2 + n)
        };
        let end = head.checked_add(len)?;
        Some((b.get(..end)?, b.get(head..end)?, b.get(end..)?))
    }
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = tlv(tbs)?.2;
    }
    Some(tlv(tbs)?.0)
}

impl Signer {
    /// Loads a P-384 private key (PKCS#8 or SEC1 PEM, as `openssl ecparam -genkey` writes)
    /// and its PEM certificate, and checks that they belong together.
    pub fn from_pem(key_pem: &str, cert_pem: &[u8]) -> Result<Self, SignError> {
        let key = SigningKey::from_pkcs8_pem(key_pem)
            .or_else(|_| p384::SecretKey::from_sec1_pem(key_pem).map(SigningKey::from))
            .map_err(|e| SignError::Key(e.to_string()))?;
        let (cert_der, cert_key) = parse_cert(cert_pem)?;
        if &cert_key != key.verifying_key() {
            return Err(SignError::Mismatch);
        }
        Ok(Signer {
            key,
            cert_pem: cert_pem.to_vec(),
            cert_der,
        })
    }

    /// PCR8 for this certificate.
    pub fn pcr8(&self) -> [u8; 48] {
        crate::pcr::pcr8(&self.cert_der)
    }

    /// The signature section for an image whose PCR0 is `pcr0`.
    pub fn section(&self, pcr0: &[u8; 48]) -> Vec<u8> {
        let payload = cbor(&PcrInfo {
            register_index: 0,
            register_value: pcr0.to_vec(),
        });
        let sign1 = CoseSign1Builder::new()
            .protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build())
            .payload(payload)
            .create_signature(b"", |tbs| {
                let sig: Signature = self.key.sign(tbs);
                sig.to_bytes().to_vec()
            })
            .build();
        // Serializing a CoseSign1 we built ourselves cannot fail.
        let signature = sign1.to_vec().unwrap_or_default();
        cbor(&vec![PcrSignature {
            signing_certificate: self.cert_pem.clone(),
            signature,
        }])
    }
}

/// Checks a signature section against the image's PCR0 (the certificate's key signed that
/// PCR0) and returns PCR8.
pub fn verify_section(section: &[u8], pcr0: &[u8; 48]) -> Result<[u8; 48], SignError> {
    let bad = |m: String| SignError::Section(m);
    let sigs: Vec<PcrSignature> = ciborium::from_reader(section).map_err(|e| bad(e.to_string()))?;
    let first = sigs.first().ok_or_else(|| bad("no signature".into()))?;
    let (der, key) = parse_cert(&first.signing_certificate)?;
    let sign1 = coset::CoseSign1::from_slice(&first.signature).map_err(|e| bad(format!("COSE: {e:?}")))?;
    sign1
        .verify_signature(b"", |sig, tbs| {
            let sig = Signature::from_slice(sig).map_err(|e| e.to_string())?;
            key.verify(tbs, &sig).map_err(|e| e.to_string())
        })
        .map_err(|e| bad(format!("the signature does not verify: {e}")))?;
    let expected = cbor(&PcrInfo {
        register_index: 0,
        register_value: pcr0.to_vec(),
    });
    if sign1.payload.as_deref() != Some(expected.as_slice()) {
        return Err(bad("the signature is over another PCR0".into()));
    }
    Ok(crate::pcr::pcr8(&der))
}
