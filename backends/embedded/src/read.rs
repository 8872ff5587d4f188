//! Read connections. WAL lets readers run beside the writer, each on a snapshot of the last
//! commit, so reads never queue behind the writer's groups. A read started after a write was
//! acknowledged sees that write.
//!
//! Point reads (one row by key: a saga, a secret) run on the caller's thread: they take
//! microseconds, less than a hop to another thread would. (Idempotency records are read by the
//! writer: see `ops::Op::GetRecord`.) Reads that may walk many rows
//! (lists, history, counts) run on tokio's blocking pool so that they never hold up a runtime
//! thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use como_ports::{PortError, PortResult};
use rusqlite::{Connection, OpenFlags};

use crate::codec::db_error;
use crate::schema;

pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Readers {
    /// The database file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn new(path: PathBuf, keep: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock cannot leave the list half changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> PortResult<Connection> {
        if let Some(conn) = self.idle().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error)?;
        schema::prepare_reader(&conn).map_err(db_error)?;
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.idle();
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    /// A short read on the caller's thread.
    pub fn point<T>(&self, f: impl FnOnce(&Connection) -> PortResult<T>) -> PortResult<T> {
        let conn = self.checkout()?;
        let out = f(&conn);
        self.checkin(conn);
        out
    }

    /// A read that may take a while, on the blocking pool.
    pub async fn scan<T, F>(self: &Arc<Self>, f: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.point(f))
            .await
            .map_err(|e| PortError::Unavailable(format!("read task failed: {e}")))?
    }
}
