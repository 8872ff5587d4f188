//! The late-effect audit: after a saga ended compensated or cancelled, its compensations are
//! issued again on a schedule to find (and undo) an effect that landed late.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{CommandKind, ReplyOutcome, StepOutput, WorkerReply};

use super::reply::reply_received;
use super::{Charge, Machine, Record, Waiting};
use crate::decision::HistoryKind;
use crate::state::{Activity, Audit, AuditCheck, Phase, Terminal};

impl Machine<'_> {
    /// The saga has ended compensated or cancelled and its audit is not over.
    pub(super) fn auditing(&self) -> bool {
        matches!(self.s.phase, Phase::Done { outcome } if outcome != Terminal::Confirmed)
            && self.s.audit.is_some()
    }

    /// The next step an audit round checks, below `below` (from the top when `None`): one
    /// whose action was sent and whose compensation finds the effect by key.
    pub(super) fn next_audited_step(&self, below: Option<usize>) -> Option<usize> {
        let top = below.unwrap_or(self.s.steps.len());
        (0..top).rev().find(|&i| {
            self.s.steps[i].action.sent > 0
                && self.def.steps[i]
                    .compensation
                    .as_ref()
                    .is_some_and(|c| c.operation.finds_effect_by_key())
        })
    }

    /// Act on the audit if something of it is due. Returns whether it acted.
    pub(super) fn audit_on_due(&mut self) -> bool {
        let now = self.now;
        let Some(audit) = self.s.audit.clone() else {
            return false;
        };
        if !self.auditing() {
            return false;
        }
        if let (Some(check), Some(deadline)) = (&audit.check, self.s.compensation_deadline)
            && now >= deadline
        {
            self.audit_needs_operator(
                check.step,
                "could not be checked before its deadline (the downstream stayed unavailable)"
                    .into(),
            );
            return true;
        }
        if audit
            .due_at(&self.def.audit_after_ms)
            .is_none_or(|t| t > now)
        {
            return false;
        }
        match audit.check {
            None => self.audit_check(self.next_audited_step(None)),
            Some(AuditCheck {
                step,
                activity: Activity::Awaiting { attempt, .. },
            }) => {
                self.record(
                    Record::new(HistoryKind::TimedOut)
                        .step(step)
                        .command(CommandKind::Compensation, attempt)
                        .detail("late-effect audit")
                        .error("no reply before the time-out"),
                );
                let why = format!("attempt {attempt} timed out");
                self.retry(step, CommandKind::Compensation, None, &why);
            }
            Some(AuditCheck {
                step,
                activity:
                    Activity::Backoff {
                        charged,
                        waiting_for_downstream,
                        ..
                    },
            }) => self.send(
                step,
                CommandKind::Compensation,
                Charge::from_flag(charged),
                Waiting::from_flag(waiting_for_downstream),
            ),
        }
        true
    }

    /// Check step `i` (issue its compensation again), or close the round when there is none.
    fn audit_check(&mut self, i: Option<usize>) {
        let Some(audit) = self.s.audit.as_mut() else {
            return;
        };
        let Some(i) = i else {
            audit.check = None;
            audit.rounds += 1;
            return;
        };
        let round_starts = audit.check.is_none();
        audit.check = Some(AuditCheck {
            step: i,
            activity: Activity::Backoff {
                kind: CommandKind::Compensation,
                at: self.now,
                charged: true,
                waiting_for_downstream: false,
            },
        });
        if round_starts {
            // A round has the time a compensation has.
            self.s.compensation_deadline =
                Some(self.now.plus_ms(self.def.compensation_deadline_ms));
        }
        self.fresh_round(i, CommandKind::Compensation);
        self.send(i, CommandKind::Compensation, Charge::Charged, Waiting::No);
    }

    pub(super) fn on_audit_reply(&mut self, i: usize, reply: &WorkerReply) {
        let c = reply.attempt;
        let awaited = matches!(
            &self.s.audit,
            Some(Audit { check: Some(AuditCheck { step, activity: Activity::Awaiting { kind: CommandKind::Compensation, attempt, .. } }), .. })
                if *step == i && *attempt == c
        );
        if !awaited {
            return;
        }
        let name = self.s.steps[i].name.clone();
        match &reply.outcome {
            ReplyOutcome::Succeeded { output } => {
                let (note, undone) = match output {
                    StepOutput::Compensated { note, undone } => (note.clone(), *undone),
                    _ => (None, false),
                };
                if undone {
                    if let Some(a) = self.s.audit.as_mut() {
                        a.undone += 1;
                    }
                    self.record(
                        Record::new(HistoryKind::LateEffectUndone)
                            .step(i)
                            .command(CommandKind::Compensation, c)
                            .detail(
                                note.unwrap_or_else(|| format!("{name} had taken effect late")),
                            ),
                    );
                } else {
                    self.record(
                        Record::new(HistoryKind::AuditChecked)
                            .step(i)
                            .command(CommandKind::Compensation, c)
                            .maybe_detail(note),
                    );
                }
                self.audit_check(self.next_audited_step(Some(i)));
            }
            ReplyOutcome::NotApplied { reason } => {
                self.record(
                    Record::new(HistoryKind::AuditChecked)
                        .step(i)
                        .command(CommandKind::Compensation, c)
                        .detail(format!("nothing to undo: {reason}")),
                );
                self.audit_check(self.next_audited_step(Some(i)));
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                self.record(
                    reply_received(i, CommandKind::Compensation, c, reply).error(message.clone()),
                );
                let detail = format!(
                    "{} refused to undo it: {code}: {message}",
                    reply.worker.downstream()
                );
                self.audit_needs_operator(i, detail);
            }
            ReplyOutcome::RetryableFailure { .. } | ReplyOutcome::UnknownOutcome { .. } => {
                self.compensation_to_retry(i, reply);
            }
            ReplyOutcome::Deferred { .. } => {}
        }
    }

    /// The audit of step `i` found or may have found an effect it cannot undo: a person must.
    pub(super) fn audit_needs_operator(&mut self, i: usize, detail: String) {
        let end_as = match self.s.phase {
            Phase::Done {
                outcome: Terminal::Cancelled,
            } => CompensatedAs::Cancelled,
            _ => CompensatedAs::Compensated,
        };
        if let Some(a) = self.s.audit.as_mut() {
            a.check = None;
        }
        let name = self.s.steps[i].name.clone();
        self.needs_operator(
            NeedsOperatorReason::LateEffect,
            i,
            format!("late-effect audit of {name}: {detail}"),
            Some(end_as),
        );
    }
}
