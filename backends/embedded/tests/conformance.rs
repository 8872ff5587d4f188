//! Every port conformance suite against the embedded backend (a fresh SQLite file per test, on
//! a manual clock), and what only the embedded backend promises: data survives reopening the
//! file, concurrent writers lose no update, a corrupt row is an error and not a panic, and a
//! process killed with SIGKILL loses nothing it had acknowledged.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_engine::{Input, SagaState, como};
use como_ports::conformance::TestEnv;
use como_ports::{
    Backend, Clock, CreateOutcome, Effects, ManualClock, OutgoingMessage, PortError, QueueName,
    SagaQuery, SystemClock, UpdateOutcome,
};
use como_schemas::{Timestamp, Worker, examples};
use tempfile::TempDir;

const START: Timestamp = Timestamp::from_millis(1_780_000_000_000);

struct Env {
    clock: Arc<ManualClock>,
    ports: Backend,
    backend: EmbeddedBackend,
    // Dropped last: the file goes when the test is done.
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let clock = Arc::new(ManualClock::new(START));
        let backend = open(&dir, clock.clone());
        Self {
            clock,
            ports: backend.ports(),
            backend,
            dir,
        }
    }
}

fn open(dir: &TempDir, clock: Arc<dyn Clock>) -> EmbeddedBackend {
    EmbeddedBackend::open(
        dir.path().join("nested/dir/como.sqlite"),
        EmbeddedConfig::default(),
        clock,
    )
    .expect("open the backend")
}

impl TestEnv for Env {
    fn backend(&self) -> &Backend {
        &self.ports
    }

    async fn pass(&self, d: Duration) {
        self.clock
            .advance_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    fn max_receives(&self) -> u32 {
        EmbeddedConfig::default().max_receives
    }
}

async fn env() -> Env {
    Env::new()
}

como_ports::conformance_tests!(crate::env);

fn saga(n: u32, at: Timestamp) -> SagaState {
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).unwrap();
    let request = examples::booking_request(&format!("embedded-{n}"), date);
    como_engine::transition(&como::current(), None, &Input::Start { request }, at)
        .unwrap()
        .state
}

fn message(body: String) -> OutgoingMessage {
    OutgoingMessage::new(body)
}

#[tokio::test]
async fn everything_survives_closing_and_reopening_the_file() {
    let env = Env::new();
    let p = &env.ports;
    let s = saga(1, START);
    let crm = QueueName::Commands(Worker::Crm);
    p.store.create(&s, Effects::default()).await.unwrap();
    p.queue
        .send(crm, vec![message("queued".into())])
        .await
        .unwrap();
    p.queue
        .send(QueueName::Replies, vec![message("poison".into())])
        .await
        .unwrap();
    let d = p
        .queue
        .receive(
            QueueName::Replies,
            1,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await
        .unwrap();
    p.queue
        .dead_letter(QueueName::Replies, &d[0].receipt, "refused")
        .await
        .unwrap();
    p.records
        .complete(Some(("key", "value")), Vec::new(), None)
        .await
        .unwrap();
    let v = p.secrets.put_pending("token", "t1").await.unwrap();
    p.secrets.promote("token", &v).await.unwrap();
    p.bus
        .publish(examples::all_events(&s.request))
        .await
        .unwrap();
    env.backend.close().await;
    let closed = p.store.get(s.saga_id).await;
    assert!(closed.is_ok(), "reads still work after close: {closed:?}");
    let refused = p.queue.send(crm, vec![message("late".into())]).await;
    assert!(
        matches!(refused, Err(PortError::Unavailable(_))),
        "{refused:?}"
    );

    let again = open(&env.dir, env.clock.clone());
    let p = again.ports();
    let stored = p.store.get(s.saga_id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.value), (1, s.clone()));
    let got = p
        .queue
        .receive(crm, 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "queued");
    let dead = p.queue.dead_letters(QueueName::Replies, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        p.records.get("key").await.unwrap().as_deref(),
        Some("value")
    );
    assert_eq!(
        p.secrets.current("token").await.unwrap().unwrap().value,
        "t1"
    );
    assert_eq!(p.bus.recent(100).await.unwrap().len(), 6);

    // Message ids are never handed out twice, even after the newest messages were deleted
    // and the file reopened: a receipt or dead letter must never name another message.
    p.queue
        .delete(crm, vec![got[0].receipt.clone()])
        .await
        .unwrap();
    again.close().await;
    let third = open(&env.dir, env.clock.clone());
    let p = third.ports();
    p.queue
        .send(crm, vec![message("after".into())])
        .await
        .unwrap();
    let after = p
        .queue
        .receive(crm, 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].message_id, got[0].message_id);
    assert_ne!(after[0].message_id, dead[0].message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update() {
    let env = Env::new();
    let s = saga(2, START);
    let id = s.saga_id;
    assert_eq!(
        env.ports
            .store
            .create(&s, Effects::default())
            .await
            .unwrap(),
        CreateOutcome::Created { version: 1 }
    );
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let ports = env.ports.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut done = 0;
            while done < EACH {
                let cur = ports.store.get(id).await.unwrap().unwrap();
                let mut next = cur.value.clone();
                next.operator_actions.push(format!("w{w}-{done}"));
                next.transitions += 1;
                let effects = Effects {
                    sends: vec![(QueueName::Replies, message(format!("w{w}-{done}")))],
                    ..Effects::default()
                };
                match ports
                    .store
                    .update(&next, cur.version, effects)
                    .await
                    .unwrap()
                {
                    UpdateOutcome::Updated { version } => {
                        assert_eq!(version, cur.version + 1);
                        seen.push(version);
                        done += 1;
                    }
                    UpdateOutcome::Conflict => tokio::task::yield_now().await,
                }
            }
            seen
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let seen = t.await.unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "one writer's versions only go up: {seen:?}"
        );
        versions.extend(seen);
    }
    versions.sort_unstable();
    let total = WRITERS * EACH;
    let expected: Vec<u64> = (2..=1 + total as u64).collect();
    assert_eq!(versions, expected, "every version won exactly once");

    let last = env.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(last.version, 1 + total as u64);
    let actions: BTreeSet<&String> = last.value.operator_actions.iter().collect();
    assert_eq!(actions.len(), total, "no update was lost");

    // Only the winners' effects: one message per successful update.
    let mut bodies = BTreeSet::new();
    loop {
        let got = env
            .ports
            .queue
            .receive(
                QueueName::Replies,
                100,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        bodies.extend(got.into_iter().map(|d| d.body));
    }
    assert_eq!(bodies.len(), total);
}

#[tokio::test]
async fn a_corrupt_row_is_an_error_not_a_panic() {
    let env = Env::new();
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).unwrap();
    let request = examples::booking_request("embedded-3", date);
    let d =
        como_engine::transition(&como::current(), None, &Input::Start { request }, START).unwrap();
    let s = d.state.clone();
    let effects = Effects {
        history: d.history.clone(),
        ..Effects::default()
    };
    env.ports.store.create(&s, effects).await.unwrap();
    assert_eq!(env.ports.store.history(s.saga_id).await.unwrap(), d.history);
    env.backend.close().await;
    {
        let conn = rusqlite::Connection::open(env.backend.path()).unwrap();
        conn.execute("UPDATE sagas SET state = '{\"not\": \"a saga\"}'", [])
            .unwrap();
        conn.execute("UPDATE history SET entry = 'garbage'", [])
            .unwrap();
    }
    let again = open(&env.dir, env.clock.clone());
    let p = again.ports();
    let got = p.store.get(s.saga_id).await;
    assert!(matches!(got, Err(PortError::Corrupt(_))), "{got:?}");
    let listed = p.store.query(&como_ports::SagaQuery::default()).await;
    assert!(matches!(listed, Err(PortError::Corrupt(_))), "{listed:?}");
    let history = p.store.history(s.saga_id).await;
    assert!(matches!(history, Err(PortError::Corrupt(_))), "{history:?}");
}

#[tokio::test]
async fn a_malformed_receipt_in_effects_writes_nothing() {
    let env = Env::new();
    let s = saga(4, START);
    let effects = Effects {
        sends: vec![(QueueName::Replies, message("never".into()))],
        ack: Some((QueueName::Requests, como_ports::Receipt("bogus".into()))),
        ..Effects::default()
    };
    let got = env.ports.store.create(&s, effects).await;
    assert!(matches!(got, Err(PortError::Invalid(_))), "{got:?}");
    assert!(env.ports.store.get(s.saga_id).await.unwrap().is_none());
    let msgs = env
        .ports
        .queue
        .receive(
            QueueName::Replies,
            10,
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(msgs.is_empty());
}

/// The child's side of the crash test: writes sagas with their effects and queue messages from
/// many tasks, printing each one's number only after its write was acknowledged, until killed.
async fn crash_child(path: &str) {
    let backend = EmbeddedBackend::open(path, EmbeddedConfig::default(), Arc::new(SystemClock))
        .expect("open in the child");
    let ports = backend.ports();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let ports = ports.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded, so that a child whose parent died stops by itself.
            for i in 0..20_000u32 {
                let n = t * 100_000 + i;
                if n % 2 == 0 {
                    let s = saga(n, ports.clock.now());
                    let effects = Effects {
                        sends: vec![(QueueName::Commands(Worker::Crm), message(format!("c{n}")))],
                        history: Vec::new(),
                        events: Vec::new(),
                        ack: None,
                        answers: None,
                    };
                    ports.store.create(&s, effects).await.expect("create");
                } else {
                    ports
                        .queue
                        .send(QueueName::Replies, vec![message(format!("r{n}"))])
                        .await
                        .expect("send");
                }
                let mut o = out.lock().unwrap();
                writeln!(o, "acked {n}").unwrap();
                o.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    const CHILD: &str = "COMO_EMBEDDED_CRASH_CHILD";
    if let Ok(path) = std::env::var(CHILD) {
        crash_child(&path).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.sqlite");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    // Kill it in full flight, after a few hundred acknowledged group commits.
    while acked.len() < 3_000 {
        let Some(line) = lines.next() else { break };
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked.push(n.parse::<u32>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before it died counts too.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked.push(n.parse::<u32>().unwrap());
        }
    }
    assert!(
        acked.len() >= 3_000,
        "the child acknowledged only {}",
        acked.len()
    );

    let backend = EmbeddedBackend::open(&path, EmbeddedConfig::default(), Arc::new(SystemClock))
        .expect("reopen after the crash");
    let ports = backend.ports();
    let mut bodies = BTreeSet::new();
    for q in [QueueName::Commands(Worker::Crm), QueueName::Replies] {
        loop {
            let got = ports
                .queue
                .receive(q, 1_000, Duration::from_secs(600), Duration::ZERO)
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            bodies.extend(got.into_iter().map(|d| d.body));
        }
    }
    let mut missing = Vec::new();
    for n in &acked {
        if n % 2 == 0 {
            let id = saga(*n, START).saga_id;
            if ports.store.get(id).await.unwrap().is_none() || !bodies.contains(&format!("c{n}")) {
                missing.push(*n);
            }
        } else if !bodies.contains(&format!("r{n}")) {
            missing.push(*n);
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

#[tokio::test]
async fn a_queue_can_have_its_own_receive_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::default();
    config.queue_max_receives.insert(QueueName::Replies, 1);
    let clock = Arc::new(ManualClock::new(START));
    let backend =
        EmbeddedBackend::open(dir.path().join("q.sqlite"), config, clock.clone()).unwrap();
    let p = backend.ports();
    for q in [QueueName::Replies, QueueName::Requests] {
        p.queue.send(q, vec![message("m".into())]).await.unwrap();
        assert_eq!(
            p.queue
                .receive(q, 1, Duration::from_secs(1), Duration::ZERO)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    clock.advance_ms(2_000);
    let replies = p
        .queue
        .receive(
            QueueName::Replies,
            1,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(replies.is_empty(), "one receive allowed on replies");
    assert_eq!(
        p.queue
            .dead_letters(QueueName::Replies, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let requests = p
        .queue
        .receive(
            QueueName::Requests,
            1,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(requests.len(), 1, "the default limit elsewhere");
}

/// A SQLite error in one operation rolls back its group; the others are run again alone and
/// commit, and the failing one is answered with the error, with nothing of it written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_operation_fails_alone() {
    let env = Env::new();
    let p = &env.ports;
    p.queue
        .send(QueueName::Replies, vec![message("first".into())])
        .await
        .unwrap();
    let first = p
        .queue
        .receive(
            QueueName::Replies,
            1,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let next: i64 = first[0].message_id.parse::<i64>().unwrap() + 1;
    {
        // Another writer (not this backend) takes the ids the next sends would get.
        let conn = rusqlite::Connection::open(env.backend.path()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        for id in next..next + 10 {
            conn.execute(
                "INSERT INTO messages (id, queue, visible_at, receive_count, sent_at, body)
                 VALUES (?1, 1, 0, 0, 0, 'intruder')",
                [id],
            )
            .unwrap();
        }
    }
    let s = saga(5, START);
    let crm = QueueName::Commands(Worker::Crm);
    let (sent, created) = tokio::join!(
        p.queue.send(crm, vec![message("doomed".into())]),
        p.store.create(&s, Effects::default()),
    );
    assert!(matches!(sent, Err(PortError::Unavailable(_))), "{sent:?}");
    assert_eq!(created.unwrap(), CreateOutcome::Created { version: 1 });
    assert_eq!(p.store.get(s.saga_id).await.unwrap().unwrap().value, s);
    let got = p
        .queue
        .receive(crm, 10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        got.is_empty(),
        "nothing of the failed send was written: {got:?}"
    );
}

/// Two backends on one file stand for two processes (each role may run as its own process).
fn two_on_one_file() -> (TempDir, EmbeddedBackend, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let a = EmbeddedBackend::open(&path, EmbeddedConfig::default(), Arc::new(SystemClock)).unwrap();
    let b = EmbeddedBackend::open(&path, EmbeddedConfig::default(), Arc::new(SystemClock)).unwrap();
    (dir, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_file_never_share_a_message_id() {
    let (_dir, a, b) = two_on_one_file();
    let batch = |tag: &str| -> Vec<OutgoingMessage> {
        (0..5_000).map(|i| message(format!("{tag}{i}"))).collect()
    };
    // More than one block of reserved ids each, interleaved.
    a.ports()
        .queue
        .send(QueueName::Replies, batch("a"))
        .await
        .unwrap();
    b.ports()
        .queue
        .send(QueueName::Replies, batch("b"))
        .await
        .unwrap();
    a.ports()
        .queue
        .send(QueueName::Replies, batch("c"))
        .await
        .unwrap();
    b.ports()
        .queue
        .send(QueueName::Replies, batch("d"))
        .await
        .unwrap();
    let mut ids = BTreeSet::new();
    let mut bodies = BTreeSet::new();
    loop {
        let got = b
            .ports()
            .queue
            .receive(
                QueueName::Replies,
                1_000,
                Duration::from_secs(600),
                Duration::ZERO,
            )
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            ids.insert(d.message_id);
            bodies.insert(d.body);
        }
    }
    assert_eq!(bodies.len(), 20_000);
    assert_eq!(ids.len(), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_from_another_process_wakes_a_long_poll() {
    let (_dir, a, b) = two_on_one_file();
    let consumer = b.ports();
    let wait = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let (got, ()) = tokio::join!(
        consumer
            .queue
            .receive(QueueName::Requests, 10, Duration::from_secs(30), wait),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.ports()
                .queue
                .send(QueueName::Requests, vec![message("from a".into())])
                .await
                .unwrap();
        }
    );
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "from a");
    assert!(
        started.elapsed() < wait / 2,
        "the long poll did not notice the other process's commit: {:?}",
        started.elapsed()
    );
}

/// Counts by status come from `saga_step_counts`, kept by triggers as sagas change status (a
/// dashboard polls them; they never read the sagas). A file written before the counts were
/// kept (schema version 1) is counted once when it is opened, and kept from then on; and gets
/// each saga's member column (schema version 3), filled in from the sagas.
#[tokio::test]
async fn counts_are_kept_as_sagas_change_status_and_an_older_file_is_counted_once() {
    use como_engine::{SagaStatus, StatusKind};
    let env = Env::new();
    let count = |counts: Vec<(StatusKind, u64)>, kind: StatusKind| {
        counts
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| n)
    };
    let mut sagas = Vec::new();
    for n in 0..5 {
        let s = saga(900 + n, START);
        env.ports
            .store
            .create(&s, Effects::default())
            .await
            .unwrap();
        sagas.push(s);
    }
    // Two of them end confirmed: the counts move with them.
    for s in &mut sagas[..2] {
        s.status = SagaStatus::Confirmed;
        let out = env
            .ports
            .store
            .update(s, 1, Effects::default())
            .await
            .unwrap();
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
    }
    let counts = env.ports.store.counts().await.unwrap();
    assert_eq!(count(counts.clone(), StatusKind::Running), 3, "{counts:?}");
    assert_eq!(
        count(counts.clone(), StatusKind::Confirmed),
        2,
        "{counts:?}"
    );
    env.backend.close().await;
    // As a version-1 build left it: no counts, no triggers.
    {
        let conn = rusqlite::Connection::open(env.backend.path()).unwrap();
        conn.execute_batch(
            "DROP TRIGGER saga_step_counts_insert; DROP TRIGGER saga_step_counts_update;
             DROP TRIGGER saga_step_counts_delete; DROP TABLE saga_step_counts;
             DELETE FROM meta WHERE key = 'saga_step_counts';
             DROP INDEX sagas_by_member; ALTER TABLE sagas DROP COLUMN member;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let again = open(&env.dir, env.clock.clone());
    let p = again.ports();
    // The member of each saga is filled in on open: listing by member finds them.
    let member = sagas[0].request.member_no.clone();
    let by_member = p
        .store
        .query(&SagaQuery {
            member: Some(member),
            ..SagaQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_member.items.len(), 5, "{by_member:?}");
    let counts = p.store.counts().await.unwrap();
    assert_eq!(count(counts.clone(), StatusKind::Running), 3, "{counts:?}");
    assert_eq!(
        count(counts.clone(), StatusKind::Confirmed),
        2,
        "{counts:?}"
    );
    let mut third = sagas[2].clone();
    third.status = SagaStatus::Compensated;
    p.store.update(&third, 1, Effects::default()).await.unwrap();
    let counts = p.store.counts().await.unwrap();
    assert_eq!(count(counts.clone(), StatusKind::Running), 2, "{counts:?}");
    assert_eq!(
        count(counts.clone(), StatusKind::Compensated),
        1,
        "{counts:?}"
    );
    again.close().await;
    // Opened again, it is not counted twice.
    let third_open = open(&env.dir, env.clock.clone());
    let counts = third_open.ports().store.counts().await.unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 5, "{counts:?}");
}
