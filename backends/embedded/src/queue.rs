//! The queue port on the `messages` and `dead_letters` tables, with SQS's semantics.
//!
//! Receipts: a receipt is current until the message is received again or deleted. `delete`
//! with a stale receipt does nothing and is not an error (as in SQS); `change_visibility` and
//! `dead_letter` with a stale receipt write nothing and fail with `PortError::Invalid` (SQS
//! fails them too, for an expired receipt), so a worker learns that its lease is gone.
//!
//! Long polling: a receive that finds nothing waits with the writer, which hands it the next
//! messages sent to its queue in the commit that sends them, or leases it messages that become
//! visible otherwise (by the clock, made visible again, redriven, sent by another process),
//! within `wait` (see `handoff`).

use std::time::Duration;

use async_trait::async_trait;
use como_ports::{
    DeadLetter, Delivery, OutgoingMessage, PortResult, Queue, QueueDepth, QueueName, Receipt,
    RewriteDeadLetter,
};
use como_schemas::Timestamp;

use crate::EmbeddedPorts;
use crate::codec::{self, ReceiptKey, db_error, limit, millis};
use crate::ops::{NewMessage, Op, Output};

/// SQS takes at most 10 per receive; here a receive is one statement, so allow more, but keep
/// one lease from holding a whole backlog.
const MAX_RECEIVE: usize = 1_000;

pub fn new_message(queue: QueueName, m: OutgoingMessage) -> NewMessage {
    NewMessage {
        queue,
        attrs: codec::encode_attributes(&m.attributes),
        attributes: m.attributes,
        body: m.body,
        delay_ms: millis(m.delay),
    }
}

#[async_trait]
impl Queue for EmbeddedPorts {
    async fn send(&self, queue: QueueName, messages: Vec<OutgoingMessage>) -> PortResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages = messages
            .into_iter()
            .map(|m| new_message(queue, m))
            .collect();
        self.writer.submit(Op::Send { messages }).await?.done()
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        let max = max.min(MAX_RECEIVE);
        if max == 0 {
            return Ok(Vec::new());
        }
        match self
            .writer
            .submit(Op::Receive {
                queue,
                max,
                visibility_ms: millis(visibility),
                wait,
            })
            .await?
        {
            Output::Received(deliveries) => Ok(deliveries),
            other => Err(other.unexpected()),
        }
    }

    async fn delete(&self, queue: QueueName, receipts: Vec<Receipt>) -> PortResult<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let receipts = receipts
            .iter()
            .map(ReceiptKey::parse)
            .collect::<PortResult<Vec<_>>>()?;
        self.writer
            .submit(Op::Delete { queue, receipts })
            .await?
            .done()
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        visibility: Duration,
    ) -> PortResult<()> {
        let receipt = ReceiptKey::parse(receipt)?;
        self.writer
            .submit(Op::ChangeVisibility {
                queue,
                receipt,
                visibility_ms: millis(visibility),
            })
            .await?
            .done()
    }

    /// Move a received message to the dead letters, with `body` in place of its own when
    /// given.
    async fn dead_letter_with(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
        body: Option<String>,
    ) -> PortResult<()> {
        let receipt = ReceiptKey::parse(receipt)?;
        self.writer
            .submit(Op::DeadLetter {
                queue,
                receipt,
                reason: reason.to_owned(),
                body,
            })
            .await?
            .done()
    }

    async fn dead_letters(&self, queue: QueueName, max: usize) -> PortResult<Vec<DeadLetter>> {
        let code = codec::queue_code(queue);
        self.readers
            .scan(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, queue, body, reason, receive_count, dead_lettered_at
                         FROM dead_letters WHERE queue = ?1
                         ORDER BY dead_lettered_at, id LIMIT ?2",
                    )
                    .map_err(db_error)?;
                let mut rows = stmt.query((code, limit(max))).map_err(db_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let id: i64 = row.get(0).map_err(db_error)?;
                    let count: i64 = row.get(4).map_err(db_error)?;
                    out.push(DeadLetter {
                        message_id: id.to_string(),
                        queue: codec::queue_of_code(row.get(1).map_err(db_error)?)?,
                        body: row.get(2).map_err(db_error)?,
                        reason: row.get(3).map_err(db_error)?,
                        receive_count: u32::try_from(codec::unsigned("receive count", count)?)
                            .unwrap_or(u32::MAX),
                        dead_lettered_at: Timestamp::from_millis(row.get(5).map_err(db_error)?),
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth> {
        let code = codec::queue_code(queue);
        let now = self.clock.now().as_millis();
        self.readers
            .scan(move |conn| {
                // Both counts are read from the indexes (`messages_visible`,
                // `dead_letters_queue`), not from the rows.
                let (visible, not_visible, oldest): (i64, i64, Option<i64>) = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FILTER (WHERE visible_at <= ?2),
                                COUNT(*) FILTER (WHERE visible_at > ?2),
                                MIN(sent_at)
                         FROM messages WHERE queue = ?1",
                    )
                    .map_err(db_error)?
                    .query_row((code, now), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(db_error)?;
                let dead: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM dead_letters WHERE queue = ?1")
                    .map_err(db_error)?
                    .query_row([code], |r| r.get(0))
                    .map_err(db_error)?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok(QueueDepth {
                    visible: count(visible),
                    not_visible: count(not_visible),
                    dead_letters: count(dead),
                    oldest_sent_at: oldest.map(Timestamp::from_millis),
                })
            })
            .await
    }

    async fn rewrite_dead_letters(
        &self,
        queue: QueueName,
        rewrite: &RewriteDeadLetter<'_>,
    ) -> PortResult<usize> {
        let letters = self.dead_letters(queue, usize::MAX).await?;
        let changes: Vec<(i64, String, String)> = letters
            .into_iter()
            .filter_map(|d| {
                let body = rewrite(&d).filter(|b| *b != d.body)?;
                Some((d.message_id.parse().ok()?, d.body, body))
            })
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        match self
            .writer
            .submit(Op::RewriteDeadLetters { changes })
            .await?
        {
            Output::Count(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }

    async fn redrive(
        &self,
        queue: QueueName,
        message_ids: Option<Vec<String>>,
    ) -> PortResult<usize> {
        // An id that is not a number names no message here: nothing to move.
        let ids = message_ids.map(|ids| ids.iter().filter_map(|i| i.parse().ok()).collect());
        match self.writer.submit(Op::Redrive { queue, ids }).await? {
            Output::Count(n) => Ok(n),
            other => Err(other.unexpected()),
        }
    }
}
