//! Refusing replayed authorizations: remembers the device nonces of recent flow starts.
//!
//! An authorization is valid for a few minutes (its timestamp window); the cache keeps each
//! nonce for longer than that window, so a replayed start is refused even though its
//! signature is valid.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Recently seen session nonces.
pub struct ReplayCache {
    keep: Duration,
    max: usize,
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl ReplayCache {
    /// Remembers nonces for `keep`, at most `max` of them (the oldest are dropped first
    /// when full — with `keep` longer than the authorization window this only matters
    /// under a flood, which the proxy's rate limits stop earlier).
    pub fn new(keep: Duration, max: usize) -> Self {
        ReplayCache {
            keep,
            max,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records `nonce`; returns `false` if it was seen within the window (a replay).
    pub fn first_use(&self, nonce: [u8; 32]) -> bool {
        let Ok(mut seen) = self.seen.lock() else { return false };
        let now = Instant::now();
        if seen.len() >= self.max {
            seen.retain(|_, t| now.duration_since(*t) < self.keep);
            if seen.len() >= self.max
                && let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        match seen.get(&nonce) {
            Some(t) if now.duration_since(*t) < self.keep => false,
            _ => {
                seen.insert(nonce, now);
                true
            }
        }
    }

    /// Forgets expired nonces.
    pub fn prune(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            let now = Instant::now();
            seen.retain(|_, t| now.duration_since(*t) < self.keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_a_replay() {
        let c = ReplayCache::new(Duration::from_secs(60), 2);
        assert!(c.first_use([1; 32]));
        assert!(!c.first_use([1; 32]));
        assert!(c.first_use([2; 32]));
        assert!(c.first_use([3; 32]));
    }
}
