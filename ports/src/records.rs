//! Idempotency records: what a worker replied to a command, kept so that a redelivered
//! command is answered from the record instead of calling the downstream again. The same key
//! space also holds small shared values changed by compare-and-set (`swap`), such as a
//! downstream's health, which several worker processes read and update.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PortResult;
use crate::queue::{OutgoingMessage, QueueName, Receipt};

#[async_trait]
pub trait IdempotencyRecords: Send + Sync {
    /// The value recorded under `key`, if any.
    async fn get(&self, key: &str) -> PortResult<Option<String>>;

    /// Record `value` under `key` if `record` is given (the first record wins; a second is
    /// ignored), then send `sends`, then delete `ack`. On the embedded backend the three commit
    /// together; elsewhere they happen in this order, so that a crash in between leaves a
    /// redelivery that finds the record and re-sends. Without a record it is "send these, then
    /// acknowledge that" (a worker putting a command back with a delay).
    async fn complete(
        &self,
        record: Option<(&str, &str)>,
        sends: Vec<(QueueName, OutgoingMessage)>,
        ack: Option<(QueueName, Receipt)>,
    ) -> PortResult<()>;

    /// Replace the value under `key` with `new` if it is now `expected` (`None`: if there is no
    /// value under `key`). Returns whether it was replaced. Unlike `complete`'s record, such a
    /// value never expires and may change; it is for small shared state (a downstream's health),
    /// not for replies. Keys must not collide with command ids (use a prefix such as `health/`).
    async fn swap(&self, key: &str, expected: Option<&str>, new: &str) -> PortResult<bool>;
}

/// The shared record of one downstream's health, kept under [`SharedHealth::key`] by the
/// workers' health monitors (changed only by `swap`), and read by whoever shows a
/// downstream's circuit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHealth {
    pub up: bool,
    /// When it was last found up or down (epoch milliseconds).
    pub since_ms: i64,
    /// While down: when the next probe may go (epoch milliseconds).
    pub next_probe_at_ms: i64,
    /// The process that wrote it last.
    pub by: String,
}

impl SharedHealth {
    /// The key of a downstream's record: `health/<downstream>`.
    pub fn key(downstream: &str) -> String {
        format!("health/{}", downstream.to_ascii_lowercase())
    }
}
