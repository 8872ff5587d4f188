//! Faults below the engine: the AWS backend against moto through the fault-injecting proxy
//! (`como_simulators::aws_proxy`). One test per fault: throttling, 5xx, slow answers, resets,
//! lost answers, partial batches. Each checks what a caller sees when the fault outlasts the
//! retries (an error that names the service, the operation and the resource), that nothing
//! acknowledged is lost and no effect is doubled (messages, versions, events counted straight
//! on moto), and that the call goes through once the fault clears.
//!
//! Every test has a deployment of its own (`testing::fresh`, on moto directly) and a proxy of
//! its own; the backend under test talks to moto through the proxy, the checks talk to moto
//! directly.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use como_backend_aws::{AwsBackend, AwsConfig, CallPolicy, EventSelection, SDK_RETRIES, testing};
use como_engine::{HistoryEntry, SagaState};
use como_ports::{
    Backend, CreateOutcome, Delivery, Effects, OutgoingMessage, PortError, PortResult, QueueName,
    Receipt, UpdateOutcome,
};
use como_schemas::{SagaEvent, Worker};
use como_simulators::aws_proxy::{AwsFaultProxy, Fault, Rule};

use common::{bodies, started};

const CRM: QueueName = QueueName::Commands(Worker::Crm);

/// Short timeouts and few attempts, so that a fault outlasts the retries in a few seconds.
fn policy() -> CallPolicy {
    CallPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_millis(1_500),
        operation_timeout: Duration::from_secs(5),
        page_attempt_timeout: Duration::from_secs(2),
        page_operation_timeout: Duration::from_secs(6),
        poll_margin: Duration::from_secs(2),
        entry_attempts: 3,
        entry_backoff: Duration::from_millis(20),
    }
}

fn config() -> AwsConfig {
    AwsConfig {
        due_poll: Duration::ZERO,
        events: EventSelection::All,
        // Long enough that concurrent sends share a batch.
        send_linger: Duration::from_millis(100),
        delete_linger: Duration::from_millis(20),
        calls: policy(),
        ..AwsConfig::default()
    }
}

/// A deployment, the backend under test (through the proxy) and one that looks (directly).
struct Rig {
    proxy: AwsFaultProxy,
    backend: AwsBackend,
    direct: AwsBackend,
    sdk: SdkConfig,
}

impl Rig {
    async fn new(name: &str, seed: u64) -> Rig {
        let (direct, sdk) = testing::fresh(name, config()).await.expect("a deployment");
        let proxy = AwsFaultProxy::start(&testing::moto().endpoint, seed)
            .await
            .expect("the proxy");
        let proxied = testing::sdk_config(&proxy.endpoint()).await;
        let backend = AwsBackend::connect_with(
            &proxied,
            AwsConfig {
                prefix: direct.names().prefix().to_owned(),
                ..config()
            },
        )
        .await
        .expect("connect through the proxy");
        Rig {
            proxy,
            backend,
            direct,
            sdk,
        }
    }

    fn ports(&self) -> Backend {
        self.backend.ports()
    }

    fn look(&self) -> Backend {
        self.direct.ports()
    }

    fn table(&self) -> String {
        self.direct.names().table()
    }

    fn queue(&self, q: QueueName) -> String {
        self.direct.names().queue(q)
    }

    /// Every message on `queue` now, read directly (and hidden for a minute).
    async fn drain(&self, queue: QueueName) -> Vec<String> {
        bodies(&self.look(), queue).await
    }

    /// The saga's version as stored.
    async fn version(&self, state: &SagaState) -> Option<u64> {
        self.look()
            .store
            .get(state.saga_id)
            .await
            .expect("read directly")
            .map(|v| v.version)
    }

    /// The SDK retries the backend under test made, by service.
    fn sdk_retries(&self, service: &str) -> u64 {
        self.backend
            .api_calls()
            .iter()
            .find(|c| c.service == service && c.operation == SDK_RETRIES)
            .map_or(0, |c| c.count)
    }

    /// From now on, every `service` `operation` call through the proxy meets `fault`.
    fn fail(&self, service: &str, operation: &str, fault: Fault) {
        self.proxy.set_rules(vec![rule(service, operation, fault)]);
    }

    /// The next `n` `service` `operation` calls through the proxy meet `fault`; then they go
    /// through.
    fn fail_next(&self, n: u64, service: &str, operation: &str, fault: Fault) {
        self.proxy
            .set_rules(vec![rule(service, operation, fault).times(n)]);
    }

    /// Create `state` through the proxy with its start's `events` and `history` and one
    /// command, `c1`: created as version 1, and `c1` sent.
    async fn create(&self, state: &SagaState, events: Vec<SagaEvent>, history: &[HistoryEntry]) {
        let effects = Effects {
            events,
            history: history.to_vec(),
            ..sends(&["c1"])
        };
        let created = self.ports().store.create(state, effects).await.unwrap();
        assert_eq!(created, CreateOutcome::Created { version: 1 });
        assert_eq!(self.drain(CRM).await, [body("c1")]);
    }

    /// Update `state` through the proxy from version `from`: updated, and stored as
    /// version `from + 1`.
    async fn updated(&self, state: &SagaState, from: u64, effects: Effects) {
        let out = self
            .ports()
            .store
            .update(state, from, effects)
            .await
            .unwrap();
        assert_eq!(out, UpdateOutcome::Updated { version: from + 1 });
        assert_eq!(self.version(state).await, Some(from + 1));
    }

    /// Update `state` through the proxy from version `from`: an `Unavailable` error whose text
    /// holds each of `needles`, and nothing written (stored as version `from` still).
    async fn refused(&self, state: &SagaState, from: u64, effects: Effects, needles: &[&str]) {
        let out = self.ports().store.update(state, from, effects).await;
        assert_unavailable(out, needles);
        assert_eq!(self.version(state).await, Some(from));
    }
}

/// A rule for every `service` `operation` call.
fn rule(service: &str, operation: &str, fault: Fault) -> Rule {
    Rule::new(service, Some(operation), fault)
}

/// The next transition of `state`, with its history entries.
fn next(state: &SagaState, history: &[HistoryEntry]) -> (SagaState, Vec<HistoryEntry>) {
    let mut s = state.clone();
    s.transitions += 1;
    let mut h = history.to_vec();
    for e in &mut h {
        e.transition = s.transitions;
    }
    (s, h)
}

fn command(id: &str) -> OutgoingMessage {
    OutgoingMessage::new(format!(r#"{{"command_id":"{id}"}}"#))
}

fn body(id: &str) -> String {
    format!(r#"{{"command_id":"{id}"}}"#)
}

fn commands(ids: &[String]) -> Vec<OutgoingMessage> {
    ids.iter().map(|id| command(id)).collect()
}

fn receipts(got: Vec<Delivery>) -> Vec<Receipt> {
    got.into_iter().map(|d| d.receipt).collect()
}

fn sends(ids: &[&str]) -> Effects {
    Effects {
        sends: ids.iter().map(|id| (CRM, command(id))).collect(),
        ..Effects::default()
    }
}

/// The effects of a write brought by the reply to command `answers` (which proves the
/// previous write's single command delivered, as in the orchestrator's loop).
fn reply_to(answers: &str, ids: &[&str], history: Vec<HistoryEntry>) -> Effects {
    Effects {
        history,
        answers: Some(answers.to_owned()),
        ..sends(ids)
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `r` is an `Unavailable` error whose text holds each of `needles`.
fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, PortError>, needles: &[&str]) {
    let text = match r {
        Err(e @ PortError::Unavailable(_)) => {
            // What a caller (and the log) sees: shown with --nocapture.
            println!("caller sees: {e}");
            e.to_string()
        }
        other => panic!("expected an Unavailable error, got {other:?}"),
    };
    for n in needles {
        assert!(text.contains(n), "{n:?} not in: {text}");
    }
}

/// One receive from `queue` through `ports` (waiting up to a second), and a delete of what
/// came: the bodies of what came.
async fn consume(
    ports: &Backend,
    queue: QueueName,
    visibility: Duration,
) -> PortResult<Vec<String>> {
    let got = ports
        .queue
        .receive(queue, 10, visibility, Duration::from_secs(1))
        .await?;
    let bodies = got.iter().map(|d| d.body.clone()).collect();
    ports.queue.delete(queue, receipts(got)).await.unwrap();
    Ok(bodies)
}

/// Send a command for each of `ids` to CRM through `ports`, and receive them all (hidden for
/// a second).
async fn sent_and_received(ports: &Backend, ids: &[String]) -> Vec<Delivery> {
    ports.queue.send(CRM, commands(ids)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < ids.len() {
        got.extend(
            ports
                .queue
                .receive(CRM, 10, Duration::from_secs(1), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    got
}

/// A queue that receives every event put on the deployment's bus (a rule on `como.saga`),
/// read straight from moto: what EventBridge took, each copy counted.
struct EventProbe {
    url: String,
    sqs: aws_sdk_sqs::Client,
}

impl EventProbe {
    async fn new(rig: &Rig) -> EventProbe {
        let sqs = aws_sdk_sqs::Client::new(&rig.sdk);
        let events = aws_sdk_eventbridge::Client::new(&rig.sdk);
        let name = format!("{}-probe", rig.direct.names().prefix());
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .unwrap();
        let bus = rig.direct.names().bus();
        events
            .put_rule()
            .name(&name)
            .event_bus_name(&bus)
            .event_pattern(r#"{"source":["como.saga"]}"#)
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .rule(&name)
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("probe")
                    .arn(arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        EventProbe { url, sqs }
    }

    /// The event ids put on the bus since the last look, each copy once.
    async fn ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap();
            if got.messages().is_empty() {
                out.sort();
                return out;
            }
            for m in got.messages() {
                let v: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
                out.push(v["detail"]["event_id"].as_str().unwrap().to_owned());
            }
        }
    }
}

fn ids(events: &[SagaEvent]) -> Vec<String> {
    sorted(events.iter().map(|e| e.event_id.clone()).collect())
}

/// DynamoDB throttling (`ProvisionedThroughputExceededException`, `ThrottlingException`):
/// retried by the SDK with backoff (and counted); past the retries, an error that names the
/// table and the code, nothing written; through again once the throttling stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_dynamodb_writes_and_reads() {
    let rig = Rig::new("throttle", 1).await;
    let ports = rig.ports();
    let table = rig.table();
    let (state, events, history) = started("throttle-1");

    // Throttled twice, through on the third attempt.
    rig.fail_next(
        2,
        "dynamodb",
        "PutItem",
        Fault::ProvisionedThroughputExceeded,
    );
    rig.create(&state, events, &history).await;
    assert!(
        rig.sdk_retries("dynamodb") >= 2,
        "{:?}",
        rig.backend.api_calls()
    );

    // Throttled past the retries: a clear error, and nothing written.
    rig.fail("dynamodb", "PutItem", Fault::ProvisionedThroughputExceeded);
    let (v2, h2) = next(&state, &history);
    rig.refused(
        &v2,
        1,
        reply_to("c1", &["c2"], vec![]),
        &[
            &format!("DynamoDB PutItem on table {table}"),
            "ProvisionedThroughputExceededException (HTTP 400)",
        ],
    )
    .await;
    // The process's store health heard of it: the warning, and not ready (`/readyz`).
    let why = como_ports::health::not_ready().expect("not ready while writes fail");
    assert!(why.contains("the store has refused writes"), "{why}");

    // Reads too: a saga read, and a count (a query).
    rig.proxy.set_rules(vec![
        rule("dynamodb", "GetItem", Fault::Throttling),
        rule("dynamodb", "Query", Fault::Throttling),
    ]);
    assert_unavailable(
        ports.store.get(state.saga_id).await,
        &[
            &format!("DynamoDB GetItem on table {table}"),
            "ThrottlingException (HTTP 400)",
        ],
    );
    assert_unavailable(
        ports.store.counts().await,
        &[
            &format!("DynamoDB Query on table {table}"),
            "ThrottlingException",
        ],
    );

    // A write throttled, and its read back too: whether it happened is unknown, and said so.
    rig.proxy.set_rules(vec![
        rule("dynamodb", "PutItem", Fault::Throttling),
        rule("dynamodb", "GetItem", Fault::Throttling),
    ]);
    assert_unavailable(
        ports.store.update(&v2, 1, sends(&["c2"])).await,
        &[
            "DynamoDB PutItem",
            "the read back failed too",
            "DynamoDB GetItem",
        ],
    );

    // The throttling stops: the same write goes through, once, with its effects once.
    rig.proxy.clear();
    rig.updated(&v2, 1, reply_to("c1", &["c2"], h2.clone()))
        .await;
    assert_eq!(rig.drain(CRM).await, [body("c2")]);
    let all: Vec<HistoryEntry> = history.iter().chain(&h2).cloned().collect();
    assert_eq!(rig.look().store.history(state.saga_id).await.unwrap(), all);
    assert!(rig.proxy.fired()["provisioned_throughput_exceeded"] >= 5);
}

/// SQS 500 and 503 on send, receive and delete: retried; past the retries an error naming the
/// queue; a message whose send failed is not there (the caller sends it again), a message
/// whose delete failed comes back; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_5xx_on_send_receive_and_delete() {
    let rig = Rig::new("sqs5xx", 2).await;
    let ports = rig.ports();
    let queue = rig.queue(CRM);

    // 500 twice, through on the third attempt.
    rig.fail_next(
        2,
        "sqs",
        "SendMessageBatch",
        Fault::ServerError { status: 500 },
    );
    ports.queue.send(CRM, vec![command("m1")]).await.unwrap();
    assert!(rig.sdk_retries("sqs") >= 2);

    // 503 past the retries: the send fails, naming the queue.
    rig.fail(
        "sqs",
        "SendMessageBatch",
        Fault::ServerError { status: 503 },
    );
    assert_unavailable(
        ports.queue.send(CRM, vec![command("m2")]).await,
        &[
            &format!("SQS SendMessageBatch on queue {queue}"),
            "ServiceUnavailable (HTTP 503)",
        ],
    );

    // Receives too.
    rig.fail("sqs", "ReceiveMessage", Fault::ServerError { status: 503 });
    assert_unavailable(
        ports
            .queue
            .receive(CRM, 10, Duration::from_secs(1), Duration::ZERO)
            .await,
        &[
            &format!("SQS ReceiveMessage on queue {queue}"),
            "ServiceUnavailable (HTTP 503)",
        ],
    );

    // A delete that fails: the message comes back after its visibility timeout.
    rig.proxy.clear();
    let got = ports
        .queue
        .receive(CRM, 10, Duration::from_secs(1), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        [body("m1")]
    );
    rig.fail(
        "sqs",
        "DeleteMessageBatch",
        Fault::ServerError { status: 500 },
    );
    assert_unavailable(
        ports.queue.delete(CRM, receipts(got)).await,
        &[
            &format!("SQS DeleteMessageBatch on queue {queue}"),
            "InternalFailure (HTTP 500)",
        ],
    );

    // The faults clear: the failed send is made again, the message that was not deleted
    // comes back and is deleted; each message was there exactly once.
    rig.proxy.clear();
    ports.queue.send(CRM, vec![command("m2")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && Instant::now() < deadline {
        seen.extend(consume(&ports, CRM, Duration::from_secs(30)).await.unwrap());
    }
    assert_eq!(sorted(seen), [body("m1"), body("m2")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rig.drain(CRM).await.is_empty(), "deleted for good");
}

/// EventBridge 500 on `PutEvents`: retried; past the retries an error naming the bus, and the
/// event not counted as published; once the fault clears it goes out, each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_500_on_put_events() {
    let rig = Rig::new("ev500", 3).await;
    let probe = EventProbe::new(&rig).await;
    let ports = rig.ports();
    let (_, first, _) = started("ev500-1");
    let (_, second, _) = started("ev500-2");

    rig.fail_next(2, "events", "PutEvents", Fault::ServerError { status: 500 });
    ports.bus.publish(first.clone()).await.unwrap();
    assert!(rig.sdk_retries("eventbridge") >= 2);

    rig.fail("events", "PutEvents", Fault::ServerError { status: 503 });
    assert_unavailable(
        ports.bus.publish(second.clone()).await,
        &[
            &format!("EventBridge PutEvents on bus {}", rig.direct.names().bus()),
            "ServiceUnavailable (HTTP 503)",
        ],
    );
    rig.fail("events", "PutEvents", Fault::ServerError { status: 500 });
    assert_unavailable(
        ports.bus.publish(second.clone()).await,
        &["EventBridge PutEvents", "InternalException (HTTP 500)"],
    );
    let recent = ids(&ports.bus.recent(100).await.unwrap());
    assert_eq!(recent, ids(&first), "a failed publish is not in the log");

    rig.proxy.clear();
    ports.bus.publish(second.clone()).await.unwrap();
    let all: Vec<SagaEvent> = first.iter().chain(&second).cloned().collect();
    assert_eq!(probe.ids().await, ids(&all), "each event once on the bus");
}

/// Answers slower than the timeouts: a read gives up within its operation timeout with a clear
/// error; a write whose first attempt committed but answered late is `Updated`, once; a long
/// poll is not cut by the attempt timeout (its own is its wait plus a margin); the messages a
/// late receive took come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_past_the_timeouts() {
    let rig = Rig::new("slow", 4).await;
    let ports = rig.ports();
    let table = rig.table();
    let (state, events, history) = started("slow-1");
    rig.create(&state, events, &history).await;

    // Every read answers after 3 s, past the 1.5 s attempt timeout.
    rig.fail("dynamodb", "GetItem", Fault::Slow { ms: 3_000 });
    let began = Instant::now();
    let got = ports.store.get(state.saga_id).await;
    let took = began.elapsed();
    assert_unavailable(
        got,
        &[
            &format!("DynamoDB GetItem on table {table}"),
            "no answer in time",
        ],
    );
    assert!(
        took < policy().operation_timeout + Duration::from_millis(500),
        "gave up after {took:?}"
    );

    // The first attempt of a write commits and answers late; the SDK's retry finds the
    // condition failed (on its own write): read back, it is this write.
    rig.fail_next(1, "dynamodb", "PutItem", Fault::Slow { ms: 3_000 });
    let (v2, h2) = next(&state, &history);
    rig.updated(&v2, 1, reply_to("c1", &["c2", "c3"], h2)).await;
    assert_eq!(sorted(rig.drain(CRM).await), [body("c2"), body("c3")]);

    // A long poll of 3 s, twice the attempt timeout, is a long poll, not a timeout.
    rig.proxy.clear();
    let began = Instant::now();
    let got = ports
        .queue
        .receive(
            QueueName::Replies,
            10,
            Duration::from_secs(5),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(
        began.elapsed() >= Duration::from_millis(2_900),
        "{:?}",
        began.elapsed()
    );

    // A receive that took a message and answered too late: the message comes back.
    ports
        .queue
        .send(QueueName::Replies, vec![command("r1")])
        .await
        .unwrap();
    rig.fail_next(1, "sqs", "ReceiveMessage", Fault::Slow { ms: 4_000 });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.is_empty() && Instant::now() < deadline {
        seen.extend(
            consume(&ports, QueueName::Replies, Duration::from_secs(1))
                .await
                .unwrap_or_default(),
        );
    }
    assert_eq!(seen, [body("r1")]);
    assert_eq!(rig.proxy.fired()["slow"], 5);
}

/// Connections reset without an answer: retried; past the retries an error naming the call;
/// a reset before the call reached the service wrote nothing; a dropped answer of a send may
/// duplicate its message, never lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections() {
    let rig = Rig::new("reset", 5).await;
    let ports = rig.ports();
    let (state, events, history) = started("reset-1");

    rig.fail_next(2, "dynamodb", "PutItem", Fault::Reset);
    rig.create(&state, events, &history).await;

    // Every write reset: an error, not a conflict, and nothing written.
    rig.fail("dynamodb", "PutItem", Fault::Reset);
    let (v2, h2) = next(&state, &history);
    rig.refused(
        &v2,
        1,
        reply_to("c1", &["c2"], vec![]),
        &[
            &format!("DynamoDB PutItem on table {}", rig.table()),
            "the request failed on its connection",
        ],
    )
    .await;
    assert!(rig.drain(CRM).await.is_empty());

    // Sends reset past the retries.
    rig.fail("sqs", "SendMessageBatch", Fault::Reset);
    assert_unavailable(
        ports.queue.send(CRM, vec![command("m1")]).await,
        &[&format!("SQS SendMessageBatch on queue {}", rig.queue(CRM))],
    );

    // A send that took effect and whose answer was dropped: the SDK sends it again; a
    // duplicate (which the engine absorbs), never a loss.
    rig.fail_next(1, "sqs", "SendMessageBatch", Fault::LostAnswer);
    ports.queue.send(CRM, vec![command("m2")]).await.unwrap();
    let got = rig.drain(CRM).await;
    assert!(
        !got.is_empty() && got.iter().all(|b| *b == body("m2")) && got.len() <= 2,
        "{got:?}"
    );

    rig.proxy.clear();
    ports.queue.send(CRM, vec![command("m1")]).await.unwrap();
    rig.updated(&v2, 1, reply_to("c1", &["c2"], h2)).await;
    assert_eq!(sorted(rig.drain(CRM).await), [body("c2"), body("m1")]);
    assert!(rig.proxy.fired()["reset"] >= 8);
}

/// A conditional write whose answer was lost (it committed; the answer was dropped or turned
/// into a 500, and the SDK's retry then found its condition failed) is the write that
/// happened: `Created` / `Updated`, never `Exists` / `Conflict`; the saga is written once and
/// its effects are carried out once. A lost answer whose read back fails too is an error; the
/// write it may have made is found by the caller's next look, and its effects are carried out
/// by the saga's next write. A real conflict is still a conflict; a swap whose answer was
/// lost is won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_of_a_conditional_saga_write() {
    let rig = Rig::new("lost", 6).await;
    let ports = rig.ports();
    let probe = EventProbe::new(&rig).await;
    let (state, events, history) = started("lost-1");
    let id = state.saga_id;

    // A create whose answer became a 500: the SDK retries, `attribute_not_exists` fails on
    // its own write.
    rig.fail_next(1, "dynamodb", "PutItem", Fault::LostAnswer500);
    rig.create(&state, events.clone(), &history).await;
    assert_eq!(rig.version(&state).await, Some(1));
    assert_eq!(probe.ids().await, ids(&events));

    // An update whose connection dropped after it committed.
    rig.fail_next(1, "dynamodb", "PutItem", Fault::LostAnswer);
    let (v2, h2) = next(&state, &history);
    rig.updated(&v2, 1, reply_to("c1", &["c2", "c3"], h2.clone()))
        .await;
    assert_eq!(sorted(rig.drain(CRM).await), [body("c2"), body("c3")]);

    // Every answer lost: the first attempt committed, each retry's refusal was lost too.
    rig.fail("dynamodb", "PutItem", Fault::LostAnswer500);
    let (v3, h3) = next(&v2, &history);
    let effects = Effects {
        history: h3.clone(),
        ..sends(&["c4"])
    };
    rig.updated(&v3, 2, effects).await;
    assert_eq!(rig.drain(CRM).await, [body("c4")]);
    let all: Vec<HistoryEntry> = history.iter().chain(&h2).chain(&h3).cloned().collect();
    assert_eq!(
        rig.look().store.history(id).await.unwrap(),
        all,
        "each entry once"
    );

    // The answer lost and the read back failing too: an error that says the outcome is
    // unknown. The write did happen; its effects are carried out by the saga's next write.
    rig.proxy.set_rules(vec![
        rule("dynamodb", "PutItem", Fault::LostAnswer500),
        rule("dynamodb", "GetItem", Fault::ServerError { status: 500 }),
    ]);
    let (v4, h4) = next(&v3, &history);
    assert_unavailable(
        ports
            .store
            .update(&v4, 3, reply_to("c4", &["c5", "c6"], h4))
            .await,
        &[
            "DynamoDB PutItem",
            "whether saga",
            "is unknown",
            "DynamoDB GetItem",
        ],
    );
    assert_eq!(rig.version(&state).await, Some(4));
    assert!(rig.drain(CRM).await.is_empty(), "not sent yet");
    rig.proxy.clear();
    // The caller tries again: a conflict, and a look finds version 4.
    let out = ports
        .store
        .update(&v4, 3, sends(&["c5", "c6"]))
        .await
        .unwrap();
    assert_eq!(out, UpdateOutcome::Conflict);
    let now = ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(now.version, 4);
    let (v5, _) = next(&now.value, &history);
    rig.updated(&v5, 4, Effects::default()).await;
    assert_eq!(sorted(rig.drain(CRM).await), [body("c5"), body("c6")]);

    // A real conflict is one: another writer got there first.
    let (v6, _) = next(&v5, &history);
    let theirs = rig
        .look()
        .store
        .update(&v6, 5, Effects::default())
        .await
        .unwrap();
    assert_eq!(theirs, UpdateOutcome::Updated { version: 6 });
    rig.fail_next(1, "dynamodb", "PutItem", Fault::LostAnswer500);
    let out = ports.store.update(&v6, 5, sends(&["x"])).await.unwrap();
    assert_eq!(out, UpdateOutcome::Conflict);
    assert!(rig.drain(CRM).await.is_empty());

    // A swap whose answer was lost is won, not lost.
    rig.fail_next(1, "dynamodb", "PutItem", Fault::LostAnswer500);
    assert!(ports.records.swap("health/lost", None, "a").await.unwrap());
    rig.fail_next(1, "dynamodb", "PutItem", Fault::LostAnswer);
    assert!(
        ports
            .records
            .swap("health/lost", Some("a"), "b")
            .await
            .unwrap()
    );
    assert!(
        !ports
            .records
            .swap("health/lost", Some("a"), "c")
            .await
            .unwrap()
    );
    rig.proxy.clear();
    assert_eq!(
        rig.look()
            .records
            .get("health/lost")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(probe.ids().await, Vec::<String>::new(), "no event twice");
}

/// A batch call that partly fails sends again only the failed entries, with backoff, a
/// bounded number of times; then the error names the queue (or bus), how many entries and
/// their codes, and only the callers whose entries failed hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_failures_retry_only_the_failed_entries() {
    let rig = Rig::new("partial", 7).await;
    let ports = rig.ports();
    let probe = EventProbe::new(&rig).await;
    let queue = rig.queue(CRM);
    let six: Vec<String> = (1..=6).map(|i| format!("p{i}")).collect();

    // Half of a batch fails once: only those go again, and each message is there once.
    rig.fail_next(1, "sqs", "SendMessageBatch", Fault::PartialBatch);
    rig.backend.reset_api_calls();
    ports.queue.send(CRM, commands(&six)).await.unwrap();
    let calls: BTreeMap<&str, u64> = rig
        .backend
        .api_calls()
        .iter()
        .map(|c| (c.operation, c.count))
        .collect();
    assert_eq!(calls.get("SendMessageBatch"), Some(&2), "{calls:?}");
    assert_eq!(
        sorted(rig.drain(CRM).await),
        sorted(six.iter().map(|id| body(id)).collect::<Vec<_>>())
    );

    // Failing each time: after the tries, an error for the caller whose message is left, and
    // none for the other caller in the same batch.
    rig.fail("sqs", "SendMessageBatch", Fault::PartialBatch);
    let (first, second) = tokio::join!(
        ports.queue.send(CRM, vec![command("a1")]),
        ports
            .queue
            .send(CRM, vec![command("b1"), command("b2"), command("b3")]),
    );
    assert_unavailable(
        first,
        &[
            &format!("SQS SendMessageBatch on queue {queue}"),
            "1 of 4 messages not accepted after 3 tries: InternalError (1)",
        ],
    );
    second.expect("the other caller's messages went out");
    assert_eq!(
        sorted(rig.drain(CRM).await),
        [body("b1"), body("b2"), body("b3")]
    );
    rig.proxy.clear();
    ports.queue.send(CRM, vec![command("a1")]).await.unwrap();
    assert_eq!(rig.drain(CRM).await, [body("a1")]);

    // Deletes: part of a batch fails once; retried; nothing comes back.
    let four: Vec<String> = (1..=4).map(|i| format!("d{i}")).collect();
    let got = sent_and_received(&ports, &four).await;
    rig.fail_next(1, "sqs", "DeleteMessageBatch", Fault::PartialBatch);
    ports.queue.delete(CRM, receipts(got)).await.unwrap();
    // Failing each time: the one left is named, and comes back; the others do not.
    let got = sent_and_received(&ports, &four).await;
    rig.fail("sqs", "DeleteMessageBatch", Fault::PartialBatch);
    let first = got[0].body.clone();
    assert_unavailable(
        ports.queue.delete(CRM, receipts(got)).await,
        &[
            &format!("SQS DeleteMessageBatch on queue {queue}"),
            "1 of 4 messages not deleted after 3 tries: InternalError (1)",
        ],
    );
    rig.proxy.clear();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        rig.drain(CRM).await,
        [first],
        "only the undeleted one comes back"
    );

    // Events: part of a batch fails once; each event goes out once.
    let events: Vec<SagaEvent> = (1..=3)
        .flat_map(|i| started(&format!("partial-{i}")).1)
        .collect();
    let more: Vec<SagaEvent> = (4..=6)
        .flat_map(|i| started(&format!("partial-{i}")).1)
        .collect();
    assert_eq!(more.len(), 3, "one event a start");
    rig.fail_next(1, "events", "PutEvents", Fault::PartialBatch);
    ports.bus.publish(events.clone()).await.unwrap();
    assert_eq!(probe.ids().await, ids(&events));
    // Failing each time: the error names the bus and the code; the accepted ones went out
    // once.
    rig.fail("events", "PutEvents", Fault::PartialBatch);
    assert_unavailable(
        ports.bus.publish(more.clone()).await,
        &[
            &format!("EventBridge PutEvents on bus {}", rig.direct.names().bus()),
            "not accepted after 3 tries: InternalFailure (1)",
        ],
    );
    let accepted = probe.ids().await;
    assert_eq!(accepted.len(), more.len() - 1, "{accepted:?}");
    rig.proxy.clear();
    ports.bus.publish(more.clone()).await.unwrap();
    let mut all = accepted;
    all.extend(probe.ids().await);
    all.sort();
    let mut expected = ids(&more);
    expected.extend(accepted_again(&more, &all));
    expected.sort();
    assert_eq!(all, expected);
}

/// The events of `more` that appear twice in `all` (accepted before, and sent again with the
/// caller's retry: a duplicate that carries its id, never a loss).
fn accepted_again(more: &[SagaEvent], all: &[String]) -> Vec<String> {
    more.iter()
        .filter(|e| all.iter().filter(|id| **id == e.event_id).count() > 1)
        .map(|e| e.event_id.clone())
        .collect()
}
