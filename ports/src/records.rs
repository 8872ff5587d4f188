//! Idempotency records: what a worker replied to a command, kept so that a redelivered
//! command is answered from the record instead of calling the downstream again. The same key
//! space also holds small shared values changed by compare-and-set (`swap`), such as a
//! downstream's health, which several worker processes read and update.

use async_trait::async_trait;

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
