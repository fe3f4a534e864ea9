//! The `Attester` seam: who signs the enclave's attestation documents.
//!
//! * [`NitroAttester`] asks the Nitro Security Module (`/dev/nsm`) for a document; AWS's
//!   hypervisor signs it and it chains to the AWS Nitro root.
//! * [`MockAttester`] produces documents of the same format for mock mode, ES384-signed by
//!   a development certificate chain generated at first start and kept in the data
//!   directory (`attestation/dev-root.pem` is what a client must be told to trust, with
//!   `danger_allow_mock`). Its PCRs spell `TANDEM-DEV-PCR<i>` so nobody mistakes them for
//!   a real measurement.
//!
//! Both go through the same verifier in the SDK; only the trust root differs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p384::ecdsa::signature::Signer;
use p384::pkcs8::DecodePrivateKey;
use tandem_core::attestation::{AttestationDocument, DocumentError};

/// Why a document could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The NSM device is missing or refused the request.
    #[error("NSM: {0}")]
    Nsm(String),
    /// The development chain could not be created or loaded.
    #[error("development attestation key: {0}")]
    DevKey(String),
    /// Encoding failed.
    #[error("document encoding: {0}")]
    Encode(String),
}

impl From<DocumentError> for AttestError {
    fn from(e: DocumentError) -> Self {
        AttestError::Encode(e.to_string())
    }
}

/// Produces attestation documents binding `public_key` (the channel key) and the
/// verifier's `nonce`.
pub trait Attester: Send + Sync + 'static {
    /// A signed COSE_Sign1 document.
    fn attest(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, AttestError>;
    /// Whether documents chain to a development root (mock mode).
    fn is_mock(&self) -> bool;
}

/// Documents from the Nitro Security Module.
pub struct NitroAttester {
    fd: i32,
}

impl NitroAttester {
    /// Opens `/dev/nsm`. Fails (cleanly) outside a Nitro Enclave.
    pub fn open() -> Result<Self, AttestError> {
        if !Path::new("/dev/nsm").exists() {
            return Err(AttestError::Nsm(
                "/dev/nsm not found: not running inside a Nitro Enclave".into(),
            ));
        }
        let fd = aws_nitro_enclaves_nsm_api::driver::nsm_init();
        if fd < 0 {
            return Err(AttestError::Nsm("cannot open /dev/nsm".into()));
        }
        Ok(NitroAttester { fd })
    }
}

impl Attester for NitroAttester {
    fn attest(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, AttestError> {
        use aws_nitro_enclaves_nsm_api::api::{Request, Response};
        let request = Request::Attestation {
            user_data: None,
            nonce: Some(serde_bytes::ByteBuf::from(nonce.to_vec())),
            public_key: Some(serde_bytes::ByteBuf::from(public_key.to_vec())),
        };
        match aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, request) {
            Response::Attestation { document } => Ok(document),
            Response::Error(e) => Err(AttestError::Nsm(format!("{e:?}"))),
            _ => Err(AttestError::Nsm("unexpected NSM response".into())),
        }
    }

    fn is_mock(&self) -> bool {
        false
    }
}

impl Drop for NitroAttester {
    fn drop(&mut self) {
        aws_nitro_enclaves_nsm_api::driver::nsm_exit(self.fd);
    }
}

/// Mock-mode documents, signed by a development chain.
pub struct MockAttester {
    leaf_key: p384::ecdsa::SigningKey,
    leaf_der: Vec<u8>,
    root_der: Vec<u8>,
    root_pem_path: PathBuf,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

/// The development PCR values: ASCII `TANDEM-DEV-PCR<i>`, zero-padded to 48 bytes, for
/// PCR0–4 and PCR8; the others zero, as on a real enclave.
pub fn dev_pcrs() -> BTreeMap<u8, Vec<u8>> {
    image_pcrs("dev").unwrap_or_default()
}

/// The PCRs of the mock image `name` (1–24 letters, digits, `-` or `_`): ASCII
/// `TANDEM-<NAME>-PCR<i>`, zero-padded to 48 bytes, for PCR0–4 and PCR8. Two names give two
/// "images" with different measurements, so clients' pinning can be tested in mock mode.
pub fn image_pcrs(name: &str) -> Result<BTreeMap<u8, Vec<u8>>, AttestError> {
    if name.is_empty()
        || name.len() > 24
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AttestError::DevKey(format!(
            "mock image name {name:?}: 1 to 24 letters, digits, - or _"
        )));
    }
    Ok((0u8..16)
        .map(|i| {
            let mut v = vec![0u8; 48];
            if i <= 4 || i == 8 {
                let tag = format!("TANDEM-{}-PCR{i}", name.to_ascii_uppercase());
                v[..tag.len()].copy_from_slice(tag.as_bytes());
            }
            (i, v)
        })
        .collect())
}

/// The measurements file clients pin, in the shape `scripts/build-eif.sh` writes for a
/// real image: `{"PCR0": hex, "PCR1": hex, "PCR2": hex, "PCR8": hex}`.
pub fn pcr_file_json(pcrs: &BTreeMap<u8, Vec<u8>>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = [0u8, 1, 2, 8]
        .iter()
        .filter_map(|i| {
            pcrs.get(i)
                .map(|v| (format!("PCR{i}"), serde_json::Value::String(hex::encode(v))))
        })
        .collect();
    serde_json::to_string_pretty(&map).unwrap_or_default()
}

fn pem_der(pem: &str) -> Result<Vec<u8>, AttestError> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| AttestError::DevKey(e.to_string()))
}

impl MockAttester {
    /// Loads the development chain from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, AttestError> {
        let io = |e: std::io::Error| AttestError::DevKey(e.to_string());
        let root_pem_path = dir.join("dev-root.pem");
        let leaf_pem_path = dir.join("dev-leaf.pem");
        let key_path = dir.join("dev-leaf.key");
        if !key_path.exists() {
            Self::create(dir, &root_pem_path, &leaf_pem_path, &key_path)?;
        }
        let key_pem = zeroize::Zeroizing::new(fs::read_to_string(&key_path).map_err(io)?);
        let leaf_key =
            p384::ecdsa::SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| AttestError::DevKey(e.to_string()))?;
        let leaf_der = pem_der(&fs::read_to_string(&leaf_pem_path).map_err(io)?)?;
        let root_der = pem_der(&fs::read_to_string(&root_pem_path).map_err(io)?)?;
        Ok(MockAttester {
            leaf_key,
            leaf_der,
            root_der,
            root_pem_path,
            pcrs: dev_pcrs(),
        })
    }

    /// Reports the PCRs of the mock image `name` (see [`image_pcrs`]) and writes them to
    /// `enclave-pcr.json` beside the development root, for clients to pin.
    pub fn with_image(mut self, name: &str) -> Result<Self, AttestError> {
        self.pcrs = image_pcrs(name)?;
        let path = self.measurements_path();
        fs::write(&path, pcr_file_json(&self.pcrs))
            .map_err(|e| AttestError::DevKey(format!("{}: {e}", path.display())))?;
        Ok(self)
    }

    /// Where this mock enclave's measurements file is (`enclave-pcr.json`).
    pub fn measurements_path(&self) -> PathBuf {
        self.root_pem_path.with_file_name("enclave-pcr.json")
    }

    fn create(dir: &Path, root_path: &Path, leaf_path: &Path, key_path: &Path) -> Result<(), AttestError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            PKCS_ECDSA_P384_SHA384,
        };
        let err = |e: rcgen::Error| AttestError::DevKey(e.to_string());
        let io = |e: std::io::Error| AttestError::DevKey(e.to_string());
        fs::create_dir_all(dir).map_err(io)?;
        let now = time_now();
        let name = |cn: &str| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "Tandem development (mock mode, NOT AWS)");
            dn.push(DnType::CommonName, cn);
            dn
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(err)?;
        let mut root_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        root_params.distinguished_name = name("tandem-mock-root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.not_before = now - time::Duration::days(1);
        root_params.not_after = now + time::Duration::days(3650);
        let root_cert = root_params.self_signed(&root_key).map_err(err)?;

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(err)?;
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        leaf_params.distinguished_name = name("tandem-mock-enclave");
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.not_before = now - time::Duration::days(1);
        leaf_params.not_after = now + time::Duration::days(3650);
        let issuer = Issuer::new(root_params, &root_key);
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

        write_private(key_path, leaf_key.serialize_pem().as_bytes())?;
        fs::write(leaf_path, leaf_cert.pem()).map_err(io)?;
        fs::write(root_path, root_cert.pem()).map_err(io)?;
        Ok(())
    }

    /// The development root (PEM file) a client must trust to accept these documents.
    pub fn root_pem_path(&self) -> &Path {
        &self.root_pem_path
    }

    /// The development root (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AttestError> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| AttestError::DevKey(e.to_string()))?;
    f.write_all(bytes).map_err(|e| AttestError::DevKey(e.to_string()))
}

impl Attester for MockAttester {
    fn attest(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, AttestError> {
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let doc = AttestationDocument {
            module_id: "tandem-mock-enclave".into(),
            digest: "SHA384".into(),
            timestamp_ms,
            pcrs: self.pcrs.clone(),
            certificate: self.leaf_der.clone(),
            cabundle: vec![self.root_der.clone()],
            public_key: Some(public_key.to_vec()),
            user_data: None,
            nonce: Some(nonce.to_vec()),
        };
        doc.to_cose(|tbs| -> Result<Vec<u8>, AttestError> {
            let sig: p384::ecdsa::Signature = self.leaf_key.sign(tbs);
            Ok(sig.to_bytes().to_vec())
        })
    }

    fn is_mock(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nitro_attester_fails_cleanly_without_the_device() {
        if !Path::new("/dev/nsm").exists() {
            let err = NitroAttester::open().err().unwrap();
            assert!(err.to_string().contains("/dev/nsm"));
        }
    }

    #[test]
    fn mock_documents_parse_and_the_chain_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = MockAttester::load_or_create(dir.path()).unwrap();
        let doc = a.attest(&[7; 32], b"nonce").unwrap();
        let parsed = tandem_core::attestation::SignedDocument::parse(&doc).unwrap();
        assert_eq!(parsed.document.public_key.as_deref(), Some(&[7u8; 32][..]));
        assert_eq!(parsed.document.nonce.as_deref(), Some(&b"nonce"[..]));
        assert!(parsed.document.pcrs[&0].starts_with(b"TANDEM-DEV-PCR0"));
        let b = MockAttester::load_or_create(dir.path()).unwrap();
        assert_eq!(a.root_der(), b.root_der());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(dir.path().join("dev-leaf.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
