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
//! - `calls`: counts of the API calls made, by service and operation.
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

pub use calls::{ApiCall, Cost};
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
        }
    }
}

impl AwsConfig {
    pub fn names(&self) -> Names {
        Names::new(self.prefix.clone())
    }

    /// The SDK's standard configuration with this config's overrides.
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
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
    pub dynamo: aws_sdk_dynamodb::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub calls: calls::Calls,
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
        let clients = Arc::new(Clients {
            sqs: aws_sdk_sqs::Client::new(sdk),
            dynamo: aws_sdk_dynamodb::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            calls: calls::Calls::default(),
        });
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
