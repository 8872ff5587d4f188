//! The embedded backend: every port on one SQLite file in WAL mode, so that a saga's state
//! change and the commands and events it emits commit in one transaction (a transactional
//! outbox for free). Must not be depended on by the engine or the workers' downstream clients.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
//! use como_ports::SystemClock;
//!
//! let backend = EmbeddedBackend::open("data/como.sqlite", EmbeddedConfig::default(), Arc::new(SystemClock))?;
//! let ports = backend.ports(); // como_ports::Backend: queue, store, records, bus, secrets, clock
//! // ... run the orchestrator and workers on `ports` ...
//! backend.close().await; // commit what is queued, stop the writer
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `schema`: the tables and indexes (their layout is described there), and the connections'
//!   settings.
//! - `writer`: the one writer thread and its group commit; `ops`: the write operations;
//!   `handoff`: long polls parked in the writer, and messages handed to them as they are sent.
//! - `read`: read connections beside the writer.
//! - `codec`: how port values are spelled in rows; anything read back that does not decode
//!   is `PortError::Corrupt`.
//! - `queue`, `store`, `records`, `bus`, `secrets`: the ports, on one [`EmbeddedPorts`].
//!
//! Guarantees: an operation is answered only after the transaction that holds its effect has
//! committed, so `kill -9` at any moment loses nothing that was acknowledged (with
//! [`Durability::PowerLoss`], a power cut doesn't either). A queue consumer waiting in a long
//! poll is handed the messages sent to it by the commit that sends them, not by a poll interval.

mod audit;
mod bus;
mod codec;
pub mod files;
mod handoff;
mod ops;
mod queue;
mod read;
mod records;
mod schema;
mod secrets;
mod store;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use como_ports::{Backend, Clock, QueueName};
use rusqlite::{Connection, OpenFlags};

pub use schema::{Durability, SCHEMA_VERSION};

/// How the embedded backend behaves.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// How many times a message may be received before the next receive moves it to the dead
    /// letters instead (SQS's `maxReceiveCount`).
    pub max_receives: u32,
    /// Per-queue exceptions to `max_receives`.
    pub queue_max_receives: BTreeMap<QueueName, u32>,
    /// At most this many operations commit in one transaction.
    pub batch_max: usize,
    pub durability: Durability,
    /// The writer's page cache, in MiB. Bigger is not faster for the writer: SQLite scans
    /// part of the cache on every commit (32 measured best of 8 to 64 on the benchmark).
    pub cache_mb: u32,
    /// Pages in the WAL before the writer checkpoints it into the file. Unused when
    /// `background_checkpoint` is on.
    pub checkpoint_pages: u32,
    /// Fold the WAL back into the file from a thread of its own, every second, instead of
    /// inside the writer's commits: a checkpoint then never stalls the writer (it measured
    /// 30–40 ms pauses that every saga in flight waited out). With `Durability::ProcessCrash`
    /// the same thread writes the WAL out to the disk every 10 ms.
    pub background_checkpoint: bool,
    /// Idle read connections kept open.
    pub read_connections: usize,
    /// Fault injection: the writer holds every transaction open this long after its last
    /// operation, before the commit, so that a `kill -9` lands inside it (the crash tests and
    /// `chaos --store-faults` check that the WAL keeps its promise). Never set in production;
    /// `COMO_SAGA_FAULT_COMMIT_DELAY_MS` sets it for a role.
    pub commit_delay: Option<Duration>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            max_receives: 5,
            queue_max_receives: BTreeMap::new(),
            batch_max: 256,
            durability: Durability::default(),
            cache_mb: 32,
            checkpoint_pages: 10_000,
            background_checkpoint: true,
            read_connections: 4,
            commit_delay: None,
        }
    }
}

impl EmbeddedConfig {
    pub fn max_receives_of(&self, queue: QueueName) -> u32 {
        self.queue_max_receives
            .get(&queue)
            .copied()
            .unwrap_or(self.max_receives)
    }
}

/// Why the file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    // The cause is shown in the message and not kept as a source, so that a printer of the
    // error's chain says it once.
    #[error("cannot create the directory {path}: {error}")]
    Directory {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot create {path} readable by its owner only: {error}")]
    Private {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the file refused WAL mode (journal mode {0})")]
    NotWal(String),
    #[error(
        "the file has schema version {found}, newer than this build reads ({})",
        schema::SCHEMA_VERSION
    )]
    NewerSchema { found: i64 },
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the file is read-only (its permissions, its directory's, or a file system mounted read-only); every role writes to it"
    )]
    ReadOnly,
}

impl OpenError {
    /// Whether another connection held the file's lock past the busy timeout: a state that
    /// passes, unlike the others.
    pub fn is_locked(&self) -> bool {
        matches!(self, OpenError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => {
                OpenError::ReadOnly
            }
            _ => OpenError::Sqlite(e),
        }
    }
}

/// Every port on one SQLite file. Cloning the [`Backend`] from [`ports`](Self::ports) is
/// cheap; the writer stops when [`close`](Self::close) is called or when the last handle is
/// dropped, after committing what was queued.
pub struct EmbeddedBackend {
    ports: Arc<EmbeddedPorts>,
    path: PathBuf,
}

/// The implementation of every port trait, shared by the [`Backend`]'s handles.
pub struct EmbeddedPorts {
    writer: writer::WriterHandle,
    readers: Arc<read::Readers>,
    clock: Arc<dyn Clock>,
    stop_checkpoints: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    wal_syncs: Arc<AtomicU64>,
}

impl EmbeddedBackend {
    /// Open (or create, with its parent directories) the file at `path`.
    pub fn open(
        path: impl AsRef<Path>,
        config: EmbeddedConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| OpenError::Directory {
                path: dir.to_path_buf(),
                error,
            })?;
        }
        // Created private before SQLite creates it with the umask's mode (see `files`).
        let before = files::create_private(&path)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // SQLite opens a file it may not write read-only, silently; every write would fail.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(OpenError::ReadOnly);
        }
        schema::prepare_writer(
            &conn,
            config.durability,
            config.cache_mb,
            if config.background_checkpoint {
                0
            } else {
                config.checkpoint_pages
            },
        )?;
        // In WAL mode now: the `-wal` and the `-shm` are there.
        files::settle(&path, &before)?;

        let mut max_receives = [config.max_receives; codec::QUEUES];
        for q in QueueName::ALL {
            max_receives[codec::queue_index(q)] = config.max_receives_of(q);
        }
        let restart_wal = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let (writer, _thread) = writer::spawn(
            conn,
            Arc::clone(&clock),
            writer::WriterConfig {
                batch_max: config.batch_max.max(1),
                max_receives,
                restart_wal: Arc::clone(&restart_wal),
                commits: Arc::clone(&commits),
                commit_delay: config.commit_delay,
            },
        )?;
        let readers = Arc::new(read::Readers::new(path.clone(), config.read_connections));
        let ports = Arc::new(EmbeddedPorts {
            writer,
            readers,
            clock,
            stop_checkpoints: Arc::new(AtomicBool::new(false)),
            commits,
            wal_syncs: Arc::new(AtomicU64::new(0)),
        });
        if config.background_checkpoint {
            Checkpointer::spawn(
                &path,
                CheckpointerLinks {
                    stop: Arc::clone(&ports.stop_checkpoints),
                    restart: restart_wal,
                    wal_syncs: Arc::clone(&ports.wal_syncs),
                    commits: Arc::clone(&ports.commits),
                },
                config.durability,
            )?;
        }
        Ok(Self { ports, path })
    }

    /// The ports, as the runtime holds them.
    pub fn ports(&self) -> Backend {
        Backend {
            queue: self.ports.clone(),
            store: self.ports.clone(),
            records: self.ports.clone(),
            bus: self.ports.clone(),
            secrets: self.ports.clone(),
            audit: self.ports.clone(),
            clock: Arc::clone(&self.ports.clock),
            vault: Arc::new(como_ports::NoKeys),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions the writer has committed since the file was opened: each is a write of
    /// the WAL, the measure of what the backend costs.
    pub fn commits(&self) -> u64 {
        self.ports.commits.load(Ordering::Relaxed)
    }

    /// Times the background checkpointer has written the WAL out to the disk between its
    /// passes (see `WAL_SYNC_EVERY`).
    pub fn wal_syncs(&self) -> u64 {
        self.ports.wal_syncs.load(Ordering::Relaxed)
    }

    /// Commit everything submitted so far, fold the WAL into the file and stop the writer.
    /// Calls made afterwards through any handle fail with `PortError::Unavailable`.
    pub async fn close(&self) {
        self.ports.stop_checkpoints.store(true, Ordering::Relaxed);
        self.ports.writer.close().await;
    }
}

impl Drop for EmbeddedPorts {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
    }
}

/// Frames in the WAL (128 MB at 4 KB pages) past which the checkpointer asks the writer to
/// start it over. Each restart stalls the writer for its syncs (3–30 ms measured, however
/// little is left to copy), and a busy writer fills 32 MB in a fifth of a second: 128 MB
/// makes the stalls four times rarer for 96 MB more disk.
const WAL_RESTART_FRAMES: i64 = 32_768;

/// How often the background checkpointer runs. Each pass syncs the WAL and the file, and a
/// write that lands on a page being synced waits: every 100 ms this measured an end-to-end p99
/// of 19–24 ms at concurrency 16 on the benchmark, every second 13–17 ms, and rarer passes
/// also copy a page that many commits changed only once. (With the WAL written out every 10 ms,
/// passes every 250 ms still measured worse than every second: p99 14.3–17.8 ms.)
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often the checkpointer writes the WAL out to the disk (`fdatasync`) between its passes.
/// Under full load the writer appends about 200 MB of WAL a second, and with
/// `synchronous=NORMAL` nothing writes it out until a checkpoint syncs it: the kernel then had a
/// second's worth to write at once, which took 25–135 ms, and the whole pipeline slowed with it
/// (saga latencies up to 50–230 ms on the benchmark). Written out every 10 ms, no sync has more
/// than a few MB to write: at concurrency 16 the p99 went from 11.8–18.4 ms to 10.8–14.1 ms and
/// the slowest saga from 46–124 ms to 35–41 ms, for about 0.5 ms more at the median (every 25
/// or 50 ms left more of the tail). And a power cut loses at most the commits of the last few
/// tens of milliseconds instead of the last second's. Nothing is synced while nothing is
/// committed, nor with `Durability::PowerLoss`, where every commit syncs the WAL itself.
const WAL_SYNC_EVERY: Duration = Duration::from_millis(10);

/// The background checkpointer: PASSIVE checkpoints never block the writer or the readers;
/// they copy what they can and leave the rest for the next round. Between two passes it writes
/// the WAL out (see `WAL_SYNC_EVERY`).
///
/// That alone lets the WAL grow without end under steady load: SQLite writes from the start
/// of the WAL again only when a write begins while no reader still reads from it, and with
/// reads and writes never pausing that moment never comes (a 200,000-saga bench grew it past
/// 15 GB). So once the WAL passes `WAL_RESTART_FRAMES`, the checkpointer raises `restart`, and
/// the writer, between two groups, runs a RESTART checkpoint itself (see `writer`): it copies
/// the frames committed since this pass, syncs, and waits a moment for the readers of the moment,
/// so that its next write starts the WAL over. Run from here instead, a RESTART would first
/// wait for the writer's lock and then hold it through its copy, its sync and its wait for
/// the readers, and every saga in flight would wait with it (it measured 20–35 ms stalls).
/// `journal_size_limit` (512 MB) then truncates the file if it overshot; it is that high
/// because a WAL truncated after each restart has to be extended again by the next writes,
/// which measured 6% of the throughput.
struct Checkpointer {
    conn: Connection,
    /// The WAL file: opened when first seen, for writing it out.
    wal: Option<std::fs::File>,
    wal_path: PathBuf,
    links: CheckpointerLinks,
    /// Off with `Durability::PowerLoss`, where every commit syncs the WAL already.
    write_out: bool,
    /// The writer's commit count when the WAL was last written out.
    synced_commits: u64,
}

/// What the checkpointer shares with the backend.
struct CheckpointerLinks {
    stop: Arc<AtomicBool>,
    /// Raised for the writer (see `writer::WriterConfig::restart_wal`).
    restart: Arc<AtomicBool>,
    /// Times the WAL was written out (`EmbeddedBackend::wal_syncs`).
    wal_syncs: Arc<AtomicU64>,
    /// The writer's commit count.
    commits: Arc<AtomicU64>,
}

impl Checkpointer {
    fn spawn(
        path: &Path,
        links: CheckpointerLinks,
        durability: Durability,
    ) -> Result<(), OpenError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let mut this = Self {
            conn,
            wal: None,
            wal_path: wal_path.into(),
            links,
            write_out: durability == Durability::ProcessCrash,
            synced_commits: 0,
        };
        std::thread::Builder::new()
            .name("como-checkpoint".into())
            .spawn(move || this.run())
            .map_err(OpenError::Thread)?;
        Ok(())
    }

    fn run(&mut self) {
        let mut next_pass = Instant::now() + CHECKPOINT_EVERY;
        while !self.links.stop.load(Ordering::Relaxed) {
            std::thread::sleep(WAL_SYNC_EVERY);
            if Instant::now() >= next_pass {
                next_pass = Instant::now() + CHECKPOINT_EVERY;
                self.pass();
            } else {
                self.write_out_wal();
            }
        }
    }

    fn pass(&self) {
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        {
            Ok(frames) => self
                .links
                .restart
                .store(frames >= WAL_RESTART_FRAMES, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "background checkpoint failed; trying again"),
        }
    }

    /// `fdatasync` the WAL: what the writer appended since the last time goes to the disk now,
    /// in the background, rather than all at once in the next checkpoint's sync. The file
    /// stays the same while any connection has the database open (a restart writes it from
    /// the start again; `journal_size_limit` truncates it in place).
    fn write_out_wal(&mut self) {
        let commits = self.links.commits.load(Ordering::Relaxed);
        if !self.write_out || commits == self.synced_commits {
            return;
        }
        if self.wal.is_none() {
            self.wal = std::fs::File::open(&self.wal_path).ok();
        }
        if let Some(wal) = &self.wal {
            match wal.sync_data() {
                Ok(()) => {
                    self.synced_commits = commits;
                    self.links.wal_syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot write the WAL out; opening it again");
                    self.wal = None;
                }
            }
        }
    }
}
