//! Care the enclave takes of its runtime in Nitro mode.
//!
//! * **Entropy.** Every key share, nonce and channel key comes from the OS RNG. Inside a
//!   Nitro Enclave the kernel's only good entropy source is the NSM's hardware RNG
//!   (`nsm-hwrng`); the enclave refuses to start unless it is the active hwrng, rather
//!   than risk weak randomness.
//! * **Time.** Session TTLs use monotonic time (`Instant`), immune to wall-clock jumps;
//!   the wall clock (attestation documents, authorization windows) is compared with the
//!   parent's and a large drift is logged and reported (see [`ClockDrift`]).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// The kernel's choice of hardware RNG.
pub const RNG_CURRENT: &str = "/sys/devices/virtual/misc/hw_random/rng_current";

/// The NSM's hardware RNG as the kernel names it.
pub const NSM_HWRNG: &str = "nsm-hwrng";

/// Checks that the NSM hardware RNG feeds the kernel's entropy (`rng_current` names it).
pub fn check_nitro_entropy(rng_current: &Path) -> Result<(), String> {
    match std::fs::read_to_string(rng_current) {
        Ok(s) if s.trim() == NSM_HWRNG => Ok(()),
        Ok(s) => Err(format!(
            "Nitro mode needs the NSM hardware RNG as the entropy source, but {} names {:?}; \
             refusing to generate keys with weaker randomness",
            rng_current.display(),
            s.trim()
        )),
        Err(e) => Err(format!(
            "Nitro mode needs the NSM hardware RNG, but {} cannot be read ({}); is this a Nitro Enclave?",
            rng_current.display(),
            e.kind()
        )),
    }
}

/// Wall-clock drift between the enclave and the parent, as last measured.
#[derive(Debug, Default)]
pub struct ClockDrift {
    millis: AtomicI64,
    measured: std::sync::atomic::AtomicBool,
}

/// Drift above which the enclave warns: authorizations allow ±5 minutes, attestation
/// freshness is checked by clients against theirs, so seconds matter.
pub const DRIFT_WARN_MS: i64 = 2_000;

impl ClockDrift {
    /// Records the parent's time (Unix ms) against ours; returns the drift (ours − parent's).
    pub fn observe(&self, parent_unix_ms: i64, ours_unix_ms: i64) -> i64 {
        let drift = ours_unix_ms - parent_unix_ms;
        self.millis.store(drift, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
        if drift.abs() > DRIFT_WARN_MS {
            tracing::warn!(drift_ms = drift, "the enclave's clock differs from the parent's");
        }
        drift
    }

    /// Whether the parent has pushed its time at least once.
    pub fn measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed)
    }

    /// The last measured drift in milliseconds.
    pub fn millis(&self) -> i64 {
        self.millis.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_check_accepts_only_the_nsm_hwrng() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rng_current");
        std::fs::write(&f, "nsm-hwrng\n").unwrap();
        check_nitro_entropy(&f).unwrap();
        std::fs::write(&f, "none\n").unwrap();
        assert!(check_nitro_entropy(&f).unwrap_err().contains("\"none\""));
        assert!(
            check_nitro_entropy(&dir.path().join("missing"))
                .unwrap_err()
                .contains("Nitro Enclave")
        );
    }

    #[test]
    fn drift_is_ours_minus_the_parents() {
        let d = ClockDrift::default();
        assert_eq!(d.observe(1_000, 1_500), 500);
        assert_eq!(d.millis(), 500);
    }
}
