//! `chaos --store-faults` on the embedded backend: the ground under the roles breaks now and
//! then, for real. The database lives on a tmpfs of its own (a size-limited file system, so a
//! full disk is a real one), which is filled to the last byte for a few seconds at a time
//! (the WAL truncated first: a full disk fails only the writes that need more room), and
//! another connection holds the write lock past the busy timeout. The roles' writers hold each
//! transaction open a few ms (`COMO_SAGA_FAULT_COMMIT_DELAY_MS`), so that chaos's kills land
//! inside transactions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;

/// The tmpfs's size: room for a few thousand sagas and their WAL.
const TMPFS_MB: u32 = 512;
/// How long a disk-full window and a lock holder last.
const FULL_FOR_MS: std::ops::Range<u64> = 2_000..6_000;
const LOCK_FOR_MS: std::ops::Range<u64> = 6_000..8_000;
/// The roles' writers hold each transaction open this long before committing.
pub const COMMIT_DELAY_MS: &str = "5";

/// A tmpfs mounted for the run, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs at `at` (needs root or CAP_SYS_ADMIN).
    pub fn mount(at: &Path) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(at).with_context(|| format!("cannot create {}", at.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_MB}m"), "tmpfs"])
            .arg(at)
            .output()
            .context("cannot run mount")?;
        if !out.status.success() {
            anyhow::bail!(
                "--store-faults puts the database on a size-limited tmpfs, so that a full disk is a real one, and mounting it needs root or CAP_SYS_ADMIN: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs(at.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The faults in progress (each on a thread of its own, which ends it on time whatever the
/// run is doing meanwhile), and how many of each kind were injected.
pub struct GroundFaults {
    db: PathBuf,
    filler: PathBuf,
    full: Option<std::thread::JoinHandle<()>>,
    lock: Option<std::thread::JoinHandle<()>>,
    /// The first of each comes at a set time (5 s and 12 s in), so that even a short run has
    /// both; the later ones at random.
    started: Instant,
    pub injected: BTreeMap<String, u64>,
}

impl GroundFaults {
    pub fn new(db: &Path, fs: &Tmpfs) -> GroundFaults {
        GroundFaults {
            db: db.to_owned(),
            filler: fs.path().join("filler"),
            full: None,
            lock: None,
            started: Instant::now(),
            injected: BTreeMap::new(),
        }
    }

    fn count(&mut self, kind: &str) {
        *self.injected.entry(kind.to_owned()).or_insert(0) += 1;
    }

    /// Called every turn of the fault phase: ends what is over, and now and then starts a
    /// disk-full window or a lock holder (about one of each every 20 to 30 s).
    pub fn tick(&mut self, rng: &mut StdRng) {
        for slot in [&mut self.full, &mut self.lock] {
            if slot.as_ref().is_some_and(|h| h.is_finished()) {
                let _ = slot.take().map(std::thread::JoinHandle::join);
            }
        }
        let roll = rng.random_range(0..100);
        let elapsed = self.started.elapsed();
        let first = |kind: &str, at: u64| {
            elapsed >= Duration::from_secs(at) && !self.injected.contains_key(kind)
        };
        let (first_full, first_lock) = (first("disk_full", 5), first("lock_held", 12));
        if (roll < 2 || first_full) && self.full.is_none() {
            let ms = rng.random_range(FULL_FOR_MS);
            let (db, filler) = (self.db.clone(), self.filler.clone());
            self.full = Some(std::thread::spawn(move || {
                fill(&db, &filler);
                std::thread::sleep(Duration::from_millis(ms));
                let _ = std::fs::remove_file(&filler);
            }));
            self.count("disk_full");
        } else if (roll < 4 || first_lock) && self.lock.is_none() {
            let ms = rng.random_range(LOCK_FOR_MS);
            let db = self.db.clone();
            self.lock = Some(std::thread::spawn(move || hold_lock(&db, ms)));
            self.count("lock_held");
        }
    }

    /// Waits until everything is back to normal: space, and the lock let go.
    pub fn stop(&mut self) {
        for h in [self.full.take(), self.lock.take()].into_iter().flatten() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.filler);
    }
}

/// Fills the file system under `filler` to the last byte.
fn fill(db: &Path, filler: &Path) {
    use std::io::Write;
    // Best effort: with the WAL's room gone, every write that needs more fails at once.
    if let Ok(conn) = rusqlite::Connection::open(db) {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    let Ok(mut f) = std::fs::File::create(filler) else {
        return;
    };
    let chunk = vec![0u8; 256 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
}

/// Another process's transaction, in effect: the write lock held for `ms`.
fn hold_lock(db: &Path, ms: u64) {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return;
    };
    let _ = conn.busy_timeout(Duration::from_secs(30));
    if conn.execute_batch("BEGIN IMMEDIATE").is_ok() {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = conn.execute_batch("ROLLBACK");
    }
}
