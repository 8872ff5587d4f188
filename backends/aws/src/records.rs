//! Idempotency records on the saga table (`pk` = `R#<key>`): a conditional put keeps the first
//! record, and the record is written before the reply is sent and the command deleted, so a
//! crash in between leaves a redelivery that finds the record and re-sends the same reply.
//! Records expire `record_retention` after they were written (DynamoDB TTL).
//!
//! `swap` is a compare-and-set of a small shared value on the same items (a conditional put on
//! `val`). Such a value has no TTL attribute, so it never expires; it stays until replaced.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use como_ports::{
    IdempotencyRecords, OutgoingMessage, PortError, PortResult, Queue, QueueName, Receipt,
};

use crate::error::unavailable;
use crate::{AwsPorts, names};

fn key(k: &str) -> AttributeValue {
    AttributeValue::S(format!("R#{k}"))
}

impl AwsPorts {
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
}

#[async_trait]
impl IdempotencyRecords for AwsPorts {
    async fn get(&self, k: &str) -> PortResult<Option<String>> {
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
            .map_err(|e| unavailable("GetItem", e))?;
        match out.item() {
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
                Err(e) => return Err(unavailable("PutItem", e)),
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

    async fn swap(&self, k: &str, expected: Option<&str>, new: &str) -> PortResult<bool> {
        self.clients.calls.count("dynamodb", "PutItem (swap)");
        // A refused conditional write is billed too.
        self.clients
            .calls
            .add("dynamodb", crate::store::TABLE_UNITS, 1);
        // No TTL attribute: the value must outlive `record_retention`.
        let put = self.put_record(k, new);
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(expected) => put
                .condition_expression("val = :expected")
                .expression_attribute_values(":expected", AttributeValue::S(expected.to_owned())),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("PutItem", e)),
        }
    }
}
