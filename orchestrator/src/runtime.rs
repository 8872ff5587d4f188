//! The orchestrator as a long-running process: three loops (requests, replies, timers) over the
//! ports, until shutdown. The queue loops are pumps (`como_ports::consumer`): on shutdown they
//! stop receiving and finish the messages in hand; a message not finished is simply received
//! again after its visibility timeout, by this process or another.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use como_ports::consumer::{ConsumeOptions, consume};
use como_ports::{Backend, Delivery, QueueName};

use crate::cache::RememberingStore;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::advance::{Applied, Observer};
use crate::catalogue::LiveCatalogue;
use crate::intake::{IntakeOutcome, handle_request};
use crate::replies::handle_reply_with;
use crate::timers::sweep_observed;

/// How the loops pace themselves.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Messages received per call.
    pub batch: usize,
    /// Messages (or timers) handled at once per loop.
    pub concurrency: usize,
    /// How long a received message stays hidden while it is handled.
    pub visibility: Duration,
    /// How long a receive waits for a first message.
    pub poll_wait: Duration,
    /// How often the timer sweep looks for due sagas when it found none.
    pub timer_interval: Duration,
    /// After an error from the backend, wait this long before trying again.
    pub error_backoff: Duration,
    /// How long a finished saga keeps the guest's contact; `None` keeps it (no sweep).
    pub retention: Option<Duration>,
    /// How often to look for finished sagas past their retention.
    pub retention_sweep_every: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            concurrency: 64,
            // Handling a request or a reply takes milliseconds; a crashed orchestrator's
            // messages come back to the others this soon.
            visibility: Duration::from_secs(10),
            poll_wait: Duration::from_millis(250),
            timer_interval: Duration::from_millis(100),
            error_backoff: Duration::from_millis(500),
            retention: Some(crate::privacy::DEFAULT_RETENTION),
            retention_sweep_every: crate::privacy::DEFAULT_SWEEP_EVERY,
        }
    }
}

/// What the orchestrator has done, for progress output and metrics.
#[derive(Debug, Default)]
pub struct OrchestratorStats {
    pub started: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub replies: AtomicU64,
    pub timer_sweeps: AtomicU64,
    pub errors: AtomicU64,
    /// Effects that landed after their saga ended, found and undone by the late-effect audit.
    pub late_effects_undone: AtomicU64,
    /// Each step's command latencies, retries and compensations (see `latency`).
    pub steps: crate::latency::StepStats,
}

/// A point-in-time copy of [`OrchestratorStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub started: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub replies: u64,
    pub timer_sweeps: u64,
    pub errors: u64,
    pub late_effects_undone: u64,
}

impl OrchestratorStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            started: r(&self.started),
            duplicates: r(&self.duplicates),
            rejected: r(&self.rejected),
            replies: r(&self.replies),
            timer_sweeps: r(&self.timer_sweeps),
            errors: r(&self.errors),
            late_effects_undone: r(&self.late_effects_undone),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One orchestrator. Several may run against one store: the conditional writes keep each saga
/// serial.
#[derive(Clone)]
pub struct Orchestrator {
    /// The backend's ports, with `cache` in place of its saga store.
    ports: Backend,
    cache: Arc<RememberingStore>,
    catalogue: LiveCatalogue,
    config: OrchestratorConfig,
    stats: Arc<OrchestratorStats>,
    observer: Option<Observer>,
}

impl Orchestrator {
    pub fn new(
        mut ports: Backend,
        catalogue: impl Into<LiveCatalogue>,
        config: OrchestratorConfig,
    ) -> Self {
        // This orchestrator remembers the sagas it wrote last (see `cache`).
        let cache = Arc::new(RememberingStore::new(ports.store));
        ports.store = cache.clone();
        Self {
            ports,
            cache,
            catalogue: catalogue.into(),
            config,
            stats: Arc::new(OrchestratorStats::default()),
            observer: None,
        }
    }

    /// Show every stored transition to `observer` (the benchmark measures with it).
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, applied: &Applied) {
        self.stats.steps.observe(applied);
        if let Some(observe) = &self.observer {
            observe(applied);
        }
    }

    pub fn stats(&self) -> Arc<OrchestratorStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` is cancelled and the batches in hand are finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let requests = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                me.consume(QueueName::Requests, shutdown, |me, d| async move {
                    match handle_request(&me.ports, &me.catalogue.current().venues, &d).await {
                        Ok(IntakeOutcome::Started(applied)) => {
                            bump(&me.stats.started);
                            me.observe(&applied);
                        }
                        Ok(IntakeOutcome::Duplicate(_)) => bump(&me.stats.duplicates),
                        Ok(IntakeOutcome::Rejected(_)) => bump(&me.stats.rejected),
                        Err(e) => me.failed("request", &e),
                    }
                })
                .await
            })
        };
        let replies = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                me.consume(QueueName::Replies, shutdown, |me, d| async move {
                    match handle_reply_with(&me.ports, Some(&me.cache), &d).await {
                        Ok(applied) => {
                            bump(&me.stats.replies);
                            if let Some(applied) = applied {
                                me.stats.late_effects_undone.fetch_add(
                                    u64::from(applied.late_effects_undone),
                                    Ordering::Relaxed,
                                );
                                me.observe(&applied);
                            }
                        }
                        Err(e) => me.failed("reply", &e),
                    }
                })
                .await
            })
        };
        let retention = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.retention(shutdown).await })
        };
        let timers = {
            let me = self.clone();
            tokio::spawn(async move { me.timers(shutdown).await })
        };
        for task in [requests, replies, retention, timers] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an orchestrator loop ended abnormally");
            }
        }
    }

    fn failed(&self, what: &str, e: &crate::RuntimeError) {
        bump(&self.stats.errors);
        let port = match e {
            crate::RuntimeError::Port(p) => Some(p),
            _ => None,
        };
        como_ports::health::not_done(&format!("a {what}"), e, port);
    }

    async fn consume<F, Fut>(&self, queue: QueueName, shutdown: CancellationToken, handle: F)
    where
        F: Fn(Orchestrator, Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let c = &self.config;
        let options = ConsumeOptions {
            concurrency: c.concurrency,
            batch: c.batch,
            visibility: c.visibility,
            poll_wait: c.poll_wait,
            error_backoff: c.error_backoff,
        };
        let me = self.clone();
        consume(
            self.ports.queue.clone(),
            queue,
            options,
            shutdown,
            move |d| handle(me.clone(), d),
        )
        .await;
    }

    /// Erases the guest's contact from finished sagas past their retention: soon after start,
    /// then every `retention_sweep_every`. Several orchestrators may sweep at once: each
    /// erasure is a conditional write, and a second one changes nothing.
    async fn retention(&self, shutdown: CancellationToken) {
        let Some(retention) = self.config.retention else {
            return;
        };
        let mut wait = Duration::from_secs(5).min(self.config.retention_sweep_every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = self.config.retention_sweep_every;
            let now = self.ports.clock.now();
            match crate::privacy::sweep_retention(&self.ports, Some(&self.cache), retention, now)
                .await
            {
                Ok(r) if r.erased + r.when_done + r.dead_letters > 0 => {
                    tracing::info!(
                        erased = r.erased,
                        dead_letters = r.dead_letters,
                        retention = %como_schemas::time::format_duration(retention),
                        "erased the guest's contact from finished sagas and dead letters past their retention"
                    );
                    // The store's older copies of what was erased (the embedded WAL) go too.
                    if let Err(e) = self.ports.store.compact().await {
                        tracing::warn!(error = %e, "cannot compact the store after erasing; its next checkpoint will");
                    }
                }
                Ok(_) => {}
                Err(e) => self.failed("retention sweep", &e),
            }
        }
    }

    async fn timers(&self, shutdown: CancellationToken) {
        let c = &self.config;
        // The sweep's transitions are seen as the other loops' are (`observe`).
        let observer: Observer = {
            let stats = self.stats.clone();
            let outer = self.observer.clone();
            Arc::new(move |applied: &Applied| {
                stats.steps.observe(applied);
                if let Some(observe) = &outer {
                    observe(applied);
                }
            })
        };
        while !shutdown.is_cancelled() {
            match sweep_observed(
                &self.ports,
                Some(&self.cache),
                c.batch * 4,
                c.concurrency,
                Some(&observer),
            )
            .await
            {
                Ok(n) => {
                    bump(&self.stats.timer_sweeps);
                    if n < c.batch * 4 {
                        pause(&shutdown, c.timer_interval).await;
                    }
                }
                Err(e) => {
                    self.failed("timer sweep", &e);
                    pause(&shutdown, c.error_backoff).await;
                }
            }
        }
    }
}

/// Sleep, unless shutdown comes first.
async fn pause(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
