//! Commands: what the orchestrator asks a worker to do, one attempt at a time.
//!
//! A command names its saga, step, kind (action, compensation, reconcile) and attempt. Two keys
//! make delivery safe: the [`IdempotencyKey`] is the same for every attempt of one step's action
//! (or compensation), and is what the downstream effect is keyed on; the [`CommandId`] also
//! names the attempt, so that a worker can tell a redelivered message (replay the recorded
//! reply) from a new attempt (call the downstream again, with the same downstream key).

use std::fmt;

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::personal::Guest;
use crate::reply::StepOutput;
use crate::request::BookingRequested;
use crate::time::Timestamp;
use crate::values::{
    Credits, HoldId, MemberNo, PartySize, ReceiptNo, ReservationId, SagaId, SchemaVersion,
    SlotTime, StepName, VenueId, Worker,
};

/// What a command is for, relative to its step.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Do the step.
    Action,
    /// Undo the step.
    Compensation,
    /// Find out whether an action whose outcome is unknown took effect.
    Reconcile,
}

impl CommandKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandKind::Action => "action",
            CommandKind::Compensation => "compensation",
            CommandKind::Reconcile => "reconcile",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable across every attempt of one (saga, step, kind): `<saga>:<step>:<kind>`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(saga: SagaId, step: &StepName, kind: CommandKind) -> Self {
        Self(format!("{saga}:{step}:{kind}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attempt of one command: `<idempotency key>:<attempt>`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct CommandId(String);

impl CommandId {
    pub fn new(key: &IdempotencyKey, attempt: u32) -> Self {
        Self(format!("{key}:{attempt}"))
    }

    /// The step, the kind of command (`action`, `reconcile`, `compensation`) and the attempt
    /// it names (`<saga>:<step>:<kind>:<attempt>`, as [`CommandId::new`] writes it).
    pub fn parts(&self) -> Option<(&str, &str, u32)> {
        let mut it = self.0.splitn(4, ':');
        let _saga = it.next()?;
        let step = it.next()?;
        let kind = it.next()?;
        let attempt = it.next()?.parse().ok()?;
        Some((step, kind, attempt))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The operations a saga definition can name, as data. Each worker operation knows which
/// worker runs it and how to build its payload from the saga's request and the outputs of the
/// steps before it ([`OperationKind::build`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    CheckCredits,
    HoldSlot,
    ReleaseHold,
    RedeemCredits,
    VoidRedemption,
    /// Reconcile a redemption: replay the redeem with the same `ReceiptNo`, which Memberson
    /// answers with the first redemption if there was one.
    ReplayRedemption,
    BookExperience,
    CancelReservation,
    /// Reconcile a booking: search SevenRooms for the saga's `external_id`.
    FindReservation,
    /// Done by the orchestrator itself: publish `BookingConfirmed`.
    PublishConfirmation,
}

impl OperationKind {
    /// The operation as the wire spells it (`check_credits`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            OperationKind::CheckCredits => "check_credits",
            OperationKind::HoldSlot => "hold_slot",
            OperationKind::ReleaseHold => "release_hold",
            OperationKind::RedeemCredits => "redeem_credits",
            OperationKind::VoidRedemption => "void_redemption",
            OperationKind::ReplayRedemption => "replay_redemption",
            OperationKind::BookExperience => "book_experience",
            OperationKind::CancelReservation => "cancel_reservation",
            OperationKind::FindReservation => "find_reservation",
            OperationKind::PublishConfirmation => "publish_confirmation",
        }
    }

    /// The worker that runs it; `None` for what the orchestrator does itself.
    pub fn worker(&self) -> Option<Worker> {
        use OperationKind::*;
        match self {
            CheckCredits | RedeemCredits | VoidRedemption | ReplayRedemption => Some(Worker::Crm),
            HoldSlot | ReleaseHold | BookExperience | CancelReservation | FindReservation => {
                Some(Worker::Sevenrooms)
            }
            PublishConfirmation => None,
        }
    }

    /// Whether running it again after it succeeded changes nothing downstream and answers the
    /// same: a read, or a write the downstream deduplicates (`ReceiptNo`, `external_id`, an
    /// undo that finds nothing left to undo). A worker need not record such a success: a
    /// duplicate command just asks again. A SevenRooms hold has no key, so a second call would
    /// take a second hold.
    pub fn repeats_safely(&self) -> bool {
        !matches!(self, OperationKind::HoldSlot)
    }

    /// Whether, as a compensation, it finds the effect by a key derived from the saga alone
    /// (void by `ReceiptNo`, cancel by `external_id`), so that it can undo an effect whose
    /// answer never came: what a late-effect audit re-issues. Releasing a hold needs the hold's
    /// id, which an unanswered hold never gave.
    pub fn finds_effect_by_key(&self) -> bool {
        matches!(
            self,
            OperationKind::VoidRedemption | OperationKind::CancelReservation
        )
    }

    /// Whether running it may change something downstream. A reconciliation that writes
    /// (replaying a redemption) can itself take effect, so the engine treats an unknown
    /// outcome of one like an unknown outcome of the action.
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            OperationKind::CheckCredits
                | OperationKind::FindReservation
                | OperationKind::PublishConfirmation
        )
    }

    /// Build the payload of this operation for one saga. `None` for local operations.
    pub fn build(&self, ctx: &OperationContext<'_>) -> Option<Operation> {
        let r = ctx.request;
        let op = match self {
            OperationKind::CheckCredits => Operation::CheckCredits {
                member_no: r.member_no.clone(),
                credits: r.quoted_credits,
            },
            OperationKind::HoldSlot => Operation::HoldSlot {
                venue_id: r.venue_id.clone(),
                date: r.date,
                time: r.time,
                party_size: r.party_size,
            },
            OperationKind::ReleaseHold => Operation::ReleaseHold {
                venue_id: r.venue_id.clone(),
                hold_id: ctx.hold_id(),
                sevenrooms_api: ctx.sevenrooms_api(),
            },
            OperationKind::RedeemCredits => Operation::RedeemCredits {
                member_no: r.member_no.clone(),
                credits: r.quoted_credits,
                receipt_no: ReceiptNo::for_saga(ctx.saga_id),
                transaction_at: ctx.started_at,
            },
            OperationKind::ReplayRedemption => Operation::ReplayRedemption {
                member_no: r.member_no.clone(),
                credits: r.quoted_credits,
                receipt_no: ReceiptNo::for_saga(ctx.saga_id),
                transaction_at: ctx.started_at,
            },
            OperationKind::VoidRedemption => Operation::VoidRedemption {
                member_no: r.member_no.clone(),
                receipt_no: ReceiptNo::for_saga(ctx.saga_id),
            },
            OperationKind::BookExperience => Operation::BookExperience {
                venue_id: r.venue_id.clone(),
                date: r.date,
                time: r.time,
                party_size: r.party_size,
                hold_id: ctx.hold_id(),
                external_id: ctx.saga_id.to_string(),
                loyalty_id: r.member_no.clone(),
                guest: r.guest.clone(),
                sevenrooms_api: ctx.sevenrooms_api(),
            },
            OperationKind::CancelReservation => Operation::CancelReservation {
                venue_id: r.venue_id.clone(),
                reservation_id: ctx.reservation_id(),
                external_id: ctx.saga_id.to_string(),
                date: r.date,
                sevenrooms_api: ctx.sevenrooms_api(),
            },
            OperationKind::FindReservation => Operation::FindReservation {
                venue_id: r.venue_id.clone(),
                external_id: ctx.saga_id.to_string(),
                date: r.date,
                sevenrooms_api: ctx.sevenrooms_api(),
            },
            OperationKind::PublishConfirmation => return None,
        };
        Some(op)
    }
}

impl ReceiptNo {
    /// The `ReceiptNo` of a saga's redemption: `CS-` and the saga id's 32 hex digits.
    pub fn for_saga(saga: SagaId) -> ReceiptNo {
        ReceiptNo::parse(format!("CS-{}", saga.simple()))
            .unwrap_or_else(|_| unreachable!("hex digits and '-' are a valid receipt number"))
    }
}

/// What building an operation's payload may draw on.
pub struct OperationContext<'a> {
    pub saga_id: SagaId,
    /// When the saga started: the redemption's transaction time, the same in every replay.
    pub started_at: Timestamp,
    pub request: &'a BookingRequested,
    /// Outputs of the saga's steps so far, in step order.
    pub outputs: &'a [&'a StepOutput],
}

impl OperationContext<'_> {
    fn hold_id(&self) -> Option<HoldId> {
        self.outputs.iter().find_map(|o| match o {
            StepOutput::SlotHeld { hold_id, .. } => Some(hold_id.clone()),
            _ => None,
        })
    }

    /// The SevenRooms API the saga's hold was made at, if not the deployment's.
    fn sevenrooms_api(&self) -> Option<String> {
        self.outputs.iter().find_map(|o| match o {
            StepOutput::SlotHeld { sevenrooms_api, .. } => sevenrooms_api.clone(),
            _ => None,
        })
    }

    fn reservation_id(&self) -> Option<ReservationId> {
        self.outputs.iter().find_map(|o| match o {
            StepOutput::ExperienceBooked { reservation_id } => Some(reservation_id.clone()),
            _ => None,
        })
    }
}

/// The payload of a command: what the worker is to do downstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Memberson: the member is ACTIVE and has at least `credits` (read only).
    CheckCredits {
        member_no: MemberNo,
        credits: Credits,
    },
    /// SevenRooms: hold the slot.
    HoldSlot {
        venue_id: VenueId,
        date: NaiveDate,
        time: SlotTime,
        party_size: PartySize,
    },
    /// SevenRooms: release the hold. Without a hold id (the hold's outcome was never known)
    /// there is nothing to release by id: the hold expires by itself.
    ReleaseHold {
        venue_id: VenueId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_id: Option<HoldId>,
        /// The SevenRooms API the saga's hold was made at (its `SlotHeld` output), when not
        /// the deployment's: the saga's every SevenRooms effect is there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 512))]
        sevenrooms_api: Option<String>,
    },
    /// Memberson: redeem `credits` under `receipt_no`. Every field is derived from the saga,
    /// so that a replay sends the very same body (Memberson refuses a used `ReceiptNo` with
    /// another body).
    RedeemCredits {
        member_no: MemberNo,
        credits: Credits,
        receipt_no: ReceiptNo,
        transaction_at: Timestamp,
    },
    /// Memberson: void the redemption `receipt_no` (a receipt never redeemed is nothing to undo).
    VoidRedemption {
        member_no: MemberNo,
        receipt_no: ReceiptNo,
    },
    /// Memberson: replay the redeem to learn its outcome (reconcile).
    ReplayRedemption {
        member_no: MemberNo,
        credits: Credits,
        receipt_no: ReceiptNo,
        transaction_at: Timestamp,
    },
    /// SevenRooms: book, with the hold if there is one, and `external_id` = saga id.
    BookExperience {
        venue_id: VenueId,
        date: NaiveDate,
        time: SlotTime,
        party_size: PartySize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_id: Option<HoldId>,
        external_id: String,
        loyalty_id: MemberNo,
        /// Sealed by intake; only the SevenRooms worker opens it.
        guest: Guest,
        /// The SevenRooms API the saga's hold was made at (its `SlotHeld` output), when not
        /// the deployment's: the saga's every SevenRooms effect is there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 512))]
        sevenrooms_api: Option<String>,
    },
    /// SevenRooms: cancel the reservation; without its id, find it by `external_id` first.
    CancelReservation {
        venue_id: VenueId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reservation_id: Option<ReservationId>,
        external_id: String,
        date: NaiveDate,
        /// The SevenRooms API the saga's hold was made at (its `SlotHeld` output), when not
        /// the deployment's: the saga's every SevenRooms effect is there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 512))]
        sevenrooms_api: Option<String>,
    },
    /// SevenRooms: search for a reservation with `external_id` (reconcile).
    FindReservation {
        venue_id: VenueId,
        external_id: String,
        date: NaiveDate,
        /// The SevenRooms API the saga's hold was made at (its `SlotHeld` output), when not
        /// the deployment's: the saga's every SevenRooms effect is there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(length(max = 512))]
        sevenrooms_api: Option<String>,
    },
}

impl Operation {
    /// The SevenRooms API an operation is pinned to (its saga's hold's), if not the
    /// deployment's.
    pub fn sevenrooms_api(&self) -> Option<&str> {
        match self {
            Operation::ReleaseHold { sevenrooms_api, .. }
            | Operation::BookExperience { sevenrooms_api, .. }
            | Operation::CancelReservation { sevenrooms_api, .. }
            | Operation::FindReservation { sevenrooms_api, .. } => sevenrooms_api.as_deref(),
            _ => None,
        }
    }

    /// The venue a SevenRooms operation is about (none for Memberson's).
    pub fn venue_id(&self) -> Option<&VenueId> {
        match self {
            Operation::HoldSlot { venue_id, .. }
            | Operation::ReleaseHold { venue_id, .. }
            | Operation::BookExperience { venue_id, .. }
            | Operation::CancelReservation { venue_id, .. }
            | Operation::FindReservation { venue_id, .. } => Some(venue_id),
            Operation::CheckCredits { .. }
            | Operation::RedeemCredits { .. }
            | Operation::VoidRedemption { .. }
            | Operation::ReplayRedemption { .. } => None,
        }
    }

    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::CheckCredits { .. } => OperationKind::CheckCredits,
            Operation::HoldSlot { .. } => OperationKind::HoldSlot,
            Operation::ReleaseHold { .. } => OperationKind::ReleaseHold,
            Operation::RedeemCredits { .. } => OperationKind::RedeemCredits,
            Operation::VoidRedemption { .. } => OperationKind::VoidRedemption,
            Operation::ReplayRedemption { .. } => OperationKind::ReplayRedemption,
            Operation::BookExperience { .. } => OperationKind::BookExperience,
            Operation::CancelReservation { .. } => OperationKind::CancelReservation,
            Operation::FindReservation { .. } => OperationKind::FindReservation,
        }
    }
}

/// A command to a worker: one attempt of one step's action, compensation or reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "WorkerCommand")]
pub struct WorkerCommand {
    pub schema_version: SchemaVersion,
    pub command_id: CommandId,
    pub idempotency_key: IdempotencyKey,
    pub saga_id: SagaId,
    pub step: StepName,
    pub kind: CommandKind,
    /// 1 for the first attempt; counts every send of this (step, kind).
    pub attempt: u32,
    pub worker: Worker,
    pub sent_at: Timestamp,
    /// The worker must not start a downstream call for this command after this moment, nor
    /// keep retrying past it. The orchestrator times the attempt out only after it, so that a
    /// reconciliation that follows a time-out cannot race a late call.
    pub deadline: Timestamp,
    pub operation: Operation,
    /// When the saga began: a worker draining a backlog (after an outage) serves the oldest
    /// sagas first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_started_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_names_its_step_kind_and_attempt() {
        let saga = SagaId::parse("0b0a7c39-2f7e-4e0e-9b8e-1d2a3c4b5d6e").unwrap();
        let step = StepName::parse("hold_slot").unwrap();
        let id = CommandId::new(
            &IdempotencyKey::new(saga, &step, CommandKind::Compensation),
            3,
        );
        assert_eq!(id.parts(), Some(("hold_slot", "compensation", 3)));
        let nonsense: CommandId = serde_json::from_str("\"nonsense\"").unwrap();
        assert_eq!(nonsense.parts(), None);
    }
}

#[cfg(test)]
mod operation_names {
    use super::OperationKind;

    #[test]
    fn an_operations_name_is_its_wire_name() {
        for op in [
            OperationKind::CheckCredits,
            OperationKind::HoldSlot,
            OperationKind::ReleaseHold,
            OperationKind::RedeemCredits,
            OperationKind::VoidRedemption,
            OperationKind::ReplayRedemption,
            OperationKind::BookExperience,
            OperationKind::CancelReservation,
            OperationKind::FindReservation,
            OperationKind::PublishConfirmation,
        ] {
            assert_eq!(
                serde_json::to_value(op).unwrap(),
                serde_json::Value::String(op.as_str().to_owned())
            );
        }
    }
}
