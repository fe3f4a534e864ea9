//! [`TandemSigner`]: a Tandem account as an alloy signer.

use alloy_consensus::SignableTransaction;
use alloy_network::TxSigner;
use alloy_primitives::{Address, B256, ChainId, Signature};
use alloy_signer::Signer;

use crate::{Account, Client, SdkError, eth};

/// A Tandem account as an alloy [`Signer`] and [`TxSigner`], so it drops into alloy wallets
/// (`EthereumWallet::from(signer)`) and providers.
///
/// Every signature is produced by the two-party protocol with the enclave
/// ([`Client::sign_digest`]) and then checked by [`eth::assemble`]: low-S, recovery id 0
/// or 1, and recovering this account's address. A signature that fails the check is never
/// returned.
///
/// The chain id, when set, is applied to transactions the way alloy's local signer applies
/// it: a transaction without one gets it, a transaction with another one is refused. It has
/// no effect on message, typed-data or hash signing.
///
/// Cheap to clone (the client and account are shared). `Debug` shows the server, the
/// account's id, label and address and the chain id, never the key share.
#[derive(Clone)]
pub struct TandemSigner {
    client: Client,
    account: Account,
    chain_id: Option<u64>,
}

impl TandemSigner {
    /// A signer for `account`, signing through `client`'s server, with no chain id.
    pub fn new(client: Client, account: Account) -> Self {
        TandemSigner {
            client,
            account,
            chain_id: None,
        }
    }

    /// Returns the signer with its chain id set to `chain_id` (`None` clears it), used to
    /// fill in and check transactions' chain ids (EIP-155 replay protection).
    #[must_use]
    pub fn with_chain_id(mut self, chain_id: Option<u64>) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// The account this signer signs for.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The account's Ethereum address. (Also available as [`Signer::address`] and
    /// [`TxSigner::address`]; this inherent method spares callers that import both traits
    /// the ambiguity.)
    pub fn address(&self) -> Address {
        self.account.address()
    }

    /// Signs a 32-byte digest exactly as given (no prefix, no hashing) and checks the result
    /// with [`eth::assemble`].
    ///
    /// Signing a bare digest signs whatever it is the hash of, including a transaction;
    /// prefer [`Signer::sign_message`], [`TandemSigner::sign_typed_data_json`] or
    /// [`TxSigner::sign_transaction`] when the payload is known.
    pub async fn sign_digest(&self, digest: B256) -> Result<Signature, SdkError> {
        let sig = self.client.sign_digest(&self.account, digest.0).await?;
        eth::assemble(&sig, &digest, self.account.address())
    }

    /// Signs EIP-712 typed data given as `eth_signTypedData_v4` JSON (see
    /// [`eth::parse_typed_data`] for the accepted shape). Input that does not parse is
    /// refused with [`SdkError::InvalidInput`] before anything is sent to the server.
    pub async fn sign_typed_data_json(&self, json: &str) -> Result<Signature, SdkError> {
        let digest = eth::typed_data_hash(json)?;
        self.sign_digest(digest).await
    }
}

impl std::fmt::Debug for TandemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TandemSigner")
            .field("server", &self.client.base_url())
            .field("account", &self.account)
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

#[async_trait::async_trait]
impl Signer for TandemSigner {
    async fn sign_hash(&self, hash: &B256) -> alloy_signer::Result<Signature> {
        Ok(self.sign_digest(*hash).await?)
    }

    fn address(&self) -> Address {
        self.account.address()
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}

#[async_trait::async_trait]
impl TxSigner<Signature> for TandemSigner {
    fn address(&self) -> Address {
        self.account.address()
    }

    async fn sign_transaction(&self, tx: &mut dyn SignableTransaction<Signature>) -> alloy_signer::Result<Signature> {
        if let Some(chain_id) = self.chain_id
            && !tx.set_chain_id_checked(chain_id)
        {
            return Err(alloy_signer::Error::TransactionChainIdMismatch {
                signer: chain_id,
                // `set_chain_id_checked` only fails when the transaction has a chain id.
                tx: tx.chain_id().unwrap_or_default(),
            });
        }
        let hash = tx.signature_hash();
        Ok(self.sign_digest(hash).await?)
    }
}

#[cfg(test)]
mod tests {
    use alloy_consensus::{Transaction, TxEip1559, TxLegacy};
    use alloy_primitives::{TxKind, U256};

    use super::*;

    /// An account from an in-process DKG, and a client whose server refuses connections:
    /// enough to exercise everything that happens before the signer talks to the enclave.
    fn offline_signer() -> TandemSigner {
        let account = crate::account::tests::test_account();
        // A port that was just free: connecting to it is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        TandemSigner::new(client, account)
    }

    fn legacy(chain_id: Option<u64>) -> TxLegacy {
        TxLegacy {
            chain_id,
            nonce: 0,
            gas_price: 1,
            gas_limit: 21_000,
            to: TxKind::Call(Address::repeat_byte(0x35)),
            value: U256::from(1u8),
            input: Default::default(),
        }
    }

    #[tokio::test]
    async fn chain_id_handling_matches_alloys_local_signer() {
        let signer = offline_signer().with_chain_id(Some(1));
        assert_eq!(Signer::chain_id(&signer), Some(1));
        assert_eq!(Signer::address(&signer), signer.account().address());
        assert_eq!(TxSigner::address(&signer), signer.address());

        // Another chain id on the transaction: refused before anything is sent.
        let mut tx = legacy(Some(5));
        let err = signer.sign_transaction(&mut tx).await.unwrap_err();
        assert!(
            matches!(
                err,
                alloy_signer::Error::TransactionChainIdMismatch { signer: 1, tx: 5 }
            ),
            "{err:?}"
        );
        let mut tx = TxEip1559 {
            chain_id: 5,
            ..Default::default()
        };
        let err = signer.sign_transaction(&mut tx).await.unwrap_err();
        assert!(
            matches!(err, alloy_signer::Error::TransactionChainIdMismatch { .. }),
            "{err:?}"
        );

        // No chain id on a legacy transaction: the signer's is filled in before signing
        // (which then fails here, as the server is unreachable).
        let mut tx = legacy(None);
        let err = signer.sign_transaction(&mut tx).await.unwrap_err();
        assert!(
            !matches!(err, alloy_signer::Error::TransactionChainIdMismatch { .. }),
            "{err:?}"
        );
        assert_eq!(tx.chain_id(), Some(1));

        // Without a signer chain id, the transaction's own is kept.
        let mut signer = signer;
        signer.set_chain_id(None);
        let mut tx = legacy(Some(5));
        assert!(signer.sign_transaction(&mut tx).await.is_err());
        assert_eq!(tx.chain_id(), Some(5));
    }

    #[tokio::test]
    async fn bad_typed_data_is_refused_before_the_server() {
        let signer = offline_signer();
        let err = signer.sign_typed_data_json("{not json").await.unwrap_err();
        assert!(matches!(err, SdkError::InvalidInput(_)), "{err:?}");
        // With no image pinned the client refuses before any request is made.
        let err = signer.sign_digest(B256::ZERO).await.unwrap_err();
        assert!(
            matches!(
                err,
                SdkError::Attestation(crate::attestation::AttestationError::NoPinnedImage)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn debug_does_not_show_the_share() {
        let signer = offline_signer();
        let json = signer.account().to_json().unwrap();
        let stored: serde_json::Value = serde_json::from_str(&json).unwrap();
        let share_hex = stored["deviceShare"].as_str().unwrap();
        assert!(share_hex.len() > 64);
        let debug = format!("{signer:?}");
        assert!(!debug.contains(&share_hex[..64]), "{debug}");
        assert!(!debug.to_lowercase().contains(&share_hex[..64]), "{debug}");
        assert!(debug.contains(&format!("{:?}", signer.address())), "{debug}");
    }
}
