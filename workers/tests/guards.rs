//! The circuit breaker and the rate limit in front of a real client: the breaker opens under a
//! simulator outage window, refuses calls without sending them while open, and closes after the
//! window once a probe succeeds; the rate limit refuses a call whose turn would come after its
//! deadline, without sending it.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use como_simulators::seed::MEMBER_RICH;
use como_simulators::{Downstream, FaultRule};
use como_workers::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use como_workers::clients::{CallPolicy, Deadline, Guards, Outcome};
use como_workers::rate_limit::{RateLimit, RateLimitConfig};

use common::{deadline, memberson, policy, start};

const M: Downstream = Downstream::Memberson;

fn rate_limit(per_second: u32, burst: u32) -> Arc<RateLimit> {
    Arc::new(RateLimit::new(
        "memberson",
        RateLimitConfig {
            per_second: NonZeroU32::new(per_second).expect("positive rate"),
            burst: NonZeroU32::new(burst).expect("positive burst"),
        },
    ))
}

#[tokio::test]
async fn the_breaker_opens_under_an_outage_window_and_closes_after_it() {
    let sim = start().await;
    let breaker = Arc::new(CircuitBreaker::new(
        "memberson",
        BreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_millis(150),
            ..BreakerConfig::default()
        },
    ));
    let client = memberson(
        &sim,
        CallPolicy {
            max_attempts: 1,
            ..policy()
        },
    )
    .with_guards(Guards::new(breaker.clone(), rate_limit(10_000, 100)));
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );

    sim.add_faults(M, vec![FaultRule::outage(Duration::from_millis(800))])
        .unwrap();
    for _ in 0..3 {
        let outcome = client.member_summary(MEMBER_RICH, deadline()).await;
        assert!(matches!(outcome, Outcome::Retryable { .. }), "{outcome:?}");
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: refused here, nothing reaches Memberson.
    let sent = sim.stats(M).requests("summary");
    match client.member_summary(MEMBER_RICH, deadline()).await {
        Outcome::Retryable {
            reason,
            retry_after,
        } => {
            assert!(reason.contains("circuit"), "{reason}");
            assert!(retry_after.is_some_and(|d| d <= Duration::from_millis(150)));
        }
        other => panic!("expected a refusal by the open circuit, got {other:?}"),
    }
    assert_eq!(sim.stats(M).requests("summary"), sent);

    // Probe every 50 ms; probes during the window fail and reopen the circuit.
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "calls succeed again after the window");
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert!(snapshot.opened_total >= 1);
    assert!(snapshot.rejected_total >= 1);
    assert!(
        sim.stats(M).faults_fired["outage"] >= 3,
        "the failures came from the outage"
    );
}

#[tokio::test]
async fn the_rate_limit_refuses_a_turn_past_the_deadline_without_sending() {
    let sim = start().await;
    let limit = rate_limit(1, 1);
    let client = memberson(&sim, policy()).with_guards(Guards {
        breaker: None,
        rate_limit: Some(limit.clone()),
    });
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    let outcome = client
        .member_summary(MEMBER_RICH, Deadline::after(Duration::from_millis(100)))
        .await;
    match outcome {
        Outcome::Retryable { reason, .. } => assert!(reason.contains("rate limit"), "{reason}"),
        other => panic!("expected a local rate-limit refusal, got {other:?}"),
    }
    assert_eq!(sim.stats(M).requests("summary"), 1);
    // With time to wait, the call waits its turn and goes through.
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    let snapshot = limit.snapshot();
    assert_eq!(
        (
            snapshot.admitted_total,
            snapshot.delayed_total,
            snapshot.refused_total
        ),
        (1, 1, 1)
    );
}
