//! The binary envelope every protocol message travels in.
//!
//! ```text
//!   magic "TDM" │ version │ flow │ direction │ step │ binding (32) │ payload (postcard)
//! ```
//!
//! The header binds the payload to one flow, one session, one step and one direction, and
//! [`Envelope::open`] checks all four against what the receiving state machine expects
//! before the payload is decoded: a message replayed into another session or step, sent
//! to another flow or reflected back to its sender is refused with a typed error. The
//! `binding` is the session id, except in the device's first message where no session id
//! exists yet and it is the device's nonce (see [`crate::ids::SessionId::derive`]).
//!
//! The envelope is plain: confidentiality and integrity against the host come from the
//! sealed channel that wraps the whole envelope (DESIGN.md §5), which needs no change
//! to this format or to the flows.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::ProtocolError;
pub use crate::flow::Flow;

/// Current envelope format version. Bump it when the payload encoding changes (2: the
/// flows' sealed done messages, commit-then-reveal DKG proofs, generations in answers).
pub const FORMAT_VERSION: u8 = 2;

/// The largest message accepted. The biggest legitimate message (the DKG's OT setup) is
/// about 180 KB; the limit leaves room and still refuses memory-exhaustion attempts.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

const MAGIC: &[u8; 3] = b"TDM";
const HEADER_LEN: usize = 3 + 1 + 1 + 1 + 1 + 32;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// From the device to the enclave (`clientMessage`).
    ToEnclave = 0,
    /// From the enclave to the device (`serverMessage`, `serverPartial`).
    ToDevice = 1,
}

/// What a receiver expects of the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The flow of the session.
    pub flow: Flow,
    /// The direction the message must travel.
    pub direction: Direction,
    /// The step the session is at.
    pub step: u8,
    /// The session id (or, for the device's first message, its nonce).
    pub binding: [u8; 32],
}

/// Namespace for sealing and opening envelopes.
pub struct Envelope;

impl Envelope {
    /// Encodes `payload` under the header `header`.
    pub fn seal<T: Serialize>(header: Expect, payload: &T) -> Result<Vec<u8>, ProtocolError> {
        let body = postcard::to_allocvec(payload).map_err(|_| ProtocolError::Internal("payload failed to encode"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(header.flow as u8);
        out.push(header.direction as u8);
        out.push(header.step);
        out.extend_from_slice(&header.binding);
        out.extend_from_slice(&body);
        if out.len() > MAX_MESSAGE_LEN {
            return Err(ProtocolError::Internal("outgoing message exceeds the size limit"));
        }
        Ok(out)
    }

    /// Reads the header without checking it against any expectation: used by the enclave
    /// to learn the device's nonce from a first message.
    pub fn peek(bytes: &[u8]) -> Result<Expect, ProtocolError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(ProtocolError::Malformed("message shorter than its header"));
        }
        if &bytes[..3] != MAGIC {
            return Err(ProtocolError::Malformed("not a Tandem protocol message"));
        }
        if bytes[3] != FORMAT_VERSION {
            return Err(ProtocolError::UnsupportedVersion(bytes[3]));
        }
        let flow = Flow::from_u8(bytes[4]).ok_or(ProtocolError::Malformed("unknown flow"))?;
        let direction = match bytes[5] {
            0 => Direction::ToEnclave,
            1 => Direction::ToDevice,
            _ => return Err(ProtocolError::Malformed("unknown direction")),
        };
        let mut binding = [0u8; 32];
        binding.copy_from_slice(&bytes[7..HEADER_LEN]);
        Ok(Expect {
            flow,
            direction,
            step: bytes[6],
            binding,
        })
    }

    /// Checks the header against `expect` and decodes the payload. The checks run in an
    /// order that gives the most useful error: version, flow, direction, session, step.
    pub fn open<T: DeserializeOwned>(bytes: &[u8], expect: Expect) -> Result<T, ProtocolError> {
        let got = Self::peek(bytes)?;
        if got.flow != expect.flow {
            return Err(ProtocolError::WrongFlow {
                expected: expect.flow,
                got: got.flow,
            });
        }
        if got.direction != expect.direction {
            return Err(ProtocolError::WrongDirection);
        }
        if got.binding != expect.binding {
            return Err(ProtocolError::WrongSession);
        }
        if got.step != expect.step {
            return Err(ProtocolError::WrongStep {
                expected: expect.step,
                got: got.step,
            });
        }
        let (value, rest) = postcard::take_from_bytes::<T>(&bytes[HEADER_LEN..])
            .map_err(|_| ProtocolError::Malformed("payload does not decode"))?;
        if !rest.is_empty() {
            return Err(ProtocolError::Malformed("trailing bytes after the payload"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(step: u8) -> Expect {
        Expect {
            flow: Flow::Sign,
            direction: Direction::ToEnclave,
            step,
            binding: [7; 32],
        }
    }

    #[test]
    fn round_trip_and_every_header_check() {
        let msg = Envelope::seal(header(1), &(42u32, vec![1u8, 2, 3])).unwrap();
        let v: (u32, Vec<u8>) = Envelope::open(&msg, header(1)).unwrap();
        assert_eq!(v, (42, vec![1, 2, 3]));

        let err = Envelope::open::<(u32, Vec<u8>)>(&msg, header(2)).unwrap_err();
        assert_eq!(err, ProtocolError::WrongStep { expected: 2, got: 1 });
        let other = Expect {
            binding: [8; 32],
            ..header(1)
        };
        assert_eq!(
            Envelope::open::<(u32, Vec<u8>)>(&msg, other).unwrap_err(),
            ProtocolError::WrongSession
        );
        let dkg = Expect {
            flow: Flow::Dkg,
            ..header(1)
        };
        assert!(matches!(
            Envelope::open::<(u32, Vec<u8>)>(&msg, dkg).unwrap_err(),
            ProtocolError::WrongFlow { .. }
        ));
        let back = Expect {
            direction: Direction::ToDevice,
            ..header(1)
        };
        assert_eq!(
            Envelope::open::<(u32, Vec<u8>)>(&msg, back).unwrap_err(),
            ProtocolError::WrongDirection
        );
    }

    #[test]
    fn refuses_truncation_trailing_bytes_versions_and_oversize() {
        let msg = Envelope::seal(header(0), &(42u32, vec![9u8; 40])).unwrap();
        for cut in [0, 2, HEADER_LEN - 1, HEADER_LEN, msg.len() - 1] {
            assert!(
                Envelope::open::<(u32, Vec<u8>)>(&msg[..cut], header(0)).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(
            Envelope::open::<(u32, Vec<u8>)>(&longer, header(0)).unwrap_err(),
            ProtocolError::Malformed("trailing bytes after the payload")
        );
        let mut v2 = msg;
        v2[3] = 1;
        assert_eq!(
            Envelope::open::<(u32, Vec<u8>)>(&v2, header(0)).unwrap_err(),
            ProtocolError::UnsupportedVersion(1)
        );
        let huge = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            Envelope::peek(&huge).unwrap_err(),
            ProtocolError::TooLarge { .. }
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Envelope::open::<(u32, Vec<u8>)>(&bytes, header(0));
        }
    }
}
