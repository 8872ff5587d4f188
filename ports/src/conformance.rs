//! The port conformance suites: one group of async checks per port, written once against the
//! traits and run against every backend, so that the embedded default and AWS behave the same
//! (visibility timeouts, redelivery, dead-lettering, conditional writes, effects).
//!
//! A backend's test crate implements [`TestEnv`] (a fresh, empty backend per test, and a way to
//! let time pass) and instantiates every check with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! async fn env() -> MyEnv { MyEnv::fresh().await }
//! como_ports::conformance_tests!(crate::env);
//! ```
//!
//! Time: visibility timeouts and delays are whole seconds (SQS counts in seconds). Checks move
//! time only through [`TestEnv::pass`]: a backend on a `ManualClock` advances it at once, one on
//! real time sleeps. Only the long-poll checks use real time, because waiting is their subject.
//!
//! Checks assume that SQS may return fewer messages than asked for, but never more, and that a
//! receive may need repeating to see every visible message.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use como_engine::state::{Activity, Phase, Terminal};
use como_engine::{Decision, HistoryEntry, Input, SagaState, SagaStatus, StatusKind, como};
use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{
    CommandKind, MemberNo, SagaEvent, SagaId, StepName, Timestamp, VenueId, Worker, examples,
};

use crate::queue::{Delivery, OutgoingMessage, QueueName};
use crate::store::{CreateOutcome, Effects, SagaQuery, UpdateOutcome};
use crate::{Backend, PortError};

/// One backend under test, fresh and empty for each check.
pub trait TestEnv: Send + Sync {
    fn backend(&self) -> &Backend;

    /// Let `d` pass on the backend's clock (advance a manual clock, or sleep).
    fn pass(&self, d: Duration) -> impl Future<Output = ()> + Send;

    /// How many receives a message gets before the next one dead-letters it (the same for
    /// every queue in the test set-up).
    fn max_receives(&self) -> u32;
}

/// Instantiates every conformance check as a `#[tokio::test]` in the calling test crate, in
/// one module per port. `$env` is a crate-absolute path to an `async fn() -> impl TestEnv`.
#[macro_export]
macro_rules! conformance_tests {
    ($env:path) => {
        $crate::conformance_tests!(@port $env, queue, [
            delivers_what_was_sent,
            redelivers_after_the_visibility_timeout_and_not_before,
            delete_needs_the_current_receipt,
            change_visibility_extends_and_zero_releases,
            dead_letters_after_max_receives_and_redrives,
            dead_letter_moves_a_message_now,
            rewrite_changes_only_the_bodies_of_the_dead_letters_chosen,
            depth_counts_each_state,
            delayed_delivery,
            receive_returns_at_most_max,
            long_poll_returns_when_a_message_arrives,
            long_poll_returns_empty_after_its_wait,
        ]);
        $crate::conformance_tests!(@port $env, store, [
            create_only_if_absent,
            update_is_conditional_and_a_conflict_writes_nothing,
            two_writers_on_one_version_exactly_one_wins,
            effects_commit_with_the_write,
            history_is_kept_per_saga_in_order,
            query_by_status_step_and_age_pages_every_row_once,
            query_by_member_venue_start_downstream_and_retrying,
            due_lists_live_timers_earliest_first,
            counts_by_status,
            step_counts_follow_each_transition,
            the_read_port_lists_the_stuck_longest_unchanged_first,
            unknown_saga_has_nothing,
        ]);
        $crate::conformance_tests!(@port $env, records, [
            first_record_wins_and_sends_and_acks,
            without_a_record_only_sends_and_acks,
            swap_from_nothing_succeeds_once,
            swap_needs_the_current_value,
            two_swaps_from_one_value_exactly_one_wins,
        ]);
        $crate::conformance_tests!(@port $env, secrets, [
            pending_then_promote,
        ]);
        $crate::conformance_tests!(@port $env, bus, [
            publish_drops_duplicates_and_keeps_order,
        ]);
        $crate::conformance_tests!(@port $env, audit, [
            an_entry_is_replaced_by_id_and_keeps_its_place,
            lists_newest_first_by_actor_action_and_period_in_pages,
        ]);
    };
    (@port $env:path, $port:ident, [$($name:ident),* $(,)?]) => {
        mod $port {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let env = $env().await;
                    $crate::conformance::$port::$name(&env).await;
                }
            )*
        }
    };
}

const NO_WAIT: Duration = Duration::ZERO;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage::new(body.to_owned())
}

async fn receive(env: &impl TestEnv, queue: QueueName, max: usize, vis: u64) -> Vec<Delivery> {
    env.backend()
        .queue
        .receive(queue, max, secs(vis), NO_WAIT)
        .await
        .expect("receive")
}

/// Receives until a receive comes back empty, up to `max` messages, without deleting.
async fn receive_all(env: &impl TestEnv, queue: QueueName, vis: u64) -> Vec<Delivery> {
    let mut all = Vec::new();
    for _ in 0..50 {
        let got = receive(env, queue, 10, vis).await;
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    all
}

async fn receive_one(env: &impl TestEnv, queue: QueueName, vis: u64) -> Delivery {
    let mut got = receive(env, queue, 1, vis).await;
    assert_eq!(got.len(), 1, "expected one message on {queue}, got {got:?}");
    got.remove(0)
}

async fn send_one(env: &impl TestEnv, queue: QueueName, body: &str) {
    env.backend()
        .queue
        .send(queue, vec![message(body)])
        .await
        .expect("send");
}

fn now(env: &impl TestEnv) -> Timestamp {
    env.backend().clock.now()
}

/// A new Como saga for request `conformance-<n>`, as the engine starts it at `at`.
fn started(n: u32, at: Timestamp) -> Decision {
    let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).expect("a date");
    let request = examples::booking_request(&format!("conformance-{n}"), date);
    como_engine::transition(&como::current(), None, &Input::Start { request }, at)
        .expect("the engine starts a saga")
}

/// `state` reshaped to `status` at step `step` (forward, compensating or stopped there), as
/// last updated at `updated_at` with its timer at `wake_at`: the store indexes these.
fn shaped(
    mut state: SagaState,
    status: StatusKind,
    step: usize,
    updated_at: Timestamp,
    wake_at: Option<Timestamp>,
) -> SagaState {
    let name = state.steps[step].name.clone();
    let awaiting = Activity::Awaiting {
        kind: CommandKind::Action,
        attempt: 1,
        timeout_at: updated_at.plus_ms(15_000),
        waiting_for_downstream: false,
    };
    let (phase, st) = match status {
        StatusKind::Running | StatusKind::WaitingForDownstream | StatusKind::Reconciling => (
            Phase::Forward {
                step,
                activity: awaiting,
            },
            SagaStatus::Running {
                step: name,
                attempt: 1,
                retry_at: None,
            },
        ),
        StatusKind::Compensating => (
            Phase::Compensating {
                step,
                activity: awaiting,
                end_as: CompensatedAs::Compensated,
            },
            SagaStatus::Compensating {
                step: name,
                attempt: 1,
            },
        ),
        StatusKind::NeedsOperator => (
            Phase::NeedsOperator {
                reason: NeedsOperatorReason::UnknownOutcome,
                step,
                detail: "conformance".into(),
                compensating: None,
            },
            SagaStatus::NeedsOperator {
                reason: NeedsOperatorReason::UnknownOutcome,
                step: name,
                detail: "conformance".into(),
            },
        ),
        StatusKind::Confirmed => (
            Phase::Done {
                outcome: Terminal::Confirmed,
            },
            SagaStatus::Confirmed,
        ),
        StatusKind::Compensated => (
            Phase::Done {
                outcome: Terminal::Compensated,
            },
            SagaStatus::Compensated,
        ),
        StatusKind::Cancelled => (
            Phase::Done {
                outcome: Terminal::Cancelled,
            },
            SagaStatus::Cancelled,
        ),
    };
    state.phase = phase;
    state.status = st;
    state.updated_at = updated_at;
    state.wake_at = wake_at;
    state
}

fn history_entry(state: &SagaState, transition: u64, detail: &str) -> HistoryEntry {
    HistoryEntry {
        transition,
        at: state.updated_at,
        kind: como_engine::HistoryKind::ReplyReceived,
        step: Some(state.steps[0].name.clone()),
        command: Some(CommandKind::Action),
        attempt: Some(1),
        status: state.status.kind(),
        detail: Some(detail.to_owned()),
        error: None,
        operator: None,
        reason: None,
    }
}

fn event(state: &SagaState, seq: u32) -> SagaEvent {
    SagaEvent {
        schema_version: como_schemas::SchemaVersion::CURRENT,
        event_id: format!("{}:{seq}", state.saga_id),
        saga_id: state.saga_id,
        request_id: state.request.request_id.clone(),
        at: state.updated_at,
        traceparent: None,
        body: como_schemas::events::SagaEventBody::StepCompleted {
            step: state.steps[0].name.clone(),
            attempt: seq,
        },
    }
}

async fn create(env: &impl TestEnv, state: &SagaState) {
    let out = env
        .backend()
        .store
        .create(state, Effects::default())
        .await
        .expect("create");
    assert_eq!(out, CreateOutcome::Created { version: 1 });
}

async fn event_ids(env: &impl TestEnv) -> Vec<String> {
    env.backend()
        .bus
        .recent(1_000)
        .await
        .expect("recent events")
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

fn step(name: &str) -> StepName {
    StepName::parse(name).expect("a step name")
}

/// The queue port.
pub mod queue {
    use super::*;

    /// Body and attributes come back as sent, with a first receive count, on the queue they
    /// were sent to only.
    pub async fn delivers_what_was_sent(env: &impl TestEnv) {
        let q = env.backend();
        let mut m = message(r#"{"n":1}"#);
        m.attributes
            .insert("traceparent".into(), "00-abc-def-01".into());
        let before = now(env);
        q.queue
            .send(QueueName::Requests, vec![m.clone()])
            .await
            .expect("send");
        assert!(
            receive(env, QueueName::Replies, 10, 30).await.is_empty(),
            "a message shows only on its own queue"
        );
        let d = receive_one(env, QueueName::Requests, 30).await;
        assert_eq!(d.body, m.body);
        assert_eq!(d.attributes, m.attributes);
        assert_eq!(d.receive_count, 1);
        assert!(d.sent_at >= Timestamp::from_millis(before.as_millis() - 1_000));
        assert!(
            receive(env, QueueName::Requests, 10, 30).await.is_empty(),
            "a received message is hidden"
        );
    }

    pub async fn redelivers_after_the_visibility_timeout_and_not_before(env: &impl TestEnv) {
        send_one(env, QueueName::Requests, "again").await;
        let first = receive_one(env, QueueName::Requests, 5).await;
        env.pass(secs(3)).await;
        assert!(
            receive(env, QueueName::Requests, 10, 5).await.is_empty(),
            "not visible before its visibility timeout"
        );
        env.pass(secs(3)).await;
        let second = receive_one(env, QueueName::Requests, 5).await;
        assert_eq!(second.message_id, first.message_id);
        assert_eq!(second.body, "again");
        assert_eq!(second.receive_count, 2);
        assert_ne!(
            second.receipt, first.receipt,
            "each receive has its own receipt"
        );
    }

    pub async fn delete_needs_the_current_receipt(env: &impl TestEnv) {
        let q = &env.backend().queue;
        send_one(env, QueueName::Replies, "kept").await;
        let first = receive_one(env, QueueName::Replies, 2).await;
        env.pass(secs(3)).await;
        let second = receive_one(env, QueueName::Replies, 2).await;

        q.delete(QueueName::Replies, vec![first.receipt.clone()])
            .await
            .expect("a stale receipt is not an error");
        env.pass(secs(3)).await;
        let third = receive_one(env, QueueName::Replies, 2).await;
        assert_eq!(
            third.message_id, second.message_id,
            "a stale receipt deletes nothing"
        );
        assert_eq!(third.receive_count, 3);

        q.delete(QueueName::Replies, vec![third.receipt])
            .await
            .expect("delete");
        env.pass(secs(3)).await;
        assert!(
            receive(env, QueueName::Replies, 10, 2).await.is_empty(),
            "the current receipt deletes"
        );
    }

    pub async fn change_visibility_extends_and_zero_releases(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let crm = QueueName::Commands(Worker::Crm);
        send_one(env, crm, "lease").await;
        let d = receive_one(env, crm, 2).await;
        q.change_visibility(crm, &d.receipt, secs(20))
            .await
            .expect("extend the lease");
        env.pass(secs(5)).await;
        assert!(
            receive(env, crm, 10, 2).await.is_empty(),
            "the extended lease still hides it"
        );
        q.change_visibility(crm, &d.receipt, Duration::ZERO)
            .await
            .expect("release");
        let again = receive_one(env, crm, 2).await;
        assert_eq!(
            again.message_id, d.message_id,
            "zero makes it visible at once"
        );

        let stale = q.change_visibility(crm, &d.receipt, secs(20)).await;
        assert!(
            matches!(stale, Err(PortError::Invalid(_))),
            "a receipt that is not current cannot change visibility: {stale:?}"
        );
        env.pass(secs(3)).await;
        assert_eq!(
            receive_one(env, crm, 2).await.message_id,
            d.message_id,
            "the refused change did not hide it"
        );
    }

    pub async fn dead_letters_after_max_receives_and_redrives(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let sr = QueueName::Commands(Worker::Sevenrooms);
        let max = env.max_receives();
        send_one(env, sr, "poison").await;
        let mut id = String::new();
        for n in 1..=max {
            let d = receive_one(env, sr, 1).await;
            assert_eq!(d.receive_count, n);
            id = d.message_id;
            env.pass(secs(2)).await;
        }
        assert!(
            receive_all(env, sr, 1).await.is_empty(),
            "received {max} times: the next receive moves it aside"
        );
        let dead = q.dead_letters(sr, 10).await.expect("dead letters");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].message_id, id);
        assert_eq!(dead[0].queue, sr);
        assert_eq!(dead[0].body, "poison");
        assert_eq!(dead[0].receive_count, max);
        assert!(
            dead[0].reason.contains(&max.to_string()),
            "the reason says how often: {:?}",
            dead[0].reason
        );
        assert!(
            q.dead_letters(QueueName::Requests, 10)
                .await
                .expect("dead letters")
                .is_empty()
        );

        assert_eq!(q.redrive(sr, None).await.expect("redrive"), 1);
        assert!(
            q.dead_letters(sr, 10)
                .await
                .expect("dead letters")
                .is_empty()
        );
        let back = receive_one(env, sr, 30).await;
        assert_eq!(back.body, "poison");
        assert_eq!(
            back.receive_count, 1,
            "a redriven message starts counting again"
        );
    }

    /// How many messages a queue holds: waiting, received (not visible), dead-lettered.
    pub async fn depth_counts_each_state(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let depth = |want: (u64, u64, u64)| async move {
            let d = q.depth(QueueName::Replies).await.expect("depth");
            assert_eq!((d.visible, d.not_visible, d.dead_letters), want, "{d:?}");
            d
        };
        depth((0, 0, 0)).await;
        for body in ["a", "b", "c"] {
            send_one(env, QueueName::Replies, body).await;
        }
        let d = depth((3, 0, 0)).await;
        if let Some(oldest) = d.oldest_sent_at {
            assert!(oldest <= now(env), "{d:?}");
        }
        let got = receive_one(env, QueueName::Replies, 30).await;
        depth((2, 1, 0)).await;
        q.dead_letter(QueueName::Replies, &got.receipt, "unreadable")
            .await
            .expect("dead letter");
        depth((2, 0, 1)).await;
        // Another queue's messages are not counted.
        assert_eq!(
            q.depth(QueueName::Requests).await.expect("depth"),
            crate::queue::QueueDepth::default()
        );
    }

    pub async fn dead_letter_moves_a_message_now(env: &impl TestEnv) {
        let q = &env.backend().queue;
        send_one(env, QueueName::Requests, "malformed").await;
        send_one(env, QueueName::Requests, "fine").await;
        let got = receive_all(env, QueueName::Requests, 30).await;
        assert_eq!(got.len(), 2);
        let bad = got.iter().find(|d| d.body == "malformed").expect("sent");
        q.dead_letter(
            QueueName::Requests,
            &bad.receipt,
            "party_size: must be 1..50",
        )
        .await
        .expect("dead letter");
        let dead = q
            .dead_letters(QueueName::Requests, 10)
            .await
            .expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, bad.message_id);
        assert_eq!(dead[0].reason, "party_size: must be 1..50");
        assert_eq!(dead[0].receive_count, 1);

        let again = q
            .dead_letter(QueueName::Requests, &bad.receipt, "twice")
            .await;
        assert!(
            matches!(again, Err(PortError::Invalid(_))),
            "the receipt went with the message: {again:?}"
        );

        assert_eq!(
            q.redrive(QueueName::Requests, Some(vec!["no-such-message".into()]))
                .await
                .expect("redrive"),
            0
        );
        assert_eq!(
            q.redrive(QueueName::Requests, Some(vec![bad.message_id.clone()]))
                .await
                .expect("redrive"),
            1
        );
        let back = receive_one(env, QueueName::Requests, 30).await;
        assert_eq!(back.body, "malformed");
    }

    /// A dead letter's body is changed in place (for erasing personal data): the others are
    /// left as they are, and each keeps its id, reason, receive count and when it was set
    /// aside, also one the queue moved by itself after its last receive; a redrive sends the
    /// new body.
    pub async fn rewrite_changes_only_the_bodies_of_the_dead_letters_chosen(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let sr = QueueName::Commands(Worker::Sevenrooms);
        send_one(env, sr, "moved by the queue").await;
        for _ in 0..env.max_receives() {
            receive_one(env, sr, 1).await;
            env.pass(secs(2)).await;
        }
        assert!(receive_all(env, sr, 1).await.is_empty());
        for body in ["keep", "change"] {
            send_one(env, sr, body).await;
        }
        for d in receive_all(env, sr, 30).await {
            q.dead_letter(sr, &d.receipt, &format!("refused {}", d.body))
                .await
                .expect("dead letter");
        }
        let before = q.dead_letters(sr, 10).await.expect("dead letters");
        assert_eq!(before.len(), 3, "{before:?}");

        let changed = q
            .rewrite_dead_letters(sr, &|d| match d.body.as_str() {
                "change" => Some("changed".to_owned()),
                "moved by the queue" => Some("moved, changed".to_owned()),
                // The same body is no change.
                "keep" => Some("keep".to_owned()),
                _ => None,
            })
            .await
            .expect("rewrite");
        assert_eq!(changed, 2);
        let after = q.dead_letters(sr, 10).await.expect("dead letters");
        assert_eq!(after.len(), 3, "nothing doubled or lost: {after:?}");
        for b in &before {
            let a = after
                .iter()
                .find(|a| a.message_id == b.message_id)
                .unwrap_or_else(|| panic!("{b:?} kept its id: {after:?}"));
            let want = match b.body.as_str() {
                "change" => "changed",
                "moved by the queue" => "moved, changed",
                other => other,
            };
            assert_eq!(a.body, want);
            assert_eq!(
                (&a.reason, a.receive_count, a.dead_lettered_at, a.queue),
                (&b.reason, b.receive_count, b.dead_lettered_at, b.queue),
                "only the body changes"
            );
        }
        assert_eq!(
            q.rewrite_dead_letters(sr, &|_| None)
                .await
                .expect("rewrite"),
            0
        );
        let id = after
            .iter()
            .find(|a| a.body == "changed")
            .map(|a| a.message_id.clone())
            .expect("changed");
        assert_eq!(q.redrive(sr, Some(vec![id])).await.expect("redrive"), 1);
        assert_eq!(receive_one(env, sr, 30).await.body, "changed");
    }

    pub async fn delayed_delivery(env: &impl TestEnv) {
        let q = &env.backend().queue;
        q.send(
            QueueName::Replies,
            vec![message("later").delayed(secs(10)), message("now")],
        )
        .await
        .expect("send");
        let first = receive_all(env, QueueName::Replies, 60).await;
        assert_eq!(
            first.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
            ["now"]
        );
        env.pass(secs(5)).await;
        assert!(receive(env, QueueName::Replies, 10, 60).await.is_empty());
        env.pass(secs(6)).await;
        assert_eq!(receive_one(env, QueueName::Replies, 60).await.body, "later");
    }

    pub async fn receive_returns_at_most_max(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let bodies: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
        q.send(
            QueueName::Requests,
            bodies.iter().map(|b| message(b)).collect(),
        )
        .await
        .expect("send");
        let mut seen = Vec::new();
        for _ in 0..20 {
            let got = receive(env, QueueName::Requests, 3, 60).await;
            assert!(got.len() <= 3, "asked for 3, got {}", got.len());
            seen.extend(got.into_iter().map(|d| d.body));
            if seen.len() >= bodies.len() {
                break;
            }
        }
        seen.sort();
        assert_eq!(seen, bodies, "every message once");
        assert!(receive(env, QueueName::Requests, 3, 60).await.is_empty());
    }

    /// Real time: a receive waiting in a long poll returns soon after a message is sent, well
    /// before its wait is over.
    pub async fn long_poll_returns_when_a_message_arrives(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let wait = secs(20);
        let started = std::time::Instant::now();
        let (got, ()) = tokio::join!(q.receive(QueueName::Replies, 10, secs(30), wait), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            send_one(env, QueueName::Replies, "wake").await;
        });
        let got = got.expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "wake");
        assert!(
            started.elapsed() < wait / 2,
            "the long poll waited for its whole wait ({:?}) instead of returning on the send",
            started.elapsed()
        );
    }

    /// Real time: with nothing to receive, a long poll returns empty after its wait.
    pub async fn long_poll_returns_empty_after_its_wait(env: &impl TestEnv) {
        let q = &env.backend().queue;
        let started = std::time::Instant::now();
        let got = q
            .receive(QueueName::Requests, 10, secs(30), secs(1))
            .await
            .expect("receive");
        assert!(got.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "returned after {:?}, before its wait",
            started.elapsed()
        );
    }
}

/// The saga store.
pub mod store {
    use super::*;

    pub async fn create_only_if_absent(env: &impl TestEnv) {
        let s = env.backend();
        let d = started(1, now(env));
        let crm = QueueName::Commands(Worker::Crm);
        let out = s
            .store
            .create(&d.state, Effects::default())
            .await
            .expect("create");
        assert_eq!(out, CreateOutcome::Created { version: 1 });

        let mut other = d.state.clone();
        other.updated_at = other.updated_at.plus_ms(1_000);
        let effects = Effects {
            sends: vec![(crm, message("from the loser"))],
            events: vec![event(&other, 7)],
            history: vec![history_entry(&other, 9, "loser")],
            ack: None,
            answers: None,
        };
        let again = s.store.create(&other, effects).await.expect("create");
        assert_eq!(again, CreateOutcome::Exists);

        let stored = s
            .store
            .get(d.state.saga_id)
            .await
            .expect("get")
            .expect("saga");
        assert_eq!(stored.version, 1);
        assert_eq!(stored.value, d.state, "the first write stays");
        assert!(
            receive(env, crm, 10, 30).await.is_empty(),
            "no effects for Exists"
        );
        assert!(
            s.store
                .history(d.state.saga_id)
                .await
                .expect("history")
                .is_empty()
        );
        assert!(event_ids(env).await.is_empty());
    }

    pub async fn update_is_conditional_and_a_conflict_writes_nothing(env: &impl TestEnv) {
        let s = env.backend();
        let d = started(2, now(env));
        let id = d.state.saga_id;
        create(env, &d.state).await;

        send_one(env, QueueName::Replies, "the reply").await;
        let input = receive_one(env, QueueName::Replies, 5).await;
        let mut next = d.state.clone();
        next.updated_at = next.updated_at.plus_ms(500);
        next.transitions += 1;
        let effects = || Effects {
            sends: vec![(
                QueueName::Commands(Worker::Sevenrooms),
                message("next step"),
            )],
            events: vec![event(&next, 1)],
            history: vec![history_entry(&next, next.transitions, "reply")],
            ack: Some((QueueName::Replies, input.receipt.clone())),
            answers: None,
        };

        for wrong in [0, 2, 7] {
            let out = s
                .store
                .update(&next, wrong, effects())
                .await
                .expect("update");
            assert_eq!(out, UpdateOutcome::Conflict, "expected version {wrong}");
        }
        let stored = s.store.get(id).await.expect("get").expect("saga");
        assert_eq!((stored.version, &stored.value), (1, &d.state));
        assert!(s.store.history(id).await.expect("history").is_empty());
        assert!(event_ids(env).await.is_empty());
        assert!(
            receive(env, QueueName::Commands(Worker::Sevenrooms), 10, 30)
                .await
                .is_empty()
        );
        env.pass(secs(6)).await;
        let input = receive_one(env, QueueName::Replies, 5).await;
        assert_eq!(
            input.body, "the reply",
            "a conflict does not acknowledge the input"
        );

        let effects = Effects {
            ack: Some((QueueName::Replies, input.receipt.clone())),
            ..effects()
        };
        let out = s.store.update(&next, 1, effects).await.expect("update");
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
        let stored = s.store.get(id).await.expect("get").expect("saga");
        assert_eq!((stored.version, &stored.value), (2, &next));
        let out = s
            .store
            .update(&next, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Conflict, "version 1 is gone");
    }

    pub async fn two_writers_on_one_version_exactly_one_wins(env: &impl TestEnv) {
        let s = env.backend();
        let d = started(3, now(env));
        let id = d.state.saga_id;
        create(env, &d.state).await;
        for round in 0..5u64 {
            let stored = s.store.get(id).await.expect("get").expect("saga");
            let v = stored.version;
            let mut a = stored.value.clone();
            a.operator_actions.push(format!("a{round}"));
            let mut b = stored.value.clone();
            b.operator_actions.push(format!("b{round}"));
            let (ra, rb) = tokio::join!(
                s.store.update(
                    &a,
                    v,
                    Effects {
                        history: vec![history_entry(&a, v + 1, "a")],
                        ..Effects::default()
                    }
                ),
                s.store.update(
                    &b,
                    v,
                    Effects {
                        history: vec![history_entry(&b, v + 1, "b")],
                        ..Effects::default()
                    }
                ),
            );
            let (ra, rb) = (ra.expect("update a"), rb.expect("update b"));
            let winner = match (ra, rb) {
                (UpdateOutcome::Updated { version }, UpdateOutcome::Conflict) => {
                    assert_eq!(version, v + 1);
                    a
                }
                (UpdateOutcome::Conflict, UpdateOutcome::Updated { version }) => {
                    assert_eq!(version, v + 1);
                    b
                }
                other => panic!("exactly one writer must win, got {other:?}"),
            };
            let stored = s.store.get(id).await.expect("get").expect("saga");
            assert_eq!((stored.version, stored.value), (v + 1, winner));
        }
        assert_eq!(
            s.store.history(id).await.expect("history").len(),
            5,
            "only the winners' history"
        );
    }

    pub async fn effects_commit_with_the_write(env: &impl TestEnv) {
        let s = env.backend();
        let crm = QueueName::Commands(Worker::Crm);
        send_one(env, QueueName::Requests, "booking request").await;
        let request = receive_one(env, QueueName::Requests, 10).await;

        let d = started(4, now(env));
        let id = d.state.saga_id;
        assert!(!d.history.is_empty() && !d.events.is_empty());
        let out = s
            .store
            .create(
                &d.state,
                Effects {
                    sends: vec![(crm, message("check credits"))],
                    events: d.events.clone(),
                    history: d.history.clone(),
                    ack: Some((QueueName::Requests, request.receipt)),
                    answers: None,
                },
            )
            .await
            .expect("create");
        assert_eq!(out, CreateOutcome::Created { version: 1 });
        let command = receive_one(env, crm, 10).await;
        assert_eq!(command.body, "check credits");
        assert_eq!(s.store.history(id).await.expect("history"), d.history);
        let ids = event_ids(env).await;
        for e in &d.events {
            assert!(ids.contains(&e.event_id), "{} published", e.event_id);
        }

        let mut next = d.state.clone();
        next.transitions += 1;
        let more = vec![
            history_entry(&next, next.transitions, "second"),
            history_entry(&next, next.transitions, "third"),
        ];
        let out = s
            .store
            .update(
                &next,
                1,
                Effects {
                    sends: vec![
                        (
                            QueueName::Commands(Worker::Sevenrooms),
                            message("hold slot"),
                        ),
                        (QueueName::Replies, message("note")),
                    ],
                    events: vec![event(&next, 9)],
                    history: more.clone(),
                    ack: Some((crm, command.receipt)),
                    answers: None,
                },
            )
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
        let all: Vec<HistoryEntry> = d.history.iter().chain(&more).cloned().collect();
        assert_eq!(
            s.store.history(id).await.expect("history"),
            all,
            "appended in order"
        );
        assert_eq!(
            receive_one(env, QueueName::Commands(Worker::Sevenrooms), 10)
                .await
                .body,
            "hold slot"
        );
        assert_eq!(receive_one(env, QueueName::Replies, 10).await.body, "note");
        assert!(event_ids(env).await.contains(&event(&next, 9).event_id));

        env.pass(secs(11)).await;
        assert!(
            receive(env, QueueName::Requests, 10, 10).await.is_empty(),
            "the request was acknowledged by the create"
        );
        assert!(
            receive(env, crm, 10, 10).await.is_empty(),
            "the command was acknowledged by the update"
        );
    }

    /// Interleaved writes to two sagas: each saga's history has its own entries only, in the
    /// order they were written; a write without history keeps what there is.
    pub async fn history_is_kept_per_saga_in_order(env: &impl TestEnv) {
        let s = env.backend();
        let mut sagas = [started(5, now(env)).state, started(6, now(env)).state];
        let mut kept: [Vec<HistoryEntry>; 2] = [Vec::new(), Vec::new()];
        let mut versions = [1u64; 2];
        for (state, kept) in sagas.iter().zip(kept.iter_mut()) {
            let first = vec![history_entry(state, 1, "first")];
            let effects = Effects {
                history: first.clone(),
                ..Effects::default()
            };
            let out = s.store.create(state, effects).await.expect("create");
            assert_eq!(out, CreateOutcome::Created { version: 1 });
            kept.extend(first);
        }
        for round in 1..=4usize {
            for i in 0..2 {
                let state = &mut sagas[i];
                state.transitions += 1;
                let entries: Vec<HistoryEntry> = (0..round)
                    .map(|k| history_entry(state, state.transitions, &format!("{i}.{round}.{k}")))
                    .collect();
                // Every other write carries no history.
                let history = if round % 2 == 0 && i == 0 {
                    Vec::new()
                } else {
                    entries
                };
                let effects = Effects {
                    history: history.clone(),
                    ..Effects::default()
                };
                let out = s
                    .store
                    .update(state, versions[i], effects)
                    .await
                    .expect("update");
                versions[i] += 1;
                assert_eq!(
                    out,
                    UpdateOutcome::Updated {
                        version: versions[i]
                    }
                );
                kept[i].extend(history);
            }
        }
        for (state, kept) in sagas.iter().zip(&kept) {
            assert_eq!(
                &s.store.history(state.saga_id).await.expect("history"),
                kept
            );
        }
    }

    pub async fn query_by_status_step_and_age_pages_every_row_once(env: &impl TestEnv) {
        let s = env.backend();
        let base = now(env);
        let statuses = [
            StatusKind::Running,
            StatusKind::Compensating,
            StatusKind::NeedsOperator,
            StatusKind::Confirmed,
            StatusKind::Compensated,
        ];
        let mut all: Vec<SagaState> = Vec::new();
        for i in 0..23u32 {
            let status = statuses[i as usize % statuses.len()];
            // Pairs share a start: the order must break ties the same on every page. The
            // updates come in another order than the starts.
            let began = base.plus_ms(u64::from(i / 2) * 1_000);
            let updated = began.plus_ms(u64::from((i * 7) % 5) * 900);
            let st = shaped(
                started(100 + i, began).state,
                status,
                i as usize % 4,
                updated,
                None,
            );
            create(env, &st).await;
            all.push(st);
        }

        let page_all = |q: SagaQuery| async move {
            let mut seen = Vec::new();
            let mut q = SagaQuery { limit: 4, ..q };
            for _ in 0..50 {
                let page = s.store.query(&q).await.expect("query");
                assert!(page.items.len() <= 4);
                seen.extend(page.items);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => return seen,
                }
            }
            panic!("paging did not end");
        };
        let check = |name: &str, got: Vec<crate::SagaSummary>, want: Vec<&SagaState>| {
            let ids: Vec<SagaId> = got.iter().map(|x| x.saga_id).collect();
            let unique: BTreeSet<SagaId> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "{name}: a saga listed twice");
            let expect: BTreeSet<SagaId> = want.iter().map(|x| x.saga_id).collect();
            assert_eq!(unique, expect, "{name}: the wrong sagas");
            assert!(
                got.windows(2).all(|w| w[0].started_at >= w[1].started_at),
                "{name}: most recently started first"
            );
        };

        check(
            "all",
            page_all(SagaQuery::default()).await,
            all.iter().collect(),
        );
        let running = page_all(SagaQuery {
            status: Some(StatusKind::Running),
            ..SagaQuery::default()
        })
        .await;
        assert!(
            running
                .iter()
                .all(|x| x.status.kind() == StatusKind::Running)
        );
        check(
            "running",
            running,
            all.iter()
                .filter(|x| x.status.kind() == StatusKind::Running)
                .collect(),
        );
        let hold = step("hold_slot");
        check(
            "at hold_slot",
            page_all(SagaQuery {
                step: Some(hold.clone()),
                ..SagaQuery::default()
            })
            .await,
            all.iter()
                .filter(|x| crate::store::current_step(x).as_ref() == Some(&hold))
                .collect(),
        );
        let cut = base.plus_ms(5_000);
        check(
            "older than",
            page_all(SagaQuery {
                updated_before: Some(cut),
                ..SagaQuery::default()
            })
            .await,
            all.iter().filter(|x| x.updated_at < cut).collect(),
        );
        check(
            "needs operator, older than",
            page_all(SagaQuery {
                status: Some(StatusKind::NeedsOperator),
                updated_before: Some(base.plus_ms(8_000)),
                ..SagaQuery::default()
            })
            .await,
            all.iter()
                .filter(|x| {
                    x.status.kind() == StatusKind::NeedsOperator
                        && x.updated_at < base.plus_ms(8_000)
                })
                .collect(),
        );

        // A summary carries what a list shows.
        let one = s
            .store
            .query(&SagaQuery {
                limit: 1,
                ..SagaQuery::default()
            })
            .await
            .expect("query");
        let newest = all.iter().max_by_key(|x| x.started_at).expect("sagas");
        assert_eq!(one.items.len(), 1);
        assert_eq!(one.items[0].started_at, newest.started_at);
        assert_eq!(one.items[0].version, 1);
        assert!(one.next_cursor.is_some());
    }

    pub async fn query_by_member_venue_start_downstream_and_retrying(env: &impl TestEnv) {
        let s = env.backend();
        let base = now(env);
        let member_a = MemberNo::parse("100200300").expect("a member number");
        let venue_b = VenueId::parse("venue-other").expect("a venue id");
        let mut all: Vec<SagaState> = Vec::new();
        for i in 0..12u32 {
            let began = base.plus_ms(u64::from(i) * 1_000);
            let status = match i % 4 {
                0 => StatusKind::Running,
                1 => StatusKind::Compensating,
                2 => StatusKind::Confirmed,
                _ => StatusKind::NeedsOperator,
            };
            // Steps 1 (hold_slot, SevenRooms) and 2 (redeem_credits, Memberson) by turns.
            let mut st = shaped(
                started(300 + i, began).state,
                status,
                1 + (i as usize / 4) % 2,
                began,
                None,
            );
            if i % 3 == 0 {
                st.request.member_no = member_a.clone();
            }
            if i % 2 == 1 {
                st.request.venue_id = venue_b.clone();
            }
            // Sagas 4 and 5 are on their third attempt after an error.
            if i == 4 || i == 5 {
                let at = match &mut st.phase {
                    Phase::Forward { step, activity }
                    | Phase::Compensating { step, activity, .. } => {
                        if let Activity::Awaiting { attempt, .. } = activity {
                            *attempt = 3;
                        }
                        *step
                    }
                    _ => unreachable!("4 and 5 are live"),
                };
                st.steps[at].action.sent = 3;
                st.steps[at].compensation.sent = 3;
                st.steps[at].last_error = Some("HTTP 503 from the downstream".into());
            }
            create(env, &st).await;
            all.push(st);
        }
        let ids = |q: SagaQuery| async move {
            let mut seen = Vec::new();
            let mut q = SagaQuery { limit: 2, ..q };
            for _ in 0..50 {
                let page = s.store.query(&q).await.expect("query");
                seen.extend(page.items);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => return seen,
                }
            }
            panic!("paging did not end");
        };
        let numbers = |got: &[crate::SagaSummary]| -> Vec<u32> {
            got.iter()
                .map(|x| {
                    all.iter()
                        .position(|a| a.saga_id == x.saga_id)
                        .and_then(|p| u32::try_from(p).ok())
                        .expect("a saga of this test")
                })
                .collect()
        };
        let by_member = ids(SagaQuery {
            member: Some(member_a.clone()),
            ..SagaQuery::default()
        })
        .await;
        assert_eq!(numbers(&by_member), [9, 6, 3, 0], "by member, newest first");
        assert!(by_member.iter().all(|x| x.member_no == member_a));
        let by_venue = ids(SagaQuery {
            venue: Some(venue_b.clone()),
            member: Some(member_a.clone()),
            ..SagaQuery::default()
        })
        .await;
        assert_eq!(numbers(&by_venue), [9, 3], "by venue and member");
        let between = ids(SagaQuery {
            started_from: Some(base.plus_ms(3_000)),
            started_before: Some(base.plus_ms(7_000)),
            ..SagaQuery::default()
        })
        .await;
        assert_eq!(
            numbers(&between),
            [6, 5, 4, 3],
            "started between, from inclusive"
        );
        let sevenrooms = ids(SagaQuery {
            downstream: Some("SevenRooms".into()),
            ..SagaQuery::default()
        })
        .await;
        // Live (running or compensating) at hold_slot: 0, 1, 8, 9.
        assert_eq!(numbers(&sevenrooms), [9, 8, 1, 0], "waiting on SevenRooms");
        assert!(
            sevenrooms
                .iter()
                .all(|x| x.downstream.as_deref() == Some("SevenRooms"))
        );
        let retrying = ids(SagaQuery {
            retrying: true,
            ..SagaQuery::default()
        })
        .await;
        assert_eq!(numbers(&retrying), [5, 4], "retrying with errors");
        assert!(retrying.iter().all(|x| x.attempt == Some(3)
            && x.last_error.as_deref() == Some("HTTP 503 from the downstream")
            && x.downstream.as_deref() == Some("Memberson")));
        let none = ids(SagaQuery {
            retrying: true,
            status: Some(StatusKind::Confirmed),
            ..SagaQuery::default()
        })
        .await;
        assert!(none.is_empty(), "a finished saga retries nothing");
    }

    pub async fn due_lists_live_timers_earliest_first(env: &impl TestEnv) {
        let s = env.backend();
        let t = now(env);
        let ago = |ms: u64| Timestamp::from_millis(t.as_millis() - i64::try_from(ms).unwrap_or(0));
        let a = shaped(
            started(200, t).state,
            StatusKind::Running,
            0,
            t,
            Some(ago(5_000)),
        );
        let b = shaped(
            started(201, t).state,
            StatusKind::Compensating,
            1,
            t,
            Some(ago(10_000)),
        );
        let later = shaped(
            started(202, t).state,
            StatusKind::Running,
            0,
            t,
            Some(t.plus_ms(60_000)),
        );
        let none = shaped(started(203, t).state, StatusKind::NeedsOperator, 2, t, None);
        // A finished saga wakes when its state says so (its late-effect audit), and not
        // otherwise.
        let audited = shaped(
            started(204, t).state,
            StatusKind::Compensated,
            0,
            t,
            Some(ago(20_000)),
        );
        let done = shaped(started(205, t).state, StatusKind::Confirmed, 0, t, None);
        for st in [&a, &b, &later, &none, &audited, &done] {
            create(env, st).await;
        }
        assert_eq!(
            s.store.due(t, 10).await.expect("due"),
            vec![audited.saga_id, b.saga_id, a.saga_id]
        );
        assert_eq!(s.store.due(t, 1).await.expect("due"), vec![audited.saga_id]);
        assert_eq!(
            s.store.due(t.plus_ms(61_000), 10).await.expect("due"),
            vec![audited.saga_id, b.saga_id, a.saga_id, later.saga_id]
        );

        // Moving the timer moves the saga in the list.
        let mut a2 = a.clone();
        a2.wake_at = Some(t.plus_ms(120_000));
        let out = s
            .store
            .update(&a2, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
        assert_eq!(
            s.store.due(t, 10).await.expect("due"),
            vec![audited.saga_id, b.saga_id]
        );

        // The audit over, the finished saga has no timer and leaves the list.
        let mut audited2 = audited.clone();
        audited2.wake_at = None;
        let out = s
            .store
            .update(&audited2, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
        assert_eq!(s.store.due(t, 10).await.expect("due"), vec![b.saga_id]);
    }

    pub async fn counts_by_status(env: &impl TestEnv) {
        let s = env.backend();
        let t = now(env);
        let plan = [
            (StatusKind::Running, 3),
            (StatusKind::NeedsOperator, 2),
            (StatusKind::Confirmed, 4),
        ];
        let mut n = 300;
        for (status, count) in plan {
            for _ in 0..count {
                create(env, &shaped(started(n, t).state, status, 0, t, None)).await;
                n += 1;
            }
        }
        let got: BTreeMap<StatusKind, u64> = s
            .store
            .counts()
            .await
            .expect("counts")
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .collect();
        let want: BTreeMap<StatusKind, u64> = plan.into_iter().collect();
        assert_eq!(got, want);
    }

    pub async fn step_counts_follow_each_transition(env: &impl TestEnv) {
        let s = env.backend();
        let t = now(env);
        // Two running at check_credits, one at hold_slot, one needing an operator at
        // redeem_credits, one confirmed (at no step).
        let plan = [
            (StatusKind::Running, 0),
            (StatusKind::Running, 0),
            (StatusKind::Running, 1),
            (StatusKind::NeedsOperator, 2),
            (StatusKind::Confirmed, 0),
        ];
        let mut sagas = Vec::new();
        for (n, (status, at)) in plan.into_iter().enumerate() {
            let st = shaped(started(400 + n as u32, t).state, status, at, t, None);
            create(env, &st).await;
            sagas.push(st);
        }
        let counts = |_: ()| async {
            let mut got: Vec<(String, String, u64)> = s
                .store
                .step_counts()
                .await
                .expect("step counts")
                .into_iter()
                .map(|c| (c.status.as_str().to_owned(), c.step.to_string(), c.count))
                .collect();
            got.sort();
            got
        };
        let want = |rows: &[(&str, &str, u64)]| -> Vec<(String, String, u64)> {
            let mut rows: Vec<(String, String, u64)> = rows
                .iter()
                .map(|(a, b, n)| ((*a).to_owned(), (*b).to_owned(), *n))
                .collect();
            rows.sort();
            rows
        };
        assert_eq!(
            counts(()).await,
            want(&[
                ("needs_operator", "redeem_credits", 1),
                ("running", "check_credits", 2),
                ("running", "hold_slot", 1),
            ])
        );
        // One saga moves on a step, another finishes: the counts follow.
        let moved = shaped(sagas[0].clone(), StatusKind::Running, 1, t.plus_ms(1), None);
        let out = s
            .store
            .update(&moved, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Updated { version: 2 });
        let done = shaped(
            sagas[2].clone(),
            StatusKind::Confirmed,
            0,
            t.plus_ms(1),
            None,
        );
        s.store
            .update(&done, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(
            counts(()).await,
            want(&[
                ("needs_operator", "redeem_credits", 1),
                ("running", "check_credits", 1),
                ("running", "hold_slot", 1),
            ])
        );
    }

    /// The read port alone (what an API process holds) sees every write, and lists the sagas
    /// not finished whose last change is older than a moment, the longest unchanged first.
    pub async fn the_read_port_lists_the_stuck_longest_unchanged_first(env: &impl TestEnv) {
        let reader = env.backend().reader();
        let t = now(env);
        // (status, step, last change): the finished one and the recent one are not stuck.
        let plan = [
            (StatusKind::NeedsOperator, 2, 3_000),
            (StatusKind::Running, 1, 1_000),
            (StatusKind::Confirmed, 0, 500),
            (StatusKind::Compensating, 2, 2_000),
            (StatusKind::WaitingForDownstream, 3, 2_500),
            (StatusKind::Running, 0, 20_000),
        ];
        let mut ids = Vec::new();
        for (n, (status, step, at)) in plan.into_iter().enumerate() {
            let state = shaped(
                started(400 + n as u32, t).state,
                status,
                step,
                t.plus_ms(at),
                None,
            );
            create(env, &state).await;
            ids.push(state.saga_id);
        }
        let got = reader.get(ids[1]).await.expect("get").expect("written");
        assert_eq!(got.value.status.kind(), StatusKind::Running);
        let cutoff = t.plus_ms(10_000);
        let before = |status: Option<StatusKind>| SagaQuery {
            status,
            updated_before: Some(cutoff),
            ..SagaQuery::default()
        };
        let stuck: Vec<SagaId> = reader
            .stuck(&before(None), 10)
            .await
            .expect("stuck")
            .into_iter()
            .map(|s| s.saga_id)
            .collect();
        assert_eq!(stuck, vec![ids[1], ids[3], ids[4], ids[0]]);
        let first: Vec<SagaId> = reader
            .stuck(&before(None), 2)
            .await
            .expect("stuck")
            .into_iter()
            .map(|s| s.saga_id)
            .collect();
        assert_eq!(first, vec![ids[1], ids[3]]);
        // Narrowed like a list: by one live status (a finished status has nothing stuck). The
        // saga shaped as waiting for a downstream (`ids[4]`) runs, its command out.
        for (status, want) in [
            (StatusKind::Running, vec![ids[1], ids[4]]),
            (StatusKind::Compensating, vec![ids[3]]),
            (StatusKind::NeedsOperator, vec![ids[0]]),
            (StatusKind::Confirmed, vec![]),
        ] {
            let got: Vec<SagaId> = reader
                .stuck(&before(Some(status)), 10)
                .await
                .expect("stuck")
                .into_iter()
                .map(|s| s.saga_id)
                .collect();
            assert_eq!(got, want, "stuck in {status:?}");
        }
    }

    pub async fn unknown_saga_has_nothing(env: &impl TestEnv) {
        let s = env.backend();
        let id = started(999, now(env)).state.saga_id;
        assert!(s.store.get(id).await.expect("get").is_none());
        assert!(s.store.history(id).await.expect("history").is_empty());
        let out = s
            .store
            .update(&started(999, now(env)).state, 1, Effects::default())
            .await
            .expect("update");
        assert_eq!(out, UpdateOutcome::Conflict, "no saga, no version to match");
        assert!(s.store.get(id).await.expect("get").is_none());
    }
}

/// Idempotency records.
pub mod records {
    use super::*;

    pub async fn first_record_wins_and_sends_and_acks(env: &impl TestEnv) {
        let r = &env.backend().records;
        let crm = QueueName::Commands(Worker::Crm);
        assert_eq!(r.get("cmd-1").await.expect("get"), None);
        send_one(env, crm, "command").await;
        let cmd = receive_one(env, crm, 5).await;

        r.complete(
            Some(("cmd-1", "reply v1")),
            vec![(QueueName::Replies, message("reply v1"))],
            Some((crm, cmd.receipt.clone())),
        )
        .await
        .expect("complete");
        assert_eq!(
            r.get("cmd-1").await.expect("get").as_deref(),
            Some("reply v1")
        );
        assert_eq!(
            receive_one(env, QueueName::Replies, 30).await.body,
            "reply v1"
        );
        env.pass(secs(6)).await;
        assert!(
            receive(env, crm, 10, 5).await.is_empty(),
            "the command was acknowledged"
        );

        // A redelivered command answered again: the record stays, the reply is re-sent.
        r.complete(
            Some(("cmd-1", "reply v2")),
            vec![(QueueName::Replies, message("reply again"))],
            None,
        )
        .await
        .expect("complete");
        assert_eq!(
            r.get("cmd-1").await.expect("get").as_deref(),
            Some("reply v1")
        );
        assert_eq!(
            receive_one(env, QueueName::Replies, 30).await.body,
            "reply again"
        );
    }

    pub async fn without_a_record_only_sends_and_acks(env: &impl TestEnv) {
        let r = &env.backend().records;
        let sr = QueueName::Commands(Worker::Sevenrooms);
        send_one(env, sr, "parked").await;
        let cmd = receive_one(env, sr, 60).await;
        r.complete(
            None,
            vec![(sr, message("parked").delayed(secs(5)))],
            Some((sr, cmd.receipt)),
        )
        .await
        .expect("complete");
        assert!(
            receive(env, sr, 10, 60).await.is_empty(),
            "the copy is delayed"
        );
        env.pass(secs(6)).await;
        let back = receive_one(env, sr, 60).await;
        assert_eq!(back.body, "parked");
        assert_eq!(back.receive_count, 1, "a new message, not the old one");
        assert_ne!(back.message_id, cmd.message_id);
    }

    pub async fn swap_from_nothing_succeeds_once(env: &impl TestEnv) {
        let r = &env.backend().records;
        let key = "health/conformance-first";
        assert_eq!(r.get(key).await.expect("get"), None);
        assert!(
            r.swap(key, None, r#"{"state":"open"}"#)
                .await
                .expect("swap"),
            "the first swap from nothing"
        );
        assert_eq!(
            r.get(key).await.expect("get").as_deref(),
            Some(r#"{"state":"open"}"#)
        );
        assert!(
            !r.swap(key, None, r#"{"state":"probing"}"#)
                .await
                .expect("swap"),
            "a second swap from nothing: there is a value now"
        );
        assert_eq!(
            r.get(key).await.expect("get").as_deref(),
            Some(r#"{"state":"open"}"#),
            "the refused swap changed nothing"
        );
    }

    pub async fn swap_needs_the_current_value(env: &impl TestEnv) {
        let r = &env.backend().records;
        let key = "health/conformance-cas";
        assert!(
            !r.swap(key, Some("v1"), "v2").await.expect("swap"),
            "nothing to compare with"
        );
        assert_eq!(
            r.get(key).await.expect("get"),
            None,
            "a refused swap creates nothing"
        );
        assert!(r.swap(key, None, "v1").await.expect("swap"));

        assert!(
            !r.swap(key, Some("v0"), "v2").await.expect("swap"),
            "the wrong expected value"
        );
        assert_eq!(r.get(key).await.expect("get").as_deref(), Some("v1"));

        assert!(r.swap(key, Some("v1"), "v2").await.expect("swap"));
        assert_eq!(r.get(key).await.expect("get").as_deref(), Some("v2"));
        assert!(
            !r.swap(key, Some("v1"), "v3").await.expect("swap"),
            "the value it replaced is gone"
        );
        // A value may come back to an earlier one, and may be swapped to itself.
        assert!(r.swap(key, Some("v2"), "v1").await.expect("swap"));
        assert!(r.swap(key, Some("v1"), "v1").await.expect("swap"));
        assert_eq!(r.get(key).await.expect("get").as_deref(), Some("v1"));

        // Other keys are left alone.
        assert_eq!(r.get("health/conformance-other").await.expect("get"), None);
    }

    pub async fn two_swaps_from_one_value_exactly_one_wins(env: &impl TestEnv) {
        let r = &env.backend().records;
        let key = "health/conformance-race";
        let mut current: Option<String> = None;
        for round in 0..5u32 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            let (ra, rb) = tokio::join!(
                r.swap(key, current.as_deref(), &a),
                r.swap(key, current.as_deref(), &b),
            );
            let winner = match (ra.expect("swap a"), rb.expect("swap b")) {
                (true, false) => a,
                (false, true) => b,
                other => panic!("round {round}: exactly one swap must win, got {other:?}"),
            };
            assert_eq!(
                r.get(key).await.expect("get").as_deref(),
                Some(winner.as_str()),
                "round {round}: the winner's value"
            );
            current = Some(winner);
        }
    }
}

/// The secret store.
pub mod secrets {
    use super::*;

    pub async fn pending_then_promote(env: &impl TestEnv) {
        let s = &env.backend().secrets;
        let name = "conformance/sevenrooms-client";
        assert_eq!(s.current(name).await.expect("current"), None);
        assert_eq!(s.pending(name).await.expect("pending"), None);

        let v1 = s.put_pending(name, "secret-1").await.expect("put");
        assert_eq!(
            s.current(name).await.expect("current"),
            None,
            "pending is not current"
        );
        let p = s
            .pending(name)
            .await
            .expect("pending")
            .expect("a pending version");
        assert_eq!(
            (p.version_id.as_str(), p.value.as_str()),
            (v1.as_str(), "secret-1")
        );
        s.promote(name, &v1).await.expect("promote");
        let c = s.current(name).await.expect("current").expect("current");
        assert_eq!(
            (c.version_id.as_str(), c.value.as_str()),
            (v1.as_str(), "secret-1")
        );
        assert_eq!(s.pending(name).await.expect("pending"), None);
        s.promote(name, &v1)
            .await
            .expect("promoting the current version again is fine");

        let v2 = s.put_pending(name, "secret-2").await.expect("put");
        let v3 = s.put_pending(name, "secret-3").await.expect("put");
        assert_ne!(v2, v3);
        let p = s.pending(name).await.expect("pending").expect("pending");
        assert_eq!(
            p.value, "secret-3",
            "a newer pending version replaces the older"
        );
        assert_eq!(
            s.current(name).await.expect("current").map(|c| c.value),
            Some("secret-1".into()),
            "until promoted, the current version stays"
        );
        s.promote(name, &v3).await.expect("promote");
        assert_eq!(
            s.current(name).await.expect("current").map(|c| c.value),
            Some("secret-3".into())
        );
        let unknown = s.promote(name, "no-such-version").await;
        assert!(matches!(unknown, Err(PortError::Invalid(_))), "{unknown:?}");
        assert_eq!(s.current("conformance/other").await.expect("current"), None);
    }
}

/// The event bus.
pub mod bus {
    use super::*;

    pub async fn publish_drops_duplicates_and_keeps_order(env: &impl TestEnv) {
        let b = &env.backend().bus;
        let date = chrono::NaiveDate::from_ymd_opt(2030, 1, 15).expect("a date");
        let events = examples::all_events(&examples::booking_request("conformance-bus", date));
        b.publish(events[..3].to_vec()).await.expect("publish");
        b.publish(events.clone())
            .await
            .expect("publish, again in part");
        b.publish(events[1..2].to_vec())
            .await
            .expect("publish a duplicate");
        let got = b.recent(100).await.expect("recent");
        assert_eq!(got, events, "each event once, newest last");
        let last = b.recent(2).await.expect("recent");
        assert_eq!(last, events[events.len() - 2..].to_vec());

        let rejection = examples::booking_rejected();
        b.publish_rejection(rejection.clone())
            .await
            .expect("publish a rejection");
        b.publish_rejection(rejection)
            .await
            .expect("a repeated rejection is not an error");
        assert_eq!(b.recent(100).await.expect("recent").len(), events.len());
    }
}

/// The audit list.
pub mod audit {
    use super::*;
    use crate::audit::{AuditEntry, AuditOutcome, AuditQuery};
    use como_schemas::Timestamp;

    fn entry(n: i64, actor: &str, action: &str) -> AuditEntry {
        AuditEntry {
            id: format!("action-{n}/saga/{n}"),
            at: Timestamp::from_millis(1_900_000_000_000 + n * 1_000),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: format!("saga/{n}"),
            reason: format!("reason {n}"),
            action_id: format!("action-{n}"),
            outcome: AuditOutcome::Pending,
            detail: None,
            finished_at: None,
        }
    }

    pub async fn an_entry_is_replaced_by_id_and_keeps_its_place(env: &impl TestEnv) {
        let a = &env.backend().audit;
        a.record(&entry(1, "ops-alice", "retry_now"))
            .await
            .expect("record");
        a.record(&entry(2, "ops-bob", "cancel"))
            .await
            .expect("record");
        let mut done = entry(1, "ops-alice", "retry_now");
        done.outcome = AuditOutcome::Applied;
        done.detail = Some("running".into());
        done.finished_at = Some(Timestamp::from_millis(1_900_000_009_000));
        a.record(&done).await.expect("record the outcome");
        let all = a.list(&AuditQuery::default()).await.expect("list");
        assert_eq!(all.items.len(), 2, "replaced, not added: {all:?}");
        assert_eq!(all.items[0].id, entry(2, "", "").id, "newest first");
        assert_eq!(all.items[1], done, "the outcome replaced the pending entry");
        assert_eq!(all.next_cursor, None);
    }

    pub async fn lists_newest_first_by_actor_action_and_period_in_pages(env: &impl TestEnv) {
        let a = &env.backend().audit;
        for n in 0..12 {
            let actor = if n % 3 == 0 { "ops-alice" } else { "ops-bob" };
            let action = if n % 2 == 0 { "retry_now" } else { "redrive" };
            a.record(&entry(n, actor, action)).await.expect("record");
        }
        let ids = |items: &[AuditEntry]| -> Vec<String> {
            items.iter().map(|e| e.action_id.clone()).collect()
        };
        let alice = a
            .list(&AuditQuery {
                actor: Some("ops-alice".into()),
                ..AuditQuery::default()
            })
            .await
            .expect("by actor");
        assert_eq!(
            ids(&alice.items),
            ["action-9", "action-6", "action-3", "action-0"]
        );
        let redrives = a
            .list(&AuditQuery {
                action: Some("redrive".into()),
                actor: Some("ops-bob".into()),
                ..AuditQuery::default()
            })
            .await
            .expect("by action and actor");
        assert_eq!(
            ids(&redrives.items),
            ["action-11", "action-7", "action-5", "action-1"]
        );
        let period = a
            .list(&AuditQuery {
                from: Some(entry(4, "", "").at),
                until: Some(entry(7, "", "").at),
                ..AuditQuery::default()
            })
            .await
            .expect("by period");
        assert_eq!(
            ids(&period.items),
            ["action-6", "action-5", "action-4"],
            "from is inclusive, until exclusive"
        );
        // Pages of 3 over the bob entries: every entry once, in order.
        let mut cursor = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = a
                .list(&AuditQuery {
                    actor: Some("ops-bob".into()),
                    cursor: cursor.clone(),
                    limit: 3,
                    ..AuditQuery::default()
                })
                .await
                .expect("a page");
            assert!(page.items.len() <= 3);
            seen.extend(ids(&page.items));
            pages += 1;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 10, "the pages end");
        }
        assert_eq!(
            seen,
            [
                "action-11",
                "action-10",
                "action-8",
                "action-7",
                "action-5",
                "action-4",
                "action-2",
                "action-1"
            ]
        );
        let bad = a
            .list(&AuditQuery {
                cursor: Some("not a cursor".into()),
                ..AuditQuery::default()
            })
            .await;
        assert!(matches!(bad, Err(PortError::Invalid(_))), "{bad:?}");
    }
}
