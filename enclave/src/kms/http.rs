//! The HTTP connector the KMS client uses.
//!
//! An enclave has no network: in Nitro mode every KMS call goes through the parent's
//! `vsock-proxy` (CID 3, port 8000 by default), which forwards raw bytes to the regional
//! KMS endpoint. TLS therefore runs *inside* the enclave, over the vsock stream, and the
//! parent sees only ciphertext; the server certificate is checked against the Mozilla
//! roots compiled in (`webpki-roots`), since the enclave image has no system store.
//!
//! The relay is a `tandem_core::Addr` like every other socket: `vsock://3:8000` in Nitro
//! mode, or its TCP twin (`tcp://127.0.0.1:PORT`), which is how the relay path is tested
//! (vsock is never opened in tests). Tests against a local KMS emulator dial it directly
//! over plain HTTP ([`KmsTransport::Direct`]).
//!
//! One connection per request: KMS is called a handful of times per boot, never per
//! signing request, so pooling would buy nothing.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tandem_core::Addr;
use tandem_core::addr::VSOCK_CID_PARENT;
use tokio::io::{AsyncRead, AsyncWrite};

/// Default vsock port of the parent's `vsock-proxy` for KMS.
pub const DEFAULT_VSOCK_PROXY_PORT: u32 = 8000;
/// Largest KMS response read (answers are a few KB).
const MAX_RESPONSE: usize = 1 << 20;
/// Upper bound on one request (connect, TLS, send, receive).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connector reaches the endpoint named in the request URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsTransport {
    /// Dial the URI's host and port over TCP (`https` → TLS, `http` → plain, for a local
    /// emulator). Not available inside an enclave. Flag value: `tcp`.
    Direct,
    /// Dial a relay that forwards raw bytes to KMS (the parent's vsock-proxy) and run TLS to
    /// the URI's host inside the stream. Flag values: `vsock` (the parent's vsock-proxy,
    /// `vsock://3:8000`) or any dialable address (`vsock://CID:PORT`, `tcp://HOST:PORT`).
    Relay(Addr),
}

impl KmsTransport {
    /// The parent's vsock-proxy: `vsock://3:8000`.
    pub fn parent_vsock_proxy() -> Self {
        KmsTransport::Relay(Addr::vsock(VSOCK_CID_PARENT, DEFAULT_VSOCK_PROXY_PORT))
    }
}

impl std::str::FromStr for KmsTransport {
    type Err = tandem_core::addr::AddrError;

    /// Parses `tcp` (direct), `vsock` (the parent's vsock-proxy) or a relay address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(KmsTransport::Direct),
            "vsock" => Ok(KmsTransport::parent_vsock_proxy()),
            _ => Addr::parse_dial(s).map(KmsTransport::Relay),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The KMS client's HTTP connector (see the module docs).
#[derive(Clone)]
pub struct KmsConnector {
    transport: KmsTransport,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KmsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsConnector")
            .field("transport", &self.transport)
            .finish()
    }
}

/// Where a request goes, from its URI.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

fn target(uri: &http::Uri) -> Result<Target, String> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let host = uri.host().ok_or("URI has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target { host, port, tls })
}

impl KmsConnector {
    /// A connector over `transport`, verifying TLS servers against the Mozilla roots.
    pub fn new(transport: KmsTransport) -> Result<Self, String> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(KmsConnector {
            transport,
            tls: Arc::new(tls),
        })
    }

    async fn dial(&self, t: &Target) -> std::io::Result<Box<dyn Io>> {
        let raw: Box<dyn Io> = match &self.transport {
            KmsTransport::Direct => {
                Box::new(tandem_io::net::connect(&Addr::tcp(t.host.clone(), t.port), REQUEST_TIMEOUT).await?)
            }
            KmsTransport::Relay(relay) => Box::new(tandem_io::net::connect(relay, REQUEST_TIMEOUT).await?),
        };
        if !t.tls {
            return Ok(raw);
        }
        let name = rustls_pki_types::ServerName::try_from(t.host.clone())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, raw)
            .await?;
        Ok(Box::new(tls))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let other = |m: String| ConnectorError::other(m.into(), None);
        let request = request
            .try_into_http1x()
            .map_err(|e| other(format!("request conversion: {e}")))?;
        let (mut parts, body) = request.into_parts();
        let t = target(&parts.uri).map_err(other)?;
        let body = body
            .bytes()
            .ok_or_else(|| other("streaming request bodies are not supported".into()))?
            .to_vec();
        if !parts.headers.contains_key(http::header::HOST) {
            let host = match (t.tls, t.port) {
                (true, 443) | (false, 80) => t.host.clone(),
                _ => format!("{}:{}", t.host, t.port),
            };
            let value = http::HeaderValue::from_str(&host).map_err(|_| other("invalid host".into()))?;
            parts.headers.insert(http::header::HOST, value);
        }
        // Origin-form request target on a direct connection.
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        parts.uri = path.parse().map_err(|_| other("invalid request path".into()))?;
        let request = http::Request::from_parts(parts, Full::new(bytes::Bytes::from(body)));

        let stream = self.dial(&t).await.map_err(|e| ConnectorError::io(e.into()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectorError::io(e.into()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ConnectorError::io(e.into()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ConnectorError::io(e.to_string().into()))?
            .to_bytes();
        driver.abort();
        HttpResponse::try_from(http::Response::from_parts(parts, SdkBody::from(body)))
            .map_err(|e| other(format!("response conversion: {e}")))
    }
}

impl HttpConnector for KmsConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, this.send(request)).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::timeout("KMS request timed out".into())),
            }
        })
    }
}

impl HttpClient for KmsConnector {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!("tcp".parse::<KmsTransport>().unwrap(), KmsTransport::Direct);
        assert_eq!(
            "vsock".parse::<KmsTransport>().unwrap(),
            KmsTransport::Relay(Addr::vsock(3, 8000))
        );
        assert_eq!(
            "vsock://3:8443".parse::<KmsTransport>().unwrap(),
            KmsTransport::Relay(Addr::vsock(3, 8443))
        );
        assert_eq!(
            "tcp://127.0.0.1:8000".parse::<KmsTransport>().unwrap(),
            KmsTransport::Relay(Addr::tcp("127.0.0.1", 8000))
        );
        for bad in [
            "",
            "udp",
            "vsock://",
            "vsock://3",
            "vsock://0:8000",
            "vsock://3:x",
            "vsock://:9000",
            "vsock://any:8000",
            "tcp://127.0.0.1:0",
        ] {
            assert!(bad.parse::<KmsTransport>().is_err(), "{bad:?}");
        }
    }

    /// The relay path (the vsock-proxy in Nitro mode) through its TCP twin: whatever host
    /// the URI names, the connector dials the relay and sends the request there, with the
    /// URI's host in `Host`.
    #[tokio::test]
    async fn a_relay_receives_the_request_for_the_uris_host() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr: Addr = relay.local_addr().unwrap().into();
        let seen = tokio::spawn(async move {
            let (mut s, _) = relay.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let connector = KmsConnector::new(KmsTransport::Relay(relay_addr)).unwrap();
        let request = http::Request::builder()
            .method("POST")
            .uri("http://kms.eu-west-1.amazonaws.com/")
            .body(SdkBody::from("{}"))
            .unwrap();
        let response = connector.send(HttpRequest::try_from(request).unwrap()).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let head = seen.await.unwrap();
        assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("host: kms.eu-west-1.amazonaws.com\r\n"),
            "{head}"
        );
    }

    #[test]
    fn targets_come_from_the_uri() {
        let t = |s: &str| target(&s.parse().unwrap());
        assert_eq!(
            t("https://kms.eu-west-1.amazonaws.com/").unwrap(),
            Target {
                host: "kms.eu-west-1.amazonaws.com".into(),
                port: 443,
                tls: true
            }
        );
        assert_eq!(
            t("http://127.0.0.1:4566/").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 4566,
                tls: false
            }
        );
        assert!(t("ftp://x/").is_err());
    }
}
