//! How port values are spelled in rows, and back. Everything read from the file is treated as
//! outside input: a value that does not decode is `PortError::Corrupt`, never a panic.

use std::collections::BTreeMap;

use como_ports::{PortError, QueueName, Receipt};
use como_schemas::{SagaId, Worker};
use uuid::Uuid;

/// Adds `clause` to a query's `filter` with its `?` bound to `value` as the next numbered
/// parameter (each `?` in the clause the same one).
pub fn bind(
    args: &mut Vec<rusqlite::types::Value>,
    filter: &mut String,
    clause: &str,
    value: rusqlite::types::Value,
) {
    args.push(value);
    filter.push_str(&clause.replace('?', &format!("?{}", args.len())));
}

/// The code a queue is stored under. Fixed per queue, never derived from an ordering, so that
/// reordering `QueueName::ALL` cannot move messages between queues.
pub fn queue_code(queue: QueueName) -> u8 {
    match queue {
        QueueName::Requests => 1,
        QueueName::Replies => 2,
        QueueName::Commands(Worker::Crm) => 3,
        QueueName::Commands(Worker::Sevenrooms) => 4,
        QueueName::Notifications => 5,
    }
}

/// How many queue codes there are; codes run from 1 to this.
pub const QUEUES: usize = 5;

/// Where a queue's entry is in per-queue arrays: its code - 1.
pub fn queue_index(queue: QueueName) -> usize {
    usize::from(queue_code(queue)) - 1
}

/// The queue at `index` in per-queue arrays.
pub fn queue_of_index(index: usize) -> QueueName {
    QueueName::ALL
        .into_iter()
        .find(|q| queue_index(*q) == index)
        .unwrap_or_else(|| unreachable!("per-queue arrays have QUEUES entries, one per queue"))
}

pub fn queue_of_code(code: i64) -> Result<QueueName, PortError> {
    QueueName::ALL
        .into_iter()
        .find(|q| i64::from(queue_code(*q)) == code)
        .ok_or_else(|| PortError::Corrupt(format!("unknown queue code {code}")))
}

/// A receipt names one lease of one message: the message's id and the random token the lease
/// was given. A newer receive draws a new token, which makes older receipts stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptKey {
    pub id: i64,
    pub token: i64,
}

impl ReceiptKey {
    pub fn receipt(&self) -> Receipt {
        // The token's bits as unsigned hex: a fixed width and no sign to trip on.
        Receipt(format!("{}.{:016x}", self.id, self.token.cast_unsigned()))
    }

    pub fn parse(receipt: &Receipt) -> Result<Self, PortError> {
        let invalid = || PortError::Invalid(format!("{:?} is not a receipt", receipt.0));
        let (id, token) = receipt.0.split_once('.').ok_or_else(invalid)?;
        let id = id.parse::<i64>().map_err(|_| invalid())?;
        let token = u64::from_str_radix(token, 16).map_err(|_| invalid())?;
        Ok(Self {
            id,
            token: token.cast_signed(),
        })
    }
}

/// Message attributes as JSON, NULL when there are none (most messages), to keep rows small.
pub fn encode_attributes(attributes: &BTreeMap<String, String>) -> Option<String> {
    if attributes.is_empty() {
        None
    } else {
        // A map of strings always serialises.
        serde_json::to_string(attributes).ok()
    }
}

pub fn decode_attributes(text: Option<&str>) -> Result<BTreeMap<String, String>, PortError> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| PortError::Corrupt(format!("message attributes: {e}"))),
    }
}

pub fn saga_key(id: SagaId) -> [u8; 16] {
    id.as_uuid().into_bytes()
}

pub fn saga_of_key(bytes: &[u8]) -> Result<SagaId, PortError> {
    Uuid::from_slice(bytes)
        .map(SagaId::from_uuid)
        .map_err(|_| PortError::Corrupt(format!("a saga id of {} bytes", bytes.len())))
}

/// A count or version read from the file.
pub fn unsigned(what: &str, v: i64) -> Result<u64, PortError> {
    u64::try_from(v).map_err(|_| PortError::Corrupt(format!("{what} is negative: {v}")))
}

/// A duration as the whole milliseconds the tables count in.
pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A count or limit from a caller, as SQLite takes it.
pub fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Maps a SQLite error: what comes from reading a row is corrupt data, the rest means the
/// file cannot be used right now.
pub fn db_error(e: rusqlite::Error) -> PortError {
    use rusqlite::Error as E;
    match e {
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => PortError::Corrupt(e.to_string()),
        E::SqliteFailure(code, _) if code.code == rusqlite::ErrorCode::DatabaseCorrupt => {
            PortError::Corrupt(e.to_string())
        }
        other => PortError::Unavailable(format!("sqlite: {other}")),
    }
}

pub fn json_error(what: &str) -> impl Fn(serde_json::Error) -> PortError + '_ {
    move |e| PortError::Corrupt(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_refuse_what_is_not_one() {
        for token in [0, 1, -1, i64::MIN, i64::MAX] {
            let key = ReceiptKey { id: 42, token };
            assert_eq!(ReceiptKey::parse(&key.receipt()).unwrap(), key);
        }
        for bad in ["", "42", "x.1", "42.zz", "42.1.2"] {
            assert!(matches!(
                ReceiptKey::parse(&Receipt(bad.into())),
                Err(PortError::Invalid(_))
            ));
        }
    }

    #[test]
    fn queue_codes_are_distinct_and_decode() {
        for q in QueueName::ALL {
            assert_eq!(queue_of_code(i64::from(queue_code(q))).unwrap(), q);
            assert!(usize::from(queue_code(q)) <= QUEUES);
        }
        assert!(matches!(queue_of_code(9), Err(PortError::Corrupt(_))));
    }
}
