//! Signing: the one flow whose step runs the enclave's OT consistency checks.
//!
//! The device names its share generation; the enclave signs with the matching share (the
//! current one, or the pending one of a refresh — whose successful use proves the device
//! holds it, so it is then promoted). A locked share is refused at the start and again,
//! atomically, at the step: the step is [`guarded`](FlowHandler::guarded), so it runs one
//! at a time per account after checking the ban, and a failure that demands a ban locks
//! the account before the next step can run (review finding H1).

use std::sync::Arc;

use tandem_core::auth::FirstMessage;
use tandem_core::engine::EnclaveSign;
use tandem_core::flow::{Receipt, Step};
use tandem_core::wire::AccountStartRequest;
use tandem_core::{AccountId, Flow, ProtocolError, ShareId};

use super::AppState;
use super::flow::FlowHandler;
use crate::error::EnclaveError;
use crate::keystore::StoredAccount;

/// What a sign session carries.
pub(crate) struct Sign {
    account: AccountId,
    share_id: ShareId,
    /// The device signs with the pending share of a refresh: success proves it holds it.
    confirms_refresh: bool,
}

#[async_trait::async_trait]
impl FlowHandler for Sign {
    const FLOW: Flow = Flow::Sign;
    type Machine = EnclaveSign;
    type Request = AccountStartRequest;

    fn start(
        state: &AppState,
        account: Option<Arc<StoredAccount>>,
        first: FirstMessage,
    ) -> Result<(Self, EnclaveSign, Step<()>), EnclaveError> {
        let account = account.ok_or(EnclaveError::Internal("sign without an account"))?;
        let start = EnclaveSign::parse_start(&first.protocol)?;
        let share_id = start.share_id();
        let (share, pending) = account.share_for(share_id).ok_or(ProtocolError::InvalidShare(
            "the device holds another generation of this key",
        ))?;
        if account.is_locked(share_id) || state.keystore.guard().is_banned(account.id, share_id) {
            return Err(EnclaveError::Locked);
        }
        let (machine, step) = EnclaveSign::start(start, share, account.generation)?;
        Ok((
            Sign {
                account: account.id,
                share_id,
                confirms_refresh: pending,
            },
            machine,
            step,
        ))
    }

    fn guarded(&self) -> Option<(AccountId, ShareId)> {
        Some((self.account, self.share_id))
    }

    async fn finish(self, state: &AppState, (): ()) -> Result<Receipt, EnclaveError> {
        let share_id = self.share_id;
        let record = if self.confirms_refresh {
            let promoted = state.keystore.update(self.account, |a| a.promoted(share_id)).await?;
            tracing::info!(account = %self.account, "refreshed share confirmed by a signature; previous share removed");
            promoted
        } else {
            state.keystore.load(self.account).await?
        };
        Ok(Receipt {
            generation: record.generation,
        })
    }
}
