//! A short seeded `como-saga chaos` run, as CI runs it: separate processes, every simulator
//! fault kind, late effects, duplicate and delayed deliveries, `kill -9` with restarts; then the
//! report must show no lost request, no unfinished saga (late-effect audits included) and no
//! money-invariant violation.

use std::process::Command;

#[test]
fn a_short_seeded_chaos_run_finds_no_violation() {
    let out = Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .args([
            "chaos",
            "--sagas",
            "150",
            "--seed",
            "7",
            "--duration",
            "15s",
            "--drain-timeout",
            "5m",
            "--json",
        ])
        .output()
        .expect("run chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{report}");
    assert!(out.status.success(), "chaos found violations: {report}");
    assert_eq!(report["lost"], serde_json::json!([]));
    assert_eq!(report["unfinished"], serde_json::json!([]));
    assert_eq!(report["money_invariant_violations"], serde_json::json!([]));
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
}
