//! The write operations the ports send to the writer thread, and how each is carried out inside
//! the writer's transaction.
//!
//! Each operation is prepared (encoded to rows) by its caller, off the writer thread, so the
//! writer only binds and steps cached statements. An operation either writes everything it
//! stands for or nothing: an answer that refuses (a version conflict, a stale receipt) is
//! decided by a statement that changed no row, before anything else is written. A SQLite error
//! aborts the whole group instead (see `writer`), so half an operation is never committed.
//!
//! Statement counts matter here, because the single writer is the wall of the backend: a saga
//! update is a version check, one statement per history entry, event, message sent and
//! acknowledgement, and the UPDATE of the saga row.

use std::collections::BTreeMap;
use std::time::Duration;

use como_ports::{CreateOutcome, Delivery, PortError, PortResult, QueueName, UpdateOutcome};
use como_schemas::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::{self, ReceiptKey};
use crate::handoff::Waiters;

/// A message ready for the `messages` table.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub queue: QueueName,
    pub body: String,
    /// As stored; and as given to a receive the message is handed to.
    pub attrs: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub delay_ms: i64,
}

/// A saga ready for the `sagas` table.
#[derive(Debug, Clone)]
pub struct SagaRow {
    pub id: [u8; 16],
    pub status: &'static str,
    pub step: Option<String>,
    pub request_id: String,
    pub member: String,
    pub started_at: i64,
    pub updated_at: i64,
    /// NULL for a finished saga, so that the timer index holds only live timers.
    pub wake_at: Option<i64>,
    pub state: String,
}

/// An event ready for the `events` table.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: String,
    pub saga_id: [u8; 16],
    pub kind: &'static str,
    pub at: i64,
    pub body: String,
}

/// The effects of a saga write, as rows.
#[derive(Debug, Clone, Default)]
pub struct EffectRows {
    pub history: Vec<String>,
    pub events: Vec<EventRow>,
    pub sends: Vec<NewMessage>,
    pub ack: Option<(QueueName, ReceiptKey)>,
}

#[derive(Debug)]
pub enum Op {
    Send {
        messages: Vec<NewMessage>,
    },
    /// With a `wait`, the writer keeps it when nothing is visible (see `handoff`).
    Receive {
        queue: QueueName,
        max: usize,
        visibility_ms: i64,
        wait: Duration,
    },
    Delete {
        queue: QueueName,
        receipts: Vec<ReceiptKey>,
    },
    ChangeVisibility {
        queue: QueueName,
        receipt: ReceiptKey,
        visibility_ms: i64,
    },
    DeadLetter {
        queue: QueueName,
        receipt: ReceiptKey,
        reason: String,
        /// Kept in place of the message's body, when given.
        body: Option<String>,
    },
    Redrive {
        queue: QueueName,
        ids: Option<Vec<i64>>,
    },
    /// New bodies for dead letters: (id, the body read, the new body). A dead letter whose
    /// body changed since it was read (or that was redriven) is left as it is.
    RewriteDeadLetters {
        changes: Vec<(i64, String, String)>,
    },
    Create {
        saga: SagaRow,
        effects: EffectRows,
    },
    Update {
        saga: SagaRow,
        expected_version: u64,
        effects: EffectRows,
    },
    /// A record's value. Read by the writer, whose page cache stays warm from commit to
    /// commit, rather than by a read connection, which rereads every page the writer changed
    /// since its last read (a worker asks before every command; from a read connection these
    /// lookups took 8% of a bench run's CPU).
    GetRecord {
        key: String,
    },
    /// Compare-and-set of a shared value in `records` (see `IdempotencyRecords::swap`).
    SwapRecord {
        key: String,
        /// None: only if there is no value under `key`.
        expected: Option<String>,
        new: String,
    },
    Complete {
        /// Key and value; none when the call only sends and acknowledges.
        record: Option<(String, String)>,
        sends: Vec<NewMessage>,
        ack: Option<(QueueName, ReceiptKey)>,
    },
    Publish {
        events: Vec<EventRow>,
    },
    PublishRejection {
        event_id: String,
        at: i64,
        body: String,
    },
    /// An audit entry, replacing the one with its id but keeping that one's place and time.
    RecordAudit {
        id: String,
        at: i64,
        actor: String,
        action: String,
        entry: String,
    },
    PutPending {
        name: String,
        version_id: String,
        value: String,
    },
    Promote {
        name: String,
        version_id: String,
    },
}

/// What an operation answers.
#[derive(Debug)]
pub enum Output {
    Done,
    Received(Vec<Delivery>),
    Created(CreateOutcome),
    Updated(UpdateOutcome),
    Count(usize),
    Record(Option<String>),
    /// Whether a `SwapRecord` replaced the value.
    Swapped(bool),
}

impl Output {
    /// The answer of an operation that answers nothing but success.
    pub fn done(self) -> PortResult<()> {
        match self {
            Output::Done => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// An answer of the wrong kind: a bug here, reported rather than panicking the caller.
    pub fn unexpected(self) -> PortError {
        PortError::Unavailable(format!("the writer answered {self:?} out of turn"))
    }
}

/// The writer's state that operations use: the time of the group, the message ids, the
/// parked receives (and what is known of each queue), and the configuration.
pub struct Ctx<'a> {
    pub now: i64,
    pub ids: &'a mut Ids,
    pub waiters: &'a mut Waiters,
    /// The receive limit of each queue, by code - 1.
    pub max_receives: &'a [u32; codec::QUEUES],
}

/// Message ids: handed out by the writer from memory, and reserved in blocks in `meta` within
/// the same transactions that use them, so that an id is never handed out twice, even after a
/// crash and even when the newest messages were deleted (SQLite reuses the largest rowid once
/// it is gone, and a receipt or a dead letter must never come to name another message).
pub struct Ids {
    next: i64,
    /// Ids below this are reserved in the transaction in progress or a committed one.
    reserved: i64,
    /// Ids below this are reserved in a committed transaction.
    committed: i64,
}

const ID_BLOCK: i64 = 4096;

impl Ids {
    pub fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let stored: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'message_ids'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        // Belt and braces for a file whose meta row was lost: never below an id in use.
        let in_use: i64 = conn.query_row(
            "SELECT max(coalesce((SELECT max(id) FROM messages), 0),
                        coalesce((SELECT max(id) FROM dead_letters), 0)) + 1",
            [],
            |r| r.get(0),
        )?;
        let next = stored.unwrap_or(1).max(in_use);
        Ok(Self {
            next,
            reserved: next,
            committed: next,
        })
    }

    fn take(&mut self, conn: &Connection) -> rusqlite::Result<i64> {
        if self.next >= self.reserved {
            // Another process on the same file may have reserved blocks since: start after
            // them. The writer's transaction is IMMEDIATE, so nobody reserves in between.
            let stored: Option<i64> = conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'message_ids'")?
                .query_row([], |r| r.get(0))
                .optional()?;
            self.next = self.next.max(stored.unwrap_or(1));
            let until = self.next + ID_BLOCK;
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('message_ids', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([until])?;
            self.reserved = until;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    pub fn committed(&mut self) {
        self.committed = self.reserved;
    }

    /// The transaction was rolled back: its reservation is gone. Ids it took stay unused.
    pub fn rolled_back(&mut self) {
        self.reserved = self.committed;
    }
}

/// Carries out one operation. `Err` is a SQLite failure (the group is rolled back); `Ok(Err)`
/// is an answer that refuses, with nothing written.
pub fn execute(
    conn: &Connection,
    op: &Op,
    cx: &mut Ctx<'_>,
) -> rusqlite::Result<PortResult<Output>> {
    match op {
        Op::Send { messages } => {
            for m in messages {
                insert_message(conn, m, cx)?;
            }
            Ok(Ok(Output::Done))
        }
        Op::Receive {
            queue,
            max,
            visibility_ms,
            wait: _,
        } => receive(conn, *queue, *max, *visibility_ms, cx).map(|r| Ok(Output::Received(r))),
        Op::Delete { queue, receipts } => {
            for r in receipts {
                delete_message(conn, *queue, r)?;
            }
            Ok(Ok(Output::Done))
        }
        Op::ChangeVisibility {
            queue,
            receipt,
            visibility_ms,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?4
                     WHERE id = ?1 AND receipt = ?2 AND queue = ?3",
                )?
                .execute(params![
                    receipt.id,
                    receipt.token,
                    codec::queue_code(*queue),
                    cx.now.saturating_add(*visibility_ms)
                ])?;
            if changed == 0 {
                return Ok(Err(stale(*queue, receipt)));
            }
            let q = codec::queue_index(*queue);
            if *visibility_ms == 0 {
                cx.waiters.became_visible(q);
            } else {
                cx.waiters
                    .hidden_until(q, cx.now.saturating_add(*visibility_ms));
            }
            Ok(Ok(Output::Done))
        }
        Op::DeadLetter {
            queue,
            receipt,
            reason,
            body,
        } => {
            let moved = conn
                .prepare_cached(
                    "INSERT INTO dead_letters
                         (id, queue, dead_lettered_at, receive_count, sent_at, reason, body, attrs)
                     SELECT id, queue, ?4, receive_count, sent_at, ?5, coalesce(?6, body), attrs
                     FROM messages WHERE id = ?1 AND receipt = ?2 AND queue = ?3",
                )?
                .execute(params![
                    receipt.id,
                    receipt.token,
                    codec::queue_code(*queue),
                    cx.now,
                    reason,
                    body
                ])?;
            if moved == 0 {
                return Ok(Err(stale(*queue, receipt)));
            }
            conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                .execute([receipt.id])?;
            Ok(Ok(Output::Done))
        }
        Op::Redrive { queue, ids } => {
            redrive(conn, *queue, ids.as_deref(), cx).map(|n| Ok(Output::Count(n)))
        }
        Op::RewriteDeadLetters { changes } => {
            let mut update = conn
                .prepare_cached("UPDATE dead_letters SET body = ?3 WHERE id = ?1 AND body = ?2")?;
            let mut n = 0;
            for (id, read, body) in changes {
                n += update.execute(params![id, read, body])?;
            }
            Ok(Ok(Output::Count(n)))
        }
        Op::Create { saga, effects } => {
            let created = conn
                .prepare_cached(
                    "INSERT INTO sagas
                         (id, version, status, step, request_id, member, started_at, updated_at, wake_at, state)
                     VALUES (?1, 1, ?2, ?3, ?4, ?9, ?5, ?6, ?7, ?8)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    saga.id,
                    saga.status,
                    saga.step,
                    saga.request_id,
                    saga.started_at,
                    saga.updated_at,
                    saga.wake_at,
                    saga.state,
                    saga.member
                ])?;
            if created == 0 {
                return Ok(Ok(Output::Created(CreateOutcome::Exists)));
            }
            let rowid = conn.last_insert_rowid();
            if let Some(head) = append_history(conn, &saga.id, None, &effects.history)? {
                conn.prepare_cached("UPDATE sagas SET history_head = ?2 WHERE rowid = ?1")?
                    .execute([rowid, head])?;
            }
            apply_effects(conn, effects, cx)?;
            Ok(Ok(Output::Created(CreateOutcome::Created { version: 1 })))
        }
        Op::Update {
            saga,
            expected_version,
            effects,
        } => {
            let (Ok(expected), Ok(version)) = (
                i64::try_from(*expected_version),
                i64::try_from(expected_version.saturating_add(1)),
            ) else {
                return Ok(Ok(Output::Updated(UpdateOutcome::Conflict)));
            };
            // The version check, and where the history chain ends: the row's page is read
            // here and written below, so the check costs no extra page.
            let found: Option<(i64, Option<i64>)> = conn
                .prepare_cached(
                    "SELECT rowid, history_head FROM sagas WHERE id = ?1 AND version = ?2",
                )?
                .query_row(params![saga.id, expected], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((rowid, head)) = found else {
                return Ok(Ok(Output::Updated(UpdateOutcome::Conflict)));
            };
            let head = append_history(conn, &saga.id, head, &effects.history)?.or(head);
            conn.prepare_cached(
                "UPDATE sagas SET version = ?2, status = ?3, step = ?4, updated_at = ?5,
                                  wake_at = ?6, history_head = ?7, state = ?8
                 WHERE rowid = ?1",
            )?
            .execute(params![
                rowid,
                version,
                saga.status,
                saga.step,
                saga.updated_at,
                saga.wake_at,
                head,
                saga.state
            ])?;
            apply_effects(conn, effects, cx)?;
            Ok(Ok(Output::Updated(UpdateOutcome::Updated {
                version: expected_version + 1,
            })))
        }
        Op::GetRecord { key } => {
            let value = conn
                .prepare_cached("SELECT value FROM records WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            Ok(Ok(Output::Record(value)))
        }
        // Ops of a group run one after the other in its transaction, so of two swaps from
        // the same value the second sees the first's and changes nothing. The table is never
        // swept by `at` (nothing prunes `records`), so a swapped value stays until replaced.
        Op::SwapRecord { key, expected, new } => {
            let changed = match expected {
                None => conn
                    .prepare_cached(
                        "INSERT INTO records (key, at, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO NOTHING",
                    )?
                    .execute(params![key, cx.now, new])?,
                Some(expected) => conn
                    .prepare_cached(
                        "UPDATE records SET value = ?3, at = ?2 WHERE key = ?1 AND value = ?4",
                    )?
                    .execute(params![key, cx.now, new, expected])?,
            };
            Ok(Ok(Output::Swapped(changed == 1)))
        }
        Op::Complete { record, sends, ack } => {
            if let Some((key, value)) = record {
                conn.prepare_cached(
                    "INSERT INTO records (key, at, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, cx.now, value])?;
            }
            for m in sends {
                insert_message(conn, m, cx)?;
            }
            if let Some((queue, receipt)) = ack {
                delete_message(conn, *queue, receipt)?;
            }
            Ok(Ok(Output::Done))
        }
        Op::Publish { events } => {
            for e in events {
                insert_event(conn, e)?;
            }
            Ok(Ok(Output::Done))
        }
        Op::PublishRejection { event_id, at, body } => {
            conn.prepare_cached(
                "INSERT INTO rejections (event_id, at, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (event_id) DO NOTHING",
            )?
            .execute(params![event_id, at, body])?;
            Ok(Ok(Output::Done))
        }
        Op::RecordAudit {
            id,
            at,
            actor,
            action,
            entry,
        } => {
            conn.prepare_cached(
                "INSERT INTO audit (id, at, actor, action, entry) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET entry = excluded.entry",
            )?
            .execute(params![id, at, actor, action, entry])?;
            Ok(Ok(Output::Done))
        }
        Op::PutPending {
            name,
            version_id,
            value,
        } => {
            conn.prepare_cached("DELETE FROM secrets WHERE name = ?1 AND stage = 'pending'")?
                .execute([name])?;
            conn.prepare_cached(
                "INSERT INTO secrets (name, version_id, stage, created_at, value)
                 VALUES (?1, ?2, 'pending', ?3, ?4)",
            )?
            .execute(params![name, version_id, cx.now, value])?;
            Ok(Ok(Output::Done))
        }
        Op::Promote { name, version_id } => promote(conn, name, version_id),
    }
}

fn stale(queue: QueueName, receipt: &ReceiptKey) -> PortError {
    PortError::Invalid(format!(
        "receipt {} on {queue} is not current: the message was deleted or received again",
        receipt.receipt().0
    ))
}

/// Inserts a message; one sent without delay while a receive of its queue waits is inserted
/// leased to that receive (see `handoff`).
fn insert_message(conn: &Connection, m: &NewMessage, cx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    let id = cx.ids.take(conn)?;
    let q = codec::queue_index(m.queue);
    let lease = if m.delay_ms > 0 {
        cx.waiters
            .hidden_until(q, cx.now.saturating_add(m.delay_ms));
        None
    } else if cx.max_receives[q] == 0 {
        // A queue that allows no receive: the next receive dead-letters it.
        cx.waiters.became_visible(q);
        None
    } else {
        let lease = cx.waiters.lease_for(q, cx.now);
        if lease.is_none() {
            cx.waiters.became_visible(q);
        }
        lease
    };
    let (visible_at, count, token) = match lease {
        Some(l) => (cx.now.saturating_add(l.visibility_ms), 1, Some(l.token)),
        None => (cx.now.saturating_add(m.delay_ms), 0, None),
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, queue, visible_at, receive_count, receipt, sent_at, body, attrs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        codec::queue_code(m.queue),
        visible_at,
        count,
        token,
        cx.now,
        m.body,
        m.attrs
    ])?;
    if let (Some(lease), Some(token)) = (lease, token) {
        cx.waiters.give(
            q,
            lease,
            Delivery {
                message_id: id.to_string(),
                receipt: ReceiptKey { id, token }.receipt(),
                body: m.body.clone(),
                attributes: m.attributes.clone(),
                receive_count: 1,
                sent_at: Timestamp::from_millis(cx.now),
            },
        );
    }
    Ok(())
}

/// A stale receipt deletes nothing, by design: the message was received again and its new
/// holder will handle it.
fn delete_message(conn: &Connection, queue: QueueName, r: &ReceiptKey) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1 AND receipt = ?2 AND queue = ?3")?
        .execute(params![r.id, r.token, codec::queue_code(queue)])?;
    Ok(())
}

fn insert_event(conn: &Connection, e: &EventRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (event_id, saga_id, type, at, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (at, event_id) DO NOTHING",
    )?
    .execute(params![e.event_id, e.saga_id, e.kind, e.at, e.body])?;
    Ok(())
}

/// Appends `entries` to a saga's history chain after `head`; returns the new head, if any.
fn append_history(
    conn: &Connection,
    saga_id: &[u8; 16],
    mut head: Option<i64>,
    entries: &[String],
) -> rusqlite::Result<Option<i64>> {
    let mut added = None;
    for entry in entries {
        conn.prepare_cached("INSERT INTO history (saga_id, prev, entry) VALUES (?1, ?2, ?3)")?
            .execute(params![saga_id, head, entry])?;
        head = Some(conn.last_insert_rowid());
        added = head;
    }
    Ok(added)
}

fn apply_effects(
    conn: &Connection,
    effects: &EffectRows,
    cx: &mut Ctx<'_>,
) -> rusqlite::Result<()> {
    for e in &effects.events {
        insert_event(conn, e)?;
    }
    for m in &effects.sends {
        insert_message(conn, m, cx)?;
    }
    if let Some((queue, receipt)) = &effects.ack {
        delete_message(conn, *queue, receipt)?;
    }
    Ok(())
}

/// Before the commit: the waiters of every queue that may hold visible messages lease them,
/// oldest first, in turn.
pub fn look(conn: &Connection, cx: &mut Ctx<'_>) -> rusqlite::Result<()> {
    for q in 0..codec::QUEUES {
        if !cx.waiters.should_look(q, cx.now) {
            continue;
        }
        let queue = codec::queue_of_index(q);
        for (i, room, visibility_ms) in cx.waiters.rooms(q) {
            let got = receive(conn, queue, room, visibility_ms, cx)?;
            let short = got.len() < room;
            cx.waiters.give_all(q, i, got);
            if short {
                break;
            }
        }
    }
    Ok(())
}

/// Leases up to `max` visible messages, oldest first: each gets a new token (so older receipts
/// go stale), a new visibility and one more receive. A message received more often than the
/// queue allows goes to the dead letters instead, as SQS's redrive policy does, and the lease
/// looks again for the places it left. Finding fewer than `max` tells the waiters the queue
/// holds no visible message, and when its next hidden one shows.
///
/// A select on the queue's index, then an update by id per message: one statement that
/// updates `WHERE id IN (SELECT ...) RETURNING ...` builds two temporary tables for each lease,
/// and creating and dropping their page caches took a tenth of the writer's time.
fn receive(
    conn: &Connection,
    queue: QueueName,
    max: usize,
    visibility_ms: i64,
    cx: &mut Ctx<'_>,
) -> rusqlite::Result<Vec<Delivery>> {
    let (now, q) = (cx.now, codec::queue_index(queue));
    let limit_of = cx.max_receives[q];
    let code = codec::queue_code(queue);
    let hidden_until = now.saturating_add(visibility_ms);
    let mut out = Vec::new();
    loop {
        let want = max.saturating_sub(out.len());
        if want == 0 {
            break;
        }
        let mut found: Vec<(i64, i64, i64, String, Option<String>)> = Vec::new();
        {
            let mut stmt = conn.prepare_cached(
                "SELECT id, receive_count, sent_at, body, attrs FROM messages
                 WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![code, now, codec::limit(want)])?;
            while let Some(row) = rows.next()? {
                found.push((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ));
            }
        }
        if found.is_empty() {
            break;
        }
        let mut moved = 0;
        for (id, count, sent_at, body, attrs) in found {
            let count = count.saturating_add(1);
            if count > i64::from(limit_of) {
                move_to_dead_letters(conn, id, &format!("received {limit_of} times"), 0, now)?;
                moved += 1;
                continue;
            }
            let attributes = match codec::decode_attributes(attrs.as_deref()) {
                Ok(a) => a,
                Err(e) => {
                    // This receive counts: the dead letter says it was delivered.
                    move_to_dead_letters(conn, id, &e.to_string(), 1, now)?;
                    moved += 1;
                    continue;
                }
            };
            let token = cx.waiters.token();
            conn.prepare_cached(
                "UPDATE messages SET visible_at = ?2, receive_count = ?3, receipt = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, hidden_until, count, token])?;
            out.push(Delivery {
                message_id: id.to_string(),
                receipt: ReceiptKey { id, token }.receipt(),
                body,
                attributes,
                receive_count: u32::try_from(count).unwrap_or(u32::MAX),
                sent_at: Timestamp::from_millis(sent_at),
            });
        }
        if moved == 0 {
            break;
        }
    }
    // Ids follow sending order.
    out.sort_by_key(|d| d.message_id.parse::<i64>().unwrap_or(i64::MAX));
    if out.len() < max {
        let next_visible = conn
            .prepare_cached("SELECT min(visible_at) FROM messages WHERE queue = ?1")?
            .query_row([code], |r| r.get(0))?;
        cx.waiters.looked_empty(q, next_visible);
    }
    Ok(out)
}

/// `count_adjust` adds the receive that found the message unreadable: the dead letter tells
/// how often it was delivered.
fn move_to_dead_letters(
    conn: &Connection,
    id: i64,
    reason: &str,
    count_adjust: i64,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letters
             (id, queue, dead_lettered_at, receive_count, sent_at, reason, body, attrs)
         SELECT id, queue, ?2, receive_count + ?4, sent_at, ?3, body, attrs
         FROM messages WHERE id = ?1",
    )?
    .execute(params![id, now, reason, count_adjust])?;
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

fn redrive(
    conn: &Connection,
    queue: QueueName,
    ids: Option<&[i64]>,
    cx: &mut Ctx<'_>,
) -> rusqlite::Result<usize> {
    let code = codec::queue_code(queue);
    let moved = match ids {
        None => {
            let n = conn
                .prepare_cached(
                    "INSERT INTO messages
                         (id, queue, visible_at, receive_count, receipt, sent_at, body, attrs)
                     SELECT id, queue, ?2, 0, NULL, sent_at, body, attrs
                     FROM dead_letters WHERE queue = ?1",
                )?
                .execute(params![code, cx.now])?;
            conn.prepare_cached("DELETE FROM dead_letters WHERE queue = ?1")?
                .execute([code])?;
            n
        }
        Some(ids) => {
            let mut n = 0;
            for id in ids {
                let one = conn
                    .prepare_cached(
                        "INSERT INTO messages
                             (id, queue, visible_at, receive_count, receipt, sent_at, body, attrs)
                         SELECT id, queue, ?3, 0, NULL, sent_at, body, attrs
                         FROM dead_letters WHERE queue = ?1 AND id = ?2",
                    )?
                    .execute(params![code, id, cx.now])?;
                if one > 0 {
                    conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                        .execute([id])?;
                }
                n += one;
            }
            n
        }
    };
    if moved > 0 {
        cx.waiters.became_visible(codec::queue_index(queue));
    }
    Ok(moved)
}

/// Secrets Manager's staging labels: the promoted version becomes current, the current one
/// previous, and the one before is dropped.
fn promote(
    conn: &Connection,
    name: &str,
    version_id: &str,
) -> rusqlite::Result<PortResult<Output>> {
    let stage: Option<Option<String>> = conn
        .prepare_cached("SELECT stage FROM secrets WHERE name = ?1 AND version_id = ?2")?
        .query_row([name, version_id], |r| r.get(0))
        .optional()?;
    match stage {
        None => Ok(Err(PortError::Invalid(format!(
            "secret {name:?} has no version {version_id:?}"
        )))),
        Some(Some(s)) if s == "current" => Ok(Ok(Output::Done)),
        Some(_) => {
            conn.prepare_cached(
                "DELETE FROM secrets WHERE name = ?1 AND stage = 'previous' AND version_id <> ?2",
            )?
            .execute([name, version_id])?;
            conn.prepare_cached(
                "UPDATE secrets SET stage = 'previous' WHERE name = ?1 AND stage = 'current'",
            )?
            .execute([name])?;
            conn.prepare_cached(
                "UPDATE secrets SET stage = 'current' WHERE name = ?1 AND version_id = ?2",
            )?
            .execute([name, version_id])?;
            Ok(Ok(Output::Done))
        }
    }
}
