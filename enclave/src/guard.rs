//! The per-account rules that keep the 2-of-2 promise against a malicious device and a
//! host that rolls state back, behind one seam ([`AccountGuard`]).
//!
//! * **The ban.** DKLs23 reuses each party's OT-extension correlation across signatures;
//!   a consistency failure in the step that checks it (sign phase 2/3 on the enclave) can
//!   leak a bit of it, so the protocol requires excluding the peer for good. The ban
//!   attaches to the share generation whose OT state was probed: only a complete refresh,
//!   which sets the OT state up from scratch, makes a share the account can use again.
//! * **Serialisation.** The consistency step of one account runs one at a time, and
//!   checks the ban first, *inside* the critical section: a device that opens hundreds of
//!   sessions and probes them all at once gets its first failure recorded before any other
//!   probe runs, and every later one answered `ACCOUNT_LOCKED` (review finding H1).
//!   Signatures on different accounts, and the other steps of the same account, run in
//!   parallel as before; concurrent signatures on one account queue for a few
//!   milliseconds each.
//! * **Generation marks.** Every account's sealed record carries a generation that grows
//!   with each write; the guard remembers the largest it saw and the keystore refuses any
//!   older one (a host serving an old blob after a failed write or a cache eviction).
//!
//! [`MemoryGuard`] keeps all three in this process's memory and never forgets a ban or a
//! mark while it runs. The multi-instance deployment backs the same seam with the shared
//! store, so the rules hold across instances. What no backend inside the enclave can do
//! alone — refuse a rollback *across a restart* by a host that controls the store — is
//! stated in `SECURITY.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tandem_core::{AccountId, ShareId};

use crate::error::EnclaveError;
use crate::keystore::KeystoreError;

/// Held while an account's consistency step runs; dropping it lets the next one in.
pub struct GuardPermit {
    _held: Box<dyn Send>,
}

impl GuardPermit {
    /// A permit holding `held` until dropped (for other backends of the seam).
    pub fn new(held: impl Send + 'static) -> Self {
        GuardPermit { _held: Box::new(held) }
    }
}

impl std::fmt::Debug for GuardPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardPermit")
    }
}

/// The per-account rules: the ban, the serialised consistency step, generation marks.
#[async_trait::async_trait]
pub trait AccountGuard: Send + Sync + 'static {
    /// Waits until no other consistency step of `account` runs, then checks the ban:
    /// the permit admits one step; [`EnclaveError::Locked`] if `share` is banned.
    async fn enter(&self, account: AccountId, share: ShareId) -> Result<GuardPermit, EnclaveError>;

    /// Whether `share` of `account` is banned.
    fn is_banned(&self, account: AccountId, share: ShareId) -> bool;

    /// Bans `share` of `account`. Called while holding the step's permit, so no other
    /// step of the account runs before the ban is in force.
    fn ban(&self, account: AccountId, share: ShareId);

    /// Records the generation of `account`'s record just read or written; refuses one
    /// older than the largest seen ([`KeystoreError::Rollback`]).
    fn observe(&self, account: AccountId, generation: u64) -> Result<(), KeystoreError>;
}

/// [`AccountGuard`] in this process's memory.
#[derive(Default)]
pub struct MemoryGuard {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    steps: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    banned: Mutex<HashSet<(AccountId, ShareId)>>,
    seen: Mutex<HashMap<AccountId, u64>>,
}

/// The memory guard's permit: the account's step lock, and a way to drop its table entry
/// once nobody waits for it (so the table holds only accounts with steps in flight).
struct MemoryPermit {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    inner: Arc<Inner>,
    account: AccountId,
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        drop(self.guard.take());
        if let Ok(mut steps) = self.inner.steps.lock()
            && steps.get(&self.account).is_some_and(|m| Arc::strong_count(m) == 1)
        {
            steps.remove(&self.account);
        }
    }
}

impl MemoryGuard {
    /// Accounts with a consistency step in flight or waiting (for tests and metrics).
    pub fn accounts_in_step(&self) -> usize {
        self.inner.steps.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl AccountGuard for MemoryGuard {
    async fn enter(&self, account: AccountId, share: ShareId) -> Result<GuardPermit, EnclaveError> {
        let lock = {
            let mut steps = self
                .inner
                .steps
                .lock()
                .map_err(|_| EnclaveError::Internal("guard table poisoned"))?;
            steps.entry(account).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        let permit = MemoryPermit {
            guard: Some(guard),
            inner: self.inner.clone(),
            account,
        };
        // Checked inside the critical section: a ban recorded by the step before us is seen.
        if self.is_banned(account, share) {
            return Err(EnclaveError::Locked);
        }
        Ok(GuardPermit {
            _held: Box::new(permit),
        })
    }

    fn is_banned(&self, account: AccountId, share: ShareId) -> bool {
        // A poisoned table fails closed: everything counts as banned.
        self.inner.banned.lock().map_or(true, |b| b.contains(&(account, share)))
    }

    fn ban(&self, account: AccountId, share: ShareId) {
        match self.inner.banned.lock() {
            Ok(mut b) => {
                b.insert((account, share));
            }
            Err(poisoned) => {
                poisoned.into_inner().insert((account, share));
            }
        }
    }

    fn observe(&self, account: AccountId, generation: u64) -> Result<(), KeystoreError> {
        let mut seen = self
            .inner
            .seen
            .lock()
            .map_err(|_| KeystoreError::Io("generation marks poisoned".into()))?;
        let mark = seen.entry(account).or_insert(generation);
        if generation < *mark {
            return Err(KeystoreError::Rollback {
                seen: *mark,
                got: generation,
            });
        }
        *mark = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids() -> (AccountId, ShareId) {
        (AccountId::random().unwrap(), ShareId([7; 16]))
    }

    #[tokio::test]
    async fn steps_of_one_account_run_one_at_a_time_and_see_a_ban_made_before_them() {
        let guard = Arc::new(MemoryGuard::default());
        let (account, share) = ids();
        let first = guard.enter(account, share).await.unwrap();
        let g = guard.clone();
        let second = tokio::spawn(async move { g.enter(account, share).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second step must wait for the first");
        // Another account is not held up.
        let (other, _) = ids();
        drop(guard.enter(other, share).await.unwrap());
        guard.ban(account, share);
        drop(first);
        assert!(matches!(second.await.unwrap(), Err(EnclaveError::Locked)));
        assert_eq!(guard.accounts_in_step(), 0, "the table forgets idle accounts");
        // Another generation of the account's share is not banned.
        drop(guard.enter(account, ShareId([8; 16])).await.unwrap());
    }

    #[test]
    fn generations_only_grow() {
        let guard = MemoryGuard::default();
        let (account, _) = ids();
        guard.observe(account, 3).unwrap();
        guard.observe(account, 3).unwrap();
        guard.observe(account, 5).unwrap();
        assert!(matches!(
            guard.observe(account, 4),
            Err(KeystoreError::Rollback { seen: 5, got: 4 })
        ));
    }
}
