//! An enclave in this process, and the SDK talking to it without a socket.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tandem_enclave::config::StoreKind;
use tandem_enclave::keystore::BlobStore;
use tandem_enclave::{Config, Server};
use tandem_sdk::attestation::{AttestationPolicy, ImageMeasurements};
use tandem_sdk::transport::{HttpResponse, Method, Transport};
use tandem_sdk::{Client, SdkError};
use tower::ServiceExt;

/// A mock-mode enclave in this process (memory store unless configured otherwise).
pub struct InProcess {
    /// The server (its state is reachable for white-box assertions).
    pub server: Server,
    dev_root_pem: String,
    image: ImageMeasurements,
    capture: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// An enclave with the mock defaults and a memory store.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// An enclave whose configuration `configure` adjusts first.
    pub fn with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::build(tempfile::tempdir().unwrap(), configure, None)
    }

    /// An enclave over `store` (a hostile or failing store, in the attack tests).
    pub fn with_store(store: Arc<dyn BlobStore>, configure: impl FnOnce(&mut Config)) -> Self {
        Self::build(tempfile::tempdir().unwrap(), configure, Some(store))
    }

    /// An enclave whose data (master key, attestation chain) lives in `dir`: starting it
    /// again on the same `dir` and store is a restart.
    pub fn in_dir(dir: tempfile::TempDir, store: Arc<dyn BlobStore>) -> Self {
        Self::build(dir, |_| {}, Some(store))
    }

    fn build(dir: tempfile::TempDir, configure: impl FnOnce(&mut Config), store: Option<Arc<dyn BlobStore>>) -> Self {
        let mut config = Config::mock(dir.path());
        config.store = StoreKind::Memory;
        configure(&mut config);
        let server = match store {
            Some(store) => Server::open_with_store(&config, store).unwrap(),
            None => Server::open(&config).unwrap(),
        };
        let dev_root_pem = std::fs::read_to_string(server.dev_root_pem().unwrap()).unwrap();
        let image =
            ImageMeasurements::from_json(&std::fs::read_to_string(server.measurements_path().unwrap()).unwrap())
                .unwrap();
        InProcess {
            server,
            dev_root_pem,
            image,
            capture: Arc::new(Mutex::new(Vec::new())),
            _dir: dir,
        }
    }

    /// The policy a client of this enclave uses: its development root and its image.
    pub fn policy(&self) -> AttestationPolicy {
        AttestationPolicy::nitro()
            .danger_allow_mock(&self.dev_root_pem)
            .unwrap()
            .accept_image(self.image.clone())
    }

    /// This enclave's development root (PEM).
    pub fn dev_root_pem(&self) -> &str {
        &self.dev_root_pem
    }

    /// This enclave's (mock) image.
    pub fn image(&self) -> &ImageMeasurements {
        &self.image
    }

    /// A transport to this enclave's router, recording every body.
    pub fn transport(&self) -> Arc<RouterTransport> {
        Arc::new(RouterTransport {
            app: self.server.app(),
            capture: self.capture.clone(),
        })
    }

    /// The SDK's client of this enclave, trusting its root and image.
    pub fn client(&self) -> Client {
        self.client_with(self.policy())
    }

    /// The SDK's client of this enclave with another policy.
    pub fn client_with(&self, policy: AttestationPolicy) -> Client {
        Client::builder("in-process")
            .transport(self.transport())
            .attestation(policy)
            .build()
            .unwrap()
    }

    /// POSTs raw bytes to `path`; returns the status and the JSON answer (Null if none).
    pub async fn raw(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let resp = self.server.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        self.capture.lock().unwrap().extend_from_slice(&bytes);
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// POSTs `body` as JSON.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let text = body.to_string();
        self.capture.lock().unwrap().extend_from_slice(text.as_bytes());
        self.raw(path, text).await
    }

    /// POSTs and asserts 200.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }

    /// Everything sent and received so far, as a host would have seen it.
    pub fn captured(&self) -> Vec<u8> {
        self.capture.lock().unwrap().clone()
    }

    /// Stops this enclave, keeping its data directory (to start it again: a restart).
    pub fn stop(self) -> tempfile::TempDir {
        self._dir
    }

    /// How many accounts the keystore holds.
    pub async fn accounts(&self) -> usize {
        self.server.state().keystore.list().await.unwrap().len()
    }
}

impl Default for InProcess {
    fn default() -> Self {
        Self::new()
    }
}

/// The SDK's transport to an in-process router: `oneshot` per request, every body kept.
pub struct RouterTransport {
    app: axum::Router,
    capture: Arc<Mutex<Vec<u8>>>,
}

#[async_trait::async_trait]
impl Transport for RouterTransport {
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<HttpResponse, SdkError> {
        let body = body.unwrap_or_default();
        self.capture.lock().unwrap().extend_from_slice(&body);
        let req = match method {
            Method::Get => Request::get(path).body(Body::empty()),
            Method::Post => Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body)),
        }
        .map_err(|e| SdkError::Transport(e.to_string()))?;
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| SdkError::Transport(e.to_string()))?;
        self.capture.lock().unwrap().extend_from_slice(&bytes);
        Ok(HttpResponse {
            status,
            body: bytes.to_vec(),
        })
    }

    fn describe(&self) -> String {
        "in-process enclave".into()
    }
}
