//! The saga store on one DynamoDB table (on-demand capacity), keyed `pk` / `sk`:
//!
//! | item | `pk` | `sk` | what it holds |
//! |---|---|---|---|
//! | saga | `S#<saga id>` | `S` | the state and its outbox (`sz`), the version `v`, index keys |
//! | history | `S#<saga id>` | `H#<version>` | the history entries one write appended |
//! | idempotency record | `R#<key>` | `R` | a worker's recorded reply (see `records`) |
//!
//! History lives in its own items, so a saga item stays small however long the saga runs
//! (DynamoDB's item limit is 400 KB, and a write costs one unit per KB of item): the state and
//! the outbox are one JSON value, deflated (`sz`), together because the commands in the outbox
//! repeat much of the state. Each write is one conditional `PutItem` on the version (`attribute_not_exists(pk)`
//! for a create).
//!
//! Indexes (both sharded by the saga id's first byte, `index_shards` ways, so that no one
//! status or timer bucket is a hot partition; queries fan out over the shards and merge):
//! - `by-status`: `gs_pk` = `<status>#<shard>`, `gs_sk` = `<updated_at, 15 digits>#<saga id>`,
//!   projecting the list summary: every query, page and count reads only the index.
//! - `by-due` (sparse): `due_pk` = `due#<shard>`, `due_sk` = `<due rounded up to 10 s, 15
//!   digits>#<saga id>`, projecting the exact due time `dt` and the saga's own timer `wk`;
//!   present while a live saga has a timer or its outbox may be undelivered (see `outbox`).
//!   Rounded, because each transition moves a saga's timer a little: with the key unchanged the
//!   index entry is updated in place (one write unit) instead of deleted and put again (two).
//!   `due` reads the buckets up to now's and keeps the entries whose `dt` has come.
//!
//! TTL: a finished saga's item expires `retention` after it finished; history items expire
//! `history_retention` after they were written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, Select, WriteRequest};
use como_engine::{HistoryEntry, SagaState, StatusKind};
use como_ports::store::current_step;
use como_ports::{
    CreateOutcome, Effects, PortError, PortResult, QueueName, Receipt, SagaPage, SagaQuery,
    SagaStore, SagaSummary, UpdateOutcome, Versioned,
};
use como_schemas::{SagaId, Timestamp};

use crate::error::{code, unavailable};
use crate::names;
use crate::outbox::Outbox;
use crate::{AwsPorts, Clients, ConnectError, Names};

type Item = HashMap<String, AttributeValue>;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1_000;
const CACHE_MAX: usize = 100_000;
/// BatchWriteItem's limit.
const WRITE_BATCH: usize = 25;

/// What this process knows of each saga's outbox: at version `v`, this outbox (if any) may be
/// undelivered. Saves a read between `get` and `update` in the orchestrator's loop.
#[derive(Default)]
pub struct StoreState {
    pending: Mutex<HashMap<SagaId, (u64, Option<Outbox>)>>,
    /// When a look for due timers last found none.
    nothing_due_at: Mutex<Option<std::time::Instant>>,
}

impl StoreState {
    fn remember(&self, id: SagaId, version: u64, pending: Option<Outbox>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(id, (version, pending));
    }

    fn recall(&self, id: SagaId, version: u64) -> Option<Option<Outbox>> {
        let map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            Some((v, pending)) if *v == version => Some(pending.clone()),
            _ => None,
        }
    }
}

/// Fails with `ConnectError::Missing` unless the table exists.
pub async fn check_table(clients: &Clients, names: &Names) -> Result<(), ConnectError> {
    clients.calls.count("dynamodb", "DescribeTable");
    match clients
        .dynamo
        .describe_table()
        .table_name(names.table())
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Err(ConnectError::Missing {
            what: "table",
            name: names.table(),
            detail: "it does not exist".into(),
        }),
        Err(e) => Err(ConnectError::Service(
            unavailable("DescribeTable", e).to_string(),
        )),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn saga_pk(id: SagaId) -> String {
    format!("S#{id}")
}

const SAGA_SK: &str = "S";

fn history_sk(version: u64) -> String {
    format!("H#{version:012}")
}

/// A sort key that orders by time, then saga id: never a tie, so pages are stable.
fn time_key(ms: i64, id: SagaId) -> String {
    format!("{:015}#{id}", ms.max(0))
}

/// Every key with a time before `ms` sorts below this.
fn time_bound(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::Corrupt(format!("{what}: {e}"))
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> PortResult<String> {
    serde_json::to_string(v).map_err(|e| PortError::Invalid(format!("cannot encode {what}: {e}")))
}

/// JSON, deflated.
fn packed<T: serde::Serialize>(what: &str, v: &T) -> PortResult<AttributeValue> {
    let invalid =
        |e: &dyn std::fmt::Display| PortError::Invalid(format!("cannot encode {what}: {e}"));
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    serde_json::to_writer(&mut encoder, v).map_err(|e| invalid(&e))?;
    let bytes = encoder.finish().map_err(|e| invalid(&e))?;
    Ok(AttributeValue::B(Blob::new(bytes)))
}

fn unpacked<T: serde::de::DeserializeOwned>(what: &str, v: &AttributeValue) -> PortResult<T> {
    let blob = v.as_b().map_err(|_| corrupt(what, "not binary"))?;
    serde_json::from_reader(flate2::read::DeflateDecoder::new(blob.as_ref()))
        .map_err(|e| corrupt(what, e))
}

fn epoch_seconds_after(now: Timestamp, d: std::time::Duration) -> i64 {
    now.as_millis() / 1_000 + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

/// What `sz` holds.
#[derive(serde::Serialize)]
struct PackRef<'a> {
    s: &'a SagaState,
    #[serde(skip_serializing_if = "Option::is_none")]
    o: Option<&'a Outbox>,
}

#[derive(serde::Deserialize)]
struct Pack {
    s: SagaState,
    #[serde(default)]
    o: Option<Outbox>,
}

/// Timers are indexed by the 10-second bucket they fall in (rounded up: never early).
const DUE_BUCKET_MS: i64 = 10_000;

fn bucket(ms: i64) -> i64 {
    let ms = ms.max(0);
    (ms + DUE_BUCKET_MS - 1) / DUE_BUCKET_MS * DUE_BUCKET_MS
}

/// A saga item as read.
struct Stored {
    version: u64,
    state: SagaState,
    outbox: Option<Outbox>,
    /// The newest history item's version: the outbox up to it was delivered.
    marked: u64,
}

impl Stored {
    fn pending(&self) -> Option<Outbox> {
        self.outbox.clone().filter(|o| o.version > self.marked)
    }
}

impl AwsPorts {
    fn table(&self) -> String {
        self.names.table()
    }

    fn shard(&self, id: SagaId) -> u8 {
        id.as_uuid().as_bytes()[0] % self.config.index_shards.max(1)
    }

    fn shards(&self) -> std::ops::Range<u8> {
        0..self.config.index_shards.max(1)
    }

    /// The saga item and its newest history item, in one consistent query.
    async fn read(&self, id: SagaId) -> PortResult<Option<Stored>> {
        self.clients.calls.count("dynamodb", "Query");
        let out = self
            .clients
            .dynamo
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(saga_pk(id)))
            .scan_index_forward(false)
            .limit(2)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        let items = out.items();
        let Some(saga) = items.first().filter(|i| get_s(i, "sk") == Some(SAGA_SK)) else {
            return Ok(None);
        };
        let marked = items
            .get(1)
            .and_then(|h| get_s(h, "sk"))
            .and_then(|sk| sk.strip_prefix("H#"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let version = get_n(saga, "v")
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt("saga item", "no version"))?;
        let Pack {
            s: state,
            o: outbox,
        } = match saga.get("sz") {
            Some(v) => unpacked(&format!("saga {id}"), v)?,
            None => return Err(corrupt(&format!("saga {id}"), "no state")),
        };
        let stored = Stored {
            version,
            state,
            outbox,
            marked,
        };
        self.store.remember(id, version, stored.pending());
        Ok(Some(stored))
    }

    /// The outbox that may be undelivered at `version`: `Err(())` if the saga is not at it.
    async fn pending_at(&self, id: SagaId, version: u64) -> PortResult<Result<Option<Outbox>, ()>> {
        if let Some(known) = self.store.recall(id, version) {
            return Ok(Ok(known));
        }
        Ok(match self.read(id).await? {
            Some(stored) if stored.version == version => Ok(stored.pending()),
            _ => Err(()),
        })
    }

    fn saga_item(
        &self,
        state: &SagaState,
        version: u64,
        outbox: Option<&Outbox>,
        due: Option<i64>,
        real_wake: Option<i64>,
    ) -> PortResult<Item> {
        let id = state.saga_id;
        let kind = state.status.kind();
        let shard = self.shard(id);
        let summary = SagaSummary::of(state, version);
        let mut item = Item::new();
        item.insert("pk".into(), s(saga_pk(id)));
        item.insert("sk".into(), s(SAGA_SK));
        item.insert("v".into(), n(version));
        item.insert(
            "sz".into(),
            packed(
                "the saga",
                &PackRef {
                    s: state,
                    o: outbox,
                },
            )?,
        );
        item.insert("gs_pk".into(), s(format!("{}#{shard}", kind.as_str())));
        item.insert(
            "gs_sk".into(),
            s(time_key(state.updated_at.as_millis(), id)),
        );
        item.insert("sum".into(), s(encode("the summary", &summary)?));
        if let Some(step) = current_step(state) {
            item.insert("step".into(), s(step.as_str()));
        }
        if let Some(due) = due {
            item.insert("due_pk".into(), s(format!("due#{shard}")));
            item.insert("due_sk".into(), s(time_key(bucket(due), id)));
            item.insert("dt".into(), n(due));
        }
        if let Some(w) = real_wake {
            item.insert("wk".into(), n(w));
        }
        if kind.is_terminal() {
            item.insert(
                names::TTL_ATTRIBUTE.into(),
                n(epoch_seconds_after(self.clock.now(), self.config.retention)),
            );
        }
        Ok(item)
    }

    /// One conditional write with its outbox; then the effects. `None`: the condition failed.
    async fn write(
        &self,
        state: &SagaState,
        expected: Option<u64>,
        effects: Effects,
    ) -> PortResult<Option<u64>> {
        let id = state.saga_id;
        let version = expected.map_or(1, |v| v + 1);
        let carried = match expected {
            None => None,
            Some(e) => match self.pending_at(id, e).await? {
                Ok(pending) => pending,
                Err(()) => return Ok(None),
            },
        };
        let own = Outbox::of(version, &effects);
        let outbox = match (own, carried) {
            (None, None) => None,
            (own, carried) => Some(
                own.unwrap_or(Outbox {
                    version,
                    ..Outbox::default()
                })
                .after(carried)
                .with_marker(),
            ),
        };
        let now = self.clock.now();
        let real_wake = (!state.status.kind().is_terminal())
            .then_some(state.wake_at)
            .flatten()
            .map(|w| w.as_millis());
        let grace_ms = i64::try_from(self.config.outbox_grace.as_millis()).unwrap_or(i64::MAX / 2);
        let outbox_due = outbox.as_ref().map(|_| now.as_millis() + grace_ms);
        let due = match (real_wake, outbox_due) {
            (Some(w), Some(o)) => Some(w.min(o)),
            (w, o) => w.or(o),
        };
        // The entry stays when the saga's own timer comes first anyway: a timer's write
        // carries a still-pending outbox forward.
        let clear_after = outbox_due.is_some_and(|o| real_wake.is_none_or(|w| w > o));
        let item = self.saga_item(state, version, outbox.as_ref(), due, real_wake)?;

        self.clients.calls.count("dynamodb", "PutItem");
        let put = self
            .clients
            .dynamo
            .put_item()
            .table_name(self.table())
            .set_item(Some(item));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(e) => put
                .condition_expression("v = :expected")
                .expression_attribute_values(":expected", n(e)),
        };
        match put.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(unavailable("PutItem", e)),
        }
        self.store.remember(id, version, outbox.clone());
        if let Some(o) = &outbox {
            self.deliver(id, o).await?;
            self.store.remember(id, version, None);
            if clear_after {
                self.clear_outbox(id, version, real_wake).await?;
            }
        }
        if let Some((queue, receipt)) = effects.ack {
            self.acknowledge(queue, receipt).await?;
        }
        Ok(Some(version))
    }

    async fn acknowledge(&self, queue: QueueName, receipt: Receipt) -> PortResult<()> {
        como_ports::Queue::delete(self, queue, vec![receipt]).await
    }

    /// Events, then sends, then the history items, the write's own last: it marks the outbox
    /// done.
    async fn deliver(&self, id: SagaId, outbox: &Outbox) -> PortResult<()> {
        self.publish_events(&outbox.events).await?;
        for (queue, messages) in outbox.sends_by_queue() {
            como_ports::Queue::send(self, queue, messages).await?;
        }
        let expires = epoch_seconds_after(self.clock.now(), self.config.history_retention);
        let mut items: Vec<Item> = Vec::with_capacity(outbox.history.len());
        for (version, entries) in &outbox.history {
            let mut item = Item::new();
            item.insert("pk".into(), s(saga_pk(id)));
            item.insert("sk".into(), s(history_sk(*version)));
            item.insert("h".into(), s(encode("history", entries)?));
            item.insert(names::TTL_ATTRIBUTE.into(), n(expires));
            items.push(item);
        }
        let Some(marker) = items.pop() else {
            return Ok(());
        };
        self.batch_put(items).await?;
        self.clients.calls.count("dynamodb", "PutItem");
        self.clients
            .dynamo
            .put_item()
            .table_name(self.table())
            .set_item(Some(marker))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    async fn batch_put(&self, items: Vec<Item>) -> PortResult<()> {
        for chunk in items.chunks(WRITE_BATCH) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(|e| PortError::Invalid(format!("history item: {e}")))
                })
                .collect::<PortResult<_>>()?;
            for attempt in 0..5u32 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                self.clients.calls.count("dynamodb", "BatchWriteItem");
                let out = self
                    .clients
                    .dynamo
                    .batch_write_item()
                    .request_items(self.table(), requests)
                    .send()
                    .await
                    .map_err(|e| unavailable("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table()))
                    .cloned()
                    .unwrap_or_default();
            }
            if !requests.is_empty() {
                return Err(PortError::Unavailable(format!(
                    "BatchWriteItem: {} items left unprocessed",
                    requests.len()
                )));
            }
        }
        Ok(())
    }

    /// The outbox of `version` is done: index the saga by its own timer only. (The outbox
    /// stays in the item, marked done by its history item, until the next write replaces it.)
    async fn clear_outbox(
        &self,
        id: SagaId,
        version: u64,
        real_wake: Option<i64>,
    ) -> PortResult<()> {
        let update = self
            .clients
            .dynamo
            .update_item()
            .table_name(self.table())
            .key("pk", s(saga_pk(id)))
            .key("sk", s(SAGA_SK))
            .condition_expression("v = :v")
            .expression_attribute_values(":v", n(version));
        let update = match real_wake {
            Some(w) => update
                .update_expression("SET due_sk = :due, dt = :dt")
                .expression_attribute_values(":due", s(time_key(bucket(w), id)))
                .expression_attribute_values(":dt", n(w)),
            None => update.update_expression("REMOVE due_pk, due_sk, dt"),
        };
        self.clients.calls.count("dynamodb", "UpdateItem");
        match update.send().await {
            Ok(_) => Ok(()),
            // Written again since: the newer write owns the item and its index entry.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }

    /// A saga indexed as due for its outbox only: re-send what is pending, then clear.
    async fn recover(&self, id: SagaId) -> PortResult<()> {
        let Some(stored) = self.read(id).await? else {
            return Ok(());
        };
        if let Some(pending) = stored.pending() {
            tracing::info!(saga = %id, version = stored.version, "re-sending an undelivered outbox");
            self.deliver(id, &pending).await?;
            self.store.remember(id, stored.version, None);
        }
        let real_wake = (!stored.state.status.kind().is_terminal())
            .then_some(stored.state.wake_at)
            .flatten()
            .map(|w| w.as_millis());
        self.clear_outbox(id, stored.version, real_wake).await
    }

    /// Up to `want` summaries from one index partition, newest first, below `upper`.
    async fn query_part(
        &self,
        partition: String,
        upper: Option<&str>,
        step: Option<&str>,
        want: usize,
    ) -> PortResult<Vec<(String, SagaSummary)>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .clients
                .dynamo
                .query()
                .table_name(self.table())
                .index_name(names::STATUS_INDEX)
                .scan_index_forward(false)
                .limit(i32::try_from(want.max(1)).unwrap_or(i32::MAX))
                .expression_attribute_values(":p", s(partition.clone()))
                .set_exclusive_start_key(start.take());
            q = match upper {
                Some(u) => q
                    .key_condition_expression("gs_pk = :p AND gs_sk < :u")
                    .expression_attribute_values(":u", s(u)),
                None => q.key_condition_expression("gs_pk = :p"),
            };
            if let Some(step) = step {
                q = q
                    .filter_expression("#step = :step")
                    .expression_attribute_names("#step", "step")
                    .expression_attribute_values(":step", s(step));
            }
            self.clients.calls.count("dynamodb", "Query");
            let page = q.send().await.map_err(|e| unavailable("Query", e))?;
            for item in page.items() {
                let key = get_s(item, "gs_sk").unwrap_or_default().to_owned();
                let summary: SagaSummary =
                    serde_json::from_str(get_s(item, "sum").unwrap_or_default())
                        .map_err(|e| corrupt("saga summary", e))?;
                out.push((key, summary));
            }
            match page.last_evaluated_key() {
                Some(k) if out.len() < want => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn count_part(&self, partition: String) -> PortResult<u64> {
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            self.clients.calls.count("dynamodb", "Query");
            let page = self
                .clients
                .dynamo
                .query()
                .table_name(self.table())
                .index_name(names::STATUS_INDEX)
                .key_condition_expression("gs_pk = :p")
                .expression_attribute_values(":p", s(partition.clone()))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            total += u64::try_from(page.count()).unwrap_or(0);
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(total),
            }
        }
    }
}

#[async_trait]
impl SagaStore for AwsPorts {
    async fn create(&self, state: &SagaState, effects: Effects) -> PortResult<CreateOutcome> {
        Ok(match self.write(state, None, effects).await? {
            Some(version) => CreateOutcome::Created { version },
            None => CreateOutcome::Exists,
        })
    }

    async fn update(
        &self,
        state: &SagaState,
        expected_version: u64,
        effects: Effects,
    ) -> PortResult<UpdateOutcome> {
        Ok(
            match self.write(state, Some(expected_version), effects).await? {
                Some(version) => UpdateOutcome::Updated { version },
                None => UpdateOutcome::Conflict,
            },
        )
    }

    async fn get(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>> {
        Ok(self.read(id).await?.map(|s| Versioned {
            version: s.version,
            value: s.state,
        }))
    }

    async fn query(&self, query: &SagaQuery) -> PortResult<SagaPage> {
        let page = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let cut = query.updated_before.map(|t| time_bound(t.as_millis()));
        let upper = match (query.cursor.clone(), cut) {
            (Some(c), Some(b)) => Some(c.min(b)),
            (c, b) => c.or(b),
        };
        let kinds: Vec<StatusKind> = match query.status {
            Some(k) => vec![k],
            None => StatusKind::ALL.to_vec(),
        };
        let step = query.step.as_ref().map(|s| s.as_str().to_owned());
        let mut all: Vec<(String, SagaSummary)> = Vec::new();
        for kind in kinds {
            for shard in self.shards() {
                all.extend(
                    self.query_part(
                        format!("{}#{shard}", kind.as_str()),
                        upper.as_deref(),
                        step.as_deref(),
                        page + 1,
                    )
                    .await?,
                );
            }
        }
        all.sort_by(|a, b| b.0.cmp(&a.0));
        let more = all.len() > page;
        all.truncate(page);
        let next_cursor = if more {
            all.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(SagaPage {
            items: all.into_iter().map(|(_, s)| s).collect(),
            next_cursor,
        })
    }

    async fn history(&self, id: SagaId) -> PortResult<Vec<HistoryEntry>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.clients.calls.count("dynamodb", "Query");
            let page = self
                .clients
                .dynamo
                .query()
                .table_name(self.table())
                .key_condition_expression("pk = :pk AND begins_with(sk, :h)")
                .expression_attribute_values(":pk", s(saga_pk(id)))
                .expression_attribute_values(":h", s("H#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            for item in page.items() {
                let entries: Vec<HistoryEntry> =
                    serde_json::from_str(get_s(item, "h").unwrap_or_default())
                        .map_err(|e| corrupt(&format!("history of saga {id}"), e))?;
                out.extend(entries);
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(out),
            }
        }
    }

    async fn due(&self, now: Timestamp, limit: usize) -> PortResult<Vec<SagaId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let quiet = *self
            .store
            .nothing_due_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if quiet.is_some_and(|at| at.elapsed() < self.config.due_poll) {
            return Ok(Vec::new());
        }
        // Every bucket up to now's; within them, the entries whose exact time has come.
        let bound = time_bound(bucket(now.as_millis()) + 1);
        let mut found: Vec<(i64, SagaId, Option<i64>)> = Vec::new();
        for shard in self.shards() {
            let mut start: Option<Item> = None;
            let mut here = 0;
            loop {
                self.clients.calls.count("dynamodb", "Query");
                let page = self
                    .clients
                    .dynamo
                    .query()
                    .table_name(self.table())
                    .index_name(names::DUE_INDEX)
                    .key_condition_expression("due_pk = :p AND due_sk < :u")
                    .filter_expression("dt <= :now")
                    .expression_attribute_values(":p", s(format!("due#{shard}")))
                    .expression_attribute_values(":u", s(bound.clone()))
                    .expression_attribute_values(":now", n(now.as_millis()))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| unavailable("Query", e))?;
                for item in page.items() {
                    let id = get_s(item, "due_sk")
                        .and_then(|k| k.split_once('#'))
                        .and_then(|(_, id)| SagaId::parse(id).ok());
                    let (Some(id), Some(at)) = (id, get_n(item, "dt")) else {
                        continue;
                    };
                    found.push((at, id, get_n(item, "wk")));
                    here += 1;
                }
                match page.last_evaluated_key() {
                    Some(k) if here < limit => start = Some(k.clone()),
                    _ => break,
                }
            }
        }
        *self
            .store
            .nothing_due_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = found.is_empty().then(std::time::Instant::now);
        found.sort_by_key(|&(at, id, _)| (at, id));
        let mut due = Vec::new();
        for (_, id, wake) in found {
            if wake.is_some_and(|w| w <= now.as_millis()) {
                if due.len() < limit {
                    due.push(id);
                }
            } else if let Err(e) = self.recover(id).await {
                // It stays indexed; the next sweep tries again.
                tracing::warn!(saga = %id, error = %e, "cannot re-send an outbox yet");
            }
        }
        Ok(due)
    }

    async fn counts(&self) -> PortResult<Vec<(StatusKind, u64)>> {
        let mut counts: BTreeMap<StatusKind, u64> = BTreeMap::new();
        for kind in StatusKind::ALL {
            for shard in self.shards() {
                *counts.entry(kind).or_insert(0) += self
                    .count_part(format!("{}#{shard}", kind.as_str()))
                    .await?;
            }
        }
        Ok(counts.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_then_id() {
        let a = SagaId::parse("00000000-0000-0000-0000-000000000001").unwrap();
        let b = SagaId::parse("00000000-0000-0000-0000-000000000002").unwrap();
        assert!(time_key(999, b) < time_key(1_000, a));
        assert!(time_key(1_000, a) < time_key(1_000, b));
        assert!(time_key(1_000, b) < time_bound(1_001));
        assert!(time_key(1_000, b) > time_bound(1_000));
        assert!(history_sk(9) < history_sk(10));
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), DUE_BUCKET_MS);
        assert_eq!(bucket(DUE_BUCKET_MS), DUE_BUCKET_MS);
        assert_eq!(bucket(DUE_BUCKET_MS + 1), 2 * DUE_BUCKET_MS);
        assert!(history_sk(u64::from(u32::MAX)).as_str() < SAGA_SK);
    }
}
