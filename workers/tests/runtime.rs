//! The worker loop against a real SQLite file and the simulators over loopback HTTP: a command
//! is answered once; a duplicate of a refused command replays the recorded reply without calling
//! the downstream, and a duplicate of a succeeded redeem asks again and changes nothing; an expired
//! command is not run and answered as an unknown outcome; while the circuit is open commands are parked, the saga told
//! once, and they expire as "downstream unavailable"; an unreadable command is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_ports::{Backend, Clock, Delivery, ManualClock, OutgoingMessage, QueueName, SystemClock};
use como_schemas::{
    CommandKind, OperationKind, ReplyOutcome, Timestamp, WorkerCommand, WorkerReply, examples,
};
use como_simulators::faults::FaultRule;
use como_simulators::{Downstream, SimConfig, SimHandle, Simulators, seed};
use como_workers::breaker::{BreakerConfig, CircuitBreaker};
use como_workers::clients::memberson::{MembersonClient, MembersonSettings};
use como_workers::clients::{CallPolicy, Guards};
use como_workers::handlers::CrmHandler;
use como_workers::rate_limit::{RateLimit, RateLimitConfig};
use como_workers::runtime::{WorkerConfig, WorkerRuntime};

struct Rig {
    _dir: tempfile::TempDir,
    _backend: EmbeddedBackend,
    ports: Backend,
    sim: SimHandle,
    worker: WorkerRuntime,
    breaker: Arc<CircuitBreaker>,
}

async fn rig() -> Rig {
    rig_on(Arc::new(SystemClock)).await
}

/// The rig with its ports (and so its worker) on `clock`.
async fn rig_on(clock: Arc<dyn Clock>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(
        dir.path().join("w.sqlite"),
        EmbeddedConfig::default(),
        clock,
    )
    .unwrap();
    let ports = backend.ports();
    let sim = Simulators::start(SimConfig::default()).await.unwrap();
    let mut settings =
        MembersonSettings::new(sim.memberson_url(), sim.memberson_credentials().clone());
    settings.policy = CallPolicy {
        max_attempts: 1,
        ..CallPolicy::default()
    };
    let breaker = Arc::new(CircuitBreaker::new(
        "memberson",
        BreakerConfig {
            consecutive_failures: 1,
            cool_down: Duration::from_secs(30),
            ..BreakerConfig::default()
        },
    ));
    let rate = Arc::new(RateLimit::new(
        "memberson",
        RateLimitConfig {
            per_second: 1000.try_into().unwrap(),
            burst: 1000.try_into().unwrap(),
        },
    ));
    let client = MembersonClient::connect(reqwest::Client::new(), settings)
        .with_guards(Guards::new(breaker.clone(), rate));
    let config = WorkerConfig {
        max_park: Duration::from_millis(300),
        ..WorkerConfig::default()
    };
    let worker = WorkerRuntime::new(ports.clone(), Arc::new(CrmHandler { client }), config);
    Rig {
        _dir: dir,
        _backend: backend,
        ports,
        sim,
        worker,
        breaker,
    }
}

/// A redeem command for a rich member, due `deadline_in` from now.
fn redeem(deadline_in: Duration) -> WorkerCommand {
    let mut request =
        examples::booking_request("runtime-1", NaiveDate::from_ymd_opt(2030, 1, 15).unwrap());
    request.member_no = como_schemas::MemberNo::parse(seed::MEMBER_RICH).unwrap();
    let mut cmd = examples::command(
        &request,
        "redeem_credits",
        CommandKind::Action,
        OperationKind::RedeemCredits,
        &[],
    );
    let now = SystemClock.now();
    cmd.sent_at = now;
    cmd.deadline = now.plus_ms(u64::try_from(deadline_in.as_millis()).unwrap());
    cmd
}

async fn deliver(ports: &Backend, body: String) -> Delivery {
    ports
        .queue
        .send(
            QueueName::Commands(como_schemas::Worker::Crm),
            vec![OutgoingMessage::new(body)],
        )
        .await
        .unwrap();
    receive(ports, QueueName::Commands(como_schemas::Worker::Crm)).await
}

async fn receive(ports: &Backend, queue: QueueName) -> Delivery {
    let mut got = ports
        .queue
        .receive(queue, 1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "one message on {queue}");
    got.remove(0)
}

async fn replies(ports: &Backend) -> Vec<WorkerReply> {
    let got = ports
        .queue
        .receive(
            QueueName::Replies,
            10,
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    got.iter()
        .map(|d| serde_json::from_str(&d.body).unwrap())
        .collect()
}

fn redeem_calls(sim: &SimHandle) -> u64 {
    sim.stats(Downstream::Memberson)
        .requests
        .get("redeem")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_duplicate_of_a_refused_command_replays_the_recorded_reply() {
    let r = rig().await;
    let mut cmd = redeem(Duration::from_secs(15));
    // A member without the points: Memberson refuses, and the refusal is recorded.
    match &mut cmd.operation {
        como_schemas::Operation::RedeemCredits { member_no, .. } => {
            *member_no = como_schemas::MemberNo::parse(seed::MEMBER_EMPTY).unwrap();
        }
        other => panic!("not a redeem: {other:?}"),
    }
    let body = serde_json::to_string(&cmd).unwrap();
    let first = deliver(&r.ports, body.clone()).await;
    r.worker.handle(&first).await.unwrap();
    let second = deliver(&r.ports, body).await;
    r.worker.handle(&second).await.unwrap();
    let got = replies(&r.ports).await;
    assert_eq!(got.len(), 2);
    assert!(
        matches!(got[0].outcome, ReplyOutcome::BusinessFailure { .. }),
        "{:?}",
        got[0].outcome
    );
    assert_eq!(got[0], got[1], "the duplicate gets the recorded reply");
    assert_eq!(redeem_calls(&r.sim), 1, "Memberson was called once");
    assert_eq!(r.worker.stats().snapshot().replayed, 1);
    assert_commands_acknowledged(&r.ports).await;
}

#[tokio::test]
async fn a_duplicate_of_a_succeeded_redeem_asks_again_and_changes_nothing() {
    let r = rig().await;
    let cmd = redeem(Duration::from_secs(15));
    let body = serde_json::to_string(&cmd).unwrap();
    let first = deliver(&r.ports, body.clone()).await;
    r.worker.handle(&first).await.unwrap();
    assert!(
        r.ports
            .records
            .get(cmd.command_id.as_str())
            .await
            .unwrap()
            .is_none(),
        "a success that repeats safely is not recorded"
    );
    let second = deliver(&r.ports, body).await;
    r.worker.handle(&second).await.unwrap();
    let got = replies(&r.ports).await;
    assert_eq!(got.len(), 2);
    assert!(
        matches!(got[0].outcome, ReplyOutcome::Succeeded { .. }),
        "{:?}",
        got[0].outcome
    );
    assert_eq!(
        got[0].outcome, got[1].outcome,
        "Memberson answers the same ReceiptNo with the first redemption"
    );
    assert_eq!(
        redeem_calls(&r.sim),
        2,
        "the duplicate asked Memberson again"
    );
    let member = r.sim.memberson_ledger();
    let m = member.member(seed::MEMBER_RICH).unwrap();
    assert_eq!(
        m.redemptions.len(),
        1,
        "one redemption however often it is asked"
    );
    assert_eq!(r.worker.stats().snapshot().replayed, 0);
    assert_commands_acknowledged(&r.ports).await;
}

async fn assert_commands_acknowledged(ports: &Backend) {
    let left = ports
        .queue
        .receive(
            QueueName::Commands(como_schemas::Worker::Crm),
            10,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "every command was acknowledged");
}

#[tokio::test]
async fn an_expired_command_is_not_run_and_its_outcome_is_unknown() {
    let r = rig().await;
    let mut cmd = redeem(Duration::from_secs(15));
    cmd.deadline = cmd.sent_at; // already due
    let d = deliver(&r.ports, serde_json::to_string(&cmd).unwrap()).await;
    r.worker.handle(&d).await.unwrap();
    let got = replies(&r.ports).await;
    // An earlier delivery may have run it before its worker died: the saga must look the
    // effect up, not take "not run" for "not applied".
    assert!(
        matches!(&got[0].outcome, ReplyOutcome::UnknownOutcome { .. }),
        "{:?}",
        got[0].outcome
    );
    assert_eq!(redeem_calls(&r.sim), 0);
}

#[tokio::test]
async fn an_expired_redelivery_costs_an_attempt_only_if_an_earlier_delivery_could_have_written() {
    let r = rig().await;
    let mut redeem_cmd = redeem(Duration::from_secs(15));
    redeem_cmd.deadline = redeem_cmd.sent_at;
    let mut check = examples::command(
        &examples::booking_request("runtime-2", NaiveDate::from_ymd_opt(2030, 1, 15).unwrap()),
        "check_credits",
        CommandKind::Action,
        OperationKind::CheckCredits,
        &[],
    );
    check.deadline = redeem_cmd.sent_at;
    for cmd in [&redeem_cmd, &check] {
        let mut d = deliver(&r.ports, serde_json::to_string(cmd).unwrap()).await;
        // Received before (by a receive whose answer was lost, or a worker that died).
        d.receive_count = 2;
        r.worker.handle(&d).await.unwrap();
    }
    let got = replies(&r.ports).await;
    let unavailable = |cmd: &WorkerCommand| {
        let reply = got
            .iter()
            .find(|g| g.command_id == cmd.command_id)
            .unwrap_or_else(|| panic!("a reply to {:?}: {got:?}", cmd.command_id));
        match &reply.outcome {
            ReplyOutcome::UnknownOutcome {
                downstream_unavailable,
                ..
            } => *downstream_unavailable,
            other => panic!("{other:?}"),
        }
    };
    // A redemption may have happened: the saga spends an attempt and looks it up.
    assert!(!unavailable(&redeem_cmd));
    // A balance check changed nothing even if it ran: the wait spends no attempt.
    assert!(unavailable(&check));
}

/// 2100-01-01 and 2001-09-09: a test clock far from the wall clock either way.
const LATE: Timestamp = Timestamp::from_millis(4_102_444_800_000);
const EARLY: Timestamp = Timestamp::from_millis(1_000_000_000_000);

#[tokio::test]
async fn a_command_past_its_deadline_by_the_worker_clock_is_expired_whatever_the_wall_clock_says() {
    let r = rig_on(Arc::new(ManualClock::new(LATE))).await;
    let cmd = redeem(Duration::from_secs(15));
    assert!(
        SystemClock.now() < cmd.deadline,
        "the wall clock says there is time"
    );
    let d = deliver(&r.ports, serde_json::to_string(&cmd).unwrap()).await;
    r.worker.handle(&d).await.unwrap();
    let got = replies(&r.ports).await;
    assert!(
        matches!(&got[0].outcome, ReplyOutcome::UnknownOutcome { .. }),
        "{:?}",
        got[0].outcome
    );
    assert_eq!(redeem_calls(&r.sim), 0, "not run");
    assert_eq!(r.worker.snapshot().expired, 1);
}

#[tokio::test]
async fn a_command_with_time_left_by_the_worker_clock_runs_whatever_the_wall_clock_says() {
    let r = rig_on(Arc::new(ManualClock::new(EARLY))).await;
    let mut cmd = redeem(Duration::from_secs(15));
    cmd.sent_at = EARLY;
    cmd.deadline = EARLY.plus_ms(15_000);
    assert!(
        SystemClock.now() > cmd.deadline,
        "the wall clock says it is late"
    );
    let d = deliver(&r.ports, serde_json::to_string(&cmd).unwrap()).await;
    r.worker.handle(&d).await.unwrap();
    let got = replies(&r.ports).await;
    assert!(
        matches!(&got[0].outcome, ReplyOutcome::Succeeded { .. }),
        "the call had the 15 s the worker's clock gives it: {:?}",
        got[0].outcome
    );
    assert_eq!(redeem_calls(&r.sim), 1);
    assert_eq!(r.worker.snapshot().expired, 0);
}

#[tokio::test]
async fn while_the_circuit_is_open_commands_are_parked_then_expire_as_unavailable() {
    let r = rig().await;
    // Open the circuit: one failure is enough in this rig.
    r.sim
        .set_faults(
            Downstream::Memberson,
            vec![FaultRule::outage(Duration::from_secs(60))],
        )
        .unwrap();
    let probe = deliver(
        &r.ports,
        serde_json::to_string(&redeem(Duration::from_secs(15))).unwrap(),
    )
    .await;
    r.worker.handle(&probe).await.unwrap();
    let probe_replies = replies(&r.ports).await;
    assert_eq!(probe_replies.len(), 1, "{probe_replies:?}");
    assert!(r.breaker.blocked_for().is_some(), "the circuit is open");
    let calls = redeem_calls(&r.sim);

    let mut cmd = redeem(Duration::from_millis(1_500));
    cmd.attempt = 2;
    cmd.command_id = como_schemas::CommandId::new(&cmd.idempotency_key, 2);
    let d = deliver(&r.ports, serde_json::to_string(&cmd).unwrap()).await;
    r.worker.handle(&d).await.unwrap();
    let got = replies(&r.ports).await;
    assert_eq!(got.len(), 1);
    assert!(
        matches!(got[0].outcome, ReplyOutcome::Deferred { .. }),
        "{:?}",
        got[0].outcome
    );
    // Parked: back on the queue, marked, and handled again (parked again) without a second
    // notice, until its deadline passes: then it expires as "downstream unavailable".
    let mut rounds = 0;
    let got = loop {
        let again = receive(&r.ports, QueueName::Commands(como_schemas::Worker::Crm)).await;
        assert!(again.attributes.contains_key("como-parked"));
        r.worker.handle(&again).await.unwrap();
        rounds += 1;
        let got = replies(&r.ports).await;
        if !got.is_empty() {
            break got;
        }
    };
    assert!(rounds >= 2, "parked more than once ({rounds} rounds)");
    assert_eq!(got.len(), 1, "no second deferred notice: {got:?}");
    assert!(
        matches!(
            &got[0].outcome,
            ReplyOutcome::RetryableFailure {
                downstream_unavailable: true,
                ..
            }
        ),
        "{:?}",
        got[0].outcome
    );
    assert_eq!(
        redeem_calls(&r.sim),
        calls,
        "nothing was sent while the circuit was open"
    );
    assert!(r.worker.stats().snapshot().parked >= 2);
}

#[tokio::test]
async fn an_unreadable_command_is_dead_lettered_with_the_reason() {
    let r = rig().await;
    let d = deliver(
        &r.ports,
        r#"{"schema_version": 1, "command_id": 7}"#.to_owned(),
    )
    .await;
    r.worker.handle(&d).await.unwrap();
    let dead = r
        .ports
        .queue
        .dead_letters(QueueName::Commands(como_schemas::Worker::Crm), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("unreadable command"),
        "{}",
        dead[0].reason
    );
    assert!(replies(&r.ports).await.is_empty());
}
