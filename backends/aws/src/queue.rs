//! The queue port on SQS standard queues, each with a dead-letter queue by redrive policy.
//!
//! - Batches: sends and deletes go out 10 to a call (SQS's maximum); a receive asks for at
//!   most 10. Long polling uses `WaitTimeSeconds` (whole seconds, rounded up, at most 20).
//! - Delays and visibility timeouts are whole seconds in SQS: rounded up, so that a message
//!   never shows early (a delay is at most 15 minutes).
//! - Receipts: SQS asks for the newest receipt handle of a message; moto accepts older ones
//!   too. The backend remembers what it received (`Held`), so that, within a process, a stale
//!   receipt deletes nothing and cannot change visibility or dead-letter (as the port says),
//!   whichever server answers.
//! - Dead letters: `dead_letter` sends the message to the queue's DLQ with the reason in one
//!   message attribute (`como-dead-letter`), then deletes it; a message SQS moved by the
//!   redrive policy has no such attribute, and was received `maxReceiveCount` times.
//!   `redrive` is done by hand (receive from the DLQ, send back, delete), because moto has no
//!   `StartMessageMoveTask`, and because it can redrive single messages by id.
//! - Booking requests submitted as EventBridge events arrive in their envelope; a receive on
//!   the request queue hands over the envelope's `detail`, the `BookingRequested` itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use como_ports::{
    DeadLetter, Delivery, OutgoingMessage, PortError, PortResult, Queue, QueueDepth, QueueName,
    Receipt, RewriteDeadLetter,
};
use como_schemas::Timestamp;
use serde::{Deserialize, Serialize};

use crate::batch::{Batcher, Item};
use crate::error::{code, copy, unavailable};
use crate::{AwsPorts, Clients, ConnectError, Names};

/// SQS's limits.
pub const BATCH: usize = 10;
const MAX_DELAY_SECONDS: u64 = 900;
const MAX_VISIBILITY_SECONDS: u64 = 43_200;
const MAX_WAIT_SECONDS: u64 = 20;
/// A batch's bodies stay under SQS's 256 KiB per call.
pub const BATCH_BYTES: usize = 200 * 1024;
/// The one message attribute a dead letter carries.
const DEAD_LETTER_ATTRIBUTE: &str = "como-dead-letter";
/// How long a listing of the dead letters hides what it read before putting it back.
const LISTING_VISIBILITY: i32 = 30;
/// A held receipt is forgotten after SQS's longest visibility timeout.
const HELD_FOR: Duration = Duration::from_secs(MAX_VISIBILITY_SECONDS);
const HELD_MAX: usize = 200_000;

/// The queues' URLs and what was received through them.
pub struct Queues {
    urls: BTreeMap<QueueName, QueueUrls>,
    held: Mutex<Held>,
    /// Sends and deletes on each queue, coalesced into batches (see `batch`).
    sends: BTreeMap<QueueName, Arc<Batcher>>,
    deletes: BTreeMap<QueueName, Arc<Batcher>>,
    receive_linger: Duration,
    /// When each queue was last received from, and whether that receive filled its batch.
    last_receive: Mutex<BTreeMap<QueueName, (tokio::time::Instant, bool)>>,
}

struct QueueUrls {
    main: String,
    dead: String,
    /// The redrive policy's `maxReceiveCount`.
    max_receives: u32,
}

/// Messages received by this process and not yet deleted, by receipt handle.
#[derive(Default)]
struct Held {
    by_receipt: HashMap<String, HeldMessage>,
    /// The newest receipt handle of each message.
    current: HashMap<String, String>,
}

#[derive(Clone)]
struct HeldMessage {
    message_id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    receive_count: u32,
    received: std::time::Instant,
}

/// Where [`AwsPorts::move_dead_letters`] sends a dead letter.
enum Destination {
    /// Back to its queue (a redrive).
    Queue,
    /// To the dead letters again, changed (a rewrite).
    DeadLetters,
}

/// What a dead letter carries besides its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadLetterNote {
    reason: String,
    message_id: String,
    receive_count: u32,
    at: i64,
}

impl DeadLetterNote {
    /// `attributes` with this note among them, where [`AwsPorts::dead_letter_of`] reads it.
    fn attach(
        &self,
        mut attributes: BTreeMap<String, String>,
    ) -> PortResult<BTreeMap<String, String>> {
        attributes.insert(
            DEAD_LETTER_ATTRIBUTE.to_owned(),
            serde_json::to_string(self)
                .map_err(|e| PortError::Invalid(format!("dead letter note: {e}")))?,
        );
        Ok(attributes)
    }
}

impl Held {
    fn hold(&mut self, receipt: &str, message: HeldMessage) {
        if self.by_receipt.len() >= HELD_MAX {
            self.by_receipt
                .retain(|_, m| m.received.elapsed() < HELD_FOR);
            if self.by_receipt.len() >= HELD_MAX {
                self.by_receipt.clear();
            }
            let live: std::collections::HashSet<&String> = self.by_receipt.keys().collect();
            self.current.retain(|_, r| live.contains(r));
        }
        self.current
            .insert(message.message_id.clone(), receipt.to_owned());
        self.by_receipt.insert(receipt.to_owned(), message);
    }

    /// `Some(true)` for the newest receipt of a message, `Some(false)` for a superseded one,
    /// `None` for one this process never received.
    fn is_current(&self, receipt: &str) -> Option<bool> {
        let m = self.by_receipt.get(receipt)?;
        Some(self.current.get(&m.message_id).map(String::as_str) == Some(receipt))
    }

    fn release(&mut self, receipt: &str) -> Option<HeldMessage> {
        let m = self.by_receipt.remove(receipt)?;
        if self.current.get(&m.message_id).map(String::as_str) == Some(receipt) {
            self.current.remove(&m.message_id);
        }
        Some(m)
    }
}

impl Queues {
    /// Look up every queue's URL and its redrive policy.
    pub async fn resolve(
        clients: &Arc<Clients>,
        names: &Names,
        config: &crate::AwsConfig,
    ) -> Result<Self, ConnectError> {
        let mut urls = BTreeMap::new();
        for q in QueueName::ALL {
            let main = queue_url(clients, &names.queue(q)).await?;
            let dead = queue_url(clients, &names.dead_letter_queue(q)).await?;
            clients.calls.count("sqs", "GetQueueAttributes");
            let attrs = clients
                .sqs
                .get_queue_attributes()
                .queue_url(&main)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send()
                .await
                .map_err(|e| {
                    ConnectError::Service(
                        unavailable(&on_queue("GetQueueAttributes", &main), e).to_string(),
                    )
                })?;
            let max_receives = attrs
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                .and_then(|p| match &p["maxReceiveCount"] {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ConnectError::Missing {
                    what: "redrive policy of queue",
                    name: names.queue(q),
                    detail: "no maxReceiveCount".into(),
                })?;
            urls.insert(
                q,
                QueueUrls {
                    main,
                    dead,
                    max_receives,
                },
            );
        }
        let batchers = |linger| {
            urls.iter()
                .map(|(q, u)| {
                    (
                        *q,
                        Batcher::new(Arc::clone(clients), u.main.clone(), linger),
                    )
                })
                .collect()
        };
        let (sends, deletes) = (batchers(config.send_linger), batchers(config.delete_linger));
        Ok(Self {
            urls,
            held: Mutex::new(Held::default()),
            sends,
            deletes,
            receive_linger: config.receive_linger,
            last_receive: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn url(&self, queue: QueueName) -> &str {
        self.urls.get(&queue).map_or("", |u| u.main.as_str())
    }

    fn urls(&self, queue: QueueName) -> PortResult<&QueueUrls> {
        self.urls
            .get(&queue)
            .ok_or_else(|| PortError::Invalid(format!("no queue {queue}")))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn queue_url(clients: &Clients, name: &str) -> Result<String, ConnectError> {
    clients.calls.count("sqs", "GetQueueUrl");
    match clients.sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| ConnectError::Missing {
                what: "queue",
                name: name.to_owned(),
                detail: "no URL".into(),
            }),
        Err(e) if code(&e).is_some_and(|c| c.contains("NonExistentQueue")) => {
            Err(ConnectError::Missing {
                what: "queue",
                name: name.to_owned(),
                detail: "it does not exist".into(),
            })
        }
        Err(e) => Err(ConnectError::Service(
            unavailable(&format!("SQS GetQueueUrl of queue {name}"), e).to_string(),
        )),
    }
}

/// Whole seconds, rounded up, within `max`.
fn seconds_up(d: Duration, max: u64) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s.min(max)).unwrap_or(i32::MAX)
}

fn string_attribute(value: &str) -> PortResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PortError::Invalid(format!("message attribute: {e}")))
}

fn string_attributes(message: &Message) -> BTreeMap<String, String> {
    message
        .message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn system_attribute(message: &Message, name: &MessageSystemAttributeName) -> Option<String> {
    message.attributes().and_then(|a| a.get(name)).cloned()
}

/// The `detail` of an EventBridge envelope, as JSON text; `None` for anything else.
fn event_detail(body: &str) -> Option<String> {
    if !body.contains("\"detail-type\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let o = v.as_object()?;
    if !(o.contains_key("detail-type") && o.contains_key("source")) {
        return None;
    }
    serde_json::to_string(o.get("detail")?).ok()
}

/// A queue's name, from its URL (the last part of its path).
pub fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// "SQS `op` on queue P-requests", as errors name the call.
fn on_queue(op: &str, url: &str) -> String {
    format!("SQS {op} on queue {}", queue_name(url))
}

/// The pause before the `attempt`-th try (from 1) of a batch's failed entries: `base`
/// doubled each time, half of it random.
pub fn entry_backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
}

/// The error codes of a batch's failed entries, most frequent first: "InternalError (3)".
pub fn codes_text(codes: &BTreeMap<String, usize>) -> String {
    let mut all: Vec<(&String, &usize)> = codes.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    all.iter()
        .map(|(c, n)| format!("{c} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One batch call's entries, each with its place among the caller's items.
pub(crate) type Entries<T> = Vec<(usize, T)>;

/// The outcome of each of `n` items, all `Ok` unless set otherwise.
fn outcomes(n: usize) -> Vec<PortResult<()>> {
    (0..n).map(|_| Ok(())).collect()
}

/// Set the outcome of each item at `places` to (a copy of) `e`.
fn fail_each(out: &mut [PortResult<()>], e: &PortError, places: impl IntoIterator<Item = usize>) {
    for i in places {
        out[i] = Err(copy(e));
    }
}

/// A batch call failed (after the SDK's retries): its entries, the entries not sent yet
/// (`rest`) and those this round already left failed all fail with `e`.
fn fail_call<A, B>(
    out: &mut [PortResult<()>],
    e: &PortError,
    batch: &Entries<A>,
    rest: impl Iterator<Item = usize>,
    failed: &Entries<B>,
) {
    let batch = batch.iter().map(|(i, _)| *i);
    fail_each(
        out,
        e,
        batch.chain(rest).chain(failed.iter().map(|(i, _)| *i)),
    );
}

/// The rounds of a batch operation on one queue: the first takes every entry, each one after
/// takes only the entries the round before left failed (through no fault of ours), after a
/// backoff, up to `entry_attempts` rounds; the entries failed still then fail with the call
/// and the last round's error codes. A caller loops `while rounds.next(&pending)`, counts each
/// failed entry of its batch calls with `failed`, ends each round with `pending =
/// rounds.ended(failed)`, and after the loop fails what is left with `finish`.
pub(crate) struct EntryRounds<'a> {
    clients: &'a Clients,
    what: &'a str,
    tries: u32,
    done: u32,
    /// The error codes of this round's failed entries, and how many of each.
    codes: BTreeMap<String, usize>,
}

impl<'a> EntryRounds<'a> {
    pub(crate) fn new(clients: &'a Clients, what: &'a str) -> Self {
        Self {
            clients,
            what,
            tries: clients.policy.entry_attempts.max(1),
            done: 0,
            codes: BTreeMap::new(),
        }
    }

    /// Whether to make another round of `pending` (none when nothing is pending or no try is
    /// left); after the first, once its backoff has passed.
    pub(crate) async fn next<T>(&mut self, pending: &Entries<T>) -> bool {
        if pending.is_empty() || self.done == self.tries {
            return false;
        }
        if self.done > 0 {
            tokio::time::sleep(entry_backoff(self.clients.policy.entry_backoff, self.done)).await;
        }
        self.done += 1;
        self.codes.clear();
        true
    }

    /// An entry of this round failed with `code`.
    pub(crate) fn failed(&mut self, code: &str) {
        *self.codes.entry(code.to_owned()).or_insert(0) += 1;
    }

    /// The end of a round whose `failed` entries are the next round's.
    pub(crate) fn ended<T>(&self, failed: Entries<T>) -> Entries<T> {
        if !failed.is_empty() {
            tracing::debug!(call = %self.what, failed = failed.len(), codes = %codes_text(&self.codes), "entries of a batch failed");
        }
        failed
    }

    /// Fail the entries still `pending` after the last round: "SQS SendMessageBatch on queue
    /// Q: 1 of 4 messages not `done` after 3 tries: InternalError (1)".
    fn finish<T>(&self, out: &mut [PortResult<()>], pending: &Entries<T>, done: &str) {
        if pending.is_empty() {
            return;
        }
        let e = self.error(pending.len(), out.len(), "messages", done);
        fail_each(out, &e, pending.iter().map(|(i, _)| *i));
    }

    /// The error of `left` of `total` entries (`what`: "messages", "events") still not `done`
    /// after the last round, with the last round's error codes.
    pub(crate) fn error(&self, left: usize, total: usize, what: &str, done: &str) -> PortError {
        PortError::Unavailable(format!(
            "{}: {left} of {total} {what} not {done} after {} tries: {}",
            self.what,
            self.tries,
            codes_text(&self.codes)
        ))
    }
}

/// Send messages to one queue URL, 10 to a call. The outcome of each message, in order: the
/// entries SQS reports failed through no fault of ours are sent again, those alone, after a
/// backoff, up to `entry_attempts` tries, then fail with the queue and the entries' error
/// codes; an entry SQS refuses as wrong is `Invalid`; a call that fails (after the SDK's
/// retries) fails its entries and the ones not sent yet.
pub async fn send_messages(
    clients: &Clients,
    url: &str,
    messages: Vec<OutgoingMessage>,
) -> Vec<PortResult<()>> {
    let total = messages.len();
    let mut out = outcomes(total);
    let mut pending: Entries<SendMessageBatchRequestEntry> = Vec::with_capacity(total);
    for (i, m) in messages.into_iter().enumerate() {
        let attributes: PortResult<HashMap<String, MessageAttributeValue>> = m
            .attributes
            .iter()
            .map(|(k, v)| Ok((k.clone(), string_attribute(v)?)))
            .collect();
        let entry = attributes.and_then(|attributes| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(m.body)
                .delay_seconds(seconds_up(m.delay, MAX_DELAY_SECONDS))
                .set_message_attributes((!attributes.is_empty()).then_some(attributes))
                .build()
                .map_err(|e| PortError::Invalid(format!("message: {e}")))
        });
        match entry {
            Ok(entry) => pending.push((i, entry)),
            Err(e) => out[i] = Err(e),
        }
    }
    let what = on_queue("SendMessageBatch", url);
    let mut rounds = EntryRounds::new(clients, &what);
    while rounds.next(&pending).await {
        let mut failed = Vec::new();
        let mut rest = std::mem::take(&mut pending).into_iter().peekable();
        while rest.peek().is_some() {
            let mut batch: Entries<SendMessageBatchRequestEntry> = Vec::with_capacity(BATCH);
            let mut bytes = 0;
            while let Some((_, e)) = rest.peek() {
                let size = e.message_body().len();
                if batch.len() == BATCH || (!batch.is_empty() && bytes + size > BATCH_BYTES) {
                    break;
                }
                bytes += size;
                batch.extend(rest.next());
            }
            clients.calls.count("sqs", "SendMessageBatch");
            let sent = clients
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(batch.iter().map(|(_, e)| e.clone()).collect()))
                .send()
                .await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    let rest = rest.by_ref().map(|(i, _)| i);
                    fail_call(&mut out, &unavailable(&what, e), &batch, rest, &failed);
                    return out;
                }
            };
            let ok: std::collections::HashSet<&str> =
                answer.successful().iter().map(|r| r.id()).collect();
            let refused = refused_entries(answer.failed());
            for (i, entry) in batch {
                match refused.get(entry.id()) {
                    Some(f) if f.sender_fault() => {
                        out[i] = Err(PortError::Invalid(format!(
                            "{what}: a message was refused: {} {}",
                            f.code(),
                            f.message().unwrap_or_default()
                        )));
                    }
                    Some(f) => {
                        rounds.failed(f.code());
                        failed.push((i, entry));
                    }
                    // Neither taken nor refused: sent again (a duplicate at worst).
                    None if !ok.contains(entry.id()) => {
                        rounds.failed("no answer for the entry");
                        failed.push((i, entry));
                    }
                    None => {}
                }
            }
        }
        pending = rounds.ended(failed);
    }
    rounds.finish(&mut out, &pending, "accepted");
    out
}

/// The entries a batch call's answer reports failed, by id.
fn refused_entries(
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> HashMap<&str, &aws_sdk_sqs::types::BatchResultErrorEntry> {
    failed.iter().map(|f| (f.id(), f)).collect()
}

/// Delete by receipt handle, 10 to a call. The outcome of each receipt, in order: an invalid
/// receipt is a message already gone (done); other failed entries are deleted again, those
/// alone, after a backoff, up to `entry_attempts` tries, then fail with the queue and the
/// entries' error codes.
pub async fn delete_receipts(
    clients: &Clients,
    url: &str,
    receipts: Vec<String>,
) -> Vec<PortResult<()>> {
    let mut out = outcomes(receipts.len());
    let mut pending: Entries<String> = receipts.into_iter().enumerate().collect();
    let what = on_queue("DeleteMessageBatch", url);
    let mut rounds = EntryRounds::new(clients, &what);
    while rounds.next(&pending).await {
        let mut failed = Vec::new();
        let batches: Vec<Entries<String>> = std::mem::take(&mut pending)
            .chunks(BATCH)
            .map(<[_]>::to_vec)
            .collect();
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            let entries = batch
                .iter()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) => {
                    let e = PortError::Invalid(format!("receipt: {e}"));
                    fail_each(&mut out, &e, batch.iter().map(|(i, _)| *i));
                    continue;
                }
            };
            clients.calls.count("sqs", "DeleteMessageBatch");
            let sent = clients
                .sqs
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await;
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    let rest = batches.by_ref().flatten().map(|(i, _)| i);
                    fail_call(&mut out, &unavailable(&what, e), &batch, rest, &failed);
                    return out;
                }
            };
            let refused = refused_entries(answer.failed());
            for (i, receipt) in batch {
                match refused.get(i.to_string().as_str()) {
                    Some(f) if !f.sender_fault() => {
                        rounds.failed(f.code());
                        failed.push((i, receipt));
                    }
                    // Done, or gone already (an invalid receipt).
                    _ => {}
                }
            }
        }
        pending = rounds.ended(failed);
    }
    rounds.finish(&mut out, &pending, "deleted");
    out
}

/// The first failure among outcomes, if any.
pub fn first_failure(outcomes: Vec<PortResult<()>>) -> PortResult<()> {
    outcomes.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

impl AwsPorts {
    /// The batcher and the deletes for `receipts` on `queue`, less those superseded by a newer
    /// receipt of the same message (that receipt's holder decides).
    fn deletes_for(
        &self,
        queue: QueueName,
        receipts: Vec<Receipt>,
    ) -> PortResult<Option<(Arc<Batcher>, Vec<Item>)>> {
        let batcher = self
            .queues
            .deletes
            .get(&queue)
            .ok_or_else(|| PortError::Invalid(format!("no queue {queue}")))?;
        let receipts: Vec<String> = {
            let mut held = self.queues.held();
            receipts
                .into_iter()
                .filter(|r| match held.is_current(&r.0) {
                    // Superseded: the message was received again; leave it to that receipt.
                    Some(false) => {
                        held.release(&r.0);
                        false
                    }
                    _ => {
                        held.release(&r.0);
                        true
                    }
                })
                .map(|r| r.0)
                .collect()
        };
        Ok((!receipts.is_empty()).then(|| {
            (
                Arc::clone(batcher),
                receipts.into_iter().map(Item::Delete).collect(),
            )
        }))
    }

    /// Delete the message whose handling is complete, without waiting for the delete: it
    /// lingers for company (`delete_linger`), and the handler's slot need not wait with it. A
    /// delete that fails, or that a crash prevents, only means the message comes back, is
    /// found to teach nothing, and is deleted then.
    pub(crate) fn acknowledge_in_background(&self, queue: QueueName, receipt: Receipt) {
        match self.deletes_for(queue, vec![receipt]) {
            Ok(Some((batcher, items))) => {
                tokio::spawn(async move {
                    if let Err(e) = batcher.submit(items).await {
                        tracing::warn!(%queue, error = %e, "a delete failed; the message will come back");
                    }
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%queue, error = %e, "cannot delete"),
        }
    }

    pub(crate) async fn send_to(
        &self,
        url: &str,
        messages: Vec<OutgoingMessage>,
    ) -> PortResult<()> {
        first_failure(send_messages(&self.clients, url, messages).await)
    }

    async fn delete_from(&self, url: &str, receipts: Vec<String>) -> PortResult<()> {
        first_failure(delete_receipts(&self.clients, url, receipts).await)
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        visibility: i32,
        wait: i32,
    ) -> PortResult<Vec<Message>> {
        self.clients.calls.count("sqs", "ReceiveMessage");
        let out =
            self.clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(i32::try_from(max.clamp(1, BATCH)).unwrap_or(1))
                .visibility_timeout(visibility)
                .wait_time_seconds(wait)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .customize()
                // A long poll's attempt lasts up to its wait: its timeouts are counted from it.
                .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(
                    self.clients.policy.poll_timeouts(Duration::from_secs(
                        u64::try_from(wait.max(0)).unwrap_or(0),
                    )),
                ))
                .send()
                .await
                .map_err(|e| unavailable(&on_queue("ReceiveMessage", url), e))?;
        Ok(out.messages().to_vec())
    }

    /// Make messages visible again at once, 10 to a call (best effort: a listing that cannot
    /// put one back leaves it hidden for `LISTING_VISIBILITY` seconds only).
    async fn release_all(&self, url: &str, receipts: &[String]) {
        for chunk in receipts.chunks(BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            self.clients
                .calls
                .count("sqs", "ChangeMessageVisibilityBatch");
            if let Err(e) = self
                .clients
                .sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                tracing::warn!(error = %unavailable(&on_queue("ChangeMessageVisibilityBatch", url), e), "dead letters stay hidden a little longer");
            }
        }
    }

    /// Every message of a dead-letter queue, up to `limit`, each hidden while in hand.
    async fn read_dead_letters(&self, url: &str, limit: usize) -> PortResult<Vec<Message>> {
        let mut all = Vec::new();
        while all.len() < limit {
            let got = self
                .receive_from(url, limit - all.len(), LISTING_VISIBILITY, 0)
                .await?;
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        Ok(all)
    }

    /// Every dead letter of `queue`, read and hidden while in hand; each one `choose` answers
    /// for is sent where it says, with the body and attributes it gives, then deleted from the
    /// dead letters: sent first, so that a crash in between keeps both rather than losing it
    /// (redrive: the consumers tolerate a duplicate; rewrite: the next one finds the old letter
    /// again). The others are shown again at once. Returns how many were moved.
    async fn move_dead_letters(
        &self,
        queue: QueueName,
        mut choose: impl FnMut(
            DeadLetter,
            &Message,
        )
            -> PortResult<Option<(Destination, String, BTreeMap<String, String>)>>,
    ) -> PortResult<usize> {
        let urls = self.queues.urls(queue)?;
        let messages = self.read_dead_letters(&urls.dead, usize::MAX).await?;
        let mut moved = 0;
        let mut keep = Vec::new();
        for m in &messages {
            let Some(receipt) = m.receipt_handle() else {
                continue;
            };
            let letter = self.dead_letter_of(queue, urls.max_receives, m);
            let Some((to, body, attributes)) = choose(letter, m)? else {
                keep.push(receipt.to_owned());
                continue;
            };
            let url = match to {
                Destination::Queue => &urls.main,
                Destination::DeadLetters => &urls.dead,
            };
            self.send_to(
                url,
                vec![OutgoingMessage {
                    body,
                    delay: Duration::ZERO,
                    attributes,
                }],
            )
            .await?;
            self.delete_from(&urls.dead, vec![receipt.to_owned()])
                .await?;
            moved += 1;
        }
        self.release_all(&urls.dead, &keep).await;
        Ok(moved)
    }

    fn dead_letter_of(&self, queue: QueueName, max_receives: u32, m: &Message) -> DeadLetter {
        let note = m
            .message_attributes()
            .and_then(|a| a.get(DEAD_LETTER_ATTRIBUTE))
            .and_then(|v| v.string_value())
            .and_then(|s| serde_json::from_str::<DeadLetterNote>(s).ok());
        let sent = system_attribute(m, &MessageSystemAttributeName::SentTimestamp)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match note {
            Some(n) => DeadLetter {
                message_id: n.message_id,
                queue,
                body: m.body().unwrap_or_default().to_owned(),
                reason: n.reason,
                receive_count: n.receive_count,
                dead_lettered_at: Timestamp::from_millis(n.at),
            },
            // Moved by the redrive policy: SQS keeps the message id, and moved it on the
            // receive after its `maxReceiveCount`-th.
            None => DeadLetter {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                queue,
                body: m.body().unwrap_or_default().to_owned(),
                reason: format!(
                    "received {max_receives} times without being deleted (the queue's maxReceiveCount)"
                ),
                receive_count: max_receives,
                dead_lettered_at: Timestamp::from_millis(sent),
            },
        }
    }
}

#[async_trait]
impl Queue for AwsPorts {
    async fn send(&self, queue: QueueName, messages: Vec<OutgoingMessage>) -> PortResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let batcher = self
            .queues
            .sends
            .get(&queue)
            .ok_or_else(|| PortError::Invalid(format!("no queue {queue}")))?;
        batcher
            .submit(messages.into_iter().map(Item::Send).collect())
            .await
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let urls = self.queues.urls(queue)?;
        // After a receive that did not fill its batch, let messages gather for a moment.
        let wait_until = {
            let last = self
                .queues
                .last_receive
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match last.get(&queue) {
                Some((at, false)) => Some(*at + self.queues.receive_linger),
                _ => None,
            }
        };
        if let Some(at) = wait_until {
            tokio::time::sleep_until(at).await;
        }
        let messages = self
            .receive_from(
                &urls.main,
                max,
                seconds_up(visibility, MAX_VISIBILITY_SECONDS),
                seconds_up(wait, MAX_WAIT_SECONDS),
            )
            .await?;
        self.queues
            .last_receive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                queue,
                (
                    tokio::time::Instant::now(),
                    messages.len() >= max.min(BATCH),
                ),
            );
        let mut out = Vec::with_capacity(messages.len());
        let mut held = self.queues.held();
        for m in messages {
            let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                continue;
            };
            let mut body = m.body().unwrap_or_default().to_owned();
            if queue == QueueName::Requests
                && let Some(detail) = event_detail(&body)
            {
                body = detail;
            }
            let attributes = string_attributes(&m);
            let receive_count =
                system_attribute(&m, &MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
            let sent_at = system_attribute(&m, &MessageSystemAttributeName::SentTimestamp)
                .and_then(|s| s.parse().ok())
                .map_or_else(|| self.clock.now(), Timestamp::from_millis);
            held.hold(
                receipt,
                HeldMessage {
                    message_id: id.to_owned(),
                    body: body.clone(),
                    attributes: attributes.clone(),
                    receive_count,
                    received: std::time::Instant::now(),
                },
            );
            out.push(Delivery {
                message_id: id.to_owned(),
                receipt: Receipt(receipt.to_owned()),
                body,
                attributes,
                receive_count,
                sent_at,
            });
        }
        Ok(out)
    }

    async fn delete(&self, queue: QueueName, receipts: Vec<Receipt>) -> PortResult<()> {
        match self.deletes_for(queue, receipts)? {
            Some((batcher, items)) => batcher.submit(items).await,
            None => Ok(()),
        }
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        visibility: Duration,
    ) -> PortResult<()> {
        let url = self.queues.urls(queue)?.main.clone();
        if self.queues.held().is_current(&receipt.0) == Some(false) {
            return Err(PortError::Invalid(
                "the message was received again since this receipt".into(),
            ));
        }
        self.clients.calls.count("sqs", "ChangeMessageVisibility");
        match self
            .clients
            .sqs
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(seconds_up(visibility, MAX_VISIBILITY_SECONDS))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if code(&e).is_some_and(|c| {
                    c.contains("ReceiptHandleIsInvalid") || c.contains("MessageNotInflight")
                }) =>
            {
                self.queues.held().release(&receipt.0);
                Err(PortError::Invalid(format!(
                    "stale receipt: {}",
                    unavailable(&on_queue("ChangeMessageVisibility", &url), e)
                )))
            }
            Err(e) => Err(unavailable(&on_queue("ChangeMessageVisibility", &url), e)),
        }
    }

    /// Move a received message to its dead-letter queue, with `body` in place of its own when
    /// given.
    async fn dead_letter_with(
        &self,
        queue: QueueName,
        receipt: &Receipt,
        reason: &str,
        replacement: Option<String>,
    ) -> PortResult<()> {
        let urls = self.queues.urls(queue)?;
        let message = {
            let held = self.queues.held();
            match held.is_current(&receipt.0) {
                Some(true) => held.by_receipt.get(&receipt.0).cloned(),
                _ => None,
            }
        };
        let Some(m) = message else {
            return Err(PortError::Invalid(
                "no current receipt: the message was deleted, dead-lettered or received again"
                    .into(),
            ));
        };
        let note = DeadLetterNote {
            reason: reason.to_owned(),
            message_id: m.message_id.clone(),
            receive_count: m.receive_count,
            at: self.clock.now().as_millis(),
        };
        let attributes = note.attach(m.attributes.clone())?;
        // Sent first, then deleted: a crash in between leaves the message on its queue as
        // well, to be handled (or dead-lettered) again, never lost.
        self.send_to(
            &urls.dead,
            vec![OutgoingMessage {
                body: replacement.unwrap_or(m.body),
                delay: Duration::ZERO,
                attributes,
            }],
        )
        .await?;
        self.queues.held().release(&receipt.0);
        self.delete_from(&urls.main, vec![receipt.0.clone()]).await
    }

    async fn dead_letters(&self, queue: QueueName, limit: usize) -> PortResult<Vec<DeadLetter>> {
        let urls = self.queues.urls(queue)?;
        let messages = self.read_dead_letters(&urls.dead, limit).await?;
        let mut out: Vec<DeadLetter> = messages
            .iter()
            .map(|m| self.dead_letter_of(queue, urls.max_receives, m))
            .collect();
        let receipts: Vec<String> = messages
            .iter()
            .filter_map(|m| m.receipt_handle().map(str::to_owned))
            .collect();
        self.release_all(&urls.dead, &receipts).await;
        out.sort_by(|a, b| {
            (a.dead_lettered_at, &a.message_id).cmp(&(b.dead_lettered_at, &b.message_id))
        });
        Ok(out)
    }

    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth> {
        let urls = self.queues.urls(queue)?;
        let attributes = |url: String| async move {
            self.clients.calls.count("sqs", "GetQueueAttributes");
            let out = self
                .clients
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(|e| unavailable(&on_queue("GetQueueAttributes", &url), e))?;
            let read = |name: QueueAttributeName| {
                out.attributes()
                    .and_then(|a| a.get(&name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Ok::<_, PortError>((
                read(QueueAttributeName::ApproximateNumberOfMessages),
                read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    + read(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            ))
        };
        let (visible, not_visible) = attributes(urls.main.clone()).await?;
        let (dead_visible, dead_hidden) = attributes(urls.dead.clone()).await?;
        Ok(QueueDepth {
            visible,
            not_visible,
            dead_letters: dead_visible + dead_hidden,
            oldest_sent_at: None,
        })
    }

    async fn rewrite_dead_letters(
        &self,
        queue: QueueName,
        rewrite: &RewriteDeadLetter<'_>,
    ) -> PortResult<usize> {
        self.move_dead_letters(queue, |letter, m| {
            let Some(body) = rewrite(&letter).filter(|b| *b != letter.body) else {
                return Ok(None);
            };
            // The note keeps what the dead letter was (also for one the redrive policy moved,
            // which had none): its id, reason, receive count and when it was set aside.
            let note = DeadLetterNote {
                reason: letter.reason,
                message_id: letter.message_id,
                receive_count: letter.receive_count,
                at: letter.dead_lettered_at.as_millis(),
            };
            let attributes = note.attach(string_attributes(m))?;
            Ok(Some((Destination::DeadLetters, body, attributes)))
        })
        .await
    }

    async fn redrive(
        &self,
        queue: QueueName,
        message_ids: Option<Vec<String>>,
    ) -> PortResult<usize> {
        self.move_dead_letters(queue, |letter, m| {
            let wanted = message_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&letter.message_id));
            if !wanted {
                return Ok(None);
            }
            let mut attributes = string_attributes(m);
            attributes.remove(DEAD_LETTER_ATTRIBUTE);
            Ok(Some((Destination::Queue, letter.body, attributes)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_within_the_limit() {
        assert_eq!(seconds_up(Duration::ZERO, 900), 0);
        assert_eq!(seconds_up(Duration::from_millis(1), 900), 1);
        assert_eq!(seconds_up(Duration::from_millis(1_000), 900), 1);
        assert_eq!(seconds_up(Duration::from_millis(1_001), 900), 2);
        assert_eq!(seconds_up(Duration::from_secs(3_600), 900), 900);
    }

    #[test]
    fn an_event_envelope_is_unwrapped_and_anything_else_is_not() {
        let envelope = r#"{"version":"0","id":"x","detail-type":"BookingRequested","source":"como.booking","detail":{"request_id":"r-1"}}"#;
        assert_eq!(
            event_detail(envelope).as_deref(),
            Some(r#"{"request_id":"r-1"}"#)
        );
        assert_eq!(event_detail(r#"{"request_id":"r-1"}"#), None);
        assert_eq!(event_detail(r#"{"detail-type": 1}"#), None);
        assert_eq!(event_detail("not json \"detail-type\""), None);
    }
}
