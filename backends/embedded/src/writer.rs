//! The one writer: a thread that owns the only writing connection and commits in groups.
//!
//! Callers send an operation with a oneshot for its answer. The writer takes whatever is
//! queued (up to `batch_max` operations), carries all of it out in ONE transaction, lets the
//! waiting receives lease what became visible (see `handoff`), commits, and only then answers
//! every caller, the waiting receives that were given messages first. So a caller never hears
//! "done" for an effect that is not committed: a kill -9 at any moment loses only what nobody
//! was told about. Under load a group forms by itself while the previous one commits; a lone
//! caller is served at once, without waiting for company.
//!
//! Other processes may open the same file (each role as its own process): their writers take
//! turns with this one on SQLite's write lock, and this writer learns of their commits only by
//! watching `PRAGMA data_version` (which moves only for other connections' commits), before
//! each group and, when idle, every `EXTERNAL_POLL`; when it moved, the waiting receives look.
//!
//! If a SQLite error aborts the group, the transaction is rolled back and its operations are
//! run again one per transaction, so that one bad operation fails alone and no operation is
//! ever half committed; unless the error is the ground's, not an operation's (the disk is
//! full, another process holds the write lock past the busy timeout, the file is read-only,
//! an I/O error): then every operation of the group fails with it at once, naming the file and
//! the cause, and `como_ports::health` hears of it (one warning a period, not ready).
//!
//! Before each transaction the writer checks that its path still leads to the file it opened:
//! a file (or directory) removed or replaced under a running process would otherwise take
//! every later write with it, silently, when the process ends. Then nothing more is written,
//! each caller hears why, and the process goes on reading what it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use como_ports::{Clock, PortError, PortResult};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::codec::{self, QUEUES};
use crate::handoff::Waiters;
use crate::ops::{self, Ctx, Ids, Op, Output};

/// How often an idle writer looks for other processes' commits.
const EXTERNAL_POLL: Duration = Duration::from_millis(20);

/// How long the writer's RESTART checkpoint waits for the readers of the moment (which take
/// microseconds; readers that start after it has copied everything do not hold it up).
const WAL_RESTART_WAIT: Duration = Duration::from_millis(20);

pub struct Pending {
    op: Op,
    reply: oneshot::Sender<PortResult<Output>>,
}

// `Close` is sent once per life; boxing every operation instead would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    Op(Pending),
    /// Finish what is queued before this, then stop.
    Close(oneshot::Sender<()>),
}

/// The callers' side of the writer.
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
}

fn closed() -> PortError {
    PortError::Unavailable("the embedded backend is closed".into())
}

impl WriterHandle {
    /// Carry out `op` and answer after the transaction holding it has committed.
    pub async fn submit(&self, op: Op) -> PortResult<Output> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Op(Pending { op, reply }))
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Stop the writer once everything queued before is committed. Closing twice is harmless.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            // An error means the writer already stopped, which is what was asked.
            let _ = stopped.await;
        }
    }
}

pub struct WriterConfig {
    pub batch_max: usize,
    pub max_receives: [u32; QUEUES],
    /// Raised by the background checkpointer when the WAL should start over.
    pub restart_wal: Arc<AtomicBool>,
    /// Counts the committed transactions.
    pub commits: Arc<AtomicU64>,
    /// Fault injection (see `EmbeddedConfig::commit_delay`).
    pub commit_delay: Option<Duration>,
}

struct Writer {
    conn: Connection,
    /// The file as opened (device and inode), and where.
    file: Option<(u64, u64)>,
    path: std::path::PathBuf,
    ids: Ids,
    /// `PRAGMA data_version` as last seen: it moves when another connection commits.
    data_version: i64,
    clock: Arc<dyn Clock>,
    waiters: Waiters,
    config: WriterConfig,
}

/// Start the writer thread on a prepared connection.
pub fn spawn(
    conn: Connection,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
) -> Result<(WriterHandle, JoinHandle<()>), crate::OpenError> {
    let ids = Ids::load(&conn)?;
    let (tx, rx) = mpsc::channel();
    let data_version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    let path = std::path::PathBuf::from(conn.path().unwrap_or_default());
    let writer = Writer {
        file: identity(&path),
        path,
        conn,
        ids,
        data_version,
        clock,
        waiters: Waiters::new(uuid::Uuid::new_v4().as_u64_pair().0),
        config,
    };
    let thread = std::thread::Builder::new()
        .name("como-sqlite-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(crate::OpenError::Thread)?;
    Ok((WriterHandle { tx }, thread))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut group = Vec::with_capacity(self.config.batch_max);
        let mut close = None;
        while close.is_none() {
            let timeout = self
                .waiters
                .next_wake(self.clock.now().as_millis(), Instant::now())
                .map_or(EXTERNAL_POLL, |at| {
                    at.saturating_duration_since(Instant::now())
                        .min(EXTERNAL_POLL)
                });
            let mut next = match rx.recv_timeout(timeout) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                // Every handle is dropped: nobody can ask for anything any more.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            while let Some(m) = next.take() {
                match m {
                    Msg::Op(p) => self.take(p, &mut group),
                    Msg::Close(c) => {
                        close = Some(c);
                        break;
                    }
                }
                if group.len() < self.config.batch_max {
                    next = rx.try_recv().ok();
                }
            }
            self.watch_other_processes();
            let now = self.clock.now().as_millis();
            if !group.is_empty() || self.waiters.wants_look(now) {
                self.commit_group(&mut group, now);
            }
            self.waiters.expire(Instant::now());
            self.restart_wal();
        }
        self.waiters.close();
        self.tidy();
        if let Some(done) = close {
            let _ = done.send(());
        }
    }

    /// The checkpointer found the WAL long: fold in the frames it has not copied yet and wait
    /// a moment for the readers of the moment, so that the next commit writes from the start
    /// of the WAL again (see `Checkpointer` for why here). If a reader outlasts the wait,
    /// the checkpointer asks again after its next pass.
    fn restart_wal(&mut self) {
        if !self.config.restart_wal.swap(false, Ordering::Relaxed) {
            return;
        }
        let restarted = self.conn.busy_timeout(WAL_RESTART_WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
        });
        if let Err(e) = self.conn.busy_timeout(crate::schema::BUSY_TIMEOUT) {
            tracing::warn!(error = %e, "cannot set the writer's busy timeout back");
        }
        match restarted {
            Ok(0) => {}
            Ok(_) => tracing::debug!("readers outlasted the WAL restart; trying again later"),
            Err(e) => tracing::debug!(error = %e, "the WAL restart failed; trying again later"),
        }
    }

    /// A receive that may wait is kept by the writer; anything else joins the group.
    fn take(&mut self, p: Pending, group: &mut Vec<Pending>) {
        match p.op {
            Op::Receive {
                queue,
                max,
                visibility_ms,
                wait,
            } if !wait.is_zero() => {
                self.waiters.park(queue, max, visibility_ms, wait, p.reply);
            }
            _ => group.push(p),
        }
    }

    /// Another process committed since we last looked: it may have sent messages that this
    /// process's receives wait for.
    fn watch_other_processes(&mut self) {
        match self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        {
            Ok(v) if v != self.data_version => {
                self.data_version = v;
                self.waiters.all_maybe_visible();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read data_version"),
        }
    }

    /// Commits `group` (which may be empty when only the waiting receives have something to
    /// look at) and answers everybody concerned.
    fn commit_group(&mut self, group: &mut Vec<Pending>, now: i64) {
        if let Err(cause) = self.still_the_file() {
            self.fail_all(group, &cause);
            return;
        }
        match self.transaction(group.iter().map(|p| &p.op), now) {
            Ok(answers) => {
                self.committed(now);
                for (p, answer) in group.drain(..).zip(answers) {
                    // A caller that stopped waiting still had its write committed.
                    let _ = p.reply.send(answer);
                }
            }
            Err(e) if ground_error(&e).is_some() => {
                let cause = self.cause(&e);
                self.fail_all(group, &cause);
            }
            Err(e) => {
                if group.is_empty() {
                    tracing::debug!(error = %e, "a look for waiting receives failed");
                    return;
                }
                tracing::warn!(
                    error = %e,
                    operations = group.len(),
                    "group commit failed; running its operations one by one"
                );
                for p in group.drain(..) {
                    let answer = match self.transaction(std::iter::once(&p.op), now) {
                        Ok(mut answers) => {
                            self.committed(now);
                            answers.pop().unwrap_or_else(|| Err(closed()))
                        }
                        // The ground may have failed meanwhile (the disk filled up): said
                        // as it is for a group, with the file and the cause.
                        Err(e) if ground_error(&e).is_some() => {
                            let cause = self.cause(&e);
                            como_ports::health::write_failed(&cause);
                            Err(PortError::Unavailable(cause))
                        }
                        Err(e) => Err(codec::db_error(e)),
                    };
                    let _ = p.reply.send(answer);
                }
            }
        }
    }

    /// Every operation of `group` fails with `cause`, which the process's health hears of (so
    /// does a look for waiting receives alone: leasing a message is a write, and receives that
    /// cannot lease would otherwise just find nothing, silently).
    fn fail_all(&mut self, group: &mut Vec<Pending>, cause: &str) {
        como_ports::health::write_failed(cause);
        for p in group.drain(..) {
            let _ = p.reply.send(Err(PortError::Unavailable(cause.to_owned())));
        }
    }

    /// The store's words for an error of the ground: the file, what happened, what to do.
    fn cause(&self, e: &rusqlite::Error) -> String {
        let what = ground_error(e).unwrap_or("it failed");
        format!("cannot write to {}: {what} ({e})", self.path.display())
    }

    /// Whether the path still leads to the file this writer opened.
    fn still_the_file(&self) -> Result<(), String> {
        match (self.file, identity(&self.path)) {
            (Some(opened), Some(now)) if opened == now => Ok(()),
            (None, _) => Ok(()),
            (Some(_), found) => Err(format!(
                "cannot write to {}: the database file was {} while this process had it open; nothing more is written to it (every later write would be lost with the process). Put the file back, or copy the open one from /proc/{}/fd/, and restart the process",
                self.path.display(),
                if found.is_some() {
                    "replaced"
                } else {
                    "removed"
                },
                std::process::id()
            )),
        }
    }

    /// A transaction committed: the message ids it reserved are safe, and the waiting receives
    /// it gave messages to hear of them (and the process's health, that writes go through). Messages given to a receive whose caller stopped
    /// waiting in the meantime are made visible again straight away.
    fn committed(&mut self, now: i64) {
        como_ports::health::write_succeeded();
        loop {
            self.ids.committed();
            self.config.commits.fetch_add(1, Ordering::Relaxed);
            let orphaned = self.waiters.answer();
            if orphaned.is_empty() {
                return;
            }
            let release: Vec<Op> = orphaned
                .into_iter()
                .map(|(queue, receipt)| Op::ChangeVisibility {
                    queue,
                    receipt,
                    visibility_ms: 0,
                })
                .collect();
            if let Err(e) = self.transaction(release.iter(), now) {
                tracing::warn!(error = %e, "cannot release messages nobody waits for any more; they show again after their visibility timeout");
                return;
            }
        }
    }

    /// Runs `ops` in one transaction; on any SQLite error nothing of them stays.
    /// Before the commit, the waiting receives lease what became visible.
    fn transaction<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op>,
        now: i64,
    ) -> rusqlite::Result<Vec<PortResult<Output>>> {
        let answers = self.attempt(ops, now);
        if answers.is_err() {
            self.ids.rolled_back();
            self.waiters.rolled_back();
        }
        answers
    }

    fn attempt<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op>,
        now: i64,
    ) -> rusqlite::Result<Vec<PortResult<Output>>> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut cx = Ctx {
            now,
            ids: &mut self.ids,
            waiters: &mut self.waiters,
            max_receives: &self.config.max_receives,
        };
        let mut answers = Vec::new();
        let mut failed = None;
        for op in ops {
            match ops::execute(&self.conn, op, &mut cx) {
                Ok(answer) => answers.push(answer),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let (None, Some(delay)) = (&failed, self.config.commit_delay) {
            std::thread::sleep(delay);
        }
        let committed = match failed {
            None => ops::look(&self.conn, &mut cx).and_then(|()| {
                self.conn
                    .prepare_cached("COMMIT")
                    .and_then(|mut s| s.execute([]).map(|_| ()))
            }),
            Some(e) => Err(e),
        };
        match committed {
            Ok(()) => Ok(answers),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Fold the WAL back into the file as far as readers allow, without waiting for them
    /// (other processes may be reading); what is left is replayed by the next open.
    fn tidy(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "checkpoint on close failed");
        }
    }
}

/// The device and inode of the file at `path`, if there is one.
fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What an error says about the ground the store stands on, when it is not the operation's
/// fault: running the group's operations one by one would fail each the same way.
fn ground_error(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    Some(match f.code {
        C::DiskFull => {
            "the database or the disk is full; free space (or raise the quota) and writes resume by themselves"
        }
        C::DatabaseBusy | C::DatabaseLocked => {
            "the database is locked: another process has held its write lock for longer than the busy timeout (5 s); writes resume when it lets go"
        }
        C::ReadOnly => "the file or its directory is read-only",
        C::SystemIoFailure => "an I/O error (the disk, or the file system under it)",
        C::CannotOpen => "the file cannot be opened (its directory may be gone)",
        C::PermissionDenied => "permission denied",
        _ => return None,
    })
}
