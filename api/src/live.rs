//! The overview a dashboard watches, and how it reaches every watcher without a reload.
//!
//! One sampler per serving process reads the overview ([`Overview`]: counts by status and by
//! step, each downstream's circuit from the workers' shared health records, queue depths with
//! the oldest message's age, dead letters) and publishes it on a `watch` channel. Every open
//! `GET /v1/live` stream (server-sent events) forwards each new overview, so the cost of the
//! reads does not grow with the number of dashboards open: one read set per interval while
//! anyone watches ([`LiveConfig::every`]), one a minute while no one does
//! ([`LiveConfig::idle_every`]: enough to keep the last hour's per-minute figures; or none).
//!
//! The last hour ([`Overview::series`]) comes from the differences between consecutive counts:
//! sagas started (the total grew) and finished, and of those compensated, per minute. It
//! covers the minutes this process has watched (`series_since`); a restart starts it afresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use como_engine::StatusKind;
use como_ports::records::SharedHealth;
use como_ports::{Backend, QueueName};
use como_schemas::{Timestamp, Worker};
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::{Counts, StatusCount, StepCountView};

/// How often the overview is read.
#[derive(Debug, Clone, Copy)]
pub struct LiveConfig {
    /// While at least one stream is open.
    pub every: Duration,
    /// While none is: only for the last hour's figures; `None`: no reads while no one
    /// watches (the last hour then covers only the minutes someone watched; what a
    /// deployment whose every count is a paid read of the table may prefer).
    pub idle_every: Option<Duration>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            every: Duration::from_secs(2),
            idle_every: Some(Duration::from_secs(60)),
        }
    }
}

/// What the overview shows, read at `at`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    pub at: Timestamp,
    pub counts: Counts,
    /// Per minute, oldest first, at most the last 60 minutes this process watched.
    pub series: Vec<Minute>,
    /// Since when this process has watched (the series starts here).
    pub series_since: Timestamp,
    /// Each downstream's circuit, as the workers share it.
    pub circuits: Vec<Circuit>,
    pub queues: Vec<QueueView>,
    /// Dead letters over every queue.
    pub dead_letters: u64,
}

/// One minute of the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Minute {
    /// The minute's start.
    pub minute: Timestamp,
    /// Sagas started in it.
    pub started: u64,
    /// Sagas finished in it (confirmed, compensated or cancelled).
    pub finished: u64,
    /// Of those, compensated.
    pub compensated: u64,
}

/// A downstream's circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Circuit {
    /// `memberson` or `sevenrooms`.
    pub downstream: String,
    /// `closed` (calls go), `open` (found down: commands wait, one probe at a time), or
    /// `unknown` (its record could not be read).
    pub state: String,
    /// Since when (not known for a downstream never found down).
    #[schema(required = true)]
    pub since: Option<Timestamp>,
    /// While open: when the next probe may go.
    #[schema(required = true)]
    pub next_probe_at: Option<Timestamp>,
}

/// A queue's depth.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    /// Waiting to be received now.
    pub visible: u64,
    /// Received and not yet deleted, or delayed.
    pub not_visible: u64,
    pub dead_letters: u64,
    /// When the oldest message still in the queue was sent, where the backend knows it (SQS
    /// publishes it only as a CloudWatch metric).
    #[schema(required = true)]
    pub oldest_sent_at: Option<Timestamp>,
    #[schema(required = true)]
    pub oldest_age_seconds: Option<f64>,
}

/// Totals at one sample, for the per-minute differences.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at: Timestamp,
    total: u64,
    finished: u64,
    compensated: u64,
}

/// The last hour, minute by minute.
#[derive(Debug, Default)]
struct Series {
    since: Option<Timestamp>,
    last: Option<Totals>,
    minutes: BTreeMap<i64, Minute>,
}

const MINUTE_MS: i64 = 60_000;

impl Series {
    /// Adds the differences since the previous sample to the sample's minute; keeps 60.
    fn record(&mut self, now: Totals) {
        self.since.get_or_insert(now.at);
        if let Some(before) = self.last {
            let start = now.at.as_millis().div_euclid(MINUTE_MS) * MINUTE_MS;
            let m = self.minutes.entry(start).or_insert(Minute {
                minute: Timestamp::from_millis(start),
                started: 0,
                finished: 0,
                compensated: 0,
            });
            // Finished sagas expire from a store after their retention: a total may fall.
            m.started += now.total.saturating_sub(before.total);
            m.finished += now.finished.saturating_sub(before.finished);
            m.compensated += now.compensated.saturating_sub(before.compensated);
            let oldest = start - 59 * MINUTE_MS;
            self.minutes.retain(|k, _| *k >= oldest);
        }
        self.last = Some(now);
    }

    fn view(&self) -> Vec<Minute> {
        self.minutes.values().copied().collect()
    }
}

/// The sampler and its subscribers: cloned into every handler.
#[derive(Clone)]
pub struct Pulse {
    inner: Arc<Inner>,
}

struct Inner {
    ports: Backend,
    config: LiveConfig,
    tx: watch::Sender<Option<Arc<Overview>>>,
    series: Mutex<Series>,
    /// Serialises reads: a stream's first overview and the sampler never read at once.
    reading: tokio::sync::Mutex<()>,
    started: AtomicBool,
}

impl Pulse {
    pub fn new(ports: Backend, config: LiveConfig) -> Pulse {
        Pulse {
            inner: Arc::new(Inner {
                ports,
                config,
                tx: watch::channel(None).0,
                series: Mutex::new(Series::default()),
                reading: tokio::sync::Mutex::new(()),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Starts the sampler (once; it stops when the last `Pulse` is dropped). Needs a runtime.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(run(weak));
    }

    /// A subscription to every overview read from now on.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Overview>>> {
        self.start();
        self.inner.tx.subscribe()
    }

    /// The latest overview if younger than the interval, else one read now (and published).
    pub async fn current(&self) -> Result<Arc<Overview>, String> {
        if let Some(latest) = self.inner.tx.borrow().clone()
            && self.inner.age_ms(latest.at) < millis(self.inner.config.every)
        {
            return Ok(latest);
        }
        self.inner.sample().await
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn run(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let watched = inner.tx.receiver_count() > 0;
        let every = if watched {
            Some(inner.config.every)
        } else {
            inner.config.idle_every
        };
        let due = every.is_some_and(|every| {
            inner
                .tx
                .borrow()
                .as_ref()
                .is_none_or(|o| inner.age_ms(o.at) >= millis(every) - 50)
        });
        if due && let Err(e) = inner.sample().await {
            tracing::warn!(error = %e, "the dashboard's overview could not be read");
        }
        drop(inner);
        // Look again often enough to notice the first watcher within a fraction of `every`.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Inner {
    fn age_ms(&self, at: Timestamp) -> i64 {
        self.ports.clock.now().as_millis() - at.as_millis()
    }

    async fn sample(&self) -> Result<Arc<Overview>, String> {
        let _one = self.reading.lock().await;
        let overview = Arc::new(self.read().await?);
        self.tx.send_replace(Some(overview.clone()));
        Ok(overview)
    }

    async fn read(&self) -> Result<Overview, String> {
        let at = self.ports.clock.now();
        let counts = read_counts(&self.ports).await?;
        let count = |k: StatusKind| {
            counts
                .by_status
                .iter()
                .find(|c| c.status == k.as_str())
                .map_or(0, |c| c.count)
        };
        let finished = StatusKind::ALL
            .into_iter()
            .filter(StatusKind::is_terminal)
            .map(count)
            .sum();
        let (series, series_since) = {
            let mut s = self.series.lock().unwrap_or_else(|e| e.into_inner());
            s.record(Totals {
                at,
                total: counts.total,
                finished,
                compensated: count(StatusKind::Compensated),
            });
            (s.view(), s.since.unwrap_or(at))
        };
        let mut circuits = Vec::new();
        for worker in Worker::ALL {
            circuits.push(self.circuit(worker.downstream()).await);
        }
        let mut queues = Vec::new();
        for queue in QueueName::ALL {
            let d = self
                .ports
                .queue
                .depth(queue)
                .await
                .map_err(|e| format!("queue {}: {e}", queue.as_str()))?;
            queues.push(QueueView {
                queue: queue.as_str().to_owned(),
                visible: d.visible,
                not_visible: d.not_visible,
                dead_letters: d.dead_letters,
                oldest_sent_at: d.oldest_sent_at,
                oldest_age_seconds: d
                    .oldest_sent_at
                    .map(|t| (at.as_millis() - t.as_millis()).max(0) as f64 / 1000.0),
            });
        }
        Ok(Overview {
            at,
            dead_letters: queues.iter().map(|q| q.dead_letters).sum(),
            counts,
            series,
            series_since,
            circuits,
            queues,
        })
    }

    async fn circuit(&self, downstream: &str) -> Circuit {
        let name = downstream.to_ascii_lowercase();
        let record = self.ports.records.get(&SharedHealth::key(downstream)).await;
        let parsed = record.map(|r| r.map(|v| serde_json::from_str::<SharedHealth>(&v)));
        match parsed {
            Ok(None) => Circuit {
                downstream: name,
                state: "closed".into(),
                since: None,
                next_probe_at: None,
            },
            Ok(Some(Ok(h))) => Circuit {
                downstream: name,
                state: if h.up { "closed" } else { "open" }.into(),
                since: Some(Timestamp::from_millis(h.since_ms)),
                next_probe_at: (!h.up).then(|| Timestamp::from_millis(h.next_probe_at_ms)),
            },
            Ok(Some(Err(e))) => {
                tracing::warn!(downstream, error = %e, "a health record is malformed");
                unknown(name)
            }
            Err(e) => {
                tracing::warn!(downstream, error = %e, "a health record could not be read");
                unknown(name)
            }
        }
    }
}

fn unknown(downstream: String) -> Circuit {
    Circuit {
        downstream,
        state: "unknown".into(),
        since: None,
        next_probe_at: None,
    }
}

/// Sagas by status (every status, zeros included) and live sagas by status and step.
pub(crate) async fn read_counts(ports: &Backend) -> Result<Counts, String> {
    let reader = ports.reader();
    let counted = reader.counts().await.map_err(|e| e.to_string())?;
    let by_status: Vec<StatusCount> = StatusKind::ALL
        .into_iter()
        .map(|k| StatusCount {
            status: k.as_str().to_owned(),
            count: counted.iter().find(|(c, _)| *c == k).map_or(0, |(_, n)| *n),
        })
        .collect();
    let total = by_status.iter().map(|c| c.count).sum();
    let by_step = reader
        .step_counts()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|c| StepCountView {
            status: c.status.as_str().to_owned(),
            step: c.step.to_string(),
            count: c.count,
        })
        .collect();
    Ok(Counts {
        by_status,
        total,
        by_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(minute: i64, second: i64, total: u64, finished: u64, compensated: u64) -> Totals {
        Totals {
            at: Timestamp::from_millis(minute * MINUTE_MS + second * 1000),
            total,
            finished,
            compensated,
        }
    }

    #[test]
    fn the_series_counts_differences_per_minute_and_keeps_an_hour() {
        let mut s = Series::default();
        s.record(totals(100, 10, 50, 40, 4));
        assert!(s.view().is_empty(), "one sample has no difference");
        s.record(totals(100, 40, 60, 45, 5));
        s.record(totals(101, 5, 70, 60, 8));
        // A total that falls (finished sagas expired) counts nothing, not a negative.
        s.record(totals(101, 30, 65, 55, 8));
        let v = s.view();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[0].minute.as_millis(),
                v[0].started,
                v[0].finished,
                v[0].compensated
            ),
            (100 * MINUTE_MS, 10, 5, 1)
        );
        assert_eq!((v[1].started, v[1].finished, v[1].compensated), (10, 15, 3));
        assert_eq!(s.since.unwrap().as_millis(), 100 * MINUTE_MS + 10_000);
        for m in 102..200 {
            s.record(totals(m, 0, 70 + m as u64, 60, 8));
        }
        let v = s.view();
        assert_eq!(v.len(), 60);
        assert_eq!(v[0].minute.as_millis(), 140 * MINUTE_MS);
        assert_eq!(v[59].minute.as_millis(), 199 * MINUTE_MS);
    }

    /// With no idle reads, a process nobody watches reads nothing; with them, it reads at once
    /// (and then once an interval), keeping the last hour's figures.
    #[tokio::test]
    async fn without_idle_reads_nobody_watching_means_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let backend = como_backend_embedded::EmbeddedBackend::open(
            dir.path().join("live.sqlite"),
            como_backend_embedded::EmbeddedConfig::default(),
            Arc::new(como_ports::SystemClock),
        )
        .unwrap();
        let read_once = |idle_every| {
            let pulse = Pulse::new(
                backend.ports(),
                LiveConfig {
                    every: Duration::from_secs(2),
                    idle_every,
                },
            );
            pulse.start();
            pulse
        };
        let idle_off = read_once(None);
        let idle_on = read_once(Some(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            idle_off.inner.tx.borrow().is_none(),
            "read with nobody watching"
        );
        assert!(idle_on.inner.tx.borrow().is_some(), "the idle read");
        // A watcher makes the idle-off pulse read.
        let _watching = idle_off.subscribe();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(idle_off.inner.tx.borrow().is_some(), "read while watched");
        backend.close().await;
    }
}
