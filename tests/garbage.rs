//! A running orchestrator and both workers (in-process, over one SQLite file, against the real
//! clients and the simulators on loopback) take a stream of garbage on every queue: random
//! bytes, printable noise, truncated and corrupted messages, messages of the wrong kind or for
//! the wrong worker, requests for an unknown venue, replies for no saga. Every piece of garbage ends in the dead letters of its
//! queue with the reason, every bad request also as a `BookingRejected` event, nothing stops,
//! and a valid booking sent in the middle of the stream completes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use como_app::{SpawnOptions, Spawned, spawn_app};
use como_engine::StatusKind;
use como_orchestrator::{VenueCatalogue, VenuePrice, submit};
use como_ports::{Backend, EventBus, OutgoingMessage, PortResult, QueueName};
use como_schemas::{
    BookingRejected, BookingRequested, CommandKind, InvalidInput, MemberNo, OperationKind,
    SagaEvent, SagaId, VenueId, Worker, WorkerCommand, WorkerReply, examples,
    parse_booking_request,
};
use como_simulators::SimConfig;
use como_simulators::ledger::RedemptionStatus;
use como_simulators::seed::{MEMBER_RICH, VENUE_LARGE};

/// Pieces of garbage per queue.
const PER_QUEUE: usize = 40;

/// The event bus of the backend, keeping a copy of every rejection published.
struct RecordingBus {
    inner: Arc<dyn EventBus>,
    rejections: Mutex<Vec<BookingRejected>>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, events: Vec<SagaEvent>) -> PortResult<()> {
        self.inner.publish(events).await
    }

    async fn publish_rejection(&self, rejection: BookingRejected) -> PortResult<()> {
        self.rejections.lock().unwrap().push(rejection.clone());
        self.inner.publish_rejection(rejection).await
    }

    async fn recent(&self, limit: usize) -> PortResult<Vec<SagaEvent>> {
        self.inner.recent(limit).await
    }
}

/// A small deterministic generator (xorshift), so that a failing stream can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One piece of garbage shaped after `valid` (a valid message of the queue) and `other` (a valid
/// message of another queue).
fn garbage(noise: &mut Noise, valid: &str, other: &str) -> String {
    let len = noise.below(200);
    match noise.below(10) {
        // A well-formed message that still has no place here: a request for a venue not in the
        // catalogue, a reply for a saga that does not exist (a command is never garbage as
        // such, and is drawn again).
        9 => valid.to_owned(),
        0 => String::from_utf8_lossy(&noise.bytes(len)).into_owned(),
        1 => (0..len)
            .map(|_| char::from(32 + noise.below(95) as u8))
            .collect(),
        2 => valid[..noise.below(valid.len())].to_owned(),
        3 => {
            let mut bytes = valid.as_bytes().to_vec();
            for _ in 0..=noise.below(4) {
                let i = noise.below(bytes.len());
                bytes[i] = noise.next() as u8;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        4 => other.to_owned(),
        5 => ["", "null", "{}", "[]", "true", "\"text\"", "1e999", "-0"][noise.below(8)].to_owned(),
        6 => format!("{}{}", "[".repeat(200 + len), "]".repeat(200 + len)),
        7 => {
            let mut doc: serde_json::Value = serde_json::from_str(valid).unwrap();
            let keys: Vec<String> = doc.as_object().unwrap().keys().cloned().collect();
            let key = &keys[noise.below(keys.len())];
            doc[key.as_str()] = match noise.below(4) {
                0 => serde_json::Value::Null,
                1 => serde_json::json!(-1),
                2 => serde_json::json!("\u{0}"),
                _ => serde_json::json!({ "nested": [1, 2, 3] }),
            };
            doc.to_string()
        }
        _ => {
            let mut doc: serde_json::Value = serde_json::from_str(valid).unwrap();
            doc["unexpected"] = serde_json::json!(true);
            doc.to_string()
        }
    }
}

struct Stack {
    spawned: Spawned,
    ports: Backend,
    bus: Arc<RecordingBus>,
    orchestrator: Arc<como_orchestrator::runtime::OrchestratorStats>,
    workers: Vec<Arc<como_workers::runtime::WorkerStats>>,
}

fn catalogue() -> VenueCatalogue {
    VenueCatalogue::new([(
        VENUE_LARGE.to_owned(),
        VenuePrice {
            credits_per_guest: 600,
        },
    )])
}

async fn start() -> Stack {
    let mut recording = None;
    let spawned = spawn_app(
        SpawnOptions {
            simulators: SimConfig {
                bulk_members: 0,
                ..SimConfig::default()
            },
            venues: Some(catalogue()),
            quick: true,
            ..SpawnOptions::default()
        },
        |app| {
            app.wrap_ports(|mut ports| {
                let bus = Arc::new(RecordingBus {
                    inner: ports.bus.clone(),
                    rejections: Mutex::new(Vec::new()),
                });
                ports.bus = bus.clone();
                recording = Some(bus);
                ports
            })
        },
    )
    .await
    .unwrap();
    let orchestrator = spawned.running.orchestrator.clone().unwrap();
    let workers = spawned
        .running
        .workers
        .iter()
        .map(|(_, w)| w.stats())
        .collect();
    Stack {
        ports: spawned.ports().clone(),
        bus: recording.unwrap(),
        spawned,
        orchestrator,
        workers,
    }
}

fn booking(request_id: &str) -> BookingRequested {
    let date = Utc::now().date_naive() + chrono::Days::new(30);
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(MEMBER_RICH).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request
}

/// Valid messages of each queue, for another saga than the one that must complete.
fn valid_messages() -> BTreeMap<QueueName, String> {
    let other =
        examples::booking_request("not-this-one", NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
    let check = examples::command(
        &other,
        "check_credits",
        CommandKind::Action,
        OperationKind::CheckCredits,
        &[],
    );
    let hold = examples::command(
        &other,
        "hold_slot",
        CommandKind::Action,
        OperationKind::HoldSlot,
        &[],
    );
    let reply = examples::reply(&check, examples::all_outcomes().remove(0));
    let needs = examples::all_events(&other)
        .into_iter()
        .find(|e| e.body.type_name() == "SagaNeedsOperator")
        .expect("an example of every event");
    BTreeMap::from([
        (QueueName::Requests, serde_json::to_string(&other).unwrap()),
        (QueueName::Replies, serde_json::to_string(&reply).unwrap()),
        (
            QueueName::Commands(Worker::Crm),
            serde_json::to_string(&check).unwrap(),
        ),
        (
            QueueName::Commands(Worker::Sevenrooms),
            serde_json::to_string(&hold).unwrap(),
        ),
        (
            QueueName::Notifications,
            serde_json::to_string(&needs).unwrap(),
        ),
    ])
}

/// Whether `body` must be dead-lettered on `queue` (and so is garbage there): a request the edge
/// refuses, a reply that cannot be read or names no saga running here, a command that cannot be
/// read or is for the other worker.
fn is_garbage(queue: QueueName, body: &str, running: SagaId, catalogue: &VenueCatalogue) -> bool {
    let today = Utc::now().date_naive();
    match queue {
        QueueName::Requests => parse_booking_request(body.as_bytes(), today)
            .and_then(|r| catalogue.check(&r))
            .is_err(),
        QueueName::Replies => {
            InvalidInput::parse_json::<WorkerReply>(body.as_bytes())
                .is_ok_and(|r| r.saga_id != running)
                || InvalidInput::parse_json::<WorkerReply>(body.as_bytes()).is_err()
        }
        QueueName::Commands(worker) => InvalidInput::parse_json::<WorkerCommand>(body.as_bytes())
            .map_or(true, |c| c.worker != worker),
        QueueName::Notifications => serde_json::from_str::<como_schemas::SagaEvent>(body).is_err(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_queue_is_dead_lettered_and_a_valid_booking_still_completes() {
    let stack = start().await;
    let seed = 0x5eed_0000_0000_0008_u64;
    let mut noise = Noise(seed);
    let request = booking("garbage-stream-ok");
    let saga = request.saga_id();
    let catalogue = catalogue();
    let valid = valid_messages();
    let queues: Vec<QueueName> = valid.keys().copied().collect();
    let mut sent: BTreeMap<QueueName, Vec<String>> = BTreeMap::new();
    for half in 0..2 {
        for _ in 0..PER_QUEUE / 2 {
            for (i, queue) in queues.iter().enumerate() {
                let other = &valid[&queues[(i + 1) % queues.len()]];
                let body = loop {
                    let body = garbage(&mut noise, &valid[queue], other);
                    if is_garbage(*queue, &body, saga, &catalogue) {
                        break body;
                    }
                };
                stack
                    .ports
                    .queue
                    .send(*queue, vec![OutgoingMessage::new(body.clone())])
                    .await
                    .unwrap();
                sent.entry(*queue).or_default().push(body);
            }
        }
        if half == 0 {
            submit(&stack.ports, &request).await.unwrap();
        }
    }

    // The booking completes in the middle of the stream.
    let mut status = None;
    for _ in 0..600 {
        status = stack
            .ports
            .store
            .get(saga)
            .await
            .unwrap()
            .map(|s| s.value.status.kind());
        if status.is_some_and(|s| s != StatusKind::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(StatusKind::Confirmed), "seed {seed:#x}");
    let ledger = stack.spawned.sims.ledger();
    let redeemed = ledger
        .memberson
        .members
        .iter()
        .flat_map(|m| &m.redemptions)
        .filter(|r| r.status == RedemptionStatus::Redeemed)
        .count();
    assert_eq!(redeemed, 1, "one redemption, for the one valid booking");

    // Every piece of garbage is in its queue's dead letters, with the reason.
    for (queue, bodies) in &sent {
        let mut dead = Vec::new();
        for _ in 0..200 {
            dead = stack
                .ports
                .queue
                .dead_letters(*queue, 10 * PER_QUEUE)
                .await
                .unwrap();
            if dead.len() >= bodies.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut dead_bodies: Vec<&str> = dead.iter().map(|d| d.body.as_str()).collect();
        let mut sent_bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        dead_bodies.sort_unstable();
        sent_bodies.sort_unstable();
        if *queue == QueueName::Requests {
            // A refused request is kept without its guest in the clear (sealed, or not kept).
            assert_eq!(
                dead_bodies.len(),
                sent_bodies.len(),
                "{queue}: seed {seed:#x}"
            );
            for body in &dead_bodies {
                for personal in ["Mei Ling", "6591234567", "mei.ling@"] {
                    assert!(
                        !body.contains(personal),
                        "{personal} kept in the clear: {body}"
                    );
                }
            }
        } else {
            assert_eq!(dead_bodies, sent_bodies, "{queue}: seed {seed:#x}");
        }
        for d in &dead {
            assert_eq!(
                d.receive_count, 1,
                "{queue}: dead-lettered at first sight: {d:?}"
            );
            let expected = match queue {
                QueueName::Requests => "invalid",
                QueueName::Replies => "reply",
                QueueName::Commands(_) => "command",
                QueueName::Notifications => "notification",
            };
            assert!(d.reason.contains(expected), "{queue}: {}", d.reason);
        }
    }

    // Well-formed messages with no place here were among them, refused for what they say.
    let reasons = |queue| {
        let dead = stack.ports.queue.dead_letters(queue, 10 * PER_QUEUE);
        async move { dead.await.unwrap().into_iter().map(|d| d.reason) }
    };
    assert!(
        reasons(QueueName::Replies)
            .await
            .any(|r| r.contains("does not exist"))
    );
    assert!(
        reasons(QueueName::Requests)
            .await
            .any(|r| r.contains("not a venue bookable"))
    );
    assert!(
        reasons(QueueName::Commands(Worker::Crm))
            .await
            .any(|r| r.contains("for the sevenrooms worker"))
    );

    // Every bad request was also published as a rejection, naming its message.
    let dead_requests = stack
        .ports
        .queue
        .dead_letters(QueueName::Requests, 10 * PER_QUEUE)
        .await
        .unwrap();
    let rejections = stack.bus.rejections.lock().unwrap().clone();
    let mut rejected: Vec<String> = rejections.iter().map(|r| r.event_id.clone()).collect();
    let mut expected: Vec<String> = dead_requests
        .iter()
        .map(|d| format!("rejected:{}", d.message_id))
        .collect();
    rejected.sort_unstable();
    rejected.dedup();
    expected.sort_unstable();
    assert_eq!(rejected, expected);
    assert!(
        rejections
            .iter()
            .all(|r| !r.field.is_empty() && !r.reason.is_empty())
    );

    // Nothing stopped, and nothing failed on the way.
    assert!(!stack.spawned.running.any_stopped(), "a loop stopped");
    let o = stack.orchestrator.snapshot();
    assert_eq!(o.started, 1);
    assert_eq!(o.rejected, PER_QUEUE as u64);
    assert_eq!(o.errors, 0);
    let dead_commands: u64 = stack
        .workers
        .iter()
        .map(|w| w.snapshot().dead_lettered)
        .sum();
    assert_eq!(dead_commands, 2 * PER_QUEUE as u64);
    assert!(stack.workers.iter().all(|w| w.snapshot().errors == 0));

    stack.spawned.stop().await.unwrap();
}
