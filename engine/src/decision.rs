//! The result of a transition, and the history entries it appends.

use como_schemas::{CommandKind, OperatorId, SagaEvent, StepName, Timestamp, WorkerCommand};
use serde::{Deserialize, Serialize};

use crate::state::{SagaState, StatusKind};

/// What the runtime must do: persist `state` with `history`, send `commands`, publish
/// `events`, and deliver `Input::Timer` at `wake_at`. When `changed` is false the input was a
/// duplicate or stale and there is nothing to persist or send (`ignored` says why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: SagaState,
    pub changed: bool,
    pub commands: Vec<WorkerCommand>,
    pub events: Vec<SagaEvent>,
    pub history: Vec<HistoryEntry>,
    pub wake_at: Option<Timestamp>,
    pub ignored: Option<String>,
}

/// One line of a saga's history: what happened, when, to which step and attempt, with the
/// error text, and the operator and reason where a person acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The saga's transition number; several entries may share one.
    pub transition: u64,
    pub at: Timestamp,
    pub kind: HistoryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The status after the transition.
    pub status: StatusKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    Started,
    CommandSent,
    ReplyReceived,
    TimedOut,
    RetryScheduled,
    WaitingForDownstream,
    StepCompleted,
    CompensationStarted,
    StepCompensated,
    /// A reply for an earlier attempt taught something (an effect took place, or did not).
    LateReply,
    NeedsOperator,
    OperatorAction,
    Confirmed,
    Compensated,
    Cancelled,
    /// A late-effect audit re-issued a compensation and it found nothing left to undo.
    AuditChecked,
    /// A late-effect audit found an effect that landed after the saga ended, and undid it.
    LateEffectUndone,
    /// The guest's personal data will be erased when the saga finishes.
    ErasureRequested,
    /// The guest's personal data was erased (`reason`: retention or the member's request);
    /// the money facts stay.
    PersonalDataErased,
}
