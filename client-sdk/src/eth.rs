//! Ethereum payloads and signature assembly.
//!
//! The MPC protocol signs a bare 32-byte digest; everything that gives the digest a meaning
//! on Ethereum lives here: the EIP-191 `personal_sign` hash, the EIP-712 typed-data hash,
//! transaction building and raw encoding (legacy with EIP-155, EIP-2930, EIP-1559), and
//! [`assemble`], the independent check every signature passes before the SDK returns it.
//!
//! Hashing and encoding are delegated to alloy so that they match what nodes and wallets
//! compute; this module only decides which alloy calls to make and refuses anything it
//! cannot vouch for.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy, TypedTransaction};
use alloy_dyn_abi::TypedData;
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, B256, Bytes, Signature, TxKind, U256, uint};
use serde_json::Value;

use crate::SdkError;

/// The order `n` of the secp256k1 group.
const SECP256K1_N: U256 = uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);

/// `n / 2` (rounded down): the largest `s` a low-S signature may have.
const SECP256K1_HALF_N: U256 = uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// Turns the MPC protocol's signature into an alloy [`Signature`], after checking it
/// independently of the MPC library.
///
/// Why: the signature comes out of a two-party protocol with an unaudited library and a
/// remote peer, so the SDK does not take its word for it. The check refuses, with
/// [`SdkError::SignatureCheck`]:
///
/// * a recovery id other than 0 or 1 (2 and 3 mean `r` overflowed `n`, which Ethereum
///   cannot express);
/// * `r` or `s` outside `1..n`, and any `s > n/2`: Ethereum requires low-S (EIP-2), and a
///   high-S signature is a sign the protocol output was not normalized as promised;
/// * a signature whose recovered address is not `expected`. The other parity is never
///   tried: a wrong recovery id means the output is not what the protocol promised, and
///   the SDK fails closed rather than patching it up.
pub fn assemble(sig: &tandem_core::Signature, digest: &B256, expected: Address) -> Result<Signature, SdkError> {
    let y_parity = match sig.recovery_id {
        0 => false,
        1 => true,
        _ => return Err(SdkError::SignatureCheck("recovery id is not 0 or 1")),
    };
    let r = U256::from_be_bytes(sig.r);
    let s = U256::from_be_bytes(sig.s);
    if r.is_zero() || r >= SECP256K1_N {
        return Err(SdkError::SignatureCheck("r is out of range"));
    }
    if s.is_zero() {
        return Err(SdkError::SignatureCheck("s is zero"));
    }
    if s > SECP256K1_HALF_N {
        return Err(SdkError::SignatureCheck("s is not low (s > n/2)"));
    }
    let signature = Signature::new(r, s, y_parity);
    let recovered = signature
        .recover_address_from_prehash(digest)
        .map_err(|_| SdkError::SignatureCheck("no public key recovers from the signature"))?;
    if recovered != expected {
        return Err(SdkError::SignatureCheck(
            "signature does not recover the account's address",
        ));
    }
    Ok(signature)
}

/// The EIP-191 `personal_sign` hash of `message`:
/// `keccak256("\x19Ethereum Signed Message:\n" ‖ len(message) ‖ message)`.
///
/// Why: the prefix makes a signed message impossible to replay as a transaction or as
/// typed data, which is what wallets show users as "sign message".
pub fn eip191_hash(message: &[u8]) -> B256 {
    alloy_primitives::eip191_hash_message(message)
}

/// The EIP-712 domain fields in the order EIP-712 fixes, with their types.
const DOMAIN_FIELDS: [(&str, &str); 5] = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
];

fn invalid(message: impl Into<String>) -> SdkError {
    SdkError::InvalidInput(message.into())
}

/// Parses EIP-712 typed data in the `eth_signTypedData_v4` shape: a JSON object with
/// `types` (including `EIP712Domain`), `primaryType`, `domain` and `message`. A JSON
/// string holding that object (as some dapps send it) is accepted too.
///
/// Why stricter than alloy: alloy's parser silently ignores unknown `domain` keys (a
/// misspelled `chainID` simply vanishes) and builds the domain from the keys present,
/// whatever `types.EIP712Domain` declares, while wallets and on-chain verifiers follow the
/// declaration. Either mismatch would produce a signature over a domain other than the one
/// the caller meant, so this function requires `types.EIP712Domain` to declare exactly the
/// domain's fields, in EIP-712's order and with EIP-712's types, and refuses anything else
/// with [`SdkError::InvalidInput`].
pub fn parse_typed_data(json: &str) -> Result<TypedData, SdkError> {
    let value: Value = serde_json::from_str(json).map_err(|e| invalid(format!("typed data is not valid JSON: {e}")))?;
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner)
            .map_err(|e| invalid(format!("typed data is a string that does not hold valid JSON: {e}")))?,
        other => other,
    };
    check_domain(&value)?;
    serde_json::from_value(value)
        .map_err(|e| invalid(format!("typed data does not have the eth_signTypedData_v4 shape: {e}")))
}

/// Checks the top-level shape and that `types.EIP712Domain` matches `domain` exactly.
fn check_domain(value: &Value) -> Result<(), SdkError> {
    let obj = value
        .as_object()
        .ok_or_else(|| invalid("typed data must be a JSON object with types, primaryType, domain and message"))?;
    let types = obj
        .get("types")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("typed data needs a \"types\" object"))?;
    if !obj.get("primaryType").is_some_and(Value::is_string) {
        return Err(invalid("typed data needs a \"primaryType\" string"));
    }
    let domain = obj
        .get("domain")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("typed data needs a \"domain\" object"))?;
    let declared = types
        .get("EIP712Domain")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("types must declare EIP712Domain (the domain's fields)"))?;

    for key in domain.keys() {
        if !DOMAIN_FIELDS.iter().any(|(name, _)| name == key) {
            return Err(invalid(format!(
                "domain has the field {key:?}, which EIP-712 does not define \
                 (allowed: name, version, chainId, verifyingContract, salt)"
            )));
        }
    }
    let expected: Vec<(&str, &str)> = DOMAIN_FIELDS
        .iter()
        .copied()
        .filter(|(name, _)| domain.get(*name).is_some_and(|v| !v.is_null()))
        .collect();
    let mut got = Vec::with_capacity(declared.len());
    for field in declared {
        let name = field.get("name").and_then(Value::as_str);
        let ty = field.get("type").and_then(Value::as_str);
        match (name, ty) {
            (Some(name), Some(ty)) => got.push((name, ty)),
            _ => {
                return Err(invalid(
                    "each EIP712Domain field needs a \"name\" and a \"type\" string",
                ));
            }
        }
    }
    if got != expected {
        let show = |fields: &[(&str, &str)]| {
            fields
                .iter()
                .map(|(n, t)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(invalid(format!(
            "types.EIP712Domain declares ({}) but the domain's values need ({}), in this order",
            show(&got),
            show(&expected)
        )));
    }
    Ok(())
}

/// The EIP-712 signing hash `keccak256("\x19\x01" ‖ domainSeparator ‖ hashStruct(message))`
/// of typed data in the `eth_signTypedData_v4` JSON shape (see [`parse_typed_data`]).
///
/// Why: this is the digest a wallet signs for `eth_signTypedData_v4`, and the one
/// contracts verify with `ecrecover`. Malformed input is refused with
/// [`SdkError::InvalidInput`] explaining what is wrong.
pub fn typed_data_hash(json: &str) -> Result<B256, SdkError> {
    parse_typed_data(json)?
        .eip712_signing_hash()
        .map_err(|e| invalid(format!("typed data cannot be encoded: {e}")))
}

/// The fee model and type-specific fields of a transaction to build.
///
/// Why an enum: each transaction type has its own fee fields, and an enum makes a
/// half-specified transaction (a legacy gas price together with EIP-1559 fees)
/// unrepresentable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxKindParams {
    /// A legacy (type 0) transaction, replay-protected with the EIP-155 chain id.
    Legacy {
        /// Price per unit of gas, in wei.
        gas_price: u128,
    },
    /// An EIP-2930 (type 1) transaction: legacy pricing plus an access list.
    Eip2930 {
        /// Price per unit of gas, in wei.
        gas_price: u128,
        /// Addresses and storage slots the transaction pre-declares.
        access_list: AccessList,
    },
    /// An EIP-1559 (type 2) transaction: base fee plus priority tip.
    Eip1559 {
        /// The most the sender pays per unit of gas (base fee + tip), in wei.
        max_fee_per_gas: u128,
        /// The most the sender tips the block producer per unit of gas, in wei.
        max_priority_fee_per_gas: u128,
        /// Addresses and storage slots the transaction pre-declares.
        access_list: AccessList,
    },
}

/// Everything needed to build an unsigned transaction.
///
/// Why: the CLI collects these from flags and a node's answers (nonce, fees); keeping them
/// in one plain struct keeps the building in one place ([`build_tx`]) that tests cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxParams {
    /// The chain the transaction is valid on (signed into every type, EIP-155 for legacy).
    pub chain_id: u64,
    /// The sender's nonce.
    pub nonce: u64,
    /// The recipient, or `None` to create a contract from `data`.
    pub to: Option<Address>,
    /// Wei to transfer.
    pub value: U256,
    /// The gas limit.
    pub gas_limit: u64,
    /// The transaction type and its fee fields.
    pub kind: TxKindParams,
    /// Call data, or init code when `to` is `None`.
    pub data: Bytes,
}

/// Builds the unsigned transaction `p` describes.
///
/// Why: one constructor for every type the SDK signs; legacy transactions always carry the
/// chain id (EIP-155) so a signature cannot be replayed on another chain.
pub fn build_tx(p: &TxParams) -> TypedTransaction {
    let to = p.to.map_or(TxKind::Create, TxKind::Call);
    match &p.kind {
        TxKindParams::Legacy { gas_price } => TxLegacy {
            chain_id: Some(p.chain_id),
            nonce: p.nonce,
            gas_price: *gas_price,
            gas_limit: p.gas_limit,
            to,
            value: p.value,
            input: p.data.clone(),
        }
        .into(),
        TxKindParams::Eip2930 { gas_price, access_list } => TxEip2930 {
            chain_id: p.chain_id,
            nonce: p.nonce,
            gas_price: *gas_price,
            gas_limit: p.gas_limit,
            to,
            value: p.value,
            access_list: access_list.clone(),
            input: p.data.clone(),
        }
        .into(),
        TxKindParams::Eip1559 {
            max_fee_per_gas,
            max_priority_fee_per_gas,
            access_list,
        } => TxEip1559 {
            chain_id: p.chain_id,
            nonce: p.nonce,
            gas_limit: p.gas_limit,
            max_fee_per_gas: *max_fee_per_gas,
            max_priority_fee_per_gas: *max_priority_fee_per_gas,
            to,
            value: p.value,
            access_list: access_list.clone(),
            input: p.data.clone(),
        }
        .into(),
    }
}

/// The digest to sign for `tx`: keccak-256 of its signing payload (for legacy, the EIP-155
/// form with the chain id; for typed transactions, the type byte then the RLP fields).
///
/// Why: the MPC protocol signs digests only; this is the digest that makes the signature
/// valid for this transaction and nothing else.
pub fn signing_hash(tx: &TypedTransaction) -> B256 {
    tx.signature_hash()
}

/// The raw signed transaction: its EIP-2718 encoding (untagged RLP for legacy, the type
/// byte then RLP for typed transactions), ready for `eth_sendRawTransaction`.
///
/// Why: the last step before broadcasting; pass a signature from [`assemble`] over
/// [`signing_hash`] of the same `tx`, so it is known to be low-S and from the sender.
pub fn encode_signed(tx: TypedTransaction, sig: Signature) -> Vec<u8> {
    tx.into_envelope(sig).encoded_2718()
}

#[cfg(test)]
mod tests {
    use alloy_consensus::TxEnvelope;
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_eips::eip2718::Decodable2718;
    use alloy_eips::eip2930::AccessListItem;
    use alloy_primitives::{address, b256, hex, keccak256};
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    fn key(hex_key: &str) -> PrivateKeySigner {
        hex_key.parse().unwrap()
    }

    /// Signs `digest` with a plain key and converts the result into the MPC protocol's
    /// output type, as if the enclave had produced it.
    fn plain_sign(signer: &PrivateKeySigner, digest: &B256) -> tandem_core::Signature {
        let sig = signer.sign_hash_sync(digest).unwrap();
        tandem_core::Signature {
            r: sig.r().to_be_bytes::<32>(),
            s: sig.s().to_be_bytes::<32>(),
            recovery_id: u8::from(sig.v()),
        }
    }

    const MAIL_JSON: &str = r#"{
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}
            ],
            "Person": [
                {"name": "name", "type": "string"},
                {"name": "wallet", "type": "address"}
            ],
            "Mail": [
                {"name": "from", "type": "Person"},
                {"name": "to", "type": "Person"},
                {"name": "contents", "type": "string"}
            ]
        },
        "primaryType": "Mail",
        "domain": {
            "name": "Ether Mail",
            "version": "1",
            "chainId": 1,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
        },
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!"
        }
    }"#;

    fn eip155_params() -> TxParams {
        TxParams {
            chain_id: 1,
            nonce: 9,
            to: Some(address!("3535353535353535353535353535353535353535")),
            value: U256::from(1_000_000_000_000_000_000u128),
            gas_limit: 21_000,
            kind: TxKindParams::Legacy {
                gas_price: 20_000_000_000,
            },
            data: Bytes::new(),
        }
    }

    #[test]
    fn eip155_legacy_vector() {
        let signer = key("4646464646464646464646464646464646464646464646464646464646464646");
        assert_eq!(signer.address(), address!("9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"));

        let tx = build_tx(&eip155_params());
        assert_eq!(
            tx.encoded_for_signing(),
            hex!("ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080")
        );
        let hash = signing_hash(&tx);
        assert_eq!(
            hash,
            b256!("daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53")
        );

        let sig = assemble(&plain_sign(&signer, &hash), &hash, signer.address()).unwrap();
        assert_eq!(
            sig.r(),
            U256::from_be_bytes(hex!("28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276"))
        );
        assert_eq!(
            sig.s(),
            U256::from_be_bytes(hex!("67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"))
        );
        // v = 37 = 35 + 2·chainId + parity, so the parity is 0.
        assert!(!sig.v());
        assert_eq!(alloy_consensus::transaction::to_eip155_value(sig.v(), Some(1)), 37);

        let raw = encode_signed(tx, sig);
        assert_eq!(
            raw,
            hex!(
                "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a0"
                "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a0"
                "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
            )
        );
        let decoded = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
        assert_eq!(decoded.recover_signer().unwrap(), signer.address());
    }

    #[test]
    fn eip712_mail_vector() {
        let typed = parse_typed_data(MAIL_JSON).unwrap();
        assert_eq!(
            typed.domain.separator(),
            b256!("f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
        );
        assert_eq!(
            typed.hash_struct().unwrap(),
            b256!("c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
        );
        let digest = typed_data_hash(MAIL_JSON).unwrap();
        assert_eq!(
            digest,
            b256!("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
        );

        let signer = PrivateKeySigner::from_bytes(&keccak256("cow")).unwrap();
        let sig = assemble(&plain_sign(&signer, &digest), &digest, signer.address()).unwrap();
        assert_eq!(
            sig.as_bytes(),
            hex!(
                "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
                "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
                "1c"
            )
        );
        assert!(sig.v(), "v = 28 means parity 1");
    }

    #[test]
    fn typed_data_given_as_a_json_string_is_accepted() {
        let wrapped = serde_json::to_string(MAIL_JSON).unwrap();
        assert_eq!(typed_data_hash(&wrapped).unwrap(), typed_data_hash(MAIL_JSON).unwrap());
    }

    #[test]
    fn eip191_vectors() {
        assert_eq!(
            eip191_hash(b"Hello World"),
            b256!("a1de988600a42c4b4ab089b619297c17d53cffae5d5120d82d8a92d0bb3b78f2")
        );

        let signer = key("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318");
        assert_eq!(signer.address(), address!("2c7536E3605D9C16a7a3D7b1898e529396a65c23"));
        let hash = eip191_hash(b"Some data");
        assert_eq!(
            hash,
            b256!("1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655")
        );
        let sig = assemble(&plain_sign(&signer, &hash), &hash, signer.address()).unwrap();
        assert_eq!(
            sig.as_bytes(),
            hex!(
                "b91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd"
                "6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a029"
                "1c"
            )
        );
    }

    #[test]
    fn assemble_refuses_high_s() {
        let signer = key("4646464646464646464646464646464646464646464646464646464646464646");
        let hash = eip191_hash(b"malleable");
        let good = plain_sign(&signer, &hash);
        // The malleated twin (n - s, other parity) is a valid ECDSA signature by the same
        // key, so only the low-S rule can refuse it.
        let high = tandem_core::Signature {
            r: good.r,
            s: (SECP256K1_N - U256::from_be_bytes(good.s)).to_be_bytes::<32>(),
            recovery_id: good.recovery_id ^ 1,
        };
        let twin = Signature::new(
            U256::from_be_bytes(high.r),
            U256::from_be_bytes(high.s),
            high.recovery_id == 1,
        );
        assert_eq!(twin.recover_address_from_prehash(&hash).unwrap(), signer.address());
        assert!(matches!(
            assemble(&high, &hash, signer.address()),
            Err(SdkError::SignatureCheck(_))
        ));
        assert!(assemble(&good, &hash, signer.address()).is_ok());
    }

    #[test]
    fn assemble_refuses_wrong_recovery_id() {
        let signer = key("4646464646464646464646464646464646464646464646464646464646464646");
        let hash = eip191_hash(b"parity");
        let good = plain_sign(&signer, &hash);
        let flipped = tandem_core::Signature {
            recovery_id: good.recovery_id ^ 1,
            ..good
        };
        assert!(matches!(
            assemble(&flipped, &hash, signer.address()),
            Err(SdkError::SignatureCheck(_))
        ));
        for recovery_id in [2, 3, 27] {
            let bad = tandem_core::Signature { recovery_id, ..good };
            assert!(matches!(
                assemble(&bad, &hash, signer.address()),
                Err(SdkError::SignatureCheck(_))
            ));
        }
    }

    #[test]
    fn assemble_refuses_another_key_and_another_digest() {
        let signer = key("4646464646464646464646464646464646464646464646464646464646464646");
        let other = key("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318");
        let hash = eip191_hash(b"whose key?");
        let by_other = plain_sign(&other, &hash);
        assert!(matches!(
            assemble(&by_other, &hash, signer.address()),
            Err(SdkError::SignatureCheck(_))
        ));
        let good = plain_sign(&signer, &hash);
        let other_digest = eip191_hash(b"something else");
        assert!(matches!(
            assemble(&good, &other_digest, signer.address()),
            Err(SdkError::SignatureCheck(_))
        ));
    }

    #[test]
    fn assemble_refuses_out_of_range_scalars() {
        let signer = key("4646464646464646464646464646464646464646464646464646464646464646");
        let hash = eip191_hash(b"range");
        let good = plain_sign(&signer, &hash);
        let n = SECP256K1_N.to_be_bytes::<32>();
        for bad in [
            tandem_core::Signature { r: [0; 32], ..good },
            tandem_core::Signature { s: [0; 32], ..good },
            tandem_core::Signature { r: n, ..good },
            tandem_core::Signature { r: [0xff; 32], ..good },
            tandem_core::Signature { s: [0xff; 32], ..good },
        ] {
            assert!(matches!(
                assemble(&bad, &hash, signer.address()),
                Err(SdkError::SignatureCheck(_))
            ));
        }
    }

    #[test]
    fn half_n_is_n_shifted() {
        assert_eq!(SECP256K1_HALF_N, SECP256K1_N >> 1);
    }

    fn assert_invalid(json: &str, needle: &str) {
        match typed_data_hash(json) {
            Err(SdkError::InvalidInput(m)) => {
                assert!(m.contains(needle), "{m:?} should mention {needle:?}")
            }
            other => panic!("expected InvalidInput for {json}, got {other:?}"),
        }
    }

    #[test]
    fn typed_data_refuses_garbage() {
        assert_invalid("not json", "not valid JSON");
        assert_invalid("", "not valid JSON");
        assert_invalid("[1, 2]", "JSON object");
        assert_invalid("\"{oops\"", "string");
        assert_invalid(r#"{"primaryType": "Mail", "domain": {}, "message": {}}"#, "types");
        assert_invalid(
            r#"{"types": {"EIP712Domain": []}, "domain": {}, "message": {}}"#,
            "primaryType",
        );
        assert_invalid(
            r#"{"types": {"EIP712Domain": []}, "primaryType": "Mail", "message": {}}"#,
            "domain",
        );
    }

    fn mail_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(MAIL_JSON).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn typed_data_refuses_domain_mismatches() {
        // No EIP712Domain declaration at all.
        let json = mail_with(|v| {
            v["types"].as_object_mut().unwrap().remove("EIP712Domain");
        });
        assert_invalid(&json, "EIP712Domain");
        // A misspelled domain key would otherwise be dropped silently.
        let json = mail_with(|v| {
            let d = v["domain"].as_object_mut().unwrap();
            let id = d.remove("chainId").unwrap();
            d.insert("chainID".into(), id);
        });
        assert_invalid(&json, "chainID");
        // Declared but absent.
        let json = mail_with(|v| {
            v["domain"].as_object_mut().unwrap().remove("chainId");
        });
        assert_invalid(&json, "declares");
        // Present but not declared.
        let json = mail_with(|v| {
            v["domain"]["salt"] = Value::String(format!("0x{}", "11".repeat(32)));
        });
        assert_invalid(&json, "bytes32 salt");
        // Declared out of order, or with another type.
        let json = mail_with(|v| {
            v["types"]["EIP712Domain"].as_array_mut().unwrap().swap(0, 1);
        });
        assert_invalid(&json, "declares");
        let json = mail_with(|v| {
            v["types"]["EIP712Domain"][2]["type"] = Value::String("uint64".into());
        });
        assert_invalid(&json, "uint256 chainId");
    }

    #[test]
    fn typed_data_refuses_a_message_that_does_not_fit_its_types() {
        let json = mail_with(|v| {
            v["message"]["from"]["wallet"] = Value::String("not an address".into());
        });
        assert!(matches!(typed_data_hash(&json), Err(SdkError::InvalidInput(_))));
        let json = mail_with(|v| {
            v["primaryType"] = Value::String("Parcel".into());
        });
        assert!(matches!(typed_data_hash(&json), Err(SdkError::InvalidInput(_))));
    }

    fn access_list() -> AccessList {
        AccessList(vec![AccessListItem {
            address: address!("de0B295669a9FD93d5F28D9Ec85E40f4cb697BAe"),
            storage_keys: vec![B256::ZERO, B256::with_last_byte(7)],
        }])
    }

    /// Builds, signs with a plain key, encodes, decodes with alloy and recovers the sender.
    fn round_trip(params: TxParams, expected_type: u8) -> TxEnvelope {
        let signer = key("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
        let tx = build_tx(&params);
        let hash = signing_hash(&tx);
        let sig = assemble(&plain_sign(&signer, &hash), &hash, signer.address()).unwrap();
        let raw = encode_signed(tx, sig);
        if expected_type != 0 {
            assert_eq!(raw[0], expected_type, "typed transactions start with their type byte");
        }
        let decoded = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
        assert_eq!(decoded.recover_signer().unwrap(), signer.address());
        assert_eq!(alloy_consensus::Transaction::chain_id(&decoded), Some(params.chain_id));
        assert_eq!(alloy_consensus::Transaction::nonce(&decoded), params.nonce);
        assert_eq!(
            alloy_consensus::Transaction::kind(&decoded),
            params.to.map_or(TxKind::Create, TxKind::Call)
        );
        assert_eq!(alloy_consensus::Transaction::value(&decoded), params.value);
        assert_eq!(alloy_consensus::Transaction::input(&decoded), &params.data);
        assert_eq!(alloy_consensus::Transaction::gas_limit(&decoded), params.gas_limit);
        assert_eq!(decoded.encoded_2718(), raw, "re-encoding is byte-identical");
        decoded
    }

    #[test]
    fn eip1559_round_trip() {
        let params = TxParams {
            chain_id: 31337,
            nonce: 3,
            to: Some(address!("70997970C51812dc3A010C7d01b50e0d17dc79C8")),
            value: U256::from(12_345u64),
            gas_limit: 50_000,
            kind: TxKindParams::Eip1559 {
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
                access_list: access_list(),
            },
            data: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        };
        let decoded = round_trip(params, 2);
        let TxEnvelope::Eip1559(signed) = decoded else {
            panic!("expected an EIP-1559 envelope")
        };
        assert_eq!(signed.tx().max_fee_per_gas, 2_000_000_000);
        assert_eq!(signed.tx().max_priority_fee_per_gas, 1_000_000_000);
        assert_eq!(signed.tx().access_list, access_list());
    }

    #[test]
    fn eip2930_round_trip() {
        let params = TxParams {
            chain_id: 5,
            nonce: 0,
            to: Some(address!("70997970C51812dc3A010C7d01b50e0d17dc79C8")),
            value: U256::ZERO,
            gas_limit: 30_000,
            kind: TxKindParams::Eip2930 {
                gas_price: 7,
                access_list: access_list(),
            },
            data: Bytes::new(),
        };
        let decoded = round_trip(params, 1);
        let TxEnvelope::Eip2930(signed) = decoded else {
            panic!("expected an EIP-2930 envelope")
        };
        assert_eq!(signed.tx().gas_price, 7);
        assert_eq!(signed.tx().access_list, access_list());
    }

    #[test]
    fn legacy_contract_creation_round_trip() {
        let params = TxParams {
            to: None,
            data: Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3]),
            chain_id: 31337,
            ..eip155_params()
        };
        let decoded = round_trip(params, 0);
        let TxEnvelope::Legacy(signed) = decoded else {
            panic!("expected a legacy envelope")
        };
        assert_eq!(
            signed.tx().chain_id,
            Some(31337),
            "legacy transactions carry EIP-155 replay protection"
        );
    }
}
