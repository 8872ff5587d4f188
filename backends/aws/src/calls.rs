//! Counting AWS API calls by service and operation: what a saga costs is what it calls, so
//! the backend counts every request it makes (`AwsBackend::api_calls`). Counted where each
//! call is made, one per request sent. The SDK's own retries (of a throttled, failed or
//! timed-out attempt) are counted apart, by service, as [`SDK_RETRIES`] (AWS bills them too).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One line of the count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ApiCall {
    pub service: &'static str,
    pub operation: &'static str,
    pub count: u64,
}

/// The counts; clones share them.
#[derive(Debug, Default, Clone)]
pub struct Calls(Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>);

/// What the SDK's retries are counted as, under each service.
pub const SDK_RETRIES: &str = "retries (SDK)";

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

/// Counts each retry the SDK makes (an attempt after the first: the `amz-sdk-request` header
/// the SDK sends says `attempt=N; max=M`) under the client's service, says each at debug, and
/// at warn the first one and then at most one line every [`RETRY_WARN_EVERY`] with the count
/// since the last line and what the last failed attempt got.
#[derive(Debug)]
pub struct CountRetries {
    service: &'static str,
    calls: Calls,
    state: Mutex<RetryLog>,
}

#[derive(Debug, Default)]
struct RetryLog {
    /// What the last failed attempt got: an HTTP status, or no answer.
    last_failure: String,
    warned_at: Option<std::time::Instant>,
    unsaid: u64,
}

/// At most one warning this often about a service's calls being retried.
pub const RETRY_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl CountRetries {
    pub fn new(service: &'static str, calls: Calls) -> Self {
        Self {
            service,
            calls,
            state: Mutex::new(RetryLog::default()),
        }
    }
}

impl aws_sdk_dynamodb::config::Intercept for CountRetries {
    fn name(&self) -> &'static str {
        "CountRetries"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let headers = context.request().headers();
        let attempt = headers
            .get("amz-sdk-request")
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("attempt=")))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1);
        if attempt <= 1 {
            return Ok(());
        }
        self.calls.count(self.service, SDK_RETRIES);
        let operation = headers
            .get("x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map_or("", |(_, op)| op);
        tracing::debug!(
            service = self.service,
            operation,
            attempt,
            "the SDK retries a call"
        );
        let mut log = self.state.lock().unwrap_or_else(|p| p.into_inner());
        log.unsaid += 1;
        if log
            .warned_at
            .is_none_or(|at| at.elapsed() >= RETRY_WARN_EVERY)
        {
            tracing::warn!(
                service = self.service,
                operation,
                retries = log.unsaid,
                last_failure = %log.last_failure,
                "AWS calls are being retried (throttling, 5xx, no answer in time or a broken connection); a call still failing after its retries is reported by its caller"
            );
            log.warned_at = Some(std::time::Instant::now());
            log.unsaid = 0;
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if matches!(context.output_or_error(), Some(Err(_))) {
            let got = context.response().map_or_else(
                || "no answer (a timeout or a broken connection)".to_owned(),
                |r| format!("HTTP {}", r.status().as_u16()),
            );
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_failure = got;
        }
        Ok(())
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
