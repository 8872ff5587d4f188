//! The audit list on the `audit` table: written through the writer like everything else,
//! listed by a read connection, newest first.

use async_trait::async_trait;
use como_ports::{AuditEntry, AuditLog, AuditPage, AuditQuery, PortError, PortResult};
use rusqlite::types::Value;

use crate::EmbeddedPorts;
use crate::codec::{self, db_error, json_error};
use crate::ops::Op;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1_000;

#[async_trait]
impl AuditLog for EmbeddedPorts {
    async fn record(&self, entry: &AuditEntry) -> PortResult<()> {
        let text = serde_json::to_string(entry)
            .map_err(|e| PortError::Invalid(format!("cannot encode the audit entry: {e}")))?;
        self.writer
            .submit(Op::RecordAudit {
                id: entry.id.clone(),
                at: entry.at.as_millis(),
                actor: entry.actor.clone(),
                action: entry.action.clone(),
                entry: text,
            })
            .await?
            .done()
    }

    async fn list(&self, query: &AuditQuery) -> PortResult<AuditPage> {
        let page = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut filter = String::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(actor) = &query.actor {
            codec::bind(
                &mut args,
                &mut filter,
                " AND actor = ?",
                Value::Text(actor.clone()),
            );
        }
        if let Some(action) = &query.action {
            codec::bind(
                &mut args,
                &mut filter,
                " AND action = ?",
                Value::Text(action.clone()),
            );
        }
        if let Some(from) = query.from {
            codec::bind(
                &mut args,
                &mut filter,
                " AND at >= ?",
                Value::Integer(from.as_millis()),
            );
        }
        if let Some(until) = query.until {
            codec::bind(
                &mut args,
                &mut filter,
                " AND at < ?",
                Value::Integer(until.as_millis()),
            );
        }
        if let Some(cursor) = &query.cursor {
            let invalid = || PortError::Invalid(format!("{cursor:?} is not a cursor of this list"));
            let (at, seq) = cursor.split_once('.').ok_or_else(invalid)?;
            let at: i64 = at.parse().map_err(|_| invalid())?;
            let seq: i64 = seq.parse().map_err(|_| invalid())?;
            args.push(Value::Integer(at));
            args.push(Value::Integer(seq));
            filter.push_str(&format!(
                " AND (at, seq) < (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(Value::Integer(i64::try_from(page + 1).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT at, seq, entry FROM audit WHERE 1 = 1{filter} ORDER BY at DESC, seq DESC LIMIT ?{}",
            args.len()
        );
        self.readers
            .scan(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(args))
                    .map_err(db_error)?;
                let mut items = Vec::new();
                let mut last = None;
                while let Some(row) = rows.next().map_err(db_error)? {
                    if items.len() == page {
                        let next = last.map(|(at, seq): (i64, i64)| format!("{at}.{seq}"));
                        return Ok(AuditPage {
                            items,
                            next_cursor: next,
                        });
                    }
                    let at: i64 = row.get(0).map_err(db_error)?;
                    let seq: i64 = row.get(1).map_err(db_error)?;
                    let text: String = row.get(2).map_err(db_error)?;
                    items.push(serde_json::from_str(&text).map_err(json_error("audit entry"))?);
                    last = Some((at, seq));
                }
                Ok(AuditPage {
                    items,
                    next_cursor: None,
                })
            })
            .await
    }
}
