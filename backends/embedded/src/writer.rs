//! The one writer: a thread that owns the only writing connection and commits in groups.
//!
//! Callers send an operation with a oneshot for its answer. The writer takes whatever is
//! queued (up to `batch_max` operations), carries all of it out in ONE transaction, commits,
//! wakes as many waiting consumers of each queue as messages became visible there, and only
//! then answers every caller. So a caller never hears "done" for an effect that is not committed: a kill -9 at
//! any moment loses only what nobody was told about. Under load a group forms by itself while
//! the previous one commits; a lone caller is served at once, without waiting for company.
//!
//! Other processes may open the same file (each role as its own process): their writers take
//! turns with this one on SQLite's write lock, and their commits cannot ring this process's
//! bells. So the writer watches `PRAGMA data_version` (which moves only for other connections'
//! commits) before each group and, when idle, every `EXTERNAL_POLL`; when it moved, one waiting
//! consumer per queue looks again (and a consumer that finds a full batch wakes the next).
//!
//! If a SQLite error aborts the group, the transaction is rolled back and its operations are
//! run again one per transaction, so that one bad operation fails alone and no operation is
//! ever half committed.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use como_ports::{Clock, PortError, PortResult};
use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};

use crate::codec::{self, QUEUES};
use crate::ops::{self, Ctx, Ids, Op, Output};

/// At most this many consumers of one queue are woken per commit.
const WAKE_MAX: usize = 256;

/// How often an idle writer looks for other processes' commits.
const EXTERNAL_POLL: Duration = Duration::from_millis(20);

/// Consumers waiting on each queue (by code - 1), woken after a commit makes messages visible.
pub type Notifiers = [Notify; QUEUES];

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
}

struct Writer {
    conn: Connection,
    ids: Ids,
    /// `PRAGMA data_version` as last seen: it moves when another connection commits.
    data_version: i64,
    clock: Arc<dyn Clock>,
    notify: Arc<Notifiers>,
    config: WriterConfig,
}

/// Start the writer thread on a prepared connection.
pub fn spawn(
    conn: Connection,
    clock: Arc<dyn Clock>,
    notify: Arc<Notifiers>,
    config: WriterConfig,
) -> Result<(WriterHandle, JoinHandle<()>), crate::OpenError> {
    let ids = Ids::load(&conn)?;
    let (tx, rx) = mpsc::channel();
    let data_version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    let writer = Writer {
        conn,
        ids,
        data_version,
        clock,
        notify,
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
        loop {
            let first = match rx.recv_timeout(EXTERNAL_POLL) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.watch_other_processes();
                    continue;
                }
                // Every handle is dropped: nobody can ask for anything any more.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut close = None;
            match first {
                Msg::Op(p) => group.push(p),
                Msg::Close(c) => close = Some(c),
            }
            while close.is_none() && group.len() < self.config.batch_max {
                match rx.try_recv() {
                    Ok(Msg::Op(p)) => group.push(p),
                    Ok(Msg::Close(c)) => close = Some(c),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.watch_other_processes();
                self.commit_group(&mut group);
            }
            if let Some(done) = close {
                self.tidy();
                let _ = done.send(());
                return;
            }
        }
        self.tidy();
    }

    /// Another process committed since we last looked: it may have sent messages that this
    /// process's consumers wait for.
    fn watch_other_processes(&mut self) {
        match self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
        {
            Ok(v) if v != self.data_version => {
                self.data_version = v;
                for notify in self.notify.iter() {
                    notify.notify_one();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read data_version"),
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Pending>) {
        let now = self.clock.now().as_millis();
        let mut visible = [0; QUEUES];
        match self.transaction(group.iter().map(|p| &p.op), now, &mut visible) {
            Ok(answers) => {
                self.ids.committed();
                self.wake(&visible);
                for (p, answer) in group.drain(..).zip(answers) {
                    // A caller that stopped waiting still had its write committed.
                    let _ = p.reply.send(answer);
                }
            }
            Err(e) => {
                self.ids.rolled_back();
                tracing::warn!(
                    error = %e,
                    operations = group.len(),
                    "group commit failed; running its operations one by one"
                );
                for p in group.drain(..) {
                    let mut visible = [0; QUEUES];
                    let answer = match self.transaction(std::iter::once(&p.op), now, &mut visible) {
                        Ok(mut answers) => {
                            self.ids.committed();
                            self.wake(&visible);
                            answers.pop().unwrap_or_else(|| Err(closed()))
                        }
                        Err(e) => {
                            self.ids.rolled_back();
                            Err(codec::db_error(e))
                        }
                    };
                    let _ = p.reply.send(answer);
                }
            }
        }
    }

    /// Runs `ops` in one transaction; on any SQLite error nothing of them stays.
    fn transaction<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op>,
        now: i64,
        visible: &mut [usize; QUEUES],
    ) -> rusqlite::Result<Vec<PortResult<Output>>> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut cx = Ctx {
            now,
            ids: &mut self.ids,
            visible,
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
        let committed = match failed {
            None => self
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]).map(|_| ())),
            Some(e) => Err(e),
        };
        match committed {
            Ok(()) => Ok(answers),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                *visible = [0; QUEUES];
                Err(e)
            }
        }
    }

    /// One waiting consumer per message that became visible: waking every waiter for one
    /// message would have all but one of them run an empty receive through the writer.
    fn wake(&self, visible: &[usize; QUEUES]) {
        for (notify, n) in self.notify.iter().zip(visible) {
            for _ in 0..(*n).min(WAKE_MAX) {
                notify.notify_one();
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
