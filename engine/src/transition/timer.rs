//! Time: time-outs, work that has come due, and waiting for a downstream to come back.

use como_schemas::CommandKind;
use como_schemas::events::{CompensatedAs, NeedsOperatorReason};

use super::{Charge, Machine, Record, Waiting};
use crate::decision::HistoryKind;
use crate::definition::Handling;
use crate::failure::FailureCode;
use crate::state::{Activity, Phase};

impl Machine<'_> {
    pub(super) fn on_timer(&mut self) {
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
                    FailureCode::DeadlinePassed,
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
                    } => self.on_timeout(
                        step,
                        kind,
                        attempt,
                        Waiting::from_flag(waiting_for_downstream),
                    ),
                    Activity::Backoff {
                        kind,
                        charged,
                        waiting_for_downstream,
                        ..
                    } => self.resume(
                        step,
                        kind,
                        Charge::from_flag(charged),
                        Waiting::from_flag(waiting_for_downstream),
                    ),
                }
                true
            }
            Phase::Done { .. } => self.audit_on_due(),
            Phase::NeedsOperator { .. } => false,
        }
    }

    /// Send the attempt a backoff was waiting for, unless a late reply has shown in the
    /// meantime that the step never took effect and there is nothing to undo.
    pub(super) fn resume(&mut self, i: usize, kind: CommandKind, charge: Charge, waiting: Waiting) {
        if kind == CommandKind::Compensation && !self.needs_compensation(i) {
            let end_as = self.compensating_as().unwrap_or(CompensatedAs::Compensated);
            self.walk_compensation(end_as);
        } else {
            self.send(i, kind, charge, waiting);
        }
    }

    /// No reply in time. While the saga waits for its downstream (the command was parked, or
    /// sent after a wait), a missing reply is most likely the worker's backlog draining at the
    /// rate limit: handled as for any time-out, but without spending an attempt.
    fn on_timeout(&mut self, i: usize, kind: CommandKind, attempt: u32, waiting: Waiting) {
        self.record(
            Record::new(HistoryKind::TimedOut)
                .step(i)
                .command(kind, attempt)
                .error("no reply before the time-out"),
        );
        let why = format!("attempt {attempt} timed out");
        match kind {
            CommandKind::Action => {
                let handling = self.def.steps[i].on_error.timeout;
                if waiting.is_waiting() {
                    self.unknown_in_outage(i, handling, why);
                } else {
                    self.handle_action_error(i, handling, FailureCode::TimedOut, why, None);
                }
            }
            CommandKind::Reconcile | CommandKind::Compensation if waiting.is_waiting() => {
                self.wait_for_downstream(i, kind, None)
            }
            CommandKind::Reconcile | CommandKind::Compensation => self.retry(i, kind, None, &why),
        }
    }

    /// The downstream is down: wait without spending an attempt. The round's time budget
    /// starts again once it is back (the saga's own deadline bounds the wait instead), so that
    /// a backlog that drains slowly after a long outage is not taken for a failing step.
    pub(super) fn wait_for_downstream(
        &mut self,
        i: usize,
        kind: CommandKind,
        retry_after_ms: Option<u64>,
    ) {
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
            Record::new(HistoryKind::WaitingForDownstream)
                .step(i)
                .detail(format!("until {at}")),
        );
        self.schedule(i, kind, at, Charge::Free, Waiting::ForDownstream);
    }

    /// An action's outcome is unknown because its downstream went down during the call. The
    /// step is handled as for any unknown outcome, except that the outage spends nothing: a
    /// retry waits for the downstream, and a lookup (which waits for it too) is not charged,
    /// nor is the attempt it is about (the retry after "not found" is charged instead).
    pub(super) fn unknown_in_outage(&mut self, i: usize, handling: Handling, why: String) {
        self.s.steps[i].last_error = Some(why.clone());
        match handling {
            Handling::Retry => self.wait_for_downstream(i, CommandKind::Action, None),
            Handling::Reconcile => {
                let a = self.s.steps[i].attempts_mut(CommandKind::Action);
                a.charged = a.charged.saturating_sub(1);
                a.round_started_at = None;
                self.s.waiting_since.get_or_insert(self.now);
                self.fresh_round(i, CommandKind::Reconcile);
                let at = self.settled_at(i);
                self.record(
                    Record::new(HistoryKind::WaitingForDownstream)
                        .step(i)
                        .detail(format!("to look the effect up, at {at} or later")),
                );
                self.schedule(
                    i,
                    CommandKind::Reconcile,
                    at,
                    Charge::Free,
                    Waiting::ForDownstream,
                );
            }
            Handling::Compensate => {
                self.handle_action_error(i, handling, FailureCode::UnknownOutcome, why, None)
            }
        }
    }
}
