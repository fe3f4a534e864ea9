//! In-memory protocol sessions: a TTL, a cap, and one step at a time per session.
//!
//! A session holds an enclave-side state machine between HTTP calls. Sessions live only
//! in memory: a restart drops them, and the device simply starts the flow again. Expired
//! sessions answer `MPC_TIMEOUT` until the reaper removes them; unknown ones answer
//! `INVALID_SESSION`. The table does not know the flows' types: each entry holds its
//! flow's machine type-erased, and the generic step handler, which knows the flow of its
//! route, gets it back typed ([`Live::take_state`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tandem_core::channel::EnclaveChannel;
use tandem_core::{AccountId, Flow, SessionId};

use crate::error::{EnclaveError, SessionError};

/// A session's state between steps: the flow's machine (type-erased), the sealed channel
/// it talks through, and the step the device's next message must carry.
pub struct Live {
    /// The flow.
    pub flow: Flow,
    /// The account the session acts on (none for createAccount).
    pub account: Option<AccountId>,
    /// The end-to-end channel of this session.
    pub channel: EnclaveChannel,
    /// The step number of the device's next message.
    pub next_step: u8,
    state: Box<dyn Any + Send>,
}

impl Live {
    /// A session of `flow` holding `state` (the flow's machine and what it carries).
    pub fn new<S: Send + 'static>(
        flow: Flow,
        account: Option<AccountId>,
        channel: EnclaveChannel,
        next_step: u8,
        state: S,
    ) -> Self {
        Live {
            flow,
            account,
            channel,
            next_step,
            state: Box::new(state),
        }
    }

    /// The flow's state, typed. The table already checked the flow, so a type mismatch
    /// is our bug.
    pub fn take_state<S: Send + 'static>(self) -> Result<(S, LiveParts), EnclaveError> {
        let parts = LiveParts {
            flow: self.flow,
            account: self.account,
            channel: self.channel,
            next_step: self.next_step,
        };
        self.state
            .downcast::<S>()
            .map(|s| (*s, parts))
            .map_err(|_| EnclaveError::Internal("session state of another type"))
    }
}

/// A [`Live`] session without its state, while the state is out being stepped.
pub struct LiveParts {
    /// The flow.
    pub flow: Flow,
    /// The account the session acts on.
    pub account: Option<AccountId>,
    /// The channel.
    pub channel: EnclaveChannel,
    /// The step number of the device's next message.
    pub next_step: u8,
}

impl LiveParts {
    /// Puts a state back, for the next step.
    pub fn with_state<S: Send + 'static>(self, next_step: u8, state: S) -> Live {
        Live {
            flow: self.flow,
            account: self.account,
            channel: self.channel,
            next_step,
            state: Box::new(state),
        }
    }
}

struct Entry {
    created: Instant,
    flow: Flow,
    /// `None` while a step is running (the machine is out on the blocking pool).
    live: Option<Live>,
}

/// The table of live sessions.
pub struct Sessions {
    ttl: Duration,
    max: usize,
    table: Mutex<HashMap<SessionId, Entry>>,
}

fn poisoned() -> EnclaveError {
    EnclaveError::Internal("session table lock poisoned")
}

impl Sessions {
    /// A table whose sessions expire `ttl` after they start, holding at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Sessions {
            ttl,
            max,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses a new session when the table is full (checked before expensive work).
    pub fn check_capacity(&self) -> Result<(), EnclaveError> {
        let table = self.table.lock().map_err(|_| poisoned())?;
        if table.len() >= self.max {
            return Err(SessionError::Full.into());
        }
        Ok(())
    }

    /// Stores a new session.
    pub fn insert(&self, id: SessionId, live: Live) -> Result<(), EnclaveError> {
        let mut table = self.table.lock().map_err(|_| poisoned())?;
        if table.len() >= self.max {
            return Err(SessionError::Full.into());
        }
        table.insert(
            id,
            Entry {
                created: Instant::now(),
                flow: live.flow,
                live: Some(live),
            },
        );
        Ok(())
    }

    /// Takes the machine of session `id` for one step of `flow`. The session stays in the
    /// table, marked busy, until [`Sessions::put_back`] or [`Sessions::remove`]: a
    /// concurrent step of the same session is refused instead of racing. A step sent to
    /// another flow's route is refused without touching the session.
    pub fn take(&self, id: &SessionId, flow: Flow) -> Result<Live, EnclaveError> {
        let mut table = self.table.lock().map_err(|_| poisoned())?;
        let Some(entry) = table.get_mut(id) else {
            return Err(SessionError::Unknown.into());
        };
        if entry.created.elapsed() > self.ttl {
            table.remove(id);
            return Err(SessionError::Expired.into());
        }
        if entry.flow != flow {
            return Err(SessionError::WrongFlow {
                session: entry.flow,
                route: flow,
            }
            .into());
        }
        entry.live.take().ok_or_else(|| SessionError::Busy.into())
    }

    /// Returns a machine after a successful, non-final step.
    pub fn put_back(&self, id: &SessionId, live: Live) -> Result<(), EnclaveError> {
        let mut table = self.table.lock().map_err(|_| poisoned())?;
        if let Some(entry) = table.get_mut(id) {
            entry.live = Some(live);
        }
        Ok(())
    }

    /// Removes a finished or failed session.
    pub fn remove(&self, id: &SessionId) {
        if let Ok(mut table) = self.table.lock() {
            table.remove(id);
        }
    }

    /// Drops sessions older than the TTL; returns how many were dropped.
    pub fn reap(&self) -> usize {
        let Ok(mut table) = self.table.lock() else { return 0 };
        let before = table.len();
        // Keep expired entries for one more TTL so late steps get MPC_TIMEOUT, not "unknown".
        table.retain(|_, e| e.created.elapsed() <= self.ttl * 2);
        before - table.len()
    }

    /// Sessions in flight.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no session is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
