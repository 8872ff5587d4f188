//! Compensation: beginning it, walking the steps to undo in reverse order, and finishing.

use como_schemas::CommandKind;
use como_schemas::events::{CompensatedAs, SagaEventBody};

use super::{Charge, Machine, Record, Waiting};
use crate::decision::HistoryKind;
use crate::failure::FailureCode;
use crate::state::{Activity, Audit, Phase, Terminal};

impl Machine<'_> {
    pub(super) fn begin_compensation(
        &mut self,
        end_as: CompensatedAs,
        code: FailureCode,
        reason: String,
    ) {
        let from = match &self.s.phase {
            Phase::Forward { step, .. }
            | Phase::NeedsOperator { step, .. }
            | Phase::Compensating { step, .. } => *step,
            Phase::Done { .. } => self.s.steps.len() - 1,
        };
        let name = self.s.steps[from].name.clone();
        self.emit(SagaEventBody::BookingFailed {
            step: name,
            code: code.to_string(),
            reason: reason.clone(),
        });
        self.s.compensation_deadline = Some(self.now.plus_ms(self.def.compensation_deadline_ms));
        self.record(
            Record::new(HistoryKind::CompensationStarted)
                .step(from)
                .detail(code)
                .error(reason),
        );
        self.walk_compensation(end_as);
    }

    /// Compensate the highest step that still needs it, or finish.
    pub(super) fn walk_compensation(&mut self, end_as: CompensatedAs) {
        let Some(i) = (0..self.s.steps.len())
            .rev()
            .find(|&i| self.needs_compensation(i))
        else {
            self.finish_compensation(end_as);
            return;
        };
        // While an attempt may still take effect, undoing it could be overtaken by it.
        let at = if self.s.steps[i].is_unsettled() {
            self.settled_at(i)
        } else {
            self.now
        };
        self.s.phase = Phase::Compensating {
            step: i,
            activity: Activity::Backoff {
                kind: CommandKind::Compensation,
                at,
                charged: true,
                waiting_for_downstream: false,
            },
            end_as,
        };
        self.fresh_round(i, CommandKind::Compensation);
        self.schedule(
            i,
            CommandKind::Compensation,
            at,
            Charge::Charged,
            Waiting::No,
        );
    }

    fn finish_compensation(&mut self, end_as: CompensatedAs) {
        self.end_compensated(end_as, None);
    }

    /// End the saga compensated or cancelled; `resolved_by` names the operator who declared it.
    pub(super) fn end_compensated(&mut self, end_as: CompensatedAs, resolved_by: Option<String>) {
        let (outcome, kind) = match end_as {
            CompensatedAs::Compensated => (Terminal::Compensated, HistoryKind::Compensated),
            CompensatedAs::Cancelled => (Terminal::Cancelled, HistoryKind::Cancelled),
        };
        self.s.phase = Phase::Done { outcome };
        let compensated_steps = self
            .s
            .steps
            .iter()
            .filter(|s| s.compensated)
            .map(|s| s.name.clone())
            .collect();
        let detail = resolved_by.is_some().then(|| "resolved by hand".to_owned());
        self.emit(SagaEventBody::SagaCompensated {
            outcome: end_as,
            compensated_steps,
            resolved_by,
        });
        self.record(Record::new(kind).maybe_detail(detail));
        if !self.def.audit_after_ms.is_empty() && self.next_audited_step(None).is_some() {
            self.s.audit = Some(Audit {
                ended_at: self.now,
                rounds: 0,
                check: None,
                undone: 0,
            });
        }
    }

    pub(super) fn step_compensated(&mut self, i: usize, attempt: u32, note: Option<String>) {
        self.s.steps[i].compensated = true;
        self.record(
            Record::new(HistoryKind::StepCompensated)
                .step(i)
                .command(CommandKind::Compensation, attempt)
                .maybe_detail(note),
        );
        match &self.s.phase {
            Phase::Compensating { step, end_as, .. } if *step == i => {
                let end_as = *end_as;
                self.walk_compensation(end_as);
            }
            Phase::NeedsOperator {
                step,
                compensating: Some(end_as),
                ..
            } if *step == i => {
                let end_as = *end_as;
                self.walk_compensation(end_as);
            }
            _ => {}
        }
    }

    pub(super) fn compensating_as(&self) -> Option<CompensatedAs> {
        match &self.s.phase {
            Phase::Compensating { end_as, .. } => Some(*end_as),
            Phase::NeedsOperator { compensating, .. } => *compensating,
            _ => None,
        }
    }
}
