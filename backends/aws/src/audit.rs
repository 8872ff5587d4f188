//! The audit list on the saga table: one item per action and target, `pk` = `A`, `sk` =
//! `<asked at, 15 digits>#<entry id>`, so that a period is a range of one partition read
//! newest first. Operator actions are rare (a bulk action is rate-limited to at most 100 a
//! second), far below what one partition takes, so the list is not sharded. Entries do not
//! expire.
//!
//! Filters by actor and action are applied by DynamoDB after the key range is read (a
//! `FilterExpression`): a page reads the period's entries until it has found enough.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use como_ports::{AuditEntry, AuditLog, AuditPage, AuditQuery, PortError, PortResult};

use crate::AwsPorts;
use crate::error::unavailable;

const PK: &str = "A";
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1_000;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn sk_at(millis: i64) -> String {
    format!("{:015}", millis.max(0))
}

#[async_trait]
impl AuditLog for AwsPorts {
    async fn record(&self, entry: &AuditEntry) -> PortResult<()> {
        let text = serde_json::to_string(entry)
            .map_err(|e| PortError::Invalid(format!("cannot encode the audit entry: {e}")))?;
        self.clients.calls.count("dynamodb", "PutItem (audit)");
        self.clients
            .dynamo
            .put_item()
            .table_name(self.names.table())
            .item("pk", s(PK))
            .item(
                "sk",
                s(format!("{}#{}", sk_at(entry.at.as_millis()), entry.id)),
            )
            .item("actor", s(entry.actor.clone()))
            .item("action", s(entry.action.clone()))
            .item("entry", s(text))
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    &format!("DynamoDB PutItem on table {} (audit)", self.names.table()),
                    e,
                )
            })?;
        Ok(())
    }

    async fn list(&self, query: &AuditQuery) -> PortResult<AuditPage> {
        let page = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Newest first: from just below `until` (or the cursor) down to `from`.
        let high = match &query.cursor {
            Some(c) => {
                if !c.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
                    return Err(PortError::Invalid(format!(
                        "{c:?} is not a cursor of this list"
                    )));
                }
                c.clone()
            }
            None => query
                .until
                .map_or_else(|| "9".repeat(16), |u| sk_at(u.as_millis())),
        };
        let low = query
            .from
            .map_or_else(|| "0".to_owned(), |f| sk_at(f.as_millis()));
        let mut filters = Vec::new();
        let mut request = self
            .clients
            .dynamo_pages
            .query()
            .table_name(self.names.table())
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(PK))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high.clone()))
            .scan_index_forward(false)
            .consistent_read(true);
        if let Some(actor) = &query.actor {
            filters.push("actor = :actor");
            request = request.expression_attribute_values(":actor", s(actor.clone()));
        }
        if let Some(action) = &query.action {
            filters.push("#action = :action");
            request = request
                .expression_attribute_names("#action", "action")
                .expression_attribute_values(":action", s(action.clone()));
        }
        if !filters.is_empty() {
            request = request.filter_expression(filters.join(" AND "));
        }
        let mut pages = request.into_paginator().send();
        let mut items = Vec::new();
        let mut last_sk: Option<String> = None;
        while let Some(out) = pages.next().await {
            self.clients.calls.count("dynamodb", "Query (audit)");
            let out = out.map_err(|e| {
                unavailable(
                    &format!("DynamoDB Query on table {} (audit)", self.names.table()),
                    e,
                )
            })?;
            for item in out.items() {
                let sk = item.get("sk").and_then(|v| v.as_s().ok()).cloned();
                // The cursor is exclusive: `BETWEEN` includes it, so it is skipped here.
                if query.cursor.is_some() && sk.as_deref() == Some(high.as_str()) {
                    continue;
                }
                if items.len() == page {
                    return Ok(AuditPage {
                        items,
                        next_cursor: last_sk,
                    });
                }
                let text = item
                    .get("entry")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| PortError::Corrupt("an audit item has no entry".into()))?;
                items.push(serde_json::from_str(text).map_err(|e| {
                    PortError::Corrupt(format!("an audit entry cannot be read: {e}"))
                })?);
                last_sk = sk;
            }
        }
        Ok(AuditPage {
            items,
            next_cursor: None,
        })
    }
}
