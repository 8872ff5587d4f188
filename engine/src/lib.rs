//! The saga engine: a pure state machine. It does no I/O and reads no clock: time is an input.
//!
//! ```text
//! transition(definition, state, input, now) -> Decision { state, commands, events, history, wake_at }
//! ```
//!
//! Layout:
//! - [`definition`]: a saga definition as data (steps, retry policies, time-outs, how each
//!   error class is handled) and its validation.
//! - [`como`]: the Como booking saga, version 1, and the registry of definitions by version.
//! - [`state`]: a saga's state, and the status a dashboard shows.
//! - [`input`]: what can happen to a saga: start, a worker's reply, a timer, an operator.
//! - [`decision`]: what the runtime must do after a transition, and the history it appends.
//! - [`failure`]: why a booking failed, the code its `BookingFailed` event carries.
//! - [`transition`]: the transition function.
//! - [`backoff`]: retry delays with deterministic jitter.
//!
//! The runtime persists `Decision::state` together with its commands, events and history in one
//! step (a transactional outbox, or its equivalent on AWS), and only then acknowledges the
//! input. Because every input may arrive twice, late or out of order, a transition never
//! assumes otherwise: a duplicate input changes nothing, and a reply for an old attempt only
//! adds what it teaches (an effect took place) without moving the saga.

pub mod backoff;
pub mod como;
pub mod decision;
pub mod definition;
pub mod failure;
pub mod input;
pub mod state;
pub mod transition;

pub use decision::{Decision, HistoryEntry, HistoryKind};
pub use definition::{
    CompensationDefinition, ErrorHandling, Handling, OnReconcileExhausted, RetryPolicy,
    SagaDefinition, StepDefinition,
};
pub use failure::FailureCode;
pub use input::{Input, OperatorAction, OperatorCommand, ResolvedOutcome};
pub use state::{Effect, Phase, SagaState, SagaStatus, StatusKind};
pub use transition::{EngineError, transition};
