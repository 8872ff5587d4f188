//! The event bus: lifecycle events for the outside world.

use async_trait::async_trait;
use como_schemas::{BookingRejected, SagaEvent};

use crate::error::PortResult;

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publish saga events (at least once: consumers drop duplicates by `event_id`).
    async fn publish(&self, events: Vec<SagaEvent>) -> PortResult<()>;

    /// Publish the rejection of a request that never became a saga.
    async fn publish_rejection(&self, rejection: BookingRejected) -> PortResult<()>;

    /// The latest events, newest last (for the dashboard and tests; a bus that cannot be read
    /// back returns what it kept locally, possibly nothing).
    async fn recent(&self, limit: usize) -> PortResult<Vec<SagaEvent>>;
}
