//! HTTPS clients that trust a given CA: how the SDK and the CLI talk to a proxy whose
//! certificate is not from a public CA (a development proxy started with
//! `tandem-proxy --self-signed DIR`, or a private PKI).

use std::time::Duration;

use crate::SdkError;

/// A `reqwest::Client` for [`crate::Client::with_http_client`] that trusts the CA
/// certificate(s) in `ca_pem` (PEM, one or more `CERTIFICATE` blocks), with the same
/// timeouts as [`crate::Client::new`] (60 s per request, 10 s to connect).
///
/// The given CA replaces the built-in public roots rather than joining them: a caller who
/// names a CA means "this server is authenticated by this CA", and a certificate for the
/// same name from any public CA should not do instead. For the same reason the client
/// speaks HTTPS only (an `http://` URL fails rather than silently going unencrypted).
pub fn http_client_trusting(ca_pem: &[u8]) -> Result<reqwest::Client, SdkError> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
        .map_err(|e| SdkError::InvalidInput(format!("the CA certificate is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SdkError::InvalidInput("the CA file holds no CERTIFICATE block".into()));
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .https_only(true)
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10));
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| SdkError::InvalidInput(format!("cannot build the HTTPS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_input_without_a_certificate() {
        assert!(matches!(
            http_client_trusting(b"not a certificate"),
            Err(SdkError::InvalidInput(_))
        ));
        assert!(matches!(http_client_trusting(b""), Err(SdkError::InvalidInput(_))));
    }
}
