//! Replies: what a worker says about one attempt of one command.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::command::{CommandId, CommandKind};
use crate::time::Timestamp;
use crate::values::{
    Credits, HoldId, ReceiptNo, ReservationId, SagaId, SchemaVersion, StepName, TransactionId,
    Worker,
};

/// A worker's reply to one command attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "WorkerReply")]
pub struct WorkerReply {
    pub schema_version: SchemaVersion,
    pub command_id: CommandId,
    pub saga_id: SagaId,
    pub step: StepName,
    pub kind: CommandKind,
    pub attempt: u32,
    pub worker: Worker,
    pub replied_at: Timestamp,
    pub outcome: ReplyOutcome,
}

/// How the attempt ended, as far as the worker can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyOutcome {
    /// It took effect (for a reconcile: the effect was found).
    Succeeded { output: StepOutput },
    /// The downstream refused, for a reason retrying will not change (insufficient points,
    /// slot no longer available, past the cancellation cut-off). Nothing took effect.
    BusinessFailure { code: String, message: String },
    /// It did not take effect, and trying again later may work.
    RetryableFailure {
        reason: String,
        /// When the downstream asked to be left alone for a while (`Retry-After`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The downstream was unavailable (its circuit open until the command's deadline,
        /// connections refused, 502/503/504): the saga waits rather than spending an attempt.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        downstream_unavailable: bool,
    },
    /// The call may or may not have taken effect (a time-out after the request was sent, a 5xx
    /// to a write). The orchestrator settles it by reconciling, per the step's policy.
    UnknownOutcome {
        reason: String,
        /// The downstream was unavailable when the call ended (an outage, not this request):
        /// the saga looks the effect up, or tries again, once it is back, without spending an
        /// attempt on the outage.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        downstream_unavailable: bool,
    },
    /// Reconcile only: the effect is not there, and the action's deadline has passed, so it
    /// will not appear later.
    NotApplied { reason: String },
    /// The downstream is unavailable (circuit open); the command waits in the worker's queue
    /// and runs when it recovers, or expires at its deadline. Informational: the attempt goes on.
    Deferred {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ReplyOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            ReplyOutcome::Succeeded { .. } => "succeeded",
            ReplyOutcome::BusinessFailure { .. } => "business_failure",
            ReplyOutcome::RetryableFailure { .. } => "retryable_failure",
            ReplyOutcome::UnknownOutcome { .. } => "unknown_outcome",
            ReplyOutcome::NotApplied { .. } => "not_applied",
            ReplyOutcome::Deferred { .. } => "deferred",
        }
    }
}

/// What a successful step produced: the facts later steps and compensations need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepOutput {
    /// Nothing to remember.
    Done,
    CreditsChecked {
        balance: Credits,
    },
    SlotHeld {
        hold_id: HoldId,
        /// The SevenRooms API the hold was made at, when the venue has its own (not the
        /// deployment's): every later SevenRooms command of the saga goes there, whatever the
        /// venue's settings say by then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 512))]
        sevenrooms_api: Option<String>,
    },
    CreditsRedeemed {
        transaction_id: TransactionId,
        receipt_no: ReceiptNo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        balance: Option<Credits>,
    },
    ExperienceBooked {
        reservation_id: ReservationId,
    },
    /// A compensation finished; `note` says how ("already voided", "hold had expired").
    Compensated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// This call undid a live effect (voided a redemption, cancelled a reservation,
        /// released a hold); false when there was nothing left to undo. A late-effect audit
        /// counts the ones it undid by it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        undone: bool,
    },
}
