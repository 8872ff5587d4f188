//! A saga's state: what the engine needs to decide, and the status a dashboard shows.
//!
//! The state is small on purpose (history is returned per transition, to be stored apart), so
//! that a store can keep it in one row or item and rewrite it on every transition.

use como_schemas::events::{CompensatedAs, NeedsOperatorReason};
use como_schemas::{
    BookingRequested, CommandKind, SagaId, StepName, StepOutput, Timestamp, Worker,
};
use serde::{Deserialize, Serialize};

/// One saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub saga_id: SagaId,
    /// The definition this saga is pinned to.
    pub definition: String,
    pub definition_version: u32,
    pub request: BookingRequested,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    /// Past it, a saga still moving forward compensates.
    pub deadline: Timestamp,
    /// Set when compensation begins: past it, the saga asks for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_deadline: Option<Timestamp>,
    pub phase: Phase,
    pub steps: Vec<StepState>,
    /// Derived from `phase` on every transition; stored so that stores can index it.
    pub status: SagaStatus,
    /// When the runtime must deliver `Input::Timer` next, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Timestamp>,
    /// Transitions that changed something; numbers history entries.
    pub transitions: u64,
    /// Events published so far; numbers event ids.
    pub events_published: u64,
    /// Ids of operator actions already applied, so that a repeated one changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_actions: Vec<String>,
    /// The late-effect audit of a compensated or cancelled saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Since when the current step has been waiting for its downstream to come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// The guest's personal data is to be erased as soon as the saga finishes, and why
    /// ([`crate::Input::Erase`] on a running saga).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_when_done: Option<como_schemas::ErasureReason>,
}

/// The late-effect audit of a saga that ended compensated or cancelled: at each of the
/// definition's `audit_after_ms` after the end, the compensations that find their effect by
/// key are issued again, one step at a time in reverse step order, so that an action that
/// landed after the saga gave up on it is undone. It lives in the state, its timer in
/// `wake_at`, so it survives restarts like any other timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// When the saga ended; audit rounds are timed from it.
    pub ended_at: Timestamp,
    /// Rounds finished.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rounds: u32,
    /// The step being checked in the round in progress, and what that check waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<AuditCheck>,
    /// Late effects found and undone so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undone: u32,
}

/// One step's check within an audit round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheck {
    pub step: usize,
    pub activity: Activity,
}

impl Audit {
    /// When the audit needs the saga next, given the definition's schedule.
    pub fn due_at(&self, audit_after_ms: &[u64]) -> Option<Timestamp> {
        match &self.check {
            Some(check) => Some(check.activity.due_at()),
            None => audit_after_ms
                .get(self.rounds as usize)
                .map(|after| self.ended_at.plus_ms(*after)),
        }
    }
}

/// Where the saga is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Doing step `step`.
    Forward {
        step: usize,
        activity: Activity,
    },
    /// Undoing step `step`; steps above it are done with.
    Compensating {
        step: usize,
        activity: Activity,
        end_as: CompensatedAs,
    },
    /// Stopped; an operator decides.
    NeedsOperator {
        reason: NeedsOperatorReason,
        step: usize,
        detail: String,
        /// Set when the saga was compensating, and how that would have ended.
        compensating: Option<CompensatedAs>,
    },
    Done {
        outcome: Terminal,
    },
}

/// What the saga waits for within its current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "activity", rename_all = "snake_case")]
pub enum Activity {
    /// A command is out; it counts as timed out at `timeout_at`.
    Awaiting {
        kind: CommandKind,
        attempt: u32,
        timeout_at: Timestamp,
        /// The worker said the downstream is unavailable and the command waits in its queue.
        waiting_for_downstream: bool,
    },
    /// The next attempt of `kind` goes out at `at`.
    Backoff {
        kind: CommandKind,
        at: Timestamp,
        /// Whether that attempt counts against the retry policy (waiting for a downstream
        /// that is down does not; the saga's deadline bounds it instead).
        charged: bool,
        waiting_for_downstream: bool,
    },
}

impl Activity {
    pub fn kind(&self) -> CommandKind {
        match self {
            Activity::Awaiting { kind, .. } | Activity::Backoff { kind, .. } => *kind,
        }
    }

    pub fn waiting_for_downstream(&self) -> bool {
        match self {
            Activity::Awaiting {
                waiting_for_downstream,
                ..
            }
            | Activity::Backoff {
                waiting_for_downstream,
                ..
            } => *waiting_for_downstream,
        }
    }

    pub fn due_at(&self) -> Timestamp {
        match self {
            Activity::Awaiting { timeout_at, .. } => *timeout_at,
            Activity::Backoff { at, .. } => *at,
        }
    }
}

/// How a finished saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminal {
    Confirmed,
    Compensated,
    Cancelled,
}

// Stores rewrite the state on every transition, so what is at its default is left out of the
// JSON (and read back as the default): a finished saga's state is about half the size.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Attempts of one kind of command at one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    /// Commands sent; the number of the latest attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sent: u32,
    /// Attempts that count against the retry policy in the current round.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub charged: u32,
    /// When the current round's first attempt was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_started_at: Option<Timestamp>,
}

/// What the saga knows about one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub name: StepName,
    #[serde(default, skip_serializing_if = "Attempts::is_unused")]
    pub action: Attempts,
    #[serde(default, skip_serializing_if = "Attempts::is_unused")]
    pub reconcile: Attempts,
    #[serde(default, skip_serializing_if = "Attempts::is_unused")]
    pub compensation: Attempts,
    /// Action attempts whose outcome is not known: each may have taken effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<u32>,
    /// Reconcile attempts that write (a replayed redemption) and whose outcome is not known:
    /// each may have taken effect too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled_reconciles: Vec<u32>,
    /// How many action attempts had been sent when the latest reconciliation was sent: the
    /// attempts its answer speaks for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actions_before_reconcile: u32,
    /// No action attempt sent so far can take effect after this moment (its deadline plus the
    /// reply grace). Compensation and reconciliation wait for it, so that a late action can
    /// never overtake them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settles_at: Option<Timestamp>,
    /// The action's output, once it is known to have taken effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
    /// The forward path moved past this step.
    #[serde(default, skip_serializing_if = "is_false")]
    pub completed: bool,
    /// Its compensation succeeded.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compensated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Attempts {
    /// Nothing of this kind was ever sent.
    pub fn is_unused(&self) -> bool {
        *self == Self::default()
    }
}

impl StepState {
    pub fn new(name: StepName) -> Self {
        Self {
            name,
            action: Attempts::default(),
            reconcile: Attempts::default(),
            compensation: Attempts::default(),
            unsettled: Vec::new(),
            unsettled_reconciles: Vec::new(),
            actions_before_reconcile: 0,
            settles_at: None,
            output: None,
            completed: false,
            compensated: false,
            last_error: None,
        }
    }

    /// Whether the action took effect, as far as the saga knows.
    pub fn effect(&self) -> Effect {
        if self.output.is_some() {
            Effect::Applied
        } else if self.is_unsettled() {
            Effect::Maybe
        } else if self.action.sent > 0 {
            Effect::NotApplied
        } else {
            Effect::NotAttempted
        }
    }

    /// Some attempt that may take effect has an unknown outcome.
    pub fn is_unsettled(&self) -> bool {
        !self.unsettled.is_empty() || !self.unsettled_reconciles.is_empty()
    }

    pub fn attempts(&self, kind: CommandKind) -> &Attempts {
        match kind {
            CommandKind::Action => &self.action,
            CommandKind::Reconcile => &self.reconcile,
            CommandKind::Compensation => &self.compensation,
        }
    }

    pub fn attempts_mut(&mut self, kind: CommandKind) -> &mut Attempts {
        match kind {
            CommandKind::Action => &mut self.action,
            CommandKind::Reconcile => &mut self.reconcile,
            CommandKind::Compensation => &mut self.compensation,
        }
    }
}

/// Whether a step's action took effect, as far as the saga knows: `maybe` while an attempt's
/// outcome is unknown, `not_applied` when every attempt is known not to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    NotAttempted,
    /// At least one attempt's outcome is unknown.
    Maybe,
    Applied,
    /// Every attempt is known not to have taken effect.
    NotApplied,
}

/// The status as a dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SagaStatus {
    /// Doing `step`; `attempt` is the latest sent (a retry may be scheduled for `retry_at`).
    Running {
        step: StepName,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        retry_at: Option<Timestamp>,
    },
    /// The downstream of `step` is unavailable (its circuit is open); the saga waits.
    WaitingForDownstream {
        step: StepName,
        downstream: String,
        compensating: bool,
        /// Since when it has been waiting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        since: Option<Timestamp>,
    },
    /// The outcome of `step` is unknown and is being looked up.
    Reconciling {
        step: StepName,
        attempt: u32,
    },
    /// Undoing `step`.
    Compensating {
        step: StepName,
        attempt: u32,
    },
    Confirmed,
    Compensated,
    Cancelled,
    /// Stopped at `step`; a person decides.
    NeedsOperator {
        reason: NeedsOperatorReason,
        step: StepName,
        detail: String,
    },
}

/// The status without its details: what stores index and dashboards count by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Running,
    WaitingForDownstream,
    Reconciling,
    Compensating,
    Confirmed,
    Compensated,
    Cancelled,
    NeedsOperator,
}

impl StatusKind {
    pub const ALL: [StatusKind; 8] = [
        StatusKind::Running,
        StatusKind::WaitingForDownstream,
        StatusKind::Reconciling,
        StatusKind::Compensating,
        StatusKind::Confirmed,
        StatusKind::Compensated,
        StatusKind::Cancelled,
        StatusKind::NeedsOperator,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StatusKind::Running => "running",
            StatusKind::WaitingForDownstream => "waiting_for_downstream",
            StatusKind::Reconciling => "reconciling",
            StatusKind::Compensating => "compensating",
            StatusKind::Confirmed => "confirmed",
            StatusKind::Compensated => "compensated",
            StatusKind::Cancelled => "cancelled",
            StatusKind::NeedsOperator => "needs_operator",
        }
    }

    pub fn parse(s: &str) -> Option<StatusKind> {
        StatusKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Confirmed, compensated or cancelled: nothing more will happen.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StatusKind::Confirmed | StatusKind::Compensated | StatusKind::Cancelled
        )
    }
}

impl SagaStatus {
    pub fn kind(&self) -> StatusKind {
        match self {
            SagaStatus::Running { .. } => StatusKind::Running,
            SagaStatus::WaitingForDownstream { .. } => StatusKind::WaitingForDownstream,
            SagaStatus::Reconciling { .. } => StatusKind::Reconciling,
            SagaStatus::Compensating { .. } => StatusKind::Compensating,
            SagaStatus::Confirmed => StatusKind::Confirmed,
            SagaStatus::Compensated => StatusKind::Compensated,
            SagaStatus::Cancelled => StatusKind::Cancelled,
            SagaStatus::NeedsOperator { .. } => StatusKind::NeedsOperator,
        }
    }
}

impl SagaState {
    /// The status that `phase` shows.
    pub fn derive_status(
        &self,
        worker_of: impl Fn(usize, CommandKind) -> Option<Worker>,
    ) -> SagaStatus {
        let name = |i: usize| self.steps[i].name.clone();
        let waiting = |i: usize, activity: &Activity, compensating: bool| {
            activity
                .waiting_for_downstream()
                .then(|| SagaStatus::WaitingForDownstream {
                    step: name(i),
                    downstream: worker_of(i, activity.kind())
                        .map(|w| w.downstream().to_owned())
                        .unwrap_or_default(),
                    compensating,
                    since: self.waiting_since,
                })
        };
        match &self.phase {
            Phase::Forward { step, activity } => {
                if let Some(w) = waiting(*step, activity, false) {
                    return w;
                }
                let s = &self.steps[*step];
                match activity {
                    Activity::Awaiting {
                        kind: CommandKind::Reconcile,
                        attempt,
                        ..
                    } => SagaStatus::Reconciling {
                        step: name(*step),
                        attempt: *attempt,
                    },
                    Activity::Backoff {
                        kind: CommandKind::Reconcile,
                        ..
                    } => SagaStatus::Reconciling {
                        step: name(*step),
                        attempt: s.reconcile.sent,
                    },
                    Activity::Backoff { at, .. } => SagaStatus::Running {
                        step: name(*step),
                        attempt: s.action.sent,
                        retry_at: Some(*at),
                    },
                    Activity::Awaiting { attempt, .. } => SagaStatus::Running {
                        step: name(*step),
                        attempt: *attempt,
                        retry_at: None,
                    },
                }
            }
            Phase::Compensating { step, activity, .. } => {
                waiting(*step, activity, true).unwrap_or(SagaStatus::Compensating {
                    step: name(*step),
                    attempt: self.steps[*step].compensation.sent,
                })
            }
            Phase::NeedsOperator {
                reason,
                step,
                detail,
                ..
            } => SagaStatus::NeedsOperator {
                reason: *reason,
                step: name(*step),
                detail: detail.clone(),
            },
            Phase::Done { outcome } => match outcome {
                Terminal::Confirmed => SagaStatus::Confirmed,
                Terminal::Compensated => SagaStatus::Compensated,
                Terminal::Cancelled => SagaStatus::Cancelled,
            },
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }
}
