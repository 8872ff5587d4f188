//! End-to-end bookings on the AWS backend against moto: the whole stack in-process (both
//! simulators, the orchestrator, both workers), checked against the simulators' own ledgers.
//!
//! - A `BookingRequested` event put on the bus becomes a confirmed saga (the rule routes it
//!   into the request queue; the backend hands over the event's `detail`), and only milestone
//!   events go out.
//! - Every command and reply is sent twice more straight into its queue: the ledgers show no
//!   double effect.
//! - The AWS API calls of happy-path sagas, counted by service and operation (the figures in
//!   `docs/aws.md`).
//! - A request from the bus that intake cannot admit (DynamoDB down, through the fault proxy)
//!   waits on the request queue with its guest sealed, not in the clear.

mod aws_stack_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use como_backend_aws::{AwsConfig, names};
use como_engine::StatusKind;
use como_ports::{
    Backend, DeadLetter, Delivery, OutgoingMessage, PortResult, Queue, QueueName, Receipt,
    RewriteDeadLetter,
};
use como_schemas::SagaId;
use como_simulators::invariant::{SagaKeys, check_money_invariant};

use aws_stack_support::{Stack, booking, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_requested_event_on_the_bus_becomes_a_confirmed_saga() {
    let stack = start("busevent", AwsConfig::default(), |_, p| p).await;
    let request = booking("bus-event-1", 1);
    let saga_id = request.saga_id();
    let events = aws_sdk_eventbridge::Client::new(&stack.sdk);
    let entry = |detail_type: &str| {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(stack.backend().names().bus())
            .source(names::BOOKING_SOURCE)
            .detail_type(detail_type)
            .detail(serde_json::to_string(&request).unwrap())
            .build()
    };
    let out = events
        .put_events()
        .entries(entry(names::BOOKING_DETAIL_TYPE))
        // Not a booking request: the rule leaves it on the bus.
        .entries(entry("SomethingElse"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);

    let done = stack
        .wait_finished(&[saga_id], Duration::from_secs(90))
        .await;
    assert_eq!(
        done[0].status.kind(),
        StatusKind::Confirmed,
        "{:?}",
        done[0].status
    );
    // The saga runs the event's detail, its guest kept sealed.
    let mut kept = done[0].request.clone();
    assert!(kept.guest.sealed().is_some(), "the guest is kept sealed");
    kept.guest = stack
        .ports
        .vault
        .open(saga_id, &kept.guest)
        .await
        .unwrap()
        .unwrap()
        .into();
    assert_eq!(kept, request, "the saga runs the event's detail");
    let violations = check_money_invariant(&stack.sim.ledger(), &[SagaKeys::of(&done[0])]);
    assert!(violations.is_empty(), "{violations:?}");

    // Outcomes only (the default): the confirmation, not the start nor a step at a time. It
    // goes out right after the write that finished the saga, which the poll above may beat.
    let published = |stack: &Stack| {
        let bus = stack.ports.bus.clone();
        async move {
            bus.recent(100)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.saga_id == saga_id)
                .map(|e| e.body.type_name())
                .collect::<Vec<&'static str>>()
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    while published(&stack).await.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published(&stack).await, ["BookingConfirmed"]);
    let calls = stack.backend().api_calls();
    let put_events = calls
        .iter()
        .find(|c| c.operation == "PutEvents")
        .map_or(0, |c| c.count);
    assert_eq!(put_events, 1, "one PutEvents, for the outcome: {calls:?}");

    // The other event was not taken for a request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead = stack
        .ports
        .queue
        .dead_letters(QueueName::Requests, 10)
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    stack.stop().await;
}

/// Between the runtime and the queue: the first delivery of every command and reply is sent
/// twice more, straight into its SQS queue, before it is handed over.
struct Duplicating {
    inner: Arc<dyn Queue>,
    sqs: aws_sdk_sqs::Client,
    urls: BTreeMap<QueueName, String>,
    injected: Arc<AtomicU64>,
}

const COPY: &str = "test-copy";

#[async_trait]
impl Queue for Duplicating {
    async fn send(&self, queue: QueueName, messages: Vec<OutgoingMessage>) -> PortResult<()> {
        self.inner.send(queue, messages).await
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        let got = self.inner.receive(queue, max, visibility, wait).await?;
        if queue != QueueName::Requests {
            for d in got
                .iter()
                .filter(|d| d.receive_count == 1 && !d.attributes.contains_key(COPY))
            {
                for _ in 0..2 {
                    let mut send = self
                        .sqs
                        .send_message()
                        .queue_url(&self.urls[&queue])
                        .message_body(&d.body);
                    for (k, v) in d
                        .attributes
                        .iter()
                        .chain([(&COPY.to_owned(), &"1".to_owned())])
                    {
                        send = send.message_attributes(
                            k,
                            MessageAttributeValue::builder()
                                .data_type("String")
                                .string_value(v)
                                .build()
                                .unwrap(),
                        );
                    }
                    send.send().await.unwrap();
                    self.injected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(got)
    }

    async fn delete(&self, queue: QueueName, receipts: Vec<Receipt>) -> PortResult<()> {
        self.inner.delete(queue, receipts).await
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        visibility: Duration,
    ) -> PortResult<()> {
        self.inner
            .change_visibility(queue, receipt, visibility)
            .await
    }

    async fn dead_letter_with(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
        body: Option<String>,
    ) -> PortResult<()> {
        self.inner
            .dead_letter_with(queue, receipt, reason, body)
            .await
    }

    async fn dead_letters(&self, queue: QueueName, limit: usize) -> PortResult<Vec<DeadLetter>> {
        self.inner.dead_letters(queue, limit).await
    }

    async fn depth(&self, queue: QueueName) -> PortResult<como_ports::QueueDepth> {
        self.inner.depth(queue).await
    }

    async fn rewrite_dead_letters(
        &self,
        queue: QueueName,
        rewrite: &RewriteDeadLetter<'_>,
    ) -> PortResult<usize> {
        self.inner.rewrite_dead_letters(queue, rewrite).await
    }

    async fn redrive(&self, queue: QueueName, ids: Option<Vec<String>>) -> PortResult<usize> {
        self.inner.redrive(queue, ids).await
    }
}

async fn queue_is_empty(stack: &Stack, queue: QueueName) -> bool {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let out = sqs
        .get_queue_attributes()
        .queue_url(stack.backend().queue_url(queue))
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap();
    out.attributes()
        .map(|a| a.values().all(|v| v == "0"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_replies_sent_twice_more_change_nothing_downstream() {
    const N: usize = 6;
    let injected = Arc::new(AtomicU64::new(0));
    let counter = injected.clone();
    let stack = start("duplicates", AwsConfig::default(), move |backend, ports| {
        let sqs = aws_sdk_sqs::Client::new(&backend_sdk(backend));
        Backend {
            queue: Arc::new(Duplicating {
                inner: ports.queue.clone(),
                sqs,
                urls: QueueName::ALL
                    .into_iter()
                    .map(|q| (q, backend.queue_url(q).to_owned()))
                    .collect(),
                injected: counter.clone(),
            }),
            ..ports
        }
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..N {
        let request = booking(&format!("dup-{i}"), 100 + i);
        ids.push(
            como_orchestrator::submit(&stack.ports, &request)
                .await
                .unwrap(),
        );
    }
    let done = stack.wait_finished(&ids, Duration::from_secs(120)).await;
    assert!(
        done.iter()
            .all(|s| s.status.kind() == StatusKind::Confirmed),
        "{:?}",
        done.iter().map(|s| &s.status).collect::<Vec<_>>()
    );
    let versions: Vec<u64> = stack_versions(&stack, &ids).await;
    // Let every copy be received and answered.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = true;
        for q in [
            QueueName::Replies,
            QueueName::Commands(como_schemas::Worker::Crm),
            QueueName::Commands(como_schemas::Worker::Sevenrooms),
        ] {
            empty &= queue_is_empty(&stack, q).await;
        }
        if empty {
            break;
        }
        assert!(Instant::now() < until, "the copies were not all handled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 4 commands and 4 replies a saga, each sent twice more.
    assert!(
        injected.load(Ordering::Relaxed) >= (N * 8 * 2) as u64,
        "copies injected: {}",
        injected.load(Ordering::Relaxed)
    );
    assert_eq!(
        stack_versions(&stack, &ids).await,
        versions,
        "a copy changed a finished saga"
    );
    let ledger = stack.sim.ledger();
    let violations =
        check_money_invariant(&ledger, &done.iter().map(SagaKeys::of).collect::<Vec<_>>());
    assert!(violations.is_empty(), "{violations:?}");
    for s in &done {
        let receipt = como_schemas::ReceiptNo::for_saga(s.saga_id).to_string();
        let redemptions: usize = ledger
            .memberson
            .members
            .iter()
            .flat_map(|m| &m.redemptions)
            .filter(|r| r.receipt_no == receipt)
            .count();
        assert_eq!(
            redemptions, 1,
            "saga {} redeemed {redemptions} times",
            s.saga_id
        );
        let external = s.saga_id.to_string();
        let reservations = ledger
            .sevenrooms
            .reservations
            .iter()
            .filter(|r| r.external_id.as_deref() == Some(external.as_str()))
            .count();
        assert_eq!(
            reservations, 1,
            "saga {} booked {reservations} times",
            s.saga_id
        );
    }
    stack.stop().await;
}

fn backend_sdk(backend: &como_backend_aws::AwsBackend) -> aws_config::SdkConfig {
    backend.sdk_config().clone()
}

async fn stack_versions(stack: &Stack, ids: &[SagaId]) -> Vec<u64> {
    let mut out = Vec::new();
    for id in ids {
        out.push(stack.ports.store.get(*id).await.unwrap().unwrap().version);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_api_calls_per_saga() {
    // Sagas in flight at once (all submitted together): SQS batches fill with load.
    let sagas: usize = std::env::var("COMO_AWS_COST_SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let stack = start("apicalls", AwsConfig::default(), |_, p| p).await;
    // What the idle loops cost (receives with nothing to receive, timer sweeps), per second.
    stack.backend().reset_api_calls();
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = stack.backend().api_calls();
    let idle_secs = idle_from.elapsed().as_secs_f64();

    stack.backend().reset_api_calls();
    let started = Instant::now();
    let mut ids: Vec<SagaId> = Vec::new();
    for i in 0..sagas {
        let request = booking(&format!("calls-{i}"), i);
        ids.push(
            como_orchestrator::submit(&stack.ports, &request)
                .await
                .unwrap(),
        );
    }
    // Samples one saga's item while it runs: its size with an outbox is what a write costs.
    let largest = Arc::new(AtomicU64::new(0));
    let sampler = {
        let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
        let table = stack.backend().names().table();
        let key = format!("S#{}", ids[sagas - 1]);
        let largest = largest.clone();
        tokio::spawn(async move {
            loop {
                let got = dynamo
                    .get_item()
                    .table_name(&table)
                    .key(
                        "pk",
                        aws_sdk_dynamodb::types::AttributeValue::S(key.clone()),
                    )
                    .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("S".into()))
                    .send()
                    .await;
                if let Some(item) = got.ok().and_then(|g| g.item().cloned()) {
                    largest.fetch_max(item_size(&item) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let done = stack.wait_finished(&ids, Duration::from_secs(120)).await;
    sampler.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let calls = stack.backend().api_calls();
    assert!(
        done.iter()
            .all(|s| s.status.kind() == StatusKind::Confirmed),
        "{:?}",
        done.iter()
            .map(|s| s.status.kind())
            .collect::<BTreeSet<_>>()
    );

    println!(
        "AWS API calls for {sagas} happy-path sagas in {elapsed:.1} s (idle rate from {idle_secs:.1} s without sagas):"
    );
    println!(
        "{:<14} {:<28} {:>8} {:>10} {:>12}",
        "service", "operation", "total", "per saga", "idle per s"
    );
    let mut per_saga = BTreeMap::new();
    for c in &calls {
        let idle_rate = idle
            .iter()
            .find(|i| i.service == c.service && i.operation == c.operation)
            .map_or(0.0, |i| i.count as f64 / idle_secs);
        let each = c.count as f64 / sagas as f64;
        per_saga.insert(c.operation, each);
        println!(
            "{:<14} {:<28} {:>8} {:>10.2} {:>12.2}",
            c.service, c.operation, c.count, each, idle_rate
        );
    }
    let cost = como_backend_aws::Cost::per_saga(&calls, sagas);
    println!(
        "per saga: {:.1} SQS requests, {:.1} DynamoDB write units, {:.1} read units, {:.1} events",
        cost.sqs_requests, cost.dynamodb_write_units, cost.dynamodb_read_units, cost.events
    );
    println!(
        "per million sagas at list prices: SQS ${:.2} + DynamoDB ${:.2} + EventBridge ${:.2} = ${:.2}",
        cost.sqs_dollars, cost.dynamodb_dollars, cost.eventbridge_dollars, cost.total_dollars
    );
    // The work of a saga, whatever the polling: 5 saga writes, a few history items, the
    // hold's idempotency record; one event, for the outcome; one send per command and reply.
    let get = |op: &str| per_saga.get(op).copied().unwrap_or(0.0);
    assert!(get("PutItem") <= 10.0, "{calls:?}");
    assert!(get("PutEvents") <= 1.0, "{calls:?}");
    assert!(get("SendMessageBatch") <= 9.0, "{calls:?}");
    assert!(get("UpdateItem") <= 1.5, "{calls:?}");
    assert!(cost.dynamodb_write_units <= 18.0, "{cost:?}");
    let violations = check_money_invariant(
        &stack.sim.ledger(),
        &done.iter().map(SagaKeys::of).collect::<Vec<_>>(),
    );
    assert!(violations.is_empty(), "{violations:?}");

    // Item sizes, as DynamoDB bills them (names and values, in bytes).
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let items = dynamo
        .query()
        .table_name(stack.backend().names().table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("S#{}", ids[0])),
        )
        .send()
        .await
        .unwrap();
    for item in items.items() {
        let size = item_size(item);
        let sk = item
            .get("sk")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let st = item
            .get("sz")
            .and_then(|v| v.as_b().ok())
            .map_or(0, |b| b.as_ref().len());
        println!("item {sk:<16} {size:>6} bytes (compressed state {st})");
    }
    println!(
        "largest saga item seen while the sagas ran (state and outbox): {} bytes",
        largest.load(Ordering::Relaxed)
    );
    stack.stop().await;
}

/// An item's size as DynamoDB bills it: attribute names and values, in bytes.
fn item_size(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + v.as_s().map_or(0, String::len)
                + v.as_b().map_or(0, |b| b.as_ref().len())
                + v.as_n().map_or(0, |n| n.len().div_ceil(2) + 1)
        })
        .sum()
}

/// On AWS as on the embedded backend: a saga whose compensation is refused stops for a person,
/// and that is pushed: `SagaNeedsOperator` goes out on EventBridge, and through the
/// notifications queue (SQS) to the webhook, signed. The operator's resolve is in the audit
/// list (DynamoDB) with who and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_that_needs_an_operator_is_pushed_on_the_bus_and_to_the_webhook() {
    use como_simulators::{Downstream, FaultKind, FaultRule};
    let got: Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let seen = got.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    const SECRET: &str = "whsec-aws-stack-test";
    let stack = aws_stack_support::start_with(
        "needs-operator",
        AwsConfig::default(),
        |_, ports| ports,
        |app| {
            app.with_webhook(Some(como_app::notify::Webhook {
                url,
                secret: SECRET.into(),
            }))
        },
    )
    .await;
    stack
        .sim
        .set_faults(
            Downstream::SevenRooms,
            vec![
                FaultRule::new(FaultKind::Refuse {
                    code: "SLOT_UNAVAILABLE".into(),
                })
                .on(["book"]),
            ],
        )
        .unwrap();
    stack
        .sim
        .set_faults(
            Downstream::Memberson,
            vec![
                FaultRule::new(FaultKind::Refuse {
                    code: "RECEIPT_LOCKED".into(),
                })
                .on(["void"]),
            ],
        )
        .unwrap();
    let request = booking("aws-needs-operator", 1);
    let saga = request.saga_id();
    como_orchestrator::submit(&stack.ports, &request)
        .await
        .unwrap();
    let done = stack.wait_finished(&[saga], Duration::from_secs(90)).await;
    assert_eq!(
        done[0].status.kind(),
        StatusKind::NeedsOperator,
        "{:?}",
        done[0].status
    );

    // On the bus (EventBridge), and at the webhook, signed.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let on_bus = stack
            .ports
            .bus
            .recent(100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.saga_id == saga && e.body.type_name() == "SagaNeedsOperator");
        let delivered = got.lock().unwrap().len();
        if on_bus && delivered > 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "on the bus: {on_bus}; delivered to the webhook: {delivered}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let put_events = stack
        .backend()
        .api_calls()
        .iter()
        .find(|c| c.operation == "PutEvents")
        .map_or(0, |c| c.count);
    assert!(put_events >= 1, "published through EventBridge");
    let (headers, body) = got.lock().unwrap()[0].clone();
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "SagaNeedsOperator");
    assert_eq!(event["saga_id"], saga.to_string());
    let sig = headers["como-signature"].to_str().unwrap().to_owned();
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    assert_eq!(sig, como_app::notify::signature(SECRET, t, &body));
    // Delivered, the notification left its queue.
    let until = Instant::now() + Duration::from_secs(30);
    while !queue_is_empty(&stack, QueueName::Notifications).await {
        assert!(
            Instant::now() < until,
            "the notification stayed on its queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator resolves it; the audit list (on DynamoDB) has it, with who and why.
    let who = como_schemas::OperatorId::parse("ops-alice").unwrap();
    como_orchestrator::operator::resolve_by_hand(
        &stack.ports,
        saga,
        como_orchestrator::operator::ResolvedOutcome::Compensated,
        &who,
        "voided by hand in Memberson",
        None,
    )
    .await
    .unwrap();
    let audit = stack
        .ports
        .audit
        .list(&como_ports::AuditQuery {
            actor: Some("ops-alice".into()),
            ..como_ports::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 1, "{audit:?}");
    let entry = &audit.items[0];
    assert_eq!(
        (entry.action.as_str(), entry.outcome, entry.reason.as_str()),
        (
            "resolve_compensated",
            como_ports::AuditOutcome::Applied,
            "voided by hand in Memberson"
        )
    );
    assert_eq!(entry.target, format!("saga/{saga}"));
    stack.stop().await;
}

/// A guest found by a plain byte search, and nowhere else.
const GUEST: [&str; 5] = [
    "Zyxwvu",
    "Qwertyson",
    "+6598761234",
    "6598761234",
    "zyxwvu.q@privacy-test.example",
];

/// Every string and byte string of an attribute value, a packed one also inflated.
fn attribute_bytes(v: &aws_sdk_dynamodb::types::AttributeValue, out: &mut Vec<Vec<u8>>) {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) | A::N(s) => out.push(s.as_bytes().to_vec()),
        A::B(b) => {
            out.push(b.as_ref().to_vec());
            if let Some(json) = como_backend_aws::testing::unpack(b.as_ref()) {
                out.push(json);
            }
        }
        A::Ss(ss) | A::Ns(ss) => out.extend(ss.iter().map(|s| s.as_bytes().to_vec())),
        A::Bs(bs) => out.extend(bs.iter().map(|b| b.as_ref().to_vec())),
        A::L(l) => l.iter().for_each(|x| attribute_bytes(x, out)),
        A::M(m) => m.values().for_each(|x| attribute_bytes(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_no_guest_contact_in_the_clear_and_sevenrooms_gets_the_guest() {
    let stack = start("privacy", AwsConfig::default(), |_, p| p).await;
    let guest = como_schemas::GuestContact {
        first_name: como_schemas::PersonName::parse(GUEST[0]).unwrap(),
        last_name: como_schemas::PersonName::parse(GUEST[1]).unwrap(),
        phone: como_schemas::Phone::parse(GUEST[2]).unwrap(),
        email: Some(como_schemas::Email::parse(GUEST[4]).unwrap()),
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut r = booking(&format!("privacy-{n}"), n);
        r.guest = guest.clone().into();
        ids.push(r.saga_id());
        if n == 0 {
            // In the clear on the request queue, as the bus delivers an event.
            stack
                .ports
                .queue
                .send(
                    QueueName::Requests,
                    vec![OutgoingMessage::new(serde_json::to_string(&r).unwrap())],
                )
                .await
                .unwrap();
        } else {
            como_orchestrator::submit(&stack.ports, &r).await.unwrap();
        }
    }
    let done = stack.wait_finished(&ids, Duration::from_secs(120)).await;
    assert!(
        done.iter()
            .all(|s| s.status.kind() == StatusKind::Confirmed),
        "{:?}",
        done.iter().map(|s| s.status.kind()).collect::<Vec<_>>()
    );
    // SevenRooms booked each with the guest, in full.
    let ledger = stack.sim.sevenrooms_ledger();
    for id in &ids {
        let r = ledger
            .reservations
            .iter()
            .find(|r| r.external_id.as_deref() == Some(id.to_string().as_str()))
            .expect("a reservation per saga");
        let g = r.guest.as_ref().unwrap();
        assert_eq!(
            (g.first_name.as_str(), g.phone.as_str()),
            (GUEST[0], GUEST[2])
        );
    }
    // Every item of the table, read raw from the AWS-compatible server.
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let items: Vec<_> = ddb
        .scan()
        .table_name(stack.backend().names().table())
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    for item in &items {
        for v in item.values() {
            attribute_bytes(v, &mut bytes);
        }
    }
    let find = |needle: &str| {
        bytes
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    assert!(
        find("\"sealed\":\"v1.k1."),
        "the search reads the sagas' state: it finds their sealed guests ({} items)",
        items.len()
    );
    for needle in GUEST {
        assert!(!find(needle), "{needle:?} is in the clear in the table");
    }
    stack.stop().await;
}

/// A request put on the bus with its guest in the clear, while DynamoDB answers 503 to every
/// call (through the fault proxy): intake cannot admit it, and does not leave it waiting on the
/// request queue in the clear (where, after the queue's last receive, SQS would set it aside as
/// it came). The queue holds one message, the request with its guest sealed, read raw from SQS;
/// once DynamoDB is back, that copy becomes the saga, whose guest opens to the contact sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_request_intake_cannot_admit_waits_sealed_not_in_the_clear() {
    use como_backend_aws::{AwsBackend, CallPolicy, testing};
    use como_orchestrator::intake::{SEALED_RETRY_DELAY, handle_request};
    use como_simulators::aws_proxy::{AwsFaultProxy, Fault, Rule};

    let (direct, sdk) = testing::fresh("sealwait", AwsConfig::default())
        .await
        .unwrap();
    let proxy = AwsFaultProxy::start(&testing::moto().endpoint, 7)
        .await
        .unwrap();
    let through = AwsBackend::connect_with(
        &testing::sdk_config(&proxy.endpoint()).await,
        AwsConfig {
            prefix: direct.names().prefix().to_owned(),
            calls: CallPolicy {
                max_attempts: 2,
                operation_timeout: Duration::from_secs(5),
                ..CallPolicy::default()
            },
            ..AwsConfig::default()
        },
    )
    .await
    .unwrap();
    let keys = como_privacy::Keys::fixed(como_privacy::Keyring::generate());
    let ports = through.ports().with_vault(keys.clone());
    let catalogue = aws_stack_support::catalogue();

    let mut request = booking("seal-wait-1", 0);
    request.guest = como_schemas::GuestContact {
        first_name: como_schemas::PersonName::parse(GUEST[0]).unwrap(),
        last_name: como_schemas::PersonName::parse(GUEST[1]).unwrap(),
        phone: como_schemas::Phone::parse(GUEST[2]).unwrap(),
        email: Some(como_schemas::Email::parse(GUEST[4]).unwrap()),
    }
    .into();
    let out = aws_sdk_eventbridge::Client::new(&sdk)
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(direct.names().bus())
                .source(names::BOOKING_SOURCE)
                .detail_type(names::BOOKING_DETAIL_TYPE)
                .detail(serde_json::to_string(&request).unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    let receive = || async {
        let until = Instant::now() + Duration::from_secs(40);
        loop {
            let got = ports
                .queue
                .receive(
                    QueueName::Requests,
                    1,
                    Duration::from_secs(60),
                    Duration::from_secs(2),
                )
                .await
                .unwrap();
            if let Some(d) = got.into_iter().next() {
                return d;
            }
            assert!(Instant::now() < until, "no request on the queue");
        }
    };
    let first = receive().await;
    assert!(
        first.body.contains(GUEST[2]),
        "the bus delivers it in the clear"
    );

    proxy.set_rules(vec![Rule::new(
        "dynamodb",
        None,
        Fault::ServerError { status: 503 },
    )]);
    let refused = handle_request(&ports, &catalogue, &first).await;
    assert!(refused.is_err(), "the store is down: {refused:?}");
    assert!(
        proxy.fired().values().sum::<u64>() > 0,
        "{:?}",
        proxy.fired()
    );

    // What the request queue holds now, raw from SQS: the request received is gone (deleted,
    // not just hidden for the 60 s it was received for), and one copy waits, delayed.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .get_queue_url()
        .queue_name(direct.names().queue(QueueName::Requests))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let count = |name: QueueAttributeName| -> u64 {
        attrs
            .attributes()
            .and_then(|a| a.get(&name))
            .map_or(0, |v| v.parse().unwrap())
    };
    assert_eq!(
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ),
        (0, 0, 1),
        "visible, received, delayed: {attrs:?}"
    );
    tokio::time::sleep(SEALED_RETRY_DELAY).await;
    let raw = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = raw.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0].contains("\"sealed\":\"v1.k1."), "{}", bodies[0]);
    for needle in GUEST {
        assert!(!bodies[0].contains(needle), "{needle:?} waits in the clear");
    }

    // DynamoDB is back: the sealed copy becomes the saga, with the contact that was sent.
    proxy.clear();
    let copy = receive().await;
    match handle_request(&ports, &catalogue, &copy).await.unwrap() {
        como_orchestrator::IntakeOutcome::Started(applied) => {
            assert_eq!(applied.state.saga_id, request.saga_id())
        }
        other => panic!("{other:?}"),
    }
    let look = direct.ports().with_vault(keys);
    let saga = look.store.get(request.saga_id()).await.unwrap().unwrap();
    let opened = look
        .vault
        .open(request.saga_id(), &saga.value.request.guest)
        .await
        .unwrap();
    assert_eq!(opened.as_ref(), request.guest.contact());
}
