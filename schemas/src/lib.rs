//! Message contracts of como-saga: every message that crosses a process boundary.
//!
//! Layout:
//! - [`values`]: domain newtypes (`MemberNo`, `Credits`, `SagaId`, `VenueId`, ...) that cannot
//!   hold an invalid value; parsing them is the only way in.
//! - [`request`]: the `BookingRequested` event and its validation at the edge.
//! - [`personal`]: the guest's contact as it travels and is kept: in the clear, sealed, or
//!   erased.
//! - [`command`]: commands from the orchestrator to a worker, and the operations they carry.
//! - [`reply`]: a worker's reply to a command.
//! - [`events`]: saga lifecycle events published for the outside world.
//! - [`export`]: the JSON Schema files under `schemas/json/`, generated from these types; a
//!   test fails when the files and the types drift apart.
//!
//! Every message carries `schema_version`; this build reads and writes [`SCHEMA_VERSION`].

pub mod command;
pub mod credentials;
pub mod error;
pub mod events;
pub mod examples;
pub mod export;
pub mod personal;
pub mod reply;
pub mod request;
pub mod time;
pub mod values;

pub use command::{
    CommandId, CommandKind, IdempotencyKey, Operation, OperationContext, OperationKind,
    WorkerCommand,
};
pub use error::InvalidInput;
pub use events::{BookingRejected, SagaEvent};
pub use personal::{Erasure, ErasureReason, Guest, SealedGuest};
pub use reply::{ReplyOutcome, StepOutput, WorkerReply};
pub use request::{BookingRequested, GuestContact, parse_booking_request};
pub use time::Timestamp;
pub use values::*;

/// The schema version every message of this build carries.
pub const SCHEMA_VERSION: u32 = 1;
