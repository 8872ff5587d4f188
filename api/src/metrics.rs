//! `/metrics` in the Prometheus text format, read at scrape time: sagas by status (the store's
//! maintained counts), each queue's depth and dead letters (and the oldest message's age where
//! the backend knows it), and what the process that serves the API also runs (the
//! orchestrator's counters, each worker's commands and its downstream's circuit), which the
//! application hands over as [`Sample`]s.
//!
//! Encoded with `prometheus-client` (the Prometheus project's own Rust client): a registry is
//! filled per scrape, so nothing here keeps state between scrapes.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use como_engine::StatusKind;
use como_ports::QueueName;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{ApiError, ApiState};

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Counters = Family<Labels, Counter<f64, AtomicU64>>;

/// Whether a sample only grows (a counter), goes up and down (a gauge), or is a histogram
/// (its `histogram` holds the buckets; `value` is unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One value of a metric of the process.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Without `como_` (added) and, for a counter, without `_total` (added).
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Labels,
    pub value: f64,
    pub histogram: Option<HistogramValue>,
}

/// A histogram as it stands: per bucket (upper bound, observations in it, not cumulative;
/// the last bound `f64::MAX` for +Inf), the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A histogram whose buckets are set, not observed: what an aggregate kept elsewhere (the
/// orchestrator's) is encoded as.
#[derive(Debug, Default)]
struct SetHistogram(std::sync::Mutex<HistogramValue>);

impl prometheus_client::metrics::TypedMetric for SetHistogram {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for SetHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, h.count, &h.buckets, None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

type Histograms = Family<Labels, SetHistogram>;

/// What the process adds to the scrape (its roles' counters), read at each scrape.
pub type ProcessMetrics = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// The text of one scrape.
pub async fn scrape(state: &ApiState) -> Result<String, ApiError> {
    let mut samples = Vec::new();
    let counts = state.reader.counts().await.map_err(ApiError::store)?;
    for kind in StatusKind::ALL {
        samples.push(Sample {
            name: "sagas".into(),
            help: "Sagas in each status now".into(),
            kind: Kind::Gauge,
            labels: vec![("status".into(), kind.as_str().into())],
            value: counts
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0.0, |(_, n)| *n as f64),
            histogram: None,
        });
    }
    for c in state.reader.step_counts().await.map_err(ApiError::store)? {
        samples.push(Sample {
            name: "sagas_at_step".into(),
            help: "Sagas not finished, by status and the step they are at".into(),
            kind: Kind::Gauge,
            labels: vec![
                ("status".into(), c.status.as_str().into()),
                ("step".into(), c.step.to_string()),
            ],
            value: c.count as f64,
            histogram: None,
        });
    }
    let now = state.ports.clock.now();
    for queue in QueueName::ALL {
        let depth = state
            .ports
            .queue
            .depth(queue)
            .await
            .map_err(ApiError::store)?;
        let name = queue.to_string();
        for (which, value) in [
            ("visible", depth.visible),
            ("not_visible", depth.not_visible),
        ] {
            samples.push(Sample {
                name: "queue_messages".into(),
                help: "Messages in each queue: waiting (visible), or received or delayed (not_visible)".into(),
                kind: Kind::Gauge,
                labels: vec![("queue".into(), name.clone()), ("state".into(), which.into())],
                value: value as f64,
                histogram: None,
            });
        }
        samples.push(Sample {
            name: "dead_letters".into(),
            help: "Messages set aside in each queue's dead letters".into(),
            kind: Kind::Gauge,
            labels: vec![("queue".into(), name.clone())],
            value: depth.dead_letters as f64,
            histogram: None,
        });
        if let Some(oldest) = depth.oldest_sent_at {
            samples.push(Sample {
                name: "queue_oldest_message_age_seconds".into(),
                help: "Age of the oldest message still in each queue (where the backend knows it; on SQS see CloudWatch's ApproximateAgeOfOldestMessage)".into(),
                kind: Kind::Gauge,
                labels: vec![("queue".into(), name)],
                value: now.millis_since(oldest) as f64 / 1000.0,
                histogram: None,
            });
        }
    }
    if let Some(process) = &state.process_metrics {
        samples.extend(process());
    }
    encode_samples(&samples)
}

fn encode_samples(samples: &[Sample]) -> Result<String, ApiError> {
    let mut registry = Registry::with_prefix("como");
    let mut gauges: Vec<(String, Gauges)> = Vec::new();
    let mut counters: Vec<(String, Counters)> = Vec::new();
    let mut histograms: Vec<(String, Histograms)> = Vec::new();
    for s in samples {
        match s.kind {
            Kind::Histogram => {
                let family = match histograms.iter().find(|(n, _)| *n == s.name) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let f = Family::default();
                        registry.register(s.name.clone(), s.help.clone(), f.clone());
                        histograms.push((s.name.clone(), f.clone()));
                        f
                    }
                };
                let value = s.histogram.clone().unwrap_or_default();
                *family
                    .get_or_create(&s.labels)
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = value;
            }
            Kind::Gauge => {
                let family = match gauges.iter().find(|(n, _)| *n == s.name) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let f = Family::default();
                        registry.register(s.name.clone(), s.help.clone(), f.clone());
                        gauges.push((s.name.clone(), f.clone()));
                        f
                    }
                };
                family.get_or_create(&s.labels).set(s.value);
            }
            Kind::Counter => {
                let family = match counters.iter().find(|(n, _)| *n == s.name) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let f = Family::default();
                        registry.register(s.name.clone(), s.help.clone(), f.clone());
                        counters.push((s.name.clone(), f.clone()));
                        f
                    }
                };
                family.get_or_create(&s.labels).inc_by(s.value);
            }
        }
    }
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(text)
}
