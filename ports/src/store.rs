//! The saga store: one record per saga with a version, written only by conditional writes, and
//! the effects each write carries.
//!
//! Contract for every backend:
//! - `create` writes a saga only if none with its id exists.
//! - `update` writes only if the stored version is `expected_version`; otherwise nothing is
//!   written and the caller re-reads and re-applies its input (two orchestrators never both
//!   advance one saga).
//! - The [`Effects`] of a successful write (commands to send, events to publish, history to
//!   append, the input message to acknowledge) are carried out at least once after the write
//!   commits and never before it. The embedded backend commits them in the same transaction;
//!   a backend that cannot (DynamoDB and SQS) keeps them with the saga until they are done.

use async_trait::async_trait;
use como_engine::{HistoryEntry, SagaState, SagaStatus, StatusKind};
use como_schemas::{RequestId, SagaEvent, SagaId, StepName, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::PortResult;
use crate::queue::{OutgoingMessage, QueueName, Receipt};

/// A value with the version it was stored at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// What a saga write brings with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub sends: Vec<(QueueName, OutgoingMessage)>,
    pub events: Vec<SagaEvent>,
    pub history: Vec<HistoryEntry>,
    /// The message whose handling this write completes.
    pub ack: Option<(QueueName, Receipt)>,
    /// The command whose reply brought this write, if a reply did. A store that sends after it
    /// writes may take the reply as proof that the command (and what was delivered before it)
    /// went out.
    pub answers: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created {
        version: u64,
    },
    /// A saga with this id exists; nothing was written.
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated {
        version: u64,
    },
    /// The stored version was not the expected one; nothing was written.
    Conflict,
}

/// Which sagas to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaQuery {
    pub status: Option<StatusKind>,
    /// Only sagas at this step (forward, compensating, or stopped there).
    pub step: Option<StepName>,
    /// Only sagas not updated since this moment ("stuck for longer than").
    pub updated_before: Option<Timestamp>,
    /// From a previous page.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A saga as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaSummary {
    pub saga_id: SagaId,
    pub request_id: RequestId,
    pub status: SagaStatus,
    pub step: Option<StepName>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub wake_at: Option<Timestamp>,
    pub version: u64,
}

impl SagaSummary {
    pub fn of(state: &SagaState, version: u64) -> Self {
        Self {
            saga_id: state.saga_id,
            request_id: state.request.request_id.clone(),
            status: state.status.clone(),
            step: current_step(state),
            started_at: state.started_at,
            updated_at: state.updated_at,
            wake_at: state.wake_at,
            version,
        }
    }
}

/// The step a saga is at, for indexes: where it runs, compensates or stopped.
pub fn current_step(state: &SagaState) -> Option<StepName> {
    use como_engine::Phase;
    match &state.phase {
        Phase::Forward { step, .. }
        | Phase::Compensating { step, .. }
        | Phase::NeedsOperator { step, .. } => state.steps.get(*step).map(|s| s.name.clone()),
        Phase::Done { .. } => None,
    }
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaPage {
    pub items: Vec<SagaSummary>,
    pub next_cursor: Option<String>,
}

/// The read port: what a process that only looks at sagas (an API, a dashboard, a report)
/// holds. It has no way to change a saga; reads see every write that completed before they
/// began.
#[async_trait]
pub trait SagaReader: Send + Sync {
    async fn get(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>>;

    /// Sagas matching `query`, most recently started first (an order that a saga's progress
    /// does not change, so that an index on it is written only when a saga starts or changes
    /// status).
    async fn query(&self, query: &SagaQuery) -> PortResult<SagaPage>;

    /// A saga's history, oldest first.
    async fn history(&self, id: SagaId) -> PortResult<Vec<HistoryEntry>>;

    /// How many sagas there are in each status.
    async fn counts(&self) -> PortResult<Vec<(StatusKind, u64)>>;

    /// Sagas not finished whose last change is older than `updated_before`, the longest
    /// unchanged first, at most `limit` of them: what an operator looks at first.
    async fn stuck(&self, updated_before: Timestamp, limit: usize) -> PortResult<Vec<SagaSummary>> {
        let mut stuck = Vec::new();
        for status in StatusKind::ALL.into_iter().filter(|k| !k.is_terminal()) {
            let mut cursor = None;
            loop {
                let page = self
                    .query(&SagaQuery {
                        status: Some(status),
                        updated_before: Some(updated_before),
                        cursor,
                        limit: 500,
                        ..SagaQuery::default()
                    })
                    .await?;
                stuck.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        stuck.sort_by_key(|s| (s.updated_at, s.saga_id));
        stuck.truncate(limit);
        Ok(stuck)
    }
}

/// The write port: what the orchestrator, the one writer of sagas, needs besides reading
/// them.
#[async_trait]
pub trait SagaWriter: Send + Sync {
    /// Write a new saga (version 1) unless one with its id exists.
    async fn create(&self, state: &SagaState, effects: Effects) -> PortResult<CreateOutcome>;

    /// Write `state` if the stored version is `expected_version`.
    async fn update(
        &self,
        state: &SagaState,
        expected_version: u64,
        effects: Effects,
    ) -> PortResult<UpdateOutcome>;

    /// Carry out what the saga's last write may have left undone (its process died between
    /// the write and its effects), when nothing else would: called when the input that brought
    /// a write to a saga without a timer is delivered again. Stores whose effects commit with
    /// the write have nothing to do (the default).
    async fn flush(&self, _id: SagaId) -> PortResult<()> {
        Ok(())
    }

    /// Sagas whose wake-up time has come, earliest first. On the write port because the timer
    /// sweep that calls it writes what it finds, and a store that sends after it writes may
    /// finish an earlier write's effects here.
    async fn due(&self, now: Timestamp, limit: usize) -> PortResult<Vec<SagaId>>;
}

/// A whole saga store: both ports, as every backend provides them.
pub trait SagaStore: SagaReader + SagaWriter {}

impl<T: SagaReader + SagaWriter + ?Sized> SagaStore for T {}
