//! The parent's blob service: where a Nitro Enclave (no disk) keeps its sealed blobs.
//!
//! Both halves live here: [`serve`] (the parent side, a small service over any
//! [`BlobStore`], normally a [`FileBlobStore`](super::FileBlobStore) under a directory)
//! and [`ParentBlobStore`] (the enclave side, a [`BlobStore`] that calls it).
//!
//! NOTE (placement): the service side belongs in `tandem-proxy`, which is still being built
//! by another engineer and not yet committed; it is kept here, free of enclave state, so
//! the proxy can call [`serve`] (through its `tandem-enclave` dependency or by moving this
//! file) without changes. The enclave never trusts what it gets back: every blob is
//! authenticated by the sealer on read, and the service sees only ciphertext.
//!
//! Wire protocol, one request per connection, both directions framed as
//! `u32 big-endian length ‖ postcard bytes`, first byte of each payload the protocol
//! version (1):
//!
//! ```text
//! enclave → parent: Get{name} | Put{name, blob, expect} | Delete{name} | List
//! parent → enclave: Blob(Option<(version, bytes)>) | Written(version) | Deleted
//!                   | Names([name]) | Error{kind: Io|Conflict(current)|BadRequest, message}
//! ```
//!
//! Transports: `tcp://HOST:PORT` and `unix:///path` (mock mode, tests), `vsock://CID:PORT`
//! (Nitro: the parent is CID 3). The enclave side uses blocking sockets because the
//! keystore calls its store on the blocking pool.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::KeystoreError;
use super::blob::{BlobName, BlobStore, Expect, Versioned};

const PROTOCOL: u8 = 1;
/// Largest frame either side accepts (a sealed account is ~1 KB; the key ring less).
pub const MAX_FRAME: usize = 4 << 20;
/// How long the enclave waits for the parent on one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the blob service listens / is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAddr {
    /// TCP (mock mode, tests).
    Tcp(String),
    /// A Unix socket path (mock mode).
    Unix(PathBuf),
    /// vsock (Nitro): the parent instance is CID 3.
    Vsock {
        /// Context id (3 = the parent).
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl std::str::FromStr for ServiceAddr {
    type Err = String;

    /// Parses `tcp://HOST:PORT`, `unix:///path` or `vsock://CID:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = parse_vsock(rest)?;
            return Ok(ServiceAddr::Vsock { cid, port });
        }
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path".into());
            }
            return Ok(ServiceAddr::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = s.strip_prefix("tcp://")
            && let Some((host, port)) = hostport.rsplit_once(':')
            && !host.is_empty()
            && port.parse::<u16>().is_ok()
        {
            return Ok(ServiceAddr::Tcp(hostport.to_string()));
        }
        Err(format!(
            "{s:?} is not tcp://HOST:PORT, unix:///path or vsock://CID:PORT"
        ))
    }
}

/// Parses `CID:PORT` of a vsock address (both u32; CID 0 and 1 are reserved and refused).
pub fn parse_vsock(s: &str) -> Result<(u32, u32), String> {
    let (cid, port) = s.split_once(':').ok_or_else(|| format!("{s:?} is not CID:PORT"))?;
    let cid: u32 = cid.parse().map_err(|_| format!("vsock CID {cid:?} is not a number"))?;
    let port: u32 = port
        .parse()
        .map_err(|_| format!("vsock port {port:?} is not a number"))?;
    if cid < 2 {
        return Err(format!("vsock CID {cid} is reserved (use 3 for the parent)"));
    }
    Ok((cid, port))
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
enum WireExpect {
    Any,
    Absent,
    Version(u64),
}

impl From<Expect> for WireExpect {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Any => WireExpect::Any,
            Expect::Absent => WireExpect::Absent,
            Expect::Version(v) => WireExpect::Version(v),
        }
    }
}

impl From<WireExpect> for Expect {
    fn from(e: WireExpect) -> Self {
        match e {
            WireExpect::Any => Expect::Any,
            WireExpect::Absent => Expect::Absent,
            WireExpect::Version(v) => Expect::Version(v),
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Get {
        name: String,
    },
    Put {
        name: String,
        blob: Vec<u8>,
        expect: WireExpect,
    },
    Delete {
        name: String,
    },
    List,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
enum ErrorKind {
    Io,
    Conflict(Option<u64>),
    BadRequest,
}

#[derive(Serialize, Deserialize, Debug)]
enum Response {
    Blob(Option<(u64, Vec<u8>)>),
    Written(u64),
    Deleted,
    Names(Vec<String>),
    Error { kind: ErrorKind, message: String },
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KeystoreError> {
    let mut body = vec![PROTOCOL];
    body.extend(postcard::to_allocvec(v).map_err(|_| KeystoreError::Io("blob service: encoding failed".into()))?);
    let len = u32::try_from(body.len()).map_err(|_| KeystoreError::Io("blob service: frame too large".into()))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    match body.split_first() {
        Some((&PROTOCOL, rest)) => postcard::from_bytes(rest).map_err(|_| "frame does not decode".to_string()),
        Some((v, _)) => Err(format!("unknown blob service protocol version {v}")),
        None => Err("empty frame".into()),
    }
}

fn frame_len(header: [u8; 4]) -> Result<usize, String> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(format!("frame of {len} bytes refused"));
    }
    Ok(len)
}

// ---------------------------------------------------------------------------------------
// Parent side.

/// Answers one request against `store`.
fn handle(store: &dyn BlobStore, request: Request) -> Response {
    let name = |s: &str| BlobName::parse(s).ok_or(());
    let bad = |m: &str| Response::Error {
        kind: ErrorKind::BadRequest,
        message: m.into(),
    };
    let result = match request {
        Request::Get { name: n } => match name(&n) {
            Ok(n) => store.get(&n).map(|v| Response::Blob(v.map(|v| (v.version, v.blob)))),
            Err(()) => return bad("invalid blob name"),
        },
        Request::Put { name: n, blob, expect } => match name(&n) {
            Ok(n) => store.put(&n, &blob, expect.into()).map(Response::Written),
            Err(()) => return bad("invalid blob name"),
        },
        Request::Delete { name: n } => match name(&n) {
            Ok(n) => store.delete(&n).map(|()| Response::Deleted),
            Err(()) => return bad("invalid blob name"),
        },
        Request::List => store
            .list()
            .map(|names| Response::Names(names.iter().map(BlobName::as_text).collect())),
    };
    result.unwrap_or_else(|e| match e {
        KeystoreError::Conflict { current } => Response::Error {
            kind: ErrorKind::Conflict(current),
            message: e.to_string(),
        },
        other => Response::Error {
            kind: ErrorKind::Io,
            message: other.to_string(),
        },
    })
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, store: Arc<dyn BlobStore>) {
    let mut header = [0u8; 4];
    let response = async {
        tokio::time::timeout(CALL_TIMEOUT, stream.read_exact(&mut header))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut body = vec![0u8; frame_len(header)?];
        tokio::time::timeout(CALL_TIMEOUT, stream.read_exact(&mut body))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let request: Request = decode(&body)?;
        tokio::task::spawn_blocking(move || handle(&*store, request))
            .await
            .map_err(|_| "store task failed".to_string())
    }
    .await
    .unwrap_or_else(|message| Response::Error {
        kind: ErrorKind::BadRequest,
        message,
    });
    if let Ok(bytes) = encode(&response) {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    }
}

/// A bound blob-service listener.
pub enum ServiceListener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
    /// vsock (Nitro parent).
    Vsock(tokio_vsock::VsockListener),
}

impl ServiceListener {
    /// Binds `addr` (for vsock, the parent binds its own CID or `VMADDR_CID_ANY`).
    pub async fn bind(addr: &ServiceAddr) -> std::io::Result<Self> {
        match addr {
            ServiceAddr::Tcp(a) => Ok(ServiceListener::Tcp(tokio::net::TcpListener::bind(a).await?)),
            ServiceAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                Ok(ServiceListener::Unix(tokio::net::UnixListener::bind(p)?))
            }
            ServiceAddr::Vsock { cid, port } => Ok(ServiceListener::Vsock(tokio_vsock::VsockListener::bind(
                tokio_vsock::VsockAddr::new(*cid, *port),
            )?)),
        }
    }

    /// The bound address as a dialable string (learn the port after binding port 0).
    pub fn local_addr(&self) -> String {
        match self {
            ServiceListener::Tcp(l) => l.local_addr().map(|a| format!("tcp://{a}")).unwrap_or_default(),
            ServiceListener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix://{}", p.display())))
                .unwrap_or_default(),
            ServiceListener::Vsock(l) => l
                .local_addr()
                .map(|a| format!("vsock://{}:{}", a.cid(), a.port()))
                .unwrap_or_default(),
        }
    }
}

/// Serves the blob service on `listener` over `store` until `shutdown`. Each connection
/// carries one request; the store serializes writes and enforces compare-and-swap.
pub async fn serve(listener: ServiceListener, store: Arc<dyn BlobStore>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let store = store.clone();
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok(Conn::Tcp(s)) => {
                tracker.spawn(async move {
                    serve_conn(s, store).await;
                    drop(permit)
                });
            }
            Ok(Conn::Unix(s)) => {
                tracker.spawn(async move {
                    serve_conn(s, store).await;
                    drop(permit)
                });
            }
            Ok(Conn::Vsock(s)) => {
                tracker.spawn(async move {
                    serve_conn(s, store).await;
                    drop(permit)
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "blob service accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    Vsock(tokio_vsock::VsockStream),
}

async fn accept(listener: &ServiceListener) -> std::io::Result<Conn> {
    match listener {
        ServiceListener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        ServiceListener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        ServiceListener::Vsock(l) => l.accept().await.map(|(s, _)| Conn::Vsock(s)),
    }
}

// ---------------------------------------------------------------------------------------
// Enclave side.

/// The enclave's [`BlobStore`] on the parent's blob service. Blocking (the keystore calls
/// it on the blocking pool); one connection per call, with timeouts.
pub struct ParentBlobStore {
    addr: ServiceAddr,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl ParentBlobStore {
    /// A store on the service at `addr`. Nothing is dialled until the first call.
    pub fn new(addr: ServiceAddr) -> Self {
        ParentBlobStore { addr }
    }

    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        match &self.addr {
            ServiceAddr::Tcp(a) => {
                use std::net::ToSocketAddrs;
                let sa = a
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
                let s = std::net::TcpStream::connect_timeout(&sa, CALL_TIMEOUT)?;
                s.set_read_timeout(Some(CALL_TIMEOUT))?;
                s.set_write_timeout(Some(CALL_TIMEOUT))?;
                Ok(Box::new(s))
            }
            ServiceAddr::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)?;
                s.set_read_timeout(Some(CALL_TIMEOUT))?;
                s.set_write_timeout(Some(CALL_TIMEOUT))?;
                Ok(Box::new(s))
            }
            ServiceAddr::Vsock { cid, port } => {
                let s = vsock::VsockStream::connect_with_cid_port(*cid, *port)?;
                s.set_read_timeout(Some(CALL_TIMEOUT))?;
                s.set_write_timeout(Some(CALL_TIMEOUT))?;
                Ok(Box::new(s))
            }
        }
    }

    fn call(&self, request: &Request) -> Result<Response, KeystoreError> {
        let io = |what: &str, e: std::io::Error| KeystoreError::Io(format!("blob service {what}: {}", e.kind()));
        let mut s = self.connect().map_err(|e| io("connect", e))?;
        s.write_all(&encode(request)?).map_err(|e| io("write", e))?;
        s.flush().map_err(|e| io("write", e))?;
        let mut header = [0u8; 4];
        s.read_exact(&mut header).map_err(|e| io("read", e))?;
        let len = frame_len(header).map_err(|m| KeystoreError::Io(format!("blob service: {m}")))?;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| io("read", e))?;
        let response: Response = decode(&body).map_err(|m| KeystoreError::Io(format!("blob service: {m}")))?;
        match response {
            Response::Error {
                kind: ErrorKind::Conflict(current),
                ..
            } => Err(KeystoreError::Conflict { current }),
            Response::Error { message, .. } => {
                let mut message = message;
                message.truncate(200);
                Err(KeystoreError::Io(format!("blob service: {message}")))
            }
            ok => Ok(ok),
        }
    }
}

fn unexpected() -> KeystoreError {
    KeystoreError::Io("blob service answered out of turn".into())
}

impl BlobStore for ParentBlobStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        match self.call(&Request::Get { name: name.as_text() })? {
            Response::Blob(v) => Ok(v.map(|(version, blob)| Versioned { version, blob })),
            _ => Err(unexpected()),
        }
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        let request = Request::Put {
            name: name.as_text(),
            blob: blob.to_vec(),
            expect: expect.into(),
        };
        match self.call(&request)? {
            Response::Written(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        match self.call(&Request::Delete { name: name.as_text() })? {
            Response::Deleted => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        match self.call(&Request::List)? {
            // A name the enclave cannot parse is the parent's junk: skip it.
            Response::Names(names) => Ok(names.iter().filter_map(|n| BlobName::parse(n)).collect()),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{FileBlobStore, MemoryBlobStore};
    use tandem_core::AccountId;

    #[test]
    fn parses_service_addresses() {
        assert_eq!(
            "vsock://3:7000".parse::<ServiceAddr>().unwrap(),
            ServiceAddr::Vsock { cid: 3, port: 7000 }
        );
        assert_eq!(
            "tcp://127.0.0.1:9".parse::<ServiceAddr>().unwrap(),
            ServiceAddr::Tcp("127.0.0.1:9".into())
        );
        assert_eq!(
            "unix:///run/blobs.sock".parse::<ServiceAddr>().unwrap(),
            ServiceAddr::Unix("/run/blobs.sock".into())
        );
        for bad in [
            "vsock://3",
            "vsock://x:1",
            "vsock://1:8000",
            "vsock://3:99999999999",
            "tcp://nohost",
            "tcp://:80",
            "unix://",
            "http://x:1",
        ] {
            assert!(bad.parse::<ServiceAddr>().is_err(), "{bad}");
        }
    }

    async fn running(store: Arc<dyn BlobStore>) -> (ParentBlobStore, CancellationToken) {
        let listener = ServiceListener::bind(&ServiceAddr::Tcp("127.0.0.1:0".into()))
            .await
            .unwrap();
        let addr = listener.local_addr().parse().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, store, stop.clone()));
        (ParentBlobStore::new(addr), stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_enclave_side_sees_the_parents_store_with_versions_and_cas() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Arc::new(FileBlobStore::open(dir.path()).unwrap());
        let (client, stop) = running(backing.clone()).await;
        let name = BlobName::Account(AccountId::random().unwrap());
        let result = tokio::task::spawn_blocking(move || {
            assert_eq!(client.get(&name).unwrap(), None);
            assert_eq!(client.put(&name, b"one", Expect::Absent).unwrap(), 1);
            assert_eq!(client.put(&name, b"two", Expect::Version(1)).unwrap(), 2);
            let err = client.put(&name, b"stale", Expect::Version(1)).unwrap_err();
            assert!(matches!(err, KeystoreError::Conflict { current: Some(2) }), "{err:?}");
            let got = client.get(&name).unwrap().unwrap();
            assert_eq!((got.version, &got.blob[..]), (2, &b"two"[..]));
            assert_eq!(client.list().unwrap(), vec![name]);
            client.delete(&name).unwrap();
            assert_eq!(client.list().unwrap(), vec![]);
        })
        .await;
        stop.cancel();
        result.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_concurrent_writers_cannot_both_win() {
        let (client, stop) = running(Arc::new(MemoryBlobStore::default())).await;
        let client = Arc::new(client);
        let name = BlobName::Account(AccountId::random().unwrap());
        let c = client.clone();
        tokio::task::spawn_blocking(move || c.put(&name, b"base", Expect::Absent).unwrap())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let c = client.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                c.put(&name, &[i], Expect::Version(1))
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, 2);
                    wins += 1;
                }
                Err(KeystoreError::Conflict { current: Some(2) }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        stop.cancel();
        assert_eq!(wins, 1, "exactly one writer of version 2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_and_bad_names_are_refused_without_touching_the_store() {
        let store = Arc::new(MemoryBlobStore::default());
        let (client, stop) = running(store.clone()).await;
        let ServiceAddr::Tcp(addr) = client.addr.clone() else {
            unreachable!()
        };
        let result = tokio::task::spawn_blocking(move || {
            // A path-like name never reaches the store.
            let bad = Request::Put {
                name: "account/../../etc/passwd".into(),
                blob: b"x".to_vec(),
                expect: WireExpect::Any,
            };
            let err = client.call(&bad).unwrap_err();
            assert!(err.to_string().contains("invalid blob name"), "{err}");
            // Oversized frame header: refused, connection closed.
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(&u32::MAX.to_be_bytes()).unwrap();
            let mut header = [0u8; 4];
            s.read_exact(&mut header).unwrap();
            let mut body = vec![0u8; frame_len(header).unwrap()];
            s.read_exact(&mut body).unwrap();
            assert!(matches!(
                decode::<Response>(&body).unwrap(),
                Response::Error {
                    kind: ErrorKind::BadRequest,
                    ..
                }
            ));
        })
        .await;
        stop.cancel();
        result.unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn an_unreachable_parent_is_an_io_error() {
        // Port 1 on loopback: nothing listens there.
        let client = ParentBlobStore::new(ServiceAddr::Tcp("127.0.0.1:1".into()));
        let err = client.get(&BlobName::KeyRing).unwrap_err();
        assert!(matches!(err, KeystoreError::Io(_)), "{err:?}");
    }
}
