//! AWS credentials pushed in by the parent.
//!
//! No credentials are baked into the enclave image, and the enclave cannot reach the
//! instance metadata service. The parent proxy fetches the instance role's credentials
//! (IMDSv2) or takes them from its environment, and pushes them over the enclave's
//! control listener (`POST /control/v1/credentials`, see
//! [`crate::parent::control::control_router`]; the pushing side is
//! `tandem_proxy::enclave::credentials`) before they expire. The enclave keeps the latest
//! set in a [`CredentialSlot`], which the KMS client reads on every call.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use tokio::sync::watch;

pub use tandem_core::parent::control::{PushedCredentials, SecretString};

/// Credentials closer than this to their expiry are treated as expired, so a call never
/// starts with credentials that die in flight.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Why pushed credentials were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialPushError {
    /// A required field is empty or malformed.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// They expire within [`EXPIRY_MARGIN`] (or already did).
    #[error("credentials already expired or expire within a minute")]
    Expired,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The latest pushed credentials, shared with the KMS client.
#[derive(Clone)]
pub struct CredentialSlot {
    current: Arc<RwLock<Option<Credentials>>>,
    changed: watch::Sender<u64>,
}

impl Default for CredentialSlot {
    fn default() -> Self {
        CredentialSlot {
            current: Arc::new(RwLock::new(None)),
            changed: watch::channel(0).0,
        }
    }
}

impl std::fmt::Debug for CredentialSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSlot")
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

impl CredentialSlot {
    /// An empty slot: KMS calls fail with "not loaded" until the parent pushes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a pushed set, replacing the previous one. Refuses empty fields and sets
    /// that are (nearly) expired.
    pub fn push(&self, pushed: PushedCredentials) -> Result<Option<u64>, CredentialPushError> {
        if pushed.access_key_id.is_empty() || pushed.access_key_id.len() > 128 {
            return Err(CredentialPushError::Invalid("accessKeyId"));
        }
        if pushed.secret_access_key.expose().is_empty() || pushed.secret_access_key.expose().len() > 256 {
            return Err(CredentialPushError::Invalid("secretAccessKey"));
        }
        if pushed
            .session_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty() || t.expose().len() > 8192)
        {
            return Err(CredentialPushError::Invalid("sessionToken"));
        }
        if let Some(at) = pushed.expires_at
            && at <= now_secs() + EXPIRY_MARGIN.as_secs()
        {
            return Err(CredentialPushError::Expired);
        }
        let expiry = pushed.expires_at.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let creds = Credentials::new(
            pushed.access_key_id.clone(),
            pushed.secret_access_key.expose(),
            pushed.session_token.as_ref().map(|t| t.expose().to_string()),
            expiry,
            "tandem-parent-push",
        );
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(creds);
        }
        self.changed.send_modify(|n| *n += 1);
        tracing::info!(expires_at = ?pushed.expires_at, "AWS credentials received from the parent");
        Ok(pushed.expires_at)
    }

    /// The stored set's expiry (Unix seconds), if any set is stored and it expires.
    pub fn expires_at(&self) -> Option<u64> {
        let slot = self.current.read().ok()?;
        slot.as_ref()?
            .expiry()
            .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }

    /// Usable credentials now: stored, and not within [`EXPIRY_MARGIN`] of expiry.
    pub fn current(&self) -> Result<Credentials, CredentialsError> {
        let slot = self
            .current
            .read()
            .map_err(|_| CredentialsError::provider_error("credential slot poisoned"))?;
        let creds = slot
            .as_ref()
            .ok_or_else(|| CredentialsError::not_loaded("no credentials pushed by the parent yet"))?;
        if let Some(expiry) = creds.expiry()
            && expiry <= SystemTime::now() + EXPIRY_MARGIN
        {
            return Err(CredentialsError::not_loaded(
                "the parent's credentials expired and were not refreshed",
            ));
        }
        Ok(creds.clone())
    }

    /// Waits until usable credentials are stored.
    pub async fn wait_usable(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.current().is_ok() {
                return;
            }
            // A closed channel cannot happen (we hold the sender); poll anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
        }
    }
}

impl ProvideCredentials for CredentialSlot {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(expires_at: Option<u64>) -> PushedCredentials {
        PushedCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(SecretString::new("token")),
            expires_at,
        }
    }

    #[test]
    fn a_slot_holds_the_latest_usable_set() {
        let slot = CredentialSlot::new();
        assert!(slot.current().is_err(), "empty until pushed");
        let in_an_hour = now_secs() + 3600;
        assert_eq!(slot.push(pushed(Some(in_an_hour))), Ok(Some(in_an_hour)));
        assert_eq!(slot.current().unwrap().access_key_id(), "AKIDEXAMPLE");
        assert_eq!(slot.expires_at(), Some(in_an_hour));
        // Expired or about to: refused, and the previous set stays.
        assert_eq!(
            slot.push(pushed(Some(now_secs() + 10))),
            Err(CredentialPushError::Expired)
        );
        assert_eq!(slot.expires_at(), Some(in_an_hour));
        let mut bad = pushed(None);
        bad.access_key_id.clear();
        assert_eq!(slot.push(bad), Err(CredentialPushError::Invalid("accessKeyId")));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let p = pushed(None);
        let text = format!("{p:?}");
        assert!(!text.contains("wJalr") && !text.contains("token"), "{text}");
        let slot = CredentialSlot::new();
        slot.push(p).unwrap();
        assert!(!format!("{slot:?}").contains("wJalr"));
    }

    #[tokio::test]
    async fn waiting_ends_when_credentials_arrive() {
        let slot = CredentialSlot::new();
        let waiter = {
            let slot = slot.clone();
            tokio::spawn(async move { slot.wait_usable().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        slot.push(pushed(None)).unwrap();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
