//! Counting AWS API calls by service and operation: what a saga costs is what it calls, so
//! the backend counts every request it makes (`AwsBackend::api_calls`). Counted where each
//! call is made, one per request sent; the SDK's own retries of a throttled request are not
//! counted (AWS bills them too, so under throttling the count is a lower bound).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One line of the count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ApiCall {
    pub service: &'static str,
    pub operation: &'static str,
    pub count: u64,
}

#[derive(Debug, Default)]
pub struct Calls(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl Calls {
    pub fn count(&self, service: &'static str, operation: &'static str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((service, operation)).or_insert(0) += 1;
    }

    /// Adds `n` to a count that is not a call: the write units DynamoDB bills (table and
    /// indexes), estimated where the write is made from the item's size and what changed in
    /// its index keys (moto reports no consumed capacity).
    pub fn add(&self, service: &'static str, what: &'static str, n: u64) {
        if n > 0 {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            *map.entry((service, what)).or_insert(0) += n;
        }
    }

    pub fn snapshot(&self) -> Vec<ApiCall> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(&(service, operation), &count)| ApiCall {
                service,
                operation,
                count,
            })
            .collect()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// List prices in us-east-1, dollars per million: SQS requests (a batch of ten is one), DynamoDB
/// on-demand write and read units (since November 2024), EventBridge events.
pub const SQS_PER_MILLION_REQUESTS: f64 = 0.40;
pub const DYNAMODB_PER_MILLION_WRITE_UNITS: f64 = 0.625;
pub const DYNAMODB_PER_MILLION_READ_UNITS: f64 = 0.125;
pub const EVENTBRIDGE_PER_MILLION_EVENTS: f64 = 1.00;

/// What a saga costs in request fees, from the counts of a run of `sagas` sagas.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    pub sqs_requests: f64,
    pub dynamodb_write_units: f64,
    /// Every DynamoDB read call counted as one unit (consistent reads of items under 4 KB).
    pub dynamodb_read_units: f64,
    pub events: f64,
    /// Dollars per million sagas.
    pub sqs_dollars: f64,
    pub dynamodb_dollars: f64,
    pub eventbridge_dollars: f64,
    pub total_dollars: f64,
}

impl Cost {
    pub fn per_saga(calls: &[ApiCall], sagas: usize) -> Cost {
        let n = sagas.max(1) as f64;
        let sum = |keep: &dyn Fn(&ApiCall) -> bool| {
            calls
                .iter()
                .filter(|c| keep(c))
                .map(|c| c.count as f64)
                .sum::<f64>()
                / n
        };
        let sqs_requests = sum(&|c| c.service == "sqs");
        let dynamodb_write_units = sum(&|c| {
            c.service == "dynamodb"
                && (c.operation == crate::store::TABLE_UNITS
                    || c.operation == crate::store::INDEX_UNITS)
        });
        let dynamodb_read_units = sum(&|c| {
            c.service == "dynamodb"
                && ["GetItem", "Query", "BatchGetItem"]
                    .iter()
                    .any(|op| c.operation.starts_with(op))
        });
        let events = sum(&|c| c.operation == crate::bus::EVENT_ENTRIES);
        let sqs_dollars = sqs_requests * SQS_PER_MILLION_REQUESTS;
        let dynamodb_dollars = dynamodb_write_units * DYNAMODB_PER_MILLION_WRITE_UNITS
            + dynamodb_read_units * DYNAMODB_PER_MILLION_READ_UNITS;
        let eventbridge_dollars = events * EVENTBRIDGE_PER_MILLION_EVENTS;
        Cost {
            sqs_requests,
            dynamodb_write_units,
            dynamodb_read_units,
            events,
            sqs_dollars,
            dynamodb_dollars,
            eventbridge_dollars,
            total_dollars: sqs_dollars + dynamodb_dollars + eventbridge_dollars,
        }
    }
}
