//! The outbox against moto: a write whose effects could not be carried out (its command queue
//! gone at that moment, as if the process had died right after the write) still has them
//! carried out, by the timer sweep when the saga will not be written again soon, or by the
//! saga's next write, from another process.

mod common;

use std::time::Duration;

use aws_config::SdkConfig;
use como_backend_aws::{AwsBackend, AwsConfig, bootstrap, testing};
use como_engine::SagaState;
use como_ports::{Backend, Effects, OutgoingMessage, QueueName, UpdateOutcome};
use como_schemas::Worker;

use common::{bodies, started};

const CRM: QueueName = QueueName::Commands(Worker::Crm);

fn config() -> AwsConfig {
    AwsConfig {
        // Every look at the due index is a real one.
        due_poll: Duration::ZERO,
        // The saga's start is what these tests publish.
        events: como_backend_aws::EventSelection::All,
        ..AwsConfig::default()
    }
}

async fn delete_queue(sdk: &SdkConfig, backend: &AwsBackend, queue: QueueName) {
    aws_sdk_sqs::Client::new(sdk)
        .delete_queue()
        .queue_url(backend.queue_url(queue))
        .send()
        .await
        .expect("delete the queue");
}

/// The same deployment as a process started after the crash sees it (the queue made again).
async fn another_process(sdk: &SdkConfig, first: &AwsBackend) -> AwsBackend {
    let config = AwsConfig {
        prefix: first.names().prefix().to_owned(),
        ..config()
    };
    bootstrap::bootstrap(sdk, &config, &[])
        .await
        .expect("bootstrap again");
    AwsBackend::connect_with(sdk, config)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_carries_out_an_outbox_left_behind() {
    let (first, sdk) = testing::fresh("outbox-sweep", config()).await.unwrap();
    let (mut state, events, history) = started("outbox-sweep-1");
    // A saga with no timer of its own: nothing but the outbox's grace brings it back.
    state.wake_at = None;
    let id = state.saga_id;

    delete_queue(&sdk, &first, CRM).await;
    let effects = Effects {
        sends: vec![(CRM, OutgoingMessage::new("check credits".into()))],
        events: events.clone(),
        history: history.clone(),
        ack: None,
        answers: None,
    };
    let failed = first.ports().store.create(&state, effects).await;
    assert!(failed.is_err(), "the send could not happen: {failed:?}");

    let second = another_process(&sdk, &first).await;
    let ports = second.ports();
    let stored = ports
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the write committed");
    assert_eq!(stored.version, 1);
    assert_eq!(
        ports.store.history(id).await.unwrap(),
        history,
        "the history is kept by the write itself"
    );
    assert!(bodies(&ports, CRM).await.is_empty());

    // Before the grace: left alone (its writer may still be at work).
    let now = ports.clock.now();
    assert!(ports.store.due(now, 10).await.unwrap().is_empty());
    assert!(bodies(&ports, CRM).await.is_empty());

    // After it: the sweep carries the outbox out, and it is not a timer of the saga's.
    let later = now.plus_ms(31_000);
    assert!(ports.store.due(later, 10).await.unwrap().is_empty());
    assert_eq!(bodies(&ports, CRM).await, ["check credits"]);
    assert_eq!(ports.store.history(id).await.unwrap(), history);
    let published: Vec<String> = ports
        .bus
        .recent(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    for e in &events {
        assert!(published.contains(&e.event_id), "{} published", e.event_id);
    }

    // Done once: the next sweep finds nothing to send.
    assert!(ports.store.due(later, 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(bodies(&ports, CRM).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_write_carries_an_earlier_outbox_forward() {
    let (first, sdk) = testing::fresh("outbox-next", config()).await.unwrap();
    let (state, events, history) = started("outbox-next-1");
    let id = state.saga_id;

    delete_queue(&sdk, &first, CRM).await;
    let failed = first
        .ports()
        .store
        .create(
            &state,
            Effects {
                sends: vec![(CRM, OutgoingMessage::new("first".into()))],
                events,
                history: history.clone(),
                ack: None,
                answers: None,
            },
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");

    // Another process advances the saga before any sweep: its write takes the first one's
    // effects along.
    let second = another_process(&sdk, &first).await;
    let ports = second.ports();
    let stored = ports.store.get(id).await.unwrap().unwrap();
    let mut next = stored.value.clone();
    next.transitions += 1;
    let mut more = history.clone();
    for h in &mut more {
        h.transition = next.transitions;
    }
    let out = ports
        .store
        .update(
            &next,
            stored.version,
            Effects {
                sends: vec![(CRM, OutgoingMessage::new("second".into()))],
                history: more.clone(),
                ..Effects::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out, UpdateOutcome::Updated { version: 2 });
    let mut got = bodies(&ports, CRM).await;
    got.sort();
    assert_eq!(got, ["first", "second"]);
    let all: Vec<_> = history.iter().chain(&more).cloned().collect();
    assert_eq!(ports.store.history(id).await.unwrap(), all);

    // And nothing is carried any further.
    let stored = ports.store.get(id).await.unwrap().unwrap();
    let out = ports
        .store
        .update(&stored.value, stored.version, Effects::default())
        .await
        .unwrap();
    assert_eq!(out, UpdateOutcome::Updated { version: 3 });
    assert!(bodies(&ports, CRM).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_input_carries_out_what_its_write_left_behind() {
    let (first, sdk) = testing::fresh("outbox-flush", config()).await.unwrap();
    let (mut state, events, history) = started("outbox-flush-1");
    // No timer of its own (as when a saga finishes): no next write will come.
    state.wake_at = None;
    let id = state.saga_id;
    // The message that brought the write.
    let ports = first.ports();
    ports
        .queue
        .send(
            QueueName::Replies,
            vec![OutgoingMessage::new("the reply".into())],
        )
        .await
        .unwrap();
    let input = ports
        .queue
        .receive(
            QueueName::Replies,
            1,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .pop()
        .expect("the input");

    delete_queue(&sdk, &first, CRM).await;
    let effects = Effects {
        sends: vec![
            (CRM, OutgoingMessage::new("book".into())),
            (CRM, OutgoingMessage::new("more".into())),
        ],
        events,
        history,
        ack: Some((QueueName::Replies, input.receipt)),
        answers: None,
    };
    assert!(first.ports().store.create(&state, effects).await.is_err());

    let second = another_process(&sdk, &first).await;
    let ports = second.ports();
    // Nothing indexes it: the redelivered input is what brings it back.
    let later = ports.clock.now().plus_ms(60_000);
    assert!(ports.store.due(later, 10).await.unwrap().is_empty());
    assert!(bodies(&ports, CRM).await.is_empty());
    ports.store.flush(id).await.unwrap();
    let mut got = bodies(&ports, CRM).await;
    got.sort();
    assert_eq!(got, ["book", "more"]);
    // Marked: another redelivery sends nothing again.
    ports.store.flush(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(bodies(&ports, CRM).await.is_empty());
}

/// A command body with this id, as the engine writes it (the outbox knows a command by it).
fn command(id: &str) -> OutgoingMessage {
    OutgoingMessage::new(format!(r#"{{"command_id":"{id}"}}"#))
}

/// A saga old enough that its timers are indexed (a young one's are left to the window
/// scan), written once with a timer in 5 s and one command.
async fn waiting_saga(ports: &Backend, name: &str) -> (SagaState, como_schemas::Timestamp) {
    let (mut state, events, history) = started(name);
    let now = ports.clock.now();
    state.started_at = como_schemas::Timestamp::from_millis(now.as_millis() - 60_000);
    state.wake_at = Some(now.plus_ms(5_000));
    let out = ports
        .store
        .create(
            &state,
            Effects {
                sends: vec![(CRM, command("check-1"))],
                events,
                history,
                ack: None,
                answers: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        out,
        como_ports::CreateOutcome::Created { version: 1 }
    ));
    (state, now)
}

/// The crash runs on AWS saw a hold sent twice with no crash at all: a write leaves the
/// earlier index entry (5 s ahead) where it is, and a sweep (another orchestrator's, say)
/// that met it before the saga's own timer re-sent the write's single command, still awaiting
/// its reply. Its reply proves it delivered, and the saga's timer carries it forward if it
/// was not: the sweep leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_never_re_sends_a_command_awaiting_its_reply() {
    let (backend, _sdk) = testing::fresh("outbox-awaiting", config()).await.unwrap();
    let ports = backend.ports();
    let (mut state, now) = waiting_saga(&ports, "outbox-awaiting-1").await;
    let id = state.saga_id;
    // The check's reply: version 2 sends the hold and waits up to a minute for its reply.
    state.transitions += 1;
    state.wake_at = Some(now.plus_ms(60_000));
    let out = ports
        .store
        .update(
            &state,
            1,
            Effects {
                sends: vec![(QueueName::Commands(Worker::Sevenrooms), command("hold-1"))],
                answers: Some("check-1".into()),
                ..Effects::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out, UpdateOutcome::Updated { version: 2 });
    assert_eq!(bodies(&ports, CRM).await, [r#"{"command_id":"check-1"}"#]);
    let holds = QueueName::Commands(Worker::Sevenrooms);
    assert_eq!(bodies(&ports, holds).await, [r#"{"command_id":"hold-1"}"#]);

    // The index entry from version 1 comes before the saga's timer, and past the grace.
    for at in [10_000, 40_000] {
        assert!(
            ports
                .store
                .due(now.plus_ms(at), 10)
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            bodies(&ports, holds).await.is_empty(),
            "the hold awaiting its reply was sent again by the sweep at +{at} ms"
        );
    }
    // The saga's own timer still comes.
    assert_eq!(
        ports.store.due(now.plus_ms(61_000), 10).await.unwrap(),
        [id]
    );
}

/// An outbox of several sends is marked delivered right after it went out; a sweep that
/// meets it unmarked before the grace is over leaves it to its writer (which may be marking it
/// at that moment), and re-sends it once the grace is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_leaves_a_young_outbox_to_its_writer() {
    let (first, sdk) = testing::fresh("outbox-young", config()).await.unwrap();
    let (mut state, now) = waiting_saga(&first.ports(), "outbox-young-1").await;
    let id = state.saga_id;
    assert_eq!(
        bodies(&first.ports(), CRM).await,
        [r#"{"command_id":"check-1"}"#]
    );
    // Version 2 sends two commands, and its writer stops before they are out.
    state.transitions += 1;
    state.wake_at = Some(now.plus_ms(120_000));
    delete_queue(&sdk, &first, CRM).await;
    let failed = first
        .ports()
        .store
        .update(
            &state,
            1,
            Effects {
                sends: vec![(CRM, command("a")), (CRM, command("b"))],
                answers: Some("check-1".into()),
                ..Effects::default()
            },
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");

    let second = another_process(&sdk, &first).await;
    let ports = second.ports();
    assert!(
        ports
            .store
            .due(now.plus_ms(10_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        bodies(&ports, CRM).await.is_empty(),
        "re-sent within the grace"
    );
    // Past the grace (30 s): sent, once.
    assert!(
        ports
            .store
            .due(now.plus_ms(31_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut got = bodies(&ports, CRM).await;
    got.sort();
    assert_eq!(got, [r#"{"command_id":"a"}"#, r#"{"command_id":"b"}"#]);
    assert!(
        ports
            .store
            .due(now.plus_ms(32_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(bodies(&ports, CRM).await.is_empty());
    assert_eq!(
        ports.store.due(now.plus_ms(121_000), 10).await.unwrap(),
        [id]
    );
}
