//! The circuit breaker and the rate limit in front of a real client: the breaker opens under a
//! simulator outage window, refuses calls without sending them while open (also after its
//! cool-down: a call is never the probe), and closes after the window once the health
//! monitor's probe succeeds; the rate limit refuses a call whose turn would come after its
//! deadline, without sending it.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use como_ports::SystemClock;
use como_simulators::seed::MEMBER_RICH;
use como_simulators::{Downstream, FaultRule};
use como_workers::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use como_workers::clients::{CallPolicy, Deadline, Guards, Outcome};
use como_workers::handlers::{CommandHandler, CrmHandler};
use como_workers::health::{HealthConfig, HealthMonitor};
use como_workers::rate_limit::{RateLimit, RateLimitConfig};
use tokio_util::sync::CancellationToken;

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
async fn the_breaker_opens_under_an_outage_window_and_only_its_probes_close_it() {
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
        assert!(
            matches!(
                outcome,
                Outcome::Unavailable {
                    maybe_applied: false,
                    ..
                }
            ),
            "a 503 is the downstream's unavailability: {outcome:?}"
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: refused here, nothing reaches Memberson; not even after the cool-down, since a
    // saga's call is never the probe.
    let sent = sim.stats(M).requests("summary");
    for _ in 0..4 {
        match client.member_summary(MEMBER_RICH, deadline()).await {
            Outcome::Unavailable { reason, .. } => assert!(reason.contains("circuit"), "{reason}"),
            other => panic!("expected a refusal by the open circuit, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.stats(M).requests("summary"), sent);

    // The monitor probes every cool-down; probes during the window fail, the first after it
    // closes the circuit.
    let handler: Arc<dyn CommandHandler> = Arc::new(CrmHandler {
        client: client.clone(),
    });
    let shutdown = CancellationToken::new();
    let monitor = tokio::spawn(
        HealthMonitor::new(
            breaker.clone(),
            handler,
            None,
            Arc::new(SystemClock),
            HealthConfig {
                tick: Duration::from_millis(20),
                probe_timeout: Duration::from_millis(500),
            },
        )
        .run(shutdown.clone()),
    );
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if breaker.state() == BreakerState::Closed {
            recovered = true;
            break;
        }
        assert!(
            client
                .member_summary(MEMBER_RICH, deadline())
                .await
                .success()
                .is_none()
        );
    }
    shutdown.cancel();
    monitor.await.unwrap();
    assert!(recovered, "a probe closes the circuit after the window");
    assert!(
        client
            .member_summary(MEMBER_RICH, deadline())
            .await
            .is_success()
    );
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!(snapshot.opened_total, 1);
    assert!(snapshot.rejected_total >= 4);
    assert!(
        snapshot.probes_failed_total >= 1,
        "probes during the window failed: {snapshot:?}"
    );
    // Only the probes reached Memberson while the circuit was open.
    assert_eq!(
        sim.stats(M).requests("summary") - sent,
        snapshot.probes_total + 1,
        "{snapshot:?}"
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
        // Nothing sent, and the wait is the downstream's capacity: the saga waits, unspent.
        Outcome::Unavailable {
            reason,
            maybe_applied: false,
            ..
        } => assert!(reason.contains("rate limit"), "{reason}"),
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
