//! Throughput of the embedded backend with group commit, on a fresh SQLite file per sample:
//!
//! - `queue/send_receive_delete`: producers send one message per call while consumers receive
//!   in batches (long polling) and delete what they got; one element = one message through.
//! - `saga/create_update`: concurrent sagas, each created and then updated four times, every
//!   write with its effects (history, an event, a command sent, the input acknowledged); one
//!   element = one saga transition.
//! - `saga/step_cycle`: the shape of a real step: the orchestrator's update sends a command, a
//!   worker receives it and completes (record + reply + ack), the orchestrator receives the
//!   reply, reads the saga and updates it (+ the next command, ack of the reply); one element
//!   = one step of one saga.
//!
//! Run with `cargo bench -p como-backend-embedded`. To profile one of them, run the bench
//! binary under `perf record` with `--bench saga/step_cycle --profile-time 10`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_engine::{HistoryEntry, HistoryKind, Input, SagaState, como};
use como_ports::{Backend, Effects, OutgoingMessage, QueueName, SystemClock, UpdateOutcome};
use como_schemas::{CommandKind, SagaEvent, SagaId, Worker, examples};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const VISIBILITY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_millis(20);

/// Work left in a run, and when the last of it was done: the clock stops there, not when the
/// consumers notice that their long polls come back empty.
struct Countdown {
    left: AtomicUsize,
    end: std::sync::Mutex<Option<Instant>>,
}

impl Countdown {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(n),
            end: std::sync::Mutex::new(None),
        })
    }

    fn running(&self) -> bool {
        self.left.load(Ordering::Relaxed) > 0
    }

    fn done(&self, k: usize) {
        if self.left.fetch_sub(k, Ordering::Relaxed) == k {
            *self.end.lock().expect("lock") = Some(Instant::now());
        }
    }

    fn elapsed_since(&self, start: Instant) -> Duration {
        self.end
            .lock()
            .expect("lock")
            .map_or_else(|| start.elapsed(), |end| end - start)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

struct Fresh {
    backend: EmbeddedBackend,
    ports: Backend,
    _dir: tempfile::TempDir,
}

fn fresh() -> Fresh {
    let dir = tempfile::tempdir().expect("a temp dir");
    let backend = EmbeddedBackend::open(
        dir.path().join("bench.sqlite"),
        EmbeddedConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("open");
    Fresh {
        ports: backend.ports(),
        backend,
        _dir: dir,
    }
}

fn saga(n: u64) -> SagaState {
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).expect("a date");
    let request = examples::booking_request(&format!("bench-{n}"), date);
    como_engine::transition(
        &como::current(),
        None,
        &Input::Start { request },
        como_ports::Clock::now(&SystemClock),
    )
    .expect("start")
    .state
}

/// What a transition does to the indexed columns: updated now, next timer a step's time-out
/// away.
fn touch(s: &mut SagaState, ports: &Backend) {
    let now = ports.clock.now();
    s.transitions += 1;
    s.updated_at = now;
    s.wake_at = Some(now.plus_ms(15_000));
}

fn history(state: &SagaState) -> HistoryEntry {
    HistoryEntry {
        transition: state.transitions,
        at: state.updated_at,
        kind: HistoryKind::ReplyReceived,
        step: Some(state.steps[0].name.clone()),
        command: Some(CommandKind::Action),
        attempt: Some(1),
        status: state.status.kind(),
        detail: None,
        error: None,
        operator: None,
        reason: None,
    }
}

fn event(state: &SagaState) -> SagaEvent {
    SagaEvent {
        schema_version: como_schemas::SchemaVersion::CURRENT,
        event_id: format!("{}:{}", state.saga_id, state.transitions),
        saga_id: state.saga_id,
        request_id: state.request.request_id.clone(),
        at: state.updated_at,
        traceparent: None,
        body: como_schemas::events::SagaEventBody::StepCompleted {
            step: state.steps[0].name.clone(),
            attempt: 1,
        },
    }
}

/// A command body about the size of a real one.
fn command_body(id: SagaId, step: u64) -> String {
    format!(
        r#"{{"schema_version":1,"command_id":"{id}:redeem_credits:action:{step}","saga_id":"{id}","step":"redeem_credits","kind":"action","attempt":1,"worker":"crm","sent_at":"2030-01-01T00:00:00.000Z","deadline":"2030-01-01T00:00:15.000Z","operation":{{"type":"redeem","member_no":"M100001","points":1200,"receipt_no":"CS-{id}"}}}}"#
    )
}

fn queue_bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("queue");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(1));
    g.bench_function("send_receive_delete", |b| {
        b.iter_custom(|iters| {
            let f = fresh();
            let n = usize::try_from(iters).unwrap_or(usize::MAX);
            let elapsed = rt.block_on(async {
                const PRODUCERS: usize = 8;
                const CONSUMERS: usize = 8;
                let left = Countdown::new(n);
                let start = Instant::now();
                let mut tasks = Vec::new();
                for p in 0..PRODUCERS {
                    let ports = f.ports.clone();
                    let mine = n / PRODUCERS + usize::from(p < n % PRODUCERS);
                    tasks.push(tokio::spawn(async move {
                        for i in 0..mine {
                            let body = command_body(SagaId::from_uuid(uuid_of(i)), 1);
                            ports
                                .queue
                                .send(QueueName::Replies, vec![OutgoingMessage::new(body)])
                                .await
                                .expect("send");
                        }
                    }));
                }
                for _ in 0..CONSUMERS {
                    let ports = f.ports.clone();
                    let left = left.clone();
                    tasks.push(tokio::spawn(async move {
                        while left.running() {
                            let got = ports
                                .queue
                                .receive(QueueName::Replies, 16, VISIBILITY, WAIT)
                                .await
                                .expect("receive");
                            if got.is_empty() {
                                continue;
                            }
                            let k = got.len();
                            ports
                                .queue
                                .delete(
                                    QueueName::Replies,
                                    got.into_iter().map(|d| d.receipt).collect(),
                                )
                                .await
                                .expect("delete");
                            left.done(k);
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
                left.elapsed_since(start)
            });
            rt.block_on(f.backend.close());
            elapsed
        });
    });
    g.finish();
}

fn uuid_of(i: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128(i as u128)
}

fn saga_bench(c: &mut Criterion) {
    let rt = runtime();
    let template = saga(0);
    eprintln!(
        "a saga's state is {} bytes of JSON",
        serde_json::to_string(&template).map_or(0, |s| s.len())
    );
    let mut g = c.benchmark_group("saga");
    g.sample_size(10).measurement_time(Duration::from_secs(10));

    const UPDATES: u64 = 4;
    g.throughput(Throughput::Elements(1 + UPDATES));
    g.bench_function("create_update", |b| {
        b.iter_custom(|iters| {
            let f = fresh();
            let states: Vec<SagaState> = (0..iters).map(saga).collect();
            let elapsed = rt.block_on(async {
                const TASKS: usize = 64;
                let states = Arc::new(states);
                let next = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                let mut tasks = Vec::new();
                for _ in 0..TASKS {
                    let ports = f.ports.clone();
                    let states = states.clone();
                    let next = next.clone();
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(s) = states.get(i) else { break };
                            let crm = QueueName::Commands(Worker::Crm);
                            let mut s = s.clone();
                            let effects = Effects {
                                sends: vec![(
                                    crm,
                                    OutgoingMessage::new(command_body(s.saga_id, 0)),
                                )],
                                events: vec![event(&s)],
                                history: vec![history(&s)],
                                ack: None,
                                answers: None,
                            };
                            ports.store.create(&s, effects).await.expect("create");
                            for v in 1..=UPDATES {
                                touch(&mut s, &ports);
                                let effects = Effects {
                                    sends: vec![(
                                        crm,
                                        OutgoingMessage::new(command_body(s.saga_id, v)),
                                    )],
                                    events: vec![event(&s)],
                                    history: vec![history(&s), history(&s)],
                                    ack: None,
                                    answers: None,
                                };
                                let out = ports.store.update(&s, v, effects).await.expect("update");
                                assert!(matches!(out, UpdateOutcome::Updated { .. }));
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
                start.elapsed()
            });
            rt.block_on(f.backend.close());
            elapsed
        });
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("step_cycle", |b| {
        b.iter_custom(|iters| {
            const STEPS: u64 = 4;
            let f = fresh();
            let sagas = iters.div_ceil(STEPS).max(1);
            let states: Vec<SagaState> = (0..sagas).map(saga).collect();
            let elapsed = rt.block_on(async {
                let crm = QueueName::Commands(Worker::Crm);
                // Sagas exist and their first command is out before the clock starts.
                for s in &states {
                    let effects = Effects {
                        sends: vec![(crm, OutgoingMessage::new(format!("{} 0", s.saga_id)))],
                        ..Effects::default()
                    };
                    f.ports.store.create(s, effects).await.expect("create");
                }
                let left = Countdown::new(usize::try_from(sagas * STEPS).unwrap_or(usize::MAX));
                let start = Instant::now();
                let mut tasks = Vec::new();
                // Workers: record the reply, send it, acknowledge the command.
                for _ in 0..32 {
                    let ports = f.ports.clone();
                    let left = left.clone();
                    tasks.push(tokio::spawn(async move {
                        while left.running() {
                            let got = ports
                                .queue
                                .receive(crm, 4, VISIBILITY, WAIT)
                                .await
                                .expect("receive");
                            for d in got {
                                let key = format!("{}:{}", d.body, d.message_id);
                                ports
                                    .records
                                    .complete(
                                        Some((&key, r#"{"outcome":"succeeded"}"#)),
                                        vec![(QueueName::Replies, OutgoingMessage::new(d.body))],
                                        Some((crm, d.receipt)),
                                    )
                                    .await
                                    .expect("complete");
                            }
                        }
                    }));
                }
                // Orchestrator: read the saga, write the next state with its effects.
                for _ in 0..32 {
                    let ports = f.ports.clone();
                    let left = left.clone();
                    tasks.push(tokio::spawn(async move {
                        while left.running() {
                            let got = ports
                                .queue
                                .receive(QueueName::Replies, 4, VISIBILITY, WAIT)
                                .await
                                .expect("receive");
                            for d in got {
                                // The body says which saga and which of its steps.
                                let (id, step) = d.body.split_once(' ').expect("saga and step");
                                let step: u64 = step.parse().expect("a step");
                                let id = SagaId::parse(id).expect("a saga id");
                                let cur = ports.store.get(id).await.expect("get").expect("saga");
                                let mut s = cur.value;
                                touch(&mut s, &ports);
                                let sends = if step + 1 < STEPS {
                                    let body = format!("{id} {}", step + 1);
                                    vec![(crm, OutgoingMessage::new(body))]
                                } else {
                                    Vec::new()
                                };
                                let effects = Effects {
                                    sends,
                                    events: vec![event(&s)],
                                    history: vec![history(&s)],
                                    ack: Some((QueueName::Replies, d.receipt)),
                                    answers: None,
                                };
                                let out = ports
                                    .store
                                    .update(&s, cur.version, effects)
                                    .await
                                    .expect("update");
                                assert!(matches!(out, UpdateOutcome::Updated { .. }));
                                left.done(1);
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
                // Per requested iteration, though whole sagas ran.
                left.elapsed_since(start)
                    .mul_f64(iters as f64 / (sagas * STEPS) as f64)
            });
            rt.block_on(f.backend.close());
            elapsed
        });
    });
    g.finish();
}

criterion_group!(benches, queue_bench, saga_bench);
criterion_main!(benches);
