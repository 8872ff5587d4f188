//! Coalescing sends and deletes across callers into SQS batches of up to 10. A call that finds
//! no batch in flight starts one, after waiting the batcher's `linger` for company when the
//! batch would not be full (10 ms for sends by default; 100 ms for deletes, which are off the
//! saga's path); calls made while a batch is in
//! flight join the next one. Under load this
//! turns one request per message into one per ten, which is most of what SQS costs.
//!
//! The batches are flushed by a spawned task, not by a caller's future: a caller that is
//! cancelled while waiting cannot strand the others' messages. Each caller hears the outcome
//! of its own items: the entries of a batch that SQS reports failed are tried again alone (see
//! `queue::send_messages`), and only the callers whose items still failed get the error.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use como_ports::{OutgoingMessage, PortError, PortResult};
use tokio::sync::oneshot;

use crate::Clients;
use crate::queue::{BATCH, BATCH_BYTES, delete_receipts, send_messages};

/// What one batch carries.
pub enum Item {
    Send(OutgoingMessage),
    Delete(String),
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Send(m) => {
                m.body.len()
                    + m.attributes
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            }
            Item::Delete(r) => r.len(),
        }
    }
}

type Waiting = (Item, oneshot::Sender<PortResult<()>>);

/// The batches of one kind (send or delete) on one queue URL.
pub struct Batcher {
    clients: Arc<Clients>,
    url: String,
    pending: Mutex<Vec<Waiting>>,
    flushing: AtomicBool,
    /// How long a batch that would not be full waits for company.
    linger: std::time::Duration,
}

impl Batcher {
    pub fn new(clients: Arc<Clients>, url: String, linger: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            clients,
            url,
            pending: Mutex::new(Vec::new()),
            flushing: AtomicBool::new(false),
            linger,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `items` and wait until the batches holding them are done.
    pub async fn submit(self: &Arc<Self>, items: Vec<Item>) -> PortResult<()> {
        let mut answers = Vec::with_capacity(items.len());
        {
            let mut pending = self.pending();
            for item in items {
                let (tx, rx) = oneshot::channel();
                pending.push((item, tx));
                answers.push(rx);
            }
        }
        if !self.flushing.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.flush().await });
        }
        for answer in answers {
            answer
                .await
                .map_err(|_| PortError::Unavailable("a batch was dropped".into()))??;
        }
        Ok(())
    }

    async fn flush(self: Arc<Self>) {
        loop {
            loop {
                if !self.linger.is_zero() && self.pending().len() < BATCH {
                    tokio::time::sleep(self.linger).await;
                }
                let batch: Vec<Waiting> = {
                    let mut pending = self.pending();
                    let mut n = 0;
                    let mut bytes = 0;
                    while n < pending.len().min(BATCH) {
                        let size = pending[n].0.bytes();
                        if n > 0 && bytes + size > BATCH_BYTES {
                            break;
                        }
                        bytes += size;
                        n += 1;
                    }
                    pending.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let (items, answers): (Vec<Item>, Vec<_>) = batch.into_iter().unzip();
                // Each caller hears of its own items only: a message SQS took is not
                // reported failed because another in its batch was not.
                let outcomes = self.call(items).await;
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            self.flushing.store(false, Ordering::Release);
            // A call queued between the last look and the release finds `flushing` still set
            // and relies on this task: look again.
            if self.pending().is_empty() || self.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// The outcome of each item, in order.
    async fn call(&self, items: Vec<Item>) -> Vec<PortResult<()>> {
        let mut sends = Vec::new();
        let mut deletes = Vec::new();
        let mut order = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Send(m) => {
                    order.push(true);
                    sends.push(m);
                }
                Item::Delete(r) => {
                    order.push(false);
                    deletes.push(r);
                }
            }
        }
        let mut sent = if sends.is_empty() {
            Vec::new()
        } else {
            send_messages(&self.clients, &self.url, sends).await
        }
        .into_iter();
        let mut deleted = if deletes.is_empty() {
            Vec::new()
        } else {
            delete_receipts(&self.clients, &self.url, deletes).await
        }
        .into_iter();
        order
            .into_iter()
            .map(|send| {
                let next = if send { sent.next() } else { deleted.next() };
                next.unwrap_or_else(|| Err(PortError::Unavailable("a batch lost an item".into())))
            })
            .collect()
    }
}
