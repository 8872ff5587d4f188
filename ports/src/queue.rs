//! Queues with SQS semantics: delivery at least once and in no guaranteed order; a received
//! message is hidden for its visibility timeout and comes back if not deleted in time; each
//! receive counts, and after the queue's maximum the message moves to the queue's dead letters.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use como_schemas::{Timestamp, Worker};
use serde::{Deserialize, Serialize};

use crate::error::PortResult;

/// The queues of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QueueName {
    /// Booking requests, for the orchestrator.
    Requests,
    /// Workers' replies, for the orchestrator.
    Replies,
    /// Commands for one kind of worker.
    Commands(Worker),
    /// Events a person must hear of (`SagaNeedsOperator`), for the webhook notifier: sent
    /// with the saga's write, so that a notification is delivered at least once.
    Notifications,
}

impl QueueName {
    pub const ALL: [QueueName; 5] = [
        QueueName::Requests,
        QueueName::Replies,
        QueueName::Commands(Worker::Crm),
        QueueName::Commands(Worker::Sevenrooms),
        QueueName::Notifications,
    ];

    /// The queue's name as backends and operators spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueName::Requests => "requests",
            QueueName::Replies => "replies",
            QueueName::Commands(Worker::Crm) => "commands-crm",
            QueueName::Commands(Worker::Sevenrooms) => "commands-sevenrooms",
            QueueName::Notifications => "notifications",
        }
    }

    pub fn parse(s: &str) -> Option<QueueName> {
        QueueName::ALL.into_iter().find(|q| q.as_str() == s)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// JSON text.
    pub body: String,
    /// Not visible before this has passed (SQS allows up to 15 minutes).
    pub delay: Duration,
    /// Transport metadata, such as the W3C `traceparent`.
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    pub fn new(body: String) -> Self {
        Self {
            body,
            ..Self::default()
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The handle of one receipt of a message: deleting or changing visibility needs it. A newer
/// receipt of the same message makes older ones stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt(pub String);

/// A message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: Receipt,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    pub sent_at: Timestamp,
}

/// What [`Queue::rewrite_dead_letters`] asks of each dead letter: its new body, or `None` to
/// leave it.
pub type RewriteDeadLetter<'a> = dyn Fn(&DeadLetter) -> Option<String> + Send + Sync + 'a;

/// How many messages a queue holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Waiting to be received now.
    pub visible: u64,
    /// Received and not yet deleted, or delayed: not visible now.
    pub not_visible: u64,
    /// Set aside in the queue's dead letters.
    pub dead_letters: u64,
    /// When the oldest message still in the queue was sent, where the backend knows (SQS
    /// publishes that only as a CloudWatch metric, `ApproximateAgeOfOldestMessage`).
    pub oldest_sent_at: Option<Timestamp>,
}

/// A message that was moved aside: received too often, or refused as malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub queue: QueueName,
    pub body: String,
    pub reason: String,
    pub receive_count: u32,
    pub dead_lettered_at: Timestamp,
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Send messages; each becomes visible after its delay.
    async fn send(&self, queue: QueueName, messages: Vec<OutgoingMessage>) -> PortResult<()>;

    /// Receive up to `max` visible messages, hiding each for `visibility`. Waits up to `wait`
    /// for a first message (long polling), and returns what it has, possibly nothing.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>>;

    /// Delete received messages. A stale or unknown receipt is not an error: the message was
    /// already deleted, or was received again by someone else who will handle it.
    async fn delete(&self, queue: QueueName, receipts: Vec<Receipt>) -> PortResult<()>;

    /// Hide a received message for `visibility` from now (extend a lease, or put the message
    /// back with a delay; zero makes it visible at once).
    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        visibility: Duration,
    ) -> PortResult<()>;

    /// Move a received message to the dead letters now, with the reason.
    async fn dead_letter(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
    ) -> PortResult<()> {
        self.dead_letter_with(queue, receipt, reason, None).await
    }

    /// Move a received message to the dead letters now, with the reason, keeping `body` in
    /// place of the message's own: a request whose guest intake sealed first, so that a dead
    /// letter holds no personal data in the clear.
    async fn dead_letter_as(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
        body: String,
    ) -> PortResult<()> {
        self.dead_letter_with(queue, receipt, reason, Some(body))
            .await
    }

    /// What both of the above do: the message moved, with `body` in place of its own when
    /// given.
    async fn dead_letter_with(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
        body: Option<String>,
    ) -> PortResult<()>;

    /// The dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: QueueName, limit: usize) -> PortResult<Vec<DeadLetter>>;

    /// How many messages `queue` holds now, by state, for dashboards and metrics. Counts may be
    /// approximate on a distributed queue (SQS says so of its own).
    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth>;

    /// Change the bodies of dead letters of `queue` in place: `rewrite` sees each one and
    /// returns its new body, or `None` to leave it; returns how many were changed. A dead
    /// letter keeps its message id, reason, receive count and when it was set aside (SQS can
    /// change no message: there it is sent again to the dead-letter queue with the same note,
    /// then the old one deleted, so a crash in between leaves both, and the old one is found
    /// again by the next rewrite). For erasing personal data (`como-saga members forget`, the
    /// retention).
    async fn rewrite_dead_letters(
        &self,
        queue: QueueName,
        rewrite: &RewriteDeadLetter<'_>,
    ) -> PortResult<usize>;

    /// Put dead letters back on their queue (all of them, or those named); returns how many.
    async fn redrive(
        &self,
        queue: QueueName,
        message_ids: Option<Vec<String>>,
    ) -> PortResult<usize>;
}
