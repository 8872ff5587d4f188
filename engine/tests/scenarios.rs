//! The Como booking saga, version 1, through the cases that matter: the happy path, each kind
//! of failure, unknown outcomes, deadlines, a downstream that is down, and operators.

mod support;

use como_engine::Phase;
use como_engine::como::booking_v1;
use como_engine::{
    EngineError, HistoryKind, Input, OperatorAction, ResolvedOutcome, SagaStatus, StatusKind,
};
use como_schemas::events::{CompensatedAs, NeedsOperatorReason, SagaEventBody};
use como_schemas::{CommandKind, Operation, ReplyOutcome, StepOutput, Timestamp};
use support::*;

fn kinds(s: &Saga) -> Vec<(&str, CommandKind)> {
    s.commands
        .iter()
        .map(|c| (c.step.as_str(), c.kind))
        .collect()
}

/// Drive a fresh saga through its first `n` worker steps successfully.
fn through(n: usize) -> Saga {
    through_with(booking_v1(), n)
}

/// A saga whose booking was refused after the redemption: voided, released, compensated.
fn refused_at_booking() -> Saga {
    let mut s = through(3);
    let cmd = s.last_command();
    s.reply(&cmd, business("SLOT_UNAVAILABLE")).unwrap();
    s.succeed_last();
    s.succeed_last();
    s
}

fn through_with(def: como_engine::SagaDefinition, n: usize) -> Saga {
    let mut s = Saga::started(def, "req-1");
    for _ in 0..n {
        s.succeed_last();
    }
    s
}

#[test]
fn happy_path_confirms_and_reports_every_step() {
    let s = through(4);
    assert_eq!(s.state().status, SagaStatus::Confirmed);
    assert_eq!(
        s.event_types(),
        [
            "SagaStarted",
            "StepCompleted",
            "StepCompleted",
            "StepCompleted",
            "StepCompleted",
            "BookingConfirmed"
        ]
    );
    assert_eq!(
        kinds(&s),
        [
            ("check_credits", CommandKind::Action),
            ("hold_slot", CommandKind::Action),
            ("redeem_credits", CommandKind::Action),
            ("book_experience", CommandKind::Action),
        ]
    );
    // The booking carries the hold and the saga id as external_id.
    match &s.commands[3].operation {
        Operation::BookExperience {
            hold_id,
            external_id,
            ..
        } => {
            assert_eq!(hold_id.as_ref().unwrap().as_str(), "hold-1");
            assert_eq!(external_id, &s.state().saga_id.to_string());
        }
        other => panic!("unexpected {other:?}"),
    }
    match &s.events.last().unwrap().body {
        SagaEventBody::BookingConfirmed {
            reservation_id,
            transaction_id,
            ..
        } => {
            assert_eq!(reservation_id.as_ref().unwrap().as_str(), "res-1");
            assert_eq!(transaction_id.as_ref().unwrap().as_str(), "tx-1");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.state().wake_at, None);
    assert_eq!(s.history.last().unwrap().kind, HistoryKind::Confirmed);
}

#[test]
fn status_names_the_step_and_attempt() {
    let mut s = through(1);
    assert_eq!(
        s.state().status,
        SagaStatus::Running {
            step: "hold_slot".parse_step(),
            attempt: 1,
            retry_at: None
        }
    );
    let cmd = s.last_command();
    s.reply(&cmd, retryable()).unwrap();
    match &s.state().status {
        SagaStatus::Running {
            step,
            attempt: 1,
            retry_at: Some(_),
        } => assert_eq!(step.as_str(), "hold_slot"),
        other => panic!("unexpected {other:?}"),
    }
    s.wake();
    assert_eq!(s.last_command().attempt, 2);
    assert_eq!(s.last_command().idempotency_key, cmd.idempotency_key);
}

trait ParseStep {
    fn parse_step(&self) -> como_schemas::StepName;
}
impl ParseStep for &str {
    fn parse_step(&self) -> como_schemas::StepName {
        como_schemas::StepName::parse(*self).unwrap()
    }
}

#[test]
fn insufficient_credits_at_check_ends_compensated_with_nothing_to_undo() {
    let mut s = Saga::started(booking_v1(), "req-1");
    let cmd = s.last_command();
    s.reply(&cmd, business("INSUFFICIENT_POINTS")).unwrap();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    assert_eq!(
        s.commands.len(),
        1,
        "nothing was done, so nothing is undone"
    );
    assert_eq!(
        s.event_types(),
        ["SagaStarted", "BookingFailed", "SagaCompensated"]
    );
    match &s.events[1].body {
        SagaEventBody::BookingFailed { code, step, .. } => {
            assert_eq!(code, "INSUFFICIENT_POINTS");
            assert_eq!(step.as_str(), "check_credits");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_refused_redeem_releases_the_hold_only() {
    let mut s = through(2);
    let cmd = s.last_command();
    assert_eq!(cmd.step.as_str(), "redeem_credits");
    s.reply(&cmd, business("INSUFFICIENT_POINTS")).unwrap();
    let release = s.last_command();
    assert_eq!(
        (release.step.as_str(), release.kind),
        ("hold_slot", CommandKind::Compensation)
    );
    match &release.operation {
        Operation::ReleaseHold { hold_id, .. } => {
            assert_eq!(hold_id.as_ref().unwrap().as_str(), "hold-1")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(s.state().status, SagaStatus::Compensating { .. }));
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    match &s.events.last().unwrap().body {
        SagaEventBody::SagaCompensated {
            outcome,
            compensated_steps,
            ..
        } => {
            assert_eq!(*outcome, CompensatedAs::Compensated);
            assert_eq!(
                compensated_steps
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
                ["hold_slot"]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_refused_booking_voids_then_releases_in_reverse_order() {
    let s = refused_at_booking();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    let comps: Vec<&str> = s
        .commands
        .iter()
        .filter(|c| c.kind == CommandKind::Compensation)
        .map(|c| c.step.as_str())
        .collect();
    assert_eq!(
        comps,
        ["redeem_credits", "hold_slot"],
        "the refused booking is not cancelled"
    );
}

#[test]
fn an_unknown_booking_is_reconciled_after_it_can_no_longer_land() {
    let def = booking_v1();
    let mut s = through(3);
    let book = s.last_command();
    s.advance(1_000);
    s.reply(&book, unknown()).unwrap();
    assert!(matches!(s.state().status, SagaStatus::Reconciling { .. }));
    // No lookup before the booking's deadline plus the grace: the booking could still land.
    let settles = book.deadline.plus_ms(def.reply_grace_ms);
    assert_eq!(s.state().wake_at, Some(settles));
    assert_eq!(s.commands.len(), 4);
    s.apply(Input::Timer).unwrap();
    assert_eq!(s.commands.len(), 4, "an early timer does nothing");
    s.wake();
    let find = s.last_command();
    assert_eq!(
        (find.step.as_str(), find.kind),
        ("book_experience", CommandKind::Reconcile)
    );
    assert!(matches!(find.operation, Operation::FindReservation { .. }));
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
}

#[test]
fn a_booking_not_found_is_retried_with_the_same_key() {
    let mut s = through(3);
    let book = s.last_command();
    s.reply(&book, unknown()).unwrap();
    s.wake();
    let find = s.last_command();
    s.reply(
        &find,
        ReplyOutcome::NotApplied {
            reason: "no reservation".into(),
        },
    )
    .unwrap();
    if s.last_command().kind != CommandKind::Action {
        s.wake();
    }
    let again = s.last_command();
    assert_eq!((again.kind, again.attempt), (CommandKind::Action, 2));
    assert_eq!(again.idempotency_key, book.idempotency_key);
    assert_ne!(again.command_id, book.command_id);
}

#[test]
fn a_timed_out_redeem_is_replayed_to_learn_its_outcome() {
    let mut s = through(2);
    let redeem = s.last_command();
    s.wake(); // the attempt times out
    assert_eq!(
        s.history
            .iter()
            .filter(|h| h.kind == HistoryKind::TimedOut)
            .count(),
        1
    );
    let replay = s.last_command();
    assert_eq!(replay.kind, CommandKind::Reconcile);
    match (&redeem.operation, &replay.operation) {
        (
            Operation::RedeemCredits { receipt_no: a, .. },
            Operation::ReplayRedemption { receipt_no: b, .. },
        ) => {
            assert_eq!(a, b)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn retries_honour_retry_after_and_run_out() {
    let mut s = Saga::started(booking_v1(), "req-1");
    let cmd = s.last_command();
    s.reply(
        &cmd,
        ReplyOutcome::RetryableFailure {
            reason: "429".into(),
            retry_after_ms: Some(30_000),
            downstream_unavailable: false,
        },
    )
    .unwrap();
    assert!(s.state().wake_at.unwrap() >= s.now.plus_ms(30_000));
    for attempt in 2..=5 {
        s.wake();
        let c = s.last_command();
        assert_eq!(c.attempt, attempt);
        s.reply(&c, retryable()).unwrap();
    }
    assert_eq!(
        s.state().status,
        SagaStatus::Compensated,
        "five attempts, then give up"
    );
    assert!(
        matches!(&s.events[1].body, SagaEventBody::BookingFailed { code, .. } if code == "RETRIES_EXHAUSTED")
    );
}

#[test]
fn the_deadline_compensates_but_waits_for_an_attempt_in_flight() {
    let mut def = booking_v1();
    def.deadline_ms = 10_000; // shorter than one attempt's time-out
    let mut s = through_with(def.clone(), 3);
    let book = s.last_command();
    // The saga's deadline passes while the booking is out.
    s.wake();
    assert_eq!(s.now, s.state().deadline);
    assert!(matches!(s.state().status, SagaStatus::Compensating { .. }));
    assert_eq!(
        s.commands.len(),
        4,
        "no cancel before the booking can no longer land"
    );
    let settles = book.deadline.plus_ms(def.reply_grace_ms);
    assert_eq!(s.state().wake_at, Some(settles));
    s.wake();
    let cancel = s.last_command();
    assert_eq!(
        (cancel.step.as_str(), cancel.kind),
        ("book_experience", CommandKind::Compensation)
    );
    match &cancel.operation {
        Operation::CancelReservation {
            reservation_id,
            external_id,
            ..
        } => {
            assert!(
                reservation_id.is_none(),
                "unknown, so the worker looks it up"
            );
            assert_eq!(external_id, &s.state().saga_id.to_string());
        }
        other => panic!("unexpected {other:?}"),
    }
    s.succeed_last();
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    let comps: Vec<&str> = s
        .commands
        .iter()
        .filter(|c| c.kind == CommandKind::Compensation)
        .map(|c| c.step.as_str())
        .collect();
    assert_eq!(comps, ["book_experience", "redeem_credits", "hold_slot"]);
    assert!(
        s.commands[4..]
            .iter()
            .all(|c| c.kind == CommandKind::Compensation),
        "no action after compensation began"
    );
}

#[test]
fn a_late_booking_reply_gives_the_cancel_its_reservation_id() {
    let mut def = booking_v1();
    def.deadline_ms = 10_000;
    let mut s = through_with(def, 3);
    let book = s.last_command();
    s.wake();
    assert_eq!(s.state().status.kind(), StatusKind::Compensating);
    s.reply(&book, success(&book)).unwrap();
    assert_eq!(s.history.last().unwrap().kind, HistoryKind::LateReply);
    s.wake();
    match &s.last_command().operation {
        Operation::CancelReservation { reservation_id, .. } => {
            assert_eq!(reservation_id.as_ref().unwrap().as_str(), "res-1")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn exhausted_compensation_needs_an_operator_who_can_resume_it() {
    let mut s = through(2);
    let redeem = s.last_command();
    s.reply(&redeem, business("INSUFFICIENT_POINTS")).unwrap();
    for _ in 0..12 {
        let c = s.last_command();
        assert_eq!(c.kind, CommandKind::Compensation);
        s.reply(&c, retryable()).unwrap();
        if s.state().status.kind() == StatusKind::NeedsOperator {
            break;
        }
        s.wake();
    }
    match &s.state().status {
        SagaStatus::NeedsOperator { reason, step, .. } => {
            assert_eq!(*reason, NeedsOperatorReason::CompensationExhausted);
            assert_eq!(step.as_str(), "hold_slot");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        s.state().wake_at,
        None,
        "it waits for a person, not a timer"
    );
    let before = s.commands.len();
    s.operator("op-1", OperatorAction::RetryNow, "SevenRooms is back")
        .unwrap();
    assert_eq!(s.commands.len(), before + 1);
    let entry = s
        .history
        .iter()
        .find(|h| h.kind == HistoryKind::OperatorAction)
        .unwrap();
    assert_eq!(entry.operator.as_ref().unwrap().as_str(), "ops.alice");
    assert_eq!(entry.reason.as_deref(), Some("SevenRooms is back"));
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
}

#[test]
fn a_refused_compensation_needs_an_operator() {
    let mut s = through(3);
    let book = s.last_command();
    s.reply(&book, business("SLOT_UNAVAILABLE")).unwrap();
    let void = s.last_command();
    s.reply(&void, business("RECEIPT_LOCKED")).unwrap();
    assert!(matches!(
        s.state().status,
        SagaStatus::NeedsOperator {
            reason: NeedsOperatorReason::CompensationRefused,
            ..
        }
    ));
    assert!(s.event_types().contains(&"SagaNeedsOperator"));
}

#[test]
fn a_downstream_that_is_down_makes_the_saga_wait_not_fail() {
    let mut s = through(1);
    let hold = s.last_command();
    s.reply(
        &hold,
        ReplyOutcome::Deferred {
            reason: "circuit open".into(),
            retry_after_ms: Some(5_000),
        },
    )
    .unwrap();
    match &s.state().status {
        SagaStatus::WaitingForDownstream {
            downstream,
            step,
            compensating: false,
            since,
        } => {
            assert_eq!(downstream, "SevenRooms");
            assert_eq!(step.as_str(), "hold_slot");
            assert_eq!(*since, Some(s.now), "since when it waits");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Far more rounds than the retry policy allows: waiting for a downstream spends none.
    for _ in 0..20 {
        let c = s.last_command();
        s.reply(
            &c,
            ReplyOutcome::RetryableFailure {
                reason: "expired while the circuit was open".into(),
                retry_after_ms: Some(10_000),
                downstream_unavailable: true,
            },
        )
        .unwrap();
        assert_eq!(s.state().status.kind(), StatusKind::WaitingForDownstream);
        s.wake();
    }
    s.succeed_last();
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
}

fn unavailable(unknown: bool) -> ReplyOutcome {
    if unknown {
        ReplyOutcome::UnknownOutcome {
            reason: "server error (503 Service Unavailable)".into(),
            downstream_unavailable: true,
        }
    } else {
        ReplyOutcome::RetryableFailure {
            reason: "circuit for sevenrooms is open".into(),
            retry_after_ms: Some(3_000),
            downstream_unavailable: true,
        }
    }
}

#[test]
fn a_booking_left_unknown_by_an_outage_is_looked_up_after_it_and_spends_nothing() {
    let mut s = through(3);
    let book = s.last_command();
    assert_eq!(book.kind, CommandKind::Action);
    s.reply(&book, unavailable(true)).unwrap();
    assert_eq!(s.state().status.kind(), StatusKind::WaitingForDownstream);
    // The lookup waits for the attempt to settle, then for the downstream: far more rounds
    // than the lookup's policy allows.
    for n in 0..20 {
        s.wake();
        let c = s.last_command();
        assert_eq!(c.kind, CommandKind::Reconcile, "round {n}");
        assert!(c.sent_at >= book.deadline, "not before the attempt settles");
        s.reply(&c, unavailable(n % 2 == 0)).unwrap();
        assert_eq!(s.state().status.kind(), StatusKind::WaitingForDownstream);
    }
    s.wake();
    let lookup = s.last_command();
    s.reply(
        &lookup,
        ReplyOutcome::NotApplied {
            reason: "no reservation with this external_id".into(),
        },
    )
    .unwrap();
    s.wake();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
    let step = &s.state().steps[3];
    assert_eq!(
        (
            step.action.sent,
            step.action.charged,
            step.reconcile.charged
        ),
        (2, 1, 0),
        "one attempt charged, as if there had been no outage"
    );
}

#[test]
fn a_hold_left_unknown_by_an_outage_is_tried_again_after_it_without_spending() {
    let mut s = through(1);
    for _ in 0..20 {
        let c = s.last_command();
        assert_eq!(c.step.as_str(), "hold_slot");
        s.reply(&c, unavailable(true)).unwrap();
        assert_eq!(s.state().status.kind(), StatusKind::WaitingForDownstream);
        s.wake();
    }
    s.succeed_last();
    assert_eq!(s.state().steps[1].action.charged, 1);
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
}

#[test]
fn after_a_long_outage_a_failure_is_retried_not_taken_for_a_spent_round() {
    let mut s = through(1);
    // Two minutes of waiting: twice the round's time budget.
    while s.now.millis_since(s.state().started_at) < 120_000 {
        let c = s.last_command();
        s.reply(&c, unavailable(false)).unwrap();
        s.wake();
    }
    let c = s.last_command();
    s.reply(&c, retryable()).unwrap();
    assert!(
        matches!(s.state().status, SagaStatus::Running { .. }),
        "{:?}",
        s.state().status
    );
    s.wake();
    s.succeed_last();
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
}

#[test]
fn a_booking_retried_after_a_lookup_that_waited_long_is_not_taken_for_a_spent_round() {
    let mut s = through(3);
    let book = s.last_command();
    // Unknown for an ordinary reason (a time-out), then the lookup meets an outage.
    s.reply(&book, unknown()).unwrap();
    s.wake();
    while s.now.millis_since(book.sent_at) < 120_000 {
        let c = s.last_command();
        assert_eq!(c.kind, CommandKind::Reconcile);
        s.reply(&c, unavailable(false)).unwrap();
        s.wake();
    }
    let lookup = s.last_command();
    s.reply(
        &lookup,
        ReplyOutcome::NotApplied {
            reason: "no reservation with this external_id".into(),
        },
    )
    .unwrap();
    assert!(
        matches!(s.state().status, SagaStatus::Running { .. }),
        "{:?}",
        s.state().status
    );
    s.wake();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
}

#[test]
fn a_compensation_whose_downstream_is_down_waits_and_finishes_after_it() {
    let mut s = through(3);
    let book = s.last_command();
    s.reply(&book, business("SLOT_UNAVAILABLE")).unwrap();
    // The void meets a Memberson outage for far longer than its retry policy would allow.
    for n in 0..40 {
        let c = s.last_command();
        assert_eq!(c.kind, CommandKind::Compensation);
        assert_eq!(c.step.as_str(), "redeem_credits");
        s.reply(&c, unavailable(n % 3 == 0)).unwrap();
        match &s.state().status {
            SagaStatus::WaitingForDownstream {
                compensating: true,
                since: Some(_),
                ..
            } => {}
            other => panic!("round {n}: {other:?}"),
        }
        s.wake();
    }
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    assert_eq!(
        s.state().waiting_since,
        None,
        "a finished saga waits for nothing"
    );
}

#[test]
fn waiting_for_a_downstream_ends_at_the_deadline() {
    let mut s = through(1);
    loop {
        let c = s.last_command();
        s.reply(
            &c,
            ReplyOutcome::RetryableFailure {
                reason: "circuit open".into(),
                retry_after_ms: Some(60_000),
                downstream_unavailable: true,
            },
        )
        .unwrap();
        s.wake();
        if s.state().status.kind() != StatusKind::WaitingForDownstream {
            break;
        }
    }
    assert!(s.now >= s.state().deadline);
    assert!(s.events.iter().any(|e| matches!(&e.body, SagaEventBody::BookingFailed { code, .. } if code == "DEADLINE_PASSED")));
}

#[test]
fn operators_cancel_resolve_and_are_refused_clearly() {
    // Cancel while running: undo and end cancelled.
    let mut s = through(2);
    let redeem = s.last_command();
    let err = s
        .operator("op-1", OperatorAction::RetryNow, "push it")
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Refused(ref m) if m.contains("in flight")),
        "{err}"
    );
    let err = s
        .operator("op-1", OperatorAction::Cancel, "  ")
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Refused(ref m) if m.contains("reason")),
        "{err}"
    );
    s.operator("op-2", OperatorAction::Cancel, "member called to cancel")
        .unwrap();
    let dup = s
        .operator("op-2", OperatorAction::Cancel, "member called to cancel")
        .unwrap();
    assert!(!dup.changed, "a repeated operator action changes nothing");
    s.reply(&redeem, business("INSUFFICIENT_POINTS")).unwrap(); // the redeem did not happen
    s.wake();
    s.succeed_last(); // release
    assert_eq!(s.state().status, SagaStatus::Cancelled);
    let err = s
        .operator("op-3", OperatorAction::ForceCompensation, "again")
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Refused(ref m) if m.contains("finished")),
        "{err}"
    );

    // Resolve by hand.
    let mut s = through(2);
    s.operator(
        "op-9",
        OperatorAction::Resolve {
            outcome: ResolvedOutcome::Confirmed,
        },
        "booked by phone",
    )
    .unwrap();
    assert_eq!(s.state().status, SagaStatus::Confirmed);
    match &s.events.last().unwrap().body {
        SagaEventBody::BookingConfirmed { resolved_by, .. } => {
            assert_eq!(resolved_by.as_deref(), Some("ops.alice: booked by phone"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn force_compensation_from_running() {
    let mut s = through(3);
    let book = s.last_command();
    s.operator("op-1", OperatorAction::ForceCompensation, "venue closed")
        .unwrap();
    assert!(s.events.iter().any(|e| matches!(&e.body, SagaEventBody::BookingFailed { code, .. } if code == "OPERATOR_COMPENSATION")));
    s.reply(&book, business("SLOT_UNAVAILABLE")).unwrap(); // settles: the booking never happened
    s.wake();
    s.succeed_last();
    s.succeed_last();
    let comps: Vec<&str> = s
        .commands
        .iter()
        .filter(|c| c.kind == CommandKind::Compensation)
        .map(|c| c.step.as_str())
        .collect();
    assert_eq!(comps, ["redeem_credits", "hold_slot"]);
    assert_eq!(s.state().status, SagaStatus::Compensated);
}

#[test]
fn compensation_that_outlives_its_deadline_needs_an_operator() {
    let mut s = through(2);
    let redeem = s.last_command();
    s.reply(&redeem, business("INSUFFICIENT_POINTS")).unwrap();
    loop {
        let c = s.last_command();
        s.reply(
            &c,
            ReplyOutcome::RetryableFailure {
                reason: "circuit open".into(),
                retry_after_ms: Some(300_000),
                downstream_unavailable: true,
            },
        )
        .unwrap();
        s.wake();
        if s.state().status.kind() == StatusKind::NeedsOperator {
            break;
        }
    }
    assert!(matches!(
        s.state().status,
        SagaStatus::NeedsOperator {
            reason: NeedsOperatorReason::DeadlinePassed,
            ..
        }
    ));
}

#[test]
fn an_unsettled_outcome_can_stop_for_an_operator_and_resume_on_a_late_reply() {
    let mut def = booking_v1();
    def.steps[3].on_error.reconcile_exhausted = como_engine::OnReconcileExhausted::NeedsOperator;
    let mut s = Saga::started(def, "req-1");
    for _ in 0..3 {
        s.succeed_last();
    }
    let book = s.last_command();
    s.reply(&book, unknown()).unwrap();
    while s.state().status.kind() == StatusKind::Reconciling {
        let d = s.wake();
        if let Some(c) = d.commands.last() {
            s.reply(c, unknown()).unwrap();
        }
    }
    assert!(matches!(
        s.state().status,
        SagaStatus::NeedsOperator {
            reason: NeedsOperatorReason::UnknownOutcome,
            ..
        }
    ));
    s.reply(&book, success(&book)).unwrap();
    assert_eq!(
        s.state().status,
        SagaStatus::Confirmed,
        "a late success settles it"
    );
}

#[test]
fn a_late_effect_after_the_step_was_passed_is_flagged() {
    // The engine trusts a definitive "did not happen"; if the downstream later says it did,
    // nobody would undo it, so a person must.
    let mut s = through(3);
    let book = s.last_command();
    s.reply(&book, business("SLOT_UNAVAILABLE")).unwrap();
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    s.reply(&book, success(&book)).unwrap();
    assert!(matches!(
        s.state().status,
        SagaStatus::NeedsOperator {
            reason: NeedsOperatorReason::LateEffect,
            ..
        }
    ));
    s.operator("op-1", OperatorAction::RetryNow, "cancel the stray booking")
        .unwrap();
    let cancel = s.last_command();
    assert_eq!(
        (cancel.step.as_str(), cancel.kind),
        ("book_experience", CommandKind::Compensation)
    );
    s.succeed_last();
    assert_eq!(s.state().status, SagaStatus::Compensated);
}

#[test]
fn malformed_inputs_are_errors_and_sagas_stay_pinned() {
    let mut s = through(1);
    let cmd = s.last_command();
    let mut other = cmd.clone();
    other.saga_id = request("req-other").saga_id();
    assert!(matches!(
        s.reply(&other, unknown()),
        Err(EngineError::InvalidInput(_))
    ));
    let mut future = cmd.clone();
    future.attempt = 7;
    assert!(matches!(
        s.reply(&future, unknown()),
        Err(EngineError::InvalidInput(_))
    ));
    let mut v2 = booking_v1();
    v2.version = 2;
    let err = como_engine::transition(&v2, s.state.as_ref(), &Input::Timer, s.now).unwrap_err();
    assert!(
        matches!(err, EngineError::DefinitionMismatch { .. }),
        "{err}"
    );
    assert_eq!(s.state().definition_version, 1);
    assert!(matches!(
        como_engine::transition(
            &booking_v1(),
            None,
            &Input::Timer,
            Timestamp::from_millis(T0)
        ),
        Err(EngineError::NoSaga)
    ));
}

#[test]
fn starting_twice_and_duplicate_replies_change_nothing() {
    let mut s = through(1);
    let again = s
        .apply(Input::Start {
            request: request("req-1"),
        })
        .unwrap();
    assert!(!again.changed);
    let hold = s.last_command();
    let first = s.reply(&hold, success(&hold)).unwrap();
    assert!(first.changed);
    let before = s.state().clone();
    let dup = s.reply(&hold, success(&hold)).unwrap();
    assert!(!dup.changed && dup.commands.is_empty() && dup.history.is_empty());
    assert_eq!(s.state(), &before);
}

#[test]
fn a_compensated_saga_is_audited_and_a_late_effect_found_is_undone_and_recorded() {
    let def = booking_v1();
    let mut s = refused_at_booking();
    assert_eq!(s.state().status, SagaStatus::Compensated);
    let ended = s.now;
    assert_eq!(
        s.state().wake_at,
        Some(ended.plus_ms(def.audit_after_ms[0])),
        "the first audit is due ten minutes after the end"
    );
    let before = s.commands.len();
    s.wake();
    // The booking's undo by external_id first, although the saga thinks it never took effect.
    let cancel = s.last_command();
    assert_eq!(s.commands.len(), before + 1);
    assert_eq!(
        (cancel.step.as_str(), cancel.kind),
        ("book_experience", CommandKind::Compensation)
    );
    assert!(matches!(
        cancel.operation,
        Operation::CancelReservation {
            reservation_id: None,
            ..
        }
    ));
    let undone = ReplyOutcome::Succeeded {
        output: StepOutput::Compensated {
            note: Some("reservation cancelled".into()),
            undone: true,
        },
    };
    s.reply(&cancel, undone).unwrap();
    assert!(
        s.history
            .iter()
            .any(|h| h.kind == HistoryKind::LateEffectUndone),
        "recorded as a late effect undone"
    );
    // Then the redemption's void by ReceiptNo; never the hold, which has no key.
    let void = s.last_command();
    assert_eq!(
        (void.step.as_str(), void.kind),
        ("redeem_credits", CommandKind::Compensation)
    );
    s.succeed_last();
    let audit = s.state().audit.clone().expect("audited");
    assert_eq!((audit.rounds, audit.undone), (1, 1));
    assert_eq!(
        s.state().status,
        SagaStatus::Compensated,
        "still compensated"
    );
    assert_eq!(
        s.state().wake_at,
        Some(ended.plus_ms(def.audit_after_ms[1])),
        "the second audit a day after the end"
    );
    // The second round finds nothing; then the saga has no timer left.
    s.wake();
    s.succeed_last();
    s.succeed_last();
    assert_eq!(s.state().audit.as_ref().map(|a| a.rounds), Some(2));
    assert_eq!(s.state().wake_at, None);
    let hold_releases = s
        .sent()
        .iter()
        .filter(|(step, kind)| step == "hold_slot" && *kind == CommandKind::Compensation)
        .count();
    assert_eq!(
        hold_releases, 1,
        "the hold is released by the compensation, never by the audit"
    );
}

#[test]
fn an_audit_that_is_refused_asks_for_an_operator_with_late_effect() {
    let mut s = refused_at_booking();
    s.wake();
    let cancel = s.last_command();
    s.reply(&cancel, business("PAST_CANCELLATION_CUTOFF"))
        .unwrap();
    match &s.state().phase {
        Phase::NeedsOperator { reason, detail, .. } => {
            assert_eq!(*reason, NeedsOperatorReason::LateEffect);
            assert!(detail.contains("book_experience"), "{detail}");
        }
        other => panic!("needs an operator, not {other:?}"),
    }
}

#[test]
fn erasing_a_running_saga_waits_for_its_end_and_keeps_the_money_facts() {
    use como_schemas::{ErasureReason, Guest};
    let mut s = through(2);
    let guest_before = s.state().request.guest.clone();
    // Running: the booking still needs the guest, so the erasure waits.
    let d = s
        .apply(Input::Erase {
            reason: ErasureReason::MemberRequest,
        })
        .unwrap();
    assert_eq!(s.state().request.guest, guest_before);
    assert_eq!(
        s.state().erase_when_done,
        Some(ErasureReason::MemberRequest)
    );
    assert!(
        d.history
            .iter()
            .any(|h| h.kind == HistoryKind::ErasureRequested)
    );
    assert!(d.commands.is_empty(), "an erasure sends nothing");
    // Asked again while running: nothing more.
    let again = s
        .apply(Input::Erase {
            reason: ErasureReason::Retention,
        })
        .unwrap();
    assert!(!again.changed);
    // The booking goes on with the guest, and the transition that finishes it erases it.
    let book = s.succeed_last();
    assert!(matches!(
        &book.commands[0].operation,
        Operation::BookExperience { guest, .. } if *guest == guest_before
    ));
    let done = s.succeed_last();
    assert_eq!(s.state().status.kind(), StatusKind::Confirmed);
    let erased = s
        .state()
        .request
        .guest
        .erasure()
        .expect("erased at the end");
    assert_eq!(erased.reason, ErasureReason::MemberRequest);
    assert_eq!(s.state().erase_when_done, None);
    assert!(
        done.history
            .iter()
            .any(|h| h.kind == HistoryKind::PersonalDataErased)
    );
    // The money facts stay; erasing a finished saga again changes nothing.
    assert_eq!(
        s.state().request.quoted_credits,
        request("req-1").quoted_credits
    );
    assert!(
        s.state()
            .steps
            .iter()
            .all(|st| st.output.is_some() || st.name.as_str() == "confirm")
    );
    let again = s
        .apply(Input::Erase {
            reason: ErasureReason::Retention,
        })
        .unwrap();
    assert!(!again.changed);
    assert!(matches!(s.state().request.guest, Guest::Erased { .. }));
}

#[test]
fn erasing_a_finished_saga_is_at_once() {
    use como_schemas::ErasureReason;
    let mut s = refused_at_booking();
    assert_eq!(s.state().status.kind(), StatusKind::Compensated);
    let d = s
        .apply(Input::Erase {
            reason: ErasureReason::Retention,
        })
        .unwrap();
    assert!(d.changed);
    assert_eq!(
        s.state().request.guest.erasure().map(|e| e.reason),
        Some(ErasureReason::Retention)
    );
    assert!(
        d.history
            .iter()
            .any(|h| h.kind == HistoryKind::PersonalDataErased)
    );
    assert_eq!(
        s.state().status.kind(),
        StatusKind::Compensated,
        "its status stays"
    );
}
