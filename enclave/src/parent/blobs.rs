//! The blob link, enclave end: [`ParentBlobStore`], the keystore's [`BlobStore`] on the
//! parent's blob service (`tandem_proxy::enclave::blobs`).
//!
//! One connection per call, blocking (the keystore calls its store on the blocking pool),
//! with the call timeout of the contract (`tandem_core::parent::blobs`). The enclave never
//! trusts what comes back: every blob is authenticated by the sealer on read, and the
//! service sees only ciphertext.

use std::io::{Read, Write};

use tandem_core::Addr;
use tandem_core::parent::blobs::{
    BlobErrorKind, BlobRequest, BlobResponse, CALL_TIMEOUT, FrameError, body_len, decode_body, encode_frame,
};

use crate::keystore::{BlobName, BlobStore, Expect, KeystoreError, Versioned};

/// The enclave's [`BlobStore`] on the parent's blob service at an address (Nitro:
/// `vsock://3:PORT`; mock mode: TCP or Unix).
pub struct ParentBlobStore {
    addr: Addr,
}

fn frame_error(e: FrameError) -> KeystoreError {
    KeystoreError::Io(format!("blob service: {e}"))
}

impl ParentBlobStore {
    /// A store on the service at `addr`. Nothing is dialled until the first call.
    pub fn new(addr: Addr) -> Self {
        ParentBlobStore { addr }
    }

    fn call(&self, request: &BlobRequest) -> Result<BlobResponse, KeystoreError> {
        let io = |what: &str, e: std::io::Error| KeystoreError::Io(format!("blob service {what}: {}", e.kind()));
        let mut s = tandem_io::net::connect_blocking(&self.addr, CALL_TIMEOUT).map_err(|e| io("connect", e))?;
        s.write_all(&encode_frame(request).map_err(frame_error)?)
            .map_err(|e| io("write", e))?;
        s.flush().map_err(|e| io("write", e))?;
        let mut header = [0u8; 4];
        s.read_exact(&mut header).map_err(|e| io("read", e))?;
        let mut body = vec![0u8; body_len(header).map_err(frame_error)?];
        s.read_exact(&mut body).map_err(|e| io("read", e))?;
        match decode_body(&body).map_err(frame_error)? {
            BlobResponse::Error {
                kind: BlobErrorKind::Conflict(current),
                ..
            } => Err(KeystoreError::Conflict { current }),
            BlobResponse::Error { mut message, .. } => {
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
        match self.call(&BlobRequest::Get { name: name.as_text() })? {
            BlobResponse::Blob(v) => Ok(v.map(|(version, blob)| Versioned { version, blob })),
            _ => Err(unexpected()),
        }
    }

    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        let request = BlobRequest::Put {
            name: name.as_text(),
            blob: blob.to_vec(),
            expect: expect.into(),
        };
        match self.call(&request)? {
            BlobResponse::Written(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        match self.call(&BlobRequest::Delete { name: name.as_text() })? {
            BlobResponse::Deleted => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        match self.call(&BlobRequest::List)? {
            // A name the enclave cannot parse is the parent's junk: skip it.
            BlobResponse::Names(names) => Ok(names.iter().filter_map(|n| BlobName::parse(n)).collect()),
            _ => Err(unexpected()),
        }
    }
}

// The round trips against the real service are tested on the parent's side, where the
// service lives (`tandem_proxy::enclave::blobs`), with this client.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_parent_is_an_io_error() {
        // Port 1 on loopback: nothing listens there.
        let client = ParentBlobStore::new(Addr::tcp("127.0.0.1", 1));
        let err = client.get(&BlobName::KeyRing).unwrap_err();
        assert!(matches!(err, KeystoreError::Io(_)), "{err:?}");
    }

    #[test]
    fn a_parent_answering_garbage_is_an_io_error_not_a_panic() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in [
                &u32::MAX.to_be_bytes()[..],
                &[0, 0, 0, 2, 9, 9][..],
                &[0, 0, 0, 2, 1, 99][..],
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut header = [0u8; 4];
                s.read_exact(&mut header).unwrap();
                let mut body = vec![0u8; body_len(header).unwrap()];
                s.read_exact(&mut body).unwrap();
                s.write_all(answer).unwrap();
            }
        });
        let client = ParentBlobStore::new(Addr::tcp("127.0.0.1", port));
        for expected in ["refused", "version 9", "does not decode"] {
            let err = client.list().unwrap_err();
            assert!(
                matches!(&err, KeystoreError::Io(m) if m.contains(expected)),
                "{expected}: {err:?}"
            );
        }
        server.join().unwrap();
    }
}
