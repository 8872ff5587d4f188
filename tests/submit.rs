//! `como-saga submit` as a user runs it, against the roles as separate processes on one SQLite
//! file: what it prints and the exit code it answers.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use chrono::Days;
use como_engine::StatusKind;
use como_ports::QueueName;
use como_schemas::{RequestId, SagaId};
use como_simulators::seed;
use support::*;

/// `como-saga submit --wait` on `db` for request `id`.
fn submit_wait(db: &Path, id: &str, booking: &[&str]) -> Output {
    Command::new(BIN)
        .arg("submit")
        .args(booking)
        .args(["--request-id", id, "--wait"])
        .env("COMO_SAGA_DATABASE", db)
        .env("COMO_SAGA_LOG", "warn")
        .output()
        .expect("run como-saga submit")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_refuses_a_reused_request_id_with_other_content() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| today.checked_add_days(Days::new(n)).unwrap().to_string();
    let (first_date, other_date) = (day(2), day(3));
    let first = [
        "--member",
        seed::MEMBER_RICH,
        "--venue",
        seed::VENUE_LARGE,
        "--date",
        &first_date,
        "--time",
        "19:30",
        "--party",
        "2",
        "--credits",
        "1200",
    ];
    let other = [
        "--member",
        seed::MEMBER_RICH,
        "--venue",
        seed::VENUE_SMALL,
        "--date",
        &other_date,
        "--time",
        "19:30",
        "--party",
        "3",
        "--credits",
        "4500",
    ];
    let saga = SagaId::for_request(&RequestId::parse("reused-1").unwrap());

    // The first time, then the identical request again: the same booking, answered as before.
    for _ in 0..2 {
        let out = submit_wait(&db, "reused-1", &first);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        // How it ended, for a person: the reservation and the receipt.
        assert!(
            said.contains("confirmed: ")
                && said.contains("credits redeemed (receipt CS-")
                && said.contains("reservation res-"),
            "{}",
            text(&out)
        );
    }
    let (backend, ports) = open(&db);
    let history = ports.store.history(saga).await.unwrap().len();

    // The same request id for another venue, date and party: refused, with its own code.
    let out = submit_wait(&db, "reused-1", &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "REQUEST_ID_REUSED: request id reused-1 is already used by saga {saga} with other \
             content (venue_id, date, party_size, quoted_credits differ)"
        )),
        "{}",
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("confirmed"),
        "{}",
        text(&out)
    );

    // The orchestrator refused it too: a dead letter naming the conflict.
    support::wait_for_dead_letter(&ports, QueueName::Requests, "REQUEST_ID_REUSED").await;
    // The first saga is untouched.
    let state = ports.store.get(saga).await.unwrap().unwrap().value;
    assert_eq!(state.status.kind(), StatusKind::Confirmed);
    assert_eq!(state.request.venue_id.as_str(), seed::VENUE_LARGE);
    assert_eq!(ports.store.history(saga).await.unwrap().len(), history);
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}
