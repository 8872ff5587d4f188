//! The SQLite schema of the embedded backend and the settings of its connections.
//!
//! Tables (one file, WAL mode):
//! - `messages`: every queue's messages; `queue` is a small code (see `codec::queue_code`),
//!   `receipt` the token of the current lease (NULL before the first receive).
//! - `dead_letters`: messages moved aside, with the reason; a message keeps its id when it
//!   moves either way, so ids are unique across both tables.
//! - `sagas`: one row per saga; `state` is the engine's `SagaState` as compact JSON, the other
//!   columns are what the indexes need (`member` is written once, when the saga starts, so its
//!   index costs a transition nothing). `wake_at` is NULL for a saga that is finished;
//!   `history_head` is the saga's latest history entry.
//! - `history`: history entries, appended in commit order; each points to the saga's entry
//!   before it (`prev`), so a saga's history is a chain from `sagas.history_head`.
//! - `events`: the event log (saga lifecycle events), unique by `(at, event_id)`: a
//!   republished event is the same event, with the same id and time.
//! - `rejections`: `BookingRejected` events, unique by `event_id`.
//! - `records`: idempotency records, first write wins; and small shared values changed by
//!   compare-and-set (`IdempotencyRecords::swap`, keys such as `health/...`). Nothing prunes it.
//! - `audit`: operator actions with who, why, when and how they ended (see `como_ports::audit`).
//! - `secrets`: secret versions with their stage (`current`, `pending`, `previous`).
//! - `meta`: the high-water mark of message ids handed out (see `writer::Ids`), and whether
//!   `saga_step_counts` has been counted.
//! - `saga_step_counts`: sagas per status and step, kept by triggers on `sagas` in the same
//!   transaction.
//!
//! Every index is one more b-tree write per statement, and the single writer is the limit of
//! the whole backend, so there are only the indexes that a hot path or a dashboard needs. And
//! every page a commit changes is written whole to the WAL (and later again to the file), so
//! writes are kept on pages that many sagas share: the history and the event log are appended
//! (not clustered by saga, which would dirty one page per saga per commit), and the indexes
//! that change on every transition lead with time. Measured on the step cycle of the
//! benchmark, this took the WAL from ~7.5 to ~5.5 pages per saga step.

use rusqlite::Connection;

use crate::OpenError;

/// `PRAGMA user_version` of the schema this build writes. A file with a higher version was
/// written by a newer build and is refused rather than misread.
/// Version 2 keeps `saga_counts` (a file a version-1 build wrote is counted once on open).
/// Version 3 keeps each saga's member in `sagas.member`, indexed, and counts by status and step
/// in `saga_step_counts` (a version-2 file gets the column filled and is counted once on open).
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY,
    queue         INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    receipt       INTEGER,
    sent_at       INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    attrs         TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    id               INTEGER PRIMARY KEY,
    queue            INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL,
    sent_at          INTEGER NOT NULL,
    reason           TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    attrs            TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, dead_lettered_at);

CREATE TABLE IF NOT EXISTS sagas (
    id          BLOB    NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    step        TEXT,
    request_id  TEXT    NOT NULL,
    member      TEXT,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    wake_at     INTEGER,
    history_head INTEGER,
    state       TEXT    NOT NULL
);
-- The dashboard's lists, newest first by status. Keyed by when the saga started, which never
-- changes, so a transition rewrites the entry only when the status changes. (Files written
-- before this index was keyed by `updated_at`, whose entry moved on every transition.)
DROP INDEX IF EXISTS sagas_status;
CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, started_at);
CREATE INDEX IF NOT EXISTS sagas_wake ON sagas (wake_at) WHERE wake_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS history (
    seq     INTEGER PRIMARY KEY,
    saga_id BLOB    NOT NULL,
    prev    INTEGER,
    entry   TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    event_id TEXT    NOT NULL,
    saga_id  BLOB    NOT NULL,
    type     TEXT    NOT NULL,
    body     TEXT    NOT NULL,
    UNIQUE (at, event_id)
);

CREATE TABLE IF NOT EXISTS rejections (
    seq      INTEGER PRIMARY KEY,
    event_id TEXT    NOT NULL UNIQUE,
    at       INTEGER NOT NULL,
    body     TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS records (
    key   TEXT    PRIMARY KEY,
    at    INTEGER NOT NULL,
    value TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS secrets (
    name       TEXT    NOT NULL,
    version_id TEXT    NOT NULL,
    stage      TEXT,
    created_at INTEGER NOT NULL,
    value      TEXT    NOT NULL,
    PRIMARY KEY (name, version_id)
) WITHOUT ROWID;

-- Operator actions (`como_ports::audit`), one row per action and target, replaced when the
-- action ends (keeping its `seq` and `at`). Listed newest first, by actor or action.
CREATE TABLE IF NOT EXISTS audit (
    seq    INTEGER PRIMARY KEY,
    id     TEXT    NOT NULL UNIQUE,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    entry  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, at);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, at);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- How many sagas are in each status, kept by the triggers below in the transaction that writes
-- the saga, so that counting (which dashboards poll) never reads the sagas. Its rows, one per
-- status, are made when the file is opened (`prepare_writer`).
-- How many sagas are in each status and at each step (`''` for a finished saga, which is at
-- none), kept by the triggers below in the transaction that writes the saga, so that counting
-- (which dashboards poll) never reads the sagas. (Version 2 kept `saga_counts`, by status
-- only; it is dropped and counted again into this table on open.)
DROP TRIGGER IF EXISTS saga_counts_insert;
DROP TRIGGER IF EXISTS saga_counts_update;
DROP TRIGGER IF EXISTS saga_counts_delete;
DROP TABLE IF EXISTS saga_counts;
CREATE TABLE IF NOT EXISTS saga_step_counts (
    status TEXT    NOT NULL,
    step   TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (status, step)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS saga_step_counts_insert AFTER INSERT ON sagas BEGIN
    INSERT INTO saga_step_counts (status, step, n) VALUES (new.status, coalesce(new.step, ''), 1)
        ON CONFLICT (status, step) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS saga_step_counts_update AFTER UPDATE OF status, step ON sagas
    WHEN old.status IS NOT new.status OR old.step IS NOT new.step BEGIN
    UPDATE saga_step_counts SET n = n - 1
        WHERE status = old.status AND step = coalesce(old.step, '');
    INSERT INTO saga_step_counts (status, step, n) VALUES (new.status, coalesce(new.step, ''), 1)
        ON CONFLICT (status, step) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS saga_step_counts_delete AFTER DELETE ON sagas BEGIN
    UPDATE saga_step_counts SET n = n - 1
        WHERE status = old.status AND step = coalesce(old.step, '');
END;
";

/// How much is lost when the machine (not only the process) fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit is in the WAL file when it is acknowledged, so a killed
    /// process loses nothing; a power cut may lose the commits not yet written out to the
    /// disk (with the background checkpointer, which writes the WAL out every 10 ms, those of
    /// the last few tens of milliseconds).
    #[default]
    ProcessCrash,
    /// `synchronous=FULL`: the WAL is synced on every commit; a power cut loses nothing that
    /// was acknowledged, at the price of one fsync per group commit.
    PowerLoss,
}

/// How long a connection waits for a lock another connection holds (another process's writer,
/// a checkpoint) before its statement fails with SQLITE_BUSY.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings of the writer connection, then the schema.
///
/// `checkpoint_pages`: the WAL is folded back into the file (by the writer, inside a commit)
/// once it holds this many pages. Larger means fewer, longer pauses and fewer bytes written,
/// because a page changed by many commits is copied once; 10,000 pages (~40 MB) measured ~15%
/// faster than SQLite's 1,000 on the step-cycle benchmark.
pub fn prepare_writer(
    conn: &Connection,
    durability: Durability,
    cache_mb: u32,
    checkpoint_pages: u32,
) -> Result<(), OpenError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    let sync = match durability {
        Durability::ProcessCrash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA cache_size = -{kib};
         PRAGMA wal_autocheckpoint = {checkpoint_pages};
         PRAGMA journal_size_limit = 536870912;
         PRAGMA temp_store = MEMORY;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = OFF;
         PRAGMA busy_timeout = {busy};",
        kib = u64::from(cache_mb) * 1024,
        busy = BUSY_TIMEOUT.as_millis(),
    ))?;
    conn.set_prepared_statement_cache_capacity(64);

    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema { found: version });
    }
    // A file written before `sagas.member` gets the column, filled from each saga's request.
    let sagas_without_member: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sagas')
            AND NOT EXISTS (SELECT 1 FROM pragma_table_info('sagas') WHERE name = 'member')",
        [],
        |r| r.get(0),
    )?;
    let add_member = if sagas_without_member {
        "ALTER TABLE sagas ADD COLUMN member TEXT;
         UPDATE sagas SET member = json_extract(state, '$.request.member_no');"
    } else {
        ""
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         {SCHEMA}
         {add_member}
         CREATE INDEX IF NOT EXISTS sagas_by_member ON sagas (member, started_at);
         INSERT INTO saga_step_counts (status, step, n)
             SELECT status, coalesce(step, ''), count(*) FROM sagas
              WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'saga_step_counts')
              GROUP BY status, coalesce(step, '');
         INSERT OR IGNORE INTO meta (key, value) VALUES ('saga_step_counts', 1);
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))?;
    Ok(())
}

/// Settings of a read connection: reads never write, and wait out a checkpoint's brief lock.
pub fn prepare_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "PRAGMA query_only = ON;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;
         PRAGMA busy_timeout = {busy};",
        busy = BUSY_TIMEOUT.as_millis(),
    ))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}
