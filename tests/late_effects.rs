//! Late effects, end to end: the roles as processes on one SQLite file, the simulators over
//! real HTTP, and the verdict from the simulators' own ledgers.
//!
//! - a booking whose first create lands after the client gave up, while the retry is refused,
//!   is looked up and paid for, never left unpaid;
//! - a redemption whose `ReceiptNo` is already used with another body (a deploy changed the
//!   description) is taken as redeemed, never as refused with the credits kept;
//! - an effect that lands after the saga was compensated is undone by the late-effect audit,
//!   whose timer survives a `kill -9` of the orchestrator.

mod support;

use std::time::Duration;

use como_engine::{HistoryKind, StatusKind};
use como_schemas::ReceiptNo;
use como_simulators::invariant::{SagaKeys, check};
use como_workers::clients::memberson::{MembersonClient, MembersonSettings, RedeemRequest};
use como_workers::clients::sevenrooms::{BookRequest, SevenRoomsClient, SevenRoomsSettings};
use como_workers::clients::{Deadline, Outcome};
use support::{Sims, bookings, open, roles, wait_all};

async fn install_faults(url: &str, rules: serde_json::Value) {
    reqwest::Client::new()
        .put(format!("{url}/_sim/faults"))
        .json(&rules)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("faults installed");
}

fn sevenrooms_client(sims: &Sims) -> SevenRoomsClient {
    SevenRoomsClient::connect(
        reqwest::Client::new(),
        SevenRoomsSettings::new(
            sims.sevenrooms.clone(),
            como_simulators::sevenrooms::simulator_credentials(),
        ),
    )
}

fn memberson_client(sims: &Sims) -> MembersonClient {
    MembersonClient::connect(
        reqwest::Client::new(),
        MembersonSettings::new(
            sims.memberson.clone(),
            como_simulators::memberson::simulator_credentials(),
        ),
    )
}

/// Submits one booking, waits for its saga to finish, and checks the money invariant on the
/// whole ledgers.
async fn submit_and_check(
    ports: &como_ports::Backend,
    sims: &Sims,
    request: &como_schemas::BookingRequested,
    timeout_secs: u64,
) -> (como_engine::SagaState, como_simulators::ledger::Ledger) {
    como_orchestrator::submit(ports, request).await.unwrap();
    let id = request.saga_id();
    let states = wait_all(ports, &[id], Duration::from_secs(timeout_secs)).await;
    let state = states[0].clone().expect("the saga exists");
    let ledger = sims.ledger().await;
    let report = check(&ledger, &[SagaKeys::of(&state)]);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    (state, ledger)
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(10))
}

/// Finding 1: SevenRooms `book` hangs past the client's attempt timeout (5 s) and finishes
/// anyway; the search finds nothing yet and the second create is refused. The saga used to
/// settle the step as not applied and compensate, leaving a reservation nobody paid for.
#[tokio::test(flavor = "multi_thread")]
async fn a_booking_that_lands_after_the_client_gave_up_is_paid_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    install_faults(
        &sims.sevenrooms,
        serde_json::json!([
            {"kind": "hang", "ms": 6500, "ops": ["book"], "times": 1},
            {"kind": "refuse", "code": "SLOT_UNAVAILABLE", "ops": ["book"], "times": 1, "after_ms": 2000}
        ]),
    )
    .await;
    let _roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let request = bookings(4, "late-book").remove(3);
    let id = request.saga_id();
    let (state, ledger) = submit_and_check(&ports, &sims, &request, 120).await;
    assert_eq!(
        state.status.kind(),
        StatusKind::Confirmed,
        "the create that landed late is found and the booking paid for: {:?}",
        state.phase
    );
    let live = ledger
        .sevenrooms
        .with_external_id(&id.to_string())
        .filter(|r| r.is_live())
        .count();
    assert_eq!(live, 1, "one live reservation, the one that landed late");
    backend.close().await;
}

/// Finding 2: Memberson answers 409 for a `ReceiptNo` already used with another body, which
/// means the credits were taken. The saga used to compensate without a void and keep them.
#[tokio::test(flavor = "multi_thread")]
async fn a_redemption_whose_receipt_is_used_with_another_body_is_paid_for_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let request = bookings(4, "late-409").remove(3);
    let id = request.saga_id();
    // An earlier attempt of this very redemption, from before a deploy that changed the
    // description: the receipt is used, the credits are taken.
    let redeemed = memberson_client(&sims)
        .redeem(
            &RedeemRequest {
                member_no: request.member_no.to_string(),
                point_type: "COMO_CREDITS".into(),
                amount: i64::try_from(request.quoted_credits.get()).unwrap(),
                transaction_date: chrono::Utc::now(),
                location: "como-saga".into(),
                redemption_code: "EXPERIENCE".into(),
                description: "Experience paid with Como Credits (old wording)".into(),
                receipt_no: ReceiptNo::for_saga(id).to_string(),
            },
            deadline(),
        )
        .await;
    assert!(redeemed.is_success(), "{redeemed:?}");
    let _roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let (state, _) = submit_and_check(&ports, &sims, &request, 60).await;
    assert_eq!(
        state.status.kind(),
        StatusKind::Confirmed,
        "{:?}",
        state.phase
    );
    backend.close().await;
}

/// A booking lands after its saga was compensated (slower than any deadline: here it is made
/// by hand, with the saga's `external_id`, while the orchestrator is down). The late-effect
/// audit, whose timer is in the store, cancels it after the orchestrator comes back, records
/// it in the saga's history and counts it; the ledgers end clean.
#[tokio::test(flavor = "multi_thread")]
async fn an_effect_that_lands_after_compensation_is_undone_by_the_audit_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    install_faults(
        &sims.sevenrooms,
        serde_json::json!([{"kind": "refuse", "code": "SLOT_UNAVAILABLE", "ops": ["book"]}]),
    )
    .await;
    let env = [("COMO_SAGA_AUDIT_AFTER", "6s,12s")];
    let mut roles = roles(&db, &sims, dir.path(), &env);
    let (backend, ports) = open(&db);
    let request = bookings(4, "late-audit").remove(3);
    let id = request.saga_id();
    como_orchestrator::submit(&ports, &request).await.unwrap();
    let state = wait_all(&ports, &[id], Duration::from_secs(60)).await[0]
        .clone()
        .expect("the saga exists");
    assert_eq!(
        state.status.kind(),
        StatusKind::Compensated,
        "{:?}",
        state.phase
    );
    assert!(
        state.audit.is_some() && state.wake_at.is_some(),
        "an audit is due"
    );

    // The orchestrator dies; meanwhile the booking lands.
    roles[0].crash_and_restart(&db, &sims);
    roles[0].stop();
    install_faults(&sims.sevenrooms, serde_json::json!([])).await;
    let landed = sevenrooms_client(&sims)
        .book(
            request.venue_id.as_str(),
            &BookRequest {
                date: request.date,
                time: request.time.time(),
                party_size: u32::from(request.party_size.get()),
                first_name: "Late".into(),
                last_name: "Landing".into(),
                phone: "+6591000000".into(),
                email: None,
                reservation_hold_id: None,
                external_id: Some(id.to_string()),
                loyalty_id: Some(request.member_no.to_string()),
                notes: None,
            },
            deadline(),
        )
        .await;
    assert!(matches!(landed, Outcome::Success(_)), "{landed:?}");
    let keys = |s: &como_engine::SagaState| vec![SagaKeys::of(s)];
    let before = check(&sims.ledger().await, &keys(&state));
    assert!(
        !before.violations.is_empty(),
        "a live reservation of a compensated saga breaks the invariant"
    );

    roles[0].spawn(&db, &sims);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let state = loop {
        let s = ports.store.get(id).await.unwrap().unwrap().value;
        if s.wake_at.is_none() || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        state.status.kind(),
        StatusKind::Compensated,
        "{:?}",
        state.phase
    );
    assert_eq!(
        state.audit.as_ref().map(|a| (a.rounds, a.undone)),
        Some((2, 1))
    );
    let history = ports.store.history(id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.kind == HistoryKind::LateEffectUndone),
        "the history records the late effect undone"
    );
    let after = check(&sims.ledger().await, &keys(&state));
    assert!(after.violations.is_empty(), "{:?}", after.violations);
    backend.close().await;
}
