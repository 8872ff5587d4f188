//! Idempotency records on the `records` table. `complete` records (when asked), sends and
//! acknowledges in one transaction: a redelivered command either finds the record and its reply already sent,
//! or finds neither. `swap` is a compare-and-set of a shared value in the same table (nothing
//! prunes the table, so such a value stays until it is replaced).

use async_trait::async_trait;
use como_ports::{IdempotencyRecords, OutgoingMessage, PortResult, QueueName, Receipt};

use crate::EmbeddedPorts;
use crate::codec::ReceiptKey;
use crate::ops::{Op, Output};
use crate::queue::new_message;

#[async_trait]
impl IdempotencyRecords for EmbeddedPorts {
    async fn get(&self, key: &str) -> PortResult<Option<String>> {
        match self
            .writer
            .submit(Op::GetRecord {
                key: key.to_owned(),
            })
            .await?
        {
            Output::Record(value) => Ok(value),
            other => Err(other.unexpected()),
        }
    }

    async fn complete(
        &self,
        record: Option<(&str, &str)>,
        sends: Vec<(QueueName, OutgoingMessage)>,
        ack: Option<(QueueName, Receipt)>,
    ) -> PortResult<()> {
        let ack = ack
            .map(|(q, r)| ReceiptKey::parse(&r).map(|k| (q, k)))
            .transpose()?;
        self.writer
            .submit(Op::Complete {
                record: record.map(|(k, v)| (k.to_owned(), v.to_owned())),
                sends: sends.into_iter().map(|(q, m)| new_message(q, m)).collect(),
                ack,
            })
            .await?
            .done()
    }

    async fn swap(&self, key: &str, expected: Option<&str>, new: &str) -> PortResult<bool> {
        match self
            .writer
            .submit(Op::SwapRecord {
                key: key.to_owned(),
                expected: expected.map(str::to_owned),
                new: new.to_owned(),
            })
            .await?
        {
            Output::Swapped(swapped) => Ok(swapped),
            other => Err(other.unexpected()),
        }
    }
}
