//! Idempotency records: what a worker replied to a command, kept so that a redelivered
//! command is answered from the record instead of calling the downstream again.

use async_trait::async_trait;

use crate::error::PortResult;
use crate::queue::{OutgoingMessage, QueueName, Receipt};

#[async_trait]
pub trait IdempotencyRecords: Send + Sync {
    /// The value recorded under `key`, if any.
    async fn get(&self, key: &str) -> PortResult<Option<String>>;

    /// Record `value` under `key` (the first record wins; a second is ignored), then send
    /// `sends`, then delete `ack`. On the embedded backend the three commit together; elsewhere
    /// they happen in this order, so that a crash in between leaves a redelivery that finds
    /// the record and re-sends.
    async fn complete(
        &self,
        key: &str,
        value: &str,
        sends: Vec<(QueueName, OutgoingMessage)>,
        ack: Option<(QueueName, Receipt)>,
    ) -> PortResult<()>;
}
