//! The account's public key, validated once at the boundary.

use k256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use serde::{Deserialize, Serialize};

/// A secp256k1 public key in compressed SEC1 form (33 bytes).
///
/// A value of this type is always a valid, non-identity curve point: it can only be built
/// through [`PublicKey::from_sec1`], which checks the encoding ("parse, don't validate").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 33]);

/// The bytes are not a valid secp256k1 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid secp256k1 public key")]
pub struct InvalidPublicKey;

impl PublicKey {
    /// Parses a compressed (33-byte) or uncompressed (65-byte) SEC1 encoding.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, InvalidPublicKey> {
        let point = k256::AffinePoint::from_sec1_bytes(bytes).map_err(|_| InvalidPublicKey)?;
        Self::from_affine(&point)
    }

    /// Wraps a curve point; the identity is refused (it is nobody's key).
    pub(crate) fn from_affine(point: &k256::AffinePoint) -> Result<Self, InvalidPublicKey> {
        let encoded = point.to_sec1_point(true);
        let bytes: [u8; 33] = encoded.as_bytes().try_into().map_err(|_| InvalidPublicKey)?;
        Ok(PublicKey(bytes))
    }

    /// The curve point.
    pub(crate) fn to_affine(self) -> k256::AffinePoint {
        // invariant: the bytes were produced from a valid point in `from_affine`.
        k256::AffinePoint::from_sec1_bytes(&self.0).unwrap_or(k256::AffinePoint::IDENTITY)
    }

    /// The compressed SEC1 encoding (33 bytes, `02`/`03` tag).
    pub fn to_compressed(&self) -> [u8; 33] {
        self.0
    }

    /// The uncompressed SEC1 encoding (65 bytes, `04` tag), as Ethereum hashes it.
    pub fn to_uncompressed(&self) -> [u8; 65] {
        let encoded = self.to_affine().to_sec1_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(encoded.as_bytes());
        out
    }

    /// Lowercase hex of the compressed encoding, as the wire API carries it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TryFrom<String> for PublicKey {
    type Error = InvalidPublicKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(s.trim_start_matches("0x")).map_err(|_| InvalidPublicKey)?;
        PublicKey::from_sec1(&bytes)
    }
}

impl From<PublicKey> for String {
    fn from(pk: PublicKey) -> String {
        pk.to_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_identity() {
        assert!(PublicKey::from_sec1(&[0u8; 33]).is_err());
        assert!(PublicKey::from_sec1(&[2u8; 10]).is_err());
        assert!(PublicKey::from_sec1(&[0u8]).is_err());
    }

    #[test]
    fn round_trips_through_json_and_both_encodings() {
        let g = k256::AffinePoint::GENERATOR;
        let pk = PublicKey::from_affine(&g).unwrap();
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), pk);
        assert_eq!(PublicKey::from_sec1(&pk.to_uncompressed()).unwrap(), pk);
    }
}
