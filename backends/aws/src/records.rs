//! Idempotency records on the saga table (`pk` = `R#<key>`): a conditional put keeps the first
//! record, and the record is written before the reply is sent and the command deleted, so a
//! crash in between leaves a redelivery that finds the record and re-sends the same reply.
//! Records expire `record_retention` after they were written (DynamoDB TTL).
//!
//! `swap` is a compare-and-set of a small shared value on the same items (a conditional put on
//! `val`). Such a value has no TTL attribute, so it never expires; it stays until replaced.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use como_ports::{
    IdempotencyRecords, OutgoingMessage, PortError, PortResult, Queue, QueueName, Receipt,
};

use crate::error::{reported, unavailable, words};
use crate::{AwsPorts, names};

fn key(k: &str) -> AttributeValue {
    AttributeValue::S(format!("R#{k}"))
}

impl AwsPorts {
    /// "DynamoDB `op` on table P-sagas (records)", as errors name the call.
    fn on_records(&self, op: &str) -> String {
        format!("DynamoDB {op} on table {} (records)", self.names.table())
    }

    /// A put of the record item `k` holding `value`, to which callers add their condition.
    fn put_record(
        &self,
        k: &str,
        value: &str,
    ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        self.clients
            .dynamo
            .put_item()
            .table_name(self.names.table())
            .item("pk", key(k))
            .item("sk", AttributeValue::S("R".into()))
            .item("val", AttributeValue::S(value.to_owned()))
    }

    /// The record item `k`, read consistently (none if there is none).
    async fn read_record(&self, k: &str) -> PortResult<Option<HashMap<String, AttributeValue>>> {
        self.clients.calls.count("dynamodb", "GetItem (record)");
        let out = self
            .clients
            .dynamo
            .get_item()
            .table_name(self.names.table())
            .key("pk", key(k))
            .key("sk", AttributeValue::S("R".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(&self.on_records("GetItem"), e))?;
        Ok(out.item)
    }
}

#[async_trait]
impl IdempotencyRecords for AwsPorts {
    async fn get(&self, k: &str) -> PortResult<Option<String>> {
        match self.read_record(k).await? {
            None => Ok(None),
            Some(item) => match item.get("val").and_then(|v| v.as_s().ok()) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(PortError::Corrupt(format!("record {k} has no value"))),
            },
        }
    }

    async fn complete(
        &self,
        record: Option<(&str, &str)>,
        sends: Vec<(QueueName, OutgoingMessage)>,
        ack: Option<(QueueName, Receipt)>,
    ) -> PortResult<()> {
        reported(self.complete_now(record, sends, ack).await)
    }

    async fn swap(&self, k: &str, expected: Option<&str>, new: &str) -> PortResult<bool> {
        reported(self.swap_now(k, expected, new).await)
    }
}

impl AwsPorts {
    async fn complete_now(
        &self,
        record: Option<(&str, &str)>,
        sends: Vec<(QueueName, OutgoingMessage)>,
        ack: Option<(QueueName, Receipt)>,
    ) -> PortResult<()> {
        if let Some((k, value)) = record {
            let expires = self.clock.now().as_millis() / 1_000
                + i64::try_from(self.config.record_retention.as_secs()).unwrap_or(i64::MAX / 2);
            self.clients.calls.count("dynamodb", "PutItem");
            self.clients
                .calls
                .add("dynamodb", crate::store::TABLE_UNITS, 1);
            let put = self
                .put_record(k, value)
                .item(names::TTL_ATTRIBUTE, AttributeValue::N(expires.to_string()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match put {
                Ok(_) => {}
                // The first record wins.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(unavailable(&self.on_records("PutItem"), e)),
            }
        }
        let mut by_queue: BTreeMap<QueueName, Vec<OutgoingMessage>> = BTreeMap::new();
        for (q, m) in sends {
            by_queue.entry(q).or_default().push(m);
        }
        for (q, messages) in by_queue {
            self.send(q, messages).await?;
        }
        if let Some((q, receipt)) = ack {
            self.acknowledge_in_background(q, receipt);
        }
        Ok(())
    }

    async fn swap_now(&self, k: &str, expected: Option<&str>, new: &str) -> PortResult<bool> {
        self.clients.calls.count("dynamodb", "PutItem (swap)");
        // A refused conditional write is billed too.
        self.clients
            .calls
            .add("dynamodb", crate::store::TABLE_UNITS, 1);
        // No TTL attribute: the value must outlive `record_retention`. The mark tells this
        // swap from another one that wrote the same value.
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let put = self
            .put_record(k, new)
            .item("w", AttributeValue::S(mark.clone()));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(expected) => put
                .condition_expression("val = :expected")
                .expression_attribute_values(":expected", AttributeValue::S(expected.to_owned())),
        };
        let cause = match put.send().await {
            Ok(_) => return Ok(true),
            // Refused: another swap came first, or an SDK retry of this one found its own
            // write (its first attempt committed and the answer was lost).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                None
            }
            Err(e) => Some(unavailable(&self.on_records("PutItem (swap)"), e)),
        };
        // Whether it happened: the item holds this swap's mark, or it is as expected still
        // (it did not happen), or another swap's.
        let item = match self.read_record(k).await {
            Ok(item) => item,
            Err(read) => {
                return Err(match cause {
                    Some(cause) => PortError::Unavailable(format!(
                        "{}; whether the swap of {k} happened is unknown, the read back failed too: {}",
                        words(&cause),
                        words(&read)
                    )),
                    None => read,
                });
            }
        };
        let field = |name: &str| {
            item.as_ref()
                .and_then(|i| i.get(name))
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
        };
        if field("w") == Some(mark.as_str()) {
            return Ok(true);
        }
        match cause {
            Some(cause) if field("val") == expected => Err(cause),
            _ => Ok(false),
        }
    }
}
