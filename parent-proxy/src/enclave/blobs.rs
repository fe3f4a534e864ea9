//! The blob link, parent end: the blob service, where a Nitro Enclave (no disk) keeps its
//! sealed blobs.
//!
//! It serves a blob directory (`tandem_io::blob_dir`: one file per blob, atomic writes,
//! versions with compare-and-swap) to the enclave's `ParentBlobStore`, one request per
//! connection, in the frames of `tandem_core::parent::blobs`. It sees only ciphertext and
//! is not trusted with anything: the enclave authenticates every blob it reads back. It
//! checks every name before its store sees it, so no request can reach a file outside the
//! directory.

use std::sync::Arc;

use tandem_core::parent::blobs::{
    BlobErrorKind, BlobName, BlobRequest, BlobResponse, CALL_TIMEOUT, body_len, decode_body, encode_frame,
};
use tandem_io::blob_dir::{BlobDir, BlobDirError};
use tandem_io::net::{Listener, ServeLimits, Stream, serve_each};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// Requests served at once (each is a file read or an atomic write).
const MAX_CONNECTIONS: usize = 64;

/// Serves `store` on `listener` until `shutdown`; requests in flight then get the call
/// timeout to finish.
pub async fn serve(listener: Listener, store: Arc<BlobDir>, shutdown: CancellationToken) {
    let limits = ServeLimits {
        max_connections: MAX_CONNECTIONS,
        drain: CALL_TIMEOUT,
    };
    serve_each(listener, limits, shutdown, move |stream| {
        serve_conn(stream, store.clone())
    })
    .await;
}

/// Reads one request, answers it, closes.
async fn serve_conn(mut stream: Stream, store: Arc<BlobDir>) {
    let response = async {
        let mut header = [0u8; 4];
        tokio::time::timeout(CALL_TIMEOUT, stream.read_exact(&mut header))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut body = vec![0u8; body_len(header).map_err(|e| e.to_string())?];
        tokio::time::timeout(CALL_TIMEOUT, stream.read_exact(&mut body))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let request: BlobRequest = decode_body(&body).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || answer(&store, request))
            .await
            .map_err(|_| "store task failed".to_string())
    }
    .await
    .unwrap_or_else(|message| BlobResponse::Error {
        kind: BlobErrorKind::BadRequest,
        message,
    });
    if let Ok(bytes) = encode_frame(&response) {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    }
}

/// Answers one request against `store`.
fn answer(store: &BlobDir, request: BlobRequest) -> BlobResponse {
    let named = |text: &str| BlobName::parse(text).ok_or(());
    let result = match request {
        BlobRequest::Get { name } => match named(&name) {
            Ok(n) => store
                .get(&n)
                .map(|v| BlobResponse::Blob(v.map(|v| (v.version, v.blob)))),
            Err(()) => return bad_name(),
        },
        BlobRequest::Put { name, blob, expect } => match named(&name) {
            Ok(n) => store.put(&n, &blob, expect).map(BlobResponse::Written),
            Err(()) => return bad_name(),
        },
        BlobRequest::Delete { name } => match named(&name) {
            Ok(n) => store.delete(&n).map(|()| BlobResponse::Deleted),
            Err(()) => return bad_name(),
        },
        BlobRequest::List => store
            .list()
            .map(|names| BlobResponse::Names(names.iter().map(BlobName::as_text).collect())),
    };
    result.unwrap_or_else(|e| {
        let kind = match e {
            BlobDirError::Conflict { current } => BlobErrorKind::Conflict(current),
            BlobDirError::Io { .. } => {
                tracing::warn!(error = %e, "blob service: storage failed");
                BlobErrorKind::Io
            }
        };
        BlobResponse::Error {
            kind,
            message: e.to_string(),
        }
    })
}

fn bad_name() -> BlobResponse {
    BlobResponse::Error {
        kind: BlobErrorKind::BadRequest,
        message: "invalid blob name".into(),
    }
}

/// Both ends together: the enclave's client (`tandem_enclave::parent::blobs`) against
/// this service, over TCP (the twin of the vsock link).
#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::parent::blobs::ExpectVersion;
    use tandem_core::{AccountId, Addr};
    use tandem_enclave::keystore::{BlobStore, Expect, KeystoreError, ParentBlobStore};

    async fn running(dir: &std::path::Path) -> (ParentBlobStore, Addr, Arc<BlobDir>, CancellationToken) {
        let listener = Listener::bind(&Addr::tcp("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(BlobDir::open(dir).unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, store.clone(), stop.clone()));
        (ParentBlobStore::new(addr.clone()), addr, store, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_enclave_side_sees_the_parents_store_with_versions_and_cas() {
        let dir = tempfile::tempdir().unwrap();
        let (client, _, _, stop) = running(dir.path()).await;
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
        let dir = tempfile::tempdir().unwrap();
        let (client, _, _, stop) = running(dir.path()).await;
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
        let dir = tempfile::tempdir().unwrap();
        let (_, addr, store, stop) = running(dir.path()).await;
        let call = async |frame: Vec<u8>| {
            let mut s = tandem_io::net::connect(&addr, CALL_TIMEOUT).await.unwrap();
            s.write_all(&frame).await.unwrap();
            let mut header = [0u8; 4];
            s.read_exact(&mut header).await.unwrap();
            let mut body = vec![0u8; body_len(header).unwrap()];
            s.read_exact(&mut body).await.unwrap();
            decode_body::<BlobResponse>(&body).unwrap()
        };
        // A path-like name never reaches the store.
        let bad = BlobRequest::Put {
            name: "account/../../etc/passwd".into(),
            blob: b"x".to_vec(),
            expect: ExpectVersion::Any,
        };
        let answer = call(encode_frame(&bad).unwrap()).await;
        assert_eq!(answer, bad_name());
        // An oversized frame header, an unknown version, a body that does not decode.
        for frame in [
            u32::MAX.to_be_bytes().to_vec(),
            vec![0, 0, 0, 2, 7, 0],
            vec![0, 0, 0, 2, 1, 99],
        ] {
            let answer = call(frame.clone()).await;
            assert!(
                matches!(
                    answer,
                    BlobResponse::Error {
                        kind: BlobErrorKind::BadRequest,
                        ..
                    }
                ),
                "{frame:?}: {answer:?}"
            );
        }
        stop.cancel();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
