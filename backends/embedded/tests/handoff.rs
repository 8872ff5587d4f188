//! Long polls wait with the writer: a message sent to a queue where a receive waits is handed to
//! it by the commit that sends it; a receive whose caller gave up is handed nothing; messages
//! that become visible by the clock, or that another process sends, still reach a waiting
//! receive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_ports::{Backend, OutgoingMessage, QueueName, SystemClock};

const QUEUE: QueueName = QueueName::Replies;
const VISIBILITY: Duration = Duration::from_secs(30);

fn open(path: &std::path::Path) -> EmbeddedBackend {
    EmbeddedBackend::open(path, EmbeddedConfig::default(), Arc::new(SystemClock)).unwrap()
}

/// A backend on a new file (kept while the directory lives).
fn fresh() -> (tempfile::TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("h.sqlite"));
    (dir, backend)
}

async fn send(ports: &Backend, body: &str) {
    ports
        .queue
        .send(QUEUE, vec![OutgoingMessage::new(body.into())])
        .await
        .unwrap();
}

async fn receive_from(ports: &Backend, max: usize, wait: Duration) -> Vec<como_ports::Delivery> {
    ports
        .queue
        .receive(QUEUE, max, VISIBILITY, wait)
        .await
        .unwrap()
}

/// A receive that waits up to `wait`, running in its own task.
fn waiting_receive(
    ports: &Backend,
    wait: Duration,
) -> tokio::task::JoinHandle<Vec<como_ports::Delivery>> {
    let ports = ports.clone();
    tokio::spawn(async move { receive_from(&ports, 10, wait).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_is_handed_the_message_by_the_commit_that_sends_it() {
    let (_dir, backend) = fresh();
    let ports = backend.ports();

    let receive = waiting_receive(&ports, Duration::from_secs(10));
    // Let the receive reach the writer and find the queue empty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = backend.commits();
    let sent = Instant::now();
    send(&ports, "one").await;
    let got = receive.await.unwrap();
    let took = sent.elapsed();

    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "one");
    assert_eq!(got[0].receive_count, 1);
    // The send and the lease are one transaction: no second commit to lease it.
    assert_eq!(backend.commits() - before, 1, "commits for one hop");
    assert!(
        took < Duration::from_secs(2),
        "handed over at once, took {took:?}"
    );

    // The lease is a real one: the message is hidden, and its receipt deletes it.
    let now = receive_from(&ports, 10, Duration::ZERO).await;
    assert!(now.is_empty(), "a handed-off message is hidden");
    ports
        .queue
        .delete(QUEUE, vec![got[0].receipt.clone()])
        .await
        .unwrap();
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_whose_caller_gave_up_is_handed_nothing() {
    let (_dir, backend) = fresh();
    let ports = backend.ports();

    let receive = waiting_receive(&ports, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    receive.abort();
    let _ = receive.await;
    send(&ports, "for somebody else").await;

    let got = receive_from(&ports, 10, Duration::ZERO).await;
    assert_eq!(
        got.len(),
        1,
        "the message stayed visible for the next receive"
    );
    // Received once: it was never leased to the receive that gave up.
    assert_eq!(got[0].receive_count, 1);
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_visible_messages_go_first_to_a_new_receive() {
    let (_dir, backend) = fresh();
    let ports = backend.ports();

    send(&ports, "first").await;
    send(&ports, "second").await;
    let got = receive_from(&ports, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "first");
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_reaches_a_waiting_receive_when_it_shows() {
    let (_dir, backend) = fresh();
    let ports = backend.ports();

    let receive = waiting_receive(&ports, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    ports
        .queue
        .send(
            QUEUE,
            vec![OutgoingMessage::new("later".into()).delayed(Duration::from_millis(400))],
        )
        .await
        .unwrap();
    let got = receive.await.unwrap();
    let took = sent.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_secs(3),
        "delivered when it showed, after {took:?}"
    );
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_another_process_sends_reaches_a_waiting_receive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    // Two backends on one file, as two processes would have: each has its own writer.
    let receiver = open(&path);
    let sender = open(&path);

    let receive = waiting_receive(&receiver.ports(), Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    send(&sender.ports(), "from elsewhere").await;
    let got = receive.await.unwrap();
    let took = sent.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "from elsewhere");
    assert!(
        took < Duration::from_secs(2),
        "found within a poll, took {took:?}"
    );
    sender.close().await;
    receiver.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_that_gets_nothing_returns_empty_after_its_wait() {
    let (_dir, backend) = fresh();
    let ports = backend.ports();
    let started = Instant::now();
    let got = receive_from(&ports, 10, Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "waited its wait, {took:?}"
    );
    backend.close().await;
}
