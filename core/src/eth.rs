//! Ethereum primitives both parties need: keccak-256, addresses and EIP-55 checksums.
//!
//! The enclave reports an account's address at DKG time and the device checks it, so the
//! derivation lives here rather than in either side. Transaction encoding and signing
//! payloads (EIP-155/191/712/1559) belong to the SDK, which uses alloy for them.

use sha3::{Digest, Keccak256};

use crate::keys::PublicKey;

/// Keccak-256 (the pre-standard variant Ethereum uses, not SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A 20-byte Ethereum account address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

/// Why a string is not an Ethereum address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `0x` followed by 40 hex digits.
    #[error("an address is 0x followed by 40 hex digits")]
    Format,
    /// Mixed case that does not match the EIP-55 checksum (probably a typo).
    #[error("address has mixed case but its EIP-55 checksum does not match")]
    Checksum,
}

impl Address {
    /// The address of a public key: the last 20 bytes of keccak-256 of the uncompressed
    /// point without its `0x04` tag.
    pub fn from_public_key(public_key: &PublicKey) -> Self {
        let uncompressed = public_key.to_uncompressed();
        let hash = keccak256(&uncompressed[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// The EIP-55 mixed-case checksummed form, e.g. `0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed`.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (4 * (1 - i % 2))) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Parses `0x`-prefixed hex. All-lowercase and all-uppercase are accepted as they
    /// carry no checksum; mixed case must match EIP-55.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let digits = s.strip_prefix("0x").ok_or(AddressError::Format)?;
        if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddressError::Format);
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(digits, &mut out).map_err(|_| AddressError::Format)?;
        let address = Address(out);
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && address.to_checksum() != s {
            return Err(AddressError::Checksum);
        }
        Ok(address)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_examples_from_the_eip() {
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a.to_checksum(), s);
        }
    }

    #[test]
    fn parse_rejects_bad_checksum_and_format() {
        assert_eq!(
            Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            Err(AddressError::Checksum)
        );
        assert!(Address::parse("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        assert_eq!(
            Address::parse("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(AddressError::Format)
        );
        assert_eq!(Address::parse("0x5aaeb6"), Err(AddressError::Format));
        assert_eq!(
            Address::parse("0xzzaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(AddressError::Format)
        );
    }

    #[test]
    fn address_of_the_eip155_vector_key() {
        // ETHEREUM-VECTORS.md: private key 0x46…46 has address 0x9d8A62f6…5A4F.
        use k256::elliptic_curve::sec1::ToSec1Point;
        let sk = k256::SecretKey::from_slice(&[0x46; 32]).unwrap();
        let point = sk.public_key().as_affine().to_sec1_point(true);
        let pk = PublicKey::from_sec1(point.as_bytes()).unwrap();
        assert_eq!(
            Address::from_public_key(&pk).to_checksum(),
            "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"
        );
    }

    #[test]
    fn keccak_of_empty_input() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }
}
