//! The credential push, end to end: IMDSv2 (a stand-in, `common::imds`) → the parent,
//! started through its real entry points (the library's `tandem_proxy::run` and the
//! `tandem-proxy` binary's flags) → the enclave's control listener → the credential slot
//! the enclave's KMS client reads, and again before the credentials expire.
//!
//! The enclave runs in this process in mock mode with the KMS key wrapper, so it has a
//! credential slot and waits at the `credentials` boot stage exactly as a Nitro enclave
//! does; its KMS endpoint is a closed port (what KMS then does is `enclave/tests/kms.rs`'s).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::imds::Imds;
use common::{ProxyProcess, bounded, closed_port};
use tandem_core::Addr;
use tandem_enclave::api::AppState;
use tandem_enclave::config::{Config, WrapperKind};
use tandem_enclave::kms::KmsConfig;
use tandem_enclave::kms::credentials::CredentialSlot;
use tandem_enclave::kms::http::KmsTransport;
use tandem_enclave::server::{Listener, Server, run_with_control};
use tandem_proxy::enclave::credentials::{CredentialPush, CredentialSource, RefreshPolicy, fetch};
use tandem_proxy::{ParentConfig, ProxyConfig, SetupError};
use tokio_util::sync::CancellationToken;

/// An enclave that wraps its data keys with KMS: it has a credential slot to fill.
struct KmsEnclave {
    state: Arc<AppState>,
    api: Addr,
    control: Addr,
    stop: CancellationToken,
}

impl Drop for KmsEnclave {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl KmsEnclave {
    async fn start(dir: &std::path::Path) -> KmsEnclave {
        let mut config = Config::mock(dir);
        config.wrapper = WrapperKind::Kms {
            kms: KmsConfig {
                region: "us-east-1".into(),
                endpoint: Some(format!("http://127.0.0.1:{}", closed_port().await)),
                key_id: "alias/tandem-test".into(),
                transport: KmsTransport::Direct,
            },
            danger_no_recipient: true,
        };
        let server = Server::open(&config).unwrap();
        let state = server.state().clone();
        let api = Listener::bind(&Addr::tcp("127.0.0.1", 0)).await.unwrap();
        let control = Listener::bind(&Addr::tcp("127.0.0.1", 0)).await.unwrap();
        let (api_addr, control_addr) = (api.local_addr().unwrap(), control.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(run_with_control(server, api, Some(control), stop.clone()));
        KmsEnclave {
            state,
            api: api_addr,
            control: control_addr,
            stop,
        }
    }

    fn slot(&self) -> &CredentialSlot {
        self.state.credentials.as_ref().unwrap()
    }

    /// The access key id of the usable credentials in the slot, if any.
    fn key_id(&self) -> Option<String> {
        self.slot().current().ok().map(|c| c.access_key_id().to_string())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Polls `f` every 50 ms until it gives a value, for at most `limit`.
async fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The proxy's HTTPS front, with development certificates in `dir`.
fn front(dir: &std::path::Path, enclave: Addr) -> ProxyConfig {
    let certs = tandem_proxy::tls::write_self_signed(&dir.join("tls"), &["127.0.0.1".into()]).unwrap();
    ProxyConfig::new(enclave, certs.tls_settings(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_pushes_imds_credentials_into_the_enclave_and_again_before_they_expire() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        // Credentials live 75 s; the enclave refuses any within 60 s of expiry, so the
        // parent must push again within 15 s, and this policy makes it push after ~3 s.
        let imds = Imds::start(Duration::from_secs(75)).await;
        let enclave = KmsEnclave::start(&dir.path().join("enclave")).await;
        assert_eq!(enclave.key_id(), None, "no credentials before the parent pushes");

        let mut config = ParentConfig::new(front(dir.path(), enclave.api.clone()), "127.0.0.1:0".parse().unwrap());
        config.enclave_control = Some(enclave.control.clone());
        config.credentials = Some(CredentialPush {
            source: format!("imds:{}", imds.url).parse().unwrap(),
            refresh: RefreshPolicy {
                before_expiry: Duration::from_secs(72),
                min_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(3600),
            },
        });
        let stop = CancellationToken::new();
        let parent = tokio::spawn(tandem_proxy::run(config, stop.clone()));

        let first = within(Duration::from_secs(30), "the first push", || enclave.key_id()).await;
        assert_eq!(first, "ASIAEMULATED000001");
        let issued = imds.issued.lock().unwrap().clone();
        assert_eq!(enclave.slot().expires_at(), Some(issued[0].expires_at));
        let creds = enclave.slot().current().unwrap();
        assert_eq!(
            creds.secret_access_key(),
            "emulated-secret-1",
            "the secret arrives intact"
        );
        assert_eq!(creds.session_token(), Some("emulated-session-token"));

        // The refresh: a new set lands while the first is still usable (its expiry minus
        // the enclave's one-minute margin), so a KMS call never finds the slot empty.
        let usable_until = issued[0].expires_at - 60;
        let second = within(
            Duration::from_secs(usable_until.saturating_sub(now())),
            "the refresh",
            || enclave.key_id().filter(|k| *k != first),
        )
        .await;
        assert_eq!(second, "ASIAEMULATED000002");
        assert!(now() < usable_until, "the refresh came after the first set expired");
        assert!(enclave.slot().expires_at() > Some(issued[0].expires_at));
        assert_eq!(
            *imds.refused.lock().unwrap(),
            0,
            "every IMDS call carried the session token"
        );
        // The same entry point pushed the clock.
        within(Duration::from_secs(10), "the clock push", || {
            enclave.state.clock.measured().then_some(())
        })
        .await;

        stop.cancel();
        parent.await.unwrap().unwrap();
    })
    .await;
}

/// The defect this guards against: `--push-credentials` was parsed and then never acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_binary_pushes_credentials_from_its_flags_and_never_logs_the_secret() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let imds = Imds::start(Duration::from_secs(3600)).await;
        let enclave = KmsEnclave::start(&dir.path().join("enclave")).await;
        let api_port = enclave
            .api
            .authority()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        let control = enclave.control.to_string();
        let source = format!("imds:{}", imds.url);
        let proxy = ProxyProcess::start(
            dir.path(),
            api_port,
            &["--enclave-control", &control, "--push-credentials", &source],
        );
        let key = within(Duration::from_secs(30), "the push from the binary", || enclave.key_id()).await;
        assert_eq!(key, "ASIAEMULATED000001");
        let log = proxy.log_text();
        assert!(log.contains("pushed AWS credentials to the enclave"), "{log}");
        assert!(
            log.contains("ASIAEMULATED000001"),
            "the access key id names the set in the log"
        );
        assert!(
            !log.contains("emulated-secret") && !log.contains("emulated-session-token"),
            "{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn imds_credentials_are_fetched_with_a_session_token_and_print_no_secret() {
    let imds = Imds::start(Duration::from_secs(3600)).await;
    let source: CredentialSource = format!("imds:{}", imds.url).parse().unwrap();
    let creds = fetch(&source).await.unwrap();
    assert_eq!(creds.access_key_id, "ASIAEMULATED000001");
    assert_eq!(creds.secret_access_key.expose(), "emulated-secret-1");
    assert_eq!(creds.expires_at, Some(imds.issued.lock().unwrap()[0].expires_at));
    assert!(!format!("{creds:?}").contains("emulated-secret"));
    assert_eq!(*imds.refused.lock().unwrap(), 0);
    // Nothing listening: an error naming the metadata service, not a hang.
    let gone: CredentialSource = format!("imds:http://127.0.0.1:{}", closed_port().await)
        .parse()
        .unwrap();
    let err = fetch(&gone).await.unwrap_err();
    assert!(err.to_string().starts_with("instance metadata"), "{err}");
}

#[tokio::test]
async fn a_parent_asked_to_push_credentials_without_a_control_listener_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ParentConfig::new(
        front(dir.path(), Addr::tcp("127.0.0.1", closed_port().await)),
        "127.0.0.1:0".parse().unwrap(),
    );
    config.credentials = Some(CredentialPush {
        source: CredentialSource::Env,
        refresh: RefreshPolicy::default(),
    });
    let err = tandem_proxy::run(config, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err}");
}
