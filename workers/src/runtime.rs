//! A worker process's loop: receive commands for its downstream, answer each once, and reply.
//!
//! For every command, in order:
//! 1. unreadable → dead letter with the reason (never stops the worker);
//! 2. already answered (an idempotency record under its command id) → send the recorded reply
//!    again, without calling the downstream;
//! 3. past its deadline → do not run it (the orchestrator may already be reconciling, so
//!    running it now could race the lookup), and reply that its outcome is unknown: an earlier
//!    delivery of the same command may have run it and died before replying, so "it did not
//!    run" would be a guess; the saga looks the effect up instead. A parked command's reply says
//!    its downstream stayed unavailable, and a command received for the first time (it waited
//!    behind a backlog) says unknown but downstream-unavailable: neither spends an attempt;
//! 4. the downstream's circuit is open → park it: put it back on the queue with a delay until
//!    the breaker's next probe can have answered (and tell the orchestrator, once, so the saga
//!    shows "waiting for SevenRooms"); a command is never the probe (the health monitor,
//!    [`crate::health`], probes on its own schedule), so an outage spends no saga's attempt;
//! 5. otherwise call the downstream and reply; the reply, its record and the acknowledgement
//!    of the command commit together (`IdempotencyRecords::complete`). A success of an
//!    operation that repeats safely (`OperationKind::repeats_safely`) is not recorded: a
//!    duplicate asks the downstream again and gets the same answer, which saves a write per
//!    command on the happy path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use como_ports::consumer::{ConsumeOptions, consume};
use como_ports::{
    Backend, Clock, Delivery, OutgoingMessage, PortError, QueueName, SystemClock, trace,
};
use como_schemas::{InvalidInput, ReplyOutcome, SchemaVersion, WorkerCommand, WorkerReply};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::BreakerSnapshot;
use crate::clients::Deadline;
use crate::handlers::{Availability, CommandHandler};
use crate::health::{HealthConfig, HealthMonitor};

/// Message attribute marking a command the worker parked while its downstream was down.
const PARKED: &str = "como-parked";

/// How much later a parked command comes back for being younger: nothing for a saga that began
/// five minutes or more ago, up to six seconds for one that began now. Commands parked for
/// one probe then become visible in the order their sagas began (a queue that orders by
/// visibility, as the embedded one does, delivers them so; SQS orders nothing).
fn youth_offset(
    saga_started_at: Option<como_schemas::Timestamp>,
    now: como_schemas::Timestamp,
) -> Duration {
    // One millisecond later for every 50 ms younger, over the last five minutes: sagas that
    // began 50 ms apart come back a millisecond apart (the queue's resolution).
    const AGE_HORIZON_MS: u64 = 5 * 60_000;
    const YOUTH_SPREAD_MS: u64 = AGE_HORIZON_MS / 50;
    let age = saga_started_at
        .map_or(0, |t| now.millis_since(t))
        .min(AGE_HORIZON_MS);
    Duration::from_millis((AGE_HORIZON_MS - age) * YOUTH_SPREAD_MS / AGE_HORIZON_MS)
}

/// Message attribute marking a parked command whose message had been received before it was
/// parked: an earlier delivery may have run it.
const MAYBE_RAN: &str = "como-maybe-ran";

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch: usize,
    /// Commands handled at once (the rate limit and breaker still apply per call).
    pub concurrency: usize,
    /// Longer than any command's time-out, so that a command is not received twice while it
    /// runs.
    pub visibility: Duration,
    pub poll_wait: Duration,
    /// The longest a parked command waits before it is looked at again.
    pub max_park: Duration,
    /// The shortest (so that a backlog does not spin through the queue while a probe runs).
    pub min_park: Duration,
    pub error_backoff: Duration,
    /// Probe the downstream while its circuit is open, and share its health with the other
    /// worker processes through the store (see [`crate::health`]).
    pub health: Option<HealthConfig>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            concurrency: 64,
            // Just above a command's time-out (15 s): past its deadline a command is only
            // answered "expired", so a crashed worker's commands need not wait longer.
            visibility: Duration::from_secs(20),
            poll_wait: Duration::from_millis(250),
            max_park: Duration::from_secs(5),
            min_park: Duration::from_millis(500),
            error_backoff: Duration::from_millis(500),
            health: Some(HealthConfig::default()),
        }
    }
}

/// What the worker has done, for progress output and metrics.
pub struct WorkerStats {
    pub handled: AtomicU64,
    pub replayed: AtomicU64,
    /// Times a command was put back on its queue because its downstream was down.
    pub parked: AtomicU64,
    pub expired: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub errors: AtomicU64,
    /// Commands this process has parked and not answered yet, by command id: their deadline
    /// and since when they wait (epoch ms). An entry leaves when its command is answered here
    /// or its deadline passes (another process may have answered it).
    waiting: std::sync::Mutex<std::collections::HashMap<String, (i64, i64)>>,
    /// What "now" is for [`WorkerStats::snapshot`]: the runtime's port clock.
    clock: Arc<dyn Clock>,
}

impl Default for WorkerStats {
    /// On the system clock.
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        f.debug_struct("WorkerStats")
            .field("handled", &r(&self.handled))
            .field("replayed", &r(&self.replayed))
            .field("parked", &r(&self.parked))
            .field("expired", &r(&self.expired))
            .field("dead_lettered", &r(&self.dead_lettered))
            .field("errors", &r(&self.errors))
            .field("waiting", &self.waiting)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerStatsSnapshot {
    pub handled: u64,
    pub replayed: u64,
    pub parked: u64,
    pub expired: u64,
    pub dead_lettered: u64,
    pub errors: u64,
    /// Commands waiting for their downstream now (parked by this process).
    pub waiting: u64,
    /// How long the oldest of them has waited, in milliseconds.
    pub oldest_waiting_ms: u64,
    /// The downstream's circuit breaker, if calls go through one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSnapshot>,
}

impl WorkerStats {
    /// Counters whose snapshot reads `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            handled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            waiting: std::sync::Mutex::default(),
            clock,
        }
    }

    /// The counters and the number waiting now; `now_ms` is the time in epoch ms (the worker's
    /// clock: [`WorkerRuntime::snapshot`] passes it).
    pub fn snapshot_at(&self, now_ms: i64) -> WorkerStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (waiting, oldest) = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            w.retain(|_, (deadline, _)| *deadline > now_ms);
            let oldest = w.values().map(|(_, since)| *since).min();
            (w.len(), oldest)
        };
        WorkerStatsSnapshot {
            handled: r(&self.handled),
            replayed: r(&self.replayed),
            parked: r(&self.parked),
            expired: r(&self.expired),
            dead_lettered: r(&self.dead_lettered),
            errors: r(&self.errors),
            waiting: waiting as u64,
            oldest_waiting_ms: oldest.map_or(0, |o| u64::try_from(now_ms - o).unwrap_or(0)),
            breaker: None,
        }
    }

    /// [`WorkerStats::snapshot_at`] now, on the stats' clock (the runtime's port clock).
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        self.snapshot_at(self.clock.now().as_millis())
    }

    fn wait(&self, command: &str, deadline_ms: i64, now_ms: i64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(command.to_owned()).or_insert((deadline_ms, now_ms));
    }

    fn done_waiting(&self, command: &str) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.remove(command);
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Sees how long each command spent downstream (the benchmark subtracts it from a step's time
/// to get the orchestration overhead).
pub type DownstreamObserver = Arc<dyn Fn(&como_schemas::CommandId, Duration) + Send + Sync>;

#[derive(Clone)]
pub struct WorkerRuntime {
    ports: Backend,
    handler: Arc<dyn CommandHandler>,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    observer: Option<DownstreamObserver>,
}

impl WorkerRuntime {
    pub fn new(ports: Backend, handler: Arc<dyn CommandHandler>, config: WorkerConfig) -> Self {
        let stats = Arc::new(WorkerStats::new(ports.clock.clone()));
        Self {
            ports,
            handler,
            config,
            stats,
            observer: None,
        }
    }

    pub fn with_observer(mut self, observer: DownstreamObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// The worker's counters, with its downstream's breaker.
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        let mut snap = self.stats.snapshot();
        snap.breaker = self.handler.breaker().map(|b| b.snapshot());
        snap
    }

    fn queue(&self) -> QueueName {
        QueueName::Commands(self.handler.worker())
    }

    /// Run until `shutdown`; the commands in hand are finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let c = &self.config;
        let options = ConsumeOptions {
            concurrency: c.concurrency,
            batch: c.batch,
            visibility: c.visibility,
            poll_wait: c.poll_wait,
            error_backoff: c.error_backoff,
        };
        let monitor = match (&c.health, self.handler.breaker()) {
            (Some(health), Some(breaker)) => Some(tokio::spawn(
                HealthMonitor::new(
                    breaker,
                    self.handler.clone(),
                    Some(self.ports.records.clone()),
                    self.ports.clock.clone(),
                    health.clone(),
                )
                .run(shutdown.clone()),
            )),
            _ => None,
        };
        let me = self.clone();
        consume(
            self.ports.queue.clone(),
            self.queue(),
            options,
            shutdown,
            move |d| {
                let me = me.clone();
                async move {
                    if let Err(e) = me.handle(&d).await {
                        bump(&me.stats.errors);
                        como_ports::health::not_done("a command", &e, Some(&e));
                    }
                }
            },
        )
        .await;
        if let Some(monitor) = monitor {
            let _ = monitor.await;
        }
    }

    /// Answer one delivery.
    pub async fn handle(&self, delivery: &Delivery) -> Result<(), PortError> {
        let parsed = InvalidInput::parse_json::<WorkerCommand>(delivery.body.as_bytes());
        let work = match &parsed {
            Ok(c) => trace::Work {
                saga: Some(c.saga_id),
                step: Some(c.step.as_str()),
                kind: Some(c.kind.as_str()),
                attempt: Some(c.attempt),
                operation: Some(c.operation.kind().as_str()),
            },
            Err(_) => trace::Work::default(),
        };
        let span = trace::receive_span(self.queue(), delivery, work);
        let result = self
            .handle_parsed(delivery, parsed)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("outcome", "error");
        }
        result
    }

    async fn handle_parsed(
        &self,
        delivery: &Delivery,
        parsed: Result<WorkerCommand, InvalidInput>,
    ) -> Result<(), PortError> {
        let queue = self.queue();
        let ack = Some((queue, delivery.receipt.clone()));
        let command: WorkerCommand = match parsed {
            Ok(c) => c,
            Err(invalid) => {
                bump(&self.stats.dead_lettered);
                tracing::warn!(%invalid, "unreadable command dead-lettered");
                return self
                    .ports
                    .queue
                    .dead_letter(
                        queue,
                        &delivery.receipt,
                        &format!("unreadable command: {invalid}"),
                    )
                    .await;
            }
        };
        if command.worker != self.handler.worker() {
            bump(&self.stats.dead_lettered);
            let reason = format!(
                "a command for the {} worker on the {queue} queue",
                command.worker
            );
            return self
                .ports
                .queue
                .dead_letter(queue, &delivery.receipt, &reason)
                .await;
        }
        let key = command.command_id.as_str();
        if let Some(recorded) = self.ports.records.get(key).await? {
            bump(&self.stats.replayed);
            tracing::Span::current().record("outcome", "replayed");
            let sends = vec![(QueueName::Replies, traced(recorded))];
            return self.ports.records.complete(None, sends, ack).await;
        }
        let now = self.ports.clock.now();
        let parked = delivery.attributes.contains_key(PARKED);
        // Whether a delivery of this message before this one may have run the command (it was
        // received before, by a worker that may have died in the call).
        // A command that writes nothing (a balance check, a search) changed nothing if it ran,
        // so an earlier delivery of it does not count: a receive whose answer was lost on the
        // way (a throttled or reset SQS) must not cost a read its attempt.
        let maybe_ran = command.operation.kind().writes()
            && (delivery.receive_count > 1 || delivery.attributes.contains_key(MAYBE_RAN));
        if now >= command.deadline {
            bump(&self.stats.expired);
            self.stats.done_waiting(command.command_id.as_str());
            let downstream = self.handler.worker().downstream();
            let outcome = if parked && !maybe_ran {
                ReplyOutcome::RetryableFailure {
                    reason: format!("{downstream} stayed unavailable until the command's deadline"),
                    retry_after_ms: None,
                    downstream_unavailable: true,
                }
            } else if !maybe_ran {
                // Never received before: it waited in the queue behind a backlog (one that
                // drains at the rate limit, say, after an outage). A copy of it may have run
                // elsewhere, so its outcome is unknown, but the wait is the downstream's
                // capacity, not the saga's failure: it spends no attempt.
                ReplyOutcome::UnknownOutcome {
                    reason: format!(
                        "the command waited for {downstream} in the queue past its deadline"
                    ),
                    downstream_unavailable: true,
                }
            } else {
                ReplyOutcome::UnknownOutcome {
                    reason: "the command's deadline passed before this delivery could run it; \
                             an earlier delivery may have run it"
                        .into(),
                    downstream_unavailable: false,
                }
            };
            return self.answer(&command, outcome, ack).await;
        }
        if let Availability::Unavailable {
            retry_after,
            reason,
        } = self.handler.availability()
        {
            bump(&self.stats.parked);
            tracing::Span::current().record("outcome", "parked");
            self.stats.wait(
                command.command_id.as_str(),
                command.deadline.as_millis(),
                now.as_millis(),
            );
            let left = Duration::from_millis(command.deadline.millis_since(now));
            // Until the next probe can have answered (the same moment for every command parked
            // meanwhile), bounded, then a little later the younger its saga: the queue gives
            // back the oldest sagas' commands first, and the backlog drains oldest first.
            let delay = (retry_after
                .max(self.config.min_park)
                .min(self.config.max_park)
                + youth_offset(command.saga_started_at, now))
            .min(left)
            .max(Duration::from_millis(1));
            let mut again = OutgoingMessage::new(delivery.body.clone()).delayed(delay);
            again.attributes = delivery.attributes.clone();
            again.attributes.insert(PARKED.into(), "1".into());
            if maybe_ran {
                again.attributes.insert(MAYBE_RAN.into(), "1".into());
            }
            let mut sends = vec![(queue, again)];
            if !parked {
                let deferred = ReplyOutcome::Deferred {
                    reason,
                    retry_after_ms: u64::try_from(retry_after.as_millis()).ok(),
                };
                sends.push((QueueName::Replies, self.reply_message(&command, deferred)?));
            }
            return self.ports.records.complete(None, sends, ack).await;
        }
        let deadline = Deadline::at(command.deadline, &*self.ports.clock);
        // Only measures the call for the observer (the benchmark): a duration, not a decision.
        let started = std::time::Instant::now();
        let outcome = self.handler.handle(&command, deadline).await;
        if let Some(observe) = &self.observer {
            observe(&command.command_id, started.elapsed());
        }
        bump(&self.stats.handled);
        self.stats.done_waiting(command.command_id.as_str());
        self.answer(&command, outcome, ack).await
    }

    fn reply_message(
        &self,
        command: &WorkerCommand,
        outcome: ReplyOutcome,
    ) -> Result<OutgoingMessage, PortError> {
        let reply = WorkerReply {
            schema_version: SchemaVersion::CURRENT,
            command_id: command.command_id.clone(),
            saga_id: command.saga_id,
            step: command.step.clone(),
            kind: command.kind,
            attempt: command.attempt,
            worker: self.handler.worker(),
            replied_at: self.ports.clock.now(),
            outcome,
        };
        let body = serde_json::to_string(&reply)
            .map_err(|e| PortError::Invalid(format!("cannot encode a reply: {e}")))?;
        Ok(traced(body))
    }

    /// Record the reply under the command id, send it, acknowledge the command: together.
    async fn answer(
        &self,
        command: &WorkerCommand,
        outcome: ReplyOutcome,
        ack: Option<(QueueName, como_ports::Receipt)>,
    ) -> Result<(), PortError> {
        tracing::Span::current().record("outcome", outcome.label());
        let recorded = !(matches!(outcome, ReplyOutcome::Succeeded { .. })
            && command.operation.kind().repeats_safely());
        let message = self.reply_message(command, outcome)?;
        let record = recorded.then(|| message.body.clone());
        self.ports
            .records
            .complete(
                record.as_deref().map(|r| (command.command_id.as_str(), r)),
                vec![(QueueName::Replies, message)],
                ack,
            )
            .await
    }
}

/// A reply, carrying the context of the command's span (the orchestrator's span for the reply
/// becomes its child).
fn traced(body: String) -> OutgoingMessage {
    let mut m = OutgoingMessage::new(body);
    trace::inject(&mut m.attributes);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_ports::ManualClock;
    use como_schemas::Timestamp;

    #[test]
    fn the_stats_read_their_clock() {
        // 2001-09-09: far behind the wall clock, so only this clock keeps the entry waiting.
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000_000_000)));
        let stats = WorkerStats::new(clock.clone());
        let now = clock.now().as_millis();
        stats.wait("c-1", now + 10_000, now);
        clock.advance_ms(4_000);
        let snap = stats.snapshot();
        assert_eq!((snap.waiting, snap.oldest_waiting_ms), (1, 4_000));
        clock.advance_ms(6_000);
        assert_eq!(
            stats.snapshot().waiting,
            0,
            "its deadline passed on this clock"
        );
    }
}
