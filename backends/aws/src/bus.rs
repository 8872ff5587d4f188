//! The event bus on EventBridge: `PutEvents`, 10 entries to a call, source `como.saga`,
//! detail-type the event's type (`BookingConfirmed`, ...), detail the event's JSON. Only
//! milestones go out by default ([`EventSelection`](crate::EventSelection)).
//!
//! A bus cannot be read back, so `recent` answers from what this process published (a bounded
//! log, once per `event_id`); an event already published by this process is not sent again.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use como_ports::{EventBus, PortError, PortResult};
use como_schemas::events::SagaEventBody;
use como_schemas::{BookingRejected, SagaEvent};

use crate::error::unavailable;
use crate::queue::{Entries, EntryRounds};
use crate::{AwsPorts, EventSelection, names};

const BATCH: usize = 10;

/// The entry error codes that say the event itself is wrong: putting it again cannot help.
/// Every other code (`InternalFailure`, `ThrottlingException`, a permission being granted) is
/// put again.
const WRONG_ENTRY: &[&str] = &["MalformedDetail", "InvalidArgument", "ValidationException"];
const KEPT: usize = 10_000;

pub struct BusState {
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    events: VecDeque<SagaEvent>,
    ids: HashSet<String>,
}

impl BusState {
    pub fn new() -> Self {
        Self {
            log: Mutex::new(Log::default()),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `event` goes on the bus under `selection`.
pub fn selected(selection: EventSelection, event: &SagaEvent) -> bool {
    match selection {
        EventSelection::All => true,
        EventSelection::Milestones => !matches!(event.body, SagaEventBody::StepCompleted { .. }),
        EventSelection::Outcomes => !matches!(
            event.body,
            SagaEventBody::StepCompleted { .. } | SagaEventBody::SagaStarted { .. }
        ),
    }
}

/// The events sent, which EventBridge bills (not the calls).
pub const EVENT_ENTRIES: &str = "events (entries)";

impl AwsPorts {
    /// `PutEvents`, 10 entries to a call. The entries EventBridge reports failed are put
    /// again, those alone, after a backoff, up to `entry_attempts` tries; then the call fails
    /// naming the bus and the entries' error codes; an entry refused as wrong (`WRONG_ENTRY`) is
    /// `Invalid` at once. A call that fails (after the SDK's retries)
    /// fails at once. Entries already accepted go out again with the next try of the caller
    /// (events carry ids: a consumer drops the copy).
    async fn put_entries(&self, entries: Vec<PutEventsRequestEntry>) -> PortResult<()> {
        let what = format!("EventBridge PutEvents on bus {}", self.names.bus());
        for chunk in entries.chunks(BATCH) {
            let mut pending: Entries<PutEventsRequestEntry> =
                chunk.iter().cloned().enumerate().collect();
            let mut rounds = EntryRounds::new(&self.clients, &what);
            while rounds.next(&pending).await {
                self.clients.calls.count("eventbridge", "PutEvents");
                self.clients.calls.add(
                    "eventbridge",
                    EVENT_ENTRIES,
                    u64::try_from(pending.len()).unwrap_or(u64::MAX),
                );
                let out = self
                    .clients
                    .events
                    .put_events()
                    .set_entries(Some(pending.iter().map(|(_, e)| e.clone()).collect()))
                    .send()
                    .await
                    .map_err(|e| unavailable(&what, e))?;
                // Entries answer in order; a failed one has an error code (one without an
                // answer is put again: a duplicate at worst).
                let answers = out.entries();
                let mut failed = Vec::new();
                for (k, entry) in std::mem::take(&mut pending).into_iter().enumerate() {
                    let code = match answers.get(k) {
                        Some(r) => match r.error_code() {
                            Some(code) => code,
                            None => continue,
                        },
                        None => "no answer for the entry",
                    };
                    if WRONG_ENTRY.contains(&code) {
                        let message = answers
                            .get(k)
                            .and_then(|r| r.error_message())
                            .unwrap_or_default();
                        return Err(PortError::Invalid(format!(
                            "{what}: an event was refused: {code} {message}"
                        )));
                    }
                    rounds.failed(code);
                    failed.push(entry);
                }
                pending = rounds.ended(failed);
            }
            if !pending.is_empty() {
                return Err(rounds.error(pending.len(), chunk.len(), "events", "accepted"));
            }
        }
        Ok(())
    }

    fn entry(&self, detail_type: &str, detail: String) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(self.names.bus())
            .source(names::EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build()
    }

    /// Publish what this process has not published yet, as the selection says.
    pub(crate) async fn publish_events(&self, events: &[SagaEvent]) -> PortResult<()> {
        let fresh: Vec<&SagaEvent> = {
            let log = self.bus.log();
            let mut seen = HashSet::new();
            events
                .iter()
                .filter(|e| !log.ids.contains(&e.event_id) && seen.insert(e.event_id.clone()))
                .filter(|e| selected(self.config.events, e))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let entries = fresh
            .iter()
            .map(|e| {
                serde_json::to_string(e)
                    .map(|d| self.entry(e.body.type_name(), d))
                    .map_err(|err| PortError::Invalid(format!("cannot encode an event: {err}")))
            })
            .collect::<PortResult<Vec<_>>>()?;
        self.put_entries(entries).await?;
        let mut log = self.bus.log();
        for e in fresh {
            if log.ids.insert(e.event_id.clone()) {
                log.events.push_back(e.clone());
            }
        }
        while log.events.len() > KEPT {
            if let Some(old) = log.events.pop_front() {
                log.ids.remove(&old.event_id);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for AwsPorts {
    async fn publish(&self, events: Vec<SagaEvent>) -> PortResult<()> {
        self.publish_events(&events).await
    }

    async fn publish_rejection(&self, rejection: BookingRejected) -> PortResult<()> {
        let detail = serde_json::to_string(&rejection)
            .map_err(|e| PortError::Invalid(format!("cannot encode the rejection: {e}")))?;
        self.put_entries(vec![self.entry("BookingRejected", detail)])
            .await
    }

    async fn recent(&self, limit: usize) -> PortResult<Vec<SagaEvent>> {
        let log = self.bus.log();
        let skip = log.events.len().saturating_sub(limit);
        Ok(log.events.iter().skip(skip).cloned().collect())
    }
}
