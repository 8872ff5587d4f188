//! The orchestrator runtime: receives booking requests, worker replies and timers through the
//! ports, runs the pure saga engine (`como-engine`), then persists the new state together with
//! the commands, events and history it produced (one write, see `como_ports::SagaStore`), and
//! only then acknowledges the input. It never calls a downstream API itself.
//!
//! Layout:
//! - [`catalogue`]: the venues, their prices and SevenRooms settings, kept in the store; a quote
//!   is checked against them at intake.
//! - [`advance`]: load a saga, apply one input, write it back conditionally, re-read and
//!   re-apply on a conflict. Every change to a saga goes through it.
//! - [`cache`]: the sagas this orchestrator wrote last, so that the next input skips a read.
//! - [`intake`]: a booking request becomes a saga exactly once, or is refused with a reason.
//! - [`replies`]: a worker's reply advances its saga.
//! - [`timers`]: sagas whose wake-up time has come get `Input::Timer`.
//! - [`operator`]: operator actions (retry now, force compensation, cancel, resolve by hand,
//!   and one of them on many sagas), each through [`advance()`], recording who and why. The CLI
//!   and the HTTP API call these; nothing else may change a saga.
//! - [`latency`]: each step's command latencies, retries and compensations this process saw
//!   (for `/metrics`).
//! - [`runtime`]: the loops above as one long-running orchestrator, with graceful shutdown.
//! - [`view`]: what leaves the process: a saga and its history as the HTTP API, dashboards and
//!   the CLI show them, built from the engine's state and history, apart from their shapes.

pub mod advance;
pub mod cache;
pub mod catalogue;
pub mod intake;
pub mod latency;
pub mod operator;
pub mod privacy;
pub mod replies;
pub mod runtime;
pub mod timers;
pub mod view;

pub use advance::{Advanced, Applied, Observer, RuntimeError, advance, advance_with};
pub use catalogue::{LiveCatalogue, VenueCatalogue, VenuePrice, VenueSettings};
pub use intake::{IntakeOutcome, submit};
pub use operator::{OperatorError, OperatorOutcome};
pub use runtime::{Orchestrator, OrchestratorConfig};
pub use view::{HistoryView, SagaView, StatusView, StepProgress, StepView};
