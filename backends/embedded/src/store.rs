//! The saga store port on the `sagas`, `history` and `events` tables: a saga write and its
//! effects (history, events, commands, the input's acknowledgement) commit in one transaction.
//!
//! Lists are ordered by `(started_at desc, rowid desc)`: neither changes for a saga, so the
//! cursor `"<started_at>.<rowid>"` pages through a stable order, and the index on
//! `(status, started_at)` is written when a saga starts and when its status changes, not on
//! every transition.

use async_trait::async_trait;
use como_engine::{HistoryEntry, SagaState, StatusKind};
use como_ports::store::current_step;
use como_ports::{
    CreateOutcome, Effects, PortError, PortResult, SagaPage, SagaQuery, SagaReader, SagaSummary,
    SagaWriter, StepCount, UpdateOutcome, Versioned,
};
use como_schemas::{SagaEvent, SagaId, StepName, Timestamp};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params_from_iter};

use crate::EmbeddedPorts;
use crate::codec::{self, ReceiptKey, db_error, json_error, saga_key};
use crate::ops::{EffectRows, EventRow, Op, Output, SagaRow};
use crate::queue::new_message;

/// A page when the query does not say; and the most a page holds.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1_000;

fn encode<T: serde::Serialize>(what: &str, value: &T) -> PortResult<String> {
    serde_json::to_string(value)
        .map_err(|e| PortError::Invalid(format!("cannot encode {what}: {e}")))
}

fn saga_row(state: &SagaState) -> PortResult<SagaRow> {
    let kind = state.status.kind();
    Ok(SagaRow {
        id: saga_key(state.saga_id),
        status: kind.as_str(),
        step: current_step(state).map(|s| s.as_str().to_owned()),
        request_id: state.request.request_id.as_str().to_owned(),
        member: state.request.member_no.as_str().to_owned(),
        started_at: state.started_at.as_millis(),
        updated_at: state.updated_at.as_millis(),
        // A finished saga keeps a timer only for its late-effect audit; the engine decides.
        wake_at: state.wake_at.map(|t| t.as_millis()),
        state: encode("the saga", state)?,
    })
}

pub fn event_row(event: &SagaEvent) -> PortResult<EventRow> {
    Ok(EventRow {
        event_id: event.event_id.clone(),
        saga_id: saga_key(event.saga_id),
        kind: event.body.type_name(),
        at: event.at.as_millis(),
        body: encode("an event", event)?,
    })
}

/// Everything is encoded, and the receipt checked, before the writer sees the operation: a
/// malformed effect fails the call with nothing written.
fn effect_rows(effects: Effects) -> PortResult<EffectRows> {
    Ok(EffectRows {
        history: effects
            .history
            .iter()
            .map(|h| encode("a history entry", h))
            .collect::<PortResult<_>>()?,
        events: effects
            .events
            .iter()
            .map(event_row)
            .collect::<PortResult<_>>()?,
        sends: effects
            .sends
            .into_iter()
            .map(|(q, m)| new_message(q, m))
            .collect(),
        ack: effects
            .ack
            .map(|(q, r)| ReceiptKey::parse(&r).map(|k| (q, k)))
            .transpose()?,
    })
}

fn decode_state(text: &str) -> PortResult<SagaState> {
    serde_json::from_str(text).map_err(json_error("saga state"))
}

struct Cursor {
    started_at: i64,
    rowid: i64,
}

impl Cursor {
    fn encode(&self) -> String {
        format!("{}.{}", self.started_at, self.rowid)
    }

    fn parse(s: &str) -> PortResult<Self> {
        let invalid = || PortError::Invalid(format!("{s:?} is not a cursor of this store"));
        let (u, r) = s.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            started_at: u.parse().map_err(|_| invalid())?,
            rowid: r.parse().map_err(|_| invalid())?,
        })
    }
}

#[async_trait]
impl SagaReader for EmbeddedPorts {
    async fn get(&self, id: SagaId) -> PortResult<Option<Versioned<SagaState>>> {
        let key = saga_key(id);
        let row: Option<(i64, String)> = self.readers.point(|conn| {
            conn.prepare_cached("SELECT version, state FROM sagas WHERE id = ?1")
                .and_then(|mut s| {
                    s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db_error)
        })?;
        row.map(|(version, state)| {
            Ok(Versioned {
                version: codec::unsigned("version", version)?,
                value: decode_state(&state)?,
            })
        })
        .transpose()
    }

    async fn query(&self, query: &SagaQuery) -> PortResult<SagaPage> {
        let page = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // The filters every index entry can be checked against, then one arm per index range
        // to read newest first: the member's entries, one status's, or (neither given) each
        // status's, merged in order by SQLite (`MERGE (UNION ALL)`: no sort, however many
        // sagas there are).
        let mut filter = String::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(step) = &query.step {
            codec::bind(
                &mut args,
                &mut filter,
                " AND step = ?",
                Value::Text(step.as_str().to_owned()),
            );
        }
        if let Some(before) = query.updated_before {
            // A saga updated before then started before then too: the index narrows it.
            codec::bind(
                &mut args,
                &mut filter,
                " AND updated_at < ? AND started_at < ?",
                Value::Integer(before.as_millis()),
            );
        }
        if let Some(from) = query.started_from {
            codec::bind(
                &mut args,
                &mut filter,
                " AND started_at >= ?",
                Value::Integer(from.as_millis()),
            );
        }
        if let Some(before) = query.started_before {
            codec::bind(
                &mut args,
                &mut filter,
                " AND started_at < ?",
                Value::Integer(before.as_millis()),
            );
        }
        // Read in the file itself, before a row is decoded: what a retention sweep looks for
        // among the many sagas that no longer hold any.
        match query.personal_data {
            Some(true) => {
                filter.push_str(" AND json_type(state, '$.request.guest.erased') IS NULL")
            }
            Some(false) => {
                filter.push_str(" AND json_type(state, '$.request.guest.erased') IS NOT NULL");
            }
            None => {}
        }
        if let Some(cursor) = &query.cursor {
            let c = Cursor::parse(cursor)?;
            args.push(Value::Integer(c.started_at));
            args.push(Value::Integer(c.rowid));
            filter.push_str(&format!(
                " AND (started_at, rowid) < (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        let mut arms: Vec<String> = Vec::new();
        if let Some(member) = &query.member {
            let mut own = filter.clone();
            codec::bind(
                &mut args,
                &mut own,
                " AND member = ?",
                Value::Text(member.as_str().to_owned()),
            );
            if let Some(status) = query.status {
                codec::bind(
                    &mut args,
                    &mut own,
                    " AND status = ?",
                    Value::Text(status.as_str().to_owned()),
                );
            }
            arms.push(own);
        } else {
            let statuses: Vec<StatusKind> = match query.status {
                Some(k) => vec![k],
                None => StatusKind::ALL
                    .into_iter()
                    .filter(|k| !query.live_only() || !k.is_terminal())
                    .collect(),
            };
            for status in statuses {
                // A fixed word of ours, not input.
                arms.push(format!(" AND status = '{}'{filter}", status.as_str()));
            }
        }
        let keys = arms
            .iter()
            .map(|f| format!("SELECT rowid AS k, started_at FROM sagas WHERE 1 = 1{f}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let reads_sagas = query.reads_sagas();
        let sql = if reads_sagas {
            // Filters on the saga itself: the keys in order, each saga read, until a page
            // (and one more) has matched.
            format!("{keys} ORDER BY 2 DESC, 1 DESC")
        } else {
            // One more than a page, to know whether there is a next one; the keys from the
            // indexes first, then only their rows.
            args.push(Value::Integer(codec::limit(page + 1)));
            format!(
                "SELECT s.rowid, s.started_at, s.version, s.state FROM sagas AS s
                 WHERE s.rowid IN (SELECT k FROM ({keys} ORDER BY 2 DESC, 1 DESC LIMIT ?{}))
                 ORDER BY s.started_at DESC, s.rowid DESC",
                args.len()
            )
        };
        let query = query.clone();
        self.readers
            .scan(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
                let mut rows = stmt.query(params_from_iter(args)).map_err(db_error)?;
                let mut one = if reads_sagas {
                    Some(
                        conn.prepare_cached("SELECT version, state FROM sagas WHERE rowid = ?1")
                            .map_err(db_error)?,
                    )
                } else {
                    None
                };
                let mut items = Vec::new();
                let mut last = None;
                let mut more = false;
                while let Some(row) = rows.next().map_err(db_error)? {
                    let rowid: i64 = row.get(0).map_err(db_error)?;
                    let started_at: i64 = row.get(1).map_err(db_error)?;
                    let (version, state): (i64, String) = match &mut one {
                        Some(stmt) => match stmt
                            .query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                            .map_err(db_error)?
                        {
                            Some(found) => found,
                            None => continue,
                        },
                        None => (row.get(2).map_err(db_error)?, row.get(3).map_err(db_error)?),
                    };
                    let state = decode_state(&state)?;
                    let summary = SagaSummary::of(&state, codec::unsigned("version", version)?);
                    if !query.matches(&summary) {
                        continue;
                    }
                    if items.len() == page {
                        more = true;
                        break;
                    }
                    items.push(summary);
                    last = Some(Cursor { rowid, started_at });
                }
                Ok(SagaPage {
                    items,
                    next_cursor: if more { last.map(|c| c.encode()) } else { None },
                })
            })
            .await
    }

    async fn history(&self, id: SagaId) -> PortResult<Vec<HistoryEntry>> {
        let key = saga_key(id);
        self.readers
            .scan(move |conn| {
                // The chain from the saga's latest entry back to its first.
                let mut stmt = conn
                    .prepare_cached(
                        "WITH RECURSIVE chain (seq, prev, entry) AS (
                             SELECT h.seq, h.prev, h.entry FROM sagas AS s
                             JOIN history AS h ON h.seq = s.history_head
                             WHERE s.id = ?1
                             UNION ALL
                             SELECT h.seq, h.prev, h.entry FROM chain AS c
                             JOIN history AS h ON h.seq = c.prev
                         )
                         SELECT entry FROM chain ORDER BY seq",
                    )
                    .map_err(db_error)?;
                let mut rows = stmt.query([key]).map_err(db_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let text: String = row.get(0).map_err(db_error)?;
                    out.push(serde_json::from_str(&text).map_err(json_error("history entry"))?);
                }
                Ok(out)
            })
            .await
    }

    async fn counts(&self) -> PortResult<Vec<(StatusKind, u64)>> {
        self.readers
            .scan(|conn| {
                let mut stmt = conn
                    // Kept by triggers as sagas change status: no saga is read (`schema`).
                    .prepare_cached("SELECT status, sum(n) FROM saga_step_counts GROUP BY status")
                    .map_err(db_error)?;
                let mut rows = stmt.query([]).map_err(db_error)?;
                let mut counts: Vec<(StatusKind, u64)> =
                    StatusKind::ALL.iter().map(|k| (*k, 0)).collect();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let status: String = row.get(0).map_err(db_error)?;
                    let n: i64 = row.get(1).map_err(db_error)?;
                    let kind = StatusKind::parse(&status)
                        .ok_or_else(|| PortError::Corrupt(format!("unknown status {status:?}")))?;
                    if let Some(slot) = counts.iter_mut().find(|(k, _)| *k == kind) {
                        slot.1 = codec::unsigned("count", n)?;
                    }
                }
                Ok(counts)
            })
            .await
    }

    async fn step_counts(&self) -> PortResult<Vec<StepCount>> {
        self.readers
            .scan(|conn| {
                let mut stmt = conn
                    // Kept by triggers as sagas change status or step (`schema`).
                    .prepare_cached(
                        "SELECT status, step, n FROM saga_step_counts
                          WHERE step != '' AND n > 0 ORDER BY n DESC, step",
                    )
                    .map_err(db_error)?;
                let mut rows = stmt.query([]).map_err(db_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let status: String = row.get(0).map_err(db_error)?;
                    let step: String = row.get(1).map_err(db_error)?;
                    let n: i64 = row.get(2).map_err(db_error)?;
                    let status = StatusKind::parse(&status)
                        .ok_or_else(|| PortError::Corrupt(format!("unknown status {status:?}")))?;
                    if status.is_terminal() {
                        continue;
                    }
                    out.push(StepCount {
                        status,
                        step: StepName::parse(&step)
                            .map_err(|e| PortError::Corrupt(format!("step {step:?}: {e}")))?,
                        count: codec::unsigned("count", n)?,
                    });
                }
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl SagaWriter for EmbeddedPorts {
    /// A TRUNCATE checkpoint: the WAL's frames are copied into the file (where `secure_delete`
    /// has zeroed what an update or a delete freed) and the WAL is cut to nothing, so that no
    /// older version of a row survives in it. It waits for the writer and the readers of the
    /// moment (up to the busy timeout); `false` when they outlasted it.
    async fn compact(&self) -> PortResult<bool> {
        // A TRUNCATE checkpoint holds new writes back while it waits for the readers of the
        // moment: a second at most, then it gives up (the next checkpoint does it).
        const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
        let path = self.readers.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db_error)?;
            conn.busy_timeout(WAIT).map_err(db_error)?;
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(db_error)?;
            Ok(busy == 0)
        })
        .await
        .map_err(|e| PortError::Unavailable(format!("the checkpoint's thread failed: {e}")))?
    }

    async fn create(&self, state: &SagaState, effects: Effects) -> PortResult<CreateOutcome> {
        let op = Op::Create {
            saga: saga_row(state)?,
            effects: effect_rows(effects)?,
        };
        match self.writer.submit(op).await? {
            Output::Created(c) => Ok(c),
            other => Err(other.unexpected()),
        }
    }

    async fn update(
        &self,
        state: &SagaState,
        expected_version: u64,
        effects: Effects,
    ) -> PortResult<UpdateOutcome> {
        let op = Op::Update {
            saga: saga_row(state)?,
            expected_version,
            effects: effect_rows(effects)?,
        };
        match self.writer.submit(op).await? {
            Output::Updated(u) => Ok(u),
            other => Err(other.unexpected()),
        }
    }

    async fn due(&self, now: Timestamp, limit: usize) -> PortResult<Vec<SagaId>> {
        let now = now.as_millis();
        let limit = codec::limit(limit);
        self.readers
            .scan(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id FROM sagas WHERE wake_at IS NOT NULL AND wake_at <= ?1
                         ORDER BY wake_at LIMIT ?2",
                    )
                    .map_err(db_error)?;
                let mut rows = stmt.query((now, limit)).map_err(db_error)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(db_error)? {
                    let id: Vec<u8> = row.get(0).map_err(db_error)?;
                    out.push(codec::saga_of_key(&id)?);
                }
                Ok(out)
            })
            .await
    }
}
