//! What can happen to a saga.

use como_schemas::{BookingRequested, ErasureReason, OperatorId, WorkerReply};
use serde::{Deserialize, Serialize};

/// One input to the transition function. The current time comes alongside, never from a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A new booking request. Starting a saga that exists changes nothing.
    Start { request: BookingRequested },
    /// A worker's reply to one command attempt.
    Reply { reply: WorkerReply },
    /// The saga's wake-up time came (a step time-out, a retry, a deadline). A timer that
    /// fires early, late or twice is harmless: only what is due acts.
    Timer,
    /// A person acted.
    Operator { command: OperatorCommand },
    /// Erase the guest's personal data: at once for a finished saga, when it finishes for a
    /// running one (the booking still needs the guest). Erasing twice changes nothing.
    Erase { reason: ErasureReason },
}

/// An operator's action, with who and why; `action_id` makes a repeated submission harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCommand {
    pub action_id: String,
    pub operator: OperatorId,
    pub reason: String,
    pub action: OperatorAction,
}

/// What an operator can do to a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OperatorAction {
    /// Send the pending attempt now, or resume a saga that needs an operator with a fresh
    /// retry budget.
    RetryNow,
    /// Stop going forward and undo what was done.
    ForceCompensation,
    /// Undo what was done and end as cancelled.
    Cancel,
    /// Declare the outcome, after fixing things by hand.
    Resolve { outcome: ResolvedOutcome },
}

/// The outcomes an operator may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedOutcome {
    Confirmed,
    Compensated,
}

impl OperatorAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            OperatorAction::RetryNow => "retry_now",
            OperatorAction::ForceCompensation => "force_compensation",
            OperatorAction::Cancel => "cancel",
            OperatorAction::Resolve {
                outcome: ResolvedOutcome::Confirmed,
            } => "resolve_confirmed",
            OperatorAction::Resolve {
                outcome: ResolvedOutcome::Compensated,
            } => "resolve_compensated",
        }
    }
}
