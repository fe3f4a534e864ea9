//! Refusing replayed flow starts: remembers the channels (`enc`) of recent flow starts.
//!
//! Every flow's first message is authorized with a timestamp the enclave accepts within
//! a skew window, and names its sealed channel (`enc`, fresh for each session). The cache
//! remembers each `enc` for at least as long as a timestamp stays acceptable, so a replayed
//! start is refused even though its signature is valid.
//!
//! Bounded, with O(1) work per call: two generations of sets, the older dropped whole
//! when the newer is a `rotate_every` old, so an entry lives between one and two periods.
//! When full the cache *refuses* new starts (`RATE_LIMITED`) rather than forgetting
//! entries early: forgetting is what would let a host that floods it replay a start
//! (review finding M2).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a start was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This channel was seen within the window: a replay.
    Replayed,
    /// The cache is full; retry shortly.
    Full,
}

/// Recently seen channel ids.
pub struct ReplayCache {
    rotate_every: Duration,
    max: usize,
    inner: Mutex<Generations>,
}

struct Generations {
    since: Instant,
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

impl ReplayCache {
    /// Remembers each id for at least `keep` (and at most twice that), at most `max` ids.
    pub fn new(keep: Duration, max: usize) -> Self {
        ReplayCache {
            rotate_every: keep,
            max,
            inner: Mutex::new(Generations {
                since: Instant::now(),
                current: HashSet::new(),
                previous: HashSet::new(),
            }),
        }
    }

    /// Admits `id` if it was not seen within the window and there is room.
    pub fn admit(&self, id: [u8; 32]) -> Result<(), Refusal> {
        self.admit_at(id, Instant::now())
    }

    fn rotate(&self, g: &mut Generations, now: Instant) {
        if now.duration_since(g.since) >= self.rotate_every {
            let rotated_twice = now.duration_since(g.since) >= self.rotate_every * 2;
            g.previous = std::mem::take(&mut g.current);
            if rotated_twice {
                g.previous.clear();
            }
            g.since = now;
        }
    }

    /// Drops the older generation when it is due (the cache also does so on every
    /// admission; this frees memory when no flow starts).
    pub fn prune(&self) {
        if let Ok(mut g) = self.inner.lock() {
            self.rotate(&mut g, Instant::now());
        }
    }

    fn admit_at(&self, id: [u8; 32], now: Instant) -> Result<(), Refusal> {
        // A poisoned lock fails closed.
        let mut g = self.inner.lock().map_err(|_| Refusal::Full)?;
        self.rotate(&mut g, now);
        if g.current.contains(&id) || g.previous.contains(&id) {
            return Err(Refusal::Replayed);
        }
        if g.current.len() + g.previous.len() >= self.max {
            return Err(Refusal::Full);
        }
        g.current.insert(id);
        Ok(())
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|g| g.current.len() + g.previous.len())
            .unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_a_replay_within_the_window() {
        let c = ReplayCache::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert_eq!(c.admit_at([1; 32], t0), Ok(()));
        assert_eq!(c.admit_at([1; 32], t0), Err(Refusal::Replayed));
        // Still remembered one period later (in the older generation)...
        assert_eq!(
            c.admit_at([1; 32], t0 + Duration::from_secs(61)),
            Err(Refusal::Replayed)
        );
        // ...and forgotten after two.
        assert_eq!(c.admit_at([1; 32], t0 + Duration::from_secs(125)), Ok(()));
    }

    /// Review finding M2: flooding the cache must not evict a victim's entry.
    #[test]
    fn a_full_cache_refuses_instead_of_forgetting() {
        let c = ReplayCache::new(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        c.admit_at([9; 32], t0).unwrap();
        c.admit_at([1; 32], t0).unwrap();
        c.admit_at([2; 32], t0).unwrap();
        assert_eq!(c.admit_at([3; 32], t0), Err(Refusal::Full));
        assert_eq!(
            c.admit_at([9; 32], t0),
            Err(Refusal::Replayed),
            "the victim is still remembered"
        );
        assert_eq!(c.len(), 3);
    }
}
