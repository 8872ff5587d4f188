//! Property tests: random sagas under random weather.
//!
//! Each case takes a random variation of the Como booking definition (error handling, retry
//! budgets, time-outs, deadlines) and drives one saga with a random sequence of inputs: replies
//! to any command ever sent (so: duplicates, replies out of order, replies for old attempts),
//! timers that fire early, late or exactly on time (so: time-outs racing replies), and operator
//! actions. Then it stops the inputs and lets timers (and, in half of the cases, well-behaved
//! workers) finish the saga.
//!
//! Replies are consistent with a hidden "truth" of what took effect downstream, as a real
//! worker's would be: an attempt that succeeded took effect; a definitive failure did not; an
//! unknown outcome or a missing reply may have, decided by a coin when something first looks
//! (a reconciliation) or, at the end, assumed to have taken effect (the strictest reading).
//!
//! Late landings: a downstream can finish a call long after everyone gave up on it, after its
//! deadline and even after a lookup found nothing. A `Land` move makes any attempt whose own
//! answer never said "not applied" (no reply, an unknown outcome; a worker that retried within
//! the call and was refused after an attempt that may still land answers unknown, by the
//! clients' rule) take effect now, for the steps whose effect can be found by key (a redemption
//! by its `ReceiptNo`, a booking by its `external_id`), up to the audit's last round. The saga
//! must still end with every such effect undone after it landed: that is the late-effect
//! audit's job.
//!
//! Checked after every input:
//! - a duplicate of the input changes nothing (no state change, no command, event or history);
//! - every transition that changes something appends to the history;
//! - every command of one (step, kind) carries the same idempotency key, attempts count up by
//!   one, and no command id is ever reused;
//! - no action or reconciliation is sent once compensation has begun;
//! - a compensation is sent only for a step whose action may have taken effect (by what the
//!   delivered replies say), only once every later step that needed undoing is undone (reverse
//!   order), and never before the step's attempts are past their deadlines (so an action in
//!   flight cannot overtake its own undoing).
//!
//! Checked once inputs stop and timers fire:
//! - the saga is terminal (confirmed, compensated, cancelled) or needs an operator;
//! - compensated or cancelled: every step whose action took effect (by the truth, and by what
//!   the engine could know) was undone; confirmed: every step took effect and nothing was undone.

use std::collections::{BTreeSet, HashSet};

use como_engine::como::booking_v1;
use como_engine::definition::{Handling, OnReconcileExhausted};
use como_engine::state::{Activity, Phase};
use como_engine::{
    Input, OperatorAction, OperatorCommand, ResolvedOutcome, SagaDefinition, SagaState, transition,
};
use como_schemas::events::SagaEventBody;
use como_schemas::{
    CommandKind, Credits, HoldId, IdempotencyKey, OperationKind, OperatorId, ReceiptNo,
    ReplyOutcome, ReservationId, StepOutput, Timestamp, TransactionId, WorkerCommand, examples,
};
use proptest::prelude::*;

mod support;

// ----- generated inputs ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Move {
    /// Deliver a reply to the `pick`-th command ever sent.
    Reply {
        pick: usize,
        choice: u8,
    },
    /// Let time pass, then fire the timer (possibly before anything is due).
    Timer {
        advance_ms: u32,
    },
    /// Fire the timer exactly when the saga asked.
    Wake,
    Operator {
        which: u8,
        reuse_id: bool,
    },
    /// The booking request arrives again.
    Restart,
    /// An attempt that may still land does, now (see the module's comment).
    Land {
        pick: usize,
    },
}

fn a_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        12 => (any::<usize>(), any::<u8>()).prop_map(|(pick, choice)| Move::Reply { pick, choice }),
        3 => (0u32..40_000).prop_map(|advance_ms| Move::Timer { advance_ms }),
        4 => Just(Move::Wake),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(which, reuse_id)| Move::Operator { which, reuse_id }),
        1 => Just(Move::Restart),
        2 => any::<usize>().prop_map(|pick| Move::Land { pick }),
    ]
}

#[derive(Debug, Clone)]
struct StepKnobs {
    unknown: u8,
    timeout: u8,
    retryable: u8,
    business_retries: bool,
    reconcile_needs_operator: bool,
    max_attempts: u32,
    compensation_attempts: u32,
    timeout_ms: u64,
    backoff_ms: u64,
}

fn step_knobs() -> impl Strategy<Value = StepKnobs> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        prop::bool::weighted(0.1),
        any::<bool>(),
        1u32..=4,
        1u32..=4,
        1_000u64..20_000,
        1u64..3_000,
    )
        .prop_map(
            |(
                unknown,
                timeout,
                retryable,
                business_retries,
                reconcile_needs_operator,
                max_attempts,
                compensation_attempts,
                timeout_ms,
                backoff_ms,
            )| StepKnobs {
                unknown,
                timeout,
                retryable,
                business_retries,
                reconcile_needs_operator,
                max_attempts,
                compensation_attempts,
                timeout_ms,
                backoff_ms,
            },
        )
}

/// A random variation of the Como booking saga.
fn a_definition() -> impl Strategy<Value = SagaDefinition> {
    (
        prop::collection::vec(step_knobs(), 4),
        2_000u64..1_200_000,
        10_000u64..7_200_000,
        0u64..5_000,
    )
        .prop_map(|(knobs, deadline_ms, compensation_deadline_ms, grace)| {
            let mut def = booking_v1();
            def.deadline_ms = deadline_ms;
            def.compensation_deadline_ms = compensation_deadline_ms;
            def.reply_grace_ms = grace;
            // COMO_PROP_NO_AUDIT=1 shows what the audit is for: without it, late landings
            // are left live and these properties fail.
            if std::env::var_os("COMO_PROP_NO_AUDIT").is_some() {
                def.audit_after_ms.clear();
            }
            for (step, k) in def.steps.iter_mut().zip(knobs) {
                let can_reconcile = step.reconcile.is_some();
                let pick = |x: u8| match x % if can_reconcile { 3 } else { 2 } {
                    0 => Handling::Retry,
                    1 => Handling::Compensate,
                    _ => Handling::Reconcile,
                };
                step.on_error.unknown = pick(k.unknown);
                step.on_error.timeout = pick(k.timeout);
                step.on_error.retryable = if k.retryable % 4 == 0 {
                    Handling::Compensate
                } else {
                    Handling::Retry
                };
                step.on_error.business = if k.business_retries {
                    Handling::Retry
                } else {
                    Handling::Compensate
                };
                step.on_error.reconcile_exhausted = if k.reconcile_needs_operator {
                    OnReconcileExhausted::NeedsOperator
                } else {
                    OnReconcileExhausted::Compensate
                };
                step.retry.max_attempts = k.max_attempts;
                step.retry.initial_backoff_ms = k.backoff_ms;
                step.retry.max_backoff_ms = k.backoff_ms * 8;
                step.timeout_ms = k.timeout_ms;
                if let Some(c) = &mut step.compensation {
                    c.retry.max_attempts = k.compensation_attempts;
                    c.retry.initial_backoff_ms = k.backoff_ms;
                    c.retry.max_backoff_ms = k.backoff_ms * 8;
                    c.timeout_ms = k.timeout_ms;
                }
            }
            def.validate().expect("variations stay valid");
            def
        })
}

// ----- the world the saga lives in ---------------------------------------------------------

/// One command sent, with what the worker will keep answering for it.
struct Sent {
    cmd: WorkerCommand,
    /// The recorded final reply: a redelivery replays it.
    final_reply: Option<ReplyOutcome>,
    /// Whether this attempt (an action, or a reconciliation that writes) took effect.
    truth: Option<bool>,
    /// A definitive reply for it was delivered.
    settled: bool,
}

/// What the delivered replies say about one step, by the engine's documented rules.
#[derive(Default, Clone)]
struct Known {
    applied: bool,
    actions_not_applied: BTreeSet<u32>,
    reconciles_not_applied: BTreeSet<u32>,
    compensated: bool,
}

struct World {
    def: SagaDefinition,
    state: Option<SagaState>,
    now: Timestamp,
    sent: Vec<Sent>,
    ids: HashSet<String>,
    known: Vec<Known>,
    compensation_begun: bool,
    resolved_by_hand: bool,
    first_compensations: Vec<usize>,
    operator_ids: Vec<String>,
    coin_flips: u64,
    /// The saga has ended compensated or cancelled at least once (its audit began), or found
    /// a late effect.
    ended: bool,
    /// When an effect of each step last landed late (a `Land` move).
    landed_at: Vec<Option<Timestamp>>,
    /// When a compensation of each step last answered that it is undone.
    undone_at: Vec<Option<Timestamp>>,
}

impl World {
    fn new(def: SagaDefinition) -> Self {
        let n = def.steps.len();
        Self {
            def,
            state: None,
            now: Timestamp::from_millis(support::T0),
            sent: Vec::new(),
            ids: HashSet::new(),
            known: vec![Known::default(); n],
            compensation_begun: false,
            resolved_by_hand: false,
            first_compensations: Vec::new(),
            operator_ids: Vec::new(),
            coin_flips: 0,
            ended: false,
            landed_at: vec![None; n],
            undone_at: vec![None; n],
        }
    }

    fn state(&self) -> &SagaState {
        self.state.as_ref().expect("started")
    }

    fn step(&self, cmd: &WorkerCommand) -> usize {
        self.def.step_index(&cmd.step).expect("known step")
    }

    fn writes(&self, cmd: &WorkerCommand) -> bool {
        match cmd.kind {
            CommandKind::Action => true,
            CommandKind::Reconcile => cmd.operation.kind().writes(),
            CommandKind::Compensation => false,
        }
    }

    /// May step `i`'s action have taken effect, by what the delivered replies say?
    fn may_have_effect(&self, i: usize) -> bool {
        let k = &self.known[i];
        k.applied
            || self.sent.iter().any(|s| {
                self.step(&s.cmd) == i
                    && match s.cmd.kind {
                        CommandKind::Action => !k.actions_not_applied.contains(&s.cmd.attempt),
                        CommandKind::Reconcile => {
                            self.writes(&s.cmd)
                                && !k.reconciles_not_applied.contains(&s.cmd.attempt)
                        }
                        CommandKind::Compensation => false,
                    }
            })
    }

    /// Did step `i`'s action take effect downstream? Undecided attempts count as yes.
    fn truly_applied(&self, i: usize) -> bool {
        self.sent
            .iter()
            .any(|s| self.step(&s.cmd) == i && self.writes(&s.cmd) && s.truth != Some(false))
    }

    /// The saga ended compensated or cancelled: compensations now are its audit's.
    fn audited(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| &s.phase),
            Some(Phase::Done { outcome }) if *outcome != como_engine::state::Terminal::Confirmed
        )
    }

    /// An attempt that may still land lands now: one whose own answer never said "not
    /// applied", of a step whose effect can be found by key.
    fn land(&mut self, pick: usize) {
        // The audit's promise ends with its last round: a downstream slower than that (24 h for
        // Como v1) is beyond it, so nothing lands after it here.
        let audits_over = self.audited()
            && self
                .state()
                .audit
                .as_ref()
                .is_none_or(|a| a.due_at(&self.def.audit_after_ms).is_none());
        if audits_over {
            return;
        }
        let landable: Vec<usize> = (0..self.sent.len())
            .filter(|&n| {
                let s = &self.sent[n];
                let i = self.step(&s.cmd);
                self.writes(&s.cmd)
                    && s.cmd.kind != CommandKind::Compensation
                    && self.def.steps[i]
                        .compensation
                        .as_ref()
                        .is_some_and(|c| c.operation.finds_effect_by_key())
                    && matches!(
                        s.final_reply,
                        None | Some(ReplyOutcome::UnknownOutcome { .. })
                    )
            })
            .collect();
        if landable.is_empty() {
            return;
        }
        let n = landable[pick % landable.len()];
        let i = self.step(&self.sent[n].cmd);
        self.sent[n].truth = Some(true);
        self.landed_at[i] = Some(self.now);
    }

    fn flip(&mut self, seed: u8) -> bool {
        self.coin_flips += 1;
        (u64::from(seed) ^ self.coin_flips.wrapping_mul(0x9e37_79b9)) & 1 == 1
    }

    /// Apply one input and check everything that must hold after it.
    fn apply(&mut self, input: Input) -> bool {
        let result = transition(&self.def, self.state.as_ref(), &input, self.now);
        if std::env::var_os("COMO_PROP_TRACE").is_some() {
            eprintln!("@{} {input:?}", self.now.as_millis() - support::T0);
            match &result {
                Ok(d) => {
                    for c in &d.commands {
                        eprintln!(
                            "   -> {} {} #{} at {}",
                            c.step,
                            c.kind,
                            c.attempt,
                            c.sent_at.as_millis() - support::T0
                        );
                    }
                    for h in &d.history {
                        eprintln!(
                            "   .. {:?} {:?} {:?} {:?}",
                            h.kind,
                            h.step.as_ref().map(|s| s.to_string()),
                            h.attempt,
                            h.detail
                        );
                    }
                }
                Err(e) => eprintln!("   !! {e}"),
            }
        }
        let Ok(d) = result else {
            return false;
        };
        // A duplicate of the input changes nothing.
        let again = transition(&self.def, Some(&d.state), &input, self.now)
            .expect("a duplicate is not an error");
        assert!(!again.changed, "duplicate input {input:?} changed the saga");
        assert_eq!(again.state, d.state);
        assert!(again.commands.is_empty() && again.events.is_empty() && again.history.is_empty());
        if d.changed {
            assert!(
                !d.history.is_empty(),
                "a transition that changes something is recorded"
            );
        } else {
            assert_eq!(Some(&d.state), self.state.as_ref());
        }
        let begins = d
            .events
            .iter()
            .any(|e| matches!(e.body, SagaEventBody::BookingFailed { .. }));
        self.compensation_begun |= begins;
        for cmd in &d.commands {
            self.check_command(cmd);
        }
        if let Phase::Compensating { .. } = d.state.phase {
            self.compensation_begun = true;
        }
        // Stores keep the state as JSON that leaves defaults out: reading it back loses nothing.
        let json = serde_json::to_string(&d.state).expect("a state encodes");
        let read: SagaState = serde_json::from_str(&json).expect("a stored state decodes");
        assert_eq!(
            read, d.state,
            "the state changed through its stored form: {json}"
        );
        // Once the saga has ended, or found that an effect landed after it had settled the
        // step as not done, undoing follows what is found, not the reverse step order.
        self.ended |= matches!(
            d.state.phase,
            Phase::Done { outcome } if outcome != como_engine::state::Terminal::Confirmed
        ) || matches!(
            d.state.phase,
            Phase::NeedsOperator {
                reason: como_schemas::events::NeedsOperatorReason::LateEffect,
                ..
            }
        );
        self.state = Some(d.state);
        true
    }

    fn check_command(&mut self, cmd: &WorkerCommand) {
        let i = self.step(cmd);
        assert!(
            self.ids.insert(cmd.command_id.to_string()),
            "command id {} reused",
            cmd.command_id
        );
        let key = IdempotencyKey::new(cmd.saga_id, &cmd.step, cmd.kind);
        assert_eq!(cmd.idempotency_key, key);
        let previous = self
            .sent
            .iter()
            .filter(|s| s.cmd.step == cmd.step && s.cmd.kind == cmd.kind)
            .map(|s| {
                assert_eq!(
                    s.cmd.idempotency_key, cmd.idempotency_key,
                    "key stable across attempts"
                );
                s.cmd.attempt
            })
            .max()
            .unwrap_or(0);
        assert_eq!(cmd.attempt, previous + 1, "attempts count up by one");
        assert!(
            cmd.command_id
                .as_str()
                .ends_with(&format!(":{}", cmd.attempt))
        );
        match cmd.kind {
            CommandKind::Action => {
                assert!(
                    !self.compensation_begun,
                    "{} action sent after compensation began",
                    cmd.step
                );
            }
            CommandKind::Reconcile => {
                assert!(
                    !self.compensation_begun,
                    "{} lookup sent after compensation began",
                    cmd.step
                );
                self.assert_settled(i, cmd, "looking up");
            }
            CommandKind::Compensation if self.ended => {
                // A late-effect audit re-issues compensations that find the effect by key,
                // whatever the saga believed of the step; once it has ended, an operator may
                // also retry a check the audit could not finish, or undo a late effect found.
                let finds = self.def.steps[i]
                    .compensation
                    .as_ref()
                    .is_some_and(|c| c.operation.finds_effect_by_key());
                assert!(
                    finds || (!self.audited() && self.may_have_effect(i)),
                    "compensation of {} after the end that is neither an audit nor needed",
                    cmd.step
                );
                self.assert_settled(i, cmd, "undoing");
            }
            CommandKind::Compensation => {
                assert!(
                    self.may_have_effect(i),
                    "compensation of {} whose action cannot have taken effect",
                    cmd.step
                );
                for k in i + 1..self.def.steps.len() {
                    if self.def.steps[k].compensation.is_some() {
                        assert!(
                            !self.may_have_effect(k) || self.known[k].compensated,
                            "{} undone before {}",
                            cmd.step,
                            self.def.steps[k].name
                        );
                    }
                }
                self.assert_settled(i, cmd, "undoing");
                if !self.first_compensations.contains(&i) {
                    self.first_compensations.push(i);
                }
            }
        }
        self.sent.push(Sent {
            cmd: cmd.clone(),
            final_reply: None,
            truth: None,
            settled: false,
        });
    }

    /// `cmd` goes out only once no attempt of step `i` with an open outcome can still land.
    fn assert_settled(&self, i: usize, cmd: &WorkerCommand, doing: &str) {
        let grace = self.def.reply_grace_ms;
        for s in &self.sent {
            if self.step(&s.cmd) == i && self.writes(&s.cmd) && !s.settled {
                assert!(
                    cmd.sent_at >= s.cmd.deadline.plus_ms(grace),
                    "{doing} {} while {} attempt {} may still land",
                    cmd.step,
                    s.cmd.kind,
                    s.cmd.attempt
                );
            }
        }
    }

    /// The worker's answer to command `n`, consistent with the truth; `final_only` leaves out
    /// the informational "deferred".
    fn answer(&mut self, n: usize, choice: u8, final_only: bool) -> ReplyOutcome {
        if let Some(r) = &self.sent[n].final_reply {
            return r.clone();
        }
        let cmd = self.sent[n].cmd.clone();
        let i = self.step(&cmd);
        let pick = if final_only { choice % 6 } else { choice % 7 };
        let outcome = match cmd.kind {
            CommandKind::Action => {
                let truth = self.sent[n].truth;
                match (pick, truth) {
                    (6, _) => return deferred(),
                    (0 | 1, Some(false)) | (2, Some(false)) => business(),
                    (0..=2, _) => {
                        self.sent[n].truth = Some(true);
                        success(&cmd)
                    }
                    (3, Some(true)) | (4, Some(true)) => success(&cmd),
                    (3, _) => {
                        self.sent[n].truth = Some(false);
                        retryable(false)
                    }
                    (4, _) => {
                        self.sent[n].truth = Some(false);
                        retryable(true)
                    }
                    _ => unknown(choice & 0x80 != 0),
                }
            }
            CommandKind::Reconcile => {
                // Whatever was sent before this lookup can no longer change: decide it.
                for k in 0..n {
                    if self.step(&self.sent[k].cmd) == i
                        && self.writes(&self.sent[k].cmd)
                        && self.sent[k].truth.is_none()
                    {
                        let t = self.flip(choice);
                        self.sent[k].truth = Some(t);
                    }
                }
                let applied = (0..n)
                    .any(|k| self.step(&self.sent[k].cmd) == i && self.sent[k].truth == Some(true));
                let writes = self.writes(&cmd);
                match pick % 5 {
                    4 if !final_only => return deferred(),
                    0 | 1 if applied => success(&cmd),
                    0 | 1 if writes => {
                        self.sent[n].truth = Some(true);
                        success(&cmd)
                    }
                    0 | 1 => ReplyOutcome::NotApplied {
                        reason: "not found".into(),
                    },
                    2 if writes && !applied => {
                        self.sent[n].truth = Some(false);
                        business()
                    }
                    3 => {
                        if writes {
                            self.sent[n].truth = Some(false);
                        }
                        retryable(choice & 0x80 != 0)
                    }
                    _ => unknown(choice & 0x80 != 0),
                }
            }
            CommandKind::Compensation => match pick {
                0..=2 => {
                    // It runs now: it finds and undoes whatever has landed by now.
                    let undone = self.truly_applied(i)
                        && self.undone_at[i]
                            .is_none_or(|u| self.landed_at[i].is_some_and(|l| l > u));
                    self.undone_at[i] = Some(self.now);
                    ReplyOutcome::Succeeded {
                        output: StepOutput::Compensated { note: None, undone },
                    }
                }
                3 => retryable(choice & 0x80 != 0),
                4 => unknown(choice & 0x80 != 0),
                6 => return deferred(),
                _ if choice & 0x40 != 0 => business(),
                _ => retryable(false),
            },
        };
        self.sent[n].final_reply = Some(outcome.clone());
        outcome
    }

    /// Deliver the answer for command `n`, updating what the replies teach.
    fn deliver(&mut self, n: usize, choice: u8, final_only: bool) {
        let outcome = self.answer(n, choice, final_only);
        let cmd = self.sent[n].cmd.clone();
        let i = self.step(&cmd);
        let mut reply = examples::reply(&cmd, outcome.clone());
        reply.replied_at = self.now;
        // What a delivered reply teaches, by the engine's rules.
        let latest_lookup = self
            .sent
            .iter()
            .filter(|s| s.cmd.step == cmd.step && s.cmd.kind == CommandKind::Reconcile)
            .map(|s| s.cmd.attempt)
            .max()
            == Some(cmd.attempt);
        let mut known = self.known[i].clone();
        let mut settled = false;
        match (cmd.kind, &outcome) {
            (_, ReplyOutcome::Deferred { .. }) => {}
            (
                CommandKind::Compensation,
                ReplyOutcome::Succeeded { .. } | ReplyOutcome::NotApplied { .. },
            ) => known.compensated = true,
            (CommandKind::Compensation, _) => {}
            (_, ReplyOutcome::Succeeded { .. }) => {
                known.applied = true;
                settled = true;
            }
            (CommandKind::Action, ReplyOutcome::UnknownOutcome { .. }) => {}
            (CommandKind::Action, _) => {
                known.actions_not_applied.insert(cmd.attempt);
                settled = true;
            }
            (
                CommandKind::Reconcile,
                ReplyOutcome::NotApplied { .. } | ReplyOutcome::BusinessFailure { .. },
            ) => {
                settled = true;
                if latest_lookup {
                    let position = self
                        .sent
                        .iter()
                        .position(|s| s.cmd.command_id == cmd.command_id)
                        .unwrap_or(n);
                    for s in &self.sent[..position] {
                        if s.cmd.step == cmd.step && s.cmd.kind == CommandKind::Action {
                            known.actions_not_applied.insert(s.cmd.attempt);
                        }
                        if s.cmd.step == cmd.step && s.cmd.kind == CommandKind::Reconcile {
                            known.reconciles_not_applied.insert(s.cmd.attempt);
                        }
                    }
                    known.reconciles_not_applied.insert(cmd.attempt);
                }
            }
            (CommandKind::Reconcile, ReplyOutcome::RetryableFailure { .. }) => {
                settled = true;
                known.reconciles_not_applied.insert(cmd.attempt);
            }
            (CommandKind::Reconcile, _) => {}
        }
        // The engine learns from the reply as it handles it, so the oracle must too.
        let before = std::mem::replace(&mut self.known[i], known);
        let was_settled = self.sent[n].settled;
        self.sent[n].settled |= settled;
        if !self.apply(Input::Reply { reply }) {
            self.known[i] = before;
            self.sent[n].settled = was_settled;
        }
    }

    fn operator(&mut self, which: u8, reuse_id: bool) {
        let action = match which % 20 {
            0..=7 => OperatorAction::RetryNow,
            8..=12 => OperatorAction::ForceCompensation,
            13..=17 => OperatorAction::Cancel,
            18 => OperatorAction::Resolve {
                outcome: ResolvedOutcome::Compensated,
            },
            _ => OperatorAction::Resolve {
                outcome: ResolvedOutcome::Confirmed,
            },
        };
        let id = match (reuse_id, self.operator_ids.last()) {
            (true, Some(id)) => id.clone(),
            _ => format!("op-{}", self.operator_ids.len()),
        };
        self.operator_ids.push(id.clone());
        let applied = self.apply(Input::Operator {
            command: OperatorCommand {
                action_id: id,
                operator: OperatorId::parse("ops.prop").unwrap(),
                reason: "property test".into(),
                action,
            },
        });
        if applied && matches!(action, OperatorAction::Resolve { .. }) {
            self.resolved_by_hand = true;
        }
    }

    fn wake(&mut self) -> bool {
        match self.state().wake_at {
            Some(at) => {
                self.now = self.now.max(at);
                self.apply(Input::Timer);
                true
            }
            None => false,
        }
    }

    fn finished(&self) -> bool {
        matches!(
            self.state().phase,
            Phase::Done { .. } | Phase::NeedsOperator { .. }
        )
    }

    /// Stop the inputs and let timers, and optionally well-behaved workers, finish the saga.
    fn drain(&mut self, cooperative: bool, seed: u8) {
        for round in 0..5_000u32 {
            if self.finished() && self.state().wake_at.is_none() {
                return;
            }
            if cooperative
                && let Some(como_engine::state::AuditCheck {
                    step,
                    activity: Activity::Awaiting { attempt, .. },
                }) = self.state().audit.as_ref().and_then(|a| a.check.clone())
                && self.audited()
            {
                let name = self.def.steps[step].name.clone();
                let n = self
                    .sent
                    .iter()
                    .position(|s| {
                        s.cmd.step == name
                            && s.cmd.kind == CommandKind::Compensation
                            && s.cmd.attempt == attempt
                    })
                    .expect("the audited command was sent");
                let answered_before = self.sent[n].final_reply.is_some();
                self.deliver(n, seed.wrapping_add(round as u8), true);
                if !answered_before {
                    continue;
                }
            }
            if cooperative
                && let Phase::Forward {
                    activity: Activity::Awaiting { kind, attempt, .. },
                    step,
                }
                | Phase::Compensating {
                    activity: Activity::Awaiting { kind, attempt, .. },
                    step,
                    ..
                } = self.state().phase.clone()
            {
                let name = self.def.steps[step].name.clone();
                let n = self
                    .sent
                    .iter()
                    .position(|s| {
                        s.cmd.step == name && s.cmd.kind == kind && s.cmd.attempt == attempt
                    })
                    .expect("the awaited command was sent");
                let answered_before = self.sent[n].final_reply.is_some();
                self.deliver(n, seed.wrapping_add(round as u8), true);
                if !answered_before {
                    continue;
                }
            }
            assert!(
                self.wake(),
                "a saga that is not finished has a wake-up time: {:?}",
                self.state().phase
            );
        }
        panic!("the saga did not finish: {:?}", self.state().phase);
    }

    fn check_outcome(&self) {
        assert!(self.finished(), "terminal or needs an operator");
        if self.resolved_by_hand {
            return;
        }
        let state = self.state();
        match &state.phase {
            Phase::Done {
                outcome: como_engine::state::Terminal::Confirmed,
            } => {
                for (i, step) in self.def.steps.iter().enumerate() {
                    if step.action.worker().is_some() {
                        assert!(
                            self.known[i].applied,
                            "confirmed, but {} never took effect",
                            step.name
                        );
                    }
                }
                assert!(
                    !self
                        .sent
                        .iter()
                        .any(|s| s.cmd.kind == CommandKind::Compensation),
                    "confirmed sagas undo nothing"
                );
            }
            Phase::Done { .. } => {
                for (i, step) in self.def.steps.iter().enumerate() {
                    if step.compensation.is_none() {
                        continue;
                    }
                    if self.truly_applied(i) || self.may_have_effect(i) {
                        assert!(
                            self.known[i].compensated,
                            "{} took effect and was not undone",
                            step.name
                        );
                    }
                    if let Some(landed) = self.landed_at[i] {
                        assert!(
                            self.undone_at[i].is_some_and(|u| u >= landed),
                            "{} landed late at {landed} and was never undone after that",
                            step.name
                        );
                    }
                }
            }
            Phase::NeedsOperator { detail, .. } => assert!(!detail.is_empty(), "says why"),
            Phase::Forward { .. } | Phase::Compensating { .. } => unreachable!(),
        }
        let mut order = self.first_compensations.clone();
        order.dedup();
        assert!(
            order.windows(2).all(|w| w[0] > w[1]),
            "compensations in reverse step order: {order:?}"
        );
    }
}

fn success(cmd: &WorkerCommand) -> ReplyOutcome {
    let output = match cmd.operation.kind() {
        OperationKind::CheckCredits => StepOutput::CreditsChecked {
            balance: Credits::new(9_000).unwrap(),
        },
        OperationKind::HoldSlot => StepOutput::SlotHeld {
            hold_id: HoldId::parse(format!("h{}", cmd.attempt)).unwrap(),
            sevenrooms_api: None,
        },
        OperationKind::RedeemCredits | OperationKind::ReplayRedemption => {
            StepOutput::CreditsRedeemed {
                transaction_id: TransactionId::parse("t1").unwrap(),
                receipt_no: ReceiptNo::for_saga(cmd.saga_id),
                balance: None,
            }
        }
        OperationKind::BookExperience | OperationKind::FindReservation => {
            StepOutput::ExperienceBooked {
                reservation_id: ReservationId::parse("r1").unwrap(),
            }
        }
        _ => StepOutput::Done,
    };
    ReplyOutcome::Succeeded { output }
}

fn business() -> ReplyOutcome {
    ReplyOutcome::BusinessFailure {
        code: "REFUSED".into(),
        message: "refused".into(),
    }
}

fn retryable(downstream_unavailable: bool) -> ReplyOutcome {
    ReplyOutcome::RetryableFailure {
        reason: "503".into(),
        retry_after_ms: None,
        downstream_unavailable,
    }
}

fn unknown(downstream_unavailable: bool) -> ReplyOutcome {
    ReplyOutcome::UnknownOutcome {
        reason: "timed out".into(),
        downstream_unavailable,
    }
}

fn deferred() -> ReplyOutcome {
    ReplyOutcome::Deferred {
        reason: "circuit open".into(),
        retry_after_ms: Some(1_000),
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_096)
}

fn run(def: SagaDefinition, moves: Vec<Move>, cooperative: bool, seed: u8) {
    let mut w = World::new(def);
    assert!(w.apply(Input::Start {
        request: support::request("req-prop")
    }));
    for m in moves {
        match m {
            Move::Reply { pick, choice } => {
                let n = pick % w.sent.len();
                w.deliver(n, choice, false);
            }
            Move::Timer { advance_ms } => {
                w.now = w.now.plus_ms(u64::from(advance_ms));
                w.apply(Input::Timer);
            }
            Move::Wake => {
                w.wake();
            }
            Move::Operator { which, reuse_id } => w.operator(which, reuse_id),
            Move::Restart => {
                w.apply(Input::Start {
                    request: support::request("req-prop"),
                });
            }
            Move::Land { pick } => w.land(pick),
        }
    }
    w.drain(cooperative, seed);
    w.check_outcome();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn sagas_survive_random_weather(
        def in a_definition(),
        moves in prop::collection::vec(a_move(), 0..120),
        cooperative in any::<bool>(),
        seed in any::<u8>(),
    ) {
        run(def, moves, cooperative, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The unmodified Como definition, with workers that mostly behave: most runs must end
    /// confirmed or compensated, and all of them must keep the invariants.
    #[test]
    fn como_v1_under_mostly_fair_weather(
        moves in prop::collection::vec(
            prop_oneof![
                8 => (any::<usize>(), any::<u8>()).prop_map(|(pick, choice)| Move::Reply { pick, choice }),
                3 => Just(Move::Wake),
            ],
            0..60,
        ),
        seed in any::<u8>(),
    ) {
        run(booking_v1(), moves, true, seed);
    }
}
