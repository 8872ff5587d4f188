//! A rate limit per downstream, so that a backlog (say, after an outage) drains at a pace the
//! downstream accepts instead of in a burst it answers with 429s.
//!
//! Built on `governor`'s GCRA limiter: lock-free on the hot path, no background task. Calls
//! that must wait for a turn wait in line, first come first served (a fair `tokio` mutex), so
//! that under a backlog no call starves until its deadline while later ones go: the worker's
//! commands reach the downstream in the order they were taken from the queue. Waiting is
//! bounded by the caller's deadline.

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
    /// Calls waiting for a turn, in line.
    line: tokio::sync::Mutex<()>,
    waiting: AtomicU64,
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
            line: tokio::sync::Mutex::new(()),
            waiting: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for a turn, behind the calls already waiting. Refuses, with the wait it would
    /// still have needed, when the turn would come after `deadline`.
    pub async fn acquire(&self, deadline: Deadline) -> Result<(), Duration> {
        if self.waiting.load(Ordering::Acquire) == 0 && self.limiter.check().is_ok() {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let result = self.wait_in_line(deadline).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let counter = if result.is_ok() {
            &self.delayed
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn wait_in_line(&self, deadline: Deadline) -> Result<(), Duration> {
        let Ok(_turn) = tokio::time::timeout(deadline.remaining(), self.line.lock()).await else {
            return Err(self.expected_wait());
        };
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait >= deadline.remaining() {
                        return Err(wait.max(self.expected_wait()));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// How long a call that asked now would wait for its turn (the calls in line ahead of it
    /// at the sustained rate).
    pub fn expected_wait(&self) -> Duration {
        Duration::from_secs_f64(
            self.waiting.load(Ordering::Acquire) as f64 / f64::from(self.config.per_second.get()),
        )
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
    async fn calls_that_wait_are_let_through_in_the_order_they_came() {
        let limit = std::sync::Arc::new(limit(40, 1));
        let deadline = Deadline::after(Duration::from_secs(10));
        limit.acquire(deadline).await.unwrap();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (limit, order) = (limit.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                limit.acquire(deadline).await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Each is in line before the next comes.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            (0..12).collect::<Vec<_>>(),
            "first come, first served"
        );
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
