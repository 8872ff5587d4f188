//! A saga definition is data: ordered steps, each with its action, its compensation (or none),
//! a reconciliation for unknown outcomes (or none), a retry policy, a time-out per attempt, and
//! how each class of error is handled. A running saga is pinned to the `(name, version)` it
//! started with; a new version is a new definition, never an edit of an old one.

use como_schemas::{CommandKind, OperationKind, StepName};
use serde::{Deserialize, Serialize};

/// A whole saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaDefinition {
    pub name: String,
    pub version: u32,
    pub steps: Vec<StepDefinition>,
    /// From the start: past it, a saga still moving forward compensates.
    pub deadline_ms: u64,
    /// From the moment compensation begins: past it, a saga still compensating stops and
    /// asks for an operator (it bounds waiting for a downstream that never comes back).
    pub compensation_deadline_ms: u64,
    /// How long after a command's own deadline the engine still waits for its reply before it
    /// counts the attempt as timed out. Covers queue and clock differences between processes.
    pub reply_grace_ms: u64,
    /// Late-effect audits, each this long after the saga ended compensated or cancelled: the
    /// compensations that find their effect by key are issued again, so that an action that
    /// landed after the saga gave up on it (a downstream can be slower than any deadline we
    /// assume) is undone. Strictly increasing; empty for none.
    #[serde(default)]
    pub audit_after_ms: Vec<u64>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDefinition {
    pub name: StepName,
    pub action: OperationKind,
    pub compensation: Option<CompensationDefinition>,
    /// How to find out whether the action took effect when its outcome is unknown.
    pub reconcile: Option<OperationKind>,
    /// For the action, and separately for each round of reconciliation.
    pub retry: RetryPolicy,
    /// How long one attempt of the action (or of a reconciliation) may take.
    pub timeout_ms: u64,
    pub on_error: ErrorHandling,
}

impl StepDefinition {
    /// The operation a command of `kind` runs for this step (a lookup without an operation of
    /// its own repeats the action, which is idempotent; so does an undo without one).
    pub fn operation(&self, kind: CommandKind) -> OperationKind {
        match kind {
            CommandKind::Action => self.action,
            CommandKind::Reconcile => self.reconcile.unwrap_or(self.action),
            CommandKind::Compensation => self
                .compensation
                .as_ref()
                .map_or(self.action, |c| c.operation),
        }
    }
}

/// How a step is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationDefinition {
    pub operation: OperationKind,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
}

/// Exponential backoff with jitter, bounded by attempts and by total time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub initial_backoff_ms: u64,
    /// 200 doubles the delay each retry.
    pub multiplier_percent: u32,
    pub max_backoff_ms: u64,
    /// Each delay is moved up or down by up to this share of itself.
    pub jitter_percent: u8,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No new attempt starts later than this after the first one was sent.
    pub max_total_ms: u64,
}

/// What to do with each class of error an action can meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorHandling {
    /// The downstream refused for good (insufficient points, slot taken).
    pub business: Handling,
    /// It did not take effect and may work later (429, 503 before the effect, circuit open).
    pub retryable: Handling,
    /// It may have taken effect (5xx to a write, a time-out after sending).
    pub unknown: Handling,
    /// No reply came before the attempt's time-out.
    pub timeout: Handling,
    /// Reconciliation kept failing until its policy ran out.
    pub reconcile_exhausted: OnReconcileExhausted,
}

/// The response to an error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    /// Try the action again (with the same idempotency key) while the policy allows, then
    /// compensate.
    Retry,
    /// Give up on the saga and undo what was done.
    Compensate,
    /// Look the effect up first; if it is not there, retry; if it is, go on.
    Reconcile,
}

/// When an unknown outcome cannot be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReconcileExhausted {
    /// Compensate, counting the step as possibly done (its compensation copes with nothing to
    /// undo).
    Compensate,
    /// Stop and ask a person.
    NeedsOperator,
}

/// Why a definition cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga definition {name} v{version}: {problem}")]
pub struct InvalidDefinition {
    pub name: String,
    pub version: u32,
    pub problem: String,
}

impl SagaDefinition {
    pub fn step_index(&self, name: &StepName) -> Option<usize> {
        self.steps.iter().position(|s| &s.name == name)
    }

    /// Checks what the engine relies on: unique step names, worker operations where a worker
    /// must act, a local confirmation as the last step and nowhere else, reconciliation where
    /// a handling asks for it, and time-outs and attempts that are not zero.
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        let fail = |problem: String| InvalidDefinition {
            name: self.name.clone(),
            version: self.version,
            problem,
        };
        let Some(last) = self.steps.last() else {
            return Err(fail("has no steps".into()));
        };
        if last.action != OperationKind::PublishConfirmation {
            return Err(fail("the last step must be the local confirmation".into()));
        }
        if self.deadline_ms == 0 || self.compensation_deadline_ms == 0 {
            return Err(fail("deadlines must be positive".into()));
        }
        if self.audit_after_ms.first() == Some(&0)
            || self.audit_after_ms.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(fail(
                "late-effect audits must come after the end, in increasing order".into(),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let name = &step.name;
            if self.steps[..i].iter().any(|s| &s.name == name) {
                return Err(fail(format!("step {name} appears twice")));
            }
            let local = step.action.worker().is_none();
            if local && i + 1 != self.steps.len() {
                return Err(fail(format!("local step {name} must be the last")));
            }
            if local && (step.compensation.is_some() || step.reconcile.is_some()) {
                return Err(fail(format!(
                    "local step {name} has nothing to undo or reconcile"
                )));
            }
            if local {
                continue;
            }
            if step.timeout_ms == 0 || step.retry.max_attempts == 0 {
                return Err(fail(format!(
                    "step {name} needs a time-out and at least one attempt"
                )));
            }
            let worker = step.action.worker();
            if let Some(c) = &step.compensation {
                if c.operation.worker() != worker {
                    return Err(fail(format!(
                        "step {name}: compensation runs on another worker"
                    )));
                }
                if c.timeout_ms == 0 || c.retry.max_attempts == 0 {
                    return Err(fail(format!(
                        "step {name}: compensation needs a time-out and attempts"
                    )));
                }
            }
            match step.reconcile {
                Some(r) if r.worker() != worker => {
                    return Err(fail(format!(
                        "step {name}: reconciliation runs on another worker"
                    )));
                }
                None if [
                    step.on_error.unknown,
                    step.on_error.timeout,
                    step.on_error.retryable,
                ]
                .contains(&Handling::Reconcile) =>
                {
                    return Err(fail(format!(
                        "step {name} asks to reconcile but has no reconciliation"
                    )));
                }
                _ => {}
            }
            if step.on_error.business == Handling::Reconcile {
                return Err(fail(format!(
                    "step {name}: a business refusal has nothing to reconcile"
                )));
            }
        }
        Ok(())
    }
}
