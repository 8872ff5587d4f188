//! A small driver for the engine in tests: holds one saga, the clock, and everything the
//! engine sent, published and recorded.
#![allow(dead_code)]

use chrono::NaiveDate;
use como_engine::{
    Decision, EngineError, HistoryEntry, Input, OperatorAction, OperatorCommand, SagaDefinition,
    SagaState, transition,
};
use como_schemas::{
    BookingRequested, CommandKind, OperatorId, ReplyOutcome, SagaEvent, StepOutput, Timestamp,
    WorkerCommand, examples,
};

pub const T0: i64 = 1_790_000_000_000;

pub fn request(id: &str) -> BookingRequested {
    examples::booking_request(id, NaiveDate::from_ymd_opt(2026, 12, 24).unwrap())
}

pub struct Saga {
    pub def: SagaDefinition,
    pub state: Option<SagaState>,
    pub now: Timestamp,
    pub commands: Vec<WorkerCommand>,
    pub events: Vec<SagaEvent>,
    pub history: Vec<HistoryEntry>,
}

impl Saga {
    pub fn new(def: SagaDefinition) -> Self {
        Self {
            def,
            state: None,
            now: Timestamp::from_millis(T0),
            commands: Vec::new(),
            events: Vec::new(),
            history: Vec::new(),
        }
    }

    pub fn started(def: SagaDefinition, id: &str) -> Self {
        let mut s = Self::new(def);
        s.apply(Input::Start {
            request: request(id),
        })
        .unwrap();
        s
    }

    pub fn state(&self) -> &SagaState {
        self.state.as_ref().expect("started")
    }

    pub fn apply(&mut self, input: Input) -> Result<Decision, EngineError> {
        let d = transition(&self.def, self.state.as_ref(), &input, self.now)?;
        self.commands.extend(d.commands.iter().cloned());
        self.events.extend(d.events.iter().cloned());
        self.history.extend(d.history.iter().cloned());
        self.state = Some(d.state.clone());
        Ok(d)
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
    }

    /// Move the clock to the saga's wake-up time and fire the timer.
    pub fn wake(&mut self) -> Decision {
        let at = self.state().wake_at.expect("the saga has a wake-up time");
        if at > self.now {
            self.now = at;
        }
        self.apply(Input::Timer).unwrap()
    }

    pub fn last_command(&self) -> WorkerCommand {
        self.commands.last().cloned().expect("a command was sent")
    }

    pub fn reply(
        &mut self,
        cmd: &WorkerCommand,
        outcome: ReplyOutcome,
    ) -> Result<Decision, EngineError> {
        let mut reply = examples::reply(cmd, outcome);
        reply.replied_at = self.now;
        self.apply(Input::Reply { reply })
    }

    /// Reply to the latest command with success and the output its operation produces.
    pub fn succeed_last(&mut self) -> Decision {
        let cmd = self.last_command();
        self.reply(&cmd, success(&cmd)).unwrap()
    }

    pub fn operator(
        &mut self,
        id: &str,
        action: OperatorAction,
        reason: &str,
    ) -> Result<Decision, EngineError> {
        self.apply(Input::Operator {
            command: OperatorCommand {
                action_id: id.into(),
                operator: OperatorId::parse("ops.alice").unwrap(),
                reason: reason.into(),
                action,
            },
        })
    }

    pub fn event_types(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.body.type_name()).collect()
    }

    /// (step, kind) of every command sent, in order.
    pub fn sent(&self) -> Vec<(String, CommandKind)> {
        self.commands
            .iter()
            .map(|c| (c.step.to_string(), c.kind))
            .collect()
    }
}

/// A plausible successful output for a command.
pub fn success(cmd: &WorkerCommand) -> ReplyOutcome {
    use como_schemas::{Credits, HoldId, OperationKind, ReceiptNo, ReservationId, TransactionId};
    let output = match (cmd.kind, cmd.operation.kind()) {
        (CommandKind::Compensation, _) => StepOutput::Compensated {
            note: None,
            undone: false,
        },
        (_, OperationKind::CheckCredits) => StepOutput::CreditsChecked {
            balance: Credits::new(5_000).unwrap(),
        },
        (_, OperationKind::HoldSlot) => StepOutput::SlotHeld {
            hold_id: HoldId::parse(format!("hold-{}", cmd.attempt)).unwrap(),
            sevenrooms_api: None,
        },
        (_, OperationKind::RedeemCredits | OperationKind::ReplayRedemption) => {
            StepOutput::CreditsRedeemed {
                transaction_id: TransactionId::parse("tx-1").unwrap(),
                receipt_no: ReceiptNo::for_saga(cmd.saga_id),
                balance: None,
            }
        }
        (_, OperationKind::BookExperience | OperationKind::FindReservation) => {
            StepOutput::ExperienceBooked {
                reservation_id: ReservationId::parse("res-1").unwrap(),
            }
        }
        _ => StepOutput::Done,
    };
    ReplyOutcome::Succeeded { output }
}

pub fn business(code: &str) -> ReplyOutcome {
    ReplyOutcome::BusinessFailure {
        code: code.into(),
        message: format!("{code} (test)"),
    }
}

pub fn retryable() -> ReplyOutcome {
    ReplyOutcome::RetryableFailure {
        reason: "503".into(),
        retry_after_ms: None,
        downstream_unavailable: false,
    }
}

pub fn unknown() -> ReplyOutcome {
    ReplyOutcome::UnknownOutcome {
        reason: "timed out after sending".into(),
        downstream_unavailable: false,
    }
}
