//! The saga store on one DynamoDB table (on-demand capacity), keyed `pk` / `sk`:
//!
//! | item | `pk` | `sk` | what it holds |
//! |---|---|---|---|
//! | saga | `S#<saga id>` | `S` | the state, its outbox and its recent history (`sz`), the version `v`, the write's mark `w`, index keys, the outbox marker `m` |
//! | history | `S#<saga id>` | `H#<version>` | the history groups up to that version that the saga item no longer holds |
//! | idempotency record | `R#<key>` | `R` | a worker's recorded reply (with a TTL), or a small shared value changed by `swap` (without one; see `records`) |
//!
//! A write costs one unit per KB of item, so the saga item is kept under 1 KB on the happy
//! path: the state (defaults left out), the outbox (see `outbox`) and the history not yet in a
//! history item are one JSON value, deflated (`sz`); the commands in the outbox repeat much
//! of the state, which deflates away. The history stays in the item until it holds more than
//! `HISTORY_IN_ITEM` entries, then goes to a history item, so no item grows towards
//! DynamoDB's 400 KB limit however long a saga runs. Each write is one conditional `PutItem`
//! on the version (`attribute_not_exists(pk)` for a create), marked with 8 random bytes of
//! its own (`w`): a write whose answer was lost (an error, or a refused condition on the SDK's
//! retry of a put that had committed) is read back, and is done if the item holds its mark
//! (see `settle`), so it is never applied twice nor reported a conflict with itself.
//!
//! Indexes, keys only (sharded by the saga id's first byte, `index_shards` ways, so that no
//! one status or timer is a hot partition; queries fan out over the shards and merge). A write
//! that leaves an index's key attributes as they were costs that index nothing, so both keys
//! are chosen to change rarely:
//! - `by-status`: `gs_pk` = `<status>#<shard>`, `gs_sk` = `<started_at, 15 digits>#<saga id>`:
//!   written when a saga starts and when its status changes. Lists read the keys, then the
//!   items in batches (`BatchGetItem`) for the summary and the filters; counts read only keys.
//! - `by-due` (sparse): `due_pk` = `due#<shard>`, `due_sk` = `<due, 15 digits>#<saga id>`:
//!   present while a live saga has a timer or an outbox may be undelivered. A write leaves an
//!   entry that is early but still ahead where it is (each transition moves a saga's timer a
//!   little later); `due` reads the items of the entries that have come and, for one whose
//!   own timer has not, re-sends a pending outbox and moves the entry to the real time.
//!
//! TTL: a finished saga's item expires `retention` after it finished; history items expire
//! `history_retention` after they were written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use como_engine::{HistoryEntry, SagaState, StatusKind};
use como_ports::{
    CreateOutcome, Effects, PortError, PortResult, SagaPage, SagaQuery, SagaReader, SagaSummary,
    SagaWriter, UpdateOutcome, Versioned,
};
use como_schemas::{SagaId, Timestamp};

use crate::error::{code, reported, unavailable, words};
use crate::names;
use crate::outbox::Outbox;
use crate::{AwsPorts, Clients, ConnectError, Names};

type Item = HashMap<String, AttributeValue>;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1_000;
const CACHE_MAX: usize = 100_000;

/// What this process knows of a saga at one version: the outbox that may be undelivered,
/// the history not yet in history items, and the due time its item is indexed under. Saves a
/// read between `get` and `update` in the orchestrator's loop.
#[derive(Clone, Default)]
struct Known {
    pending: Option<Outbox>,
    history: Vec<(u64, Vec<HistoryEntry>)>,
    due: Option<i64>,
    /// The status the item is indexed under, and the item's size (for the write-unit count).
    status: Option<StatusKind>,
    bytes: usize,
}

#[derive(Default)]
pub struct StoreState {
    known: Mutex<HashMap<SagaId, (u64, Known)>>,
    /// When a look for due timers last found none.
    nothing_due_at: Mutex<Option<std::time::Instant>>,
    /// How far the last window scan of this process went.
    window_upto: Mutex<Option<i64>>,
}

impl StoreState {
    fn remember(&self, id: SagaId, version: u64, known: Known) {
        let mut map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(id, (version, known));
    }

    fn delivered(&self, id: SagaId, version: u64) {
        let mut map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, known)) = map.get_mut(&id)
            && *v == version
        {
            known.pending = None;
        }
    }

    fn recall(&self, id: SagaId, version: u64) -> Option<Known> {
        let map = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            Some((v, known)) if *v == version => Some(known.clone()),
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
            unavailable(
                &format!("DynamoDB DescribeTable on table {}", names.table()),
                e,
            )
            .to_string(),
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

/// An index entry's sort key and the saga it names; none for the entry at `upper` itself (a
/// cursor names the last key of the page before) or a key not in the `<time>#<saga>` form.
fn index_key(item: &Item, upper: Option<&str>) -> Option<(String, SagaId)> {
    let key = get_s(item, "gs_sk")?;
    if Some(key) == upper {
        return None;
    }
    let id = SagaId::parse(key.split_once('#')?.1).ok()?;
    Some((key.to_owned(), id))
}

/// A status-index query of partition `:p` limited to `(lower, upper)`: `upper` exclusive and
/// `lower` inclusive (with both, `BETWEEN` takes `upper` too, and the caller skips it).
fn ranged(q: QueryFluentBuilder, lower: Option<&str>, upper: Option<&str>) -> QueryFluentBuilder {
    match (lower, upper) {
        (None, Some(u)) => q
            .key_condition_expression("gs_pk = :p AND gs_sk < :u")
            .expression_attribute_values(":u", s(u)),
        (Some(l), Some(u)) => q
            .key_condition_expression("gs_pk = :p AND gs_sk BETWEEN :l AND :u")
            .expression_attribute_values(":l", s(l))
            .expression_attribute_values(":u", s(u)),
        (Some(l), None) => q
            .key_condition_expression("gs_pk = :p AND gs_sk >= :l")
            .expression_attribute_values(":l", s(l)),
        (None, None) => q.key_condition_expression("gs_pk = :p"),
    }
}

/// Every key with a time before `ms` sorts below this.
fn time_bound(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::Corrupt(format!("{what}: {e}"))
}

/// The text a packed value is deflated against: a saga's state, its commands, events and
/// history entries as they usually look, so that even a short value finds most of its text
/// already "seen" and deflates to a fraction (a happy-path saga item with its outbox and
/// history: about 1.7 KB deflated plainly, well under 1 KB with the dictionary). Never edit
/// this file: values written with it must stay readable; a new dictionary gets a new version
/// byte.
const PACK_DICTIONARY_V1: &[u8] = include_bytes!("pack-dictionary-v1.txt");
/// The first byte of a packed value: deflated against `PACK_DICTIONARY_V1`.
const PACK_V1: u8 = 1;

/// JSON, deflated against the dictionary, behind a version byte.
fn packed<T: serde::Serialize>(what: &str, v: &T) -> PortResult<AttributeValue> {
    let invalid =
        |e: &dyn std::fmt::Display| PortError::Invalid(format!("cannot encode {what}: {e}"));
    let json = serde_json::to_vec(v).map_err(|e| invalid(&e))?;
    let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
    deflate
        .set_dictionary(PACK_DICTIONARY_V1)
        .map_err(|e| invalid(&e))?;
    let mut out = Vec::with_capacity(json.len() / 2 + 64);
    out.push(PACK_V1);
    loop {
        let status = deflate
            .compress_vec(
                &json[usize::try_from(deflate.total_in())
                    .unwrap_or(usize::MAX)
                    .min(json.len())..],
                &mut out,
                flate2::FlushCompress::Finish,
            )
            .map_err(|e| invalid(&e))?;
        match status {
            flate2::Status::StreamEnd => break,
            _ => out.reserve(out.capacity().max(256)),
        }
    }
    Ok(AttributeValue::B(Blob::new(out)))
}

pub(crate) fn unpacked<T: serde::de::DeserializeOwned>(
    what: &str,
    v: &AttributeValue,
) -> PortResult<T> {
    let blob = v.as_b().map_err(|_| corrupt(what, "not binary"))?;
    let (version, data) = blob
        .as_ref()
        .split_first()
        .ok_or_else(|| corrupt(what, "empty"))?;
    if *version != PACK_V1 {
        return Err(corrupt(
            what,
            format!("packed by a newer build (format {version})"),
        ));
    }
    let mut inflate = flate2::Decompress::new(false);
    inflate
        .set_dictionary(PACK_DICTIONARY_V1)
        .map_err(|e| corrupt(what, e))?;
    let mut json = Vec::with_capacity(data.len() * 4);
    loop {
        let consumed = usize::try_from(inflate.total_in())
            .unwrap_or(usize::MAX)
            .min(data.len());
        let status = inflate
            .decompress_vec(
                &data[consumed..],
                &mut json,
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| corrupt(what, e))?;
        match status {
            flate2::Status::StreamEnd => break,
            _ if json.len() > MAX_UNPACKED => return Err(corrupt(what, "too large")),
            _ if json.len() < json.capacity()
                && usize::try_from(inflate.total_in()).ok() == Some(data.len()) =>
            {
                return Err(corrupt(what, "truncated"));
            }
            _ => json.reserve(json.capacity().max(1024)),
        }
    }
    serde_json::from_slice(&json).map_err(|e| corrupt(what, e))
}

/// No saga item or history item inflates past this (DynamoDB's items are at most 400 KB).
const MAX_UNPACKED: usize = 64 << 20;

fn epoch_seconds_after(now: Timestamp, d: std::time::Duration) -> i64 {
    now.as_millis() / 1_000 + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

/// What `sz` holds: the state, the outbox, and the history not yet in history items.
#[derive(serde::Serialize)]
struct PackRef<'a> {
    s: &'a SagaState,
    #[serde(skip_serializing_if = "Option::is_none")]
    o: Option<&'a Outbox>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    h: &'a [(u64, Vec<HistoryEntry>)],
}

#[derive(serde::Deserialize)]
struct Pack {
    s: SagaState,
    #[serde(default)]
    o: Option<Outbox>,
    #[serde(default)]
    h: Vec<(u64, Vec<HistoryEntry>)>,
}

/// A live saga's timers are indexed only once it is this old (or when one comes sooner): the
/// window scan of `due` looks at every live saga as it reaches this age, so the many sagas
/// that finish younger never write a `by-due` entry. Shorter than any step's time-out.
const TIMER_WINDOW_MS: i64 = 10_000;
/// How often the window scan runs (of the clock's time): a young saga's timer is indexed
/// between `TIMER_WINDOW_MS` and that plus this, still before any step's time-out.
const WINDOW_EVERY_MS: i64 = 5_000;
/// How far back each window scan looks again, for index entries that arrive late (indexes are
/// eventually consistent).
const WINDOW_OVERLAP_MS: i64 = 5_000;
/// The item that keeps how far the window scans have gone.
const WINDOW_PK: &str = "M#timer-window";

/// History entries kept in the saga item before they go to a history item of their own, and
/// the size past which they go earlier: a write costs one unit per KB of item, so a saga item
/// is kept within one; the history then costs one write per several transitions, not one
/// each, and no saga item grows past a few KB however long the saga runs.
const HISTORY_IN_ITEM: usize = 24;
const ITEM_BUDGET: usize = 1_000;

/// An item's size as DynamoDB bills it (attribute names plus values), near enough.
fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) | AttributeValue::N(v) => v.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 8,
                }
        })
        .sum()
}

/// The attribute holding a saga write's own mark (8 random bytes).
const WRITE_MARK: &str = "w";

fn write_mark(mark: u64) -> AttributeValue {
    AttributeValue::B(Blob::new(mark.to_be_bytes().to_vec()))
}

fn read_mark(item: &Item) -> Option<u64> {
    let bytes = item.get(WRITE_MARK)?.as_b().ok()?.as_ref();
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// What a saga write that got no answer saying "done" turned out to be.
enum Settled {
    Written,
    Conflict,
}

/// A saga item as read.
struct Stored {
    version: u64,
    state: SagaState,
    outbox: Option<Outbox>,
    /// The outbox up to this version is known to be delivered (`m`, written by a delivery).
    marked: u64,
    /// History groups not yet in history items.
    history: Vec<(u64, Vec<HistoryEntry>)>,
    /// The due time the item is indexed under.
    due: Option<i64>,
    bytes: usize,
    /// The mark of the write that wrote the item (none in items written before marks).
    mark: Option<u64>,
}

impl Stored {
    fn known(&self) -> Known {
        Known {
            pending: self.outbox.clone().filter(|o| o.version > self.marked),
            history: self.history.clone(),
            due: self.due,
            status: Some(self.state.status.kind()),
            bytes: self.bytes,
        }
    }
}

/// What DynamoDB bills for writing an item of `bytes`: one unit per KB, rounded up.
fn units(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u64::MAX)
}

/// What a change of one index key costs that index: a put, a delete, or both.
fn index_units<T: PartialEq>(before: Option<T>, after: Option<T>) -> u64 {
    match (before, after) {
        (None, None) => 0,
        (Some(a), Some(b)) if a == b => 0,
        (Some(_), Some(_)) => 2,
        _ => 1,
    }
}

pub const TABLE_UNITS: &str = "write units: table (estimated)";
pub const INDEX_UNITS: &str = "write units: indexes (estimated)";

/// The command id a message body carries, if it is a command.
fn command_id(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        command_id: String,
    }
    serde_json::from_str::<Id>(body).ok().map(|i| i.command_id)
}

/// Whether `outbox` is known delivered because a reply to its only command came back: events
/// are published before commands are sent, so the reply proves the whole outbox went out.
fn proven_by(outbox: &Outbox, answers: Option<&str>) -> bool {
    match (outbox.sends.as_slice(), answers) {
        ([only], Some(id)) => command_id(&only.body).as_deref() == Some(id),
        _ => false,
    }
}

impl AwsPorts {
    fn table(&self) -> String {
        self.names.table()
    }

    /// "DynamoDB `op` on table P-sagas", as errors name the call.
    fn on_table(&self, op: &str) -> String {
        format!("DynamoDB {op} on table {}", self.table())
    }

    fn shard(&self, id: SagaId) -> u8 {
        id.as_uuid().as_bytes()[0] % self.config.index_shards.max(1)
    }

    fn shards(&self) -> std::ops::Range<u8> {
        0..self.config.index_shards.max(1)
    }

    /// The saga item, read consistently.
    async fn read(&self, id: SagaId, why: &'static str) -> PortResult<Option<Stored>> {
        self.clients.calls.count("dynamodb", why);
        let out = self
            .clients
            .dynamo
            .get_item()
            .table_name(self.table())
            .key("pk", s(saga_pk(id)))
            .key("sk", s(SAGA_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(&self.on_table("GetItem"), e))?;
        let Some(saga) = out.item() else {
            return Ok(None);
        };
        let marker = get_n(saga, "m")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let version = get_n(saga, "v")
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt("saga item", "no version"))?;
        let Pack {
            s: state,
            o: outbox,
            h: history,
        } = match saga.get("sz") {
            Some(v) => unpacked(&format!("saga {id}"), v)?,
            None => return Err(corrupt(&format!("saga {id}"), "no state")),
        };
        let due = get_s(saga, "due_sk")
            .and_then(|k| k.split_once('#'))
            .and_then(|(ms, _)| ms.parse().ok());
        let bytes = item_bytes(saga);
        let stored = Stored {
            mark: read_mark(saga),
            bytes,
            version,
            state,
            outbox,
            marked: marker,
            history,
            due,
        };
        self.store.remember(id, version, stored.known());
        Ok(Some(stored))
    }

    /// What is known of the saga at `version`: `Err(())` if the saga is not at it.
    async fn known_at(&self, id: SagaId, version: u64) -> PortResult<Result<Known, ()>> {
        if let Some(known) = self.store.recall(id, version) {
            return Ok(Ok(known));
        }
        Ok(
            match self.read(id, "GetItem (saga, before a write)").await? {
                Some(stored) if stored.version == version => Ok(stored.known()),
                _ => Err(()),
            },
        )
    }

    fn saga_item(
        &self,
        state: &SagaState,
        version: u64,
        mark: u64,
        outbox: Option<&Outbox>,
        history: &[(u64, Vec<HistoryEntry>)],
        due: Option<i64>,
    ) -> PortResult<Item> {
        let id = state.saga_id;
        let kind = state.status.kind();
        let shard = self.shard(id);
        let mut item = Item::new();
        item.insert("pk".into(), s(saga_pk(id)));
        item.insert("sk".into(), s(SAGA_SK));
        item.insert("v".into(), n(version));
        item.insert(WRITE_MARK.into(), write_mark(mark));
        item.insert(
            "sz".into(),
            packed(
                "the saga",
                &PackRef {
                    s: state,
                    o: outbox,
                    h: history,
                },
            )?,
        );
        // Keyed by the start, which never changes: the index entry is written when the saga
        // starts and when its status changes, not on every transition.
        item.insert("gs_pk".into(), s(format!("{}#{shard}", kind.as_str())));
        item.insert(
            "gs_sk".into(),
            s(time_key(state.started_at.as_millis(), id)),
        );
        if let Some(due) = due {
            item.insert("due_pk".into(), s(format!("due#{shard}")));
            item.insert("due_sk".into(), s(time_key(due, id)));
        }
        if kind.is_terminal() {
            item.insert(
                names::TTL_ATTRIBUTE.into(),
                // From the saga's last change, not this write: a write that changes nothing of
                // the booking (an erasure, a re-encryption) does not keep the item longer.
                n(epoch_seconds_after(state.updated_at, self.config.retention)),
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
        let before = match expected {
            None => Known::default(),
            Some(e) => match self.known_at(id, e).await? {
                Ok(known) => known,
                Err(()) => return Ok(None),
            },
        };
        let (before_status, before_bytes) = (before.status, before.bytes);
        let carried = before
            .pending
            .filter(|o| !proven_by(o, effects.answers.as_deref()));
        let now = self.clock.now().as_millis();
        let outbox = match (Outbox::of(version, now, &effects), carried) {
            (None, None) => None,
            (own, carried) => Some(
                own.unwrap_or(Outbox {
                    version,
                    at: now,
                    ..Outbox::default()
                })
                .after(carried),
            ),
        };
        let mut history = before.history;
        if !effects.history.is_empty() {
            history.push((version, effects.history.clone()));
        }

        let real_wake = state.wake_at.map(|w| w.as_millis());
        // An outbox left undelivered by a crash is found again:
        // - by the saga's next write, which its own timer guarantees (carried forward);
        // - for a saga without a timer, by the redelivery of the message that brought this
        //   write (`flush`), when a message did;
        // - otherwise (a timer's or an operator's write), by the sweep after the grace.
        let grace_ms = i64::try_from(self.config.outbox_grace.as_millis()).unwrap_or(i64::MAX / 2);
        let by_message = effects.ack.is_some();
        let wanted = real_wake.or(outbox
            .as_ref()
            .filter(|_| !by_message)
            .map(|_| now + grace_ms));
        // A young saga's timer is left to the window scan of `due` (it looks at every live
        // saga once it is `TIMER_WINDOW_MS` old), unless it comes before that: a saga that
        // finishes young never has an index entry for its timers.
        let young_until = state.started_at.as_millis().saturating_add(TIMER_WINDOW_MS);
        let leave_to_window =
            real_wake.is_some() && now < young_until && wanted.is_some_and(|w| w >= young_until);
        // An index entry that is early but still ahead stays: moving it costs two index
        // writes, an early look costs a read.
        let due = match (before.due, wanted) {
            (Some(indexed), Some(w)) if indexed <= w && indexed > now => Some(indexed),
            _ if leave_to_window => None,
            (_, w) => w,
        };
        // This write's own mark: read back after an answer that did not say "done", it tells
        // this write from another writer's.
        let mark: u64 = rand::random();
        let mut item = self.saga_item(state, version, mark, outbox.as_ref(), &history, due)?;
        if !history.is_empty()
            && (item_bytes(&item) > ITEM_BUDGET
                || history.iter().map(|(_, h)| h.len()).sum::<usize>() > HISTORY_IN_ITEM)
        {
            // The history goes to an item of its own first, so that the saga item stays
            // within one write unit. Written before the saga item: if this write then loses
            // its race, the winner's groups override this one's (later items win, by version).
            self.put_history(id, version, &history).await?;
            history.clear();
            item = self.saga_item(state, version, mark, outbox.as_ref(), &history, due)?;
        }

        let bytes = item_bytes(&item);
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
        if let Err(e) = put.send().await {
            let refused = e
                .as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception());
            let cause = (!refused).then(|| unavailable(&self.on_table("PutItem"), e));
            match self.settle(id, version, mark, expected, cause).await? {
                Settled::Written => {}
                Settled::Conflict => return Ok(None),
            }
        }
        let calls = &self.clients.calls;
        // A replace costs the larger of the old and the new item.
        calls.add("dynamodb", TABLE_UNITS, units(bytes.max(before_bytes)));
        calls.add(
            "dynamodb",
            INDEX_UNITS,
            index_units(before_status, Some(state.status.kind())) + index_units(before.due, due),
        );
        self.store.remember(
            id,
            version,
            Known {
                pending: outbox.clone(),
                history: history.clone(),
                due,
                status: Some(state.status.kind()),
                bytes,
            },
        );
        if let Some(o) = &outbox {
            self.deliver(o).await?;
            // A single command is proven delivered by its reply, which brings the next write;
            // a saga without a timer whose write a message brought needs nothing more (only a
            // redelivery of that message looks again, see `flush`); anything else is marked
            // now, so that it is not carried forward or re-sent.
            let settled = o.sends.len() == 1 || (real_wake.is_none() && by_message);
            if !settled {
                self.set_due(id, version, real_wake, true, due, bytes)
                    .await?;
            }
            self.store.delivered(id, version);
        }
        if let Some((queue, receipt)) = effects.ack {
            self.acknowledge_in_background(queue, receipt);
        }
        Ok(Some(version))
    }

    /// A conditional put of saga `id` at `version`, marked `mark`, got no answer saying it
    /// was done: an error (`cause`: throttled past the retries, a 5xx, no answer in time, a
    /// broken connection), or a refused condition (`cause` none), which may be an SDK retry of
    /// this very put after its first attempt committed and its answer was lost. Whether it
    /// happened is read back: the item holds this write (its mark), and it is `Written`; or it
    /// holds the version the write expected (none, for a create), and the write did not
    /// happen: the error is returned and the caller tries again (a put still on its way that
    /// lands later is then like a crash after a commit: its outbox is carried out by the
    /// saga's next write, a flush or the sweep); or another writer's, a `Conflict`.
    async fn settle(
        &self,
        id: SagaId,
        version: u64,
        mark: u64,
        expected: Option<u64>,
        cause: Option<PortError>,
    ) -> PortResult<Settled> {
        let found = match self
            .read(id, "GetItem (saga, after an unanswered write)")
            .await
        {
            Ok(found) => found,
            Err(e) => {
                return Err(PortError::Unavailable(match cause {
                    Some(cause) => format!(
                        "{}; whether saga {id}'s write of version {version} happened is unknown, the read back failed too: {}",
                        words(&cause),
                        words(&e)
                    ),
                    None => format!(
                        "{}: saga {id}'s write of version {version} was refused (it may be an SDK retry of this write), and the read back failed: {}",
                        self.on_table("PutItem"),
                        words(&e)
                    ),
                }));
            }
        };
        let at = found.as_ref().map(|f| f.version);
        if at == Some(version) && found.as_ref().and_then(|f| f.mark) == Some(mark) {
            tracing::info!(
                saga_id = %id,
                version,
                cause = %cause.as_ref().map_or("its condition failed on a retry".to_owned(), ToString::to_string),
                "a saga write's answer was lost; the item holds it: it is done"
            );
            return Ok(Settled::Written);
        }
        match cause {
            Some(cause) if at == expected => Err(cause),
            // Refused, yet the item is as the write expected it (none, for a create): not a
            // conflict anyone won, and a create must never be taken for a saga that exists.
            None if at == expected => Err(PortError::Unavailable(format!(
                "{}: saga {id}'s write of version {version} was refused, yet the item holds the version it expected; it is tried again",
                self.on_table("PutItem")
            ))),
            _ => Ok(Settled::Conflict),
        }
    }

    /// Events, then sends (so that a reply to a command proves the events went out). An
    /// `emit` span in the trace of the work that wrote the outbox (or of the sweep that
    /// re-sends it).
    async fn deliver(&self, outbox: &Outbox) -> PortResult<()> {
        let span = tracing::info_span!(
            "emit",
            version = outbox.version,
            events = outbox.events.len(),
            sends = outbox.sends.len(),
        );
        tracing::Instrument::instrument(
            async {
                self.publish_events(&outbox.events).await?;
                for (queue, messages) in outbox.sends_by_queue() {
                    como_ports::Queue::send(self, queue, messages).await?;
                }
                Ok(())
            },
            span,
        )
        .await
    }

    /// The history groups of a saga up to `version`, in a history item of their own; later
    /// writes keep only what is newer in the saga item.
    async fn put_history(
        &self,
        id: SagaId,
        version: u64,
        history: &[(u64, Vec<HistoryEntry>)],
    ) -> PortResult<()> {
        let expires = epoch_seconds_after(self.clock.now(), self.config.history_retention);
        let mut item = Item::new();
        item.insert("pk".into(), s(saga_pk(id)));
        item.insert("sk".into(), s(history_sk(version)));
        item.insert("h".into(), packed("history", &history)?);
        item.insert(names::TTL_ATTRIBUTE.into(), n(expires));
        self.clients
            .calls
            .add("dynamodb", TABLE_UNITS, units(item_bytes(&item)));
        self.clients.calls.count("dynamodb", "PutItem");
        self.clients
            .dynamo
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(&self.on_table("PutItem"), e))?;
        Ok(())
    }

    /// Set saga `id`'s due entry to `due` (or drop it) and, when `delivered`, say in the item
    /// (`m`) that the outbox of `version` is delivered; unless the saga was written since
    /// `version`: the newer write owns the item and its index entry. `indexed` (the entry as
    /// it is) and `bytes` (the item's size) are for the write-unit count.
    async fn set_due(
        &self,
        id: SagaId,
        version: u64,
        due: Option<i64>,
        delivered: bool,
        indexed: Option<i64>,
        bytes: usize,
    ) -> PortResult<()> {
        let calls = &self.clients.calls;
        calls.add("dynamodb", TABLE_UNITS, units(bytes));
        calls.add("dynamodb", INDEX_UNITS, index_units(indexed, due));
        let marker = if delivered { "m = :v, " } else { "" };
        let update = self
            .clients
            .dynamo
            .update_item()
            .table_name(self.table())
            .key("pk", s(saga_pk(id)))
            .key("sk", s(SAGA_SK))
            .condition_expression("v = :v")
            .expression_attribute_values(":v", n(version));
        let update = match due {
            Some(w) => update
                .update_expression(format!("SET {marker}due_pk = :dp, due_sk = :due"))
                .expression_attribute_values(":dp", s(format!("due#{}", self.shard(id))))
                .expression_attribute_values(":due", s(time_key(w, id))),
            None if delivered => update.update_expression("SET m = :v REMOVE due_pk, due_sk"),
            None => update.update_expression("REMOVE due_pk, due_sk"),
        };
        self.clients.calls.count("dynamodb", "UpdateItem");
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(&self.on_table("UpdateItem"), e)),
        }
    }

    /// A saga the due index lists whose own timer has not come: re-send a pending outbox that
    /// its writer must have left behind, then index the saga by its own timer (or not at all).
    /// `now`: the sweep's time. `redelivered`: the message that brought the write came again,
    /// so its writer is gone.
    ///
    /// Left alone (see `outbox`): a single command while the saga has a timer, which its reply
    /// proves delivered or the timer's write carries forward; and an outbox younger than the
    /// grace, looked at again when the grace is over.
    async fn recover(&self, stored: Stored, now: i64, redelivered: bool) -> PortResult<()> {
        let id = stored.state.saga_id;
        let real_wake = stored.state.wake_at.map(|w| w.as_millis());
        let grace_ms = i64::try_from(self.config.outbox_grace.as_millis()).unwrap_or(i64::MAX / 2);
        let pending = stored
            .known()
            .pending
            .filter(|p| !(p.sends.len() == 1 && real_wake.is_some()));
        let (due, delivered) = match pending {
            Some(p) if !redelivered && p.at.saturating_add(grace_ms) > now => {
                let grace_over = p.at.saturating_add(grace_ms);
                (
                    Some(real_wake.map_or(grace_over, |w| w.min(grace_over))),
                    false,
                )
            }
            Some(p) => {
                tracing::info!(saga_id = %id, version = stored.version, "re-sending an undelivered outbox");
                self.deliver(&p).await?;
                self.store.delivered(id, stored.version);
                (real_wake, true)
            }
            None => (real_wake, false),
        };
        self.set_due(id, stored.version, due, delivered, stored.due, stored.bytes)
            .await
    }

    /// The window scan: every live saga that reached `TIMER_WINDOW_MS` of age since the last
    /// scan (found by its start in the `by-status` index) gets its timer indexed, or is due
    /// now. How far the scans have gone is kept in an item of its own, so that a restart (or
    /// another orchestrator) goes on from there. Every `WINDOW_EVERY_MS`.
    async fn window_scan(&self, now: i64, due: &mut Vec<(i64, SagaId)>) -> PortResult<()> {
        let upto = now.saturating_sub(TIMER_WINDOW_MS);
        {
            let mut last = self
                .store
                .window_upto
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|l| upto < l.saturating_add(WINDOW_EVERY_MS)) {
                return Ok(());
            }
            *last = Some(upto);
        }
        let key = |pk: &str| Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(SAGA_SK))]);
        self.clients
            .calls
            .count("dynamodb", "GetItem (timer window)");
        let mark = self
            .clients
            .dynamo
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(WINDOW_PK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(&self.on_table("GetItem"), e))?;
        let from = mark
            .item()
            .and_then(|i| get_n(i, "t"))
            .unwrap_or(0)
            .saturating_sub(WINDOW_OVERLAP_MS);
        if upto <= from {
            return Ok(());
        }
        let live = [
            StatusKind::Running,
            StatusKind::WaitingForDownstream,
            StatusKind::Reconciling,
            StatusKind::Compensating,
        ];
        let mut ids = Vec::new();
        for kind in live {
            for shard in self.shards() {
                let mut pages = self
                    .status_query()
                    .key_condition_expression("gs_pk = :p AND gs_sk BETWEEN :from AND :upto")
                    .expression_attribute_values(":p", s(format!("{}#{shard}", kind.as_str())))
                    .expression_attribute_values(":from", s(time_bound(from)))
                    .expression_attribute_values(":upto", s(time_bound(upto)))
                    .into_paginator()
                    .send();
                while let Some(page) = self.page(pages.next().await)? {
                    ids.extend(page.items().iter().filter_map(|item| {
                        SagaId::parse(get_s(item, "gs_sk")?.split_once('#')?.1).ok()
                    }));
                }
            }
        }
        for id in ids {
            let Some(stored) = self.read(id, "GetItem (saga, timer window)").await? else {
                continue;
            };
            let wake = stored.state.wake_at.map(|w| w.as_millis());
            match (wake, stored.due) {
                // Indexed already: the index look finds it.
                (_, Some(_)) | (None, None) => {}
                (Some(w), None) if w <= now => due.push((w, id)),
                (Some(w), None) => {
                    self.set_due(id, stored.version, Some(w), false, None, stored.bytes)
                        .await?;
                }
            }
        }
        let mut mark = key(WINDOW_PK);
        mark.insert("t".into(), n(upto));
        self.clients.calls.count("dynamodb", "PutItem");
        self.clients.calls.add("dynamodb", TABLE_UNITS, 1);
        self.clients
            .dynamo
            .put_item()
            .table_name(self.table())
            .set_item(Some(mark))
            .send()
            .await
            .map_err(|e| unavailable(&self.on_table("PutItem"), e))?;
        Ok(())
    }

    /// One index partition within `(lower, upper)`, newest first, `page` keys a request.
    fn partition_pages(
        &self,
        partition: String,
        (lower, upper): (Option<&str>, Option<&str>),
        page: usize,
    ) -> aws_sdk_dynamodb::operation::query::paginator::QueryPaginator {
        let q = self
            .status_query()
            .scan_index_forward(false)
            .limit(i32::try_from(page).unwrap_or(i32::MAX))
            .expression_attribute_values(":p", s(partition));
        ranged(q, lower, upper).into_paginator()
    }

    /// Up to `want` index keys of one partition within `(lower, upper)`, newest first.
    async fn keys_part(
        &self,
        partition: String,
        (lower, upper): (Option<&str>, Option<&str>),
        want: usize,
    ) -> PortResult<Vec<(String, SagaId)>> {
        let mut out = Vec::new();
        let mut pages = self
            .partition_pages(partition, (lower, upper), want.clamp(1, 1_000))
            .send();
        while let Some(page) = self.page(pages.next().await)? {
            for key in page
                .items()
                .iter()
                .filter_map(|item| index_key(item, upper))
            {
                out.push(key);
                if out.len() >= want {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Up to `want` summaries that pass `keep`, from one index partition, newest first, below
    /// `upper`. The index holds keys only (so that a transition writes it only when the status
    /// changes); the items are read in batches for what a list shows and filters on.
    async fn query_part(
        &self,
        partition: String,
        (lower, upper): (Option<&str>, Option<&str>),
        keep: &(dyn Fn(&SagaSummary) -> bool + Sync),
        want: usize,
    ) -> PortResult<Vec<(String, SagaSummary)>> {
        let mut out = Vec::new();
        let mut pages = self
            .partition_pages(partition, (lower, upper), want.clamp(1, 100))
            .send();
        while let Some(page) = self.page(pages.next().await)? {
            let keys: Vec<(String, SagaId)> = page
                .items()
                .iter()
                .filter_map(|item| index_key(item, upper))
                .collect();
            let ids: Vec<SagaId> = keys.iter().map(|(_, id)| *id).collect();
            let summaries = self.summaries(&ids).await?;
            for (key, id) in keys {
                // Gone between the index and the item (TTL): not listed.
                if let Some(summary) = summaries.get(&id)
                    && keep(summary)
                {
                    out.push((key, summary.clone()));
                    if out.len() >= want {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The summaries of these sagas, read in batches of 100.
    async fn summaries(&self, ids: &[SagaId]) -> PortResult<HashMap<SagaId, SagaSummary>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| {
                    Item::from([
                        ("pk".to_owned(), s(saga_pk(*id))),
                        ("sk".to_owned(), s(SAGA_SK)),
                    ])
                })
                .collect();
            for attempt in 0..5u32 {
                if keys.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .projection_expression("v, sz")
                    .build()
                    .map_err(|e| PortError::Invalid(format!("saga keys: {e}")))?;
                self.clients.calls.count("dynamodb", "BatchGetItem");
                let got = self
                    .clients
                    .dynamo_pages
                    .batch_get_item()
                    .request_items(self.table(), request)
                    .send()
                    .await
                    .map_err(|e| unavailable(&self.on_table("BatchGetItem"), e))?;
                for item in got
                    .responses()
                    .and_then(|r| r.get(&self.table()))
                    .into_iter()
                    .flatten()
                {
                    let version = get_n(item, "v")
                        .and_then(|v| u64::try_from(v).ok())
                        .ok_or_else(|| corrupt("saga item", "no version"))?;
                    let pack: Pack = match item.get("sz") {
                        Some(v) => unpacked("saga item", v)?,
                        None => return Err(corrupt("saga item", "no state")),
                    };
                    out.insert(pack.s.saga_id, SagaSummary::of(&pack.s, version));
                }
                keys = got
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table()))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
            if !keys.is_empty() {
                return Err(PortError::Unavailable(format!(
                    "{}: {} of {} keys left unprocessed after 5 tries",
                    self.on_table("BatchGetItem"),
                    keys.len(),
                    chunk.len()
                )));
            }
        }
        Ok(out)
    }

    async fn count_part(&self, partition: String) -> PortResult<u64> {
        let mut total = 0u64;
        let mut pages = self
            .status_query()
            .key_condition_expression("gs_pk = :p")
            .expression_attribute_values(":p", s(partition))
            .select(Select::Count)
            .into_paginator()
            .send();
        while let Some(page) = self.page(pages.next().await)? {
            total += u64::try_from(page.count()).unwrap_or(0);
        }
        Ok(total)
    }

    /// A query on the status index (`gs_pk` = `<status>#<shard>`, `gs_sk` = `<started_at>#<saga>`).
    fn status_query(&self) -> QueryFluentBuilder {
        self.clients
            .dynamo_pages
            .query()
            .table_name(self.table())
            .index_name(names::STATUS_INDEX)
    }

    /// The next page from a query's paginator, counted as a call. The SDK's paginator fetches
    /// a page only when asked, so a caller that stops asking sends no further query.
    fn page(
        &self,
        next: Option<Result<QueryOutput, SdkError<QueryError>>>,
    ) -> PortResult<Option<QueryOutput>> {
        let Some(page) = next else {
            return Ok(None);
        };
        self.clients.calls.count("dynamodb", "Query");
        page.map(Some)
            .map_err(|e| unavailable(&self.on_table("Query"), e))
    }
}

#[async_trait]
impl SagaReader for AwsPorts {
    async fn get(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>> {
        Ok(self.read(id, "GetItem (saga)").await?.map(|s| Versioned {
            version: s.version,
            value: s.state,
        }))
    }

    async fn query(&self, query: &SagaQuery) -> PortResult<SagaPage> {
        let page = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // A saga updated before then started before then too: the index narrows it.
        let cuts = [query.updated_before, query.started_before]
            .into_iter()
            .flatten()
            .map(|t| time_bound(t.as_millis()));
        let upper = query.cursor.clone().into_iter().chain(cuts).min();
        let lower = query.started_from.map(|t| time_bound(t.as_millis()));
        let kinds: Vec<StatusKind> = match query.status {
            Some(k) => vec![k],
            None if query.live_only() => StatusKind::ALL
                .into_iter()
                .filter(|k| !k.is_terminal())
                .collect(),
            None => StatusKind::ALL.to_vec(),
        };
        let filter = query.clone();
        let keep = move |x: &SagaSummary| filter.matches(x);
        // Filters the index keys answer alone (status, start, cursor): merge the partitions'
        // keys first and read only the page's items, not a page from every partition.
        let keys_answer = query.step.is_none()
            && query.member.is_none()
            && query.updated_before.is_none()
            && !query.reads_sagas();
        if keys_answer {
            let mut keys: Vec<(String, SagaId)> = Vec::new();
            for kind in &kinds {
                for shard in self.shards() {
                    keys.extend(
                        self.keys_part(
                            format!("{}#{shard}", kind.as_str()),
                            (lower.as_deref(), upper.as_deref()),
                            page + 1,
                        )
                        .await?,
                    );
                }
            }
            keys.sort_by(|a, b| b.0.cmp(&a.0));
            keys.truncate(page + 1);
            let more = keys.len() > page;
            keys.truncate(page);
            let ids: Vec<SagaId> = keys.iter().map(|(_, id)| *id).collect();
            let summaries = self.summaries(&ids).await?;
            // Gone between the index and the item (TTL): not listed.
            let items: Vec<(String, SagaSummary)> = keys
                .into_iter()
                .filter_map(|(k, id)| summaries.get(&id).map(|x| (k, x.clone())))
                .collect();
            return Ok(SagaPage {
                next_cursor: if more {
                    items.last().map(|(k, _)| k.clone())
                } else {
                    None
                },
                items: items.into_iter().map(|(_, x)| x).collect(),
            });
        }
        let mut all: Vec<(String, SagaSummary)> = Vec::new();
        for kind in kinds {
            for shard in self.shards() {
                all.extend(
                    self.query_part(
                        format!("{}#{shard}", kind.as_str()),
                        (lower.as_deref(), upper.as_deref()),
                        &keep,
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
        // Groups by the version that appended them: a history item written late by a slow
        // process may repeat groups that a later one holds too.
        let mut groups: BTreeMap<u64, Vec<HistoryEntry>> = BTreeMap::new();
        let mut pages = self
            .clients
            .dynamo_pages
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(saga_pk(id)))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = self.page(pages.next().await)? {
            for item in page.items() {
                let what = format!("history of saga {id}");
                let found: Vec<(u64, Vec<HistoryEntry>)> = match get_s(item, "sk") {
                    Some(SAGA_SK) => match item.get("sz") {
                        Some(v) => unpacked::<Pack>(&what, v)?.h,
                        None => Vec::new(),
                    },
                    Some(sk) if sk.starts_with("H#") => match item.get("h") {
                        Some(v) => unpacked(&what, v)?,
                        None => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                groups.extend(found);
            }
        }
        Ok(groups.into_values().flatten().collect())
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

#[async_trait]
impl SagaWriter for AwsPorts {
    async fn create(&self, state: &SagaState, effects: Effects) -> PortResult<CreateOutcome> {
        Ok(match reported(self.write(state, None, effects).await)? {
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
            match reported(self.write(state, Some(expected_version), effects).await)? {
                Some(version) => UpdateOutcome::Updated { version },
                None => UpdateOutcome::Conflict,
            },
        )
    }

    async fn flush(&self, id: SagaId) -> PortResult<()> {
        let Some(stored) = self.read(id, "GetItem (saga, redelivered input)").await? else {
            return Ok(());
        };
        let live_timer = stored.state.wake_at.is_some();
        if live_timer || stored.known().pending.is_none() {
            return Ok(());
        }
        tracing::info!(saga_id = %id, version = stored.version, "re-sending an outbox on a redelivered input");
        self.recover(stored, self.clock.now().as_millis(), true)
            .await
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
        let bound = time_bound(now.as_millis() + 1);
        let mut found: Vec<(String, SagaId)> = Vec::new();
        for shard in self.shards() {
            let mut here = 0;
            let mut pages = self
                .clients
                .dynamo_pages
                .query()
                .table_name(self.table())
                .index_name(names::DUE_INDEX)
                .key_condition_expression("due_pk = :p AND due_sk < :u")
                .expression_attribute_values(":p", s(format!("due#{shard}")))
                .expression_attribute_values(":u", s(bound.clone()))
                .limit(i32::try_from(limit.min(100)).unwrap_or(100))
                .into_paginator()
                .send();
            while here < limit
                && let Some(page) = self.page(pages.next().await)?
            {
                for item in page.items() {
                    let Some(key) = get_s(item, "due_sk") else {
                        continue;
                    };
                    if let Some(id) = key
                        .split_once('#')
                        .and_then(|(_, id)| SagaId::parse(id).ok())
                    {
                        found.push((key.to_owned(), id));
                        here += 1;
                    }
                }
            }
        }
        *self
            .store
            .nothing_due_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = found.is_empty().then(std::time::Instant::now);
        // Earliest first. An entry may be early (a write leaves an entry that is still ahead
        // in place) or there for an outbox only: the item says which.
        found.sort();
        let mut due: Vec<(i64, SagaId)> = Vec::new();
        for (_, id) in found {
            if due.len() >= limit {
                break;
            }
            let Some(stored) = self.read(id, "GetItem (saga, due)").await? else {
                continue;
            };
            let wake = stored.state.wake_at;
            match wake {
                Some(w) if w <= now => due.push((w.as_millis(), id)),
                _ => {
                    if let Err(e) = self.recover(stored, now.as_millis(), false).await {
                        // It stays indexed; the next sweep tries again.
                        tracing::warn!(saga_id = %id, error = %e, "cannot re-send an outbox yet");
                    }
                }
            }
        }
        self.window_scan(now.as_millis(), &mut due).await?;
        due.sort();
        due.dedup_by_key(|(_, id)| *id);
        if !due.is_empty() {
            *self
                .store
                .nothing_due_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_values_read_back_and_bad_ones_are_refused() {
        let value =
            serde_json::json!({"s": "como_booking", "n": [1, 2, 3], "t": "x".repeat(5_000)});
        let blob = packed("a value", &value).unwrap();
        assert_eq!(
            unpacked::<serde_json::Value>("a value", &blob).unwrap(),
            value
        );
        let bytes = blob.as_b().unwrap().as_ref().to_vec();
        assert!(bytes.len() < 200, "deflated: {} bytes", bytes.len());
        let truncated = AttributeValue::B(Blob::new(&bytes[..bytes.len() / 2]));
        assert!(unpacked::<serde_json::Value>("a value", &truncated).is_err());
        let mut newer = bytes.clone();
        newer[0] = 9;
        let err = unpacked::<serde_json::Value>("a value", &AttributeValue::B(Blob::new(newer)));
        assert!(format!("{err:?}").contains("newer build"), "{err:?}");
        assert!(
            unpacked::<serde_json::Value>("a value", &AttributeValue::B(Blob::new(vec![])))
                .is_err()
        );
    }

    #[test]
    fn the_dictionary_shrinks_a_saga_state() {
        // The dictionary's own last part is a finished saga's state: a state like it packs
        // to a small fraction of its JSON.
        let text = std::str::from_utf8(PACK_DICTIONARY_V1).unwrap();
        let state = &text[text.rfind("{\"s\":").unwrap() + 5..];
        let json: serde_json::Value = serde_json::from_str(state).unwrap();
        let size = packed("a state", &json)
            .unwrap()
            .as_b()
            .unwrap()
            .as_ref()
            .len();
        assert!(size * 5 < state.len(), "{size} bytes from {}", state.len());
    }

    #[test]
    fn keys_sort_by_time_then_id() {
        let a = SagaId::parse("00000000-0000-0000-0000-000000000001").unwrap();
        let b = SagaId::parse("00000000-0000-0000-0000-000000000002").unwrap();
        assert!(time_key(999, b) < time_key(1_000, a));
        assert!(time_key(1_000, a) < time_key(1_000, b));
        assert!(time_key(1_000, b) < time_bound(1_001));
        assert!(time_key(1_000, b) > time_bound(1_000));
        assert!(history_sk(9) < history_sk(10));
        assert!(history_sk(u64::from(u32::MAX)).as_str() < SAGA_SK);
    }
}
