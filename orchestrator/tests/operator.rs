//! Operator actions against a real SQLite file: each one changes the saga exactly as the engine
//! says and its history names the operator and the reason; a repeated action id changes
//! nothing; an action the engine refuses comes back as that refusal with the saga untouched;
//! an unknown saga is `NotFound`; a bulk action reports every saga and never stops early.

use chrono::NaiveDate;
use como_engine::{
    Decision, HistoryEntry, HistoryKind, Input, OperatorAction, OperatorCommand, ResolvedOutcome,
    SagaStatus, StatusKind, transition,
};
use como_orchestrator::advance::definition_of;
use como_orchestrator::intake::handle_request;
use como_orchestrator::operator::{
    self, OperatorError, OperatorOutcome, bulk, cancel, force_compensation, resolve_by_hand,
    retry_now,
};
use como_orchestrator::{Advanced, IntakeOutcome, advance, submit};
use como_ports::{Clock, QueueName, Versioned};
use como_schemas::{
    CommandKind, OperatorId, ReplyOutcome, SagaId, Worker, WorkerCommand, examples,
};

mod support;

use support::*;

fn alice() -> OperatorId {
    OperatorId::parse("ops.alice").unwrap()
}

/// Starts a saga through intake, as the orchestrator does: its first command (the credit
/// check) is in flight.
async fn start(r: &Rig, request_id: &str) -> SagaId {
    let req = examples::booking_request(request_id, NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
    submit(&r.ports, &req).await.unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    match handle_request(&r.ports, &r.catalogue, &d).await.unwrap() {
        IntakeOutcome::Started(applied) => {
            assert_eq!(applied.state.status.kind(), StatusKind::Running);
            applied.state.saga_id
        }
        other => panic!("{other:?}"),
    }
}

/// The next command for `worker`, taken off its queue (the worker never answers it).
async fn take_command(r: &Rig, worker: Worker) -> WorkerCommand {
    let d = next(&r.ports, QueueName::Commands(worker)).await.unwrap();
    r.ports
        .queue
        .delete(QueueName::Commands(worker), vec![d.receipt])
        .await
        .unwrap();
    serde_json::from_str(&d.body).unwrap()
}

/// Feeds a successful reply to `cmd` through `advance`, as the reply handler would.
async fn succeed(r: &Rig, cmd: &WorkerCommand) {
    let outcome = examples::all_outcomes()
        .into_iter()
        .find(|o| matches!(o, ReplyOutcome::Succeeded { .. }))
        .unwrap();
    let input = Input::Reply {
        reply: examples::reply(cmd, outcome),
    };
    assert!(matches!(
        advance(&r.ports, cmd.saga_id, &input, None).await.unwrap(),
        Advanced::Applied(_)
    ));
}

async fn stored(r: &Rig, id: SagaId) -> Versioned<como_engine::SagaState> {
    r.ports.store.get(id).await.unwrap().unwrap()
}

async fn history(r: &Rig, id: SagaId) -> Vec<HistoryEntry> {
    r.ports.store.history(id).await.unwrap()
}

/// What the engine decides for `action` by `who` for `why` with `action_id` on `before`, now.
fn engine_says(
    r: &Rig,
    before: &como_engine::SagaState,
    action: OperatorAction,
    action_id: &str,
    why: &str,
) -> Decision {
    let input = Input::Operator {
        command: OperatorCommand {
            action_id: action_id.to_owned(),
            operator: alice(),
            reason: why.to_owned(),
            action,
        },
    };
    let def = definition_of(before).unwrap();
    let decision = transition(&def, Some(before), &input, r.clock.now()).unwrap();
    assert!(decision.changed, "the engine accepts {action:?}");
    decision
}

/// The saga was changed exactly as the engine says, stored as the next version, and its
/// history gained the engine's entries, among them the action naming the operator and reason.
async fn assert_applied_as_the_engine_says(
    r: &Rig,
    before: &Versioned<como_engine::SagaState>,
    history_before: usize,
    outcome: &OperatorOutcome,
    why: &str,
) {
    let expected = engine_says(r, &before.value, outcome.action, &outcome.action_id, why);
    let after = stored(r, before.value.saga_id).await;
    assert!(!outcome.repeated);
    assert_eq!(outcome.saga_id, before.value.saga_id);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(outcome.version, after.version);
    assert_eq!(after.value, expected.state, "stored as the engine decided");
    assert_eq!(outcome.status, expected.state.status);
    assert!(after.value.operator_actions.contains(&outcome.action_id));
    let h = history(r, before.value.saga_id).await;
    assert_eq!(&h[history_before..], &expected.history[..]);
    let entry = h[history_before..]
        .iter()
        .find(|e| e.kind == HistoryKind::OperatorAction)
        .expect("an operator-action entry");
    assert_eq!(entry.operator.as_ref(), Some(&alice()), "names who");
    assert_eq!(entry.reason.as_deref(), Some(why), "says why");
    assert_eq!(entry.detail.as_deref(), Some(outcome.action.as_str()));
}

#[tokio::test]
async fn retry_now_sends_the_pending_attempt_at_once_and_records_who_and_why() {
    let r = rig();
    let id = start(&r, "op-retry").await;
    // The worker took the check and died: it times out (15 s + 5 s grace) and a retry is
    // scheduled for later.
    take_command(&r, Worker::Crm).await;
    r.clock.advance_ms(20_000);
    assert!(matches!(
        advance(&r.ports, id, &Input::Timer, None).await.unwrap(),
        Advanced::Applied(_)
    ));
    let before = stored(&r, id).await;
    assert!(
        matches!(
            &before.value.status,
            SagaStatus::Running { attempt: 1, retry_at: Some(at), .. } if *at > r.clock.now()
        ),
        "{:?}",
        before.value.status
    );
    let h0 = history(&r, id).await.len();

    let why = "CRM is back, no need to wait";
    let outcome = retry_now(&r.ports, id, &alice(), why, None).await.unwrap();
    uuid::Uuid::parse_str(&outcome.action_id).expect("a generated UUID");
    assert_eq!(outcome.action, OperatorAction::RetryNow);
    assert_applied_as_the_engine_says(&r, &before, h0, &outcome, why).await;
    assert!(
        matches!(
            &outcome.status,
            SagaStatus::Running { attempt: 2, retry_at: None, step } if step.as_str() == "check_credits"
        ),
        "{:?}",
        outcome.status
    );
    // The second attempt went out now, not at the scheduled time.
    let retry = take_command(&r, Worker::Crm).await;
    assert_eq!(
        (retry.step.as_str(), retry.kind, retry.attempt),
        ("check_credits", CommandKind::Action, 2)
    );
}

#[tokio::test]
async fn force_compensation_undoes_what_was_done_and_records_who_and_why() {
    let r = rig();
    let id = start(&r, "op-force").await;
    let check = take_command(&r, Worker::Crm).await;
    succeed(&r, &check).await;
    // The hold is in flight at SevenRooms.
    let hold = take_command(&r, Worker::Sevenrooms).await;
    let before = stored(&r, id).await;
    let h0 = history(&r, id).await.len();

    let why = "venue closed for a private event";
    let outcome = force_compensation(&r.ports, id, &alice(), why, Some("ticket-41"))
        .await
        .unwrap();
    assert_eq!(outcome.action_id, "ticket-41");
    assert_applied_as_the_engine_says(&r, &before, h0, &outcome, why).await;
    // The hold may still take effect, so the saga compensates (and does not go forward).
    assert_eq!(outcome.status.kind(), StatusKind::Compensating);
    let h = history(&r, id).await;
    assert!(
        h[h0..]
            .iter()
            .any(|e| e.kind == HistoryKind::CompensationStarted)
    );
    // Its reply comes later: nothing more goes forward (no payment is sent).
    succeed(&r, &hold).await;
    let after = stored(&r, id).await;
    assert!(
        matches!(
            after.value.status.kind(),
            StatusKind::Compensating | StatusKind::Compensated
        ),
        "{:?}",
        after.value.status
    );
}

#[tokio::test]
async fn cancel_ends_the_saga_cancelled_and_records_who_and_why() {
    let r = rig();
    let id = start(&r, "op-cancel").await;
    let check = take_command(&r, Worker::Crm).await;
    succeed(&r, &check).await;
    let before = stored(&r, id).await;
    let h0 = history(&r, id).await.len();

    let why = "the member called to cancel";
    let outcome = cancel(&r.ports, id, &alice(), why, None).await.unwrap();
    assert_eq!(outcome.action, OperatorAction::Cancel);
    assert_applied_as_the_engine_says(&r, &before, h0, &outcome, why).await;
    assert_eq!(outcome.status.kind(), StatusKind::Compensating);
    let phase = stored(&r, id).await.value.phase;
    assert!(
        matches!(
            phase,
            como_engine::Phase::Compensating {
                end_as: como_schemas::events::CompensatedAs::Cancelled,
                ..
            }
        ),
        "it ends as cancelled: {phase:?}"
    );
}

#[tokio::test]
async fn resolve_by_hand_declares_the_outcome_and_records_who_and_why() {
    let r = rig();
    for (request, outcome, status) in [
        (
            "op-resolve-c",
            ResolvedOutcome::Confirmed,
            SagaStatus::Confirmed,
        ),
        (
            "op-resolve-x",
            ResolvedOutcome::Compensated,
            SagaStatus::Compensated,
        ),
    ] {
        let id = start(&r, request).await;
        let before = stored(&r, id).await;
        let h0 = history(&r, id).await.len();
        let why = "booked by phone with the venue, credits taken by hand";
        let done = resolve_by_hand(&r.ports, id, outcome, &alice(), why, None)
            .await
            .unwrap();
        assert_eq!(done.action, OperatorAction::Resolve { outcome });
        assert_applied_as_the_engine_says(&r, &before, h0, &done, why).await;
        assert_eq!(done.status, status);
    }
}

#[tokio::test]
async fn a_repeated_action_id_changes_nothing_the_second_time() {
    let r = rig();
    let id = start(&r, "op-repeat").await;
    let why = "the member called to cancel";
    let first = cancel(&r.ports, id, &alice(), why, Some("ticket-7"))
        .await
        .unwrap();
    assert!(!first.repeated);
    let after_first = stored(&r, id).await;
    let h1 = history(&r, id).await;

    // The same submission again (a double click, a retried HTTP call), and then another
    // action under the same id: both are recognised and change nothing.
    let again = cancel(&r.ports, id, &alice(), why, Some("ticket-7"))
        .await
        .unwrap();
    let other = force_compensation(&r.ports, id, &alice(), "again", Some("ticket-7"))
        .await
        .unwrap();
    for o in [&again, &other] {
        assert!(o.repeated, "{o:?}");
        assert_eq!(o.action_id, "ticket-7");
        assert_eq!(o.version, after_first.version);
        assert_eq!(o.status, after_first.value.status);
    }
    let after = stored(&r, id).await;
    assert_eq!(after.version, after_first.version);
    assert_eq!(after.value, after_first.value);
    assert_eq!(history(&r, id).await, h1);
    let entries = h1
        .iter()
        .filter(|e| e.kind == HistoryKind::OperatorAction)
        .count();
    assert_eq!(entries, 1, "one operator action recorded");
}

#[tokio::test]
async fn an_action_the_engine_refuses_returns_the_refusal_and_leaves_the_saga_untouched() {
    let r = rig();
    let id = start(&r, "op-refused").await;

    // The credit check is in flight: retrying now is refused.
    let before = stored(&r, id).await;
    let h0 = history(&r, id).await;
    let err = retry_now(&r.ports, id, &alice(), "push it", None)
        .await
        .unwrap_err();
    match &err {
        OperatorError::Refused { saga, action, .. } => {
            assert_eq!((*saga, *action), (id, OperatorAction::RetryNow));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("is in flight"), "{err}");
    assert_eq!(stored(&r, id).await, before, "version and state unchanged");
    assert_eq!(history(&r, id).await, h0);

    // A finished saga refuses every action.
    resolve_by_hand(
        &r.ports,
        id,
        ResolvedOutcome::Confirmed,
        &alice(),
        "confirmed with the venue",
        None,
    )
    .await
    .unwrap();
    let before = stored(&r, id).await;
    let h0 = history(&r, id).await;
    let err = retry_now(&r.ports, id, &alice(), "try once more", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            OperatorError::Refused { action: OperatorAction::RetryNow, error, .. }
                if *error == como_engine::EngineError::Refused(
                    "the saga is confirmed: it is finished".into()
                )
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "saga {id}: retry_now refused by the engine: the saga is confirmed: it is finished; \
             nothing changed"
        )
    );
    for action in [
        OperatorAction::ForceCompensation,
        OperatorAction::Cancel,
        OperatorAction::Resolve {
            outcome: ResolvedOutcome::Compensated,
        },
    ] {
        let err = operator::act(&r.ports, id, action, &alice(), "why not", None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, OperatorError::Refused { .. }),
            "{action:?}: {err:?}"
        );
    }
    assert_eq!(stored(&r, id).await, before, "version and state unchanged");
    assert_eq!(history(&r, id).await, h0);
}

#[tokio::test]
async fn a_blank_reason_or_action_id_is_refused_before_the_saga_is_touched() {
    let r = rig();
    let id = start(&r, "op-blank").await;
    let before = stored(&r, id).await;
    for why in ["", "   \t"] {
        let err = cancel(&r.ports, id, &alice(), why, None).await.unwrap_err();
        assert!(matches!(err, OperatorError::EmptyReason), "{err:?}");
        assert!(err.to_string().contains("needs a reason"), "{err}");
    }
    let err = cancel(&r.ports, id, &alice(), "member asked", Some(" "))
        .await
        .unwrap_err();
    assert!(matches!(err, OperatorError::EmptyActionId), "{err:?}");
    // Even for a saga that does not exist, the reason is checked first.
    let unknown = SagaId::from_uuid(uuid::Uuid::new_v4());
    assert!(matches!(
        retry_now(&r.ports, unknown, &alice(), "", None).await,
        Err(OperatorError::EmptyReason)
    ));
    assert_eq!(stored(&r, id).await, before);
}

#[tokio::test]
async fn an_unknown_saga_is_not_found() {
    let r = rig();
    start(&r, "op-known").await;
    let unknown = SagaId::from_uuid(uuid::Uuid::new_v4());
    let why = "looking into a complaint";
    let results = [
        retry_now(&r.ports, unknown, &alice(), why, None).await,
        force_compensation(&r.ports, unknown, &alice(), why, None).await,
        cancel(&r.ports, unknown, &alice(), why, None).await,
        resolve_by_hand(
            &r.ports,
            unknown,
            ResolvedOutcome::Confirmed,
            &alice(),
            why,
            None,
        )
        .await,
    ];
    for result in results {
        match result {
            Err(err @ OperatorError::NotFound(id)) => {
                assert_eq!(id, unknown);
                assert_eq!(
                    err.to_string(),
                    format!("no saga has id {unknown}: check the id")
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        r.ports.store.get(unknown).await.unwrap().is_none(),
        "not created"
    );
}

#[tokio::test]
async fn bulk_reports_every_saga_and_never_stops_at_a_failure() {
    let r = rig();
    let finished = start(&r, "op-bulk-done").await;
    resolve_by_hand(
        &r.ports,
        finished,
        ResolvedOutcome::Confirmed,
        &alice(),
        "confirmed with the venue",
        None,
    )
    .await
    .unwrap();
    let a = start(&r, "op-bulk-a").await;
    let b = start(&r, "op-bulk-b").await;
    let unknown = SagaId::from_uuid(uuid::Uuid::new_v4());
    let finished_before = stored(&r, finished).await;

    // Failures first: the sagas after them are still acted on.
    let ids = [finished, unknown, a, b];
    let why = "the venue closed for the night";
    let results = bulk(&r.ports, &ids, &alice(), why, OperatorAction::Cancel, None).await;
    assert_eq!(
        results.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids,
        "one result per saga, in order"
    );
    assert!(
        matches!(&results[0].1, Err(OperatorError::Refused { saga, .. }) if *saga == finished),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1].1, Err(OperatorError::NotFound(id)) if *id == unknown),
        "{:?}",
        results[1]
    );
    let action_id = results[2].1.as_ref().unwrap().action_id.clone();
    for (id, result) in &results[2..] {
        let done = result.as_ref().unwrap();
        assert!(!done.repeated);
        assert_eq!(done.action_id, action_id, "one action id for the batch");
        let saga = stored(&r, *id).await;
        assert_eq!(saga.version, 2);
        assert_eq!(done.status, saga.value.status);
        assert_ne!(done.status.kind(), StatusKind::Running);
        let entry = history(&r, *id)
            .await
            .into_iter()
            .find(|e| e.kind == HistoryKind::OperatorAction)
            .unwrap();
        assert_eq!(
            (entry.operator, entry.reason.as_deref()),
            (Some(alice()), Some(why))
        );
    }
    assert_eq!(stored(&r, finished).await, finished_before);

    // The same batch again under its action id: nothing changes anywhere.
    let again = bulk(
        &r.ports,
        &ids,
        &alice(),
        why,
        OperatorAction::Cancel,
        Some(&action_id),
    )
    .await;
    assert!(matches!(again[0].1, Err(OperatorError::Refused { .. })));
    assert!(matches!(again[1].1, Err(OperatorError::NotFound(_))));
    for (id, result) in &again[2..] {
        let done = result.as_ref().unwrap();
        assert!(done.repeated, "{id}");
        assert_eq!(done.version, 2);
        assert_eq!(stored(&r, *id).await.version, 2);
    }
}
