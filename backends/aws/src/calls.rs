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
