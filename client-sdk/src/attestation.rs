//! Verifying the enclave's attestation document before trusting its channel key.
//!
//! The checks, in order, each with its own [`AttestationError`] so a failure says what
//! was wrong:
//!
//! 1. the document parses as a COSE_Sign1 with ES384 (`tandem_core::attestation`);
//! 2. `cabundle[0]` is the pinned root: the AWS Nitro Enclaves root G1, pinned by the
//!    SHA-256 of its DER — or, only when the caller opted in with
//!    [`AttestationPolicy::danger_allow_mock`], a development root it names;
//! 3. the leaf certificate chains to that root through the cabundle, checked with
//!    `rustls-webpki` *at the document's own time* (Nitro leaves live about three hours);
//! 4. the ES384 signature verifies with the leaf's key;
//! 5. the document is fresh against the caller's clock, and echoes the caller's nonce;
//! 6. the PCRs the caller pinned match, and a debug enclave (PCR0–2 all zero) is refused
//!    unless explicitly allowed.

use std::collections::BTreeMap;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use tandem_core::attestation::{AttestationDocument, SignedDocument};

/// The AWS Nitro Enclaves root G1 certificate (PEM), as published by AWS.
pub const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("aws-nitro-root-g1.pem");

/// SHA-256 of the AWS Nitro Enclaves root G1 (DER): the pin.
pub const AWS_NITRO_ROOT_G1_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Why a document was refused. Each check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The document does not parse (truncated, not COSE, wrong algorithm, bad payload).
    #[error("malformed document: {0}")]
    Malformed(String),
    /// `cabundle[0]` is not the trusted root.
    #[error("the document chains to an untrusted root (SHA-256 {0})")]
    UntrustedRoot(String),
    /// The certificate chain does not verify at the document's time.
    #[error("certificate chain invalid at the document's time: {0}")]
    Chain(String),
    /// The COSE signature does not verify with the leaf's key.
    #[error("the document's signature does not verify")]
    Signature,
    /// The document is older than allowed, or from the future.
    #[error("the document is {age_secs} s old (allowed: {max_secs} s) or from the future")]
    Stale {
        /// Age by the caller's clock (negative ages are reported as their magnitude).
        age_secs: u64,
        /// The allowed age.
        max_secs: u64,
    },
    /// The nonce does not echo the caller's.
    #[error("the document does not carry the expected nonce")]
    Nonce,
    /// A pinned PCR differs.
    #[error("PCR{index} is {actual}, expected {expected}")]
    Pcr {
        /// The register.
        index: u8,
        /// Its value in the document (hex).
        actual: String,
        /// The pinned value (hex).
        expected: String,
    },
    /// PCR0–2 are all zero: a debug-mode enclave, whose memory the host can read.
    #[error("the enclave runs in debug mode (PCR0-2 are zero); refused unless explicitly allowed")]
    DebugMode,
    /// The policy configuration is unusable (e.g. a development root that is not a certificate).
    #[error("attestation policy: {0}")]
    Policy(String),
}

/// What a caller trusts. Build with [`AttestationPolicy::nitro`] and refine.
#[derive(Clone, Debug)]
pub struct AttestationPolicy {
    root_der: Vec<u8>,
    mock: bool,
    expected_pcrs: BTreeMap<u8, Vec<u8>>,
    max_age: Duration,
    allow_debug: bool,
}

/// A document that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedDocument {
    /// The document's fields.
    pub document: AttestationDocument,
    /// Whether it chained to a development root (mock mode).
    pub mock: bool,
}

/// Decodes the first PEM certificate of `pem`.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, AttestationError> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(AttestationError::Policy("no PEM certificate found".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| AttestationError::Policy("PEM certificate is not valid base64".into()))
}

impl AttestationPolicy {
    /// Production policy: the pinned AWS Nitro root, documents at most 5 minutes old, debug
    /// enclaves refused, no PCR pinned yet (pin them with [`AttestationPolicy::expect_pcr`]).
    pub fn nitro() -> Self {
        // invariant: the embedded PEM is a constant, checked against its pin in tests.
        let root_der = pem_to_der(AWS_NITRO_ROOT_G1_PEM).unwrap_or_default();
        AttestationPolicy {
            root_der,
            mock: false,
            expected_pcrs: BTreeMap::new(),
            max_age: Duration::from_secs(300),
            allow_debug: false,
        }
    }

    /// Trusts another root instead (e.g. a test root); documents must chain to it.
    pub fn with_root_pem(mut self, pem: &str) -> Result<Self, AttestationError> {
        self.root_der = pem_to_der(pem)?;
        Ok(self)
    }

    /// DANGER: accepts documents of a mock-mode enclave, chained to the development root
    /// `dev_root_pem` (which that enclave writes to its data directory). Never use this
    /// against an enclave that holds real funds: a mock enclave is an ordinary process.
    pub fn danger_allow_mock(mut self, dev_root_pem: &str) -> Result<Self, AttestationError> {
        self.root_der = pem_to_der(dev_root_pem)?;
        self.mock = true;
        Ok(self)
    }

    /// Pins PCR `index` to `value` (48 bytes).
    pub fn expect_pcr(mut self, index: u8, value: Vec<u8>) -> Self {
        self.expected_pcrs.insert(index, value);
        self
    }

    /// Accepts a debug-mode enclave (PCR0–2 zero). For development only.
    pub fn danger_allow_debug(mut self, allow: bool) -> Self {
        self.allow_debug = allow;
        self
    }

    /// The oldest document accepted, by the caller's clock.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Whether this policy accepts mock-mode documents.
    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// The pinned PCRs.
    pub fn expected_pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.expected_pcrs
    }

    /// Runs every check on `bytes`. `now_unix_secs` is the caller's clock; `nonce` the
    /// nonce the caller sent, if any.
    pub fn verify(
        &self,
        bytes: &[u8],
        now_unix_secs: u64,
        nonce: Option<&[u8]>,
    ) -> Result<VerifiedDocument, AttestationError> {
        let signed = SignedDocument::parse(bytes).map_err(|e| AttestationError::Malformed(e.to_string()))?;
        let doc = &signed.document;
        if doc.digest != "SHA384" {
            return Err(AttestationError::Malformed(format!(
                "unsupported PCR digest {:?}",
                doc.digest
            )));
        }

        // 2. The root.
        let root = doc
            .cabundle
            .first()
            .ok_or_else(|| AttestationError::Malformed("empty cabundle".into()))?;
        if root != &self.root_der {
            return Err(AttestationError::UntrustedRoot(hex::encode(Sha256::digest(root))));
        }
        if !self.mock
            && hex::encode(Sha256::digest(&self.root_der)) != AWS_NITRO_ROOT_G1_SHA256
            && self.root_der == nitro_root()
        {
            return Err(AttestationError::Policy(
                "embedded Nitro root does not match its pin".into(),
            ));
        }

        // 3. The chain, at the document's own time.
        let root_cert = CertificateDer::from(self.root_der.as_slice());
        let anchor =
            webpki::anchor_from_trusted_cert(&root_cert).map_err(|e| AttestationError::Chain(format!("root: {e}")))?;
        let leaf_der = CertificateDer::from(doc.certificate.as_slice());
        let leaf =
            webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| AttestationError::Chain(format!("leaf: {e}")))?;
        let intermediates: Vec<CertificateDer<'_>> = doc
            .cabundle
            .iter()
            .skip(1)
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let doc_time = UnixTime::since_unix_epoch(Duration::from_millis(doc.timestamp_ms));
        leaf.verify_for_usage(
            &[
                webpki::ring::ECDSA_P384_SHA384,
                webpki::ring::ECDSA_P256_SHA256,
                webpki::ring::ECDSA_P384_SHA256,
            ],
            &[anchor],
            &intermediates,
            doc_time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| AttestationError::Chain(e.to_string()))?;

        // 4. The signature (COSE carries raw r‖s; webpki takes ASN.1 DER).
        let raw = p384::ecdsa::Signature::from_slice(&signed.signature).map_err(|_| AttestationError::Signature)?;
        leaf.verify_signature(
            webpki::ring::ECDSA_P384_SHA384,
            &signed.to_be_signed,
            raw.to_der().as_bytes(),
        )
        .map_err(|_| AttestationError::Signature)?;

        // 5. Freshness and nonce.
        let doc_secs = doc.timestamp_ms / 1000;
        let max = self.max_age.as_secs();
        if now_unix_secs.saturating_sub(doc_secs) > max || doc_secs.saturating_sub(now_unix_secs) > 60 {
            return Err(AttestationError::Stale {
                age_secs: now_unix_secs.abs_diff(doc_secs),
                max_secs: max,
            });
        }
        if let Some(expected) = nonce
            && doc.nonce.as_deref() != Some(expected)
        {
            return Err(AttestationError::Nonce);
        }

        // 6. PCRs and debug mode.
        for (index, expected) in &self.expected_pcrs {
            let actual = doc.pcrs.get(index).cloned().unwrap_or_default();
            if &actual != expected {
                return Err(AttestationError::Pcr {
                    index: *index,
                    actual: hex::encode(actual),
                    expected: hex::encode(expected),
                });
            }
        }
        let zero = |i: u8| doc.pcrs.get(&i).is_none_or(|v| v.iter().all(|b| *b == 0));
        if zero(0) && zero(1) && zero(2) && !self.allow_debug {
            return Err(AttestationError::DebugMode);
        }
        Ok(VerifiedDocument {
            document: signed.document,
            mock: self.mock,
        })
    }
}

fn nitro_root() -> Vec<u8> {
    pem_to_der(AWS_NITRO_ROOT_G1_PEM).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/nitro/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap()
    }

    fn at(doc: &[u8]) -> u64 {
        SignedDocument::parse(doc).unwrap().document.timestamp_ms / 1000 + 60
    }

    #[test]
    fn the_embedded_root_matches_its_pin_and_the_fixture() {
        assert_eq!(hex::encode(Sha256::digest(nitro_root())), AWS_NITRO_ROOT_G1_SHA256);
        let fixture_root = std::fs::read_to_string(format!("{FIXTURES}aws-nitro-root-g1.pem")).unwrap();
        assert_eq!(pem_to_der(&fixture_root).unwrap(), nitro_root());
    }

    #[test]
    fn real_documents_verify_inside_their_leaf_validity() {
        for (name, pcr0) in [
            (
                "qos-2022-07-06.cose",
                "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6",
            ),
            (
                "evervault-2022-10-13.cose",
                "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b",
            ),
            (
                "evervault-2023-01-18.cose",
                "d265a83faa7b4fa0d73b82b6d06253e894445922937d0ee5a74fe4891da9817611a71e71b98e5329232902de3cf419af",
            ),
        ] {
            let doc = fixture(name);
            let policy = AttestationPolicy::nitro().expect_pcr(0, hex::decode(pcr0).unwrap());
            let v = policy
                .verify(&doc, at(&doc), None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!v.mock);
        }
    }

    #[test]
    fn debug_mode_is_refused_unless_allowed() {
        let doc = fixture("evervault-debug-2022-10-12.cose");
        assert_eq!(
            AttestationPolicy::nitro().verify(&doc, at(&doc), None).unwrap_err(),
            AttestationError::DebugMode
        );
        AttestationPolicy::nitro()
            .danger_allow_debug(true)
            .verify(&doc, at(&doc), None)
            .unwrap();
    }

    #[test]
    fn each_defect_has_its_own_reason() {
        let doc = fixture("qos-2022-07-06.cose");
        let now = at(&doc);
        let policy = AttestationPolicy::nitro();
        policy.verify(&doc, now, None).unwrap();

        // Time outside the leaf's validity: the chain is checked at the document's time, so
        // move that (re-sign is impossible) — instead check the caller's clock for staleness.
        assert!(matches!(
            policy.verify(&doc, now + 3600, None).unwrap_err(),
            AttestationError::Stale { .. }
        ));
        assert!(matches!(
            policy.verify(&doc, now - 3600, None).unwrap_err(),
            AttestationError::Stale { .. }
        ));
        // Wrong PCR.
        let wrong = AttestationPolicy::nitro().expect_pcr(0, vec![0xab; 48]);
        assert!(matches!(
            wrong.verify(&doc, now, None).unwrap_err(),
            AttestationError::Pcr { index: 0, .. }
        ));
        // Nonce.
        assert_eq!(
            policy.verify(&doc, now, Some(b"other")).unwrap_err(),
            AttestationError::Nonce
        );
        // Truncated.
        assert!(matches!(
            policy.verify(&doc[..doc.len() / 2], now, None).unwrap_err(),
            AttestationError::Malformed(_)
        ));
        // Another root: a policy trusting a different certificate.
        let other_root = {
            let evervault = SignedDocument::parse(&fixture("evervault-2022-10-13.cose"))
                .unwrap()
                .document;
            // Its intermediate is a real certificate that is not the root.
            evervault.cabundle[1].clone()
        };
        let foreign = AttestationPolicy {
            root_der: other_root,
            ..AttestationPolicy::nitro()
        };
        assert!(matches!(
            foreign.verify(&doc, now, None).unwrap_err(),
            AttestationError::UntrustedRoot(_)
        ));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let doc = fixture("qos-2022-07-06.cose");
        let now = at(&doc);
        let policy = AttestationPolicy::nitro();
        let signed = SignedDocument::parse(&doc).unwrap();
        // Locate regions: the signature is the last 96 bytes; the leaf certificate and the
        // cabundle are inside the payload.
        let find = |needle: &[u8]| doc.windows(needle.len()).position(|w| w == needle).unwrap();
        let leaf_at = find(&signed.document.certificate);
        let inter_at = find(&signed.document.cabundle[1]);
        let pcr_at = find(&signed.document.pcrs[&0]);
        let cases = [
            ("payload (PCR0)", pcr_at + 5),
            (
                "leaf certificate (its signature)",
                leaf_at + signed.document.certificate.len() - 10,
            ),
            (
                "leaf certificate (its key)",
                leaf_at + signed.document.certificate.len() / 2,
            ),
            (
                "intermediate certificate",
                inter_at + signed.document.cabundle[1].len() - 10,
            ),
            ("COSE signature", doc.len() - 20),
        ];
        for (what, pos) in cases {
            let mut bad = doc.clone();
            bad[pos] ^= 0x01;
            let err = policy.verify(&bad, now, None).unwrap_err();
            assert!(
                matches!(
                    err,
                    AttestationError::Signature | AttestationError::Chain(_) | AttestationError::Malformed(_)
                ),
                "{what}: {err:?}"
            );
        }
        // Every byte: never accepted.
        for pos in (0..doc.len()).step_by(7) {
            let mut bad = doc.clone();
            bad[pos] ^= 0x01;
            assert!(policy.verify(&bad, now, None).is_err(), "flip at {pos} accepted");
        }
    }
}
