//! Refresh: new shares of the same key; the new enclave share is stored as *pending*
//! until the device proves it holds its half (a signature or a recovery check with it).
//!
//! A locked account accepts only a complete refresh (new OT state from scratch): it is
//! the way back after a ban, authorized like every flow by the device key. A fast refresh
//! would carry the probed OT bits over (review findings H1, L7).

use std::sync::Arc;

use tandem_core::auth::FirstMessage;
use tandem_core::engine::{EnclaveRefresh, RefreshKind, RefreshOutput};
use tandem_core::flow::{Receipt, Step};
use tandem_core::wire::AccountStartRequest;
use tandem_core::{AccountId, Flow, ProtocolError};

use super::AppState;
use super::flow::FlowHandler;
use crate::error::EnclaveError;
use crate::keystore::{Pending, StoredAccount};

/// What a refresh session carries.
pub(crate) struct Refresh {
    account: AccountId,
}

#[async_trait::async_trait]
impl FlowHandler for Refresh {
    const FLOW: Flow = Flow::Refresh;
    type Machine = EnclaveRefresh;
    type Request = AccountStartRequest;

    fn start(
        state: &AppState,
        account: Option<Arc<StoredAccount>>,
        first: FirstMessage,
    ) -> Result<(Self, EnclaveRefresh, Step<RefreshOutput>), EnclaveError> {
        let account = account.ok_or(EnclaveError::Internal("refresh without an account"))?;
        let start = EnclaveRefresh::parse_start(&first.protocol)?;
        let share_id = start.share_id();
        let (share, pending) = account.share_for(share_id).ok_or(ProtocolError::InvalidShare(
            "the device holds another generation of this key",
        ))?;
        let locked = account.is_locked(share_id) || state.keystore.guard().is_banned(account.id, share_id);
        if locked && start.kind() != RefreshKind::Complete {
            return Err(EnclaveError::Locked);
        }
        if pending {
            return Err(ProtocolError::InvalidShare(
                "the previous refresh is not confirmed yet: sign or run the recovery check with the new share first",
            )
            .into());
        }
        let (machine, step) = EnclaveRefresh::start(start, share, account.generation)?;
        Ok((Refresh { account: account.id }, machine, step))
    }

    async fn finish(self, state: &AppState, output: RefreshOutput) -> Result<Receipt, EnclaveError> {
        let pending = Pending {
            share: Arc::new(output.share),
            kind: output.kind,
            device_ot: output.device_ot_fingerprint,
        };
        // Stored beside the current share: the old one stays usable (unless locked) until
        // the device proves it holds its new half.
        let record = state
            .keystore
            .update(self.account, move |a| {
                Some(StoredAccount {
                    pending: Some(pending),
                    ..a.clone()
                })
            })
            .await?;
        tracing::info!(account = %self.account, kind = ?output.kind, "refreshed share stored (pending)");
        Ok(Receipt {
            generation: record.generation,
        })
    }
}
