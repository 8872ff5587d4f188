//! `como-saga` as a script or a person runs it: the documented exit codes, an error as one
//! line that names what is wrong (a database file that cannot be one, AWS credentials that
//! cannot be found) without dumps or repeats, and `--json` printing JSON alone on standard
//! output. Every process here talks to nothing but 127.0.0.1.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Days;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_como-saga");

/// `como-saga ARGS` in `dir`, with no `COMO_SAGA_*` or `AWS_*` setting of the caller's (so the
/// default log filter, as a person gets it), `HOME` an empty directory (no `~/.aws` files),
/// the EC2 instance metadata service off, and `env`.
fn como(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("COMO_SAGA_") || name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run como-saga");
    // A command that should refuse at once must not hang the suite if it does not.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("como-saga {args:?} did not end:\n{}", said(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command failed with exit code 1 and one line on standard error, `error: ...`, that
/// says each thing once and holds no debug dump; that line.
fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", said(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{}", said(out));
    let line = lines[0];
    assert!(line.starts_with("error: "), "{}", said(out));
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} is said twice:\n{}",
            said(out)
        );
    }
    for dump in ["Error code", "{ ", "Some(", "DispatchFailure", "Attempted"] {
        assert!(!line.contains(dump), "{dump:?} in:\n{}", said(out));
    }
    line.to_owned()
}

/// Standard output is one JSON value and nothing else; that value.
fn only_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", said(out)))
}

/// A booking `submit` accepts (the demo venues' price), a month from now.
fn booking() -> Vec<String> {
    let date = chrono::Utc::now()
        .date_naive()
        .checked_add_days(Days::new(30))
        .unwrap()
        .to_string();
    [
        "--member",
        "CM100001",
        "--venue",
        "como-dempsey-candlenut",
        "--date",
        &date,
        "--time",
        "19:30",
        "--party",
        "2",
        "--credits",
        "1200",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What the production roles need so that they start without the local defaults (and say
/// nothing about them): the venues and the SevenRooms credentials.
const ROLE_SETTINGS: [(&str, &str); 3] = [
    (
        "COMO_SAGA_VENUES",
        r#"{"como-dempsey-candlenut": {"credits_per_guest": 600}}"#,
    ),
    ("COMO_SAGA_SEVENROOMS_CLIENT_ID", "client"),
    ("COMO_SAGA_SEVENROOMS_CLIENT_SECRET", "secret"),
];

fn with<'a>(first: &[&'a str], rest: &'a [String]) -> Vec<&'a str> {
    first
        .iter()
        .copied()
        .chain(rest.iter().map(String::as_str))
        .collect()
}

#[test]
fn an_unusable_database_file_is_one_line_naming_the_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    std::fs::create_dir(at("a-directory")).unwrap();
    let notes =
        "these are notes, not a database; SQLite calls this file encrypted or not a database\n";
    std::fs::write(at("notes.txt"), notes).unwrap();
    let mut cases = vec![
        (
            at("a-directory"),
            "it is a directory, not a file".to_owned(),
        ),
        (at("notes.txt"), "it is not an SQLite database".to_owned()),
        // The backend makes missing directories; not when a part of the path is a file.
        (
            at("notes.txt").join("saga.sqlite"),
            format!("{} is not a directory", at("notes.txt").display()),
        ),
    ];
    // A file this user cannot write (root can, whatever the mode says).
    let locked = at("locked.sqlite");
    std::fs::write(&locked, "").unwrap();
    set_mode(&locked, 0o400);
    if std::fs::OpenOptions::new()
        .write(true)
        .open(&locked)
        .is_err()
    {
        cases.push((locked.clone(), "permission denied".to_owned()));
    } else {
        eprintln!("running as a user who can write a read-only file: that case is skipped");
    }

    let booking = booking();
    for (path, reason) in &cases {
        let db = path.to_str().unwrap();
        for args in [
            with(&["submit", "--database", db], &booking),
            vec!["infra", "bootstrap", "--database", db],
            vec!["orchestrator", "--database", db],
        ] {
            let out = como(dir.path(), &args, &ROLE_SETTINGS);
            let line = one_line_error(&out);
            let expected = format!("error: cannot open the database {db}: ");
            assert!(line.starts_with(&expected), "{args:?}:\n{}", said(&out));
            assert!(line.contains(reason.as_str()), "{args:?}:\n{}", said(&out));
            assert!(out.stdout.is_empty(), "{args:?}:\n{}", said(&out));
        }
    }
    // Nothing was made where the database could not be.
    assert!(
        std::fs::read_dir(at("a-directory"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(std::fs::read_to_string(at("notes.txt")).unwrap(), notes);
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn set_mode(path: &Path, _mode: u32) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    p.set_readonly(true);
    std::fs::set_permissions(path, p).unwrap();
}

#[test]
fn missing_aws_credentials_are_one_line_and_nothing_is_called() {
    let dir = tempfile::tempdir().unwrap();
    // The "AWS" endpoint: a socket that takes connections and never answers; none may come.
    let endpoint = TcpListener::bind("127.0.0.1:0").unwrap();
    endpoint.set_nonblocking(true).unwrap();
    let url = format!("http://{}", endpoint.local_addr().unwrap());
    let env = [
        [
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_REGION", "us-east-1"),
        ]
        .as_slice(),
        &ROLE_SETTINGS,
    ]
    .concat();
    let booking = booking();
    for args in [
        with(&["submit", "--backend", "aws"], &booking),
        vec!["orchestrator", "--backend", "aws"],
        vec!["worker", "sevenrooms", "--backend", "aws"],
        vec!["infra", "bootstrap", "--backend", "aws"],
        vec!["rotate-tokens", "--backend", "aws"],
    ] {
        let out = como(dir.path(), &args, &env);
        let line = one_line_error(&out);
        assert!(
            line.starts_with("error: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"),
            "{args:?}:\n{}",
            said(&out)
        );
        // The endpoint is on this machine: any credentials do for it, and the line says so.
        assert!(line.contains("AWS_ACCESS_KEY_ID=testing"), "{}", said(&out));
        assert!(out.stdout.is_empty(), "{args:?}:\n{}", said(&out));
    }
    // Also when the backend comes from the environment rather than the flag.
    let mut from_env = env.clone();
    from_env.push(("COMO_SAGA_BACKEND", "aws"));
    let out = como(dir.path(), &with(&["submit"], &booking), &from_env);
    assert!(one_line_error(&out).starts_with("error: no AWS credentials: "));
    match endpoint.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the AWS endpoint was called: {other:?}"),
    }

    // A profile named but defined nowhere: the SDK's reason, still one line.
    let out = como(
        dir.path(),
        &with(&["submit", "--backend", "aws"], &booking),
        &[env.as_slice(), &[("AWS_PROFILE", "nowhere")]].concat(),
    );
    let line = one_line_error(&out);
    assert!(line.contains("nowhere"), "{}", said(&out));

    // With credentials the check passes and the command goes on to the endpoint (nothing
    // listens on this port now, so it fails there, and not for want of credentials).
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = como(
        dir.path(),
        &with(&["submit", "--backend", "aws"], &booking),
        &[
            ("AWS_ENDPOINT_URL", closed.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no AWS credentials"), "{}", said(&out));
    assert!(
        stderr.contains("cannot connect to the AWS backend"),
        "{}",
        said(&out)
    );
}

#[test]
fn json_puts_one_json_value_on_stdout_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let db = db.to_str().unwrap();
    let env = [("COMO_SAGA_DATABASE", db)];

    // infra bootstrap on the embedded backend: the file is made, then found.
    let out = como(dir.path(), &["infra", "bootstrap", "--json"], &env);
    assert!(out.status.success(), "{}", said(&out));
    let made = only_json(&out);
    assert_eq!(made["created"][0], format!("SQLite file {db}"), "{made}");
    let out = como(dir.path(), &["infra", "bootstrap", "--json"], &env);
    assert_eq!(only_json(&out)["found"][0], format!("SQLite file {db}"));

    // submit without --wait: the request and its saga.
    let booking = booking();
    let args = with(&["submit", "--json", "--request-id", "json-1"], &booking);
    let out = como(dir.path(), &args, &env);
    assert!(out.status.success(), "{}", said(&out));
    let submitted = only_json(&out);
    assert_eq!(submitted["request_id"], "json-1", "{submitted}");
    assert!(submitted["saga_id"].as_str().is_some(), "{submitted}");

    // token: the token and what it carries.
    let out = como(
        dir.path(),
        &["token", "--role", "operator", "--json", "--ttl", "30m"],
        &env,
    );
    assert!(out.status.success(), "{}", said(&out));
    let token = only_json(&out);
    assert_eq!(token["roles"], serde_json::json!(["operator"]), "{token}");
    assert_eq!(token["expires_in_seconds"], 1800, "{token}");
    assert_eq!(token["token"].as_str().unwrap().split('.').count(), 3);

    // schemas: the list, a valid message and an invalid one (exit 1, the verdict on stdout).
    let out = como(dir.path(), &["schemas", "list", "--json"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    let list = only_json(&out);
    assert!(
        list.as_array()
            .unwrap()
            .contains(&Value::from("booking-requested.schema.json")),
        "{list}"
    );
    let message = dir.path().join("request.json");
    let date = chrono::Utc::now()
        .date_naive()
        .checked_add_days(Days::new(30))
        .unwrap();
    let mut request = serde_json::json!({
        "schema_version": 1,
        "request_id": "json-2",
        "member_no": "CM100001",
        "venue_id": "como-dempsey-candlenut",
        "date": date.to_string(),
        "time": "19:30",
        "party_size": 2,
        "quoted_credits": 1200,
        "guest": {"first_name": "Como", "last_name": "Member", "phone": "+6560000000"},
    });
    std::fs::write(&message, request.to_string()).unwrap();
    let check = [
        "schemas",
        "check",
        "--type",
        "booking-requested",
        "--json",
        message.to_str().unwrap(),
    ];
    let out = como(dir.path(), &check, &[]);
    assert!(out.status.success(), "{}", said(&out));
    let valid = only_json(&out);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["request_id"], "json-2", "{valid}");
    request["party_size"] = 0.into();
    std::fs::write(&message, request.to_string()).unwrap();
    let out = como(dir.path(), &check, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let invalid = only_json(&out);
    assert_eq!(invalid["valid"], false, "{invalid}");
    assert_eq!(invalid["field"], "party_size", "{invalid}");
}

#[test]
fn exit_codes_are_documented_and_bad_usage_is_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = como(dir.path(), &["--help"], &[]);
    assert!(out.status.success(), "{}", said(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit codes",
        "0  done",
        "1  the command failed",
        "2  bad usage",
        "3  submit --wait gave up waiting",
        "4  submit: the booking was not made: the saga was compensated or cancelled",
        "5  submit --wait: the saga stopped for an operator",
    ] {
        assert!(help.contains(line), "{line:?} not in:\n{help}");
    }
    let out = como(dir.path(), &["submit", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("5  --wait: the saga stopped for an operator"),
        "{help}"
    );

    for args in [
        &["--no-such-flag"][..],
        &["submit", "--member", "CM100001"],
        &["token", "--role", "king"],
        &["up", "--backend", "cloud"],
    ] {
        let out = como(dir.path(), args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", said(&out));
    }
    // An invalid booking is refused before anything is sent, also with 2, naming the field.
    let mut booking = booking();
    let party = booking.iter().position(|a| a == "--party").unwrap();
    booking[party + 1] = "0".into();
    let db = dir.path().join("saga.sqlite");
    let out = como(
        dir.path(),
        &with(&["submit", "--database", db.to_str().unwrap()], &booking),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("party_size"),
        "{}",
        said(&out)
    );
    assert!(!db.exists(), "nothing was opened");
}

/// The operator webhook is set whole or not at all: a URL without a secret, a secret that is
/// too short, or a URL that is not http(s) stops a role at once, in one line.
#[test]
fn a_half_set_webhook_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.sqlite");
    let db = db.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("COMO_SAGA_WEBHOOK_URL", "http://127.0.0.1:9/hook")],
            "without a secret",
        ),
        (
            &[
                ("COMO_SAGA_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
                ("COMO_SAGA_WEBHOOK_SECRET", "short"),
            ],
            "too short",
        ),
        (
            &[
                ("COMO_SAGA_WEBHOOK_URL", "ftp://127.0.0.1/hook"),
                ("COMO_SAGA_WEBHOOK_SECRET", "0123456789abcdef0123"),
            ],
            "http or https",
        ),
    ];
    for (env, says) in cases {
        let mut env = env.to_vec();
        env.push(("COMO_SAGA_DEV_DEFAULTS", "1"));
        let out = como(dir.path(), &["orchestrator", "--database", db], &env);
        let line = one_line_error(&out);
        assert!(line.contains(says), "{env:?}: {line}");
        assert!(line.contains("WEBHOOK"), "names the setting: {line}");
    }
}
