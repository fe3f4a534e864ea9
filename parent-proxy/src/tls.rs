//! TLS termination: the rustls server configuration, PEM loading, and development
//! certificates.
//!
//! The configuration names its crypto provider (`ring`, the one reqwest already brings into
//! the tree) instead of relying on a process-wide default, so linking a second provider
//! can never change or break it. TLS 1.3 is the only version offered unless TLS 1.2 is
//! asked for explicitly; ALPN offers `h2` then `http/1.1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSettings;
use crate::error::SetupError;

/// ALPN protocol ids, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Loads the certificate chain and key named in `settings` and builds the server config.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, SetupError> {
    let chain = load_cert_chain(&settings.cert_chain)?;
    let key = load_private_key(&settings.private_key)?;
    server_config_from_der(chain, key, settings.allow_tls12)
}

/// Builds the server config from an already-parsed chain (leaf first) and key.
pub fn server_config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    allow_tls12: bool,
) -> Result<Arc<ServerConfig>, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 { &[&TLS13, &TLS12] } else { &[&TLS13] };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads every `CERTIFICATE` block of a PEM file, in order (leaf first).
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let pem_error = |e: rustls_pki_types::pem::Error| SetupError::Pem {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if chain.is_empty() {
        return Err(SetupError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| SetupError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key ({e})"),
    })
}

/// Where [`write_self_signed`] put its files.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The development CA certificate: what the SDK and CLI trust (`--ca-cert`).
    pub ca_cert: PathBuf,
    /// The server certificate, signed by the CA.
    pub cert_chain: PathBuf,
    /// The server's private key (mode 0600).
    pub private_key: PathBuf,
}

impl DevCertificates {
    /// The proxy's TLS settings for these files.
    pub fn tls_settings(&self, allow_tls12: bool) -> TlsSettings {
        TlsSettings {
            cert_chain: self.cert_chain.clone(),
            private_key: self.private_key.clone(),
            allow_tls12,
        }
    }
}

/// Writes a development CA and a server certificate for `hosts` (DNS names or IP
/// addresses) into `dir`, as `ca.pem`, `server.pem` and `server.key`, unless all three are
/// already there, in which case they are reused so that clients keep trusting the same CA
/// across restarts (delete the directory to start over).
///
/// The CA's private key is never written: it signs the one server certificate and is
/// dropped, so nobody can mint further certificates under a CA a developer has trusted.
/// For development only; production uses a certificate from a real CA via
/// [`TlsSettings`].
pub fn write_self_signed(dir: &Path, hosts: &[String]) -> Result<DevCertificates, SetupError> {
    let files = DevCertificates {
        ca_cert: dir.join("ca.pem"),
        cert_chain: dir.join("server.pem"),
        private_key: dir.join("server.key"),
    };
    if files.ca_cert.is_file() && files.cert_chain.is_file() && files.private_key.is_file() {
        return Ok(files);
    }
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SetupError::Write { path, source }
    };
    create_private_dir(dir).map_err(write_error(dir))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tandem development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tandem-proxy (development)");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    write_file(&files.private_key, key.serialize_pem().as_bytes(), 0o600).map_err(write_error(&files.private_key))?;
    write_file(&files.cert_chain, cert.pem().as_bytes(), 0o644).map_err(write_error(&files.cert_chain))?;
    // The CA last: its presence is what marks the directory complete.
    write_file(&files.ca_cert, ca_cert.pem().as_bytes(), 0o644).map_err(write_error(&files.ca_cert))?;
    Ok(files)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a certificate or key file atomically (a crash never leaves half a PEM file that
/// the next start would refuse), created with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    tandem_io::fs::write_atomically(path, contents, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_files_build_a_server_config_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let certs = write_self_signed(&dir.path().join("tls"), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let ca = fs::read(&certs.ca_cert).unwrap();
        let config = server_config(&certs.tls_settings(false)).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&certs.private_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
        let again = write_self_signed(&dir.path().join("tls"), &["localhost".into()]).unwrap();
        assert_eq!(fs::read(&again.ca_cert).unwrap(), ca, "existing files are reused");
        assert!(server_config(&again.tls_settings(true)).is_ok());
    }

    #[test]
    fn missing_or_empty_pem_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not pem").unwrap();
        assert!(matches!(load_cert_chain(&empty), Err(SetupError::Pem { .. })));
        assert!(matches!(load_private_key(&empty), Err(SetupError::Pem { .. })));
        assert!(load_cert_chain(&dir.path().join("absent.pem")).is_err());
    }
}
