//! The SevenRooms client against the SevenRooms simulator over real HTTP on loopback, with each
//! fault kind switched on in turn: the outcome classification, reconciliation by `external_id`,
//! and exactly one reservation per `external_id` in the ledger.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Utc};
use como_simulators::ledger::HoldStatus;
use como_simulators::seed::{VENUE_GROUP_ID, VENUE_LARGE, VENUE_SMALL};
use como_simulators::{Downstream, FaultKind, FaultRule, SevenRoomsConfig, SimConfig, SimHandle};
use como_workers::clients::sevenrooms::{
    AvailabilityRequest, BookRequest, CancelOutcome, HoldRequest, ReleaseOutcome, SevenRoomsClient,
};
use como_workers::clients::{CallPolicy, Outcome, codes};

use common::{deadline, policy, sevenrooms, start};

const S: Downstream = Downstream::SevenRooms;

fn date() -> NaiveDate {
    Utc::now().date_naive() + chrono::Duration::days(7)
}

fn seven_pm() -> NaiveTime {
    NaiveTime::from_hms_opt(19, 0, 0).expect("a valid time")
}

fn hold_request(party: u32) -> HoldRequest {
    HoldRequest {
        date: date(),
        time: seven_pm(),
        party_size: party,
        shift_persistent_id: None,
        access_persistent_id: None,
        hold_wait_time_sec: None,
    }
}

fn book_request(external_id: &str, hold: Option<String>, party: u32) -> BookRequest {
    BookRequest {
        date: date(),
        time: seven_pm(),
        party_size: party,
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        phone: "+6591234567".into(),
        email: Some("ada@example.com".into()),
        reservation_hold_id: hold,
        external_id: Some(external_id.into()),
        loyalty_id: Some("CM100001".into()),
        notes: None,
    }
}

fn one_fault(sim: &SimHandle, rule: FaultRule) {
    sim.set_faults(S, vec![rule]).expect("valid fault");
}

/// Reservations carrying `external_id`, live and all.
fn reservations(sim: &SimHandle, external_id: &str) -> (usize, usize) {
    let ledger = sim.sevenrooms_ledger();
    let all: Vec<_> = ledger.with_external_id(external_id).collect();
    (all.iter().filter(|r| r.is_live()).count(), all.len())
}

/// A client whose token is already cached, so that request counts below are the call's own.
async fn warm(sim: &SimHandle, policy: CallPolicy) -> SevenRoomsClient {
    let client = sevenrooms(sim, policy);
    assert!(client.venues(VENUE_GROUP_ID, deadline()).await.is_success());
    client
}

#[tokio::test]
async fn venues_and_availability_count_covers_until_a_slot_is_full() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let venues = client
        .venues(VENUE_GROUP_ID, deadline())
        .await
        .success()
        .unwrap();
    assert!(venues.iter().any(|v| v.id == VENUE_SMALL));
    let bookable = |shifts: &[como_workers::clients::sevenrooms::Shift]| {
        shifts
            .iter()
            .flat_map(|s| &s.times)
            .find(|t| t.time == "19:00")
            .is_some_and(|t| t.is_bookable())
    };
    let query = AvailabilityRequest {
        date: date(),
        party_size: 4,
        start_time: None,
        end_time: None,
    };
    let before = client
        .availability(VENUE_SMALL, &query, deadline())
        .await
        .success()
        .unwrap();
    assert!(bookable(&before));
    // 6 covers a slot: a hold of 4 leaves no room for another 4.
    assert!(
        client
            .hold(VENUE_SMALL, &hold_request(4), deadline())
            .await
            .is_success()
    );
    let after = client
        .availability(VENUE_SMALL, &query, deadline())
        .await
        .success()
        .unwrap();
    assert!(!bookable(&after));
    let refused = client.hold(VENUE_SMALL, &hold_request(4), deadline()).await;
    assert_eq!(refused.failure_code(), Some(codes::SLOT_UNAVAILABLE));
    let unknown = client
        .availability("no-such-venue", &query, deadline())
        .await;
    assert_eq!(unknown.failure_code(), Some(codes::VENUE_NOT_FOUND));
}

#[tokio::test]
async fn hold_then_book_with_external_id_and_find_it_again() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let hold = client
        .hold(VENUE_LARGE, &hold_request(2), deadline())
        .await
        .success()
        .unwrap();
    let booking = client
        .book(
            VENUE_LARGE,
            &book_request("saga-20", Some(hold.reservation_hold_id.clone()), 2),
            deadline(),
        )
        .await
        .success()
        .unwrap();
    assert!(!booking.reconciled);
    let got = client
        .get_reservation(&booking.reservation_id, deadline())
        .await
        .success()
        .unwrap();
    assert_eq!(got.external_id.as_deref(), Some("saga-20"));
    assert_eq!(got.status_code.as_deref(), Some("RESERVED"));
    let found = client
        .find_by_external_id(VENUE_LARGE, date(), "saga-20", deadline())
        .await
        .success()
        .unwrap();
    assert_eq!(found.map(|r| r.id), Some(booking.reservation_id.clone()));
    let ledger = sim.sevenrooms_ledger();
    assert_eq!(
        ledger.hold(&hold.reservation_hold_id).unwrap().status,
        HoldStatus::Booked
    );
    assert_eq!(reservations(&sim, "saga-20"), (1, 1));
    let missing = client.get_reservation("res-missing", deadline()).await;
    assert_eq!(missing.failure_code(), Some(codes::RESERVATION_NOT_FOUND));
}

#[tokio::test]
async fn an_expired_hold_cannot_be_booked_and_frees_its_covers() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let mut request = hold_request(6);
    request.hold_wait_time_sec = Some(60);
    let hold = client
        .hold(VENUE_SMALL, &request, deadline())
        .await
        .success()
        .unwrap();
    sim.advance_clock(Duration::from_secs(61));
    let outcome = client
        .book(
            VENUE_SMALL,
            &book_request("saga-21", Some(hold.reservation_hold_id.clone()), 6),
            deadline(),
        )
        .await;
    assert_eq!(outcome.failure_code(), Some(codes::HOLD_EXPIRED));
    assert_eq!(
        sim.sevenrooms_ledger()
            .hold(&hold.reservation_hold_id)
            .unwrap()
            .status,
        HoldStatus::Expired
    );
    assert!(
        client
            .hold(VENUE_SMALL, &hold_request(6), deadline())
            .await
            .is_success()
    );
    assert_eq!(reservations(&sim, "saga-21"), (0, 0));
}

#[tokio::test]
async fn a_booking_after_commit_then_fail_is_found_by_external_id_not_made_twice() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let hold = client
        .hold(VENUE_LARGE, &hold_request(2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(500),
            lost_ms: 0,
        })
        .on(["book"])
        .times(1),
    );
    let booking = client
        .book(
            VENUE_LARGE,
            &book_request("saga-22", Some(hold.reservation_hold_id), 2),
            deadline(),
        )
        .await
        .success()
        .expect("reconciled");
    assert!(booking.reconciled);
    assert_eq!(
        sim.stats(S).requests("book"),
        1,
        "found, so not booked again"
    );
    assert!(sim.stats(S).requests("search") >= 1);
    assert_eq!(reservations(&sim, "saga-22"), (1, 1));
    let entry = sim.sevenrooms_ledger();
    assert_eq!(
        entry
            .reservation(&booking.reservation_id)
            .unwrap()
            .external_id
            .as_deref(),
        Some("saga-22")
    );
}

#[tokio::test]
async fn a_booking_whose_answer_is_lost_is_reconciled_after_the_timeout() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            attempt_timeout: Duration::from_millis(200),
            ..policy()
        },
    )
    .await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: None,
            lost_ms: 3_000,
        })
        .on(["book"])
        .times(1),
    );
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-23", None, 3), deadline())
        .await
        .success()
        .expect("reconciled");
    assert!(booking.reconciled);
    assert_eq!(reservations(&sim, "saga-23"), (1, 1));
}

#[tokio::test]
async fn a_booking_that_did_not_land_is_made_after_the_search_finds_nothing() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 503 })
            .on(["book"])
            .times(1),
    );
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-24", None, 2), deadline())
        .await
        .success()
        .expect("booked on the second try");
    assert!(!booking.reconciled);
    assert_eq!(sim.stats(S).requests("book"), 2);
    assert_eq!(reservations(&sim, "saga-24"), (1, 1));
}

#[tokio::test]
async fn a_booking_is_unknown_when_neither_booking_nor_search_answers() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            max_attempts: 2,
            ..policy()
        },
    )
    .await;
    sim.set_faults(
        S,
        vec![
            FaultRule::new(FaultKind::CommitThenFail {
                status: Some(500),
                lost_ms: 0,
            })
            .on(["book"]),
            FaultRule::new(FaultKind::ServerError { status: 503 }).on(["search"]),
        ],
    )
    .unwrap();
    let outcome = client
        .book(VENUE_LARGE, &book_request("saga-25", None, 2), deadline())
        .await;
    assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");
    assert_eq!(
        sim.stats(S).requests("book"),
        1,
        "no blind retry of a create"
    );
    // The worker reconciles later, when search works again.
    sim.clear_faults(S);
    let found = client
        .find_by_external_id(VENUE_LARGE, date(), "saga-25", deadline())
        .await;
    assert!(found.success().flatten().is_some());
    assert_eq!(reservations(&sim, "saga-25"), (1, 1));
}

#[tokio::test]
async fn a_hold_that_may_have_landed_is_unknown_and_not_retried() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(502),
            lost_ms: 0,
        })
        .on(["hold"]),
    );
    let outcome = client.hold(VENUE_SMALL, &hold_request(2), deadline()).await;
    assert!(
        matches!(
            outcome,
            Outcome::Unavailable {
                maybe_applied: true,
                ..
            }
        ),
        "a 502 to a write: unknown, and SevenRooms unavailable: {outcome:?}"
    );
    assert_eq!(sim.stats(S).requests("hold"), 1);
    let ledger = sim.sevenrooms_ledger();
    assert_eq!(ledger.holds.len(), 1);
    assert_eq!(ledger.holds[0].status, HoldStatus::Held);
}

#[tokio::test]
async fn a_429_on_a_hold_is_retried_because_nothing_was_held() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::RateLimited {
            retry_after_secs: 0,
        })
        .on(["hold"])
        .times(2),
    );
    assert!(
        client
            .hold(VENUE_SMALL, &hold_request(2), deadline())
            .await
            .is_success()
    );
    assert_eq!(sim.stats(S).requests("hold"), 3);
    assert_eq!(sim.sevenrooms_ledger().holds.len(), 1);
}

#[tokio::test]
async fn cancel_is_idempotent_and_refused_past_the_cut_off() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-26", None, 2), deadline())
        .await
        .success()
        .unwrap();
    assert_eq!(
        client.cancel(&booking.reservation_id, deadline()).await,
        Outcome::Success(CancelOutcome::Cancelled)
    );
    assert_eq!(
        client.cancel(&booking.reservation_id, deadline()).await,
        Outcome::Success(CancelOutcome::AlreadyCancelled)
    );
    assert_eq!(
        client.cancel("res-never-made", deadline()).await,
        Outcome::Success(CancelOutcome::NotFound)
    );
    assert_eq!(reservations(&sim, "saga-26"), (0, 1));

    let late = client
        .book(VENUE_LARGE, &book_request("saga-27", None, 2), deadline())
        .await
        .success()
        .unwrap();
    // Seven days ahead at 19:00 in Singapore: move to an hour before it.
    let starts = date().and_time(seven_pm()) - chrono::Duration::hours(8);
    let until = (starts.and_utc() - Utc::now() - chrono::Duration::hours(1))
        .to_std()
        .unwrap();
    sim.advance_clock(until);
    let refused = client.cancel(&late.reservation_id, deadline()).await;
    assert_eq!(
        refused.failure_code(),
        Some(codes::PAST_CANCELLATION_CUTOFF)
    );
    assert_eq!(reservations(&sim, "saga-27"), (1, 1));
}

#[tokio::test]
async fn a_forced_cut_off_refusal_is_a_business_failure() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-28", None, 2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Refuse {
            code: "PAST_CANCELLATION_CUTOFF".into(),
        })
        .on(["cancel"]),
    );
    let refused = client.cancel(&booking.reservation_id, deadline()).await;
    assert_eq!(
        refused.failure_code(),
        Some(codes::PAST_CANCELLATION_CUTOFF)
    );
    assert_eq!(reservations(&sim, "saga-28"), (1, 1));
}

#[tokio::test]
async fn cancel_by_external_id_covers_a_lost_reservation_id() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    client
        .book(VENUE_LARGE, &book_request("saga-29", None, 2), deadline())
        .await
        .success()
        .unwrap();
    assert_eq!(
        client
            .cancel_by_external_id(VENUE_LARGE, date(), "saga-29", deadline())
            .await,
        Outcome::Success(CancelOutcome::Cancelled)
    );
    assert_eq!(
        client
            .cancel_by_external_id(VENUE_LARGE, date(), "saga-29", deadline())
            .await,
        Outcome::Success(CancelOutcome::AlreadyCancelled)
    );
    assert_eq!(
        client
            .cancel_by_external_id(VENUE_LARGE, date(), "saga-never", deadline())
            .await,
        Outcome::Success(CancelOutcome::NotFound)
    );
    assert_eq!(reservations(&sim, "saga-29"), (0, 1));
}

#[tokio::test]
async fn cancel_after_commit_then_fail_cancels_once() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-30", None, 2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(500),
            lost_ms: 0,
        })
        .on(["cancel"])
        .times(2),
    );
    assert_eq!(
        client.cancel(&booking.reservation_id, deadline()).await,
        Outcome::Success(CancelOutcome::AlreadyCancelled)
    );
    assert_eq!(sim.stats(S).requests("cancel"), 3);
    assert_eq!(reservations(&sim, "saga-30"), (0, 1));
}

#[tokio::test]
async fn releasing_a_hold_twice_or_an_unknown_hold_is_success() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let hold = client
        .hold(VENUE_SMALL, &hold_request(6), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(503),
            lost_ms: 0,
        })
        .on(["release_hold"])
        .times(1),
    );
    assert_eq!(
        client
            .release_hold(VENUE_SMALL, &hold.reservation_hold_id, deadline())
            .await,
        Outcome::Success(ReleaseOutcome::Released)
    );
    assert_eq!(sim.stats(S).requests("release_hold"), 2);
    assert_eq!(
        client
            .release_hold(VENUE_SMALL, "hold-never-made", deadline())
            .await,
        Outcome::Success(ReleaseOutcome::AlreadyGone)
    );
    assert_eq!(
        sim.sevenrooms_ledger()
            .hold(&hold.reservation_hold_id)
            .unwrap()
            .status,
        HoldStatus::Released
    );
    // The covers are free again.
    assert!(
        client
            .hold(VENUE_SMALL, &hold_request(6), deadline())
            .await
            .is_success()
    );
}

#[tokio::test]
async fn forced_slot_and_hold_refusals_are_business_failures() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Refuse {
            code: "SLOT_UNAVAILABLE".into(),
        })
        .on(["hold"])
        .times(1),
    );
    let refused = client.hold(VENUE_LARGE, &hold_request(2), deadline()).await;
    assert_eq!(refused.failure_code(), Some(codes::SLOT_UNAVAILABLE));
    let hold = client
        .hold(VENUE_LARGE, &hold_request(2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Refuse {
            code: "HOLD_EXPIRED".into(),
        })
        .on(["book"])
        .times(1),
    );
    let refused = client
        .book(
            VENUE_LARGE,
            &book_request("saga-31", Some(hold.reservation_hold_id), 2),
            deadline(),
        )
        .await;
    assert_eq!(refused.failure_code(), Some(codes::HOLD_EXPIRED));
    assert_eq!(reservations(&sim, "saga-31"), (0, 0));
}

#[tokio::test]
async fn a_token_expired_mid_run_is_refreshed_once() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-32", None, 2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::TokenExpiry).on(["get"]).times(1),
    );
    assert!(
        client
            .get_reservation(&booking.reservation_id, deadline())
            .await
            .is_success()
    );
    let stats = sim.stats(S);
    assert_eq!((stats.tokens_issued, stats.unauthorized), (2, 1));
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let sim = common::start_with(SimConfig {
        sevenrooms: SevenRoomsConfig {
            token_lifetime: Duration::from_secs(2),
            ..SevenRoomsConfig::default()
        },
        ..SimConfig::default()
    })
    .await;
    let mut settings = common::sevenrooms_settings(&sim, policy());
    settings.token_refresh_margin = Duration::from_millis(1_500);
    let client = SevenRoomsClient::connect(common::http(), settings);
    assert!(client.venues(VENUE_GROUP_ID, deadline()).await.is_success());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(client.venues(VENUE_GROUP_ID, deadline()).await.is_success());
    let stats = sim.stats(S);
    assert_eq!(stats.tokens_issued, 2, "renewed inside the margin");
    assert_eq!(stats.unauthorized, 0, "never used an expired token");
}

#[tokio::test]
async fn a_hang_is_retryable_on_a_read_and_unknown_on_a_cancel() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            max_attempts: 2,
            attempt_timeout: Duration::from_millis(150),
            ..policy()
        },
    )
    .await;
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-33", None, 2), deadline())
        .await
        .success()
        .unwrap();
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Hang { ms: 600 }).on(["get", "cancel"]),
    );
    let read = client
        .get_reservation(&booking.reservation_id, deadline())
        .await;
    assert!(matches!(read, Outcome::Retryable { .. }), "{read:?}");
    let cancel = client.cancel(&booking.reservation_id, deadline()).await;
    assert!(matches!(cancel, Outcome::Unknown { .. }), "{cancel:?}");
    sim.clear_faults(S);
    let settled = client.cancel(&booking.reservation_id, deadline()).await;
    assert!(settled.is_success(), "{settled:?}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reservations(&sim, "saga-33"), (0, 1));
}

#[tokio::test]
async fn a_full_slot_is_a_business_failure_for_a_booking_without_hold() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    assert!(
        client
            .book(VENUE_SMALL, &book_request("saga-34", None, 6), deadline())
            .await
            .is_success()
    );
    let full = client
        .book(VENUE_SMALL, &book_request("saga-35", None, 1), deadline())
        .await;
    assert_eq!(full.failure_code(), Some(codes::SLOT_UNAVAILABLE));
    assert_eq!(reservations(&sim, "saga-35"), (0, 0));
}

#[tokio::test]
async fn latency_slows_calls_and_an_outage_window_fails_them_until_it_ends() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            max_attempts: 1,
            ..policy()
        },
    )
    .await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Latency {
            fixed_ms: 80,
            jitter_ms: 0,
        })
        .on(["venues"]),
    );
    let started = tokio::time::Instant::now();
    assert!(client.venues(VENUE_GROUP_ID, deadline()).await.is_success());
    assert!(started.elapsed() >= Duration::from_millis(80));

    one_fault(&sim, FaultRule::outage(Duration::from_millis(400)));
    let query = AvailabilityRequest {
        date: date(),
        party_size: 2,
        start_time: None,
        end_time: None,
    };
    let read = client.availability(VENUE_LARGE, &query, deadline()).await;
    assert!(
        matches!(
            read,
            Outcome::Unavailable {
                maybe_applied: false,
                ..
            }
        ),
        "{read:?}"
    );
    // A booking during the outage is unknown: the create got a 503 and the search too.
    let write = client
        .book(VENUE_LARGE, &book_request("saga-36", None, 2), deadline())
        .await;
    assert!(
        matches!(
            write,
            Outcome::Unavailable {
                maybe_applied: true,
                ..
            }
        ),
        "{write:?}"
    );
    assert_eq!(sim.stats(S).requests("book"), 1);

    let mut settled = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Outcome::Success(found) = client
            .find_by_external_id(VENUE_LARGE, date(), "saga-36", deadline())
            .await
        {
            settled = Some(found);
            break;
        }
    }
    assert_eq!(
        settled,
        Some(None),
        "after the window, the search settles it: nothing was booked"
    );
    assert_eq!(reservations(&sim, "saga-36"), (0, 0));
}

#[tokio::test]
async fn a_reconciled_booking_that_was_cancelled_since_is_not_reported_booked() {
    let sim = start().await;
    let client = warm(&sim, policy()).await;
    let first = client
        .book(VENUE_LARGE, &book_request("saga-37", None, 2), deadline())
        .await
        .success()
        .unwrap();
    assert!(
        client
            .cancel(&first.reservation_id, deadline())
            .await
            .is_success()
    );
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 503 })
            .on(["book"])
            .times(1),
    );
    let again = client
        .book(VENUE_LARGE, &book_request("saga-37", None, 2), deadline())
        .await;
    assert_eq!(again.failure_code(), Some(codes::RESERVATION_CANCELLED));
    assert_eq!(
        sim.stats(S).requests("book"),
        2,
        "no new create after the search"
    );
    assert_eq!(reservations(&sim, "saga-37"), (0, 1));
}

#[tokio::test]
async fn a_create_that_hangs_past_the_timeout_lands_once_with_its_retry() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            attempt_timeout: Duration::from_millis(150),
            ..policy()
        },
    )
    .await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Hang { ms: 600 })
            .on(["book"])
            .times(1),
    );
    // The first create is still hanging when the search finds nothing, so the client creates
    // again; the hung create lands later on the same external_id.
    let booking = client
        .book(VENUE_LARGE, &book_request("saga-38", None, 2), deadline())
        .await
        .success()
        .expect("booked by the second create");
    assert!(!booking.reconciled);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sim.stats(S).requests("book"), 2);
    assert_eq!(reservations(&sim, "saga-38"), (1, 1));
}

/// Finding: the first create hangs past the client's timeout, the search finds nothing yet, the
/// second create is refused (`SLOT_UNAVAILABLE`), and that refusal became the whole call's
/// outcome: the saga compensated while the first create was about to land, leaving a booking
/// nobody paid for. The call is unknown instead, so the saga looks the booking up once no
/// attempt can land.
#[tokio::test]
async fn a_refusal_after_a_create_that_may_still_land_is_unknown() {
    let sim = start().await;
    let client = warm(
        &sim,
        CallPolicy {
            attempt_timeout: Duration::from_millis(150),
            ..policy()
        },
    )
    .await;
    sim.set_faults(
        S,
        vec![
            FaultRule::new(FaultKind::Hang { ms: 800 })
                .on(["book"])
                .times(1),
            FaultRule::new(FaultKind::Refuse {
                code: "SLOT_UNAVAILABLE".into(),
            })
            .on(["book"])
            .window(Duration::from_millis(100), Duration::from_secs(60))
            .times(1),
        ],
    )
    .expect("valid faults");
    let outcome = client
        .book(
            VENUE_LARGE,
            &book_request("saga-late-1", None, 2),
            deadline(),
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Unknown { reason } if reason.contains("SLOT_UNAVAILABLE")),
        "a refusal must not settle a booking whose first create may still land: {outcome:?}"
    );
}
