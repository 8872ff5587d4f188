//! The outbox against moto: a write whose effects could not be carried out (its command queue
//! gone at that moment, as if the process had died right after the write) still has them
//! carried out, by the timer sweep when the saga will not be written again soon, or by the
//! saga's next write, from another process.

use std::time::Duration;

use aws_config::SdkConfig;
use como_backend_aws::{AwsBackend, AwsConfig, bootstrap, testing};
use como_engine::{Input, SagaState, como};
use como_ports::{Backend, Effects, OutgoingMessage, QueueName, UpdateOutcome};
use como_schemas::{SagaEvent, Worker, examples};

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

fn started(name: &str) -> (SagaState, Vec<SagaEvent>, Vec<como_engine::HistoryEntry>) {
    let date = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let request = examples::booking_request(name, date);
    let now = como_ports::Clock::now(&como_ports::SystemClock);
    let d = como_engine::transition(&como::current(), None, &Input::Start { request }, now)
        .expect("the engine starts a saga");
    (d.state, d.events, d.history)
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

async fn bodies(ports: &Backend, queue: QueueName) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = ports
            .queue
            .receive(queue, 10, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.into_iter().map(|d| d.body));
    }
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
