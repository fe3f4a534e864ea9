//! createAccount (DKG): a new account, its share persisted before DONE.
//!
//! The account id is derived from the session id on both sides; the device registers its
//! auth key (and proves it holds it: the first message is authorized by that key); the
//! label and device id travel inside the sealed first message. The enclave's share is
//! sealed and written (generation 1) before the DONE answer, which carries the account id
//! sealed: a DONE always means the share is durable, and only the device can read it.

use std::sync::Arc;

use tandem_core::auth::{FirstMessage, registrable_key};
use tandem_core::engine::{DkgOutput, EnclaveDkg};
use tandem_core::flow::{Receipt, Step};
use tandem_core::wire::CreateAccountStartRequest;
use tandem_core::{Flow, ProtocolError};

use super::AppState;
use super::flow::FlowHandler;
use super::now;
use crate::error::EnclaveError;
use crate::keystore::StoredAccount;

/// What a DKG session carries: the new account's metadata.
pub(crate) struct Dkg {
    label: Option<String>,
    client_node_id: Option<String>,
    auth_key: [u8; 32],
}

#[async_trait::async_trait]
impl FlowHandler for Dkg {
    const FLOW: Flow = Flow::Dkg;
    type Machine = EnclaveDkg;
    type Request = CreateAccountStartRequest;

    fn start(
        _state: &AppState,
        _account: Option<Arc<StoredAccount>>,
        first: FirstMessage,
    ) -> Result<(Self, EnclaveDkg, Step<DkgOutput>), EnclaveError> {
        let auth_key = first
            .auth_key
            .ok_or(ProtocolError::Unauthorized("createAccount must register a device key"))?;
        registrable_key(&auth_key)?;
        let (machine, step) = EnclaveDkg::start(&first.protocol)?;
        Ok((
            Dkg {
                label: first.label,
                client_node_id: first.client_node_id,
                auth_key,
            },
            machine,
            step,
        ))
    }

    async fn finish(self, state: &AppState, output: DkgOutput) -> Result<Receipt, EnclaveError> {
        let saved = state
            .keystore
            .save(StoredAccount {
                id: output.account_id,
                generation: 0,
                label: self.label,
                client_node_id: self.client_node_id,
                created_at: now(),
                auth_key: Some(self.auth_key),
                current: Arc::new(output.share),
                device_ot: Some(output.device_ot_fingerprint),
                pending: None,
                locked: None,
            })
            .await?;
        tracing::info!(account = %saved.id, "account created");
        Ok(Receipt {
            generation: saved.generation,
        })
    }
}
