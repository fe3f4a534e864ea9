//! A stand-in for the EC2 instance metadata service (IMDSv2), for the credential push:
//! it insists on the session-token dance as EC2 does, and hands out a fresh set of role
//! credentials on every fetch, each expiring `lifetime` after it was issued.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

const TOKEN: &str = "AQAEAImdsSessionToken==";
/// The instance role's name.
pub(crate) const ROLE: &str = "tandem-parent";

/// One set of credentials handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    /// `ASIAEMULATED000001`, `…02`, …
    pub(crate) access_key_id: String,
    /// Unix seconds.
    pub(crate) expires_at: u64,
}

/// The running emulator.
pub(crate) struct Imds {
    /// `http://127.0.0.1:PORT`, for `--push-credentials imds:URL`.
    pub(crate) url: String,
    /// The port.
    pub(crate) port: u16,
    /// Every set handed out, in order.
    pub(crate) issued: Arc<Mutex<Vec<Issued>>>,
    /// Requests refused for a missing or wrong session token.
    pub(crate) refused: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

impl Imds {
    /// Starts the emulator on a free loopback port.
    pub(crate) async fn start(lifetime: Duration) -> Imds {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (i, r) = (issued.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (issued, refused) = (i.clone(), r.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (issued, refused) = (issued.clone(), refused.clone());
                    async move { Ok::<_, Infallible>(Self::handle(&req, lifetime, &issued, &refused)) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Imds {
            url: format!("http://127.0.0.1:{port}"),
            port,
            issued,
            refused,
            task,
        }
    }

    fn handle(
        req: &Request<Incoming>,
        lifetime: Duration,
        issued: &Mutex<Vec<Issued>>,
        refused: &Mutex<usize>,
    ) -> Response<Full<Bytes>> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let path = req.uri().path();
        if req.method() == hyper::Method::PUT && path == "/latest/api/token" {
            return match header("x-aws-ec2-metadata-token-ttl-seconds") {
                Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                    answer(StatusCode::OK, TOKEN.into())
                }
                _ => answer(StatusCode::BAD_REQUEST, String::new()),
            };
        }
        if header("x-aws-ec2-metadata-token") != Some(TOKEN) {
            *refused.lock().unwrap() += 1;
            return answer(StatusCode::UNAUTHORIZED, String::new());
        }
        match path {
            "/latest/meta-data/iam/security-credentials/" => answer(StatusCode::OK, format!("{ROLE}\n")),
            p if p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
                let mut issued = issued.lock().unwrap();
                let set = Issued {
                    access_key_id: format!("ASIAEMULATED{:06}", issued.len() + 1),
                    expires_at: now() + lifetime.as_secs(),
                };
                issued.push(set.clone());
                let expiration = time::OffsetDateTime::from_unix_timestamp(set.expires_at as i64)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let body = serde_json::json!({
                    "Code": "Success",
                    "LastUpdated": "2026-01-01T00:00:00Z",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": set.access_key_id,
                    "SecretAccessKey": format!("emulated-secret-{}", issued.len()),
                    "Token": "emulated-session-token",
                    "Expiration": expiration,
                });
                answer(StatusCode::OK, body.to_string())
            }
            _ => answer(StatusCode::NOT_FOUND, String::new()),
        }
    }
}
