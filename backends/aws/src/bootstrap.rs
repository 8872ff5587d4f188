//! Creating every resource of a deployment through the SDK, idempotently: run it twice and
//! the second run finds everything and changes nothing (queue attributes are set again, to
//! converge). Used against a local AWS-compatible server (moto) and by `como-saga infra
//! bootstrap`; a real deployment uses the Terraform under `infra/` (modules, `envs/prod`), which follows
//! the same names and settings.
//!
//! What it makes, for prefix `P` (see [`names`](crate::names)):
//! - SQS standard queues `P-requests`, `P-replies`, `P-commands-crm`,
//!   `P-commands-sevenrooms`, each with `<queue>-dlq` as its redrive target after
//!   `max_receives` receives; SQS-managed server-side encryption on all; the request queue's
//!   policy lets the booking rule send to it.
//! - The DynamoDB table `P-sagas` (on demand) with its `by-status` and `by-due` indexes, TTL on
//!   `expires_at`, and point-in-time recovery where the server has it.
//! - The EventBridge bus `P-bus` and its rule `P-booking-requested` (source `como.booking`,
//!   detail-type `BookingRequested`) with the request queue as target.
//! - The secrets `P/memberson-token`, `P/memberson-credentials`, `P/sevenrooms-credentials`;
//!   a value given in `seed` becomes a secret's current version if it has none (a secret
//!   without a value holds the placeholder `secrets::NO_VALUE`, see `secrets`).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use como_ports::QueueName;
use serde_json::json;

use crate::error::code;
use crate::{AwsConfig, names};

/// What was found and what was made.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BootstrapReport {
    pub created: Vec<String>,
    pub found: Vec<String>,
    /// Settings the server does not support (moto has no point-in-time recovery, say).
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(String);

fn fail(what: &str, e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError(format!("{what}: {e}"))
}

fn sdk_fail<E, R>(what: &str, e: aws_sdk_sqs::error::SdkError<E, R>) -> BootstrapError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    BootstrapError(format!(
        "{what}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

/// Queue attributes every queue gets.
const RETENTION_SECONDS: &str = "1209600";
const VISIBILITY_SECONDS: &str = "30";

/// Create (or find) everything. `seed` gives initial values of secrets by their own name
/// (for example the service credentials); secrets with a current version keep it.
pub async fn bootstrap(
    sdk: &SdkConfig,
    config: &AwsConfig,
    seed: &[(&str, String)],
) -> Result<BootstrapReport, BootstrapError> {
    let names = config.names();
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let mut report = BootstrapReport::default();

    // Queues, each after its dead-letter queue.
    let mut request_queue = (String::new(), String::new());
    for q in QueueName::ALL {
        let dlq_url = ensure_queue(
            &sqs,
            &names.dead_letter_queue(q),
            vec![
                (
                    QueueAttributeName::MessageRetentionPeriod,
                    RETENTION_SECONDS.into(),
                ),
                (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
            ],
            &mut report,
        )
        .await?;
        let dlq_arn = queue_arn(&sqs, &dlq_url).await?;
        let redrive = json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": config.max_receives,
        })
        .to_string();
        let url = ensure_queue(
            &sqs,
            &names.queue(q),
            vec![
                (
                    QueueAttributeName::MessageRetentionPeriod,
                    RETENTION_SECONDS.into(),
                ),
                (
                    QueueAttributeName::VisibilityTimeout,
                    VISIBILITY_SECONDS.into(),
                ),
                (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
                (QueueAttributeName::RedrivePolicy, redrive),
            ],
            &mut report,
        )
        .await?;
        if q == QueueName::Requests {
            let arn = queue_arn(&sqs, &url).await?;
            request_queue = (url, arn);
        }
    }

    ensure_table(&dynamo, &names.table(), &mut report).await?;

    // The bus, the rule, and its target.
    let bus = names.bus();
    match events.create_event_bus().name(&bus).send().await {
        Ok(_) => report.created.push(format!("event bus {bus}")),
        Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {
            report.found.push(format!("event bus {bus}"));
        }
        Err(e) => return Err(sdk_fail("CreateEventBus", e)),
    }
    let pattern = json!({
        "source": [names::BOOKING_SOURCE],
        "detail-type": [names::BOOKING_DETAIL_TYPE],
    })
    .to_string();
    let rule = events
        .put_rule()
        .name(names.booking_rule())
        .event_bus_name(&bus)
        .event_pattern(pattern)
        .state(aws_sdk_eventbridge::types::RuleState::Enabled)
        .description("Booking requests submitted as events go to the request queue")
        .send()
        .await
        .map_err(|e| sdk_fail("PutRule", e))?;
    let rule_arn = rule.rule_arn().unwrap_or_default().to_owned();
    // The whole event goes to the queue; the backend hands over its `detail` on receive
    // (moto does not apply a target's InputPath, AWS would: this way both behave the same).
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id(names::BOOKING_TARGET_ID)
        .arn(&request_queue.1)
        .build()
        .map_err(|e| fail("rule target", e))?;
    let put = events
        .put_targets()
        .rule(names.booking_rule())
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| sdk_fail("PutTargets", e))?;
    if put.failed_entry_count() > 0 {
        return Err(fail("PutTargets", format!("{:?}", put.failed_entries())));
    }
    report.found.push(format!(
        "rule {} -> {}",
        names.booking_rule(),
        request_queue.1
    ));
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "booking-requests-from-eventbridge",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": request_queue.1,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    })
    .to_string();
    sqs.set_queue_attributes()
        .queue_url(&request_queue.0)
        .attributes(QueueAttributeName::Policy, policy)
        .send()
        .await
        .map_err(|e| sdk_fail("SetQueueAttributes (policy)", e))?;

    // Secrets.
    for name in names::SECRETS {
        let id = names.secret(name);
        let exists = match secrets.describe_secret().secret_id(&id).send().await {
            Ok(_) => match secrets.get_secret_value().secret_id(&id).send().await {
                Ok(v) => v.secret_string() != Some(crate::secrets::NO_VALUE),
                Err(e) if code(&e) == Some("ResourceNotFoundException") => false,
                Err(e) => return Err(sdk_fail("GetSecretValue", e)),
            },
            Err(e) if code(&e) == Some("ResourceNotFoundException") => {
                secrets
                    .create_secret()
                    .name(&id)
                    .description("como-saga")
                    .secret_string(crate::secrets::NO_VALUE)
                    .send()
                    .await
                    .map_err(|e| sdk_fail("CreateSecret", e))?;
                report.created.push(format!("secret {id}"));
                false
            }
            Err(e) => return Err(sdk_fail("DescribeSecret", e)),
        };
        if exists {
            report
                .found
                .push(format!("secret {id} (has a current version)"));
            continue;
        }
        if let Some((_, value)) = seed.iter().find(|(n, _)| *n == name) {
            secrets
                .put_secret_value()
                .secret_id(&id)
                .secret_string(value)
                .version_stages("AWSCURRENT")
                .send()
                .await
                .map_err(|e| sdk_fail("PutSecretValue", e))?;
            report.created.push(format!("secret {id}: first version"));
        }
    }
    Ok(report)
}

async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
    report: &mut BootstrapReport,
) -> Result<String, BootstrapError> {
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => {
            let url = out.queue_url().unwrap_or_default().to_owned();
            let mut set = sqs.set_queue_attributes().queue_url(&url);
            for (k, v) in attributes {
                set = set.attributes(k, v);
            }
            set.send()
                .await
                .map_err(|e| sdk_fail("SetQueueAttributes", e))?;
            report.found.push(format!("queue {name}"));
            Ok(url)
        }
        Err(e) if code(&e).is_some_and(|c| c.contains("NonExistentQueue")) => {
            let mut create = sqs.create_queue().queue_name(name);
            for (k, v) in attributes {
                create = create.attributes(k, v);
            }
            let out = create
                .send()
                .await
                .map_err(|e| sdk_fail("CreateQueue", e))?;
            report.created.push(format!("queue {name}"));
            Ok(out.queue_url().unwrap_or_default().to_owned())
        }
        Err(e) => Err(sdk_fail("GetQueueUrl", e)),
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, BootstrapError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_fail("GetQueueAttributes", e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| fail("GetQueueAttributes", format!("no ARN for {url}")))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, BootstrapError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| fail("key schema", e))
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, BootstrapError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| fail("attribute definition", e))
}

fn index(
    name: &str,
    hash: &str,
    range: &str,
    projected: &[&str],
) -> Result<GlobalSecondaryIndex, BootstrapError> {
    let mut projection = Projection::builder().projection_type(if projected.is_empty() {
        ProjectionType::KeysOnly
    } else {
        ProjectionType::Include
    });
    for p in projected {
        projection = projection.non_key_attributes(*p);
    }
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(projection.build())
        .build()
        .map_err(|e| fail("index", e))
}

/// The attributes each index projects besides its keys (the Terraform projects the same):
/// none, so that a write changing only the state costs no index write.
pub const STATUS_INDEX_PROJECTION: [&str; 0] = [];
pub const DUE_INDEX_PROJECTION: [&str; 0] = [];

async fn ensure_table(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    report: &mut BootstrapReport,
) -> Result<(), BootstrapError> {
    match dynamo.describe_table().table_name(table).send().await {
        Ok(_) => report.found.push(format!("table {table}")),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => {
            let mut create = dynamo
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key("pk", KeyType::Hash)?)
                .key_schema(key("sk", KeyType::Range)?)
                .global_secondary_indexes(index(
                    names::STATUS_INDEX,
                    "gs_pk",
                    "gs_sk",
                    &STATUS_INDEX_PROJECTION,
                )?)
                .global_secondary_indexes(index(
                    names::DUE_INDEX,
                    "due_pk",
                    "due_sk",
                    &DUE_INDEX_PROJECTION,
                )?);
            for a in ["pk", "sk", "gs_pk", "gs_sk", "due_pk", "due_sk"] {
                create = create.attribute_definitions(string_attribute(a)?);
            }
            match create.send().await {
                Ok(_) => report.created.push(format!("table {table}")),
                // Created by a bootstrap running beside this one.
                Err(e) if code(&e) == Some("ResourceInUseException") => {
                    report.found.push(format!("table {table}"));
                }
                Err(e) => return Err(sdk_fail("CreateTable", e)),
            }
        }
        Err(e) => return Err(sdk_fail("DescribeTable", e)),
    }
    for _ in 0..120 {
        let d = dynamo
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_fail("DescribeTable", e))?;
        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ttl = dynamo
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_fail("DescribeTimeToLive", e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status())
        .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(names::TTL_ATTRIBUTE)
            .build()
            .map_err(|e| fail("TTL", e))?;
        dynamo
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| sdk_fail("UpdateTimeToLive", e))?;
        report
            .created
            .push(format!("TTL on {table}.{}", names::TTL_ATTRIBUTE));
    }
    let pitr = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .map_err(|e| fail("point-in-time recovery", e))?;
    if let Err(e) = dynamo
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(pitr)
        .send()
        .await
    {
        report.skipped.push(format!(
            "point-in-time recovery on {table}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        ));
    }
    Ok(())
}
