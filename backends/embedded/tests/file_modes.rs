//! The file holds member and booking data: it, its `-wal` and its `-shm` are created readable
//! and writable by their owner only, whatever the umask; a file that was there keeps its mode,
//! and one that others may open is named once at start-up, with the command that fixes it.
//!
//! The umask belongs to the process, and the tests of a binary run on threads of one process.
//! So the test that needs umask 000 runs this binary again under `sh -c 'umask 000; exec ...'`
//! with only itself selected, rather than calling `libc::umask` (the workspace forbids
//! `unsafe`).

use std::fmt::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use como_backend_embedded::files::{family, readable_by_others};
use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_ports::{OutgoingMessage, QueueName, SystemClock};

/// Set in the run of this binary under umask 000.
const UNDER_UMASK_000: &str = "COMO_FILE_MODES_UNDER_UMASK_000";
const UMASK_TEST: &str = "the_file_its_wal_and_its_shm_are_private_whatever_the_umask";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn open(path: &Path) -> EmbeddedBackend {
    EmbeddedBackend::open(path, EmbeddedConfig::default(), Arc::new(SystemClock)).unwrap()
}

/// Opens the backend at `path` and commits a write, so that the WAL and its index exist; the
/// modes of the database file, its `-wal` and its `-shm` (in octal), while the backend is open.
async fn modes_after_a_write(path: &Path) -> [String; 3] {
    write_and_close(path, open(path)).await
}

/// Commits a write through `backend` (open at `path`) and closes it; the modes of the
/// database file, its `-wal` and its `-shm` (in octal) before it closed.
async fn write_and_close(path: &Path, backend: EmbeddedBackend) -> [String; 3] {
    backend
        .ports()
        .queue
        .send(
            QueueName::Replies,
            vec![OutgoingMessage::new("hello".into())],
        )
        .await
        .unwrap();
    let modes = family(path).map(|f| format!("{:03o}", mode(&f)));
    backend.close().await;
    modes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_its_wal_and_its_shm_are_private_whatever_the_umask() {
    if std::env::var_os(UNDER_UMASK_000).is_none() {
        // Under this process's umask, whatever it is.
        let dir = tempfile::tempdir().unwrap();
        let modes = modes_after_a_write(&dir.path().join("data/como.sqlite")).await;
        assert_eq!(modes, ["600"; 3]);

        // And under umask 000, in a process of its own.
        let out = Command::new("sh")
            .args(["-c", r#"umask 000 && exec "$0" "$@""#])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", UMASK_TEST, "--nocapture", "--test-threads=1"])
            .env(UNDER_UMASK_000, "1")
            .output()
            .unwrap();
        let said = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "under umask 000:\n{said}");
        // It ran (a filter that selects nothing passes too).
        assert!(said.contains("1 passed"), "under umask 000:\n{said}");
        return;
    }

    // The umask is 000 indeed: a file created asking for 0666 gets all of it.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&probe)
        .unwrap();
    assert_eq!(mode(&probe), 0o666, "the umask is not 000");

    let path = dir.path().join("data/como.sqlite");
    let modes = modes_after_a_write(&path).await;
    assert_eq!(modes, ["600"; 3], "under umask 000");
    // And so they stay when the file is opened again.
    let modes = modes_after_a_write(&path).await;
    assert_eq!(modes, ["600"; 3], "opened again under umask 000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_was_there_keeps_its_mode_and_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file, which SQLite takes for a new database, left open to others.
    let path = dir.path().join("como.sqlite");
    std::fs::write(&path, "").unwrap();
    set_mode(&path, 0o644);
    assert_eq!(readable_by_others(&path), Some(0o644));

    let warnings = Warnings::default();
    let backend = tracing::subscriber::with_default(warnings.clone(), || open(&path));
    let modes = write_and_close(&path, backend).await;
    // Neither loosened nor tightened: its `-wal` and `-shm` follow the database's mode.
    assert_eq!(modes, ["644"; 3]);
    let said = warnings.0.lock().unwrap().clone();
    assert_eq!(said.len(), 3, "{said:#?}");
    for (file, line) in family(&path).iter().zip(&said) {
        for part in [
            format!("file={}", file.display()),
            "mode=644".to_owned(),
            "member and booking data".to_owned(),
            format!("`chmod 600 {}`", file.display()),
        ] {
            assert!(line.contains(&part), "{part:?} not in {line}");
        }
    }

    // Once per file: opening it again in this process says nothing more.
    let backend = tracing::subscriber::with_default(warnings.clone(), || open(&path));
    write_and_close(&path, backend).await;
    assert_eq!(warnings.0.lock().unwrap().len(), 3);
}

/// Collects the warnings logged on the thread it is the default of, one line each.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let mut line = String::new();
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn fmt::Debug| {
                write!(line, "{}={value:?} ", field.name()).unwrap();
            },
        );
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn readable_by_others_finds_a_file_its_group_or_others_may_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    for (mode, found) in [
        (0o644, Some(0o644)),
        (0o640, Some(0o640)),
        (0o604, Some(0o604)),
        (0o620, Some(0o620)),
        (0o600, None),
        (0o400, None),
    ] {
        set_mode(&file, mode);
        assert_eq!(readable_by_others(&file), found, "mode {mode:o}");
    }
    assert_eq!(readable_by_others(&dir.path().join("missing")), None);
}
