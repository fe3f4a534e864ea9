//! The recovery check: the device proves, in one message, that its share belongs to the
//! account and that its OT state is intact; the sealed answer confirms it.
//!
//! The OT-state fingerprint the device sends is compared with the one recorded when that
//! share was made, so a share whose OT seeds rotted fails here, not with a ban at the next
//! signature (review finding L7). Accounts made before fingerprints existed record it at
//! their first check. A pending share that passes is promoted (the device proved it holds
//! it). A locked share is refused: its OT state is not to be used again.

use std::sync::Arc;

use tandem_core::auth::FirstMessage;
use tandem_core::engine::EnclaveRecover;
use tandem_core::flow::{Receipt, Step};
use tandem_core::wire::AccountStartRequest;
use tandem_core::{AccountId, Flow, ProtocolError, ShareId};

use super::AppState;
use super::flow::FlowHandler;
use crate::error::EnclaveError;
use crate::keystore::StoredAccount;

/// What a recovery check carries from its start to its finish.
pub(crate) struct Recover {
    account: AccountId,
    pending: bool,
    ot_fingerprint: [u8; 32],
}

#[async_trait::async_trait]
impl FlowHandler for Recover {
    const FLOW: Flow = Flow::Recover;
    type Machine = EnclaveRecover;
    type Request = AccountStartRequest;

    fn start(
        state: &AppState,
        account: Option<Arc<StoredAccount>>,
        first: FirstMessage,
    ) -> Result<(Self, EnclaveRecover, Step<ShareId>), EnclaveError> {
        let account = account.ok_or(EnclaveError::Internal("recover without an account"))?;
        let start = EnclaveRecover::parse_start(&first.protocol)?;
        let share_id = start.share_id();
        let (share, pending) = account.share_for(share_id).ok_or(ProtocolError::RecoveryFailed)?;
        if account.is_locked(share_id) || state.keystore.guard().is_banned(account.id, share_id) {
            return Err(EnclaveError::Locked);
        }
        let ot_fingerprint = start.ot_fingerprint();
        let (machine, step) = EnclaveRecover::start(&start, &share)?;
        Ok((
            Recover {
                account: account.id,
                pending,
                ot_fingerprint,
            },
            machine,
            step,
        ))
    }

    async fn finish(self, state: &AppState, share_id: ShareId) -> Result<Receipt, EnclaveError> {
        let fingerprint = self.ot_fingerprint;
        let pending = self.pending;
        let mut mismatch = false;
        let record = state
            .keystore
            .update(self.account, |a| {
                let recorded = if pending {
                    a.pending.as_ref().map(|p| p.device_ot)
                } else {
                    a.device_ot
                };
                // Unknown (an account from before fingerprints, or a version-2 pending
                // share) is learnt now; a different one fails the check.
                if recorded.is_some_and(|r| r != [0; 32] && r != fingerprint) {
                    mismatch = true;
                    return None;
                }
                if pending {
                    let mut promoted = a.promoted(share_id)?;
                    promoted.device_ot = Some(fingerprint);
                    Some(promoted)
                } else if a.device_ot == Some(fingerprint) {
                    None
                } else {
                    Some(StoredAccount {
                        device_ot: Some(fingerprint),
                        ..a.clone()
                    })
                }
            })
            .await?;
        if mismatch {
            tracing::warn!(account = %self.account, "recovery check: the device's OT state differs from the one recorded for its share");
            return Err(ProtocolError::RecoveryFailed.into());
        }
        if pending {
            tracing::info!(account = %self.account, "refreshed share confirmed by the recovery check; previous share removed");
        }
        Ok(Receipt {
            generation: record.generation,
        })
    }
}
