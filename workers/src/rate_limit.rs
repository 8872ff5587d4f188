//! A rate limit per downstream, so that a backlog (say, after an outage) drains at a pace the
//! downstream accepts instead of in a burst it answers with 429s.
//!
//! Built on `governor`'s GCRA limiter: lock-free on the hot path, no background task. Waiting
//! is bounded by the caller's deadline.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::clients::Deadline;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained calls per second.
    pub per_second: NonZeroU32,
    /// Calls that may go at once after a quiet spell.
    pub burst: NonZeroU32,
}

/// The limit's counters for metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitSnapshot {
    pub name: String,
    pub per_second: u32,
    pub burst: u32,
    /// Calls let through at once.
    pub admitted_total: u64,
    /// Calls let through after waiting their turn.
    pub delayed_total: u64,
    /// Calls refused because their turn came after their deadline.
    pub refused_total: u64,
}

pub struct RateLimit {
    name: String,
    config: RateLimitConfig,
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    admitted: AtomicU64,
    delayed: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    pub fn new(name: impl Into<String>, config: RateLimitConfig) -> Self {
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        Self {
            name: name.into(),
            config,
            limiter: RateLimiter::direct(quota),
            clock: DefaultClock::default(),
            admitted: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for a turn. Refuses at once, with the wait it would have needed, when the turn
    /// comes after `deadline`.
    pub async fn acquire(&self, deadline: Deadline) -> Result<(), Duration> {
        let mut waited = false;
        loop {
            match self.limiter.check() {
                Ok(()) => {
                    let counter = if waited {
                        &self.delayed
                    } else {
                        &self.admitted
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait >= deadline.remaining() {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(wait);
                    }
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub fn snapshot(&self) -> RateLimitSnapshot {
        RateLimitSnapshot {
            name: self.name.clone(),
            per_second: self.config.per_second.get(),
            burst: self.config.burst.get(),
            admitted_total: self.admitted.load(Ordering::Relaxed),
            delayed_total: self.delayed.load(Ordering::Relaxed),
            refused_total: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit::new(
            "test",
            RateLimitConfig {
                per_second: NonZeroU32::new(per_second).unwrap(),
                burst: NonZeroU32::new(burst).unwrap(),
            },
        )
    }

    #[tokio::test]
    async fn a_burst_passes_then_calls_wait_their_turn() {
        let limit = limit(50, 3);
        let deadline = Deadline::after(Duration::from_secs(5));
        for _ in 0..3 {
            limit.acquire(deadline).await.unwrap();
        }
        limit.acquire(deadline).await.unwrap();
        let snap = limit.snapshot();
        assert_eq!((snap.admitted_total, snap.delayed_total), (3, 1));
    }

    #[tokio::test]
    async fn a_turn_past_the_deadline_is_refused_without_waiting() {
        let limit = limit(1, 1);
        limit
            .acquire(Deadline::after(Duration::from_secs(5)))
            .await
            .unwrap();
        let wait = limit
            .acquire(Deadline::after(Duration::from_millis(100)))
            .await
            .expect_err("next turn is a second away");
        assert!(wait > Duration::from_millis(500));
        assert_eq!(limit.snapshot().refused_total, 1);
    }
}
