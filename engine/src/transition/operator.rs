//! Operator actions: retry now, force compensation, cancel, resolve by hand.

use como_schemas::CommandKind;
use como_schemas::events::CompensatedAs;

use super::{Charge, EngineError, Machine, Record, Waiting};
use crate::decision::HistoryKind;
use crate::failure::FailureCode;
use crate::input::{OperatorAction, OperatorCommand, ResolvedOutcome};
use crate::state::{Activity, Phase};

impl Machine<'_> {
    pub(super) fn on_operator(&mut self, cmd: &OperatorCommand) -> Result<(), EngineError> {
        if self
            .s
            .operator_actions
            .iter()
            .any(|id| id == &cmd.action_id)
        {
            return Ok(());
        }
        if cmd.reason.trim().is_empty() {
            return Err(EngineError::Refused(
                "an operator action needs a reason".into(),
            ));
        }
        let status = self.s.status.kind().as_str();
        let refuse_done = || {
            Err(EngineError::Refused(format!(
                "the saga is {status}: it is finished"
            )))
        };
        match (cmd.action, self.s.phase.clone()) {
            (_, Phase::Done { .. }) => return refuse_done(),
            (
                OperatorAction::RetryNow,
                Phase::Forward { step, activity } | Phase::Compensating { step, activity, .. },
            ) => match activity {
                Activity::Awaiting {
                    kind,
                    attempt,
                    timeout_at,
                    ..
                } => {
                    return Err(EngineError::Refused(format!(
                        "{kind} attempt {attempt} of {} is in flight; it times out at {timeout_at}",
                        self.s.steps[step].name
                    )));
                }
                Activity::Backoff {
                    kind,
                    charged,
                    waiting_for_downstream,
                    ..
                } => {
                    let s = &self.s.steps[step];
                    let settles = s.settles_at.unwrap_or(self.now);
                    let must_settle = kind == CommandKind::Reconcile
                        || (kind == CommandKind::Compensation && s.is_unsettled());
                    if must_settle && settles > self.now {
                        return Err(EngineError::Refused(format!(
                            "{kind} of {} waits until {settles}, when no earlier attempt can still take effect",
                            s.name
                        )));
                    }
                    self.operator_entry(cmd);
                    self.resume(
                        step,
                        kind,
                        Charge::from_flag(charged),
                        Waiting::from_flag(waiting_for_downstream),
                    );
                }
            },
            (
                OperatorAction::RetryNow,
                Phase::NeedsOperator {
                    step, compensating, ..
                },
            ) => {
                self.operator_entry(cmd);
                match compensating {
                    Some(end_as) => {
                        self.s.compensation_deadline =
                            Some(self.now.plus_ms(self.def.compensation_deadline_ms));
                        self.walk_compensation(end_as);
                    }
                    None => {
                        self.s.phase = Phase::Forward {
                            step,
                            activity: Activity::Backoff {
                                kind: CommandKind::Reconcile,
                                at: self.now,
                                charged: true,
                                waiting_for_downstream: false,
                            },
                        };
                        self.start_reconcile(step);
                    }
                }
            }
            (OperatorAction::ForceCompensation | OperatorAction::Cancel, Phase::Forward { .. }) => {
                self.operator_entry(cmd);
                let (end_as, code) = match cmd.action {
                    OperatorAction::Cancel => (CompensatedAs::Cancelled, FailureCode::Cancelled),
                    _ => (
                        CompensatedAs::Compensated,
                        FailureCode::OperatorCompensation,
                    ),
                };
                self.begin_compensation(end_as, code, format!("{}: {}", cmd.operator, cmd.reason));
            }
            (OperatorAction::ForceCompensation, Phase::Compensating { .. }) => {
                return Err(EngineError::Refused(
                    "the saga is already compensating".into(),
                ));
            }
            (OperatorAction::Cancel, Phase::Compensating { end_as, .. }) => {
                if end_as == CompensatedAs::Cancelled {
                    return Err(EngineError::Refused(
                        "the saga is already being cancelled".into(),
                    ));
                }
                self.operator_entry(cmd);
                if let Phase::Compensating { end_as, .. } = &mut self.s.phase {
                    *end_as = CompensatedAs::Cancelled;
                }
            }
            (
                OperatorAction::ForceCompensation | OperatorAction::Cancel,
                Phase::NeedsOperator { compensating, .. },
            ) => {
                self.operator_entry(cmd);
                let end_as = match cmd.action {
                    OperatorAction::Cancel => CompensatedAs::Cancelled,
                    _ => compensating.unwrap_or(CompensatedAs::Compensated),
                };
                if compensating.is_none() {
                    let code = if end_as == CompensatedAs::Cancelled {
                        FailureCode::Cancelled
                    } else {
                        FailureCode::OperatorCompensation
                    };
                    self.begin_compensation(
                        end_as,
                        code,
                        format!("{}: {}", cmd.operator, cmd.reason),
                    );
                } else {
                    self.s.compensation_deadline =
                        Some(self.now.plus_ms(self.def.compensation_deadline_ms));
                    self.walk_compensation(end_as);
                }
            }
            (OperatorAction::Resolve { outcome }, _) => {
                self.operator_entry(cmd);
                self.resolve(outcome, cmd);
            }
        }
        Ok(())
    }

    fn operator_entry(&mut self, cmd: &OperatorCommand) {
        self.s.operator_actions.push(cmd.action_id.clone());
        let step = match &self.s.phase {
            Phase::Forward { step, .. }
            | Phase::Compensating { step, .. }
            | Phase::NeedsOperator { step, .. } => Some(*step),
            Phase::Done { .. } => None,
        };
        self.record(
            Record::new(HistoryKind::OperatorAction)
                .maybe_step(step)
                .detail(cmd.action.as_str())
                .operator(cmd.operator.clone(), cmd.reason.clone()),
        );
    }

    fn resolve(&mut self, outcome: ResolvedOutcome, cmd: &OperatorCommand) {
        let by = Some(format!("{}: {}", cmd.operator, cmd.reason));
        match outcome {
            ResolvedOutcome::Confirmed => self.end_confirmed(None, by),
            ResolvedOutcome::Compensated => self.end_compensated(CompensatedAs::Compensated, by),
        }
    }
}
