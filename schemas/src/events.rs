//! Saga lifecycle events, published for the outside world (EventBridge on AWS, the event log
//! on the embedded backend), and `BookingRejected` for requests that never became a saga.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::values::{
    Credits, MemberNo, PartySize, RequestId, ReservationId, SagaId, SchemaVersion, SlotTime,
    StepName, TransactionId, VenueId,
};

/// One lifecycle event of one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "SagaEvent")]
pub struct SagaEvent {
    pub schema_version: SchemaVersion,
    /// `<saga id>:<sequence>`: stable, so a consumer can drop a republished duplicate.
    pub event_id: String,
    pub saga_id: SagaId,
    pub request_id: RequestId,
    pub at: Timestamp,
    /// The W3C trace context of the work that produced the event, when traces are exported:
    /// a consumer continues the booking's trace from it (EventBridge has no message
    /// attributes to carry it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub body: SagaEventBody,
}

/// Why a saga stopped and waits for a person.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NeedsOperatorReason {
    /// A compensation kept failing until its retry policy ran out.
    CompensationExhausted,
    /// A downstream refused a compensation for good (a cancellation past the cut-off).
    CompensationRefused,
    /// An action's outcome stayed unknown and reconciliation could not settle it.
    UnknownOutcome,
    /// The saga's hard deadline passed before it could finish.
    DeadlinePassed,
    /// An action reported success after the saga had settled that step as not applied: an
    /// effect that nobody will undo unless a person looks.
    LateEffect,
}

impl NeedsOperatorReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            NeedsOperatorReason::CompensationExhausted => "compensation_exhausted",
            NeedsOperatorReason::CompensationRefused => "compensation_refused",
            NeedsOperatorReason::UnknownOutcome => "unknown_outcome",
            NeedsOperatorReason::DeadlinePassed => "deadline_passed",
            NeedsOperatorReason::LateEffect => "late_effect",
        }
    }
}

/// How a compensated saga ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CompensatedAs {
    /// The saga failed and was rolled back.
    Compensated,
    /// An operator cancelled it and it was rolled back.
    Cancelled,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SagaEventBody {
    SagaStarted {
        definition: String,
        definition_version: u32,
        member_no: MemberNo,
        venue_id: VenueId,
        date: NaiveDate,
        time: SlotTime,
        party_size: PartySize,
        credits: Credits,
    },
    StepCompleted {
        step: StepName,
        attempt: u32,
    },
    BookingConfirmed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reservation_id: Option<ReservationId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transaction_id: Option<TransactionId>,
        credits: Credits,
        /// Set when an operator resolved the saga by hand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved_by: Option<String>,
    },
    /// The booking will not happen; compensation of what was done is under way.
    BookingFailed {
        step: StepName,
        code: String,
        reason: String,
    },
    /// Everything that took effect has been undone.
    SagaCompensated {
        outcome: CompensatedAs,
        compensated_steps: Vec<StepName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved_by: Option<String>,
    },
    SagaNeedsOperator {
        reason: NeedsOperatorReason,
        step: StepName,
        detail: String,
    },
}

impl SagaEventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            SagaEventBody::SagaStarted { .. } => "SagaStarted",
            SagaEventBody::StepCompleted { .. } => "StepCompleted",
            SagaEventBody::BookingConfirmed { .. } => "BookingConfirmed",
            SagaEventBody::BookingFailed { .. } => "BookingFailed",
            SagaEventBody::SagaCompensated { .. } => "SagaCompensated",
            SagaEventBody::SagaNeedsOperator { .. } => "SagaNeedsOperator",
        }
    }
}

/// A booking request was refused at the edge and no saga was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "BookingRejected")]
pub struct BookingRejected {
    pub schema_version: SchemaVersion,
    pub event_id: String,
    /// The request id as received, when one could be read at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub at: Timestamp,
    /// The offending field's path, `.` for the document as a whole.
    pub field: String,
    pub reason: String,
}
