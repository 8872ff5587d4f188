//! Replies as the orchestrator reads them off the reply queue
//! (`InvalidInput::parse_json::<WorkerReply>`), then applied to a saga as `handle_reply` does.
//! An accepted reply round-trips; aimed at the command a saga is waiting on (at each step of the
//! happy path, and during a compensation) it never makes the engine panic, and whatever the
//! engine decides stores and sends: the state round-trips and every command it sends is one
//! the worker reads back unchanged.
#![no_main]

use std::sync::OnceLock;

use chrono::NaiveDate;
use como_engine::{Input, SagaState, como, transition};
use como_schemas::{
    CommandKind, Credits, HoldId, InvalidInput, ReceiptNo, ReplyOutcome, StepOutput, Timestamp,
    TransactionId, WorkerCommand, WorkerReply, examples,
};
use libfuzzer_sys::fuzz_target;

/// Sagas waiting on a command, and that command.
fn waiting() -> &'static [(SagaState, WorkerCommand)] {
    static WAITING: OnceLock<Vec<(SagaState, WorkerCommand)>> = OnceLock::new();
    WAITING.get_or_init(|| {
        let def = como::current();
        let now = Timestamp::from_millis(1_795_000_000_000);
        let request =
            examples::booking_request("fuzz-1", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
        let d = transition(&def, None, &Input::Start { request }, now).unwrap();
        let mut at = vec![(d.state.clone(), d.commands[0].clone())];
        let outputs = [
            StepOutput::CreditsChecked {
                balance: Credits::new(5_000).unwrap(),
            },
            StepOutput::SlotHeld {
                hold_id: HoldId::parse("hold-1").unwrap(),
                sevenrooms_api: None,
            },
            StepOutput::CreditsRedeemed {
                transaction_id: TransactionId::parse("TX1").unwrap(),
                receipt_no: ReceiptNo::parse("CS-1").unwrap(),
                balance: None,
            },
        ];
        let (mut state, mut command) = at[0].clone();
        for output in outputs {
            let reply = examples::reply(&command, ReplyOutcome::Succeeded { output });
            let d = transition(&def, Some(&state), &Input::Reply { reply }, now).unwrap();
            state = d.state;
            command = d.commands[0].clone();
            at.push((state.clone(), command.clone()));
        }
        // The booking is refused: the saga now undoes the redemption.
        let refused = ReplyOutcome::BusinessFailure {
            code: "SLOT_UNAVAILABLE".into(),
            message: "gone".into(),
        };
        let reply = examples::reply(&command, refused);
        let d = transition(&def, Some(&state), &Input::Reply { reply }, now).unwrap();
        assert_eq!(d.commands[0].kind, CommandKind::Compensation);
        at.push((d.state, d.commands[0].clone()));
        at
    })
}

fn check_decision(decision: &como_engine::Decision) {
    let text = serde_json::to_vec(&decision.state).unwrap();
    let back: SagaState = serde_json::from_slice(&text).expect("a stored state reads back");
    assert_eq!(back, decision.state);
    for command in &decision.commands {
        let text = serde_json::to_vec(command).unwrap();
        let back: WorkerCommand =
            InvalidInput::parse_json(&text).expect("the worker reads what the engine sends");
        assert_eq!(&back, command);
    }
}

fuzz_target!(|data: &[u8]| {
    let reply: WorkerReply = match InvalidInput::parse_json(data) {
        Ok(r) => r,
        Err(invalid) => {
            assert!(!invalid.field.is_empty() && !invalid.reason.is_empty());
            return;
        }
    };
    let text = serde_json::to_vec(&reply).expect("an accepted reply serialises");
    let back: WorkerReply = InvalidInput::parse_json(&text).expect("and parses again");
    assert_eq!(back, reply);

    let def = como::current();
    let sagas = waiting();
    let (state, command) = &sagas[data.len() % sagas.len()];
    let now = command.sent_at.plus_ms(100);
    // As it came: for another saga or attempt, the engine refuses or ignores it.
    if let Ok(d) = transition(
        &def,
        Some(state),
        &Input::Reply {
            reply: reply.clone(),
        },
        now,
    ) {
        check_decision(&d);
    }
    // Aimed at the command the saga waits on: any outcome at all.
    let aimed = WorkerReply {
        command_id: command.command_id.clone(),
        saga_id: command.saga_id,
        step: command.step.clone(),
        kind: command.kind,
        attempt: command.attempt,
        worker: command.worker,
        ..reply
    };
    if let Ok(d) = transition(&def, Some(state), &Input::Reply { reply: aimed }, now) {
        check_decision(&d);
    }
});
