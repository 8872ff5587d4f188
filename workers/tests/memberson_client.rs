//! The Memberson client against the Memberson simulator over real HTTP on loopback, with each
//! fault kind switched on in turn: the outcome classification, and exactly one ledger effect per
//! `ReceiptNo`.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use como_simulators::seed::{
    MEMBER_EXPIRED, MEMBER_LOW_BALANCE, MEMBER_RICH, MEMBER_TERMINATED, POINT_TYPE,
};
use como_simulators::{Downstream, FaultKind, FaultRule, SimConfig, SimHandle};
use como_workers::clients::memberson::{
    MemberStatus, MembersonClient, RedeemRequest, VoidOutcome, VoidRequest,
};
use como_workers::clients::{CallPolicy, Deadline, Outcome, codes};
use tokio::time::Instant;

use common::{deadline, memberson, policy, start};

const M: Downstream = Downstream::Memberson;

fn redeem_request(member: &str, receipt: &str, amount: i64) -> RedeemRequest {
    RedeemRequest {
        member_no: member.to_owned(),
        point_type: POINT_TYPE.to_owned(),
        amount,
        transaction_date: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        location: "COMO Dempsey".to_owned(),
        redemption_code: "EXPERIENCE".to_owned(),
        description: "Dinner at Candlenut".to_owned(),
        receipt_no: receipt.to_owned(),
    }
}

/// The member's redemptions under `receipt` and their balance, from the simulator's ledger.
fn ledger(sim: &SimHandle, member: &str, receipt: &str) -> (usize, i64, i64) {
    let ledger = sim.memberson_ledger();
    let m = ledger.member(member).expect("member in ledger");
    assert!(m.is_consistent(), "balance agrees with the redemptions");
    let n = m
        .redemptions
        .iter()
        .filter(|r| r.receipt_no == receipt)
        .count();
    (n, m.opening_balance, m.balance)
}

fn one_fault(sim: &SimHandle, rule: FaultRule) {
    sim.set_faults(M, vec![rule]).expect("valid fault");
}

#[tokio::test]
async fn summary_reports_status_tier_and_balance_and_unknown_members_fail() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    let summary = client
        .member_summary(MEMBER_RICH, deadline())
        .await
        .success()
        .expect("summary");
    assert_eq!(summary.status, MemberStatus::Active);
    assert_eq!(summary.tier.as_deref(), Some("Platinum"));
    assert_eq!(summary.balance, 250_000);
    let expired = client.member_summary(MEMBER_EXPIRED, deadline()).await;
    assert_eq!(
        expired.success().map(|s| s.status),
        Some(MemberStatus::Expired)
    );
    let unknown = client.member_summary("CM999999", deadline()).await;
    assert_eq!(unknown.failure_code(), Some(codes::MEMBER_NOT_FOUND));
}

#[tokio::test]
async fn a_redeem_deducts_once_and_a_replay_answers_as_the_first_time() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    let request = redeem_request(MEMBER_RICH, "saga-1:redeem", 1_500);
    let first = client.redeem(&request, deadline()).await.success().unwrap();
    assert_eq!(first.balance, 250_000 - 1_500);
    let replay = client.reconcile_redeem(&request, deadline()).await;
    assert_eq!(replay, Outcome::Success(first.clone()));
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-1:redeem"),
        (1, 250_000, 248_500)
    );

    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-1:redeem").2, 248_500);
}

/// Finding: a 409 on redeem was a business failure, so the saga compensated without a void and
/// the member's credits stayed taken. The `ReceiptNo` is the saga's own: a 409 means an earlier
/// attempt of this redemption landed with another body (here a deploy changed the description).
#[tokio::test]
async fn a_used_receipt_with_another_body_is_redeemed_not_refused() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    let request = redeem_request(MEMBER_RICH, "CS-409", 1_500);
    client.redeem(&request, deadline()).await.success().unwrap();
    let mut redeployed = request.clone();
    redeployed.description = "Como experience (new wording)".into();
    let answer = client.redeem(&redeployed, deadline()).await;
    let redemption = answer.success().expect("a used ReceiptNo is a redemption");
    assert!(redemption.receipt_already_used);
    assert_eq!(redemption.receipt_no, "CS-409");
    // Nothing more was taken: the one redemption stands, and a void gives it back.
    assert_eq!(ledger(&sim, MEMBER_RICH, "CS-409"), (1, 250_000, 248_500));
}

/// Finding: a refusal after an attempt that may still land was returned as the call's outcome,
/// so the saga settled the step as not applied while the first attempt was on its way.
#[tokio::test]
async fn a_refusal_after_an_attempt_that_may_still_land_is_unknown() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            attempt_timeout: Duration::from_millis(150),
            ..policy()
        },
    );
    sim.set_faults(
        M,
        vec![
            FaultRule::new(FaultKind::Hang { ms: 800 })
                .on(["redeem"])
                .times(1),
            FaultRule::new(FaultKind::Refuse {
                code: "INSUFFICIENT_POINTS".into(),
            })
            .on(["redeem"])
            .window(Duration::from_millis(100), Duration::from_secs(60))
            .times(1),
        ],
    )
    .expect("valid faults");
    let request = redeem_request(MEMBER_RICH, "CS-late", 1_500);
    let outcome = client.redeem(&request, deadline()).await;
    assert!(
        matches!(&outcome, Outcome::Unknown { reason } if reason.contains("INSUFFICIENT_POINTS")),
        "a refusal must not settle a call whose first attempt may still land: {outcome:?}"
    );
}

#[tokio::test]
async fn business_refusals_are_business_failures_and_take_nothing() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    for (member, code) in [
        (MEMBER_LOW_BALANCE, codes::INSUFFICIENT_POINTS),
        (MEMBER_EXPIRED, codes::MEMBER_EXPIRED),
        (MEMBER_TERMINATED, codes::MEMBER_TERMINATED),
        ("CM999999", codes::MEMBER_NOT_FOUND),
    ] {
        let outcome = client
            .redeem(&redeem_request(member, "r-refused", 1_000), deadline())
            .await;
        assert_eq!(outcome.failure_code(), Some(code), "{member}: {outcome:?}");
    }
    // A refusal forced by fault injection on a member who could pay.
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Refuse {
            code: "MEMBER_TERMINATED".into(),
        })
        .on(["redeem"])
        .times(1),
    );
    let forced = client
        .redeem(&redeem_request(MEMBER_RICH, "r-forced", 1_000), deadline())
        .await;
    assert_eq!(forced.failure_code(), Some(codes::MEMBER_TERMINATED));
    let ledger = sim.memberson_ledger();
    assert!(ledger.members.iter().all(|m| m.redemptions.is_empty()));
    assert!(
        ledger
            .members
            .iter()
            .all(|m| m.balance == m.opening_balance)
    );
}

#[tokio::test]
async fn a_redeem_retried_five_times_after_commit_then_fail_deducts_once() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    client.member_summary(MEMBER_RICH, deadline()).await; // token first
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(500),
            lost_ms: 0,
        })
        .on(["redeem"])
        .times(5),
    );
    let request = redeem_request(MEMBER_RICH, "saga-2:redeem", 3_000);
    let outcome = client.redeem(&request, deadline()).await;
    let redemption = outcome.success().expect("the sixth attempt answers");
    assert_eq!(sim.stats(M).requests("redeem"), 6);
    assert_eq!(sim.stats(M).faults_fired["commit_then_fail"], 5);
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-2:redeem"),
        (1, 250_000, 247_000)
    );
    assert_eq!(redemption.balance, 247_000);
}

#[tokio::test]
async fn a_lost_response_is_unknown_and_the_replay_reconciles_it() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 2,
            ..policy()
        },
    );
    client.member_summary(MEMBER_RICH, deadline()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: None,
            lost_ms: 5_000,
        })
        .on(["redeem"]),
    );
    let request = redeem_request(MEMBER_RICH, "saga-3:redeem", 700);
    let outcome = client.redeem(&request, deadline()).await;
    assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");
    // It did land, once, although both attempts were lost.
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-3:redeem"),
        (1, 250_000, 249_300)
    );

    sim.clear_faults(M);
    let settled = client.reconcile_redeem(&request, deadline()).await;
    let transaction = sim
        .memberson_ledger()
        .member(MEMBER_RICH)
        .unwrap()
        .redemptions[0]
        .transaction_id
        .clone();
    assert_eq!(
        settled.success().map(|r| r.transaction_id),
        Some(transaction)
    );
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-3:redeem"),
        (1, 250_000, 249_300)
    );
}

#[tokio::test]
async fn server_errors_on_a_read_are_retried_and_then_retryable() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 3,
            ..policy()
        },
    );
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 503 })
            .on(["summary"])
            .times(2),
    );
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    assert_eq!(sim.stats(M).requests("summary"), 3);

    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 500 }).on(["summary"]),
    );
    let outcome = client.member_summary(MEMBER_RICH, deadline()).await;
    assert!(matches!(outcome, Outcome::Retryable { .. }), "{outcome:?}");
    assert_eq!(sim.stats(M).requests("summary"), 6);

    // A gateway that cannot reach Memberson: the same retries, but the call ends unavailable
    // (the saga then waits for Memberson instead of spending an attempt).
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 502 }).on(["summary"]),
    );
    let outcome = client.member_summary(MEMBER_RICH, deadline()).await;
    assert!(
        matches!(
            outcome,
            Outcome::Unavailable {
                maybe_applied: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(sim.stats(M).requests("summary"), 9);
}

#[tokio::test]
async fn server_errors_on_redeem_are_unknown_until_a_replay_settles_them() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 3,
            ..policy()
        },
    );
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 500 }).on(["redeem"]),
    );
    let request = redeem_request(MEMBER_RICH, "saga-4:redeem", 100);
    let outcome = client.redeem(&request, deadline()).await;
    assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");
    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-4:redeem").0, 0);
    sim.clear_faults(M);
    assert!(
        client
            .reconcile_redeem(&request, deadline())
            .await
            .is_success()
    );
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-4:redeem"),
        (1, 250_000, 249_900)
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    client.member_summary(MEMBER_RICH, deadline()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::RateLimited {
            retry_after_secs: 1,
        })
        .on(["redeem"])
        .times(1),
    );
    let started = Instant::now();
    let outcome = client
        .redeem(
            &redeem_request(MEMBER_RICH, "saga-5:redeem", 10),
            deadline(),
        )
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    // The client waited as told, not its own millisecond backoff.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sim.stats(M).requests("redeem"), 2);
    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-5:redeem").0, 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_is_reported_not_waited_for() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    one_fault(
        &sim,
        FaultRule::new(FaultKind::RateLimited {
            retry_after_secs: 30,
        })
        .on(["redeem"]),
    );
    let outcome = client
        .redeem(
            &redeem_request(MEMBER_RICH, "saga-6:redeem", 10),
            Deadline::after(Duration::from_secs(2)),
        )
        .await;
    match outcome {
        Outcome::Retryable { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    assert_eq!(sim.stats(M).requests("redeem"), 1);
    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-6:redeem").0, 0);
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_retryable_for_reads_and_unknown_for_redeem() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 2,
            attempt_timeout: Duration::from_millis(150),
            ..policy()
        },
    );
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Hang { ms: 1_000 }).on(["summary", "redeem"]),
    );
    let read = client.member_summary(MEMBER_RICH, deadline()).await;
    assert!(matches!(read, Outcome::Retryable { .. }), "{read:?}");
    let request = redeem_request(MEMBER_RICH, "saga-7:redeem", 250);
    let write = client.redeem(&request, deadline()).await;
    assert!(matches!(write, Outcome::Unknown { .. }), "{write:?}");

    sim.clear_faults(M);
    assert!(
        client
            .reconcile_redeem(&request, deadline())
            .await
            .is_success()
    );
    // The hung attempts land late, as replays of the settled redemption.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-7:redeem"),
        (1, 250_000, 249_750)
    );
}

#[tokio::test]
async fn latency_within_the_timeout_only_slows_the_call() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Latency {
            fixed_ms: 120,
            jitter_ms: 30,
        })
        .on(["summary"]),
    );
    let started = Instant::now();
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(sim.stats(M).requests("summary"), 1);
    assert_eq!(sim.stats(M).faults_fired["latency"], 1);
}

#[tokio::test]
async fn a_token_expired_mid_run_is_refreshed_and_the_call_retried_once() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    client.member_summary(MEMBER_RICH, deadline()).await;
    one_fault(
        &sim,
        FaultRule::new(FaultKind::TokenExpiry)
            .on(["redeem"])
            .times(1),
    );
    let outcome = client
        .redeem(
            &redeem_request(MEMBER_RICH, "saga-8:redeem", 50),
            deadline(),
        )
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let stats = sim.stats(M);
    assert_eq!((stats.tokens_issued, stats.unauthorized), (2, 1));
    assert_eq!(stats.requests("redeem"), 2);
    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-8:redeem").0, 1);
}

#[tokio::test]
async fn a_token_past_its_lifetime_is_replaced() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    sim.advance_clock(Duration::from_secs(2 * 3600));
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    assert_eq!(sim.stats(M).tokens_issued, 2);
}

#[tokio::test]
async fn tokens_revoked_while_redeems_are_in_flight_cost_one_new_token() {
    let sim = start().await;
    let client = memberson(
        &sim,
        CallPolicy {
            attempt_timeout: Duration::from_secs(3),
            ..policy()
        },
    );
    client.member_summary(MEMBER_RICH, deadline()).await;
    // The 20 redeems wait inside the simulator, past its token check's turn, while the tokens
    // are revoked; their retries are not delayed.
    one_fault(
        &sim,
        FaultRule::new(FaultKind::Latency {
            fixed_ms: 500,
            jitter_ms: 0,
        })
        .on(["redeem"])
        .times(20),
    );
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client: MembersonClient = client.clone();
            tokio::spawn(async move {
                client
                    .redeem(
                        &redeem_request(MEMBER_RICH, &format!("rot-{i}"), 10),
                        deadline(),
                    )
                    .await
            })
        })
        .collect();
    while sim.stats(M).requests("redeem") < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.expire_tokens(M);
    for task in tasks {
        assert!(task.await.unwrap().is_success());
    }
    let stats = sim.stats(M);
    assert_eq!(stats.tokens_issued, 2, "one refresh shared by every caller");
    assert_eq!(stats.unauthorized, 20);
    let m = sim.memberson_ledger();
    let m = m.member(MEMBER_RICH).unwrap();
    assert_eq!(m.redemptions.len(), 20);
    assert_eq!(m.balance, 250_000 - 200);
}

#[tokio::test]
async fn refused_credentials_are_retryable_and_not_hammered() {
    let sim = start().await;
    let mut settings = common::memberson_settings(&sim, policy());
    settings.credentials.password = "wrong".into();
    let client = MembersonClient::connect(common::http(), settings);
    let outcome = client.member_summary(MEMBER_RICH, deadline()).await;
    assert!(matches!(outcome, Outcome::Retryable { .. }), "{outcome:?}");
    assert_eq!(sim.stats(M).requests("authenticate"), 1);
}

#[tokio::test]
async fn a_void_gives_the_points_back_once_and_treats_done_and_never_done_as_success() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    let request = redeem_request(MEMBER_RICH, "saga-9:redeem", 5_000);
    assert!(client.redeem(&request, deadline()).await.is_success());
    let void = VoidRequest {
        member_no: MEMBER_RICH.into(),
        receipt_no: "saga-9:redeem".into(),
        reason: "booking failed".into(),
    };
    let first = client.void(&void, deadline()).await.success().unwrap();
    assert!(
        matches!(
            first,
            VoidOutcome::Voided {
                balance: 250_000,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(
        client.void(&void, deadline()).await,
        Outcome::Success(VoidOutcome::AlreadyVoided)
    );
    let never = VoidRequest {
        receipt_no: "never-redeemed".into(),
        ..void.clone()
    };
    assert_eq!(
        client.void(&never, deadline()).await,
        Outcome::Success(VoidOutcome::NeverRedeemed)
    );
    let m = sim.memberson_ledger();
    let m = m.member(MEMBER_RICH).unwrap();
    assert_eq!(m.balance, 250_000);
    assert!(m.redemptions[0].void_transaction_id.is_some());
}

#[tokio::test]
async fn a_void_after_commit_then_fail_restores_the_points_once() {
    let sim = start().await;
    let client = memberson(&sim, policy());
    let request = redeem_request(MEMBER_RICH, "saga-10:redeem", 900);
    assert!(client.redeem(&request, deadline()).await.is_success());
    one_fault(
        &sim,
        FaultRule::new(FaultKind::CommitThenFail {
            status: Some(502),
            lost_ms: 0,
        })
        .on(["void"])
        .times(3),
    );
    let outcome = client
        .void(
            &VoidRequest {
                member_no: MEMBER_RICH.into(),
                receipt_no: "saga-10:redeem".into(),
                reason: "compensation".into(),
            },
            deadline(),
        )
        .await;
    assert_eq!(outcome, Outcome::Success(VoidOutcome::AlreadyVoided));
    assert_eq!(sim.stats(M).requests("void"), 4);
    assert_eq!(
        ledger(&sim, MEMBER_RICH, "saga-10:redeem"),
        (1, 250_000, 250_000)
    );
}

#[tokio::test]
async fn the_deadline_caps_retries() {
    let sim = start().await;
    let policy = CallPolicy {
        max_attempts: 50,
        min_backoff: Duration::from_millis(40),
        max_backoff: Duration::from_millis(40),
        jitter: false,
        ..policy()
    };
    let client = memberson(&sim, policy.clone());
    one_fault(
        &sim,
        FaultRule::new(FaultKind::ServerError { status: 503 }).on(["summary"]),
    );
    let started = Instant::now();
    let budget = Duration::from_millis(300);
    let outcome = client
        .member_summary(MEMBER_RICH, Deadline::after(budget))
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Unavailable { .. } | Outcome::Retryable { .. }
        ),
        "{outcome:?}"
    );
    let attempts = sim.stats(M).requests("summary");
    assert!(
        (1..=8).contains(&attempts),
        "{attempts} attempts in 300 ms at 40 ms apart, not the 50 the policy allows"
    );
    // Never waits past the deadline (one attempt's timeout is the most it can overrun).
    assert!(started.elapsed() < budget + policy.attempt_timeout);
}

#[tokio::test]
async fn an_outage_window_fails_calls_until_it_ends() {
    let sim = start_outage().await;
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 1,
            ..policy()
        },
    );
    let during = client.member_summary(MEMBER_RICH, deadline()).await;
    assert!(
        matches!(
            during,
            Outcome::Unavailable {
                maybe_applied: false,
                ..
            }
        ),
        "an outage is unavailability, not the request's failure: {during:?}"
    );
    let request = redeem_request(MEMBER_RICH, "saga-11:redeem", 10);
    let write = client.redeem(&request, deadline()).await;
    // The outage began before the client had a token: authentication failed, so the redeem was
    // never sent, and that is known for sure.
    match &write {
        Outcome::Unavailable {
            reason,
            maybe_applied: false,
            ..
        } => assert!(reason.contains("no token"), "{reason}"),
        other => panic!("expected unavailable and not sent, got {other:?}"),
    }
    assert_eq!(sim.stats(M).requests("redeem"), 0);
    assert_eq!(ledger(&sim, MEMBER_RICH, "saga-11:redeem").0, 0);
    // After the window, the same calls go through.
    let after = poll_until_success(|| client.member_summary(MEMBER_RICH, deadline())).await;
    assert!(after);
}

async fn start_outage() -> SimHandle {
    let mut config = SimConfig::default();
    config.faults.memberson = vec![FaultRule::outage(Duration::from_millis(1_000))];
    common::start_with(config).await
}

async fn poll_until_success<T, F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome<T>>,
{
    for _ in 0..100 {
        if f().await.is_success() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
