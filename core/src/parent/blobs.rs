//! The blob link: where a Nitro Enclave keeps its sealed blobs, on its parent.
//!
//! One request per connection; both directions are one frame,
//! `u32 big-endian length ‖ version byte ‖ postcard bytes`, the length covering the
//! version byte and the postcard bytes and at most [`MAX_FRAME`]:
//!
//! ```text
//! enclave → parent: Get{name} | Put{name, blob, expect} | Delete{name} | List
//! parent → enclave: Blob(Option<(version, bytes)>) | Written(version) | Deleted
//!                   | Names([name]) | Error{kind: Io | Conflict(current) | BadRequest, message}
//! ```
//!
//! Names are the keystore's blob names (`keyring`, `account/<id>`, …); the parent's
//! service checks them before touching its store, and the enclave skips names it cannot
//! parse. `Put` is a compare-and-swap on the stored version ([`ExpectVersion`]), so two
//! writers cannot both win. The framing is written by hand (four bytes of length) because
//! the enclave's end is blocking (the keystore calls its store on the blocking pool) and the
//! parent's is async: one pair of pure functions serves both.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::AccountId;

/// The version byte every frame starts with.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest frame either side accepts (a sealed account is about 1 KB; the key ring less).
pub const MAX_FRAME: usize = 4 << 20;

/// How long either side waits for the other on one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a blob is, and so where it lives. Names are closed (no free-form paths), so a
/// store can never be asked to touch a file outside its directory; the parent's service
/// refuses a request whose name does not parse before its store sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum BlobName {
    /// The sealed record of one account.
    Account(AccountId),
    /// The wrapped data keys (the key ring), stored beside the blobs they open.
    KeyRing,
}

impl BlobName {
    /// The name on the wire: `account/<32 hex>` or `keyring`.
    pub fn as_text(&self) -> String {
        match self {
            BlobName::Account(id) => format!("account/{id}"),
            BlobName::KeyRing => "keyring".into(),
        }
    }

    /// Parses [`as_text`](Self::as_text); anything else is refused.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "keyring" {
            return Some(BlobName::KeyRing);
        }
        s.strip_prefix("account/")
            .and_then(|h| AccountId::parse(h).ok())
            .map(BlobName::Account)
    }

    /// The file a directory store keeps it in: `<account id>.blob` or `keyring.blob`.
    pub fn file_name(&self) -> String {
        match self {
            // AccountId is 32 hex digits by construction: it cannot name another directory.
            BlobName::Account(id) => format!("{id}.blob"),
            BlobName::KeyRing => "keyring.blob".into(),
        }
    }

    /// Parses [`file_name`](Self::file_name); anything else (temporary files) is `None`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".blob")?;
        if stem == "keyring" {
            return Some(BlobName::KeyRing);
        }
        AccountId::parse(stem).ok().map(BlobName::Account)
    }
}

/// What a `Put` expects to find stored.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectVersion {
    /// Write whatever is there.
    Any,
    /// Write only if nothing is stored.
    Absent,
    /// Write only if this version is stored.
    Version(u64),
}

/// The enclave's call.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum BlobRequest {
    /// Read one blob.
    Get {
        /// Its name.
        name: String,
    },
    /// Write one blob (compare-and-swap).
    Put {
        /// Its name.
        name: String,
        /// The sealed bytes.
        blob: Vec<u8>,
        /// What must be stored for the write to happen.
        expect: ExpectVersion,
    },
    /// Delete one blob (absent is fine).
    Delete {
        /// Its name.
        name: String,
    },
    /// Every stored name.
    List,
}

/// What went wrong on the parent.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobErrorKind {
    /// The parent's storage failed.
    Io,
    /// The compare-and-swap found another version (`None`: absent). Nothing was written.
    Conflict(Option<u64>),
    /// The request was malformed (bad frame, bad name).
    BadRequest,
}

/// The parent's answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum BlobResponse {
    /// To `Get`: the stored version and bytes, if any.
    Blob(Option<(u64, Vec<u8>)>),
    /// To `Put`: the version now stored.
    Written(u64),
    /// To `Delete`.
    Deleted,
    /// To `List`.
    Names(Vec<String>),
    /// To anything.
    Error {
        /// What kind of failure.
        kind: BlobErrorKind,
        /// For logs (never secret: the parent has none).
        message: String,
    },
}

/// Why a frame could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message does not encode (cannot happen for these types).
    #[error("blob frame: encoding failed")]
    Encode,
    /// The announced or built length is 0 or over [`MAX_FRAME`].
    #[error("blob frame of {0} bytes refused")]
    BadLength(usize),
    /// The first byte is not [`PROTOCOL_VERSION`].
    #[error("unknown blob protocol version {0}")]
    UnknownVersion(u8),
    /// The body does not decode as the expected message.
    #[error("blob frame does not decode")]
    Malformed,
}

/// The whole frame for `message`: length header, version byte, postcard body.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(message).map_err(|_| FrameError::Encode)?;
    let len = body.len() + 1;
    if len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    let header = u32::try_from(len).map_err(|_| FrameError::BadLength(len))?;
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&header.to_be_bytes());
    frame.push(PROTOCOL_VERSION);
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces, checked before anything is allocated.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    Ok(len)
}

/// Decodes a frame's body (what follows the header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match body.split_first() {
        Some((&PROTOCOL_VERSION, rest)) => postcard::from_bytes(rest).map_err(|_| FrameError::Malformed),
        Some((&v, _)) => Err(FrameError::UnknownVersion(v)),
        None => Err(FrameError::BadLength(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + DeserializeOwned>(m: &T) -> T {
        let frame = encode_frame(m).unwrap();
        let header: [u8; 4] = frame[..4].try_into().unwrap();
        assert_eq!(body_len(header).unwrap(), frame.len() - 4);
        decode_body(&frame[4..]).unwrap()
    }

    #[test]
    fn names_round_trip_and_refuse_paths() {
        let name = BlobName::Account(AccountId::random().unwrap());
        assert_eq!(BlobName::parse(&name.as_text()), Some(name));
        assert_eq!(BlobName::from_file_name(&name.file_name()), Some(name));
        assert_eq!(BlobName::parse("keyring"), Some(BlobName::KeyRing));
        assert_eq!(BlobName::from_file_name("keyring.blob"), Some(BlobName::KeyRing));
        for bad in ["", "account/", "account/../../etc/passwd", "keyring/x", "account/ABC"] {
            assert_eq!(BlobName::parse(bad), None, "{bad}");
        }
        assert_eq!(BlobName::from_file_name(".keyring.blob.x1.tmp"), None);
    }

    #[test]
    fn every_message_survives_a_frame() {
        let requests = [
            BlobRequest::Get { name: "keyring".into() },
            BlobRequest::Put {
                name: "account/x".into(),
                blob: vec![1, 2, 3],
                expect: ExpectVersion::Version(7),
            },
            BlobRequest::Delete {
                name: "account/x".into(),
            },
            BlobRequest::List,
        ];
        for r in requests {
            assert_eq!(roundtrip(&r), r);
        }
        let responses = [
            BlobResponse::Blob(Some((2, vec![9; 100]))),
            BlobResponse::Blob(None),
            BlobResponse::Written(3),
            BlobResponse::Deleted,
            BlobResponse::Names(vec!["keyring".into()]),
            BlobResponse::Error {
                kind: BlobErrorKind::Conflict(Some(2)),
                message: "m".into(),
            },
        ];
        for r in responses {
            assert_eq!(roundtrip(&r), r);
        }
    }

    /// The bytes on the wire are part of the contract: a change here breaks deployed pairs.
    #[test]
    fn the_frame_layout_is_fixed() {
        let frame = encode_frame(&BlobRequest::Get { name: "ab".into() }).unwrap();
        // length 5 = version + variant 0 + string length 2 + "ab"
        assert_eq!(frame, [0, 0, 0, 5, 1, 0, 2, b'a', b'b']);
    }

    #[test]
    fn bad_frames_are_refused_before_allocation() {
        assert_eq!(
            body_len(u32::MAX.to_be_bytes()),
            Err(FrameError::BadLength(u32::MAX as usize))
        );
        assert_eq!(body_len([0; 4]), Err(FrameError::BadLength(0)));
        assert_eq!(decode_body::<BlobRequest>(&[2, 0]), Err(FrameError::UnknownVersion(2)));
        assert_eq!(decode_body::<BlobRequest>(&[1, 99]), Err(FrameError::Malformed));
        assert_eq!(decode_body::<BlobRequest>(&[]), Err(FrameError::BadLength(0)));
        let huge = BlobRequest::Put {
            name: "n".into(),
            blob: vec![0; MAX_FRAME],
            expect: ExpectVersion::Any,
        };
        assert!(matches!(encode_frame(&huge), Err(FrameError::BadLength(_))));
    }
}
