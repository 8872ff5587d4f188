//! Faults below the engine on the embedded backend, each made real: a full disk (a size-limited
//! tmpfs filled to the last byte: a real file system, not `PRAGMA max_page_count`), another
//! process holding the write lock past the busy timeout, a read-only file system, the
//! database's directory removed under running processes, and `kill -9` inside the writer's
//! transactions. The roles run as their own processes on one SQLite file, against the
//! simulators, and every test checks the outcome against the simulators' ledgers.
//!
//! The tmpfs and read-only mounts need root (or CAP_SYS_ADMIN), which the CI runs with; a test
//! that cannot mount says so and fails rather than pass without its fault.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use como_ports::QueueName;
use support::*;

/// A file system mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size_mb: u32) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_mb}m"),
            "tmpfs",
            at.to_str().unwrap(),
        ]);
        Mount(at.to_owned())
    }

    /// `from` again at `at`, read-only.
    fn read_only(from: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        mount(&["--bind", from.to_str().unwrap(), at.to_str().unwrap()]);
        let m = Mount(at.to_owned());
        mount(&["-o", "remount,ro,bind", at.to_str().unwrap()]);
        m
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "this test mounts a file system (mount {}) and needs root or CAP_SYS_ADMIN, as the CI has: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `dir` to the last byte; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

fn signal(which: &str, pid: &str) {
    assert!(
        Command::new("kill")
            .args([which, pid])
            .status()
            .unwrap()
            .success()
    );
}

/// The lines of a role's log that say the store refuses writes, at warn.
fn store_warnings(role: &Role) -> usize {
    role.output()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("the store") && l.contains("refuses writes"))
        .count()
}

/// `como-saga submit` of one example booking, as a member-facing edge would.
fn submit_cli(db: &Path, request_id: &str) -> std::process::Output {
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(2)).to_string();
    Command::new(BIN)
        .args([
            "submit",
            "--member",
            como_simulators::seed::MEMBER_RICH,
            "--venue",
            como_simulators::seed::VENUE_LARGE,
            "--date",
            &date,
            "--time",
            "19:00",
            "--party",
            "2",
            "--credits",
            "1200",
            "--request-id",
            request_id,
        ])
        .env("COMO_SAGA_DATABASE", db)
        .env("COMO_SAGA_DEV_DEFAULTS", "1")
        .env("COMO_SAGA_LOG", "error")
        .output()
        .expect("run submit")
}

/// The API as its own process; returns it and its address.
fn api(db: &Path, sims: &Sims, dir: &Path) -> (Role, String) {
    let role = Role::start_with(
        &["api", "--listen", "127.0.0.1:0"],
        &[],
        db,
        sims,
        dir.join("api.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(url) = role.output().lines().find_map(|l| {
            l.strip_prefix("api: http://")
                .and_then(|r| r.split(' ').next())
        }) {
            return (role, format!("http://{url}"));
        }
        assert!(
            Instant::now() < deadline,
            "the API did not start: {}",
            role.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn token(db: &Path) -> String {
    let out = Command::new(BIN)
        .args(["token", "--role", "submitter", "--json"])
        .env("COMO_SAGA_DATABASE", db)
        .env("COMO_SAGA_DEV_DEFAULTS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn all_running(roles: &mut [Role]) {
    for r in roles {
        let c = r.child.as_mut().unwrap();
        assert!(
            c.try_wait().unwrap().is_none(),
            "{:?} stopped: {}",
            r.args,
            r.output()
        );
        assert!(!r.output().contains("panicked"), "{}", r.output());
    }
}

/// Every booking acknowledged has a saga that finished, and the ledgers hold the money
/// invariant: nothing lost, nothing doubled.
async fn all_finished_and_consistent(
    ports: &como_ports::Backend,
    sims: &Sims,
    ids: &[como_schemas::SagaId],
) {
    let states = wait_all(ports, ids, Duration::from_secs(180)).await;
    let ledger = sims.ledger().await;
    let (counts, violations) = verdict(&states, &ledger);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(counts.get("missing"), None, "{counts:?}");
    let finished: usize = ["confirmed", "compensated"]
        .iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(finished, ids.len(), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_every_role_and_they_resume_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Mount::tmpfs(&dir.path().join("fs"), 48);
    let db = fs.0.join("saga.sqlite");
    // SevenRooms slow, so that sagas are in flight when the disk fills.
    let sims = Sims::start(
        dir.path(),
        Some(r#"{"sevenrooms": [{"kind": "latency", "fixed_ms": 1000}]}"#),
    );
    let mut roles = roles(&db, &sims, dir.path(), &[("COMO_SAGA_LOG", "info")]);
    let (backend, ports) = open(&db);
    let bearer = token(&db);
    let (api_role, url) = api(&db, &sims, dir.path());
    roles.push(api_role);
    let http = reqwest::Client::new();

    // Some bookings go through first.
    let requests = bookings(200, "full");
    let mut acknowledged = Vec::new();
    for r in &requests[..20] {
        como_orchestrator::submit(&ports, r).await.unwrap();
        acknowledged.push(r.saga_id());
    }
    let states = wait_all(&ports, &acknowledged, Duration::from_secs(60)).await;
    assert!(
        states
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.status.kind().is_terminal()))
    );

    // The disk fills while 60 more wait to be started: the orchestrator is paused while they
    // are submitted (a full disk fails the writes that need more room, and starting a saga
    // does), then goes on. Bookings keep coming until the store refuses one.
    let orchestrator = roles[0].child.as_ref().unwrap().id().to_string();
    signal("-STOP", &orchestrator);
    for r in &requests[20..80] {
        como_orchestrator::submit(&ports, r).await.unwrap();
        acknowledged.push(r.saga_id());
    }
    // The WAL is truncated first: SQLite reuses a WAL file's room once written, and a full
    // disk fails only the writes that need more.
    let truncated = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(truncated.status.success(), "{truncated:?}");
    let filler = fill(&fs.0);
    signal("-CONT", &orchestrator);
    let full_from = Instant::now();
    let mut refused = None;
    for r in &requests[80..] {
        match como_orchestrator::submit(&ports, r).await {
            Ok(_) => acknowledged.push(r.saga_id()),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("the full disk refused a booking");
    assert!(
        refused.contains("full") && refused.contains(&db.display().to_string()),
        "the error names the file and the cause: {refused}"
    );

    // The edge refuses with the cause: the command line (exit 1, one line) and the API (503).
    let out = submit_cli(&db, "full-cli-1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("full"), "{stderr}");
    let body = serde_json::json!({
        "schema_version": como_schemas::SCHEMA_VERSION,
        "request_id": "full-api-1",
        "member_no": como_simulators::seed::MEMBER_RICH,
        "venue_id": como_simulators::seed::VENUE_LARGE,
        "date": (chrono::Utc::now().date_naive() + chrono::Days::new(2)).to_string(),
        "time": "19:00",
        "party_size": 2,
        "quoted_credits": 1200,
        "guest": {"first_name": "Como", "last_name": "Member", "phone": "+6560000000"},
    });
    let answer = http
        .post(format!("{url}/v1/bookings"))
        .bearer_auth(&bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let text = answer.text().await.unwrap();
    assert!(text.contains("full"), "{text}");
    // And reports not ready, with the cause.
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap();
    assert!(text.contains("full"), "{text}");

    // A while full: every role keeps running and says so at warn a few times, not once per
    // message.
    tokio::time::sleep(Duration::from_secs(8)).await;
    all_running(&mut roles);
    let orchestrator_failures: usize = roles[0]
        .output()
        .lines()
        .filter(|l| l.contains("failed; it is tried again"))
        .count();
    let warned = store_warnings(&roles[0]);
    assert!(
        (1..=2).contains(&warned),
        "the orchestrator says it once a period ({warned} lines, {orchestrator_failures} failures at warn): {}",
        roles[0].output()
    );
    assert_eq!(
        orchestrator_failures, 0,
        "no warning per message while the store is known to be failing"
    );

    // Space comes back: everything finishes by itself.
    std::fs::remove_file(&filler).unwrap();
    let full_for = full_from.elapsed();
    for r in &requests[acknowledged.len()..acknowledged.len() + 10] {
        como_orchestrator::submit(&ports, r).await.unwrap();
        acknowledged.push(r.saga_id());
    }
    all_finished_and_consistent(&ports, &sims, &acknowledged).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "ready again once writes go through"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        roles[0].output().contains("the store takes writes again"),
        "{}",
        roles[0].output()
    );
    all_running(&mut roles);
    eprintln!(
        "full for {:.1} s; {} bookings acknowledged, all finished; the orchestrator's log:\n{}",
        full_for.as_secs_f64(),
        acknowledged.len(),
        roles[0]
            .output()
            .lines()
            .filter(|l| l.contains("store"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_a_clear_error_and_work_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let requests = bookings(40, "lock");
    let mut ids = Vec::new();
    for r in &requests[..20] {
        como_orchestrator::submit(&ports, r).await.unwrap();
        ids.push(r.saga_id());
    }

    // Another process takes the write lock and keeps it 8 s (the busy timeout is 5 s).
    let mut holder = hold_lock(&db, 8);
    let out = submit_cli(&db, "lock-cli-1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("locked") && stderr.contains(&db.display().to_string()),
        "names the file and the cause: {stderr}"
    );
    all_running(&mut roles);
    // The lock goes: the rest goes through, and every saga finishes.
    assert!(holder.wait().unwrap().success());
    for r in &requests[20..] {
        como_orchestrator::submit(&ports, r).await.unwrap();
        ids.push(r.saga_id());
    }
    all_finished_and_consistent(&ports, &sims, &ids).await;
    all_running(&mut roles);
    backend.close().await;
}

/// Another process (python3's sqlite3) takes `db`'s write lock and keeps it `secs` seconds;
/// returns once it holds it.
fn hold_lock(db: &Path, secs: u32) -> std::process::Child {
    let mut holder = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
                 c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep({secs}); \
                 c.execute('ROLLBACK')"
            ),
            db.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 holds the lock");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_started_while_another_process_holds_the_lock_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let (backend, ports) = open(&db);
    // The lock is held for 12 s, past the busy timeout (5 s) of the roles' first tries.
    let mut holder = hold_lock(&db, 12);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    std::thread::sleep(Duration::from_secs(8));
    all_running(&mut roles);
    for r in &roles {
        assert!(
            r.output()
                .contains("another process holds the database's lock; waiting for it"),
            "{:?} says why it waits: {}",
            r.args,
            r.output()
        );
    }
    assert!(holder.wait().unwrap().success());
    let requests = bookings(10, "startlock");
    let mut ids = Vec::new();
    for r in &requests {
        como_orchestrator::submit(&ports, r).await.unwrap();
        ids.push(r.saga_id());
    }
    all_finished_and_consistent(&ports, &sims, &ids).await;
    all_running(&mut roles);
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_refused_at_start_with_the_file_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("saga.sqlite");
    {
        let (backend, _) = open(&db);
        backend.close().await;
    }
    let ro = Mount::read_only(&data, &dir.path().join("ro"));
    let ro_db = ro.0.join("saga.sqlite");
    let out = Command::new(BIN)
        .args(["orchestrator"])
        .env("COMO_SAGA_DATABASE", &ro_db)
        .env("COMO_SAGA_DEV_DEFAULTS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&ro_db.display().to_string())
            && stderr.to_lowercase().contains("read-only"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_under_running_roles_stops_their_writes_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("saga.sqlite");
    // SevenRooms slow, so that sagas are in flight when the file goes.
    let sims = Sims::start(
        dir.path(),
        Some(r#"{"sevenrooms": [{"kind": "latency", "fixed_ms": 1500}]}"#),
    );
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    for r in &bookings(10, "removed") {
        como_orchestrator::submit(&ports, r).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::remove_dir_all(&data).unwrap();

    // This process's own writes are refused, naming the file and what happened.
    let refused = como_orchestrator::submit(&ports, &bookings(11, "removed")[10])
        .await
        .expect_err("no write to a removed file");
    assert!(
        refused.to_string().contains("was removed") && refused.to_string().contains("saga.sqlite"),
        "{refused}"
    );
    // The roles' in-flight work meets the same, and they go on running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !roles
        .iter()
        .any(|r| r.output().contains("the database file was removed"))
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            roles.iter().map(Role::output).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    all_running(&mut roles);
    // Nothing was written anywhere else: no new file appeared at the path.
    assert!(!db.exists());
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_inside_the_writers_transactions_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    // Each role's writer holds every transaction open 40 ms before committing, so that
    // nearly every kill lands inside one (the writer is in a transaction most of the time).
    let mut roles = roles(
        &db,
        &sims,
        dir.path(),
        &[("COMO_SAGA_FAULT_COMMIT_DELAY_MS", "40")],
    );
    let (backend, ports) = open(&db);
    let requests = bookings(120, "torn");
    let ids: Vec<_> = requests.iter().map(|r| r.saga_id()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0;
    for chunk in requests.chunks(12) {
        for r in chunk {
            como_orchestrator::submit(&ports, r).await.unwrap();
        }
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(rand::Rng::random_range(
                &mut rng,
                50..400,
            )))
            .await;
            let i = rand::Rng::random_range(&mut rng, 0..roles.len());
            roles[i].crash_and_restart(&db, &sims);
            kills += 1;
        }
    }
    all_finished_and_consistent(&ports, &sims, &ids).await;
    // Nothing half done is left behind either: no message is stuck, none dead-lettered.
    for q in QueueName::ALL {
        let dead = ports.queue.dead_letters(q, 10).await.unwrap();
        assert!(dead.is_empty(), "{q:?}: {dead:?}");
    }
    eprintln!(
        "{kills} kills inside transactions; {} sagas, all finished",
        ids.len()
    );
    all_running(&mut roles);
    backend.close().await;
}

use rand::SeedableRng;
