//! A circuit breaker per downstream: closed while calls go well; open (calls refused at once)
//! after a run of consecutive failures or a high failure rate over the last calls. An open
//! breaker is closed again only by a **probe**: a cheap read that the worker's health monitor
//! ([`crate::health`]) makes on the breaker's own schedule, one at a time. A saga's command is
//! never the probe, so an outage never spends a saga's retry budget: while the breaker is not
//! closed, commands wait in their queue (see [`crate::runtime`]).
//!
//! Written here rather than taken from a crate because the workers need the pieces together:
//! both opening rules, a neutral verdict (a 429 is neither health nor sickness), probes that are
//! not calls, a state that other worker processes can open and close (through the shared
//! health record), and a snapshot for metrics.

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
    /// How long to stay open before the next probe (after opening, and after a failed probe).
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            // Short, because a probe is one cheap read: a recovered downstream is found within
            // seconds, and the backlog then drains at the rate limit.
            cool_down: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// Open, with a probe in flight.
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

/// The breaker's state for metrics and the operator surface.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    /// How long it has been in this state (since it opened, or closed), in milliseconds.
    pub in_state_ms: u64,
    /// Milliseconds until the next probe while open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_probe_in_ms: Option<u64>,
    pub consecutive_failures: u32,
    /// Share of failures among the calls in the window (0 when it is empty).
    pub failure_rate: f64,
    pub calls_in_window: usize,
    /// Times the circuit has opened since start-up (by this process's calls or another's).
    pub opened_total: u64,
    /// Calls refused while it was open.
    pub rejected_total: u64,
    /// Probes made by this process, and those of them that failed.
    pub probes_total: u64,
    pub probes_failed_total: u64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    /// Recent outcomes, `true` for a failure.
    window: VecDeque<bool>,
    /// When the state last changed.
    changed_at: Instant,
    /// While open: when the next probe is due.
    next_probe_at: Instant,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    opened_total: AtomicU64,
    rejected_total: AtomicU64,
    probes_total: AtomicU64,
    probes_failed_total: AtomicU64,
}

/// Leave to make one call; report how it went with [`Permit::record`]. Dropping it unrecorded
/// counts as neutral (the call was abandoned).
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    recorded: bool,
}

impl Permit<'_> {
    pub fn record(mut self, verdict: Verdict) {
        self.recorded = true;
        self.breaker.record(verdict);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(Verdict::Neutral);
        }
    }
}

/// The shortest wait a refused call is told about (so that nobody spins on an open circuit).
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let now = Instant::now();
        Self {
            name: name.into(),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                window: VecDeque::with_capacity(config.window),
                changed_at: now,
                next_probe_at: now,
            }),
            config,
            opened_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            probes_total: AtomicU64::new(0),
            probes_failed_total: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a command should wait before the circuit may be closed: until the next probe
    /// has had time to answer.
    fn wait(&self, inner: &Inner, now: Instant) -> Duration {
        match inner.state {
            BreakerState::Closed => Duration::ZERO,
            BreakerState::Open => inner.next_probe_at.saturating_duration_since(now),
            BreakerState::HalfOpen => Duration::ZERO,
        }
        .max(MIN_RETRY_AFTER)
    }

    /// Asks to make a call: granted only while closed.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Open> {
        let inner = self.lock();
        if inner.state != BreakerState::Closed {
            let retry_after = self.wait(&inner, Instant::now());
            drop(inner);
            self.rejected_total.fetch_add(1, Ordering::Relaxed);
            return Err(Open { retry_after });
        }
        Ok(Permit {
            breaker: self,
            recorded: false,
        })
    }

    fn open(&self, inner: &mut Inner, why: &str) {
        let now = Instant::now();
        inner.state = BreakerState::Open;
        inner.changed_at = now;
        inner.next_probe_at = now + self.config.cool_down;
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(downstream = %self.name, why, "circuit opened; commands wait until a probe succeeds");
    }

    fn close(&self, inner: &mut Inner, why: &str) {
        inner.state = BreakerState::Closed;
        inner.changed_at = Instant::now();
        inner.consecutive = 0;
        inner.window.clear();
        tracing::info!(downstream = %self.name, why, "circuit closed");
    }

    fn record(&self, verdict: Verdict) {
        let mut inner = self.lock();
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
            self.open(&mut inner, "calls failed");
        }
    }

    /// Whether a probe is due now (open, and its cool-down over).
    pub fn probe_due(&self) -> bool {
        let inner = self.lock();
        inner.state == BreakerState::Open && Instant::now() >= inner.next_probe_at
    }

    /// Takes the probe slot if a probe is due. The caller then probes and reports with
    /// [`CircuitBreaker::finish_probe`].
    pub fn start_probe(&self) -> bool {
        let mut inner = self.lock();
        if inner.state != BreakerState::Open || Instant::now() < inner.next_probe_at {
            return false;
        }
        inner.state = BreakerState::HalfOpen;
        self.probes_total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A probe's answer: the downstream is up (close) or still down (open for another
    /// cool-down).
    pub fn finish_probe(&self, up: bool) {
        let mut inner = self.lock();
        if inner.state != BreakerState::HalfOpen {
            return;
        }
        if up {
            self.close(&mut inner, "a probe succeeded");
        } else {
            self.probes_failed_total.fetch_add(1, Ordering::Relaxed);
            inner.state = BreakerState::Open;
            inner.next_probe_at = Instant::now() + self.config.cool_down;
        }
    }

    /// Another worker process found the downstream down: open without spending our own
    /// calls on finding out.
    pub fn open_from_peer(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Closed {
            self.open(
                &mut inner,
                "another worker process found the downstream down",
            );
        }
    }

    /// Another worker process's probe succeeded.
    pub fn close_from_peer(&self) {
        let mut inner = self.lock();
        if inner.state != BreakerState::Closed {
            self.close(&mut inner, "another worker process's probe succeeded");
        }
    }

    /// Another process made (or is making) the probe due now: ours waits for its turn.
    pub fn defer_probe(&self, by: Duration) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            inner.next_probe_at = Instant::now() + by;
        }
    }

    /// How long before the breaker would let a call through; `None` when it would now. Lets a
    /// worker leave a command in its queue instead of taking it while the downstream is out.
    pub fn blocked_for(&self) -> Option<Duration> {
        let inner = self.lock();
        (inner.state != BreakerState::Closed).then(|| self.wait(&inner, Instant::now()))
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// How long the breaker has been in its state.
    pub fn in_state_for(&self) -> Duration {
        self.lock().changed_at.elapsed()
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let inner = self.lock();
        let now = Instant::now();
        let failures = inner.window.iter().filter(|f| **f).count();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        BreakerSnapshot {
            name: self.name.clone(),
            state: inner.state,
            in_state_ms: ms(now.saturating_duration_since(inner.changed_at)),
            next_probe_in_ms: (inner.state == BreakerState::Open)
                .then(|| ms(inner.next_probe_at.saturating_duration_since(now))),
            consecutive_failures: inner.consecutive,
            failure_rate: if inner.window.is_empty() {
                0.0
            } else {
                failures as f64 / inner.window.len() as f64
            },
            calls_in_window: inner.window.len(),
            opened_total: self.opened_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
            probes_total: self.probes_total.load(Ordering::Relaxed),
            probes_failed_total: self.probes_failed_total.load(Ordering::Relaxed),
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
        }
    }

    fn call(b: &CircuitBreaker, v: Verdict) {
        b.try_acquire().expect("closed").record(v);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_lets_no_call_through_until_a_probe_succeeds() {
        let b = CircuitBreaker::new("test", config());
        call(&b, Verdict::Failure);
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, Verdict::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        let open = b.try_acquire().expect_err("open");
        assert_eq!(open.retry_after, Duration::from_secs(5));
        assert!(!b.start_probe(), "not before the cool-down");
        tokio::time::advance(Duration::from_secs(5)).await;
        // The cool-down is over, yet a call is still refused: only a probe may go.
        assert!(b.try_acquire().is_err(), "a command is never the probe");
        assert!(b.blocked_for().is_some());
        assert!(b.start_probe());
        assert!(!b.start_probe(), "one probe at a time");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_err(), "nor during the probe");
        b.finish_probe(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.blocked_for(),
            Some(Duration::from_secs(5)),
            "another cool-down"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.start_probe());
        b.finish_probe(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.blocked_for(), None);
        let snap = b.snapshot();
        assert_eq!((snap.opened_total, snap.rejected_total), (1, 3));
        assert_eq!((snap.probes_total, snap.probes_failed_total), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn peers_open_and_close_it_and_defer_its_probe() {
        let b = CircuitBreaker::new("test", config());
        b.open_from_peer();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.defer_probe(Duration::from_secs(2));
        assert!(!b.probe_due(), "another process probes now");
        b.close_from_peer();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire().is_ok());
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
