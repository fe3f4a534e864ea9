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
//! 6. its measurements are those of one of the images the caller accepts, and a debug
//!    enclave (PCR0–2 all zero) is refused unless explicitly allowed.
//!
//! **No image accepted, nothing trusted.** Any AWS customer can run a genuine Nitro
//! enclave, so the AWS root alone proves nothing about *which* code holds the key share:
//! a policy refuses every document until at least one image is accepted
//! ([`AttestationPolicy::accept_image`]), with measurements that come from the build
//! (`enclave-pcr.json`), never from the host (review finding C1). Several images can be
//! accepted at once, so a rolling upgrade needs no app release.

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
    /// The policy accepts no image: nothing can be trusted.
    #[error(
        "no enclave image is pinned: configure the expected measurements (PCR0/1/2 or PCR8 from the build's enclave-pcr.json) before talking to an enclave"
    )]
    NoPinnedImage,
    /// A pinned PCR differs.
    #[error("PCR{index} is {actual}, expected {expected} (of the closest accepted image)")]
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

/// What a caller trusts. Build with [`AttestationPolicy::nitro`] and refine: it accepts
/// nothing until at least one image is accepted.
#[derive(Clone, Debug)]
pub struct AttestationPolicy {
    root_der: Vec<u8>,
    mock: bool,
    images: Vec<ImageMeasurements>,
    any_image: bool,
    max_age: Duration,
    allow_debug: bool,
}

/// The measurements of one enclave image a client accepts: PCR0, PCR1 and PCR2 (the
/// image, kernel and application), or PCR8 (the certificate that signed the image), as
/// `scripts/build-eif.sh` writes them to `enclave-pcr.json`. When PCR8 is given with
/// PCR0–2, all must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMeasurements {
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl ImageMeasurements {
    /// Measurements from PCR index → value (48 bytes each). Needs PCR0, PCR1 and PCR2, or
    /// PCR8; other indices are refused (they say nothing about the image).
    pub fn new(pcrs: BTreeMap<u8, Vec<u8>>) -> Result<Self, AttestationError> {
        for (i, v) in &pcrs {
            if ![0, 1, 2, 8].contains(i) {
                return Err(AttestationError::Policy(format!(
                    "PCR{i} does not identify an image: pin PCR0, PCR1 and PCR2, or PCR8"
                )));
            }
            if v.len() != 48 {
                return Err(AttestationError::Policy(format!(
                    "PCR{i} must be 48 bytes (96 hex digits)"
                )));
            }
            if v.iter().all(|b| *b == 0) {
                return Err(AttestationError::Policy(format!(
                    "PCR{i} is all zero: that is a debug enclave, not an image"
                )));
            }
        }
        let full = [0, 1, 2].iter().all(|i| pcrs.contains_key(i));
        if !full && !pcrs.contains_key(&8) {
            return Err(AttestationError::Policy(
                "an image is identified by PCR0, PCR1 and PCR2 together, or by PCR8".into(),
            ));
        }
        Ok(ImageMeasurements { pcrs })
    }

    /// Parses `enclave-pcr.json` (`{"PCR0": "<hex>", "PCR1": …, "PCR2": …, "PCR8": …}`, as
    /// `build-eif.sh` writes it; nitro-cli's whole `{"Measurements": {…}}` output works too).
    pub fn from_json(json: &str) -> Result<Self, AttestationError> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| AttestationError::Policy(format!("measurements file is not JSON: {e}")))?;
        let map = value.get("Measurements").unwrap_or(&value);
        let obj = map
            .as_object()
            .ok_or_else(|| AttestationError::Policy("measurements file is not a JSON object".into()))?;
        let mut pcrs = BTreeMap::new();
        for (key, v) in obj {
            let Some(index) = key.strip_prefix("PCR").and_then(|i| i.parse::<u8>().ok()) else {
                continue; // e.g. nitro-cli's "HashAlgorithm"
            };
            let hex_value = v
                .as_str()
                .ok_or_else(|| AttestationError::Policy(format!("{key} is not a string")))?;
            let bytes = hex::decode(hex_value).map_err(|_| AttestationError::Policy(format!("{key} is not hex")))?;
            pcrs.insert(index, bytes);
        }
        ImageMeasurements::new(pcrs)
    }

    /// The pinned values.
    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.pcrs
    }

    /// The first pinned PCR the document's differs from, if any.
    fn mismatch(&self, actual: &BTreeMap<u8, Vec<u8>>) -> Option<(u8, &[u8])> {
        self.pcrs
            .iter()
            .find(|(i, v)| actual.get(i) != Some(*v))
            .map(|(i, v)| (*i, v.as_slice()))
    }
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
    /// enclaves refused, and no image accepted yet — it refuses every document until
    /// [`AttestationPolicy::accept_image`] names at least one.
    pub fn nitro() -> Self {
        // invariant: the embedded PEM is a constant, checked against its pin in tests.
        let root_der = pem_to_der(AWS_NITRO_ROOT_G1_PEM).unwrap_or_default();
        AttestationPolicy {
            root_der,
            mock: false,
            images: Vec::new(),
            any_image: false,
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

    /// Accepts enclaves running `image` (add one per image a rolling upgrade may meet).
    pub fn accept_image(mut self, image: ImageMeasurements) -> Self {
        if !self.images.contains(&image) {
            self.images.push(image);
        }
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

    /// DANGER: accepts a document of any image (every other check still applies). For
    /// tools that inspect a document, or pin a served image on first use and say so;
    /// never for a client that then seals a key share to the document's key.
    pub fn danger_accept_any_image(mut self) -> Self {
        self.any_image = true;
        self
    }

    /// Whether this policy trusts some enclave at all (an image is accepted, or any).
    pub fn trusts_an_image(&self) -> bool {
        self.any_image || !self.images.is_empty()
    }

    /// The accepted images.
    pub fn images(&self) -> &[ImageMeasurements] {
        &self.images
    }

    /// Runs every check on `bytes`. `now_unix_secs` is the caller's clock; `nonce` the
    /// nonce the caller sent, if any.
    pub fn verify(
        &self,
        bytes: &[u8],
        now_unix_secs: u64,
        nonce: Option<&[u8]>,
    ) -> Result<VerifiedDocument, AttestationError> {
        // First: a policy that accepts no image trusts nothing, whatever the document.
        if !self.trusts_an_image() {
            return Err(AttestationError::NoPinnedImage);
        }
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

        // 6. Debug mode (PCR0–2 zero: nothing to pin, and the host can read its memory),
        // then the image.
        let zero = |i: u8| doc.pcrs.get(&i).is_none_or(|v| v.iter().all(|b| *b == 0));
        if zero(0) && zero(1) && zero(2) {
            if !self.allow_debug {
                return Err(AttestationError::DebugMode);
            }
        } else if !self.any_image {
            let mismatches: Vec<(u8, &[u8])> = self.images.iter().filter_map(|i| i.mismatch(&doc.pcrs)).collect();
            if mismatches.len() == self.images.len()
                && let Some((index, expected)) = mismatches.first()
            {
                return Err(AttestationError::Pcr {
                    index: *index,
                    actual: hex::encode(doc.pcrs.get(index).cloned().unwrap_or_default()),
                    expected: hex::encode(expected),
                });
            }
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

    /// The image a document's PCR0–2 describe.
    fn image_of(doc: &[u8]) -> ImageMeasurements {
        let pcrs = SignedDocument::parse(doc).unwrap().document.pcrs;
        ImageMeasurements::new([0u8, 1, 2].iter().map(|i| (*i, pcrs[i].clone())).collect()).unwrap()
    }

    fn pinned_to(doc: &[u8]) -> AttestationPolicy {
        AttestationPolicy::nitro().accept_image(image_of(doc))
    }

    /// Review finding C1: with no image pinned, a genuine Nitro document (any AWS
    /// customer's enclave) is refused — before anything could be sealed to its key.
    #[test]
    fn a_genuine_document_is_refused_when_no_image_is_pinned() {
        for name in ["qos-2022-07-06.cose", "evervault-2022-10-13.cose"] {
            let doc = fixture(name);
            assert_eq!(
                AttestationPolicy::nitro().verify(&doc, at(&doc), None).unwrap_err(),
                AttestationError::NoPinnedImage,
                "{name}"
            );
        }
    }

    #[test]
    fn any_of_several_accepted_images_is_trusted_and_others_are_named() {
        let qos = fixture("qos-2022-07-06.cose");
        let ever = fixture("evervault-2022-10-13.cose");
        let both = AttestationPolicy::nitro()
            .accept_image(image_of(&qos))
            .accept_image(image_of(&ever));
        both.verify(&qos, at(&qos), None).unwrap();
        both.verify(&ever, at(&ever), None).unwrap();
        let only_qos = pinned_to(&qos);
        assert!(matches!(
            only_qos.verify(&ever, at(&ever), None).unwrap_err(),
            AttestationError::Pcr { index: 0, .. }
        ));
        // A signed image pinned by PCR8 alone.
        let pcr8 = SignedDocument::parse(&ever).unwrap().document.pcrs[&8].clone();
        let by_signer = AttestationPolicy::nitro()
            .accept_image(ImageMeasurements::new([(8u8, pcr8)].into_iter().collect()).unwrap());
        by_signer.verify(&ever, at(&ever), None).unwrap();
        assert!(matches!(
            by_signer.verify(&qos, at(&qos), None).unwrap_err(),
            AttestationError::Pcr { index: 8, .. }
        ));
    }

    #[test]
    fn measurements_files_parse_and_incomplete_ones_are_refused() {
        let h = |b: u8| hex::encode([b; 48]);
        let json = format!(r#"{{"PCR0":"{}","PCR1":"{}","PCR2":"{}"}}"#, h(1), h(2), h(3));
        let img = ImageMeasurements::from_json(&json).unwrap();
        assert_eq!(img.pcrs()[&2], vec![3; 48]);
        let nitro_cli = format!(
            r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR0":"{}","PCR1":"{}","PCR2":"{}"}}}}"#,
            h(1),
            h(2),
            h(3)
        );
        assert_eq!(ImageMeasurements::from_json(&nitro_cli).unwrap(), img);
        for bad in [
            format!(r#"{{"PCR0":"{}"}}"#, h(1)),
            format!(r#"{{"PCR0":"{}","PCR1":"{}","PCR2":"{}"}}"#, h(0), h(2), h(3)),
            format!(r#"{{"PCR4":"{}"}}"#, h(4)),
            r#"{"PCR8":"abcd"}"#.to_string(),
            "[1]".to_string(),
        ] {
            assert!(ImageMeasurements::from_json(&bad).is_err(), "{bad}");
        }
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
            assert_eq!(hex::encode(&image_of(&doc).pcrs()[&0]), pcr0);
            let policy = pinned_to(&doc);
            let v = policy
                .verify(&doc, at(&doc), None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!v.mock);
        }
    }

    #[test]
    fn debug_mode_is_refused_unless_allowed() {
        let doc = fixture("evervault-debug-2022-10-12.cose");
        // A debug enclave's PCRs are zero: no image can be pinned for it, and it is refused
        // unless debug enclaves are explicitly allowed.
        let policy = pinned_to(&fixture("qos-2022-07-06.cose"));
        assert_eq!(
            policy.verify(&doc, at(&doc), None).unwrap_err(),
            AttestationError::DebugMode
        );
        policy.danger_allow_debug(true).verify(&doc, at(&doc), None).unwrap();
    }

    #[test]
    fn each_defect_has_its_own_reason() {
        let doc = fixture("qos-2022-07-06.cose");
        let now = at(&doc);
        let policy = pinned_to(&doc);
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
        let mut other = image_of(&doc).pcrs().clone();
        other.insert(0, vec![0xab; 48]);
        let wrong = AttestationPolicy::nitro().accept_image(ImageMeasurements::new(other).unwrap());
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
            ..pinned_to(&doc)
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
        let policy = pinned_to(&doc);
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
