//! The forward path: sending commands, retrying them, completing steps, and looking an
//! effect up (reconcile) when an action's outcome is unknown.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason, SagaEventBody};
use como_schemas::{
    CommandId, CommandKind, IdempotencyKey, OperationContext, SchemaVersion, StepOutput, Timestamp,
    WorkerCommand,
};

use super::{Charge, Machine, Record, Waiting};
use crate::backoff;
use crate::decision::HistoryKind;
use crate::definition::{Handling, OnReconcileExhausted};
use crate::failure::FailureCode;
use crate::state::{Activity, Phase, Terminal};

impl Machine<'_> {
    pub(super) fn send(&mut self, i: usize, kind: CommandKind, charge: Charge, waiting: Waiting) {
        let now = self.now;
        let deadline = now.plus_ms(self.timeout_ms(i, kind));
        let timeout_at = deadline.plus_ms(self.def.reply_grace_ms);
        let op_kind = self.def.steps[i].operation(kind);
        let step = &mut self.s.steps[i];
        let attempts = step.attempts_mut(kind);
        attempts.sent += 1;
        if charge.is_charged() {
            attempts.charged += 1;
        }
        attempts.round_started_at.get_or_insert(now);
        let attempt = attempts.sent;
        match kind {
            CommandKind::Action => step.unsettled.push(attempt),
            CommandKind::Reconcile => {
                step.actions_before_reconcile = step.action.sent;
                if op_kind.writes() {
                    step.unsettled_reconciles.push(attempt);
                }
            }
            CommandKind::Compensation => {}
        }
        if kind != CommandKind::Compensation {
            step.settles_at = Some(step.settles_at.map_or(timeout_at, |t| t.max(timeout_at)));
        }
        let outputs: Vec<&StepOutput> = self
            .s
            .steps
            .iter()
            .filter_map(|s| s.output.as_ref())
            .collect();
        let ctx = OperationContext {
            saga_id: self.s.saga_id,
            started_at: self.s.started_at,
            request: &self.s.request,
            outputs: &outputs,
        };
        let (Some(operation), Some(worker)) = (op_kind.build(&ctx), op_kind.worker()) else {
            unreachable!("validated definitions send only worker operations")
        };
        let name = self.s.steps[i].name.clone();
        let key = IdempotencyKey::new(self.s.saga_id, &name, kind);
        self.commands.push(WorkerCommand {
            schema_version: SchemaVersion::CURRENT,
            command_id: CommandId::new(&key, attempt),
            idempotency_key: key,
            saga_id: self.s.saga_id,
            step: name,
            kind,
            attempt,
            worker,
            sent_at: now,
            deadline,
            operation,
            saga_started_at: Some(self.s.started_at),
        });
        self.set_activity(Activity::Awaiting {
            kind,
            attempt,
            timeout_at,
            waiting_for_downstream: waiting.is_waiting(),
        });
        let detail = serde_json::to_value(op_kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        self.record(
            Record::new(HistoryKind::CommandSent)
                .step(i)
                .command(kind, attempt)
                .maybe_detail(detail),
        );
    }

    /// Send at `at`, or now if `at` has come.
    pub(super) fn schedule(
        &mut self,
        i: usize,
        kind: CommandKind,
        at: Timestamp,
        charge: Charge,
        waiting: Waiting,
    ) {
        if at <= self.now {
            self.send(i, kind, charge, waiting);
        } else {
            self.set_activity(Activity::Backoff {
                kind,
                at,
                charged: charge.is_charged(),
                waiting_for_downstream: waiting.is_waiting(),
            });
            let next = self.s.steps[i].attempts(kind).sent + 1;
            self.record(
                Record::new(HistoryKind::RetryScheduled)
                    .step(i)
                    .command(kind, next)
                    .detail(format!("at {at}")),
            );
        }
    }

    /// Try `kind` again after the policy's backoff (or the downstream's `Retry-After`, if
    /// longer), or give up if the policy is spent.
    pub(super) fn retry(
        &mut self,
        i: usize,
        kind: CommandKind,
        retry_after_ms: Option<u64>,
        why: &str,
    ) {
        let policy = self.policy(i, kind);
        let attempts = self.s.steps[i].attempts(kind);
        let delay = backoff::delay_ms(
            policy,
            self.s.saga_id,
            self.s.steps[i].name.as_str(),
            kind,
            attempts.charged + 1,
        )
        .max(retry_after_ms.unwrap_or(0));
        let mut at = self.now.plus_ms(delay);
        let round_start = attempts.round_started_at.unwrap_or(self.now);
        let step = &self.s.steps[i];
        if kind == CommandKind::Reconcile && step.is_unsettled() {
            // A lookup answers only for what can no longer change: wait for every earlier
            // attempt (a replayed write included) to be past its deadline.
            at = at.max(step.settles_at.unwrap_or(at));
        }
        if attempts.charged >= policy.max_attempts
            || at.millis_since(round_start) > policy.max_total_ms
        {
            self.exhausted(i, kind, why);
        } else {
            self.schedule(i, kind, at, Charge::Charged, Waiting::No);
        }
    }

    fn exhausted(&mut self, i: usize, kind: CommandKind, why: &str) {
        let name = self.s.steps[i].name.clone();
        match kind {
            CommandKind::Action => self.begin_compensation(
                CompensatedAs::Compensated,
                FailureCode::RetriesExhausted,
                format!("{name}: retries exhausted: {why}"),
            ),
            CommandKind::Reconcile => match self.def.steps[i].on_error.reconcile_exhausted {
                OnReconcileExhausted::Compensate => self.begin_compensation(
                    CompensatedAs::Compensated,
                    FailureCode::UnknownOutcome,
                    format!("{name}: outcome could not be settled: {why}"),
                ),
                OnReconcileExhausted::NeedsOperator => self.needs_operator(
                    NeedsOperatorReason::UnknownOutcome,
                    i,
                    format!("outcome of {name} could not be settled: {why}"),
                    None,
                ),
            },
            CommandKind::Compensation if self.auditing() => {
                self.audit_needs_operator(i, format!("could not be checked: {why}"));
            }
            CommandKind::Compensation => {
                let end_as = self.compensating_as().unwrap_or(CompensatedAs::Compensated);
                self.needs_operator(
                    NeedsOperatorReason::CompensationExhausted,
                    i,
                    format!("compensation of {name} kept failing: {why}"),
                    Some(end_as),
                );
            }
        }
    }

    pub(super) fn start_step(&mut self, i: usize) {
        if self.def.steps[i].action.worker().is_none() {
            self.confirm(i);
            return;
        }
        self.s.phase = Phase::Forward {
            step: i,
            activity: Activity::Backoff {
                kind: CommandKind::Action,
                at: self.now,
                charged: true,
                waiting_for_downstream: false,
            },
        };
        self.fresh_round(i, CommandKind::Action);
        self.send(i, CommandKind::Action, Charge::Charged, Waiting::No);
    }

    /// The step took effect: `by` is the attempt whose reply said so. Other attempts stay
    /// unsettled: one may still land (a second hold), and undoing must wait for it.
    pub(super) fn complete_step(&mut self, i: usize, output: StepOutput, by: (CommandKind, u32)) {
        let attempt = match by {
            (CommandKind::Action, a) => a,
            _ => self.s.steps[i].action.sent,
        };
        let step = &mut self.s.steps[i];
        step.output = Some(output);
        step.completed = true;
        match by {
            (CommandKind::Action, a) => step.unsettled.retain(|x| *x != a),
            (_, r) => step.unsettled_reconciles.retain(|x| *x != r),
        }
        let name = step.name.clone();
        self.emit(SagaEventBody::StepCompleted {
            step: name,
            attempt,
        });
        self.record(
            Record::new(HistoryKind::StepCompleted)
                .step(i)
                .command(CommandKind::Action, attempt),
        );
        self.start_step(i + 1);
    }

    fn confirm(&mut self, i: usize) {
        let step = &mut self.s.steps[i];
        step.completed = true;
        step.output = Some(StepOutput::Done);
        self.end_confirmed(Some(i), None);
    }

    /// End the saga confirmed; `resolved_by` names the operator who declared it.
    pub(super) fn end_confirmed(&mut self, step: Option<usize>, resolved_by: Option<String>) {
        self.s.phase = Phase::Done {
            outcome: Terminal::Confirmed,
        };
        let (reservation_id, transaction_id) = self.booked_ids();
        let detail = resolved_by.is_some().then(|| "resolved by hand".to_owned());
        self.emit(SagaEventBody::BookingConfirmed {
            reservation_id,
            transaction_id,
            credits: self.s.request.quoted_credits,
            resolved_by,
        });
        self.record(
            Record::new(HistoryKind::Confirmed)
                .maybe_step(step)
                .maybe_detail(detail),
        );
    }

    fn booked_ids(
        &self,
    ) -> (
        Option<como_schemas::ReservationId>,
        Option<como_schemas::TransactionId>,
    ) {
        let mut ids = (None, None);
        for out in self.s.steps.iter().filter_map(|s| s.output.as_ref()) {
            match out {
                StepOutput::ExperienceBooked { reservation_id } => {
                    ids.0 = Some(reservation_id.clone())
                }
                StepOutput::CreditsRedeemed { transaction_id, .. } => {
                    ids.1 = Some(transaction_id.clone())
                }
                _ => {}
            }
        }
        ids
    }

    /// An action error, handled as the step's definition says.
    pub(super) fn handle_action_error(
        &mut self,
        i: usize,
        handling: Handling,
        code: FailureCode,
        why: String,
        retry_after_ms: Option<u64>,
    ) {
        self.s.steps[i].last_error = Some(why.clone());
        match handling {
            Handling::Retry => self.retry(i, CommandKind::Action, retry_after_ms, &why),
            Handling::Compensate => {
                let name = self.s.steps[i].name.clone();
                self.begin_compensation(CompensatedAs::Compensated, code, format!("{name}: {why}"));
            }
            Handling::Reconcile => self.start_reconcile(i),
        }
    }

    /// Look the effect up, once no attempt can still take effect.
    /// When no attempt of step `i` can take effect any more (now, if that has passed).
    pub(super) fn settled_at(&self, i: usize) -> Timestamp {
        self.s.steps[i].settles_at.unwrap_or(self.now).max(self.now)
    }

    pub(super) fn start_reconcile(&mut self, i: usize) {
        self.fresh_round(i, CommandKind::Reconcile);
        let at = self.settled_at(i);
        self.schedule(i, CommandKind::Reconcile, at, Charge::Charged, Waiting::No);
    }
}
