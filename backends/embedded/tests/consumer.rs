//! The consumer pump keeps a slow message hidden: a handler that runs past the visibility
//! timeout has its message's visibility extended, so no second receive gets it meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_ports::consumer::{ConsumeOptions, consume};
use como_ports::{OutgoingMessage, QueueName, SystemClock};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_message_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(
        dir.path().join("c.sqlite"),
        EmbeddedConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let ports = backend.ports();
    ports
        .queue
        .send(
            QueueName::Replies,
            vec![OutgoingMessage::new("slow".into())],
        )
        .await
        .unwrap();

    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let pump = {
        let (queue, handled, shutdown) = (ports.queue.clone(), handled.clone(), shutdown.clone());
        tokio::spawn(consume(
            ports.queue.clone(),
            QueueName::Replies,
            ConsumeOptions {
                concurrency: 4,
                batch: 4,
                visibility: Duration::from_millis(400),
                poll_wait: Duration::from_millis(50),
                error_backoff: Duration::from_millis(50),
            },
            shutdown,
            move |d| {
                let (queue, handled) = (queue.clone(), handled.clone());
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    // Three visibility timeouts long.
                    tokio::time::sleep(Duration::from_millis(1_200)).await;
                    queue
                        .delete(QueueName::Replies, vec![d.receipt])
                        .await
                        .unwrap();
                }
            },
        ))
    };
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    shutdown.cancel();
    pump.await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "received once while it ran"
    );
    let left = ports
        .queue
        .receive(
            QueueName::Replies,
            10,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "and deleted when done");
    backend.close().await;
}
