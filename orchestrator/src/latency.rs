//! What this orchestrator saw of each step's commands, for `/metrics`: how long a command took
//! from the commit that sent it to the commit that applied its reply (a histogram per step and
//! kind of command), how many commands were retries (attempt 2 or later), and how many
//! compensations began (a compensation's first attempt).
//!
//! In-process only: a command sent by one orchestrator whose reply another applies is counted
//! by neither histogram (each still counts what it sent). Commands never answered (timed out,
//! lost) are forgotten after ten minutes, so the table stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::advance::Applied;

/// Upper bounds of the histogram's buckets, in seconds (and +Inf).
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

const FORGET_AFTER: Duration = Duration::from_secs(600);
const KEEP_AT_MOST: usize = 100_000;

/// One step's histogram: a count per bucket (not cumulative; the last is +Inf), the sum and
/// the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS_SECONDS.len() + 1];
        }
        let i = BUCKETS_SECONDS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    sent: HashMap<String, Instant>,
    /// By (step, kind of command).
    latency: BTreeMap<(String, String), Histogram>,
    /// By (step, kind): commands sent at attempt 2 or later.
    retries: BTreeMap<(String, String), u64>,
    /// By step: compensations begun.
    compensations: BTreeMap<String, u64>,
}

/// What [`StepStats::snapshot`] returns.
#[derive(Debug, Clone, Default)]
pub struct StepSnapshot {
    pub latency: Vec<(String, String, Histogram)>,
    pub retries: Vec<(String, String, u64)>,
    pub compensations: Vec<(String, u64)>,
}

#[derive(Default)]
pub struct StepStats {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StepStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepStats")
            .field("in_flight", &self.inner().sent.len())
            .finish_non_exhaustive()
    }
}

impl StepStats {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called with every stored transition.
    pub fn observe(&self, applied: &Applied) {
        let now = Instant::now();
        let mut inner = self.inner();
        for id in &applied.sent {
            let Some((step, kind, attempt)) = id.parts() else {
                continue;
            };
            if attempt > 1 {
                *inner
                    .retries
                    .entry((step.to_owned(), kind.to_owned()))
                    .or_insert(0) += 1;
            } else if kind == "compensation" {
                *inner.compensations.entry(step.to_owned()).or_insert(0) += 1;
            }
            inner.sent.insert(id.as_str().to_owned(), now);
        }
        if let Some(replied) = &applied.replied
            && let Some(at) = inner.sent.remove(replied.as_str())
            && let Some((step, kind, _)) = replied.parts()
        {
            inner
                .latency
                .entry((step.to_owned(), kind.to_owned()))
                .or_default()
                .observe(now.duration_since(at).as_secs_f64());
        }
        if inner.sent.len() > KEEP_AT_MOST {
            inner
                .sent
                .retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
        }
    }

    pub fn snapshot(&self) -> StepSnapshot {
        let inner = self.inner();
        StepSnapshot {
            latency: inner
                .latency
                .iter()
                .map(|((s, k), h)| (s.clone(), k.clone(), h.clone()))
                .collect(),
            retries: inner
                .retries
                .iter()
                .map(|((s, k), n)| (s.clone(), k.clone(), *n))
                .collect(),
            compensations: inner
                .compensations
                .iter()
                .map(|(s, n)| (s.clone(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_their_bucket() {
        let mut h = Histogram::default();
        h.observe(0.004);
        h.observe(0.3);
        h.observe(1_000.0);
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[6], 1, "0.3 s is at most 0.5 s");
        assert_eq!(h.buckets[BUCKETS_SECONDS.len()], 1, "+Inf");
    }
}
