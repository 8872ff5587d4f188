//! What leaves the process has its own types: a saga and its history as an API, a dashboard or
//! a CLI shows them.
//!
//! The engine's `SagaState` and `HistoryEntry` are shaped for the engine and the stores (what a
//! transition needs, what is cheap to rewrite); they change when the engine does. The views
//! below are built from them and are what the outside reads: the request without the guest's
//! personal data, the status as a tagged object with its fields, one summary per step, and
//! timestamps as RFC 3339 fields rather than inside text (the engine writes some history
//! details as "until {at}" or "at {at}"; those come out as `until` or `scheduled_at`).
//!
//! Nothing here changes a saga; building a view only reads.
//!
//! Every view derives its schema for the operator API's OpenAPI document (`utoipa::ToSchema`),
//! with the serde attributes it serializes by. The engine's types a view carries have no schema
//! of their own (the engine does not depend on utoipa): [`schema`] describes them from the
//! engine's own values.

use chrono::NaiveDate;
use como_engine::failure::FailureCode;
use como_engine::state::{Activity, Attempts, Phase, StepState};
use como_engine::{Effect, HistoryEntry, HistoryKind, SagaState, SagaStatus, StatusKind};
use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{
    CommandKind, Credits, Email, MemberNo, OperatorId, PartySize, PersonName, Phone, RequestId,
    SagaId, SlotTime, StepName, StepOutput, Timestamp, VenueId,
};
use serde::Serialize;
use utoipa::ToSchema;

/// One saga as the outside sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SagaView {
    pub saga_id: SagaId,
    /// The definition the saga is pinned to, and its version.
    pub definition: String,
    pub definition_version: u32,
    pub request: RequestSummary,
    pub status: StatusView,
    /// The step the saga is at (going forward, compensating or stopped); none once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub current_step: Option<StepName>,
    pub steps: Vec<StepView>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    /// Past it, a saga still going forward compensates.
    pub deadline: Timestamp,
    /// Past it, a compensating saga asks for an operator; set once compensation began.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub compensation_deadline: Option<Timestamp>,
    /// When the saga is due to act next by itself (a time-out, a retry, an audit round).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_wake_at: Option<Timestamp>,
    /// Why the saga waits for a person, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub needs_operator_reason: Option<NeedsOperatorReason>,
    /// The late-effect audit of a compensated or cancelled saga, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub audit: Option<AuditView>,
    /// What the saga waits for right now, when it is not finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub waiting_on: Option<WaitingOn>,
    /// Changes so far: a version that grows with every transition.
    pub transitions: u64,
    /// The history, oldest first, when it was given ([`SagaView::of`]); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub history: Option<Vec<HistoryView>>,
}

/// The booking asked for. The guest's contact details (personal data) are left out unless
/// whoever reads the view may see them ([`RequestSummary::with_guest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RequestSummary {
    pub request_id: RequestId,
    pub member_no: MemberNo,
    pub venue_id: VenueId,
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub time: SlotTime,
    pub party_size: PartySize,
    /// The price in credits the member was quoted.
    pub credits: Credits,
    /// Who the reservation is for: only for a reader allowed to see personal data.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub guest: Option<GuestView>,
    /// When and why the guest's contact was erased (retention, or the member's request), once
    /// it was: the booking's money facts stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub guest_erased: Option<como_schemas::Erasure>,
}

/// The guest named on the reservation (personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GuestView {
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub phone: Phone,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub email: Option<Email>,
}

impl RequestSummary {
    /// Adds the guest's contact details, opened from the saga: for a reader allowed to see
    /// them.
    pub fn with_guest(&mut self, g: &como_schemas::GuestContact) {
        self.guest = Some(GuestView {
            first_name: g.first_name.clone(),
            last_name: g.last_name.clone(),
            phone: g.phone.clone(),
            email: g.email.clone(),
        });
    }
}

/// Where the saga is, with what that status needs to be understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusView {
    /// Doing `step`; `attempt` is the latest sent, and a retry may be scheduled for `retry_at`.
    Running {
        step: StepName,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        retry_at: Option<Timestamp>,
    },
    /// The downstream of `step` is unavailable; the saga waits for it, since `since`.
    WaitingForDownstream {
        step: StepName,
        downstream: String,
        /// Whether the saga was undoing `step` (rather than doing it).
        compensating: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        since: Option<Timestamp>,
    },
    /// The outcome of `step` is unknown and is being looked up.
    Reconciling {
        step: StepName,
        attempt: u32,
    },
    /// Undoing `step`; the saga will end as `ending_as`.
    Compensating {
        step: StepName,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        ending_as: Option<CompensatedAs>,
    },
    Confirmed,
    Compensated,
    Cancelled,
    /// Stopped at `step`; a person decides. `compensating` says how a compensation in
    /// progress would have ended.
    NeedsOperator {
        reason: NeedsOperatorReason,
        step: StepName,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        compensating: Option<CompensatedAs>,
    },
}

impl StatusView {
    /// The status without its fields, as stores index it and dashboards count by.
    pub fn kind(&self) -> StatusKind {
        match self {
            StatusView::Running { .. } => StatusKind::Running,
            StatusView::WaitingForDownstream { .. } => StatusKind::WaitingForDownstream,
            StatusView::Reconciling { .. } => StatusKind::Reconciling,
            StatusView::Compensating { .. } => StatusKind::Compensating,
            StatusView::Confirmed => StatusKind::Confirmed,
            StatusView::Compensated => StatusKind::Compensated,
            StatusView::Cancelled => StatusKind::Cancelled,
            StatusView::NeedsOperator { .. } => StatusKind::NeedsOperator,
        }
    }
}

/// One step of the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StepView {
    pub name: StepName,
    pub state: StepProgress,
    /// Whether its action took effect, as far as the saga knows.
    pub effect: Effect,
    pub attempts: StepAttempts,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<String>,
    /// What its action produced, as the worker reported it: the effect a downstream holds
    /// for the saga (a hold id, a redemption's receipt and transaction, a reservation id).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output: Option<StepOutput>,
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepProgress {
    /// Not reached yet.
    Pending,
    /// Its action is out, or its next attempt is scheduled.
    Running,
    /// Its action's outcome is being looked up.
    Reconciling,
    /// Done; the saga moved past it.
    Done,
    /// It was attempted and did not complete; the saga turned back.
    Failed,
    /// It is being undone.
    Compensating,
    /// It was undone.
    Compensated,
    /// The saga stopped at it and waits for a person.
    Stopped,
    /// Never reached: the saga turned back or ended before it.
    Skipped,
}

/// Commands sent for one step, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StepAttempts {
    pub action: AttemptCount,
    pub reconcile: AttemptCount,
    pub compensation: AttemptCount,
}

/// Commands of one kind sent for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct AttemptCount {
    /// Commands sent; the number of the latest attempt.
    pub sent: u32,
    /// Attempts counted against the retry policy in the current round (waiting for a
    /// downstream that is down costs none).
    pub charged: u32,
}

/// What a saga waits for right now: the first thing an operator needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum WaitingOn {
    /// The reply to a command: `command_id` (attempt `attempt` of the step's `command`), sent
    /// to `worker` at `since` (when the history says), counted as timed out at `timeout_at`;
    /// the saga gives up at `deadline`.
    Reply {
        step: StepName,
        command: CommandKind,
        attempt: u32,
        command_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        worker: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        since: Option<Timestamp>,
        timeout_at: Timestamp,
        deadline: Timestamp,
    },
    /// `downstream` is unavailable (its circuit is open): the command waits in its queue, or
    /// the saga's next attempt waits, since `since`, looked at again at `until`.
    Downstream {
        downstream: String,
        step: StepName,
        command: CommandKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        since: Option<Timestamp>,
        until: Timestamp,
        deadline: Timestamp,
    },
    /// A timer at `at`, and why (`retry`, `audit`).
    Timer {
        at: Timestamp,
        why: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        step: Option<StepName>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        command: Option<CommandKind>,
        /// The attempt the timer sends.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        attempt: Option<u32>,
    },
    /// A person: the saga stopped for `reason` at `step`.
    Operator {
        reason: NeedsOperatorReason,
        step: StepName,
        detail: String,
    },
}

/// What `s` waits for now; `history`, when given, says since when a command is out.
pub fn waiting_on(s: &SagaState, history: Option<&[HistoryEntry]>) -> Option<WaitingOn> {
    let name = |i: usize| s.steps.get(i).map(|st| st.name.clone());
    let (step, activity, deadline) = match &s.phase {
        Phase::Forward { step, activity } => (*step, activity, s.deadline),
        Phase::Compensating { step, activity, .. } => (
            *step,
            activity,
            s.compensation_deadline.unwrap_or(s.deadline),
        ),
        Phase::NeedsOperator {
            reason,
            step,
            detail,
            ..
        } => {
            return Some(WaitingOn::Operator {
                reason: *reason,
                step: name(*step)?,
                detail: detail.clone(),
            });
        }
        Phase::Done { .. } => {
            let check = s.audit.as_ref()?.check.as_ref()?;
            return Some(WaitingOn::Timer {
                at: check.activity.due_at(),
                why: "audit".into(),
                step: name(check.step),
                command: Some(check.activity.kind()),
                attempt: None,
            });
        }
    };
    let step_name = name(step)?;
    let worker = como_engine::como::lookup(&s.definition, s.definition_version)
        .and_then(|def| def.steps.get(step)?.operation(activity.kind()).worker());
    if activity.waiting_for_downstream() {
        return Some(WaitingOn::Downstream {
            downstream: worker
                .map(|w| w.downstream().to_owned())
                .unwrap_or_default(),
            step: step_name,
            command: activity.kind(),
            since: s.waiting_since,
            until: activity.due_at(),
            deadline,
        });
    }
    Some(match activity {
        Activity::Awaiting {
            kind,
            attempt,
            timeout_at,
            ..
        } => {
            let key = como_schemas::IdempotencyKey::new(s.saga_id, &step_name, *kind);
            let since = history.and_then(|h| {
                h.iter()
                    .rev()
                    .find(|e| {
                        e.kind == HistoryKind::CommandSent
                            && e.step.as_ref() == Some(&step_name)
                            && e.command == Some(*kind)
                            && e.attempt == Some(*attempt)
                    })
                    .map(|e| e.at)
            });
            WaitingOn::Reply {
                step: step_name,
                command: *kind,
                attempt: *attempt,
                command_id: como_schemas::CommandId::new(&key, *attempt).to_string(),
                worker: worker.map(|w| w.to_string()),
                since,
                timeout_at: *timeout_at,
                deadline,
            }
        }
        Activity::Backoff { kind, at, .. } => WaitingOn::Timer {
            at: *at,
            why: "retry".into(),
            step: Some(step_name),
            command: Some(*kind),
            attempt: Some(s.steps[step].attempts(*kind).sent + 1),
        },
    })
}

/// The late-effect audit of a saga that ended compensated or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditView {
    pub ended_at: Timestamp,
    /// Rounds finished.
    pub rounds: u32,
    /// Late effects found and undone so far.
    pub undone: u32,
    /// The step being checked in the round in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub checking: Option<StepName>,
}

/// One line of a saga's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HistoryView {
    pub at: Timestamp,
    /// The saga's transition number; several entries may share one.
    pub transition: u64,
    pub kind: HistoryKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub step: Option<StepName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub command: Option<CommandKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub attempt: Option<u32>,
    /// The saga's status after the transition.
    pub status: StatusKind,
    /// `retry_scheduled`: when the next attempt goes out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scheduled_at: Option<Timestamp>,
    /// `waiting_for_downstream`: until when the saga waits before trying again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub until: Option<Timestamp>,
    /// `waiting_for_downstream` before a lookup: the earliest time the effect is looked up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub not_before: Option<Timestamp>,
    /// `compensation_started`: why the booking failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<schema::FailureCode>, nullable = false)]
    pub code: Option<FailureCode>,
    /// `needs_operator`: why the saga stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub needs_operator_reason: Option<NeedsOperatorReason>,
    /// What the engine wrote that has no field above.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// The person who acted, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub operator: Option<OperatorId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

impl SagaView {
    /// A saga with its history (oldest first).
    pub fn of(state: &SagaState, history: &[HistoryEntry]) -> Self {
        let mut view = Self::from(state);
        view.waiting_on = waiting_on(state, Some(history));
        view.history = Some(history.iter().map(HistoryView::from).collect());
        view
    }
}

impl From<&SagaState> for SagaView {
    /// A saga without its history.
    fn from(s: &SagaState) -> Self {
        let r = &s.request;
        let current = match &s.phase {
            Phase::Forward { step, .. }
            | Phase::Compensating { step, .. }
            | Phase::NeedsOperator { step, .. } => Some(*step),
            Phase::Done { .. } => None,
        };
        SagaView {
            saga_id: s.saga_id,
            definition: s.definition.clone(),
            definition_version: s.definition_version,
            request: RequestSummary {
                request_id: r.request_id.clone(),
                member_no: r.member_no.clone(),
                venue_id: r.venue_id.clone(),
                date: r.date,
                time: r.time,
                party_size: r.party_size,
                credits: r.quoted_credits,
                guest: None,
                guest_erased: r.guest.erasure().cloned(),
            },
            status: status_view(s),
            current_step: current
                .and_then(|i| s.steps.get(i))
                .map(|st| st.name.clone()),
            steps: s
                .steps
                .iter()
                .enumerate()
                .map(|(i, st)| step_view(s, i, st))
                .collect(),
            started_at: s.started_at,
            updated_at: s.updated_at,
            deadline: s.deadline,
            compensation_deadline: s.compensation_deadline,
            next_wake_at: s.wake_at,
            needs_operator_reason: match &s.phase {
                Phase::NeedsOperator { reason, .. } => Some(*reason),
                _ => None,
            },
            audit: s.audit.as_ref().map(|a| AuditView {
                ended_at: a.ended_at,
                rounds: a.rounds,
                undone: a.undone,
                checking: a
                    .check
                    .as_ref()
                    .and_then(|c| s.steps.get(c.step))
                    .map(|st| st.name.clone()),
            }),
            waiting_on: waiting_on(s, None),
            transitions: s.transitions,
            history: None,
        }
    }
}

/// The stored status, with what the phase adds (how a compensation ends).
fn status_view(s: &SagaState) -> StatusView {
    match s.status.clone() {
        SagaStatus::Running {
            step,
            attempt,
            retry_at,
        } => StatusView::Running {
            step,
            attempt,
            retry_at,
        },
        SagaStatus::WaitingForDownstream {
            step,
            downstream,
            compensating,
            since,
        } => StatusView::WaitingForDownstream {
            step,
            downstream,
            compensating,
            since,
        },
        SagaStatus::Reconciling { step, attempt } => StatusView::Reconciling { step, attempt },
        SagaStatus::Compensating { step, attempt } => StatusView::Compensating {
            step,
            attempt,
            ending_as: match &s.phase {
                Phase::Compensating { end_as, .. } => Some(*end_as),
                _ => None,
            },
        },
        SagaStatus::Confirmed => StatusView::Confirmed,
        SagaStatus::Compensated => StatusView::Compensated,
        SagaStatus::Cancelled => StatusView::Cancelled,
        SagaStatus::NeedsOperator {
            reason,
            step,
            detail,
        } => StatusView::NeedsOperator {
            reason,
            step,
            detail,
            compensating: match &s.phase {
                Phase::NeedsOperator { compensating, .. } => *compensating,
                _ => None,
            },
        },
    }
}

fn step_view(s: &SagaState, i: usize, st: &StepState) -> StepView {
    let going_forward = matches!(s.phase, Phase::Forward { .. });
    let state = match &s.phase {
        _ if st.compensated => StepProgress::Compensated,
        Phase::Compensating { step, .. } if *step == i => StepProgress::Compensating,
        Phase::NeedsOperator { step, .. } if *step == i => StepProgress::Stopped,
        Phase::Forward { step, activity } if *step == i => {
            if activity.kind() == CommandKind::Reconcile {
                StepProgress::Reconciling
            } else {
                StepProgress::Running
            }
        }
        _ if st.completed => StepProgress::Done,
        _ if !st.action.is_unused() => StepProgress::Failed,
        _ if going_forward => StepProgress::Pending,
        _ => StepProgress::Skipped,
    };
    let count = |a: &Attempts| AttemptCount {
        sent: a.sent,
        charged: a.charged,
    };
    StepView {
        name: st.name.clone(),
        state,
        effect: st.effect(),
        attempts: StepAttempts {
            action: count(&st.action),
            reconcile: count(&st.reconcile),
            compensation: count(&st.compensation),
        },
        last_error: st.last_error.clone(),
        output: st.output.clone(),
    }
}

/// The lookup that waits for its downstream: "to look the effect up, at {at} or later".
const LOOKUP_PREFIX: &str = "to look the effect up, at ";
const LOOKUP_SUFFIX: &str = " or later";

impl From<&HistoryEntry> for HistoryView {
    fn from(h: &HistoryEntry) -> Self {
        let mut view = HistoryView {
            at: h.at,
            transition: h.transition,
            kind: h.kind,
            step: h.step.clone(),
            command: h.command,
            attempt: h.attempt,
            status: h.status,
            scheduled_at: None,
            until: None,
            not_before: None,
            code: None,
            needs_operator_reason: None,
            detail: h.detail.clone(),
            error: h.error.clone(),
            operator: h.operator.clone(),
            reason: h.reason.clone(),
        };
        let Some(detail) = h.detail.as_deref() else {
            return view;
        };
        // What the engine writes for each kind (see `como_engine::transition`); text that does
        // not match stays in `detail` as it is.
        let structured = match h.kind {
            HistoryKind::RetryScheduled => detail
                .strip_prefix("at ")
                .and_then(timestamp)
                .map(|at| view.scheduled_at = Some(at)),
            HistoryKind::WaitingForDownstream => {
                if let Some(at) = detail.strip_prefix("until ").and_then(timestamp) {
                    view.until = Some(at);
                    Some(())
                } else if let Some(at) = detail
                    .strip_prefix(LOOKUP_PREFIX)
                    .and_then(|rest| rest.strip_suffix(LOOKUP_SUFFIX))
                    .and_then(timestamp)
                {
                    view.not_before = Some(at);
                    view.detail = Some("to look the effect up".to_owned());
                    return view;
                } else {
                    None
                }
            }
            HistoryKind::CompensationStarted => {
                view.code = Some(FailureCode::parse(detail));
                Some(())
            }
            HistoryKind::NeedsOperator => {
                serde_json::from_value(serde_json::Value::String(detail.to_owned()))
                    .ok()
                    .map(|reason| view.needs_operator_reason = Some(reason))
            }
            _ => None,
        };
        if structured.is_some() {
            view.detail = None;
        }
        view
    }
}

/// An RFC 3339 time, as the engine writes `Timestamp`s into text.
fn timestamp(text: &str) -> Option<Timestamp> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

/// How long a step took in one saga: from its first command of `command` (the action, or the
/// compensation) to the entry that finished it (`step_completed`, `step_compensated`), retries
/// and waits included: the time a member waits on that step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDuration {
    pub step: StepName,
    pub command: CommandKind,
    pub millis: u64,
    /// Commands of that kind sent for the step (1 when the first attempt did it).
    pub attempts: u32,
}

/// Every step a history shows finished, with how long it took.
pub fn step_durations(history: &[HistoryEntry]) -> Vec<StepDuration> {
    let mut first_sent: Vec<(StepName, CommandKind, Timestamp, u32)> = Vec::new();
    let mut out = Vec::new();
    for e in history {
        let Some(step) = &e.step else { continue };
        match (e.kind, e.command) {
            (HistoryKind::CommandSent, Some(kind)) => {
                match first_sent
                    .iter_mut()
                    .find(|(s, k, _, _)| s == step && *k == kind)
                {
                    Some(found) => found.3 += 1,
                    None => first_sent.push((step.clone(), kind, e.at, 1)),
                }
            }
            (HistoryKind::StepCompleted | HistoryKind::StepCompensated, _) => {
                let kind = if e.kind == HistoryKind::StepCompleted {
                    CommandKind::Action
                } else {
                    CommandKind::Compensation
                };
                if let Some((_, _, at, attempts)) = first_sent
                    .iter()
                    .find(|(s, k, _, _)| s == step && *k == kind)
                {
                    out.push(StepDuration {
                        step: step.clone(),
                        command: kind,
                        millis: u64::try_from(e.at.as_millis() - at.as_millis()).unwrap_or(0),
                        attempts: *attempts,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Schemas of the engine's types whose serialization is written by hand, for the operator API's
/// OpenAPI document (the engine derives the others' with utoipa).
pub mod schema {
    use std::borrow::Cow;

    use como_engine::FailureCode as EngineFailureCode;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::{PartialSchema, ToSchema};

    /// The engine's `FailureCode`: one of the engine's codes, or a downstream's own.
    pub struct FailureCode;

    impl PartialSchema for FailureCode {
        fn schema() -> RefOr<Schema> {
            let engine: Vec<&str> = EngineFailureCode::ENGINE
                .iter()
                .map(EngineFailureCode::as_str)
                .collect();
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(format!(
                    "Why a booking failed: one of the engine's codes ({}) or a downstream's \
                     refusal, with the downstream's own code (`INSUFFICIENT_POINTS`, \
                     `SLOT_UNAVAILABLE`, ...).",
                    engine.join(", ")
                )))
                .examples(engine.into_iter().map(serde_json::Value::from))
                .into()
        }
    }

    impl ToSchema for FailureCode {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("FailureCode")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: HistoryKind, detail: &str) -> HistoryEntry {
        HistoryEntry {
            transition: 4,
            at: Timestamp::from_millis(1_790_000_000_000),
            kind,
            step: None,
            command: None,
            attempt: None,
            status: StatusKind::Running,
            detail: Some(detail.to_owned()),
            error: None,
            operator: None,
            reason: None,
        }
    }

    #[test]
    fn details_that_hold_a_time_become_fields() {
        let at = Timestamp::from_millis(1_790_000_012_345);
        let v = HistoryView::from(&entry(HistoryKind::RetryScheduled, &format!("at {at}")));
        assert_eq!((v.scheduled_at, v.detail), (Some(at), None));
        let v = HistoryView::from(&entry(
            HistoryKind::WaitingForDownstream,
            &format!("until {at}"),
        ));
        assert_eq!((v.until, v.detail), (Some(at), None));
        let v = HistoryView::from(&entry(
            HistoryKind::WaitingForDownstream,
            &format!("to look the effect up, at {at} or later"),
        ));
        assert_eq!(v.not_before, Some(at));
        assert_eq!(v.detail.as_deref(), Some("to look the effect up"));
        let v = HistoryView::from(&entry(HistoryKind::CompensationStarted, "TIMED_OUT"));
        assert_eq!((v.code, v.detail), (Some(FailureCode::TimedOut), None));
        let v = HistoryView::from(&entry(HistoryKind::NeedsOperator, "late_effect"));
        assert_eq!(
            (v.needs_operator_reason, v.detail),
            (Some(NeedsOperatorReason::LateEffect), None)
        );
    }

    #[test]
    fn other_details_stay_as_written() {
        for (kind, detail) in [
            (HistoryKind::RetryScheduled, "at some point"),
            (HistoryKind::WaitingForDownstream, "until later"),
            (
                HistoryKind::WaitingForDownstream,
                "the worker parked the command until its downstream recovers",
            ),
            (HistoryKind::NeedsOperator, "not a reason"),
            (HistoryKind::ReplyReceived, "at 2026-09-21T14:13:20.000Z"),
        ] {
            let v = HistoryView::from(&entry(kind, detail));
            assert_eq!(v.detail.as_deref(), Some(detail));
            assert_eq!(
                (
                    v.scheduled_at,
                    v.until,
                    v.not_before,
                    v.needs_operator_reason
                ),
                (None, None, None, None)
            );
        }
    }
}
