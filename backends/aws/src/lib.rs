//! The AWS backend: the ports on SQS, DynamoDB, EventBridge and Secrets Manager, with the
//! same semantics as the embedded backend (the same conformance suites pass against both).
//!
//! ```no_run
//! # async fn demo() -> Result<(), como_backend_aws::ConnectError> {
//! use como_backend_aws::{AwsBackend, AwsConfig};
//!
//! // The SDK's standard configuration: AWS_REGION, credentials, and AWS_ENDPOINT_URL to point
//! // at a local AWS-compatible server. The resources exist (`como-saga infra bootstrap`).
//! let backend = AwsBackend::connect(AwsConfig::default()).await?;
//! let ports = backend.ports(); // como_ports::Backend
//! // ... run the orchestrator and workers on `ports` ...
//! println!("{:?}", backend.api_calls()); // AWS requests made, by service and operation
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`names`]: every resource name, in one place (the Terraform follows the same rules).
//! - [`bootstrap`]: creates every resource idempotently through the SDK.
//! - `queue`: SQS (long polling, batches of 10, delays, redrive policies, dead letters with
//!   reasons, redrive by hand); `batch`: sends and deletes of concurrent callers coalesced
//!   into batches.
//! - `store` and `outbox`: the saga store on one DynamoDB table; a write keeps its effects in
//!   an outbox until they are carried out (see `docs/aws.md`).
//! - `records`: idempotency records on the same table.
//! - `bus`: lifecycle events on EventBridge (milestones only by default).
//! - `secrets`: Secrets Manager with its AWSCURRENT / AWSPENDING staging labels.
//! - `calls`: counts of the API calls made, by service and operation, and of the SDK's retries.
//! - `error`: SDK errors as port errors that name the service, the operation and the resource.
//!
//! How the SDK retries and times out each kind of call is [`CallPolicy`] (in [`AwsConfig`]),
//! applied to every client the backend builds; what the backend does when AWS itself fails
//! (throttling, 5xx, slow answers, resets, lost answers, partial batches) is in `docs/aws.md`,
//! "When AWS itself fails".
//! - [`testing`] (feature `moto`): a local moto server for tests.

mod audit;
mod batch;
pub mod bootstrap;
mod bus;
mod calls;
mod error;
pub mod names;
mod outbox;
mod queue;
mod records;
pub(crate) mod secrets;
mod store;
#[cfg(feature = "moto")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use como_ports::{Backend, Clock, QueueName, SystemClock};

pub use calls::{ApiCall, Cost, SDK_RETRIES};
pub use names::Names;

/// Which lifecycle events go out on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSelection {
    /// How each saga ends (confirmed, failed, compensated, needs an operator): one event for a
    /// saga that goes through, at $1 per million events.
    #[default]
    Outcomes,
    /// The outcomes and `SagaStarted`.
    Milestones,
    /// Every event, `StepCompleted` included.
    All,
}

/// How the AWS backend is set up.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The prefix of every resource name (see [`names`]).
    pub prefix: String,
    /// Overrides of the SDK's standard configuration; unset, the environment decides
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...).
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// How many times a message may be received before SQS moves it to its dead-letter queue
    /// (the redrive policy's `maxReceiveCount`; used by the bootstrap).
    pub max_receives: u32,
    /// How long a finished saga is kept before DynamoDB's TTL removes it.
    pub retention: Duration,
    /// How long history items are kept after they are written: longer than a saga stays open
    /// plus `retention`.
    pub history_retention: Duration,
    /// How long an idempotency record is kept: longer than a command can be redelivered.
    pub record_retention: Duration,
    /// How long after a write its outbox may still be in delivery before a sweep re-sends it.
    pub outbox_grace: Duration,
    /// Partitions of each index key, so that no single status is a hot partition.
    pub index_shards: u8,
    /// After a look for due timers found none, the next look waits this long (the
    /// orchestrator asks every 100 ms; SQS and DynamoDB count in seconds anyway).
    pub due_poll: Duration,
    pub events: EventSelection,
    /// How long a send, a delete or a receive waits for company when its batch would not be
    /// full: SQS bills a batch of ten as one request. Deletes are off the saga's path (its
    /// next command is already out), so they wait longest; a receive that found less than a
    /// full batch waits this long before the next, letting messages gather.
    pub send_linger: Duration,
    pub delete_linger: Duration,
    pub receive_linger: Duration,
    /// How the SDK retries and times out each kind of call, and how often the failed entries
    /// of a batch are tried again.
    pub calls: CallPolicy,
}

/// How calls to AWS are retried and timed out, by kind of call (see `docs/aws.md`, "When AWS
/// itself fails", for why these numbers).
///
/// The SDK's **standard** retry mode: exponential backoff with full jitter on throttling,
/// 5xx, timeouts and broken connections, and a retry quota (a token bucket per service and
/// deployment) that stops retrying while most calls fail, so that an outage is not made worse by
/// retry storms. Not adaptive mode: its client-side rate limiter is shared by every call to a
/// service from the process, so one throttled partition (one hot saga) would slow every other
/// call to the table, the workers' record look-ups included, and it delays first attempts too;
/// the callers here already bound their own rate (batches, the consumer pumps' concurrency), and
/// a call that still fails after its retries is tried again by its caller (the message comes
/// back).
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Attempts of one call, the first included (5).
    pub max_attempts: u32,
    /// The backoff before the n-th retry is a random share of `initial_backoff × 2ⁿ⁻¹` (200 ms),
    /// at most `max_backoff` (5 s): at most 3 s over four retries, 1.5 s on average.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Opening a connection (1 s).
    pub connect_timeout: Duration,
    /// One attempt, and the whole call with its retries, of a call on one item or one batch:
    /// DynamoDB `GetItem`, `PutItem`, `UpdateItem`; SQS sends, deletes and visibility changes;
    /// EventBridge `PutEvents`; Secrets Manager (3 s and 10 s: they answer in milliseconds, an
    /// attempt without an answer in 3 s is a dead connection or a stuck server).
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    /// The same for a call that reads a page of up to 1 MB: DynamoDB `Query`, `BatchGetItem`
    /// (10 s and 30 s).
    pub page_attempt_timeout: Duration,
    pub page_operation_timeout: Duration,
    /// An SQS long poll waits up to its wait time (up to 20 s) for messages: its attempt may
    /// take that long plus this (5 s); the whole call its wait plus `operation_timeout`.
    pub poll_margin: Duration,
    /// Tries of the entries a batch call reports failed (SQS `SendMessageBatch`,
    /// `DeleteMessageBatch`, EventBridge `PutEvents`), the first included; only the failed
    /// entries are sent again, after `entry_backoff`, doubled each time, half of it random (4
    /// tries, 100 ms).
    pub entry_attempts: u32,
    pub entry_backoff: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
            page_attempt_timeout: Duration::from_secs(10),
            page_operation_timeout: Duration::from_secs(30),
            poll_margin: Duration::from_secs(5),
            entry_attempts: 4,
            entry_backoff: Duration::from_millis(100),
        }
    }
}

impl CallPolicy {
    /// The SDK's retry configuration: standard mode, these attempts and backoffs.
    pub fn retry_config(&self) -> aws_sdk_dynamodb::config::retry::RetryConfig {
        aws_sdk_dynamodb::config::retry::RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// Timeouts of one attempt and of the whole call.
    pub fn timeouts(
        &self,
        attempt: Duration,
        operation: Duration,
    ) -> aws_sdk_dynamodb::config::timeout::TimeoutConfig {
        aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation)
            .build()
    }

    /// The timeouts of a long poll that waits `wait`.
    pub fn poll_timeouts(
        &self,
        wait: Duration,
    ) -> aws_sdk_dynamodb::config::timeout::TimeoutConfig {
        self.timeouts(
            wait + self.poll_margin,
            wait + self.poll_margin.max(self.operation_timeout),
        )
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            prefix: names::DEFAULT_PREFIX.to_owned(),
            endpoint_url: None,
            region: None,
            max_receives: 10,
            retention: Duration::from_secs(30 * 24 * 3600),
            history_retention: Duration::from_secs(120 * 24 * 3600),
            record_retention: Duration::from_secs(7 * 24 * 3600),
            outbox_grace: Duration::from_secs(30),
            index_shards: 4,
            due_poll: Duration::from_secs(1),
            events: EventSelection::Outcomes,
            send_linger: Duration::from_millis(20),
            delete_linger: Duration::from_millis(200),
            receive_linger: Duration::from_millis(100),
            calls: CallPolicy::default(),
        }
    }
}

impl AwsConfig {
    pub fn names(&self) -> Names {
        Names::new(self.prefix.clone())
    }

    /// The SDK's standard configuration with this config's overrides, and the retries and
    /// timeouts of [`CallPolicy`] (the backend's clients apply them again by kind of call).
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(self.calls.retry_config())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(self.calls.connect_timeout)
                    .build(),
            );
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        loader.load().await
    }
}

/// Why the backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "the {what} {name} was not found ({detail}); create the resources with `como-saga infra bootstrap --backend aws`"
    )]
    Missing {
        what: &'static str,
        name: String,
        detail: String,
    },
    #[error("{0}")]
    Service(String),
}

/// The SDK clients and what the ports share.
pub(crate) struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    /// DynamoDB calls on one item (or a few): `GetItem`, `PutItem`, `UpdateItem`.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// DynamoDB calls that read a page: `Query`, `BatchGetItem` (longer timeouts).
    pub dynamo_pages: aws_sdk_dynamodb::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub calls: calls::Calls,
    pub policy: CallPolicy,
}

impl Clients {
    /// The clients of `sdk` with `config`'s retries and timeouts (see [`CallPolicy`]), each
    /// service with a retry quota of its own for this deployment, and the SDK's retries
    /// counted.
    fn new(sdk: &SdkConfig, config: &AwsConfig) -> Self {
        use aws_sdk_dynamodb::config::retry::RetryPartition;
        let policy = &config.calls;
        let calls = calls::Calls::default();
        let retry = policy.retry_config();
        let items = policy.timeouts(policy.attempt_timeout, policy.operation_timeout);
        let pages = policy.timeouts(policy.page_attempt_timeout, policy.page_operation_timeout);
        let partition =
            |service: &str| RetryPartition::new(format!("como-{}-{service}", config.prefix));
        let count = |service: &'static str| calls::CountRetries::new(service, calls.clone());
        // A client of the SDK crate `$sdk` for `$service`, with these retries, quota and count.
        macro_rules! client {
            ($sdk:ident, $service:literal, $timeouts:expr) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(sdk)
                        .retry_config(retry.clone())
                        .timeout_config($timeouts)
                        .retry_partition(partition($service))
                        .interceptor(count($service))
                        .build(),
                )
            };
        }
        Self {
            sqs: client!(aws_sdk_sqs, "sqs", items.clone()),
            dynamo: client!(aws_sdk_dynamodb, "dynamodb", items.clone()),
            dynamo_pages: client!(aws_sdk_dynamodb, "dynamodb", pages),
            events: client!(aws_sdk_eventbridge, "eventbridge", items.clone()),
            secrets: client!(aws_sdk_secretsmanager, "secretsmanager", items),
            calls,
            policy: policy.clone(),
        }
    }
}

/// Every port on AWS, shared by the [`Backend`]'s handles.
pub struct AwsPorts {
    pub(crate) clients: Arc<Clients>,
    pub(crate) config: AwsConfig,
    pub(crate) names: Names,
    pub(crate) queues: queue::Queues,
    pub(crate) bus: bus::BusState,
    pub(crate) store: store::StoreState,
    pub(crate) clock: Arc<dyn Clock>,
}

/// The AWS backend.
pub struct AwsBackend {
    ports: Arc<AwsPorts>,
    sdk: SdkConfig,
}

impl AwsBackend {
    /// Connect with the SDK's standard configuration (and the overrides in `config`). The
    /// resources must exist: see [`bootstrap`].
    pub async fn connect(config: AwsConfig) -> Result<Self, ConnectError> {
        let sdk = config.sdk_config().await;
        Self::connect_with(&sdk, config).await
    }

    /// Connect with an SDK configuration built by the caller.
    pub async fn connect_with(sdk: &SdkConfig, config: AwsConfig) -> Result<Self, ConnectError> {
        let clients = Arc::new(Clients::new(sdk, &config));
        let names = config.names();
        let queues = queue::Queues::resolve(&clients, &names, &config).await?;
        store::check_table(&clients, &names).await?;
        let ports = AwsPorts {
            bus: bus::BusState::new(),
            store: store::StoreState::default(),
            queues,
            names,
            config,
            clients,
            clock: Arc::new(SystemClock),
        };
        Ok(Self {
            ports: Arc::new(ports),
            sdk: sdk.clone(),
        })
    }

    /// The ports, as the runtime holds them.
    pub fn ports(&self) -> Backend {
        Backend {
            queue: self.ports.clone(),
            store: self.ports.clone(),
            records: self.ports.clone(),
            bus: self.ports.clone(),
            secrets: self.ports.clone(),
            audit: self.ports.clone(),
            clock: Arc::clone(&self.ports.clock),
            vault: Arc::new(como_ports::NoKeys),
        }
    }

    /// The SDK configuration the backend's clients were built from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn names(&self) -> &Names {
        &self.ports.names
    }

    /// The AWS requests this backend has made since it connected (or was last reset), by
    /// service and operation.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.ports.clients.calls.snapshot()
    }

    pub fn reset_api_calls(&self) {
        self.ports.clients.calls.reset();
    }

    /// The queue a port name maps to (for tools that send to SQS directly).
    pub fn queue_url(&self, queue: QueueName) -> &str {
        self.ports.queues.url(queue)
    }
}
