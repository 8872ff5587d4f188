//! Late effects over real HTTP on loopback: a simulator finishes what it has begun even when the
//! client has given up (a `hang` past the client's timeout), and a `late` fault answers at once
//! while the effect lands `ms` after the call arrived.

use como_schemas::credentials::ExposeSecret;
use std::time::{Duration, Instant};

use chrono::Utc;
use como_simulators::ledger::RedemptionStatus;
use como_simulators::seed::{MEMBER_RICH, POINT_TYPE, VENUE_LARGE};
use como_simulators::{
    Downstream, FaultKind, FaultRule, RequestFilter, SimConfig, SimHandle, Simulators,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const RICH_OPENING: i64 = 250_000;

async fn start() -> SimHandle {
    Simulators::start(SimConfig {
        bulk_members: 0,
        ..SimConfig::default()
    })
    .await
    .expect("simulators start")
}

/// A client that gives up after 200 ms, as a worker's per-call timeout would.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client")
}

async fn memberson_token(sim: &SimHandle) -> String {
    let creds = sim.memberson_credentials();
    reqwest::Client::new()
        .post(format!("{}/api/user/authenticate", sim.memberson_url()))
        .header("SvcAuth", creds.svc_auth.expose_secret())
        .json(&json!({"Username": creds.username, "Password": creds.password.expose_secret()}))
        .send()
        .await
        .expect("authenticate")
        .json()
        .await
        .expect("a JSON string")
}

async fn sevenrooms_token(sim: &SimHandle) -> String {
    let creds = sim.sevenrooms_credentials();
    let body: Value = reqwest::Client::new()
        .post(format!("{}/auth", sim.sevenrooms_url()))
        .form(&[
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.expose_secret()),
        ])
        .send()
        .await
        .expect("auth")
        .json()
        .await
        .expect("envelope");
    body["data"]["token"].as_str().expect("token").to_owned()
}

async fn redeem(
    http: &reqwest::Client,
    sim: &SimHandle,
    token: &str,
    receipt: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!(
        "{}/api/transaction/redeem-point",
        sim.memberson_url()
    ))
    .header(
        "SvcAuth",
        sim.memberson_credentials().svc_auth.expose_secret(),
    )
    .header("Token", token)
    .json(&json!({
        "MemberNo": MEMBER_RICH, "PointType": POINT_TYPE, "Amount": 1500,
        "TransactionDate": "2026-03-01T12:00:00Z", "Location": "COMO Dempsey",
        "RedemptionCode": "EXPERIENCE", "Description": "Dinner", "ReceiptNo": receipt,
    }))
    .send()
    .await
}

async fn book(
    http: &reqwest::Client,
    sim: &SimHandle,
    token: &str,
    external_id: &str,
) -> reqwest::Result<reqwest::Response> {
    let date = (Utc::now().date_naive() + chrono::Duration::days(5)).to_string();
    http.put(format!(
        "{}/venues/{VENUE_LARGE}/book",
        sim.sevenrooms_url()
    ))
    .header("Authorization", token)
    .form(&[
        ("date", date.as_str()),
        ("time", "19:30"),
        ("party_size", "2"),
        ("first_name", "Ada"),
        ("last_name", "Lovelace"),
        ("phone", "+6591234567"),
        ("external_id", external_id),
    ])
    .send()
    .await
}

fn charged(sim: &SimHandle, receipt: &str) -> bool {
    let ledger = sim.memberson_ledger();
    let member = ledger.member(MEMBER_RICH).expect("seed member");
    let live = member
        .redemptions
        .iter()
        .any(|r| r.receipt_no == receipt && r.status == RedemptionStatus::Redeemed);
    assert!(member.is_consistent());
    live && member.balance == RICH_OPENING - 1500
}

fn reserved(sim: &SimHandle, external_id: &str) -> bool {
    sim.sevenrooms_ledger()
        .with_external_id(external_id)
        .any(|r| r.is_live())
}

/// Polls `landed` until it holds, for at most `within`; returns how long after `since` it did.
async fn lands(since: Instant, within: Duration, landed: impl Fn() -> bool) -> Option<Duration> {
    while since.elapsed() < within {
        if landed() {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    landed().then(|| since.elapsed())
}

#[tokio::test]
async fn a_hung_booking_lands_after_the_client_has_given_up() {
    let sim = start().await;
    let token = sevenrooms_token(&sim).await;
    sim.set_faults(
        Downstream::SevenRooms,
        vec![FaultRule::new(FaultKind::Hang { ms: 1500 }).on(["book"])],
    )
    .unwrap();
    let sent = Instant::now();
    let answer = book(&impatient(), &sim, &token, "hung-1").await;
    assert!(
        answer.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client times out: {answer:?}"
    );
    assert!(!reserved(&sim, "hung-1"), "not before the hang is over");
    let at = lands(sent, Duration::from_secs(5), || reserved(&sim, "hung-1"))
        .await
        .expect("the reservation lands although the client left");
    assert!(at >= Duration::from_millis(1400), "landed after {at:?}");
}

#[tokio::test]
async fn a_hung_redeem_takes_the_credits_after_the_client_has_given_up() {
    let sim = start().await;
    let token = memberson_token(&sim).await;
    sim.set_faults(
        Downstream::Memberson,
        vec![FaultRule::new(FaultKind::Hang { ms: 1500 }).on(["redeem"])],
    )
    .unwrap();
    let sent = Instant::now();
    let answer = redeem(&impatient(), &sim, &token, "CS-hung").await;
    assert!(
        answer.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client times out: {answer:?}"
    );
    assert!(!charged(&sim, "CS-hung"), "not before the hang is over");
    let at = lands(sent, Duration::from_secs(5), || charged(&sim, "CS-hung"))
        .await
        .expect("the credits are taken although the client left");
    assert!(at >= Duration::from_millis(1400), "landed after {at:?}");
}

#[tokio::test]
async fn a_late_booking_is_answered_504_at_once_and_lands_after_ms() {
    let sim = start().await;
    let token = sevenrooms_token(&sim).await;
    // Installed over HTTP, as a chaos run or a test outside Rust would.
    let installed = reqwest::Client::new()
        .put(format!("{}/_sim/faults", sim.sevenrooms_url()))
        .json(&json!({"kind": "late", "ms": 1500, "ops": ["book"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), StatusCode::OK);
    let sent = Instant::now();
    let answer = book(&reqwest::Client::new(), &sim, &token, "late-1")
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        sent.elapsed() < Duration::from_millis(700),
        "answered at once"
    );
    assert!(!reserved(&sim, "late-1"), "nothing at once");
    let at = lands(sent, Duration::from_secs(5), || reserved(&sim, "late-1"))
        .await
        .expect("the reservation lands late");
    assert!(at >= Duration::from_millis(1450), "landed after {at:?}");
    assert_eq!(sim.stats(Downstream::SevenRooms).faults_fired["late"], 1);
    // The request log keeps the answer the client had, not what the work came to after it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let filter = RequestFilter {
        path_prefix: Some(format!("/venues/{VENUE_LARGE}/book")),
        ..RequestFilter::default()
    };
    let log = sim.requests(Downstream::SevenRooms, &filter).requests;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].op.as_deref(), log[0].class.as_deref(), log[0].status),
        (Some("book"), Some("write"), Some(504))
    );
    assert_eq!(log[0].faults, ["late"]);
}

#[tokio::test]
async fn a_late_redeem_is_answered_with_its_status_and_takes_the_credits_after_ms() {
    let sim = start().await;
    let token = memberson_token(&sim).await;
    sim.set_faults(
        Downstream::Memberson,
        vec![
            FaultRule::new(FaultKind::Late {
                ms: 1500,
                status: Some(502),
            })
            .on(["redeem"])
            .times(1),
        ],
    )
    .unwrap();
    let sent = Instant::now();
    let answer = redeem(&reqwest::Client::new(), &sim, &token, "CS-late")
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    assert!(
        sent.elapsed() < Duration::from_millis(700),
        "answered at once"
    );
    assert!(!charged(&sim, "CS-late"), "nothing at once");
    let at = lands(sent, Duration::from_secs(5), || charged(&sim, "CS-late"))
        .await
        .expect("the credits are taken late");
    assert!(at >= Duration::from_millis(1450), "landed after {at:?}");
    // A replay once it has landed answers as the first time: the effect is there.
    let replay = redeem(&reqwest::Client::new(), &sim, &token, "CS-late")
        .await
        .expect("an answer");
    assert_eq!(replay.status(), StatusCode::OK);
    assert!(charged(&sim, "CS-late"));
    assert_eq!(sim.stats(Downstream::Memberson).faults_fired["late"], 1);
}

#[tokio::test]
async fn late_on_a_read_is_a_plain_gateway_timeout() {
    let sim = start().await;
    let token = memberson_token(&sim).await;
    sim.set_faults(
        Downstream::Memberson,
        vec![FaultRule::new(FaultKind::Late {
            ms: 300,
            status: None,
        })],
    )
    .unwrap();
    let summary = reqwest::Client::new()
        .get(format!(
            "{}/api/profile/{MEMBER_RICH}/summary",
            sim.memberson_url()
        ))
        .header(
            "SvcAuth",
            sim.memberson_credentials().svc_auth.expose_secret(),
        )
        .header("Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(summary.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_late_effect() {
    let sim = start().await;
    let token = sevenrooms_token(&sim).await;
    sim.set_faults(
        Downstream::SevenRooms,
        vec![
            FaultRule::new(FaultKind::Late {
                ms: 60_000,
                status: None,
            })
            .on(["book"]),
        ],
    )
    .unwrap();
    let answer = book(&reqwest::Client::new(), &sim, &token, "late-shut")
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(!reserved(&sim, "late-shut"));
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .expect("shutdown does not wait for the 60 s delay")
        .expect("clean shutdown");
}
