//! Example messages: one valid instance of each, for tests, documentation and the CLI.

use chrono::NaiveDate;

use crate::command::{CommandId, CommandKind, IdempotencyKey, OperationContext, OperationKind};
use crate::events::{NeedsOperatorReason, SagaEventBody};
use crate::reply::{ReplyOutcome, StepOutput};
use crate::request::{BookingRequested, GuestContact};
use crate::time::Timestamp;
use crate::values::*;
use crate::{BookingRejected, SagaEvent, WorkerCommand, WorkerReply};

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| unreachable!("example values are valid: {e}"))
}

/// A valid booking request for `date`.
pub fn booking_request(request_id: &str, date: NaiveDate) -> BookingRequested {
    BookingRequested {
        schema_version: SchemaVersion::CURRENT,
        request_id: must(RequestId::parse(request_id)),
        member_no: must(MemberNo::parse("M100001")),
        venue_id: must(VenueId::parse("como-cuisine")),
        date,
        time: must(SlotTime::parse("19:30")),
        party_size: must(PartySize::new(2)),
        quoted_credits: must(Credits::new(1_200)),
        traceparent: None,
        availability_id: None,
        guest: GuestContact {
            first_name: must(PersonName::parse("Mei Ling")),
            last_name: must(PersonName::parse("Tan")),
            phone: must(Phone::parse("+6591234567")),
            email: Some(must(Email::parse("mei.ling@example.com"))),
        }
        .into(),
    }
}

/// The command for the first attempt of `kind` at `step` with `operation`.
pub fn command(
    request: &BookingRequested,
    step: &str,
    kind: CommandKind,
    operation: OperationKind,
    outputs: &[&StepOutput],
) -> WorkerCommand {
    let saga_id = request.saga_id();
    let step = must(StepName::parse(step));
    let key = IdempotencyKey::new(saga_id, &step, kind);
    let ctx = OperationContext {
        saga_id,
        started_at: Timestamp::from_millis(1_780_000_000_000),
        request,
        outputs,
    };
    let operation = operation
        .build(&ctx)
        .unwrap_or_else(|| unreachable!("example operations are worker operations"));
    WorkerCommand {
        schema_version: SchemaVersion::CURRENT,
        command_id: CommandId::new(&key, 1),
        idempotency_key: key,
        saga_id,
        step,
        kind,
        attempt: 1,
        worker: operation
            .kind()
            .worker()
            .unwrap_or_else(|| unreachable!("worker operation")),
        sent_at: Timestamp::from_millis(1_780_000_000_000),
        deadline: Timestamp::from_millis(1_780_000_030_000),
        operation,
        saga_started_at: Some(Timestamp::from_millis(1_780_000_000_000)),
    }
}

/// The reply to `command` with `outcome`.
pub fn reply(command: &WorkerCommand, outcome: ReplyOutcome) -> WorkerReply {
    WorkerReply {
        schema_version: SchemaVersion::CURRENT,
        command_id: command.command_id.clone(),
        saga_id: command.saga_id,
        step: command.step.clone(),
        kind: command.kind,
        attempt: command.attempt,
        worker: command.worker,
        replied_at: command.sent_at.plus_ms(40),
        outcome,
    }
}

/// The outcome of `command` done: the output its step needs (a balance, a hold, a receipt for
/// the saga, a reservation), as a downstream that answers at once gives it.
pub fn success(command: &WorkerCommand) -> ReplyOutcome {
    let output = match (command.kind, command.operation.kind()) {
        (CommandKind::Compensation, _) => StepOutput::Compensated {
            note: None,
            undone: true,
        },
        (_, OperationKind::CheckCredits) => StepOutput::CreditsChecked {
            balance: must(Credits::new(5_000)),
        },
        (_, OperationKind::HoldSlot) => StepOutput::SlotHeld {
            hold_id: must(HoldId::parse("hold-1")),
            sevenrooms_api: None,
        },
        (_, OperationKind::RedeemCredits | OperationKind::ReplayRedemption) => {
            StepOutput::CreditsRedeemed {
                transaction_id: must(TransactionId::parse("tx-1")),
                receipt_no: ReceiptNo::for_saga(command.saga_id),
                balance: None,
            }
        }
        (_, OperationKind::BookExperience | OperationKind::FindReservation) => {
            StepOutput::ExperienceBooked {
                reservation_id: must(ReservationId::parse("res-1")),
            }
        }
        _ => StepOutput::Done,
    };
    ReplyOutcome::Succeeded { output }
}

/// One of every reply outcome.
pub fn all_outcomes() -> Vec<ReplyOutcome> {
    vec![
        ReplyOutcome::Succeeded {
            output: StepOutput::SlotHeld {
                sevenrooms_api: None,
                hold_id: must(HoldId::parse("hold-1")),
            },
        },
        ReplyOutcome::BusinessFailure {
            code: "INSUFFICIENT_POINTS".into(),
            message: "balance 300 is below 1200".into(),
        },
        ReplyOutcome::RetryableFailure {
            reason: "429 Too Many Requests".into(),
            retry_after_ms: Some(2_000),
            downstream_unavailable: false,
        },
        ReplyOutcome::UnknownOutcome {
            reason: "timed out after the request was sent".into(),
            downstream_unavailable: false,
        },
        ReplyOutcome::UnknownOutcome {
            reason: "server error (503 Service Unavailable)".into(),
            downstream_unavailable: true,
        },
        ReplyOutcome::NotApplied {
            reason: "no reservation with this external_id".into(),
        },
        ReplyOutcome::Deferred {
            reason: "SevenRooms circuit open".into(),
            retry_after_ms: Some(5_000),
        },
    ]
}

/// One of every saga event body, for `request`.
pub fn all_events(request: &BookingRequested) -> Vec<SagaEvent> {
    let step = must(StepName::parse("book_experience"));
    let bodies = vec![
        SagaEventBody::SagaStarted {
            definition: "como_booking".into(),
            definition_version: 1,
            member_no: request.member_no.clone(),
            venue_id: request.venue_id.clone(),
            date: request.date,
            time: request.time,
            party_size: request.party_size,
            credits: request.quoted_credits,
        },
        SagaEventBody::StepCompleted {
            step: step.clone(),
            attempt: 2,
        },
        SagaEventBody::BookingConfirmed {
            reservation_id: Some(must(ReservationId::parse("res-1"))),
            transaction_id: Some(must(TransactionId::parse("tx-1"))),
            credits: request.quoted_credits,
            resolved_by: None,
        },
        SagaEventBody::BookingFailed {
            step: step.clone(),
            code: "SLOT_UNAVAILABLE".into(),
            reason: "no covers left at 19:30".into(),
        },
        SagaEventBody::SagaCompensated {
            outcome: crate::events::CompensatedAs::Compensated,
            compensated_steps: vec![must(StepName::parse("hold_slot"))],
            resolved_by: None,
        },
        SagaEventBody::SagaNeedsOperator {
            reason: NeedsOperatorReason::CompensationExhausted,
            step,
            detail: "void kept failing: 503".into(),
        },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| SagaEvent {
            schema_version: SchemaVersion::CURRENT,
            event_id: format!("{}:{i}", request.saga_id()),
            saga_id: request.saga_id(),
            request_id: request.request_id.clone(),
            at: Timestamp::from_millis(1_780_000_000_000 + i as i64),
            traceparent: None,
            body,
        })
        .collect()
}

/// A rejection of a request whose party size was 0.
pub fn booking_rejected() -> BookingRejected {
    BookingRejected {
        schema_version: SchemaVersion::CURRENT,
        event_id: "rejected:req-9".into(),
        request_id: Some("req-9".into()),
        at: Timestamp::from_millis(1_780_000_000_000),
        field: "party_size".into(),
        reason: "must be between 1 and 50, got 0".into(),
    }
}
