//! Routing a worker's reply: to the action, the lookup (reconcile) or the compensation it
//! answers; late replies, and what they teach about effects.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{CommandKind, ReplyOutcome, StepOutput, WorkerReply};

use super::{EngineError, Machine, Record};
use crate::decision::HistoryKind;
use crate::failure::FailureCode;
use crate::state::{Activity, Phase, Terminal};

impl Machine<'_> {
    pub(super) fn on_reply(&mut self, reply: &WorkerReply) -> Result<(), EngineError> {
        if reply.saga_id != self.s.saga_id {
            return Err(EngineError::InvalidInput(format!(
                "reply for saga {} delivered to saga {}",
                reply.saga_id, self.s.saga_id
            )));
        }
        let Some(i) = self.def.step_index(&reply.step) else {
            return Err(EngineError::InvalidInput(format!(
                "no step {} in {}",
                reply.step, self.def.name
            )));
        };
        let sent = self.s.steps[i].attempts(reply.kind).sent;
        if reply.attempt == 0 || reply.attempt > sent {
            return Err(EngineError::InvalidInput(format!(
                "reply for {} attempt {} of {}, but {} were sent",
                reply.kind, reply.attempt, reply.step, sent
            )));
        }
        match reply.kind {
            CommandKind::Action => self.on_action_reply(i, reply),
            CommandKind::Reconcile => self.on_reconcile_reply(i, reply),
            CommandKind::Compensation => self.on_compensation_reply(i, reply),
        }
        Ok(())
    }

    fn forward_at(&self, i: usize) -> bool {
        matches!(self.s.phase, Phase::Forward { step, .. } if step == i)
            && !self.s.steps[i].completed
    }

    fn awaiting(&self, i: usize, kind: CommandKind, attempt: u32) -> bool {
        match &self.s.phase {
            Phase::Forward { step, activity } | Phase::Compensating { step, activity, .. } => {
                *step == i
                    && matches!(activity, Activity::Awaiting { kind: k, attempt: a, .. } if *k == kind && *a == attempt)
            }
            _ => false,
        }
    }

    /// The worker parked the command until its downstream recovers: show it.
    fn on_deferred(&mut self, i: usize, kind: CommandKind, attempt: u32) {
        if !self.awaiting(i, kind, attempt) {
            return;
        }
        if let Phase::Forward { activity, .. } | Phase::Compensating { activity, .. } =
            &mut self.s.phase
            && let Activity::Awaiting {
                waiting_for_downstream,
                ..
            } = activity
            && !*waiting_for_downstream
        {
            *waiting_for_downstream = true;
            self.s.waiting_since.get_or_insert(self.now);
            self.record(
                Record::new(HistoryKind::WaitingForDownstream)
                    .step(i)
                    .command(kind, attempt)
                    .detail("the worker parked the command until its downstream recovers"),
            );
        }
    }

    fn on_action_reply(&mut self, i: usize, reply: &WorkerReply) {
        let a = reply.attempt;
        let latest = a == self.s.steps[i].action.sent;
        let awaiting = self.awaiting(i, CommandKind::Action, a);
        let forward = self.forward_at(i);
        let on_error = &self.def.steps[i].on_error;
        match &reply.outcome {
            ReplyOutcome::Succeeded { output } => {
                if forward || self.resumable_unknown(i) {
                    self.record(reply_received(i, CommandKind::Action, a, reply));
                    self.complete_step(i, output.clone(), (CommandKind::Action, a));
                } else {
                    self.learn_effect(i, CommandKind::Action, a, output.clone());
                }
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record(
                        reply_received(i, CommandKind::Action, a, reply).error(message.clone()),
                    );
                    let handling = on_error.business;
                    let why = format!("{code}: {message}");
                    let code = FailureCode::Business(code.clone());
                    self.handle_action_error(i, handling, code, why, None);
                }
            }
            ReplyOutcome::RetryableFailure {
                reason,
                retry_after_ms,
                downstream_unavailable,
            } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record(
                        reply_received(i, CommandKind::Action, a, reply).error(reason.clone()),
                    );
                    if *downstream_unavailable {
                        self.wait_for_downstream(i, CommandKind::Action, *retry_after_ms);
                    } else {
                        let handling = on_error.retryable;
                        self.handle_action_error(
                            i,
                            handling,
                            FailureCode::RetryableFailure,
                            reason.clone(),
                            *retry_after_ms,
                        );
                    }
                }
            }
            ReplyOutcome::NotApplied { reason } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record(
                        reply_received(i, CommandKind::Action, a, reply).error(reason.clone()),
                    );
                    let handling = on_error.retryable;
                    self.handle_action_error(
                        i,
                        handling,
                        FailureCode::NotApplied,
                        reason.clone(),
                        None,
                    );
                }
            }
            ReplyOutcome::UnknownOutcome {
                reason,
                downstream_unavailable,
            } => {
                if awaiting {
                    self.record(
                        reply_received(i, CommandKind::Action, a, reply).error(reason.clone()),
                    );
                    let handling = on_error.unknown;
                    if *downstream_unavailable {
                        self.unknown_in_outage(i, handling, reason.clone());
                    } else {
                        self.handle_action_error(
                            i,
                            handling,
                            FailureCode::UnknownOutcome,
                            reason.clone(),
                            None,
                        );
                    }
                }
            }
            ReplyOutcome::Deferred { .. } => self.on_deferred(i, CommandKind::Action, a),
        }
    }

    /// A saga that stopped on an unknown outcome of step `i` resumes by itself when a reply
    /// settles it.
    fn resumable_unknown(&self, i: usize) -> bool {
        matches!(
            self.s.phase,
            Phase::NeedsOperator { step, compensating: None, .. } if step == i
        ) && !self.s.steps[i].completed
    }

    /// Attempt `a` did not take effect. Returns whether this was news.
    fn settle_not_applied(&mut self, i: usize, a: u32) -> bool {
        let step = &mut self.s.steps[i];
        let before = step.unsettled.len();
        step.unsettled.retain(|x| *x != a);
        if step.unsettled.len() == before {
            return false;
        }
        // The latest attempt on the forward path is recorded by the handling that follows.
        if !(self.forward_at(i) && a == self.s.steps[i].action.sent) {
            self.record(late_reply(i, CommandKind::Action, a, "did not take effect"));
        }
        true
    }

    /// The latest lookup, `r`, found no effect: every attempt sent before it is settled.
    /// (An older lookup's answer is not used: attempts may have been sent since.) Returns
    /// whether this was news.
    fn settle_by_lookup(&mut self, i: usize, r: u32) -> bool {
        let step = &mut self.s.steps[i];
        let covered = step.actions_before_reconcile;
        let before = (step.unsettled.len(), step.unsettled_reconciles.len());
        step.unsettled.retain(|a| *a > covered);
        step.unsettled_reconciles.retain(|x| *x > r);
        before != (step.unsettled.len(), step.unsettled_reconciles.len())
    }

    /// A reply says the action of step `i` took effect, outside the forward path. Remember
    /// it; if the saga already passed this step while undoing, a person must look.
    fn learn_effect(&mut self, i: usize, kind: CommandKind, a: u32, output: StepOutput) {
        let step = &mut self.s.steps[i];
        let news = step.output.is_none();
        let before = (step.unsettled.len(), step.unsettled_reconciles.len());
        match kind {
            CommandKind::Action => step.unsettled.retain(|x| *x != a),
            _ => step.unsettled_reconciles.retain(|x| *x != a),
        }
        let settled = before != (step.unsettled.len(), step.unsettled_reconciles.len());
        if !news {
            if settled {
                self.record(late_reply(i, kind, a, "took effect, as already known"));
            }
            return;
        }
        step.output = Some(output);
        self.record(late_reply(i, kind, a, "took effect"));
        let passed = match &self.s.phase {
            Phase::Compensating { step, .. } => i > *step,
            Phase::NeedsOperator {
                step,
                compensating: Some(_),
                ..
            } => i > *step,
            Phase::Done { outcome } => *outcome != Terminal::Confirmed,
            _ => false,
        };
        if passed && self.needs_compensation(i) {
            let end_as = match &self.s.phase {
                Phase::Done {
                    outcome: Terminal::Cancelled,
                } => CompensatedAs::Cancelled,
                _ => self.compensating_as().unwrap_or(CompensatedAs::Compensated),
            };
            let name = self.s.steps[i].name.clone();
            self.needs_operator(
                NeedsOperatorReason::LateEffect,
                i,
                format!("{name} took effect after the saga had settled it as not done; it must be undone"),
                Some(end_as),
            );
        }
    }

    fn on_reconcile_reply(&mut self, i: usize, reply: &WorkerReply) {
        let r = reply.attempt;
        let latest = r == self.s.steps[i].reconcile.sent;
        let awaiting = self.awaiting(i, CommandKind::Reconcile, r);
        // A late answer to the latest lookup still settles the question.
        let current = self.forward_at(i)
            && latest
            && {
                matches!(&self.s.phase, Phase::Forward { activity, .. } if activity.kind() == CommandKind::Reconcile)
            };
        match &reply.outcome {
            ReplyOutcome::Succeeded { output } => {
                if current || self.forward_at(i) || self.resumable_unknown(i) {
                    self.record(reply_received(i, CommandKind::Reconcile, r, reply));
                    self.complete_step(i, output.clone(), (CommandKind::Reconcile, r));
                } else {
                    self.learn_effect(i, CommandKind::Reconcile, r, output.clone());
                }
            }
            ReplyOutcome::NotApplied { reason } => {
                let news = latest && self.settle_by_lookup(i, r);
                if current {
                    self.record(
                        reply_received(i, CommandKind::Reconcile, r, reply).error(reason.clone()),
                    );
                    self.retry(i, CommandKind::Action, None, reason);
                } else if news {
                    self.record(late_reply(i, CommandKind::Reconcile, r, "not applied"));
                }
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                // The downstream refused the lookup (or the replayed write) for good: the
                // action did not and will not take effect.
                let news = latest && self.settle_by_lookup(i, r);
                if current {
                    self.record(
                        reply_received(i, CommandKind::Reconcile, r, reply).error(message.clone()),
                    );
                    let handling = self.def.steps[i].on_error.business;
                    let why = format!("{code}: {message}");
                    let code = FailureCode::Business(code.clone());
                    self.handle_action_error(i, handling, code, why, None);
                } else if news {
                    self.record(late_reply(i, CommandKind::Reconcile, r, "not applied"));
                }
            }
            ReplyOutcome::RetryableFailure {
                reason,
                retry_after_ms,
                downstream_unavailable,
            } => {
                let step = &mut self.s.steps[i];
                let before = step.unsettled_reconciles.len();
                step.unsettled_reconciles.retain(|x| *x != r);
                let news = step.unsettled_reconciles.len() != before;
                if awaiting {
                    self.record(
                        reply_received(i, CommandKind::Reconcile, r, reply).error(reason.clone()),
                    );
                    if *downstream_unavailable {
                        self.wait_for_downstream(i, CommandKind::Reconcile, *retry_after_ms);
                    } else {
                        self.retry(i, CommandKind::Reconcile, *retry_after_ms, reason);
                    }
                } else if news {
                    self.record(late_reply(
                        i,
                        CommandKind::Reconcile,
                        r,
                        "did not take effect",
                    ));
                }
            }
            ReplyOutcome::UnknownOutcome {
                reason,
                downstream_unavailable,
            } => {
                if awaiting {
                    self.record(
                        reply_received(i, CommandKind::Reconcile, r, reply).error(reason.clone()),
                    );
                    if *downstream_unavailable {
                        self.wait_for_downstream(i, CommandKind::Reconcile, None);
                    } else {
                        self.retry(i, CommandKind::Reconcile, None, reason);
                    }
                }
            }
            ReplyOutcome::Deferred { .. } => self.on_deferred(i, CommandKind::Reconcile, r),
        }
    }

    fn on_compensation_reply(&mut self, i: usize, reply: &WorkerReply) {
        if self.auditing() {
            self.on_audit_reply(i, reply);
            return;
        }
        let c = reply.attempt;
        let awaiting = self.awaiting(i, CommandKind::Compensation, c);
        // Any attempt's success undoes the step: they all carry the same idempotency key.
        let undone = self.s.steps[i].compensated;
        match &reply.outcome {
            ReplyOutcome::Succeeded { output } if !undone => {
                let note = match output {
                    StepOutput::Compensated { note, .. } => note.clone(),
                    _ => None,
                };
                self.step_compensated(i, c, note);
            }
            ReplyOutcome::NotApplied { reason } if !undone => {
                self.step_compensated(i, c, Some(format!("nothing to undo: {reason}")));
            }
            ReplyOutcome::BusinessFailure { code, message } if awaiting => {
                self.record(
                    reply_received(i, CommandKind::Compensation, c, reply).error(message.clone()),
                );
                let end_as = self.compensating_as().unwrap_or(CompensatedAs::Compensated);
                let name = self.s.steps[i].name.clone();
                self.needs_operator(
                    NeedsOperatorReason::CompensationRefused,
                    i,
                    format!(
                        "{} refused to undo {name}: {code}: {message}",
                        reply.worker.downstream()
                    ),
                    Some(end_as),
                );
            }
            ReplyOutcome::RetryableFailure { .. } | ReplyOutcome::UnknownOutcome { .. }
                if awaiting =>
            {
                self.compensation_to_retry(i, reply);
            }
            ReplyOutcome::Deferred { .. } => self.on_deferred(i, CommandKind::Compensation, c),
            _ => {}
        }
    }

    /// A compensation (or an audit's check) answered with a transient failure: wait for its
    /// downstream, or try again by the policy.
    pub(super) fn compensation_to_retry(&mut self, i: usize, reply: &WorkerReply) {
        let c = reply.attempt;
        match &reply.outcome {
            ReplyOutcome::RetryableFailure {
                reason,
                retry_after_ms,
                downstream_unavailable,
            } => {
                self.record(
                    reply_received(i, CommandKind::Compensation, c, reply).error(reason.clone()),
                );
                if *downstream_unavailable {
                    self.wait_for_downstream(i, CommandKind::Compensation, *retry_after_ms);
                } else {
                    self.retry(i, CommandKind::Compensation, *retry_after_ms, reason);
                }
            }
            ReplyOutcome::UnknownOutcome {
                reason,
                downstream_unavailable,
            } => {
                self.record(
                    reply_received(i, CommandKind::Compensation, c, reply).error(reason.clone()),
                );
                if *downstream_unavailable {
                    self.wait_for_downstream(i, CommandKind::Compensation, None);
                } else {
                    self.retry(i, CommandKind::Compensation, None, reason);
                }
            }
            _ => {}
        }
    }
}

/// The history entry of a reply that the saga acts on; the caller adds the reply's error.
pub(super) fn reply_received(i: usize, kind: CommandKind, a: u32, reply: &WorkerReply) -> Record {
    Record::new(HistoryKind::ReplyReceived)
        .step(i)
        .command(kind, a)
        .detail(reply.outcome.label())
}

/// A reply that came after its attempt was no longer awaited, and what it showed.
fn late_reply(i: usize, kind: CommandKind, a: u32, showed: &str) -> Record {
    Record::new(HistoryKind::LateReply)
        .step(i)
        .command(kind, a)
        .detail(showed)
}
