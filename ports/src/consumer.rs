//! Consuming a queue: a steady pump rather than batch by batch. Up to `concurrency` messages
//! are handled at once, each in its own task; a receive asks for as many messages as there
//! are free slots, so that one slow message (a downstream's `Retry-After`, a long backoff)
//! never holds up the others. On shutdown the pump stops receiving and waits for the messages
//! in hand; any it could not finish are received again after their visibility timeout.
//!
//! A message whose handling runs long keeps its visibility: every half visibility timeout the
//! pump extends it by another full one, so that a slow call is not received a second time
//! while it is still under way (and a killed process's messages still come back one timeout
//! after the last extension).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::queue::{Delivery, Queue, QueueName};

/// How a queue is consumed.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// At most this many messages per receive.
    pub batch: usize,
    /// How long a received message stays hidden while it is handled.
    pub visibility: Duration,
    /// How long a receive waits for a first message.
    pub poll_wait: Duration,
    /// After a failed receive, wait this long.
    pub error_backoff: Duration,
}

/// Receive from `queue` and run `handle` on every message until `shutdown`.
pub async fn consume<F, Fut>(
    queue: Arc<dyn Queue>,
    name: QueueName,
    options: ConsumeOptions,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let concurrency = options.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let handle = Arc::new(handle);
    while !shutdown.is_cancelled() {
        // Wait for one free slot, then take every other free one without waiting.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while permits.len() < options.batch.max(1) {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // Not raced against shutdown: a receive dropped half-way would leave its messages
        // hidden until their visibility timeout. The wait is short instead.
        match queue
            .receive(name, permits.len(), options.visibility, options.poll_wait)
            .await
        {
            Ok(deliveries) => {
                for delivery in deliveries {
                    let Some(permit) = permits.pop() else { break };
                    let handle = Arc::clone(&handle);
                    let queue = Arc::clone(&queue);
                    let visibility = options.visibility;
                    tokio::spawn(async move {
                        let receipt = delivery.receipt.clone();
                        let work = handle(delivery);
                        tokio::pin!(work);
                        let every = visibility / 2;
                        loop {
                            tokio::select! {
                                () = &mut work => break,
                                () = tokio::time::sleep(every) => {
                                    if let Err(e) =
                                        queue.change_visibility(name, &receipt, visibility).await
                                    {
                                        tracing::debug!(queue = %name, error = %e, "cannot extend a message's visibility");
                                    }
                                }
                            }
                        }
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                crate::health::not_done(&format!("a receive on {name}"), &e, Some(&e));
                drop(permits);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(options.error_backoff) => {}
                }
            }
        }
    }
    // Wait for the messages in hand.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
