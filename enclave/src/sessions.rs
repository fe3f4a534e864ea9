//! In-memory protocol sessions: a TTL, a cap, and one step at a time per session.
//!
//! A session holds an enclave-side state machine between HTTP calls. Sessions live only
//! in memory: a restart drops them, and the device simply starts the flow again. Expired
//! sessions answer `MPC_TIMEOUT` until the reaper removes them; unknown ones answer
//! `INVALID_SESSION`. A session whose step fails is removed (its machine is poisoned).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tandem_core::channel::EnclaveChannel;
use tandem_core::engine::{EnclaveDkg, EnclaveRefresh, EnclaveSign};
use tandem_core::{AccountId, ErrorCode, Flow, SessionId};

use crate::error::ApiError;

/// The enclave-side machine a session runs.
pub enum Machine {
    /// createAccount, with the metadata the account will be stored with.
    Dkg {
        /// The DKG machine.
        machine: Box<EnclaveDkg>,
        /// Label from `createAccount/start`.
        label: Option<String>,
        /// The device's auth public key, registered with the account.
        auth_key: [u8; 32],
        /// Device id from `createAccount/start`.
        client_node_id: Option<String>,
    },
    /// Signing with an account.
    Sign {
        /// The sign machine.
        machine: Box<EnclaveSign>,
        /// The account.
        account: AccountId,
        /// Whether the device signs with the pending share of a refresh: success
        /// proves it holds that share, and the enclave then promotes it.
        confirms_refresh: bool,
    },
    /// Refreshing an account.
    Refresh {
        /// The refresh machine.
        machine: Box<EnclaveRefresh>,
        /// The account.
        account: AccountId,
    },
}

impl Machine {
    /// The flow this machine runs.
    pub fn flow(&self) -> Flow {
        match self {
            Machine::Dkg { .. } => Flow::Dkg,
            Machine::Sign { .. } => Flow::Sign,
            Machine::Refresh { .. } => Flow::Refresh,
        }
    }
}

/// A session's state between steps: the protocol machine, the sealed channel it talks
/// through, and the step the device's next message must carry.
pub struct Live {
    /// The protocol machine.
    pub machine: Machine,
    /// The end-to-end channel of this session.
    pub channel: EnclaveChannel,
    /// The step number of the device's next message.
    pub next_step: u8,
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

fn busy() -> ApiError {
    ApiError::new(ErrorCode::InternalError, "session table lock poisoned")
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
    pub fn check_capacity(&self) -> Result<(), ApiError> {
        let table = self.table.lock().map_err(|_| busy())?;
        if table.len() >= self.max {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many sessions in flight; retry shortly",
            ));
        }
        Ok(())
    }

    /// Stores a new session.
    pub fn insert(&self, id: SessionId, live: Live) -> Result<(), ApiError> {
        let mut table = self.table.lock().map_err(|_| busy())?;
        if table.len() >= self.max {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many sessions in flight; retry shortly",
            ));
        }
        table.insert(
            id,
            Entry {
                created: Instant::now(),
                flow: live.machine.flow(),
                live: Some(live),
            },
        );
        Ok(())
    }

    /// Takes the machine of session `id` for one step. The session stays in the table,
    /// marked busy, until [`Sessions::put_back`] or [`Sessions::remove`]: a concurrent
    /// step of the same session is refused instead of racing.
    pub fn take(&self, id: &SessionId, flow: Flow) -> Result<Live, ApiError> {
        let mut table = self.table.lock().map_err(|_| busy())?;
        let Some(entry) = table.get_mut(id) else {
            return Err(ApiError::new(
                ErrorCode::InvalidSession,
                "unknown session (finished, failed, or the server restarted)",
            ));
        };
        if entry.created.elapsed() > self.ttl {
            table.remove(id);
            return Err(ApiError::new(
                ErrorCode::MpcTimeout,
                "session expired; start the flow again",
            ));
        }
        if entry.flow != flow {
            return Err(ApiError::new(
                ErrorCode::InvalidSession,
                format!("session belongs to the {} flow, not {}", entry.flow, flow),
            ));
        }
        entry
            .live
            .take()
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidSession, "a step of this session is already running"))
    }

    /// Returns a machine after a successful, non-final step.
    pub fn put_back(&self, id: &SessionId, live: Live) -> Result<(), ApiError> {
        let mut table = self.table.lock().map_err(|_| busy())?;
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
