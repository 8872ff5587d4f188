//! The views of a saga (`como_orchestrator::view`), built from real engine transitions at each
//! status the outside cares about, and their JSON.

use chrono::NaiveDate;
use como_engine::{
    FailureCode, HistoryEntry, HistoryKind, Input, SagaDefinition, SagaState, como, transition,
};
use como_orchestrator::view::{HistoryView, SagaView, StatusView, StepProgress};
use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{CommandKind, ReplyOutcome, Timestamp, WorkerCommand, examples};
use serde_json::{Value, json};

/// One saga driven through the engine, with everything it sent and recorded.
struct Saga {
    def: SagaDefinition,
    state: SagaState,
    now: Timestamp,
    commands: Vec<WorkerCommand>,
    history: Vec<HistoryEntry>,
}

impl Saga {
    fn start() -> Self {
        let def = como::booking_v1();
        let now = Timestamp::from_millis(1_790_000_000_000);
        let request =
            examples::booking_request("view-test", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
        let d = transition(&def, None, &Input::Start { request }, now).unwrap();
        Saga {
            def,
            state: d.state,
            now,
            commands: d.commands,
            history: d.history,
        }
    }

    fn apply(&mut self, input: Input) {
        let d = transition(&self.def, Some(&self.state), &input, self.now).unwrap();
        assert!(d.changed, "{:?}", d.ignored);
        self.state = d.state;
        self.commands.extend(d.commands);
        self.history.extend(d.history);
    }

    fn reply(&mut self, outcome: ReplyOutcome) {
        self.now = self.now.plus_ms(250);
        let cmd = self.commands.last().cloned().expect("a command is out");
        let mut reply = examples::reply(&cmd, outcome);
        reply.replied_at = self.now;
        self.apply(Input::Reply { reply });
    }

    fn succeed(&mut self) {
        let cmd = self.commands.last().cloned().expect("a command is out");
        self.reply(examples::success(&cmd));
    }

    /// Move the clock to the saga's wake-up time and fire the timer.
    fn wake(&mut self) {
        self.now = self.state.wake_at.expect("a wake-up time").max(self.now);
        self.apply(Input::Timer);
    }

    fn view(&self) -> SagaView {
        SagaView::of(&self.state, &self.history)
    }
}

fn business(code: &str) -> ReplyOutcome {
    ReplyOutcome::BusinessFailure {
        code: code.into(),
        message: format!("{code} (test)"),
    }
}

fn progress(view: &SagaView) -> Vec<StepProgress> {
    view.steps.iter().map(|s| s.state).collect()
}

fn json_of(view: &SagaView) -> Value {
    serde_json::to_value(view).unwrap()
}

/// The history views of one kind.
fn entries(view: &SagaView, kind: HistoryKind) -> Vec<HistoryView> {
    let history = view.history.as_ref().expect("the history was given");
    history.iter().filter(|h| h.kind == kind).cloned().collect()
}

#[test]
fn a_running_saga() {
    let s = Saga::start();
    let v = s.view();
    assert_eq!(v.saga_id, s.state.saga_id);
    assert_eq!(v.current_step.as_ref().unwrap().as_str(), "check_credits");
    assert_eq!(
        progress(&v),
        [
            StepProgress::Running,
            StepProgress::Pending,
            StepProgress::Pending,
            StepProgress::Pending,
            StepProgress::Pending,
        ]
    );
    assert_eq!(v.steps[0].attempts.action.sent, 1);
    assert_eq!(v.steps[0].attempts.action.charged, 1);

    let j = json_of(&v);
    assert_eq!(
        j["status"],
        json!({"status": "running", "step": "check_credits", "attempt": 1})
    );
    // The request without the guest; timestamps as RFC 3339 fields.
    assert_eq!(
        j["request"],
        json!({
            "request_id": "view-test",
            "member_no": "M100001",
            "venue_id": "como-cuisine",
            "date": "2026-12-24",
            "time": "19:30",
            "party_size": 2,
            "credits": 1200,
        })
    );
    assert!(!j.to_string().contains("Mei Ling"), "no personal data");
    assert_eq!(j["started_at"], "2026-09-21T14:13:20.000Z");
    assert_eq!(j["deadline"], s.state.deadline.to_string());
    assert_eq!(j["next_wake_at"], s.state.wake_at.unwrap().to_string());
    assert!(j.get("needs_operator_reason").is_none());
    assert_eq!(j["history"][0]["kind"], "started");
    assert_eq!(j["history"][1]["kind"], "command_sent");
    assert_eq!(j["history"][1]["command"], "action");
    assert_eq!(j["history"][1]["attempt"], 1);
    // What it waits for: the reply to the check's first command, sent when the history says.
    assert_eq!(j["waiting_on"]["on"], "reply");
    assert_eq!(j["waiting_on"]["step"], "check_credits");
    assert_eq!(j["waiting_on"]["command"], "action");
    assert_eq!(j["waiting_on"]["attempt"], 1);
    assert_eq!(j["waiting_on"]["worker"], "crm");
    assert_eq!(
        j["waiting_on"]["command_id"],
        format!("{}:check_credits:action:1", s.state.saga_id)
    );
    assert_eq!(j["waiting_on"]["since"], j["history"][1]["at"]);
    assert_eq!(
        j["waiting_on"]["timeout_at"],
        s.state.wake_at.unwrap().to_string()
    );
    assert_eq!(j["waiting_on"]["deadline"], s.state.deadline.to_string());

    // Without its history, the view says nothing about history.
    let bare = serde_json::to_value(SagaView::from(&s.state)).unwrap();
    assert!(bare.get("history").is_none());
    assert_eq!(bare["status"], j["status"]);
}

#[test]
fn a_saga_waiting_for_its_downstream() {
    let mut s = Saga::start();
    s.reply(ReplyOutcome::RetryableFailure {
        reason: "Memberson circuit open".into(),
        retry_after_ms: Some(30_000),
        downstream_unavailable: true,
    });
    let since = s.now;
    let v = s.view();
    let StatusView::WaitingForDownstream {
        step,
        downstream,
        compensating,
        since: Some(at),
    } = &v.status
    else {
        panic!("waiting for downstream with since: {:?}", v.status);
    };
    assert_eq!(
        (step.as_str(), downstream.as_str(), *compensating, *at),
        ("check_credits", "Memberson", false, since)
    );
    assert_eq!(
        json_of(&v)["status"],
        json!({
            "status": "waiting_for_downstream",
            "step": "check_credits",
            "downstream": "Memberson",
            "compensating": false,
            "since": since.to_string(),
        })
    );
    // The wait costs no attempt.
    assert_eq!(v.steps[0].attempts.action.charged, 1);
    assert_eq!(
        v.steps[0].last_error.as_deref(),
        None,
        "an outage is not the step's error"
    );

    // "until {at}" and "at {at}" in the engine's details come out as fields.
    let retry_at = since.plus_ms(30_000);
    let waiting = entries(&v, HistoryKind::WaitingForDownstream);
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].until, waiting[0].detail.as_deref()),
        (Some(retry_at), None)
    );
    let scheduled = entries(&v, HistoryKind::RetryScheduled);
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].scheduled_at, Some(retry_at));
    assert_eq!(scheduled[0].attempt, Some(2));
    let j = serde_json::to_value(&waiting[0]).unwrap();
    assert_eq!(j["until"], retry_at.to_string());
    assert!(j.get("detail").is_none());
    // The raw history still holds the text it always did.
    let raw = s
        .history
        .iter()
        .find(|h| h.kind == HistoryKind::WaitingForDownstream)
        .unwrap();
    assert_eq!(raw.detail, Some(format!("until {retry_at}")));

    // The retry goes out free; the saga still waits, since the same moment, until the
    // downstream answers.
    s.wake();
    let v = s.view();
    assert_eq!(v.steps[0].attempts.action.sent, 2);
    assert_eq!(v.steps[0].attempts.action.charged, 1);
    assert_eq!(json_of(&v)["status"]["since"], since.to_string());
    s.succeed();
    let v = s.view();
    assert_eq!(
        json_of(&v)["status"],
        json!({"status": "running", "step": "hold_slot", "attempt": 1})
    );
    assert_eq!(v.steps[0].state, StepProgress::Done);
}

/// Check credits and hold the slot, then the redemption is refused: the hold is released.
fn refused_at_redemption() -> Saga {
    let mut s = Saga::start();
    s.succeed(); // check_credits
    s.succeed(); // hold_slot
    s.reply(business("INSUFFICIENT_POINTS")); // redeem_credits
    s
}

#[test]
fn a_compensating_saga() {
    let mut s = refused_at_redemption();
    // The compensation waits for the refused step's attempts to settle, then goes out.
    if s.commands.last().unwrap().kind != CommandKind::Compensation {
        s.wake();
    }
    let v = s.view();
    assert_eq!(
        v.status,
        StatusView::Compensating {
            step: como_schemas::StepName::parse("hold_slot").unwrap(),
            attempt: 1,
            ending_as: Some(CompensatedAs::Compensated),
        }
    );
    assert_eq!(v.current_step.as_ref().unwrap().as_str(), "hold_slot");
    assert_eq!(
        progress(&v),
        [
            StepProgress::Done,
            StepProgress::Compensating,
            StepProgress::Failed,
            StepProgress::Skipped,
            StepProgress::Skipped,
        ]
    );
    assert_eq!(
        v.steps[2].last_error.as_deref(),
        Some("INSUFFICIENT_POINTS: INSUFFICIENT_POINTS (test)")
    );
    assert_eq!(v.steps[1].attempts.compensation.sent, 1);
    assert!(v.compensation_deadline.is_some());

    let j = json_of(&v);
    assert_eq!(
        j["status"],
        json!({
            "status": "compensating",
            "step": "hold_slot",
            "attempt": 1,
            "ending_as": "compensated",
        })
    );
    assert_eq!(j["steps"][2]["state"], "failed");
    assert_eq!(j["steps"][2]["effect"], "not_applied");

    // The failure code comes out as a field, written as the downstream wrote it.
    let started = entries(&v, HistoryKind::CompensationStarted);
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].code,
        Some(FailureCode::Business("INSUFFICIENT_POINTS".into()))
    );
    let j = serde_json::to_value(&started[0]).unwrap();
    assert_eq!(j["code"], "INSUFFICIENT_POINTS");
    assert_eq!(j["step"], "redeem_credits");
    assert!(j.get("detail").is_none());

    // The hold released, the saga ends compensated.
    s.succeed();
    let v = s.view();
    assert_eq!(v.status, StatusView::Compensated);
    assert_eq!(v.current_step, None);
    assert_eq!(v.steps[1].state, StepProgress::Compensated);
    assert_eq!(json_of(&v)["status"], json!({"status": "compensated"}));
}

#[test]
fn a_confirmed_saga() {
    let mut s = Saga::start();
    for _ in 0..4 {
        s.succeed();
    }
    let v = s.view();
    assert_eq!(v.status, StatusView::Confirmed);
    assert_eq!(v.current_step, None);
    assert_eq!(v.next_wake_at, None);
    assert!(progress(&v).iter().all(|p| *p == StepProgress::Done));
    let j = json_of(&v);
    assert_eq!(j["status"], json!({"status": "confirmed"}));
    assert!(j.get("current_step").is_none());
    assert_eq!(entries(&v, HistoryKind::Confirmed).len(), 1);
    assert_eq!(j["transitions"], s.state.transitions);
}

#[test]
fn a_saga_that_needs_an_operator() {
    let mut s = refused_at_redemption();
    if s.commands.last().unwrap().kind != CommandKind::Compensation {
        s.wake();
    }
    // The hold cannot be released: a person must look.
    s.reply(business("PAST_CANCELLATION_CUTOFF"));
    let v = s.view();
    let StatusView::NeedsOperator {
        reason,
        step,
        detail,
        compensating,
    } = &v.status
    else {
        panic!("needs operator: {:?}", v.status);
    };
    assert_eq!(*reason, NeedsOperatorReason::CompensationRefused);
    assert_eq!(step.as_str(), "hold_slot");
    assert!(detail.contains("PAST_CANCELLATION_CUTOFF"), "{detail}");
    assert_eq!(*compensating, Some(CompensatedAs::Compensated));
    assert_eq!(
        v.needs_operator_reason,
        Some(NeedsOperatorReason::CompensationRefused)
    );
    assert_eq!(v.steps[1].state, StepProgress::Stopped);
    assert_eq!(v.next_wake_at, None);

    let j = json_of(&v);
    assert_eq!(j["status"]["status"], "needs_operator");
    assert_eq!(j["status"]["reason"], "compensation_refused");
    assert_eq!(j["status"]["compensating"], "compensated");
    assert_eq!(j["needs_operator_reason"], "compensation_refused");
    assert_eq!(j["waiting_on"]["on"], "operator");
    assert_eq!(j["waiting_on"]["reason"], "compensation_refused");

    let stopped = entries(&v, HistoryKind::NeedsOperator);
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        (
            stopped[0].needs_operator_reason,
            stopped[0].detail.as_deref()
        ),
        (Some(NeedsOperatorReason::CompensationRefused), None)
    );
    assert!(stopped[0].error.as_deref().unwrap().contains("hold_slot"));
}

/// An operator's action shows who acted and why.
#[test]
fn an_operator_action_names_the_operator() {
    let mut s = Saga::start();
    s.apply(Input::Operator {
        command: como_engine::OperatorCommand {
            action_id: "op-1".into(),
            operator: como_schemas::OperatorId::parse("ops.alice").unwrap(),
            reason: "member asked".into(),
            action: como_engine::OperatorAction::Cancel,
        },
    });
    let v = s.view();
    let acted = entries(&v, HistoryKind::OperatorAction);
    assert_eq!(acted.len(), 1);
    assert_eq!(acted[0].operator.as_ref().unwrap().as_str(), "ops.alice");
    assert_eq!(acted[0].reason.as_deref(), Some("member asked"));
    assert_eq!(acted[0].detail.as_deref(), Some("cancel"));
    let started = entries(&v, HistoryKind::CompensationStarted);
    assert_eq!(started[0].code, Some(FailureCode::Cancelled));
}

#[test]
fn step_durations_run_from_the_first_command_to_the_step_s_end() {
    use como_orchestrator::view::step_durations;
    let mut s = Saga::start();
    s.succeed(); // check_credits: 250 ms
    // hold_slot: fails once, retried after its back-off, then holds.
    s.reply(ReplyOutcome::RetryableFailure {
        reason: "HTTP 503".into(),
        retry_after_ms: None,
        downstream_unavailable: false,
    });
    s.wake();
    s.succeed();
    s.reply(business("INSUFFICIENT_POINTS")); // redeem_credits: refused, not finished
    if s.commands.last().unwrap().kind != CommandKind::Compensation {
        s.wake();
    }
    s.succeed(); // the hold released
    let got: Vec<(String, CommandKind, u64, u32)> = step_durations(&s.history)
        .into_iter()
        .map(|d| (d.step.to_string(), d.command, d.millis, d.attempts))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got[0],
        ("check_credits".into(), CommandKind::Action, 250, 1)
    );
    let (step, kind, millis, attempts) = &got[1];
    assert_eq!(
        (step.as_str(), *kind, *attempts),
        ("hold_slot", CommandKind::Action, 2)
    );
    assert!(*millis > 500, "the back-off counts: {got:?}");
    let (step, kind, _, attempts) = &got[2];
    assert_eq!(
        (step.as_str(), *kind, *attempts),
        ("hold_slot", CommandKind::Compensation, 1)
    );
}
