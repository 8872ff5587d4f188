//! A short seeded `como-saga chaos` run, as CI runs it: separate processes, every simulator
//! fault kind, late effects, duplicate and delayed deliveries, `kill -9` with restarts; then the
//! report must show no lost request, no unfinished saga (late-effect audits included) and no
//! money-invariant violation. Each downstream also goes down for longer than a call's own
//! retries (20 s): sagas must wait it out, and none may compensate because of it.

use std::process::Command;

/// Runs `chaos` with `args` and `--json`; checks that it found nothing wrong: no lost request,
/// no unfinished saga, no money-invariant violation. Returns the report and the run's
/// standard error.
fn chaos_without_violations(args: &[&str]) -> (serde_json::Value, String) {
    // One run at a time: each is a dozen processes, and two at once on a small machine starve
    // each other of the calls whose faults the checks count.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .arg("chaos")
        .args(args)
        .arg("--json")
        .output()
        .expect("run chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("a JSON report ({e}): {stdout}\n{stderr}"));
    eprintln!("{report}");
    assert!(out.status.success(), "chaos found violations: {report}");
    assert_eq!(report["lost"], serde_json::json!([]));
    assert_eq!(report["unfinished"], serde_json::json!([]));
    assert_eq!(report["money_invariant_violations"], serde_json::json!([]));
    (report, stderr)
}

#[test]
fn a_short_seeded_chaos_run_finds_no_violation() {
    let (report, _) = chaos_without_violations(&[
        "--sagas",
        "150",
        "--seed",
        "7",
        "--duration",
        "15s",
        "--drain-timeout",
        "5m",
    ]);
    let outcomes = report["outcomes"].as_object().unwrap();
    let total: u64 = outcomes.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 150, "every booking has a saga: {outcomes:?}");
    // The faults really happened.
    let kills: u64 = report["kills"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(kills >= 3, "processes were killed: {report}");
    assert!(
        report["late_effects_injected"].as_u64().unwrap_or(0) > 0,
        "calls landed after the client gave up: {report}"
    );
    assert!(
        report["live_holds"]["live"].is_u64(),
        "live holds are reported: {report}"
    );
    for kind in ["commit_then_fail", "latency", "server_error"] {
        assert!(
            report["faults"][kind].as_u64().unwrap_or(0) > 0,
            "{kind} was injected: {report}"
        );
    }

    // Degraded service.
    let number = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is reported: {report}"))
    };
    let waited = number("waited_for_downstream");
    let longest_wait = number("longest_wait_ms");
    let longest_outage = number("longest_outage_ms");
    let deadline = number("deadline_ms");
    number("waited_longer_than_retry_budget");
    number("confirmed_after_waiting");
    assert_eq!(
        number("compensated_by_outage"),
        0,
        "no saga compensated because of an outage: {}",
        report["outage_compensations"]
    );
    assert_eq!(report["outage_compensations"], serde_json::json!([]));
    // Each downstream went down once for long: longer than a call's own retries (20 s), shorter
    // than the saga's deadline.
    let outages = report["outages"].as_array().expect("outages are listed");
    for downstream in ["memberson", "sevenrooms"] {
        let long: Vec<u64> = outages
            .iter()
            .filter(|w| w["kind"] == "long" && w["downstream"] == downstream)
            .map(|w| w["length_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(
            long.len(),
            1,
            "one long outage of {downstream}: {outages:?}"
        );
        assert!(
            long[0] > 20_000,
            "{downstream} was down for long: {outages:?}"
        );
    }
    assert!(
        longest_outage < deadline,
        "outages shorter than the deadline: {report}"
    );
    if longest_outage > 20_000 {
        // The calls could not ride the outage out: sagas waited for it, about as long.
        assert!(waited > 0, "sagas waited for a downstream: {report}");
        assert!(
            longest_wait >= longest_outage / 2,
            "the longest wait ({longest_wait} ms) spans much of the longest outage \
             ({longest_outage} ms): {report}"
        );
    }
}

/// `chaos --store-faults` on the embedded backend, small: the database on a tmpfs of its own
/// (the CI runs as root, which mounting it needs), filled to the last byte now and then, a
/// lock held past the busy timeout now and then, kills landing inside transactions; and still
/// nothing lost, nothing doubled, every saga finished.
#[test]
fn a_short_chaos_run_with_store_faults_finds_no_violation() {
    let (report, stderr) = chaos_without_violations(&[
        "--store-faults",
        "--sagas",
        "120",
        "--seed",
        "11",
        "--duration",
        "20s",
        "--drain-timeout",
        "5m",
    ]);
    for kind in ["disk_full", "lock_held"] {
        assert!(
            report["store_faults"][kind].as_u64().unwrap_or(0) > 0,
            "{kind} was injected: {report}"
        );
    }
    assert!(
        stderr.contains("the store refuses writes"),
        "the run's own writes met the faults: {stderr}"
    );
}
