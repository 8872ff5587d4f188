//! A downstream's health, watched by each worker process and shared between them.
//!
//! While a downstream's circuit is open, a saga's command never goes to it (see
//! [`crate::breaker`]). Instead the monitor here probes the downstream with one cheap read
//! ([`crate::handlers::CommandHandler::probe`]) every cool-down, and closes the circuit when a
//! probe is answered. Worker processes share what they know through one small record in the
//! store (`health/<downstream>`, changed only by compare-and-set), so that:
//!
//! - **one probe at a time per downstream**, whatever the number of processes: a process
//!   probes only after it has moved the record's `next_probe_at` forward by a compare-and-set,
//!   which exactly one process wins for each turn;
//! - **one process's finding is every process's**: a process that finds the downstream down
//!   writes it, and the others open their circuits at their next look (within a second)
//!   instead of spending calls, and attempts, on finding out; a successful probe closes them
//!   all the same way.
//!
//! Without a store (a worker built for a test) the monitor probes on its own.

use std::sync::Arc;
use std::time::Duration;

use como_ports::{Clock, IdempotencyRecords};
use tokio_util::sync::CancellationToken;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::clients::Deadline;
use crate::handlers::CommandHandler;

pub use como_ports::records::SharedHealth;

#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// How often the monitor looks at the breaker and the shared record.
    pub tick: Duration,
    /// Longest wait for a probe's answer.
    pub probe_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// The store's key of a downstream's shared health record.
pub fn key(downstream: &str) -> String {
    SharedHealth::key(downstream)
}

pub struct HealthMonitor {
    breaker: Arc<CircuitBreaker>,
    handler: Arc<dyn CommandHandler>,
    shared: Option<Arc<dyn IdempotencyRecords>>,
    clock: Arc<dyn Clock>,
    key: String,
    me: String,
    config: HealthConfig,
    /// The local state last seen (closed or not), and since when (epoch ms).
    seen: (bool, i64),
}

impl HealthMonitor {
    pub fn new(
        breaker: Arc<CircuitBreaker>,
        handler: Arc<dyn CommandHandler>,
        shared: Option<Arc<dyn IdempotencyRecords>>,
        clock: Arc<dyn Clock>,
        config: HealthConfig,
    ) -> Self {
        let key = key(handler.worker().downstream());
        let now = clock.now().as_millis();
        Self {
            me: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            breaker,
            handler,
            shared,
            clock,
            key,
            config,
            seen: (true, now),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }

    fn cool_down_ms(&self) -> i64 {
        i64::try_from(self.breaker.config().cool_down.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.tick) => {}
            }
            ticks += 1;
            let closed = self.breaker.state() == BreakerState::Closed;
            if closed != self.seen.0 {
                self.seen = (closed, self.now_ms());
            }
            // Look at the shared record every tick while open, every second while closed.
            if self.shared.is_some()
                && (!closed || ticks.is_multiple_of(4))
                && let Err(e) = self.sync().await
            {
                tracing::debug!(error = %e, "cannot read the shared health record");
            }
            if self.breaker.probe_due() {
                self.probe_turn().await;
            }
        }
    }

    async fn read(&self) -> Result<(Option<String>, Option<SharedHealth>), String> {
        let Some(records) = &self.shared else {
            return Ok((None, None));
        };
        let raw = records.get(&self.key).await.map_err(|e| e.to_string())?;
        let parsed = raw.as_deref().and_then(|r| serde_json::from_str(r).ok());
        Ok((raw, parsed))
    }

    async fn write(&self, expected: Option<&str>, health: &SharedHealth) -> Result<bool, String> {
        let Some(records) = &self.shared else {
            return Ok(true);
        };
        let body = serde_json::to_string(health).map_err(|e| e.to_string())?;
        records
            .swap(&self.key, expected, &body)
            .await
            .map_err(|e| e.to_string())
    }

    /// Bring the local breaker and the shared record into agreement, the newer finding winning.
    async fn sync(&mut self) -> Result<(), String> {
        let (raw, record) = self.read().await?;
        let now = self.now_ms();
        let (closed, since) = self.seen;
        match record {
            // Another process found it down after we last found it up: wait with it.
            Some(r) if !r.up && closed && r.since_ms > since => {
                self.breaker.open_from_peer();
                self.seen = (false, r.since_ms);
                self.align_probe(&r, now);
            }
            // Another process's probe found it up after we found it down.
            Some(r) if r.up && !closed && r.since_ms > since => {
                self.breaker.close_from_peer();
                self.seen = (true, r.since_ms);
            }
            // We found it down, and the record does not say so yet (it says up, or nothing):
            // say it. `raw` is what it says, the compare-and-set's expected value.
            ref r if !closed && r.as_ref().is_none_or(|r| r.up) => {
                let down = SharedHealth {
                    up: false,
                    since_ms: since,
                    next_probe_at_ms: now + self.cool_down_ms(),
                    by: self.me.clone(),
                };
                self.write(raw.as_deref(), &down).await?;
            }
            Some(r) if !r.up && !closed => self.align_probe(&r, now),
            _ => {}
        }
        Ok(())
    }

    /// Our next probe goes no earlier than the shared record's.
    fn align_probe(&self, r: &SharedHealth, now: i64) {
        if r.next_probe_at_ms > now {
            let wait = u64::try_from(r.next_probe_at_ms - now).unwrap_or(0);
            self.breaker.defer_probe(Duration::from_millis(wait));
        }
    }

    /// A probe is due here: take the turn (in the shared record, if any), probe, tell.
    async fn probe_turn(&mut self) {
        let now = self.now_ms();
        let turn =
            self.cool_down_ms() + i64::try_from(self.config.probe_timeout.as_millis()).unwrap_or(0);
        let taken = match self.read().await {
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the shared health record; probing anyway");
                None
            }
            Ok((_, Some(r))) if r.up && r.since_ms > self.seen.1 => {
                // Found up since we opened: no need to probe.
                self.breaker.close_from_peer();
                self.seen = (true, r.since_ms);
                return;
            }
            Ok((_, Some(r))) if !r.up && r.next_probe_at_ms > now => {
                // Another process has this turn.
                self.align_probe(&r, now);
                return;
            }
            Ok((raw, r)) => {
                let mine = SharedHealth {
                    up: false,
                    since_ms: r
                        .as_ref()
                        .filter(|r| !r.up)
                        .map_or(self.seen.1, |r| r.since_ms),
                    next_probe_at_ms: now + turn,
                    by: self.me.clone(),
                };
                match self.write(raw.as_deref(), &mine).await {
                    Ok(true) => Some(mine),
                    Ok(false) => return, // another process took this turn
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot take the probe turn; probing anyway");
                        None
                    }
                }
            }
        };
        if !self.breaker.start_probe() {
            return;
        }
        let deadline = Deadline::after(self.config.probe_timeout);
        let answer = self.handler.probe(deadline).await;
        let up = answer.is_ok();
        match &answer {
            Ok(()) => {
                tracing::info!(downstream = %self.handler.worker().downstream(), "probe answered: the downstream is back")
            }
            Err(e) => {
                tracing::debug!(downstream = %self.handler.worker().downstream(), error = %e, "probe failed: still down")
            }
        }
        self.breaker.finish_probe(up);
        if !up {
            return;
        }
        let found = self.now_ms();
        self.seen = (true, found);
        let record = SharedHealth {
            up: true,
            since_ms: found,
            next_probe_at_ms: 0,
            by: self.me.clone(),
        };
        let expected = taken.and_then(|t| serde_json::to_string(&t).ok());
        match self.write(expected.as_deref(), &record).await {
            Ok(true) => {}
            // Changed since our turn began: say it is up unless someone found it down later.
            Ok(false) => {
                if let Ok((raw, r)) = self.read().await
                    && r.is_none_or(|r| r.up || r.since_ms < found)
                    && let Err(e) = self.write(raw.as_deref(), &record).await
                {
                    tracing::debug!(error = %e, "cannot share the probe's finding");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot share the probe's finding"),
        }
    }
}
