//! The WAL file stays bounded under steady writes with readers always at work: SQLite only
//! writes from the start of the WAL again when a write begins while no reader still reads from
//! it, which steady load never allows by itself; the background checkpointer's RESTART makes
//! that moment (without it this test's WAL passes a gigabyte).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_engine::{Input, como};
use como_ports::{CreateOutcome, Effects, OutgoingMessage, QueueName, SystemClock};
use como_schemas::{Worker, examples};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_while_readers_never_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.sqlite");
    let backend =
        EmbeddedBackend::open(&path, EmbeddedConfig::default(), Arc::new(SystemClock)).unwrap();
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
            }
            reads
        }));
    }

    let wal = path.with_extension("sqlite-wal");
    let mut largest = 0u64;
    for n in 0..30_000u32 {
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
