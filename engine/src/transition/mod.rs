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
//!
//! The one `Machine` that applies an input is defined here, with what every phase shares
//! (recording, the definition's settings, the activity); its methods are split by phase:
//! - `forward`: sending, retries, completing steps, looking an effect up (reconcile).
//! - `reply`: routing a worker's reply (action, lookup, compensation), late replies, and what
//!   they teach about effects.
//! - `compensation`: beginning, walking and finishing compensation.
//! - `timer`: time-outs, due work, and waiting for a downstream.
//! - `audit`: the late-effect audit after a saga ended compensated or cancelled.
//! - `operator`: operator actions.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason, SagaEventBody};
use como_schemas::{CommandKind, OperatorId, SagaEvent, SchemaVersion, Timestamp, WorkerCommand};

use crate::decision::{Decision, HistoryEntry, HistoryKind};
use crate::definition::{RetryPolicy, SagaDefinition};
use crate::input::Input;
use crate::state::{Activity, Phase, SagaState, StepState, Terminal};

mod audit;
mod compensation;
mod forward;
mod operator;
mod privacy;
mod reply;
mod timer;

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
        Input::Erase { reason } => m.on_erase(*reason),
    }
    let mut decision = m.finish(state);
    // Erasing a finished saga's guest is no change to the booking: when it was last changed
    // stays (its retention, and the AWS store's expiry, are timed from that).
    if matches!(input, Input::Erase { .. }) && matches!(state.phase, Phase::Done { .. }) {
        decision.state.updated_at = state.updated_at;
    }
    Ok(decision)
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
        erase_when_done: None,
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
    m.record(Record::new(HistoryKind::Started).detail(format!("{} v{}", def.name, def.version)));
    m.start_step(0);
    let blank = m.s.clone();
    let mut d = m.finish(&blank);
    d.changed = true;
    d
}

/// Whether an attempt counts against its retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    /// It spends one of the policy's attempts.
    Charged,
    /// It spends nothing: the saga is waiting for its downstream.
    Free,
}

impl Charge {
    /// From the flag an [`Activity::Backoff`] stores.
    fn from_flag(charged: bool) -> Self {
        if charged {
            Charge::Charged
        } else {
            Charge::Free
        }
    }

    fn is_charged(self) -> bool {
        self == Charge::Charged
    }
}

/// Whether an attempt is made while the saga waits for its downstream to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    No,
    ForDownstream,
}

impl Waiting {
    /// From the flag an [`Activity`] stores.
    fn from_flag(waiting_for_downstream: bool) -> Self {
        if waiting_for_downstream {
            Waiting::ForDownstream
        } else {
            Waiting::No
        }
    }

    fn is_waiting(self) -> bool {
        self == Waiting::ForDownstream
    }
}

/// A history entry to append, built by name:
/// `Record::new(kind).step(i).command(kind, attempt).detail(..).error(..)`.
/// What is not given stays empty.
#[derive(Debug)]
struct Record {
    kind: HistoryKind,
    step: Option<usize>,
    command: Option<(CommandKind, u32)>,
    detail: Option<String>,
    error: Option<String>,
    operator: Option<(OperatorId, String)>,
}

impl Record {
    fn new(kind: HistoryKind) -> Self {
        Self {
            kind,
            step: None,
            command: None,
            detail: None,
            error: None,
            operator: None,
        }
    }

    /// The step (by index) it is about.
    fn step(self, i: usize) -> Self {
        self.maybe_step(Some(i))
    }

    fn maybe_step(mut self, i: Option<usize>) -> Self {
        self.step = i;
        self
    }

    /// The command, and its attempt, it is about.
    fn command(mut self, kind: CommandKind, attempt: u32) -> Self {
        self.command = Some((kind, attempt));
        self
    }

    fn detail(self, detail: impl Into<String>) -> Self {
        self.maybe_detail(Some(detail.into()))
    }

    fn maybe_detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail;
        self
    }

    fn error(self, error: impl Into<String>) -> Self {
        self.maybe_error(Some(error.into()))
    }

    fn maybe_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }

    /// The operator who acted, and why.
    fn operator(mut self, operator: OperatorId, reason: String) -> Self {
        self.operator = Some((operator, reason));
        self
    }
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
        self.erase_if_done();
        if self.s == *before
            && self.commands.is_empty()
            && self.events.is_empty()
            && self.history.is_empty()
        {
            return unchanged(before, "nothing to do: a duplicate, stale or early input");
        }
        self.s.transitions += 1;
        self.s.updated_at = self.now;
        // Only a saga whose current activity waits for a downstream is waiting.
        let waiting = match &self.s.phase {
            Phase::Forward { activity, .. } | Phase::Compensating { activity, .. } => {
                activity.waiting_for_downstream()
            }
            _ => false,
        };
        if !waiting {
            self.s.waiting_since = None;
        }
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
            traceparent: None,
            body,
        });
    }

    /// Append a history entry; `finish` numbers it and stamps the saga's status.
    fn record(&mut self, r: Record) {
        let (operator, reason) = r.operator.unzip();
        self.history.push(HistoryEntry {
            transition: 0,
            at: self.now,
            kind: r.kind,
            step: r.step.map(|i| self.s.steps[i].name.clone()),
            command: r.command.map(|c| c.0),
            attempt: r.command.map(|c| c.1),
            status: crate::state::StatusKind::Running,
            detail: r.detail,
            error: r.error,
            operator,
            reason,
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

    fn needs_compensation(&self, i: usize) -> bool {
        let step = &self.s.steps[i];
        self.def.steps[i].compensation.is_some()
            && !step.compensated
            && matches!(
                step.effect(),
                crate::state::Effect::Applied | crate::state::Effect::Maybe
            )
    }

    // ----- shared by every phase -------------------------------------------------------------

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

    /// Stop and wait for a person; `compensating` is how a compensation in progress ends.
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
            Record::new(HistoryKind::NeedsOperator)
                .step(i)
                .detail(reason.as_str())
                .error(detail),
        );
    }
}
