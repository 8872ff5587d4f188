//! The ports: the small set of traits the saga runtime needs from the outside world.
//!
//! Layout:
//! - [`queue`]: at-least-once queues with visibility timeouts, delayed delivery, receive counts
//!   and dead letters (SQS semantics; the embedded backend keeps them too).
//! - [`store`]: the saga store as two ports: [`SagaReader`] (get, query by status / step /
//!   age, history, counts, stuck), which a process that only looks at sagas holds, and
//!   [`SagaWriter`] (create if absent, conditional update on a version, due timers, and the
//!   effects: commands, events, the input's acknowledgement, that a write carries with it),
//!   which only the orchestrator holds. [`SagaStore`] is both, as every backend provides them.
//! - [`records`]: idempotency records, so that a worker replays its reply to a duplicate command.
//! - [`audit`]: the audit list of operator actions, by actor, action and period.
//! - [`bus`]: the event bus for lifecycle events.
//! - [`secrets`]: the secret store with the pending / current versions of a rotation.
//! - [`health`]: whether this process can write to its store, for the log, readiness and the
//!   edge.
//! - [`vault`]: the guest's contact sealed before it is kept and opened where it is needed
//!   (implemented by `como-privacy` with the data keys).
//! - [`clock`]: time, as a trait, so that timers are testable without sleeping.
//! - [`consumer`]: the pump every queue consumer runs: bounded concurrency, no batch waiting
//!   on its slowest message, graceful shutdown.
//! - [`conformance`] (feature `conformance`): one suite per port, run against every backend.
//!
//! The traits are written for the semantics that SQS, DynamoDB and EventBridge have (delivery
//! at least once and out of order, conditional writes that can lose) and not for what is
//! convenient in SQLite. This crate depends on no backend.

pub mod audit;
pub mod bus;
pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod consumer;
pub mod error;
pub mod health;
pub mod queue;
pub mod records;
pub mod secrets;
pub mod store;
pub mod trace;
pub mod vault;

pub use audit::{AuditEntry, AuditLog, AuditOutcome, AuditPage, AuditQuery};
pub use bus::EventBus;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{PortError, PortResult};
pub use queue::{
    DeadLetter, Delivery, OutgoingMessage, Queue, QueueDepth, QueueName, Receipt, RewriteDeadLetter,
};
pub use records::IdempotencyRecords;
pub use secrets::{SecretStore, SecretVersion};
pub use store::{
    CreateOutcome, Effects, SagaPage, SagaQuery, SagaReader, SagaStore, SagaSummary, SagaWriter,
    StepCount, UpdateOutcome, Versioned,
};
pub use vault::{GuestVault, NoKeys, VaultError};

/// Every port of one backend, as the runtime holds them.
#[derive(Clone)]
pub struct Backend {
    pub queue: std::sync::Arc<dyn Queue>,
    pub store: std::sync::Arc<dyn SagaStore>,
    pub records: std::sync::Arc<dyn IdempotencyRecords>,
    pub bus: std::sync::Arc<dyn EventBus>,
    pub secrets: std::sync::Arc<dyn SecretStore>,
    pub audit: std::sync::Arc<dyn AuditLog>,
    pub clock: std::sync::Arc<dyn Clock>,
    /// Seals and opens the guest's contact: the data keys, which the application gives
    /// (`como-privacy`); a backend on its own has [`NoKeys`].
    pub vault: std::sync::Arc<dyn GuestVault>,
}

impl Backend {
    /// These ports with `vault` sealing and opening the guest's contact.
    #[must_use]
    pub fn with_vault(mut self, vault: std::sync::Arc<dyn GuestVault>) -> Self {
        self.vault = vault;
        self
    }

    /// The read port of the saga store alone: what a process that must not change sagas holds.
    pub fn reader(&self) -> std::sync::Arc<dyn SagaReader> {
        self.store.clone()
    }
}
