//! The boot sequence and its report in `/v1/health`.
//!
//! ```text
//!  attest ──▶ credentials ──▶ unwrapDataKey ──▶ ready
//!  (the attester    (KMS: wait for the   (open and check the key      (the keystore
//!   answers)         parent's push;       ring, unwrap every data key  accepts calls)
//!                    local: skipped)      once or generate the first;
//!                                         migrate older formats)
//! ```
//!
//! Each stage is logged and recorded ([`BootStatus`]); the API serves from the start, so
//! `/v1/health` can show a Nitro enclave waiting for credentials, and every keystore call
//! answers `KEYSTORE_ERROR` ("not ready") until the last stage. Transient KMS failures
//! are retried with backoff; a local master key that cannot unwrap the ring is final.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::attester::Attester;
use crate::keystore::{KeyWrapper, Keystore, KeystoreError, WrapError};
use crate::kms::credentials::CredentialSlot;

/// The stages, in order.
pub const STAGES: [&str; 4] = ["attest", "credentials", "unwrapDataKey", "ready"];

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// Not started.
    Pending,
    /// In progress (possibly retrying; see the detail).
    Running,
    /// Completed.
    Done,
    /// Not needed in this configuration.
    Skipped,
    /// Failed for good: the enclave will not become ready without a restart.
    Failed,
}

impl StageState {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Running => "running",
            StageState::Done => "done",
            StageState::Skipped => "skipped",
            StageState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
struct Stage {
    name: &'static str,
    state: StageState,
    detail: Option<String>,
    elapsed_ms: Option<u64>,
}

/// The boot sequence's progress, shared with the health handler.
#[derive(Debug)]
pub struct BootStatus {
    started: Instant,
    stages: Mutex<Vec<Stage>>,
    ready_after: Mutex<Option<Duration>>,
}

impl Default for BootStatus {
    fn default() -> Self {
        BootStatus {
            started: Instant::now(),
            stages: Mutex::new(
                STAGES
                    .iter()
                    .map(|&name| Stage {
                        name,
                        state: StageState::Pending,
                        detail: None,
                        elapsed_ms: None,
                    })
                    .collect(),
            ),
            ready_after: Mutex::new(None),
        }
    }
}

impl BootStatus {
    /// A fresh status: every stage pending, the clock started.
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, name: &str, state: StageState, detail: Option<String>) {
        let elapsed = self.started.elapsed();
        match state {
            StageState::Failed => tracing::error!(stage = name, detail = ?detail, "boot stage failed"),
            StageState::Running => tracing::info!(stage = name, detail = ?detail, "boot stage running"),
            _ => {
                tracing::info!(stage = name, state = state.as_str(), detail = ?detail, elapsed_ms = elapsed.as_millis() as u64, "boot stage")
            }
        }
        if let Ok(mut stages) = self.stages.lock()
            && let Some(stage) = stages.iter_mut().find(|s| s.name == name)
        {
            stage.state = state;
            stage.detail = detail;
            if matches!(state, StageState::Done | StageState::Skipped | StageState::Failed) {
                stage.elapsed_ms = Some(elapsed.as_millis() as u64);
            }
        }
        if name == "ready"
            && state == StageState::Done
            && let Ok(mut r) = self.ready_after.lock()
        {
            *r = Some(elapsed);
        }
    }

    /// Every stage as `(name, state, detail, elapsed ms since boot)`.
    pub fn stages(&self) -> Vec<(String, StageState, Option<String>, Option<u64>)> {
        self.stages
            .lock()
            .map(|s| {
                s.iter()
                    .map(|s| (s.name.to_string(), s.state, s.detail.clone(), s.elapsed_ms))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the enclave can sign (the last stage is done).
    pub fn is_ready(&self) -> bool {
        self.ready_after.lock().is_ok_and(|r| r.is_some())
    }

    /// Whether a stage failed for good.
    pub fn has_failed(&self) -> bool {
        self.stages
            .lock()
            .is_ok_and(|s| s.iter().any(|s| s.state == StageState::Failed))
    }

    /// Time from process boot to ready, once ready.
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after.lock().ok().and_then(|r| *r)
    }
}

/// What the boot sequence works with.
pub struct BootPlan {
    /// Produces the attestation documents (checked once at boot).
    pub attester: Arc<dyn Attester>,
    /// The channel public key the attestation binds.
    pub channel_public_key: Vec<u8>,
    /// Who unwraps the data keys.
    pub wrapper: Arc<dyn KeyWrapper>,
    /// Where pushed credentials arrive (`None`: the wrapper needs none).
    pub credentials: Option<CredentialSlot>,
}

fn transient(e: &KeystoreError) -> bool {
    matches!(
        e,
        KeystoreError::Io(_) | KeystoreError::Wrap(WrapError::Kms(_) | WrapError::Credentials(_))
    )
}

/// Runs the boot sequence to the end: attest → credentials → unwrap data key → ready.
/// Returns `Err` only for a final failure (recorded in `status`).
pub async fn run(plan: BootPlan, keystore: &Keystore, status: &BootStatus) -> Result<(), String> {
    // 1. attest: the attester must produce a document that parses, binding our key.
    status.set("attest", StageState::Running, None);
    let attester = plan.attester.clone();
    let public = plan.channel_public_key.clone();
    let attested = tokio::task::spawn_blocking(move || -> Result<&'static str, String> {
        let doc = attester.attest(&public, b"tandem-boot").map_err(|e| e.to_string())?;
        let parsed = tandem_core::attestation::SignedDocument::parse(&doc).map_err(|e| e.to_string())?;
        if parsed.document.public_key.as_deref() != Some(&public[..]) {
            return Err("the attestation document does not bind the channel key".into());
        }
        Ok(if attester.is_mock() {
            "mock attester (development root)"
        } else {
            "NSM"
        })
    })
    .await
    .map_err(|_| "attestation task failed".to_string())
    .and_then(|r| r);
    match attested {
        Ok(kind) => status.set("attest", StageState::Done, Some(kind.into())),
        Err(e) => {
            status.set("attest", StageState::Failed, Some(e.clone()));
            return Err(e);
        }
    }

    // 2. credentials: the parent pushes them; wait (the API keeps answering meanwhile).
    match &plan.credentials {
        None => status.set(
            "credentials",
            StageState::Skipped,
            Some(format!("{} key wrapper needs no AWS credentials", plan.wrapper.kind())),
        ),
        Some(slot) => {
            if slot.current().is_err() {
                status.set(
                    "credentials",
                    StageState::Running,
                    Some("waiting for the parent to push AWS credentials".into()),
                );
                slot.wait_usable().await;
            }
            let detail = match slot.expires_at() {
                Some(at) => format!("pushed by the parent; expire at {at} (Unix)"),
                None => "pushed by the parent; no expiry".into(),
            };
            status.set("credentials", StageState::Done, Some(detail));
        }
    }

    // 3. unwrap the data keys (first boot: generate and store the first one).
    status.set("unwrapDataKey", StageState::Running, Some(plan.wrapper.kind().into()));
    let mut backoff = Duration::from_millis(500);
    let (active, keys) = loop {
        match keystore.open_ring(&*plan.wrapper).await {
            Ok(opened) => break opened,
            Err(e) if transient(&e) && plan.wrapper.kind() == "kms" => {
                status.set(
                    "unwrapDataKey",
                    StageState::Running,
                    Some(format!("retrying in {} ms: {e}", backoff.as_millis())),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                status.set("unwrapDataKey", StageState::Failed, Some(e.to_string()));
                return Err(e.to_string());
            }
        }
    };
    status.set(
        "unwrapDataKey",
        StageState::Done,
        Some(format!(
            "{} wrapper; active key {}, {} key(s) in the ring",
            plan.wrapper.kind(),
            hex::encode(active),
            keys
        )),
    );

    // 4. ready.
    status.set("ready", StageState::Done, None);
    Ok(())
}
