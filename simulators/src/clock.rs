//! The simulators' notion of "now": the wall clock plus an offset that tests can move forward, so
//! that holds and tokens expire without a test having to sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A wall clock that can be advanced (never moved back). Cheap to clone; clones share the offset,
/// so both simulators of one [`crate::SimHandle`] see the same time.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The simulated current time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves simulated time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// How far simulated time is ahead of the wall clock.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.offset_ms.load(Ordering::Relaxed)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward_for_every_clone() {
        let clock = SimClock::new();
        let other = clock.clone();
        let before = other.now();
        clock.advance(Duration::from_secs(3600));
        assert!(other.now() - before >= chrono::Duration::seconds(3600));
        assert_eq!(other.offset(), Duration::from_secs(3600));
    }
}
