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
use como_schemas::{
    CommandKind, MemberNo, RequestId, SagaEvent, SagaId, StepName, Timestamp, VenueId,
};
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

/// Which sagas to list. Every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaQuery {
    pub status: Option<StatusKind>,
    /// Only sagas at this step (forward, compensating, or stopped there).
    pub step: Option<StepName>,
    /// Only sagas not updated since this moment ("stuck for longer than").
    pub updated_before: Option<Timestamp>,
    /// Only this member's sagas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberNo>,
    /// Only sagas booking at this venue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<VenueId>,
    /// Only sagas started at or after this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<Timestamp>,
    /// Only sagas started before this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_before: Option<Timestamp>,
    /// Only live sagas whose current command goes to this downstream (`Memberson` or
    /// `SevenRooms`): what waits on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downstream: Option<String>,
    /// Only live sagas retrying with errors: the current command failed at least once (see
    /// [`SagaSummary::retrying`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retrying: bool,
    /// Only sagas that still hold (`true`) or no longer hold (`false`) the guest's contact:
    /// what retention has left to erase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<bool>,
    /// From a previous page.
    pub cursor: Option<String>,
    pub limit: usize,
}

impl SagaQuery {
    /// Whether the filters need the saga itself, not only what a store indexes (status,
    /// step, times, member): such a query reads sagas until it has found a page.
    pub fn reads_sagas(&self) -> bool {
        self.venue.is_some()
            || self.downstream.is_some()
            || self.retrying
            || self.personal_data.is_some()
    }

    /// Only live sagas can match (a filter on what a saga is doing now).
    pub fn live_only(&self) -> bool {
        self.downstream.is_some() || self.retrying
    }

    /// Whether `summary` passes every filter. Stores narrow by their indexes first and check
    /// the rest here.
    pub fn matches(&self, summary: &SagaSummary) -> bool {
        self.status.is_none_or(|k| summary.status.kind() == k)
            && self
                .step
                .as_ref()
                .is_none_or(|st| summary.step.as_ref() == Some(st))
            && self.updated_before.is_none_or(|b| summary.updated_at < b)
            && self.member.as_ref().is_none_or(|m| &summary.member_no == m)
            && self.venue.as_ref().is_none_or(|v| &summary.venue_id == v)
            && self.started_from.is_none_or(|f| summary.started_at >= f)
            && self.started_before.is_none_or(|b| summary.started_at < b)
            && self
                .downstream
                .as_ref()
                .is_none_or(|d| summary.downstream.as_deref() == Some(d.as_str()))
            && (!self.retrying || summary.retrying)
            && self
                .personal_data
                .is_none_or(|p| summary.personal_data == p)
    }
}

/// A saga as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub saga_id: SagaId,
    pub request_id: RequestId,
    pub member_no: MemberNo,
    pub venue_id: VenueId,
    /// Where the saga is: tagged by `status`, with that status's fields.
    pub status: SagaStatus,
    pub step: Option<StepName>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub wake_at: Option<Timestamp>,
    pub version: u64,
    /// While the saga runs or compensates: the current command (`action`, `reconcile` or
    /// `compensation`), its attempt, and the downstream it goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub command: Option<CommandKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub downstream: Option<String>,
    /// The current step's last error, if it has had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<String>,
    /// Live, and the current command has failed at least once: it is past its first attempt
    /// or waiting to retry, with an error.
    #[serde(default)]
    #[schema(required = true)]
    pub retrying: bool,
    /// Whether the saga still holds the guest's contact (sealed); false once it was erased
    /// (retention, or the member's request).
    #[serde(default)]
    #[schema(required = true)]
    pub personal_data: bool,
}

impl SagaSummary {
    pub fn of(state: &SagaState, version: u64) -> Self {
        use como_engine::Phase;
        use como_engine::state::Activity;
        let live = match &state.phase {
            Phase::Forward { step, activity } | Phase::Compensating { step, activity, .. } => {
                Some((*step, activity))
            }
            Phase::NeedsOperator { .. } | Phase::Done { .. } => None,
        };
        let mut command = None;
        let mut attempt = None;
        let mut downstream = None;
        let mut retrying = false;
        if let Some((step, activity)) = live
            && let Some(st) = state.steps.get(step)
        {
            let kind = activity.kind();
            command = Some(kind);
            attempt = Some(match activity {
                Activity::Awaiting { attempt, .. } => *attempt,
                Activity::Backoff { .. } => st.attempts(kind).sent + 1,
            });
            downstream = como_engine::como::lookup(&state.definition, state.definition_version)
                .and_then(|def| def.steps.get(step)?.operation(kind).worker())
                .map(|w| w.downstream().to_owned());
            retrying = st.last_error.is_some() && attempt.is_some_and(|a| a > 1);
        }
        let last_error = current_step_index(state)
            .and_then(|i| state.steps.get(i))
            .and_then(|st| st.last_error.clone());
        Self {
            saga_id: state.saga_id,
            request_id: state.request.request_id.clone(),
            member_no: state.request.member_no.clone(),
            venue_id: state.request.venue_id.clone(),
            status: state.status.clone(),
            step: current_step(state),
            started_at: state.started_at,
            updated_at: state.updated_at,
            wake_at: state.wake_at,
            version,
            command,
            attempt,
            downstream,
            last_error,
            retrying,
            personal_data: state.request.guest.is_personal(),
        }
    }
}

fn current_step_index(state: &SagaState) -> Option<usize> {
    use como_engine::Phase;
    match &state.phase {
        Phase::Forward { step, .. }
        | Phase::Compensating { step, .. }
        | Phase::NeedsOperator { step, .. } => Some(*step),
        Phase::Done { .. } => None,
    }
}

/// The step a saga is at, for indexes: where it runs, compensates or stopped.
pub fn current_step(state: &SagaState) -> Option<StepName> {
    current_step_index(state).and_then(|i| state.steps.get(i).map(|s| s.name.clone()))
}

/// How many sagas in one status are at one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCount {
    pub status: StatusKind,
    pub step: StepName,
    pub count: u64,
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

    /// How many sagas not finished there are in each status at each step (a finished saga is
    /// at no step), exact, most first. By default, every such saga is listed and counted: a
    /// store that keeps these counts as sagas change answers without reading them.
    async fn step_counts(&self) -> PortResult<Vec<StepCount>> {
        let mut counts: Vec<StepCount> = Vec::new();
        for status in StatusKind::ALL.into_iter().filter(|k| !k.is_terminal()) {
            let mut cursor = None;
            loop {
                let page = self
                    .query(&SagaQuery {
                        status: Some(status),
                        cursor,
                        limit: 1_000,
                        ..SagaQuery::default()
                    })
                    .await?;
                for saga in &page.items {
                    let Some(step) = &saga.step else { continue };
                    match counts
                        .iter_mut()
                        .find(|c| c.status == status && &c.step == step)
                    {
                        Some(c) => c.count += 1,
                        None => counts.push(StepCount {
                            status,
                            step: step.clone(),
                            count: 1,
                        }),
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.step.cmp(&b.step)));
        Ok(counts)
    }

    /// Sagas not finished that pass `filter` (its `updated_before` is the cut-off: unchanged
    /// since then; its `status`, when given, one live status, else every live one), the
    /// longest unchanged first, at most `limit` of them: what an operator looks at first.
    async fn stuck(&self, filter: &SagaQuery, limit: usize) -> PortResult<Vec<SagaSummary>> {
        let statuses: Vec<StatusKind> = match filter.status {
            Some(status) if status.is_terminal() => Vec::new(),
            Some(status) => vec![status],
            None => StatusKind::ALL
                .into_iter()
                .filter(|k| !k.is_terminal())
                .collect(),
        };
        let mut stuck = Vec::new();
        for status in statuses {
            let mut cursor = None;
            loop {
                let page = self
                    .query(&SagaQuery {
                        status: Some(status),
                        cursor,
                        limit: 500,
                        ..filter.clone()
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

    /// Rewrite what the store keeps beside its current data so that what was overwritten or
    /// erased is gone from it too (the embedded backend: the WAL, checkpointed and truncated).
    /// Returns whether it did all of it; stores that keep no such copies do nothing.
    async fn compact(&self) -> PortResult<bool> {
        Ok(true)
    }

    /// Sagas whose wake-up time has come, earliest first. On the write port because the timer
    /// sweep that calls it writes what it finds, and a store that sends after it writes may
    /// finish an earlier write's effects here.
    async fn due(&self, now: Timestamp, limit: usize) -> PortResult<Vec<SagaId>>;
}

/// A whole saga store: both ports, as every backend provides them.
pub trait SagaStore: SagaReader + SagaWriter {}

impl<T: SagaReader + SagaWriter + ?Sized> SagaStore for T {}
