//! The transition function: `(definition, state, input, now) -> decision`.
//!
//! Rules that every branch keeps, because the properties in `tests/properties.rs` check them:
//! - An input that teaches nothing (a duplicate, a reply for an attempt already settled, a
//!   timer with nothing due) returns the state unchanged, with nothing to send or record.
//! - A reply for an old attempt does not move the saga; it only records what it teaches (an
//!   effect took place, or did not).
//! - Compensation undoes, in reverse step order, exactly the steps whose action may have taken
//!   effect, and never starts undoing a step while one of its attempts may still take effect
//!   (it waits for the step's `settles_at`). Once compensation has begun no action is sent.
//! - Every command of one (step, kind) carries the same idempotency key.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason, SagaEventBody};
use como_schemas::{
    CommandId, CommandKind, IdempotencyKey, OperationContext, OperationKind, ReplyOutcome,
    SagaEvent, SchemaVersion, StepOutput, Timestamp, WorkerCommand, WorkerReply,
};

use crate::backoff;
use crate::decision::{Decision, HistoryEntry, HistoryKind};
use crate::definition::{Handling, OnReconcileExhausted, RetryPolicy, SagaDefinition};
use crate::input::{Input, OperatorAction, OperatorCommand, ResolvedOutcome};
use crate::state::{Activity, Audit, AuditCheck, Phase, SagaState, StepState, Terminal};

/// Why an input could not be applied. The state is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no such saga: it has not been started")]
    NoSaga,
    #[error("the saga is pinned to {pinned}, not {given}")]
    DefinitionMismatch { pinned: String, given: String },
    #[error("invalid definition: {0}")]
    InvalidDefinition(String),
    /// The input is malformed for this saga (another saga's reply, an unknown step, an attempt
    /// never sent): the runtime dead-letters it.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An operator action that cannot be done in the saga's present state; says why.
    #[error("refused: {0}")]
    Refused(String),
}

/// Apply one input to a saga. `state` is `None` only for a saga that does not exist yet.
pub fn transition(
    def: &SagaDefinition,
    state: Option<&SagaState>,
    input: &Input,
    now: Timestamp,
) -> Result<Decision, EngineError> {
    def.validate()
        .map_err(|e| EngineError::InvalidDefinition(e.to_string()))?;
    let state = match (state, input) {
        (None, Input::Start { request }) => return Ok(start(def, request, now)),
        (None, _) => return Err(EngineError::NoSaga),
        (Some(s), Input::Start { .. }) => return Ok(unchanged(s, "the saga already exists")),
        (Some(s), _) => s,
    };
    if state.definition != def.name || state.definition_version != def.version {
        return Err(EngineError::DefinitionMismatch {
            pinned: format!("{} v{}", state.definition, state.definition_version),
            given: format!("{} v{}", def.name, def.version),
        });
    }
    let mut m = Machine::new(def, state.clone(), now);
    match input {
        Input::Start { .. } => unreachable!("handled above"),
        Input::Reply { reply } => m.on_reply(reply)?,
        Input::Timer => m.on_timer(),
        Input::Operator { command } => m.on_operator(command)?,
    }
    Ok(m.finish(state))
}

fn unchanged(state: &SagaState, why: &str) -> Decision {
    Decision {
        state: state.clone(),
        changed: false,
        commands: Vec::new(),
        events: Vec::new(),
        history: Vec::new(),
        wake_at: state.wake_at,
        ignored: Some(why.to_owned()),
    }
}

fn start(
    def: &SagaDefinition,
    request: &como_schemas::BookingRequested,
    now: Timestamp,
) -> Decision {
    let saga_id = request.saga_id();
    let state = SagaState {
        saga_id,
        definition: def.name.clone(),
        definition_version: def.version,
        request: request.clone(),
        started_at: now,
        updated_at: now,
        deadline: now.plus_ms(def.deadline_ms),
        compensation_deadline: None,
        phase: Phase::Forward {
            step: 0,
            activity: Activity::Backoff {
                kind: CommandKind::Action,
                at: now,
                charged: true,
                waiting_for_downstream: false,
            },
        },
        steps: def
            .steps
            .iter()
            .map(|s| StepState::new(s.name.clone()))
            .collect(),
        status: crate::state::SagaStatus::Confirmed,
        wake_at: None,
        transitions: 0,
        events_published: 0,
        operator_actions: Vec::new(),
        audit: None,
        waiting_since: None,
    };
    let mut m = Machine::new(def, state, now);
    m.emit(SagaEventBody::SagaStarted {
        definition: def.name.clone(),
        definition_version: def.version,
        member_no: request.member_no.clone(),
        venue_id: request.venue_id.clone(),
        date: request.date,
        time: request.time,
        party_size: request.party_size,
        credits: request.quoted_credits,
    });
    m.record(
        HistoryKind::Started,
        None,
        None,
        Some(format!("{} v{}", def.name, def.version)),
        None,
    );
    m.start_step(0);
    let blank = m.s.clone();
    let mut d = m.finish(&blank);
    d.changed = true;
    d
}

/// One transition in progress.
struct Machine<'a> {
    def: &'a SagaDefinition,
    s: SagaState,
    now: Timestamp,
    commands: Vec<WorkerCommand>,
    events: Vec<SagaEvent>,
    history: Vec<HistoryEntry>,
}

impl<'a> Machine<'a> {
    fn new(def: &'a SagaDefinition, s: SagaState, now: Timestamp) -> Self {
        Self {
            def,
            s,
            now,
            commands: Vec::new(),
            events: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Close the transition: number it, derive the status and the next wake-up, or report
    /// that nothing changed.
    fn finish(mut self, before: &SagaState) -> Decision {
        if self.s == *before
            && self.commands.is_empty()
            && self.events.is_empty()
            && self.history.is_empty()
        {
            return unchanged(before, "nothing to do: a duplicate, stale or early input");
        }
        self.s.transitions += 1;
        self.s.updated_at = self.now;
        let def = self.def;
        self.s.status = self.s.derive_status(|i, kind| {
            let step = &def.steps[i];
            match kind {
                CommandKind::Compensation => step
                    .compensation
                    .as_ref()
                    .and_then(|c| c.operation.worker()),
                _ => step.action.worker(),
            }
        });
        self.s.wake_at = match &self.s.phase {
            Phase::Forward { activity, .. } => Some(activity.due_at().min(self.s.deadline)),
            Phase::Compensating { activity, .. } => Some(
                self.s
                    .compensation_deadline
                    .map_or(activity.due_at(), |d| d.min(activity.due_at())),
            ),
            Phase::Done { outcome } if *outcome != Terminal::Confirmed => {
                self.s.audit.as_ref().and_then(|a| {
                    let due = a.due_at(&def.audit_after_ms)?;
                    // A check in progress is bounded like a compensation.
                    Some(match (&a.check, self.s.compensation_deadline) {
                        (Some(_), Some(d)) => due.min(d),
                        _ => due,
                    })
                })
            }
            Phase::Done { .. } => None,
            Phase::NeedsOperator { .. } => None,
        };
        let status = self.s.status.kind();
        for h in &mut self.history {
            h.transition = self.s.transitions;
            h.status = status;
        }
        Decision {
            wake_at: self.s.wake_at,
            state: self.s,
            changed: true,
            commands: self.commands,
            events: self.events,
            history: self.history,
            ignored: None,
        }
    }

    // ----- recording -------------------------------------------------------------------------

    fn emit(&mut self, body: SagaEventBody) {
        let n = self.s.events_published;
        self.s.events_published += 1;
        self.events.push(SagaEvent {
            schema_version: SchemaVersion::CURRENT,
            event_id: format!("{}:{n}", self.s.saga_id),
            saga_id: self.s.saga_id,
            request_id: self.s.request.request_id.clone(),
            at: self.now,
            body,
        });
    }

    fn record(
        &mut self,
        kind: HistoryKind,
        step: Option<usize>,
        command: Option<(CommandKind, u32)>,
        detail: Option<String>,
        error: Option<String>,
    ) {
        self.history.push(HistoryEntry {
            transition: 0,
            at: self.now,
            kind,
            step: step.map(|i| self.s.steps[i].name.clone()),
            command: command.map(|c| c.0),
            attempt: command.map(|c| c.1),
            status: crate::state::StatusKind::Running,
            detail,
            error,
            operator: None,
            reason: None,
        });
    }

    // ----- definitions -----------------------------------------------------------------------

    fn policy(&self, i: usize, kind: CommandKind) -> &'a RetryPolicy {
        let step = &self.def.steps[i];
        match (kind, &step.compensation) {
            (CommandKind::Compensation, Some(c)) => &c.retry,
            _ => &step.retry,
        }
    }

    fn timeout_ms(&self, i: usize, kind: CommandKind) -> u64 {
        let step = &self.def.steps[i];
        match (kind, &step.compensation) {
            (CommandKind::Compensation, Some(c)) => c.timeout_ms,
            _ => step.timeout_ms,
        }
    }

    fn operation(&self, i: usize, kind: CommandKind) -> OperationKind {
        let step = &self.def.steps[i];
        match kind {
            CommandKind::Action => step.action,
            CommandKind::Reconcile => step.reconcile.unwrap_or(step.action),
            CommandKind::Compensation => step
                .compensation
                .as_ref()
                .map_or(step.action, |c| c.operation),
        }
    }

    fn needs_compensation(&self, i: usize) -> bool {
        let step = &self.s.steps[i];
        self.def.steps[i].compensation.is_some()
            && !step.compensated
            && matches!(
                step.effect(),
                crate::state::Effect::Applied | crate::state::Effect::Maybe
            )
    }

    // ----- sending ---------------------------------------------------------------------------

    fn set_activity(&mut self, activity: Activity) {
        if !activity.waiting_for_downstream() {
            self.s.waiting_since = None;
        }
        match &mut self.s.phase {
            Phase::Forward { activity: a, .. } | Phase::Compensating { activity: a, .. } => {
                *a = activity
            }
            Phase::Done { .. } => {
                if let Some(check) = self.s.audit.as_mut().and_then(|a| a.check.as_mut()) {
                    check.activity = activity;
                }
            }
            Phase::NeedsOperator { .. } => {}
        }
    }

    fn fresh_round(&mut self, i: usize, kind: CommandKind) {
        let a = self.s.steps[i].attempts_mut(kind);
        a.charged = 0;
        a.round_started_at = None;
    }

    fn send(&mut self, i: usize, kind: CommandKind, charged: bool, waiting: bool) {
        let now = self.now;
        let deadline = now.plus_ms(self.timeout_ms(i, kind));
        let timeout_at = deadline.plus_ms(self.def.reply_grace_ms);
        let op_kind = self.operation(i, kind);
        let step = &mut self.s.steps[i];
        let attempts = step.attempts_mut(kind);
        attempts.sent += 1;
        if charged {
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
        });
        self.set_activity(Activity::Awaiting {
            kind,
            attempt,
            timeout_at,
            waiting_for_downstream: waiting,
        });
        let detail = serde_json::to_value(op_kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        self.record(
            HistoryKind::CommandSent,
            Some(i),
            Some((kind, attempt)),
            detail,
            None,
        );
    }

    /// Send at `at`, or now if `at` has come.
    fn schedule(
        &mut self,
        i: usize,
        kind: CommandKind,
        at: Timestamp,
        charged: bool,
        waiting: bool,
    ) {
        if at <= self.now {
            self.send(i, kind, charged, waiting);
        } else {
            self.set_activity(Activity::Backoff {
                kind,
                at,
                charged,
                waiting_for_downstream: waiting,
            });
            let next = self.s.steps[i].attempts(kind).sent + 1;
            self.record(
                HistoryKind::RetryScheduled,
                Some(i),
                Some((kind, next)),
                Some(format!("at {at}")),
                None,
            );
        }
    }

    /// Try `kind` again after the policy's backoff (or the downstream's `Retry-After`, if
    /// longer), or give up if the policy is spent.
    fn retry(&mut self, i: usize, kind: CommandKind, retry_after_ms: Option<u64>, why: &str) {
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
            self.schedule(i, kind, at, true, false);
        }
    }

    /// The downstream is down: wait without spending an attempt. The round's time budget
    /// starts again once it is back (the saga's own deadline bounds the wait instead), so that
    /// a backlog that drains slowly after a long outage is not taken for a failing step.
    fn wait_for_downstream(&mut self, i: usize, kind: CommandKind, retry_after_ms: Option<u64>) {
        let pause = self
            .policy(i, kind)
            .initial_backoff_ms
            .max(retry_after_ms.unwrap_or(0));
        let mut at = self.now.plus_ms(pause);
        let step = &self.s.steps[i];
        if kind == CommandKind::Reconcile && step.is_unsettled() {
            // As in `retry`: a lookup waits for every attempt that may still land.
            at = at.max(step.settles_at.unwrap_or(at));
        }
        self.s.steps[i].attempts_mut(kind).round_started_at = None;
        if kind == CommandKind::Reconcile {
            // The action the lookup is about retries after it: its round waited too.
            self.s.steps[i]
                .attempts_mut(CommandKind::Action)
                .round_started_at = None;
        }
        self.s.waiting_since.get_or_insert(self.now);
        self.record(
            HistoryKind::WaitingForDownstream,
            Some(i),
            None,
            Some(format!("until {at}")),
            None,
        );
        self.schedule(i, kind, at, false, true);
    }

    /// An action's outcome is unknown because its downstream went down during the call. The
    /// step is handled as for any unknown outcome, except that the outage spends nothing: a
    /// retry waits for the downstream, and a lookup (which waits for it too) is not charged,
    /// nor is the attempt it is about (the retry after "not found" is charged instead).
    fn unknown_in_outage(&mut self, i: usize, handling: Handling, why: String) {
        self.s.steps[i].last_error = Some(why.clone());
        match handling {
            Handling::Retry => self.wait_for_downstream(i, CommandKind::Action, None),
            Handling::Reconcile => {
                let a = self.s.steps[i].attempts_mut(CommandKind::Action);
                a.charged = a.charged.saturating_sub(1);
                a.round_started_at = None;
                self.s.waiting_since.get_or_insert(self.now);
                self.fresh_round(i, CommandKind::Reconcile);
                let at = self.s.steps[i].settles_at.unwrap_or(self.now).max(self.now);
                self.record(
                    HistoryKind::WaitingForDownstream,
                    Some(i),
                    None,
                    Some(format!("to look the effect up, at {at} or later")),
                    None,
                );
                self.schedule(i, CommandKind::Reconcile, at, false, true);
            }
            Handling::Compensate => {
                self.handle_action_error(i, handling, "UNKNOWN_OUTCOME", why, None)
            }
        }
    }

    fn exhausted(&mut self, i: usize, kind: CommandKind, why: &str) {
        let name = self.s.steps[i].name.clone();
        match kind {
            CommandKind::Action => self.begin_compensation(
                CompensatedAs::Compensated,
                "RETRIES_EXHAUSTED",
                format!("{name}: retries exhausted: {why}"),
            ),
            CommandKind::Reconcile => match self.def.steps[i].on_error.reconcile_exhausted {
                OnReconcileExhausted::Compensate => self.begin_compensation(
                    CompensatedAs::Compensated,
                    "UNKNOWN_OUTCOME",
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

    fn compensating_as(&self) -> Option<CompensatedAs> {
        match &self.s.phase {
            Phase::Compensating { end_as, .. } => Some(*end_as),
            Phase::NeedsOperator { compensating, .. } => *compensating,
            _ => None,
        }
    }

    // ----- the forward path ------------------------------------------------------------------

    fn start_step(&mut self, i: usize) {
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
        self.send(i, CommandKind::Action, true, false);
    }

    /// The step took effect: `by` is the attempt whose reply said so. Other attempts stay
    /// unsettled: one may still land (a second hold), and undoing must wait for it.
    fn complete_step(&mut self, i: usize, output: StepOutput, by: (CommandKind, u32)) {
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
            HistoryKind::StepCompleted,
            Some(i),
            Some((CommandKind::Action, attempt)),
            None,
            None,
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
    fn end_confirmed(&mut self, step: Option<usize>, resolved_by: Option<String>) {
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
        self.record(HistoryKind::Confirmed, step, None, detail, None);
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
    fn handle_action_error(
        &mut self,
        i: usize,
        handling: Handling,
        code: &str,
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
    fn start_reconcile(&mut self, i: usize) {
        self.fresh_round(i, CommandKind::Reconcile);
        let at = self.s.steps[i].settles_at.unwrap_or(self.now).max(self.now);
        self.schedule(i, CommandKind::Reconcile, at, true, false);
    }

    // ----- compensation ----------------------------------------------------------------------

    fn begin_compensation(&mut self, end_as: CompensatedAs, code: &str, reason: String) {
        let from = match &self.s.phase {
            Phase::Forward { step, .. }
            | Phase::NeedsOperator { step, .. }
            | Phase::Compensating { step, .. } => *step,
            Phase::Done { .. } => self.s.steps.len() - 1,
        };
        let name = self.s.steps[from].name.clone();
        self.emit(SagaEventBody::BookingFailed {
            step: name,
            code: code.to_owned(),
            reason: reason.clone(),
        });
        self.s.compensation_deadline = Some(self.now.plus_ms(self.def.compensation_deadline_ms));
        self.record(
            HistoryKind::CompensationStarted,
            Some(from),
            None,
            Some(code.to_owned()),
            Some(reason),
        );
        self.walk_compensation(end_as);
    }

    /// Compensate the highest step that still needs it, or finish.
    fn walk_compensation(&mut self, end_as: CompensatedAs) {
        let Some(i) = (0..self.s.steps.len())
            .rev()
            .find(|&i| self.needs_compensation(i))
        else {
            self.finish_compensation(end_as);
            return;
        };
        // While an attempt may still take effect, undoing it could be overtaken by it.
        let step = &self.s.steps[i];
        let at = if step.is_unsettled() {
            step.settles_at.unwrap_or(self.now).max(self.now)
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
        self.schedule(i, CommandKind::Compensation, at, true, false);
    }

    fn finish_compensation(&mut self, end_as: CompensatedAs) {
        self.end_compensated(end_as, None);
    }

    /// End the saga compensated or cancelled; `resolved_by` names the operator who declared it.
    fn end_compensated(&mut self, end_as: CompensatedAs, resolved_by: Option<String>) {
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
        self.record(kind, None, None, detail, None);
        if !self.def.audit_after_ms.is_empty() && self.next_audited_step(None).is_some() {
            self.s.audit = Some(Audit {
                ended_at: self.now,
                rounds: 0,
                check: None,
                undone: 0,
            });
        }
    }

    fn step_compensated(&mut self, i: usize, attempt: u32, note: Option<String>) {
        self.s.steps[i].compensated = true;
        self.record(
            HistoryKind::StepCompensated,
            Some(i),
            Some((CommandKind::Compensation, attempt)),
            note,
            None,
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

    fn needs_operator(
        &mut self,
        reason: NeedsOperatorReason,
        i: usize,
        detail: String,
        compensating: Option<CompensatedAs>,
    ) {
        self.s.phase = Phase::NeedsOperator {
            reason,
            step: i,
            detail: detail.clone(),
            compensating,
        };
        let name = self.s.steps[i].name.clone();
        self.emit(SagaEventBody::SagaNeedsOperator {
            reason,
            step: name,
            detail: detail.clone(),
        });
        self.record(
            HistoryKind::NeedsOperator,
            Some(i),
            None,
            Some(reason.as_str().to_owned()),
            Some(detail),
        );
    }

    // ----- replies ---------------------------------------------------------------------------

    fn on_reply(&mut self, reply: &WorkerReply) -> Result<(), EngineError> {
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
                HistoryKind::WaitingForDownstream,
                Some(i),
                Some((kind, attempt)),
                Some("the worker parked the command until its downstream recovers".into()),
                None,
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
                    self.record_reply(i, CommandKind::Action, a, reply, None);
                    self.complete_step(i, output.clone(), (CommandKind::Action, a));
                } else {
                    self.learn_effect(i, CommandKind::Action, a, output.clone());
                }
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record_reply(i, CommandKind::Action, a, reply, Some(message.clone()));
                    let handling = on_error.business;
                    self.handle_action_error(i, handling, code, format!("{code}: {message}"), None);
                }
            }
            ReplyOutcome::RetryableFailure {
                reason,
                retry_after_ms,
                downstream_unavailable,
            } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record_reply(i, CommandKind::Action, a, reply, Some(reason.clone()));
                    if *downstream_unavailable {
                        self.wait_for_downstream(i, CommandKind::Action, *retry_after_ms);
                    } else {
                        let handling = on_error.retryable;
                        self.handle_action_error(
                            i,
                            handling,
                            "RETRYABLE_FAILURE",
                            reason.clone(),
                            *retry_after_ms,
                        );
                    }
                }
            }
            ReplyOutcome::NotApplied { reason } => {
                if self.settle_not_applied(i, a) && forward && latest {
                    self.record_reply(i, CommandKind::Action, a, reply, Some(reason.clone()));
                    let handling = on_error.retryable;
                    self.handle_action_error(i, handling, "NOT_APPLIED", reason.clone(), None);
                }
            }
            ReplyOutcome::UnknownOutcome {
                reason,
                downstream_unavailable,
            } => {
                if awaiting {
                    self.record_reply(i, CommandKind::Action, a, reply, Some(reason.clone()));
                    let handling = on_error.unknown;
                    if *downstream_unavailable {
                        self.unknown_in_outage(i, handling, reason.clone());
                    } else {
                        self.handle_action_error(
                            i,
                            handling,
                            "UNKNOWN_OUTCOME",
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
            self.record(
                HistoryKind::LateReply,
                Some(i),
                Some((CommandKind::Action, a)),
                Some("did not take effect".into()),
                None,
            );
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

    fn record_reply(
        &mut self,
        i: usize,
        kind: CommandKind,
        a: u32,
        reply: &WorkerReply,
        error: Option<String>,
    ) {
        self.record(
            HistoryKind::ReplyReceived,
            Some(i),
            Some((kind, a)),
            Some(reply.outcome.label().to_owned()),
            error,
        );
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
                self.record(
                    HistoryKind::LateReply,
                    Some(i),
                    Some((kind, a)),
                    Some("took effect, as already known".into()),
                    None,
                );
            }
            return;
        }
        step.output = Some(output);
        self.record(
            HistoryKind::LateReply,
            Some(i),
            Some((kind, a)),
            Some("took effect".into()),
            None,
        );
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
                    self.record_reply(i, CommandKind::Reconcile, r, reply, None);
                    self.complete_step(i, output.clone(), (CommandKind::Reconcile, r));
                } else {
                    self.learn_effect(i, CommandKind::Reconcile, r, output.clone());
                }
            }
            ReplyOutcome::NotApplied { reason } => {
                let news = latest && self.settle_by_lookup(i, r);
                if current {
                    self.record_reply(i, CommandKind::Reconcile, r, reply, Some(reason.clone()));
                    self.retry(i, CommandKind::Action, None, reason);
                } else if news {
                    self.record(
                        HistoryKind::LateReply,
                        Some(i),
                        Some((CommandKind::Reconcile, r)),
                        Some("not applied".into()),
                        None,
                    );
                }
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                // The downstream refused the lookup (or the replayed write) for good: the
                // action did not and will not take effect.
                let news = latest && self.settle_by_lookup(i, r);
                if current {
                    self.record_reply(i, CommandKind::Reconcile, r, reply, Some(message.clone()));
                    let handling = self.def.steps[i].on_error.business;
                    self.handle_action_error(i, handling, code, format!("{code}: {message}"), None);
                } else if news {
                    self.record(
                        HistoryKind::LateReply,
                        Some(i),
                        Some((CommandKind::Reconcile, r)),
                        Some("not applied".into()),
                        None,
                    );
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
                    self.record_reply(i, CommandKind::Reconcile, r, reply, Some(reason.clone()));
                    if *downstream_unavailable {
                        self.wait_for_downstream(i, CommandKind::Reconcile, *retry_after_ms);
                    } else {
                        self.retry(i, CommandKind::Reconcile, *retry_after_ms, reason);
                    }
                } else if news {
                    self.record(
                        HistoryKind::LateReply,
                        Some(i),
                        Some((CommandKind::Reconcile, r)),
                        Some("did not take effect".into()),
                        None,
                    );
                }
            }
            ReplyOutcome::UnknownOutcome {
                reason,
                downstream_unavailable,
            } => {
                if awaiting {
                    self.record_reply(i, CommandKind::Reconcile, r, reply, Some(reason.clone()));
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
                self.record_reply(
                    i,
                    CommandKind::Compensation,
                    c,
                    reply,
                    Some(message.clone()),
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
    fn compensation_to_retry(&mut self, i: usize, reply: &WorkerReply) {
        let c = reply.attempt;
        match &reply.outcome {
            ReplyOutcome::RetryableFailure {
                reason,
                retry_after_ms,
                downstream_unavailable,
            } => {
                self.record_reply(i, CommandKind::Compensation, c, reply, Some(reason.clone()));
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
                self.record_reply(i, CommandKind::Compensation, c, reply, Some(reason.clone()));
                if *downstream_unavailable {
                    self.wait_for_downstream(i, CommandKind::Compensation, None);
                } else {
                    self.retry(i, CommandKind::Compensation, None, reason);
                }
            }
            _ => {}
        }
    }

    // ----- time ------------------------------------------------------------------------------

    fn on_timer(&mut self) {
        // Each pass acts on one due thing and moves its due time past `now`, so this ends;
        // the bound only guards against a definition with zero time-outs.
        for _ in 0..64 {
            if !self.act_on_due() {
                break;
            }
        }
    }

    /// Act on one thing that is due. Returns false when nothing is.
    fn act_on_due(&mut self) -> bool {
        let now = self.now;
        match self.s.phase.clone() {
            Phase::Forward { step, .. } if now >= self.s.deadline => {
                let name = self.s.steps[step].name.clone();
                self.begin_compensation(
                    CompensatedAs::Compensated,
                    "DEADLINE_PASSED",
                    format!(
                        "the saga's deadline {} passed during {name}",
                        self.s.deadline
                    ),
                );
                true
            }
            Phase::Compensating { step, end_as, .. }
                if self.s.compensation_deadline.is_some_and(|d| now >= d) =>
            {
                let name = self.s.steps[step].name.clone();
                self.needs_operator(
                    NeedsOperatorReason::DeadlinePassed,
                    step,
                    format!("compensation did not finish in time; it stopped at {name}"),
                    Some(end_as),
                );
                true
            }
            Phase::Forward { step, activity } | Phase::Compensating { step, activity, .. } => {
                if activity.due_at() > now {
                    return false;
                }
                match activity {
                    Activity::Awaiting {
                        kind,
                        attempt,
                        waiting_for_downstream,
                        ..
                    } => self.on_timeout(step, kind, attempt, waiting_for_downstream),
                    Activity::Backoff {
                        kind,
                        charged,
                        waiting_for_downstream,
                        ..
                    } => self.resume(step, kind, charged, waiting_for_downstream),
                }
                true
            }
            Phase::Done { .. } => self.audit_on_due(),
            Phase::NeedsOperator { .. } => false,
        }
    }

    /// Send the attempt a backoff was waiting for, unless a late reply has shown in the
    /// meantime that the step never took effect and there is nothing to undo.
    fn resume(&mut self, i: usize, kind: CommandKind, charged: bool, waiting: bool) {
        if kind == CommandKind::Compensation && !self.needs_compensation(i) {
            let end_as = self.compensating_as().unwrap_or(CompensatedAs::Compensated);
            self.walk_compensation(end_as);
        } else {
            self.send(i, kind, charged, waiting);
        }
    }

    /// No reply in time. While the saga waits for its downstream (the command was parked, or
    /// sent after a wait), a missing reply is most likely the worker's backlog draining at the
    /// rate limit: handled as for any time-out, but without spending an attempt.
    fn on_timeout(&mut self, i: usize, kind: CommandKind, attempt: u32, waiting: bool) {
        self.record(
            HistoryKind::TimedOut,
            Some(i),
            Some((kind, attempt)),
            None,
            Some("no reply before the time-out".into()),
        );
        let why = format!("attempt {attempt} timed out");
        match kind {
            CommandKind::Action => {
                let handling = self.def.steps[i].on_error.timeout;
                if waiting {
                    self.unknown_in_outage(i, handling, why);
                } else {
                    self.handle_action_error(i, handling, "TIMED_OUT", why, None);
                }
            }
            CommandKind::Reconcile | CommandKind::Compensation if waiting => {
                self.wait_for_downstream(i, kind, None)
            }
            CommandKind::Reconcile | CommandKind::Compensation => self.retry(i, kind, None, &why),
        }
    }

    // ----- late-effect audit ------------------------------------------------------------------

    /// The saga has ended compensated or cancelled and its audit is not over.
    fn auditing(&self) -> bool {
        matches!(self.s.phase, Phase::Done { outcome } if outcome != Terminal::Confirmed)
            && self.s.audit.is_some()
    }

    /// The next step an audit round checks, below `below` (from the top when `None`): one
    /// whose action was sent and whose compensation finds the effect by key.
    fn next_audited_step(&self, below: Option<usize>) -> Option<usize> {
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
    fn audit_on_due(&mut self) -> bool {
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
                    HistoryKind::TimedOut,
                    Some(step),
                    Some((CommandKind::Compensation, attempt)),
                    Some("late-effect audit".into()),
                    Some("no reply before the time-out".into()),
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
                charged,
                waiting_for_downstream,
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
        self.send(i, CommandKind::Compensation, true, false);
    }

    fn on_audit_reply(&mut self, i: usize, reply: &WorkerReply) {
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
                        HistoryKind::LateEffectUndone,
                        Some(i),
                        Some((CommandKind::Compensation, c)),
                        Some(note.unwrap_or_else(|| format!("{name} had taken effect late"))),
                        None,
                    );
                } else {
                    self.record(
                        HistoryKind::AuditChecked,
                        Some(i),
                        Some((CommandKind::Compensation, c)),
                        note,
                        None,
                    );
                }
                self.audit_check(self.next_audited_step(Some(i)));
            }
            ReplyOutcome::NotApplied { reason } => {
                self.record(
                    HistoryKind::AuditChecked,
                    Some(i),
                    Some((CommandKind::Compensation, c)),
                    Some(format!("nothing to undo: {reason}")),
                    None,
                );
                self.audit_check(self.next_audited_step(Some(i)));
            }
            ReplyOutcome::BusinessFailure { code, message } => {
                self.record_reply(
                    i,
                    CommandKind::Compensation,
                    c,
                    reply,
                    Some(message.clone()),
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
    fn audit_needs_operator(&mut self, i: usize, detail: String) {
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

    // ----- operators -------------------------------------------------------------------------

    fn on_operator(&mut self, cmd: &OperatorCommand) -> Result<(), EngineError> {
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
                    self.resume(step, kind, charged, waiting_for_downstream);
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
                    OperatorAction::Cancel => (CompensatedAs::Cancelled, "CANCELLED"),
                    _ => (CompensatedAs::Compensated, "OPERATOR_COMPENSATION"),
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
                        "CANCELLED"
                    } else {
                        "OPERATOR_COMPENSATION"
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
            HistoryKind::OperatorAction,
            step,
            None,
            Some(cmd.action.as_str().to_owned()),
            None,
        );
        if let Some(h) = self.history.last_mut() {
            h.operator = Some(cmd.operator.clone());
            h.reason = Some(cmd.reason.clone());
        }
    }

    fn resolve(&mut self, outcome: ResolvedOutcome, cmd: &OperatorCommand) {
        let by = Some(format!("{}: {}", cmd.operator, cmd.reason));
        match outcome {
            ResolvedOutcome::Confirmed => self.end_confirmed(None, by),
            ResolvedOutcome::Compensated => self.end_compensated(CompensatedAs::Compensated, by),
        }
    }
}
