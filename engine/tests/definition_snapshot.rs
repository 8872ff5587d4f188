//! Pins the Como booking saga v1, every field of it: its steps, operations, retry policies,
//! time-outs, error rules, deadlines and audit schedule. A running saga is pinned to the
//! `(name, version)` it started with, so an edit of v1 changes sagas already in flight; a new
//! behaviour is a new version (`booking_v2` in the registry), never an edit of v1.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p como-engine --test definition_snapshot` rewrites the file.

use std::path::PathBuf;

const SNAPSHOT: &str = "tests/snapshots/booking_v1.json";

const CHANGED: &str = "booking_v1 changed: sagas already running are pinned to version 1; add \
booking_v2 to the registry in engine/src/como.rs instead of editing v1 (if this change is \
intended and safe for running sagas, regenerate with UPDATE_SNAPSHOTS=1)";

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT)
}

#[test]
fn booking_v1_is_pinned() {
    let definition = como_engine::como::booking_v1();
    let actual = serde_json::to_string_pretty(&definition).unwrap() + "\n";
    let path = snapshot_path();
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (generate it with UPDATE_SNAPSHOTS=1)",
            path.display()
        )
    });
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
        panic!(
            "{CHANGED}\nfirst difference at line {} of {}:\n  committed: {}\n  now:       {}",
            first + 1,
            SNAPSHOT,
            expected.lines().nth(first).unwrap_or("<end of file>"),
            actual.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// The snapshot is the definition, not just text that looks like it: it reads back as v1.
#[test]
fn the_snapshot_reads_back_as_booking_v1() {
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        return;
    }
    let text = std::fs::read_to_string(snapshot_path()).unwrap();
    let read: como_engine::definition::SagaDefinition = serde_json::from_str(&text).unwrap();
    assert!(read == como_engine::como::booking_v1(), "{CHANGED}");
}
