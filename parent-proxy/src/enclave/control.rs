//! The control link, parent end: calls to the enclave's control listener (never the
//! public API), and the clock push.
//!
//! The proxy pushes its wall clock to the enclave at start and then every minute
//! (`POST /control/v1/time`): the enclave has no time source of its own it can check, and
//! attestation freshness and authorization windows depend on its clock. The enclave logs
//! and reports (`/v1/health` `clockDriftMs`) any large drift. Credentials go the same way
//! ([`super::credentials`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::Addr;
use tandem_core::parent::control::{ParentTime, TIME_PATH, TimeAccepted};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::connector::Connector;
use crate::exchange::{ExchangeError, SecretBody, exchange};

/// Largest answer read from the control listener (answers are a few dozen bytes).
const MAX_ANSWER: usize = 64 * 1024;
/// One call, connect to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Drift above which the parent warns too (the enclave warns at the same bound).
const DRIFT_WARN_MS: i64 = 2_000;

/// Why a control call failed. Never carries a body.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The listener could not be reached or the exchange broke.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The enclave refused the call.
    #[error("the enclave refused the call: HTTP {status}")]
    Refused {
        /// The status it answered.
        status: u16,
    },
    /// The answer is not the contract's.
    #[error("the enclave's answer does not parse")]
    BadAnswer,
}

/// A client of the enclave's control listener.
#[derive(Debug, Clone)]
pub struct ControlClient {
    connector: Connector,
}

impl ControlClient {
    /// A client of the control listener at `addr`.
    pub fn new(addr: Addr) -> Self {
        ControlClient {
            connector: Connector::new(addr, Duration::from_secs(5)),
        }
    }

    /// The listener's address.
    pub fn addr(&self) -> &Addr {
        self.connector.addr()
    }

    /// `POST path` with `body` as JSON; the answer as `R`. The serialized body is held in
    /// a zeroizing buffer (it may be credentials).
    pub async fn post<T: Serialize, R: DeserializeOwned>(&self, path: &str, body: &T) -> Result<R, ControlError> {
        let json = Zeroizing::new(serde_json::to_vec(body).map_err(|_| ControlError::BadAnswer)?);
        let request = Request::post(path)
            .header(header::HOST, "enclave")
            .header(header::CONTENT_TYPE, "application/json")
            .body(SecretBody::new(json))
            .map_err(|_| ControlError::BadAnswer)?;
        let (status, answer) = exchange(&self.connector, request, MAX_ANSWER, CALL_TIMEOUT).await?;
        if !status.is_success() {
            return Err(ControlError::Refused {
                status: status.as_u16(),
            });
        }
        serde_json::from_slice(&answer).map_err(|_| ControlError::BadAnswer)
    }

    /// Pushes the parent's clock now; returns the drift the enclave measured.
    pub async fn push_time(&self) -> Result<i64, ControlError> {
        let unix_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let answer: TimeAccepted = self.post(TIME_PATH, &ParentTime { unix_millis }).await?;
        Ok(answer.drift_ms)
    }
}

/// Pushes the parent's clock now and every `every` until `shutdown`; while the enclave
/// cannot be reached (still booting), again every second.
pub async fn push_time_loop(client: ControlClient, every: Duration, shutdown: CancellationToken) {
    loop {
        let mut next = every;
        match client.push_time().await {
            Ok(d) if d.abs() > DRIFT_WARN_MS => tracing::warn!(drift_ms = d, "the enclave's clock drifts from ours"),
            Ok(d) => tracing::debug!(drift_ms = d, "enclave clock checked"),
            Err(ControlError::Exchange(e)) => {
                tracing::debug!(error = %e, "cannot reach the enclave's control listener yet");
                next = Duration::from_secs(1).min(every);
            }
            Err(e) => tracing::warn!(error = %e, "the enclave refused the time push"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}
