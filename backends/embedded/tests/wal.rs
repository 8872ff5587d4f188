//! The WAL file stays bounded under steady writes with readers always at work: SQLite only
//! writes from the start of the WAL again when a write begins while no reader still reads from
//! it, which steady load never allows by itself; the background checkpointer's RESTART makes
//! that moment (without it this test's WAL passes a gigabyte).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use como_backend_embedded::{Durability, EmbeddedBackend, EmbeddedConfig};
use como_engine::{Input, como};
use como_ports::{Backend, CreateOutcome, Effects, OutgoingMessage, QueueName, SystemClock};
use como_schemas::{Worker, examples};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_while_readers_never_stop() {
    let (_dir, path, backend) = fresh(EmbeddedConfig::default());
    let ports = backend.ports();
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).unwrap();
    let first = como_engine::transition(
        &como::current(),
        None,
        &Input::Start {
            request: examples::booking_request("wal-0", date),
        },
        como_ports::Clock::now(&SystemClock),
    )
    .unwrap();

    // Readers that never pause: each reads the first saga over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let id = first.state.saga_id;
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (ports, stop) = (ports.clone(), Arc::clone(&stop));
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = ports.store.get(id).await.unwrap();
                reads += 1;
                // A read is answered on this thread and never waits: without a yield these
                // tasks would never give the runtime back, and a failing test would hang in
                // its shutdown instead of failing.
                tokio::task::yield_now().await;
            }
            reads
        }));
    }

    let wal = path.with_extension("sqlite-wal");
    let mut largest = 0u64;
    for n in 0..30_000u32 {
        create_saga(&ports, n).await;
        if n % 500 == 0 {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    assert!(reads > 1_000, "the readers kept reading: {reads}");
    // The restart threshold is 128 MB, and the checkpointer looks once a second; a restart
    // can wait a round or two for its readers. This test writes over a gigabyte of WAL.
    eprintln!("largest WAL: {} MB", largest >> 20);
    assert!(largest < 448 << 20, "the WAL grew to {} MB", largest >> 20);
    backend.close().await;
}

/// A backend on a new file: the directory (kept while it lives), the file's path, the backend.
fn fresh(config: EmbeddedConfig) -> (tempfile::TempDir, PathBuf, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.sqlite");
    let backend = EmbeddedBackend::open(&path, config, Arc::new(SystemClock)).unwrap();
    (dir, path, backend)
}

/// Starts saga `n` with a 600-byte command, as the orchestrator would.
async fn create_saga(ports: &Backend, n: u32) {
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).unwrap();
    let request = examples::booking_request(&format!("wal-{n}"), date);
    let d = como_engine::transition(
        &como::current(),
        None,
        &Input::Start { request },
        como_ports::Clock::now(&SystemClock),
    )
    .unwrap();
    let effects = Effects {
        sends: vec![(
            QueueName::Commands(Worker::Crm),
            OutgoingMessage::new("x".repeat(600)),
        )],
        events: d.events,
        history: d.history,
        ..Effects::default()
    };
    let out = ports.store.create(&d.state, effects).await.unwrap();
    assert!(matches!(out, CreateOutcome::Created { .. }));
}

/// The checkpointer writes the WAL out to the disk every 10 ms while commits come (so that
/// no checkpoint's sync has a second of WAL to write at once), and not at all while the
/// writer is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_written_out_while_commits_come_and_only_then() {
    let (_dir, _, backend) = fresh(EmbeddedConfig::default());
    let ports = backend.ports();

    let before = assert_no_write_outs(&backend, "before any commit").await;

    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(400) {
        create_saga(&ports, n).await;
        n += 1;
    }
    let during = backend.wal_syncs() - before;
    // About 36 in 400 ms at one every 10 ms (every 100th tick is a checkpoint pass instead).
    assert!(
        during >= 5,
        "{during} write-outs in 400 ms of commits ({n} sagas)"
    );

    assert_no_write_outs(&backend, "after the commits stopped").await;
    backend.close().await;
}

/// With `Durability::PowerLoss` every commit syncs the WAL itself: nothing is left to write out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_out_where_every_commit_syncs() {
    let (_dir, _, backend) = fresh(EmbeddedConfig {
        durability: Durability::PowerLoss,
        ..EmbeddedConfig::default()
    });
    let ports = backend.ports();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(300) {
        create_saga(&ports, n).await;
        n += 1;
    }
    assert!(n > 0);
    assert_no_write_outs(&backend, "with every commit synced").await;
    assert_eq!(backend.wal_syncs(), 0, "{n} sagas");
    backend.close().await;
}

/// Waits for the write-outs to settle (the last commits are written out by one more, which a
/// busy disk may take a while to finish), then checks that none follow for 300 ms. Returns
/// the count.
async fn assert_no_write_outs(backend: &EmbeddedBackend, when: &str) -> u64 {
    let idle = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let mut settled = backend.wal_syncs();
    for _ in 0..50 {
        idle(100).await;
        let now = backend.wal_syncs();
        if now == settled {
            break;
        }
        settled = now;
    }
    idle(300).await;
    assert_eq!(
        backend.wal_syncs(),
        settled,
        "the WAL was written out {when}, with nothing committed"
    );
    settled
}
