//! The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (from
//! PyPI, into a virtual environment under the target directory; it never downloads a browser
//! of its own) against the whole system in-process on loopback (`spawn_app`: both
//! simulators, the orchestrator and both workers on a real SQLite file, the API serving the
//! dashboard).
//!
//! `tests/dashboard/browser.py` signs in with an operator's token, opens the stuck list,
//! makes SevenRooms rate-limit the next booking (a 429 asking for 45 s) and submits one, sees
//! the saga appear in the stuck list without a reload and in the failing view with its last
//! error, opens it, retries it with a reason, and sees it reach `confirmed` with the reason in
//! its timeline and on the audit page; then signs in as a viewer, finds no action offered, and
//! has a forged action request refused with 403. This test then
//! checks the outcome from outside: the simulators' ledgers hold exactly one live redemption
//! and one live reservation for the saga, and the audit list names the operator and reason.
//! Before it, a booking whose attempts SevenRooms rate-limited three times over shows its
//! identical attempts folded into one row that opens.
//!
//! Chromium comes from Debian's `chromium` package, which `.ci/run` installs; run alone, the
//! test installs it with apt-get (as root, or through `sudo -n`). With
//! `COMO_DASHBOARD_SCREENSHOTS=DIR` the script leaves its screenshots there (the README's come
//! from `COMO_DASHBOARD_SCREENSHOTS=docs/dashboard cargo test --test dashboard`).

mod api_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use api_support::{Api, OPERATOR};
use chrono::Utc;
use como_api::auth::Role;
use como_schemas::{BookingRequested, MemberNo, ReceiptNo, SagaId, VenueId, examples};
use como_simulators::ledger::RedemptionStatus;
use como_simulators::seed::{MEMBER_LOW_BALANCE, MEMBER_RICH, VENUE_LARGE};
use serde_json::{Value, json};

const PLAYWRIGHT: &str = "playwright>=1.55,<2";
const REASON: &str = "SevenRooms rate limit lifted; retry now (night shift)";

/// Debian's Chromium: `CHROMIUM`, else `/usr/bin/chromium`, installed from Debian's package
/// when missing.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return path;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            std::process::Command::new("apt-get")
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", "chromium"]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", "chromium"]);
    }
    assert!(
        path.exists(),
        "{} is missing and could not be installed: install Debian's chromium package \
         (`apt-get install chromium`), or set CHROMIUM to a Chromium binary",
        path.display()
    );
    path
}

fn booking(request_id: &str) -> BookingRequested {
    booking_for(request_id, MEMBER_RICH)
}

fn booking_for(request_id: &str, member: &str) -> BookingRequested {
    let date = Utc::now().date_naive() + chrono::Days::new(30);
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(member).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request
}

/// Runs the browser script; its output, and the saga id it printed.
async fn run_script(
    api: &Api,
    screenshots: &Path,
    retried: &str,
) -> (bool, String, Option<String>) {
    let python = tokio::task::spawn_blocking(|| {
        como_backend_aws::testing::venv("playwright-venv", PLAYWRIGHT)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot install Playwright: {e}"));
    let browser = chromium();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dashboard/browser.py");
    let viewer = api
        .key
        .mint("night-viewer", &[Role::Viewer], Duration::from_secs(600))
        .unwrap();
    let child = tokio::process::Command::new(python)
        .arg(&script)
        .env("DASHBOARD_URL", &api.base)
        .env("OPERATOR_TOKEN", api.token(Role::Operator))
        .env("VIEWER_TOKEN", viewer)
        .env("SUBMITTER_TOKEN", api.token(Role::Submitter))
        .env("SEVENROOMS_URL", api.sevenrooms())
        .env(
            "BOOKING_JSON",
            serde_json::to_string(&booking("dashboard-e2e-1")).unwrap(),
        )
        .env("SCREENSHOTS", screenshots)
        .env("RETRIED_SAGA", retried)
        .env("CHROMIUM", browser)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser script");
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the browser script finishes within 5 minutes")
        .expect("the browser script's output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let saga = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("SAGA_ID="))
        .map(str::to_owned);
    (out.status.success(), said, saga)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_retries_a_stuck_saga_in_the_browser_and_a_viewer_cannot_act() {
    let api = Api::start().await;
    // Traffic before the operator looks: eight bookings that succeed, two whose member lacks
    // the credits (compensated), all finished, so the overview has something to count.
    let mut finished = 0;
    let mut sagas = Vec::new();
    for n in 0..10 {
        let member = if n % 5 == 4 {
            MEMBER_LOW_BALANCE
        } else {
            MEMBER_RICH
        };
        let request = booking_for(&format!("dashboard-before-{n}"), member);
        sagas.push(request.saga_id());
        let (status, answer) = api.submit(&request).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{answer}");
    }
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while finished < 10 {
        assert!(
            std::time::Instant::now() < until,
            "{finished} of 10 bookings finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, counts) = api.get("/v1/counts", Role::Viewer).await;
        finished = counts["by_status"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| ["confirmed", "compensated"].contains(&c["status"].as_str().unwrap()))
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
    }
    // A booking that SevenRooms rate-limited twelve times before it went through (three of the
    // saga's attempts, each retried four times by the worker's client): its timeline has a run
    // of identical attempts for the dashboard to fold.
    api.put_faults(
        &api.sevenrooms(),
        json!([{"kind": "rate_limited", "retry_after_secs": 0, "ops": ["book"], "times": 12}]),
    )
    .await;
    let retried = booking_for("dashboard-retried", MEMBER_RICH);
    sagas.push(retried.saga_id());
    api.submit(&retried).await;
    let retried = retried.saga_id().to_string();
    api.wait_status(&retried, "confirmed", Duration::from_secs(60))
        .await;
    api.delete_faults(&api.sevenrooms()).await;
    // The overview is read at most every 2 s: wait for one that counts them (and so has their
    // minute in its last hour).
    loop {
        assert!(
            std::time::Instant::now() < until,
            "the overview never counted them"
        );
        let (_, overview) = api.get("/v1/overview", Role::Viewer).await;
        if overview["counts"]["total"] == 11 && overview["series"][0]["started"] == 11 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kept = std::env::var_os("COMO_DASHBOARD_SCREENSHOTS").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let screenshots = kept.clone().unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&screenshots).unwrap();
    let (ok, said, saga) = run_script(&api, &screenshots, &retried).await;
    println!("{said}");
    if !ok {
        // Keep the screenshots of a failure for whoever reads the log.
        let keep = scratch.keep();
        panic!(
            "the browser script failed (screenshots in {}):\n{said}",
            keep.display()
        );
    }
    assert!(said.contains("dashboard e2e: ok"), "{said}");
    let saga = saga.expect("the script names the saga");
    let saga_id = SagaId::parse(&saga).unwrap();

    // From outside, as the ledgers tell it: the member paid once and the experience is booked
    // once, for this saga.
    let ledger = api.ledger().await;
    let receipt = ReceiptNo::for_saga(saga_id).to_string();
    let redeemed: Vec<_> = ledger.memberson.redemptions_for_receipt(&receipt).collect();
    assert_eq!(redeemed.len(), 1, "{redeemed:#?}");
    assert_eq!(redeemed[0].1.status, RedemptionStatus::Redeemed);
    let booked: Vec<_> = ledger
        .sevenrooms
        .with_external_id(&saga)
        .filter(|r| r.is_live())
        .collect();
    assert_eq!(booked.len(), 1, "{:#?}", ledger.sevenrooms.reservations);
    sagas.push(saga_id);
    let mut states = Vec::new();
    for id in sagas {
        states.push(Some(api.keys(id).await.0));
    }
    let (counts, violations) = support::verdict(&states, &ledger);
    assert_eq!(counts.get("confirmed"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("compensated"), Some(&2), "{counts:?}");
    assert!(violations.is_empty(), "{violations:#?}");

    // The audit list holds the retry: who, what, why, and that it was applied; the viewer's
    // forged request changed nothing and was never recorded as an action.
    let (_, audit) = api.get("/v1/audit", Role::Viewer).await;
    let entries: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == format!("saga/{saga}"))
        .collect();
    assert_eq!(entries.len(), 1, "{audit:#}");
    assert_eq!(entries[0]["actor"], OPERATOR, "{audit:#}");
    assert_eq!(entries[0]["action"], "retry_now", "{audit:#}");
    assert_eq!(entries[0]["reason"], REASON, "{audit:#}");
    assert_eq!(entries[0]["outcome"], "applied", "{audit:#}");

    api.spawned.stop().await.unwrap();
}
