//! A circuit breaker per downstream: closed while calls go well; open (calls refused at once)
//! after a run of consecutive failures or a high failure rate over the last calls; half-open
//! after a cool-down, letting a few probe calls through, which close it again or reopen it.
//!
//! Written here rather than taken from a crate because the workers need the pieces together:
//! both opening rules, a neutral verdict (a 429 is neither health nor sickness), permits that
//! release a probe slot when dropped, and a snapshot for metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when at least this share of the last `window` calls failed...
    pub failure_rate: f64,
    pub window: usize,
    /// ...once the window holds at least this many calls.
    pub min_calls: usize,
    /// How long to stay open before probing.
    pub cool_down: Duration,
    /// Probes let through at once when half-open; this many successes close the circuit.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            cool_down: Duration::from_secs(10),
            probes: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What one call said about the downstream's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Neither (for example a 429: the downstream is up but busy).
    Neutral,
}

/// The breaker refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; next probe in {retry_after:?}")]
pub struct Open {
    pub retry_after: Duration,
}

/// The breaker's state for metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Share of failures among the calls in the window (0 when it is empty).
    pub failure_rate: f64,
    pub calls_in_window: usize,
    /// Times the circuit has opened since start-up.
    pub opened_total: u64,
    /// Calls refused while open or while the probes were taken.
    pub rejected_total: u64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    /// Recent outcomes, `true` for a failure.
    window: VecDeque<bool>,
    opened_at: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    opened_total: AtomicU64,
    rejected_total: AtomicU64,
}

/// Leave to make one call; report how it went with [`Permit::record`]. Dropping it unrecorded
/// counts as neutral (the call was abandoned).
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl Permit<'_> {
    pub fn record(mut self, verdict: Verdict) {
        self.recorded = true;
        self.breaker.record(self.probe, verdict);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.probe, Verdict::Neutral);
        }
    }
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                window: VecDeque::with_capacity(config.window),
                opened_at: Instant::now(),
                probes_in_flight: 0,
                probe_successes: 0,
            }),
            config,
            opened_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Open> {
        let mut inner = self.lock();
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open => {
                let reopen_at = inner.opened_at + self.config.cool_down;
                let now = Instant::now();
                if now < reopen_at {
                    drop(inner);
                    self.rejected_total.fetch_add(1, Ordering::Relaxed);
                    return Err(Open {
                        retry_after: reopen_at - now,
                    });
                }
                inner.state = BreakerState::HalfOpen;
                inner.probes_in_flight = 0;
                inner.probe_successes = 0;
                true
            }
            BreakerState::HalfOpen => {
                if inner.probes_in_flight >= self.config.probes.max(1) {
                    drop(inner);
                    self.rejected_total.fetch_add(1, Ordering::Relaxed);
                    return Err(Open {
                        retry_after: Duration::from_millis(100).min(self.config.cool_down),
                    });
                }
                true
            }
        };
        if probe {
            inner.probes_in_flight += 1;
        }
        Ok(Permit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn open(&self, inner: &mut Inner) {
        inner.state = BreakerState::Open;
        inner.opened_at = Instant::now();
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(downstream = %self.name, "circuit opened");
    }

    fn record(&self, probe: bool, verdict: Verdict) {
        let mut inner = self.lock();
        if probe {
            if inner.state != BreakerState::HalfOpen {
                return;
            }
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            match verdict {
                Verdict::Success => {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= self.config.probes.max(1) {
                        inner.state = BreakerState::Closed;
                        inner.consecutive = 0;
                        inner.window.clear();
                        tracing::info!(downstream = %self.name, "circuit closed");
                    }
                }
                Verdict::Failure => self.open(&mut inner),
                Verdict::Neutral => {}
            }
            return;
        }
        // Answers to calls let through before the circuit opened say nothing new.
        if inner.state != BreakerState::Closed || verdict == Verdict::Neutral {
            return;
        }
        let failed = verdict == Verdict::Failure;
        inner.consecutive = if failed { inner.consecutive + 1 } else { 0 };
        if inner.window.len() >= self.config.window.max(1) {
            inner.window.pop_front();
        }
        inner.window.push_back(failed);
        let failures = inner.window.iter().filter(|f| **f).count();
        let rate_exceeded = inner.window.len() >= self.config.min_calls.max(1)
            && failures as f64 >= self.config.failure_rate * inner.window.len() as f64;
        if failed && (inner.consecutive >= self.config.consecutive_failures.max(1) || rate_exceeded)
        {
            self.open(&mut inner);
        }
    }

    /// How long before the breaker would let a call through; `None` when it would now. Lets a
    /// worker leave a command in its queue instead of taking it while the downstream is out.
    pub fn blocked_for(&self) -> Option<Duration> {
        let inner = self.lock();
        match inner.state {
            BreakerState::Closed => None,
            BreakerState::Open => {
                let reopen_at = inner.opened_at + self.config.cool_down;
                let now = Instant::now();
                (now < reopen_at).then(|| reopen_at - now)
            }
            BreakerState::HalfOpen => (inner.probes_in_flight >= self.config.probes.max(1))
                .then(|| Duration::from_millis(100).min(self.config.cool_down)),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = self.lock();
        let failures = inner.window.iter().filter(|f| **f).count();
        BreakerSnapshot {
            name: self.name.clone(),
            state: inner.state,
            consecutive_failures: inner.consecutive,
            failure_rate: if inner.window.is_empty() {
                0.0
            } else {
                failures as f64 / inner.window.len() as f64
            },
            calls_in_window: inner.window.len(),
            opened_total: self.opened_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10,
            min_calls: 6,
            cool_down: Duration::from_secs(5),
            probes: 1,
        }
    }

    fn call(b: &CircuitBreaker, v: Verdict) {
        b.try_acquire().expect("closed").record(v);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_then_a_probe_after_the_cool_down_closes() {
        let b = CircuitBreaker::new("test", config());
        call(&b, Verdict::Failure);
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        let open = b.try_acquire().expect_err("open");
        assert_eq!(open.retry_after, Duration::from_secs(5));
        assert_eq!(b.blocked_for(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.blocked_for(), None, "a probe may go");
        let probe = b.try_acquire().expect("probe after cool-down");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_err(), "one probe at a time");
        assert!(b.blocked_for().is_some());
        probe.record(Verdict::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        let snap = b.snapshot();
        assert_eq!((snap.opened_total, snap.rejected_total), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_a_dropped_probe_frees_its_slot() {
        let b = CircuitBreaker::new("test", config());
        for _ in 0..3 {
            call(&b, Verdict::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().expect("probe"));
        b.try_acquire()
            .expect("slot freed")
            .record(Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_opens_without_a_run_of_failures() {
        let b = CircuitBreaker::new("test", config());
        for v in [
            Verdict::Failure,
            Verdict::Success,
            Verdict::Failure,
            Verdict::Success,
            Verdict::Failure,
        ] {
            call(&b, v);
        }
        assert_eq!(b.state(), BreakerState::Closed, "too few calls for a rate");
        call(&b, Verdict::Success);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "3 of 6 is the threshold, checked on failure"
        );
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_answers_neither_open_nor_reset() {
        let b = CircuitBreaker::new("test", config());
        call(&b, Verdict::Failure);
        call(&b, Verdict::Failure);
        call(&b, Verdict::Neutral);
        assert_eq!(b.snapshot().consecutive_failures, 2);
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
