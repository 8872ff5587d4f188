//! The production roles refuse to start on the local defaults: without credentials (or venues)
//! `worker crm|sevenrooms` and `orchestrator` exit non-zero naming what to set, unless
//! `COMO_SAGA_DEV_DEFAULTS=1` lets them use the simulators' credentials and the demo venues.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_como-saga");

/// `como-saga ARGS` in `dir` with no `COMO_SAGA_*` setting but its own database and `env`.
fn como(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("COMO_SAGA_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("COMO_SAGA_DATABASE", dir.join("saga.sqlite"))
        .env("COMO_SAGA_LOG", "warn")
        // Nothing listens there; a worker does not call its downstream before a command.
        .env("COMO_SAGA_MEMBERSON_URL", "http://127.0.0.1:9")
        .env("COMO_SAGA_SEVENROOMS_URL", "http://127.0.0.1:9")
        .envs(env.iter().copied());
    cmd
}

/// Runs a role that must refuse to start: its exit code and standard error.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = como(dir, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run como-saga");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "como-saga {args:?} started instead of refusing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a role and waits for its start-up line (`expect`), then stops it.
fn starts(dir: &Path, args: &[&str], env: &[(&str, &str)], expect: &str) {
    let mut child = como(dir, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run como-saga");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(expect) => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        found && running,
        "como-saga {args:?} did not start (wanted {expect:?}):\nstdout: {seen:?}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn worker_crm_refuses_to_start_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = refused(dir.path(), &["worker", "crm"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    for needle in [
        "worker crm will not start on the simulators' credentials",
        "COMO_SAGA_MEMBERSON_SVC_AUTH (or svc_auth under [memberson] in the settings file)",
        "COMO_SAGA_MEMBERSON_USERNAME",
        "COMO_SAGA_MEMBERSON_PASSWORD (or password under [memberson] in the settings file)",
        "COMO_SAGA_DEV_DEFAULTS=1",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
    // Only what the CRM worker uses.
    assert!(!stderr.contains("SEVENROOMS"), "{stderr}");
    assert!(!stderr.contains("[venues]"), "{stderr}");
    // It stopped before opening the backend.
    assert!(!dir.path().join("saga.sqlite").exists());
}

#[test]
fn a_partly_configured_worker_names_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = refused(
        dir.path(),
        &["worker", "crm"],
        &[
            ("COMO_SAGA_MEMBERSON_SVC_AUTH", "svc"),
            ("COMO_SAGA_MEMBERSON_USERNAME", "como-saga"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("COMO_SAGA_MEMBERSON_PASSWORD"), "{stderr}");
    assert!(!stderr.contains("COMO_SAGA_MEMBERSON_SVC_AUTH"), "{stderr}");
    assert!(!stderr.contains("COMO_SAGA_MEMBERSON_USERNAME"), "{stderr}");
}

#[test]
fn worker_sevenrooms_and_orchestrator_refuse_without_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = refused(dir.path(), &["worker", "sevenrooms"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("COMO_SAGA_SEVENROOMS_CLIENT_ID"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "COMO_SAGA_SEVENROOMS_CLIENT_SECRET (or client_secret under [sevenrooms] in the settings file)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("MEMBERSON"), "{stderr}");

    let (code, stderr) = refused(dir.path(), &["orchestrator"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("orchestrator will not start")
            && stderr.contains("[venues]")
            && stderr.contains("COMO_SAGA_VENUES"),
        "{stderr}"
    );
    assert!(!stderr.contains("COMO_SAGA_MEMBERSON"), "{stderr}");
}

#[test]
fn worker_crm_starts_with_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    starts(
        dir.path(),
        &["worker", "crm"],
        &[("COMO_SAGA_DEV_DEFAULTS", "1")],
        "worker crm: database",
    );
}

#[test]
fn the_roles_start_with_real_settings_and_no_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    starts(
        dir.path(),
        &["worker", "crm"],
        &[
            ("COMO_SAGA_MEMBERSON_SVC_AUTH", "svc"),
            ("COMO_SAGA_MEMBERSON_USERNAME", "como-saga"),
            ("COMO_SAGA_MEMBERSON_PASSWORD", "secret"),
        ],
        "worker crm: database",
    );
    let config = dir.path().join("como-saga.toml");
    std::fs::write(
        &config,
        "[venues]\n\"como-dempsey-candlenut\" = { credits_per_guest = 600 }\n",
    )
    .unwrap();
    starts(
        dir.path(),
        &["orchestrator"],
        &[("COMO_SAGA_CONFIG", config.to_str().unwrap())],
        "orchestrator: database",
    );
    // As a container gets them: the venues as JSON in the environment.
    starts(
        dir.path(),
        &["orchestrator"],
        &[(
            "COMO_SAGA_VENUES",
            r#"{"como-dempsey-candlenut": {"credits_per_guest": 600}}"#,
        )],
        "orchestrator: database",
    );
    let (code, stderr) = refused(
        dir.path(),
        &["orchestrator"],
        &[("COMO_SAGA_VENUES", r#"{"como-dempsey-candlenut": 600}"#)],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("COMO_SAGA_VENUES: expected JSON"),
        "{stderr}"
    );
}

/// Two `up`s on one database would each check their own simulators' ledgers against the other's
/// sagas: the second refuses to start, naming the first, and exits 1.
#[test]
fn a_second_up_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = como(dir.path(), &["up", "--listen", "127.0.0.1:0"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run como-saga up");
    // Up once it prints its first line.
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("is up"), "{line}");
    let (code, said) = refused(dir.path(), &["up", "--listen", "127.0.0.1:0"], &[]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("another `como-saga up`") && said.contains(&first.id().to_string()),
        "{said}"
    );
    // Once the first is gone, the file is free again.
    let mut again = como(dir.path(), &["up", "--listen", "127.0.0.1:0"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(again.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = again.kill();
    let _ = again.wait();
    assert!(line.contains("is up"), "{line}");
}

/// The dashboard's settings are checked before the API starts: its sign-in page must be https
/// (http only on loopback) and hand the token back (`response_type=token`); its refresh must
/// be 1 s to 5 min. Good ones start it, and it prints the dashboard's address.
#[test]
fn the_dashboard_settings_are_checked_before_the_api_starts() {
    let dir = tempfile::tempdir().unwrap();
    let api = ["api", "--listen", "127.0.0.1:0"];
    for (name, value, says) in [
        (
            "COMO_SAGA_DASHBOARD_SIGNIN_URL",
            "http://login.example.com/oauth2/authorize?response_type=token",
            "must be https",
        ),
        (
            "COMO_SAGA_DASHBOARD_SIGNIN_URL",
            "https://login.example.com/oauth2/authorize?response_type=code",
            "response_type=token",
        ),
        (
            "COMO_SAGA_DASHBOARD_SIGNIN_URL",
            "not a url",
            "is not a URL",
        ),
        ("COMO_SAGA_DASHBOARD_REFRESH", "100ms", "give 1s to 5m"),
        (
            "COMO_SAGA_DASHBOARD_REFRESH",
            "soon",
            "COMO_SAGA_DASHBOARD_REFRESH",
        ),
    ] {
        let (code, stderr) = refused(dir.path(), &api, &[(name, value)]);
        assert_eq!(code, Some(1), "{name}={value}: {stderr}");
        assert!(stderr.contains(says), "{name}={value}: {stderr}");
    }
    starts(
        dir.path(),
        &api,
        &[
            (
                "COMO_SAGA_DASHBOARD_SIGNIN_URL",
                "https://como-ops.auth.ap-southeast-1.amazoncognito.com/oauth2/authorize?response_type=token&client_id=abc&redirect_uri=https%3A%2F%2Fops.example.com%2Fdashboard%2F",
            ),
            ("COMO_SAGA_DASHBOARD_REFRESH", "10s"),
            (
                "COMO_SAGA_VENUES",
                r#"{"como-dempsey-candlenut": {"credits_per_guest": 600}}"#,
            ),
        ],
        "dashboard: http://127.0.0.1:",
    );
}
