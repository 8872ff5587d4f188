//! The runtime as separate processes on one SQLite file: the orchestrator and both workers
//! killed with SIGKILL at random moments and restarted; two orchestrators sharing one store;
//! a SevenRooms outage that sagas wait out. Every test checks the outcome against the
//! simulators' own ledgers (read over HTTP), not against the orchestrator's view.

mod support;

use std::time::{Duration, Instant};

use como_engine::StatusKind;
use como_schemas::events::SagaEventBody;
use rand::{Rng, SeedableRng};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_charges_no_one_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    // Faults that make crashes land in the hard places: unknown outcomes and slow calls.
    let sims = Sims::start(
        dir.path(),
        Some(
            r#"{"memberson": [{"kind": "latency", "fixed_ms": 5, "jitter_ms": 20},
                              {"kind": "commit_then_fail", "status": 500, "ops": ["redeem"], "probability": 0.05}],
                "sevenrooms": [{"kind": "latency", "fixed_ms": 5, "jitter_ms": 20},
                               {"kind": "commit_then_fail", "status": 502, "ops": ["book"], "probability": 0.05}]}"#,
        ),
    );
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);

    let requests = bookings(300, "crash");
    let ids: Vec<_> = requests.iter().map(|r| r.saga_id()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    // Submit in waves while killing a random role every few hundred milliseconds.
    for (wave, chunk) in requests.chunks(30).enumerate() {
        for r in chunk {
            como_orchestrator::submit(&ports, r).await.unwrap();
        }
        // Every role dies at least three times.
        let victim = if wave < 9 {
            wave % 3
        } else {
            rng.random_range(0..3)
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..900))).await;
        roles[victim].crash_and_restart(&db, &sims);
    }
    // A duplicate of every tenth request: changes nothing.
    for r in requests.iter().step_by(10) {
        como_orchestrator::submit(&ports, r).await.unwrap();
    }
    let states = wait_all(&ports, &ids, Duration::from_secs(240)).await;
    let ledger = sims.ledger().await;
    let (counts, violations) = verdict(&states, &ledger);
    let kills: Vec<usize> = roles.iter().map(|r| r.restarts).collect();
    eprintln!(
        "after {:?}: {counts:?}, kills per role {kills:?}",
        started.elapsed()
    );
    assert!(
        kills.iter().all(|k| *k >= 3),
        "every process was killed at least 3 times: {kills:?}"
    );
    assert_eq!(counts.get("missing"), None, "every request has a saga");
    let finished = counts.get("confirmed").unwrap_or(&0) + counts.get("compensated").unwrap_or(&0);
    assert_eq!(
        finished, 300,
        "every booking ended confirmed or compensated: {counts:?}"
    );
    assert!(*counts.get("confirmed").unwrap_or(&0) > 150, "{counts:?}");
    assert!(violations.is_empty(), "money invariant: {violations:?}");
    assert!(
        ledger.memberson.members.iter().all(|m| m.is_consistent()),
        "balances add up"
    );
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    roles.push(Role::start(
        &["orchestrator"],
        &db,
        &sims,
        dir.path().join("orchestrator-2.log"),
    ));
    let (backend, ports) = open(&db);

    let requests = bookings(200, "pair");
    let ids: Vec<_> = requests.iter().map(|r| r.saga_id()).collect();
    for r in &requests {
        como_orchestrator::submit(&ports, r).await.unwrap();
    }
    let states = wait_all(&ports, &ids, Duration::from_secs(120)).await;
    let ledger = sims.ledger().await;
    let (counts, violations) = verdict(&states, &ledger);
    for r in &mut roles {
        r.stop();
    }
    let worked = |role: &Role| -> u64 {
        let out = role.output();
        let json = out
            .lines()
            .find_map(|l| l.strip_prefix("orchestrator: stopped "))
            .unwrap_or_else(|| panic!("no stats on stop in:\n{out}"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["started"].as_u64().unwrap() + v["replies"].as_u64().unwrap()
    };
    let (a, b) = (worked(&roles[0]), worked(&roles[3]));
    eprintln!("{counts:?}; orchestrator 1 handled {a}, orchestrator 2 handled {b}");
    assert!(
        a > 0 && b > 0,
        "both orchestrators advanced sagas: {a} and {b}"
    );
    let finished = counts.get("confirmed").unwrap_or(&0) + counts.get("compensated").unwrap_or(&0);
    assert_eq!(finished, 200, "{counts:?}");
    assert!(violations.is_empty(), "money invariant: {violations:?}");
    // Serial per saga: no saga has two transitions with the same number in its history.
    for id in &ids {
        let history = ports.store.history(*id).await.unwrap();
        let mut numbers: Vec<u64> = history.iter().map(|h| h.transition).collect();
        numbers.dedup();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "saga {id}: transitions {numbers:?}"
        );
    }
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sevenrooms_outage_makes_sagas_wait_then_complete() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    // SevenRooms answers 503 to everything for 25 s, starting 1 s after start-up: far longer
    // than a call's retries (20 s at most) and the step's own attempts.
    let sims = Sims::start(
        dir.path(),
        Some(
            r#"{"sevenrooms": [{"kind": "outage", "status": 503, "after_ms": 1000, "for_ms": 25000}]}"#,
        ),
    );
    let outage_ends = Instant::now() + Duration::from_secs(26);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let requests = bookings(60, "outage");
    let ids: Vec<_> = requests.iter().map(|r| r.saga_id()).collect();
    for r in &requests {
        como_orchestrator::submit(&ports, r).await.unwrap();
    }
    // During the outage, sagas show that they wait for SevenRooms.
    let mut waited = 0;
    while Instant::now() < outage_ends {
        let counts = ports.store.counts().await.unwrap();
        let finished_early: u64 = counts
            .iter()
            .filter(|(k, _)| *k == StatusKind::Confirmed)
            .map(|(_, n)| *n)
            .sum();
        assert_eq!(
            finished_early, 0,
            "nothing can be booked while SevenRooms is down"
        );
        waited = waited.max(
            counts
                .iter()
                .find(|(k, _)| *k == StatusKind::WaitingForDownstream)
                .map_or(0, |(_, n)| *n),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        waited > 0,
        "sagas showed waiting_for_downstream during the outage"
    );
    let states = wait_all(&ports, &ids, Duration::from_secs(180)).await;
    let ledger = sims.ledger().await;
    let (counts, violations) = verdict(&states, &ledger);
    eprintln!("{counts:?}, at most {waited} waiting at once");
    let finished = counts.get("confirmed").unwrap_or(&0) + counts.get("compensated").unwrap_or(&0);
    assert_eq!(finished, 60, "{counts:?}");
    assert!(
        *counts.get("confirmed").unwrap_or(&0) >= 30,
        "most complete after the outage: {counts:?}"
    );
    assert!(violations.is_empty(), "money invariant: {violations:?}");
    // Those that did not complete failed for business reasons, never because they gave up
    // waiting.
    let events = ports.bus.recent(10_000).await.unwrap();
    for e in events.iter().filter(|e| ids.contains(&e.saga_id)) {
        if let SagaEventBody::BookingFailed { code, .. } = &e.body {
            assert!(
                ["INSUFFICIENT_POINTS", "SLOT_UNAVAILABLE"].contains(&code.as_str()),
                "saga {} failed with {code}",
                e.saga_id
            );
        }
    }
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}

/// `como-saga healthcheck URL`: its exit code and what it said.
fn healthcheck(url: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["healthcheck", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a container's health check runs: each role serves `/healthz` on `--health-listen`
/// (`COMO_SAGA_HEALTH_LISTEN`) while it runs, and `como-saga healthcheck` says so by its exit
/// code; once the role has stopped, the check fails. With `COMO_SAGA_EMF_NAMESPACE`, each
/// prints its heartbeat metric (what the deployment's autoscaling counts tasks by).
#[test]
fn each_role_answers_its_health_check_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    for (name, args) in [
        ("orchestrator", &["orchestrator"][..]),
        ("worker-crm", &["worker", "crm"][..]),
        ("worker-sevenrooms", &["worker", "sevenrooms"][..]),
    ] {
        let addr = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{addr}/healthz");
        let mut role = Role::start_with(
            args,
            &[
                ("COMO_SAGA_HEALTH_LISTEN", addr.as_str()),
                ("COMO_SAGA_EMF_NAMESPACE", "como-test"),
            ],
            &db,
            &sims,
            dir.path().join(format!("{name}.log")),
        );
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, said) = healthcheck(&url);
            if code == 0 {
                break;
            }
            assert!(
                Instant::now() < until,
                "{name} never answered its health check ({said}): {}",
                role.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Its heartbeat, one embedded-metric line on standard output, counted for its service.
        let until = Instant::now() + Duration::from_secs(15);
        let beat = loop {
            let output = role.output();
            if let Some(line) = output.lines().find(|l| l.contains("RunningTaskBeats")) {
                break serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
            assert!(
                Instant::now() < until,
                "{name} printed no heartbeat: {output}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(beat["Service"], name, "{beat}");
        assert_eq!(
            beat["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "como-test"
        );
        role.stop();
        let (code, said) = healthcheck(&url);
        assert_eq!(code, 1, "{name} stopped: the check fails");
        assert!(said.contains(&url), "{said}");
    }
}
