//! Operator actions: retry now, force compensation, cancel, resolve by hand, and the same
//! action on many sagas at once.
//!
//! The CLI and the HTTP API call these; nothing else may change a saga. (Workers' replies and
//! timers move sagas on through the runtime; a person's action goes through here only.)
//!
//! Each action is an [`Input::Operator`] applied through [`advance`] (read, transition,
//! conditional write, re-read and re-apply on a conflict), so the engine alone decides whether
//! the action is possible now, and the saga's history records who acted, what they did and
//! why.
//!
//! Every action takes:
//! - **who** acts ([`OperatorId`]) and **why** (a reason that is not blank; a blank one is
//!   refused before the saga is read, see [`OperatorError::EmptyReason`]);
//! - an optional **action id**: the same id applied twice changes the saga once (the engine
//!   remembers the ids it applied). When it is absent a UUID is generated; it is returned in
//!   [`OperatorOutcome::action_id`], so that a caller who does not know whether its action was
//!   stored (a time-out, a store error) can repeat it safely with that id.
//!
//! Every action, and every redrive of dead letters ([`redrive`]), is also written to the audit
//! list ([`como_ports::AuditLog`]): as pending before it is carried out (an action that cannot
//! be recorded is not carried out), then with how it ended.

use como_engine::{EngineError, Input, OperatorCommand, SagaStatus};
use como_ports::{AuditEntry, AuditOutcome, Backend, PortError, QueueName};
use como_schemas::{MemberNo, OperatorId, SagaId};

use crate::privacy::ErasureReport;

pub use como_engine::{OperatorAction, ResolvedOutcome};

use crate::advance::{Advanced, RuntimeError, advance};

/// What an operator action did to one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorOutcome {
    pub saga_id: SagaId,
    /// The action's id: the one given, or the one generated for it.
    pub action_id: String,
    pub action: OperatorAction,
    /// The saga's status after the action (its present status when `repeated`).
    pub status: SagaStatus,
    /// The saga's stored version after the action.
    pub version: u64,
    /// The saga had already applied this action id: nothing changed this time.
    pub repeated: bool,
}

/// Why an operator action was not done. In every case but [`OperatorError::Store`] the saga is
/// known to be unchanged.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(
        "an operator action needs a reason: say why you act (it is kept in the saga's history)"
    )]
    EmptyReason,
    #[error("the action id is blank: give a non-blank id, or none to have one generated")]
    EmptyActionId,
    /// The audit list could not record the action, so it was not carried out.
    #[error("the action could not be recorded in the audit list, so it was not done: {0}")]
    Unrecorded(#[source] PortError),
    /// The queue failed while dead letters were put back: some may have gone back.
    #[error("the redrive failed: {0}; some dead letters may have gone back: list them again")]
    Redrive(#[source] PortError),
    /// The store failed while a member's sagas were erased: some may be erased already.
    #[error(
        "forgetting the member failed: {0}; some of their sagas may be erased already: repeat the \
         command (it erases what is left and counts the rest as done)"
    )]
    Forget(#[source] RuntimeError),
    #[error("no saga has id {0}: check the id")]
    NotFound(SagaId),
    #[error("saga {saga}: {} refused by the engine: {}; nothing changed", .action.as_str(), refusal(.error))]
    Refused {
        saga: SagaId,
        action: OperatorAction,
        error: EngineError,
    },
    #[error(
        "saga {saga} kept changing while {} was applied and it was given up; nothing changed: \
         look at the saga again and repeat the action if it still makes sense (action id {action_id})",
        .action.as_str()
    )]
    Conflict {
        saga: SagaId,
        action: OperatorAction,
        action_id: String,
    },
    #[error(
        "saga {saga}: the store failed during {}: {source}; the action may or may not be stored: \
         repeat it with the same action id {action_id} (applied at most once)",
        .action.as_str()
    )]
    Store {
        saga: SagaId,
        action: OperatorAction,
        action_id: String,
        #[source]
        source: PortError,
    },
    /// The saga cannot be advanced by this build (pinned to an unknown definition) or the
    /// action's effects could not be encoded; nothing was written.
    #[error("saga {saga}: {} cannot be applied: {source}; nothing changed", .action.as_str())]
    Runtime {
        saga: SagaId,
        action: OperatorAction,
        #[source]
        source: RuntimeError,
    },
}

/// The engine's reason, without the "refused: " its display starts with.
fn refusal(error: &EngineError) -> String {
    match error {
        EngineError::Refused(why) => why.clone(),
        other => other.to_string(),
    }
}

/// Send the pending attempt now, or resume a saga that needs an operator with a fresh retry
/// budget. Refused while an attempt is in flight, while a step must settle first, and on a
/// finished saga.
pub async fn retry_now(
    ports: &Backend,
    saga: SagaId,
    who: &OperatorId,
    why: &str,
    action_id: Option<&str>,
) -> Result<OperatorOutcome, OperatorError> {
    act(ports, saga, OperatorAction::RetryNow, who, why, action_id).await
}

/// Stop going forward and undo what was done (ends compensated). Refused on a saga already
/// compensating and on a finished saga.
pub async fn force_compensation(
    ports: &Backend,
    saga: SagaId,
    who: &OperatorId,
    why: &str,
    action_id: Option<&str>,
) -> Result<OperatorOutcome, OperatorError> {
    act(
        ports,
        saga,
        OperatorAction::ForceCompensation,
        who,
        why,
        action_id,
    )
    .await
}

/// Undo what was done and end as cancelled. Refused on a saga already being cancelled and on
/// a finished saga.
pub async fn cancel(
    ports: &Backend,
    saga: SagaId,
    who: &OperatorId,
    why: &str,
    action_id: Option<&str>,
) -> Result<OperatorOutcome, OperatorError> {
    act(ports, saga, OperatorAction::Cancel, who, why, action_id).await
}

/// Declare the saga's outcome after fixing things by hand: it ends with `outcome` at once,
/// nothing more is sent. Refused on a finished saga.
pub async fn resolve_by_hand(
    ports: &Backend,
    saga: SagaId,
    outcome: ResolvedOutcome,
    who: &OperatorId,
    why: &str,
    action_id: Option<&str>,
) -> Result<OperatorOutcome, OperatorError> {
    act(
        ports,
        saga,
        OperatorAction::Resolve { outcome },
        who,
        why,
        action_id,
    )
    .await
}

/// One action on each saga of `ids`, one after the other, never stopping at a failure: every
/// saga gets its own result, in the order given. All of them share one action id (`action_id`,
/// or one generated), so the same bulk repeated changes each saga at most once.
pub async fn bulk(
    ports: &Backend,
    ids: &[SagaId],
    who: &OperatorId,
    why: &str,
    action: OperatorAction,
    action_id: Option<&str>,
) -> Vec<(SagaId, Result<OperatorOutcome, OperatorError>)> {
    let generated;
    let action_id = match action_id {
        Some(id) => id,
        None => {
            generated = new_action_id();
            generated.as_str()
        }
    };
    let mut results = Vec::with_capacity(ids.len());
    for &saga in ids {
        let result = act(ports, saga, action, who, why, Some(action_id)).await;
        results.push((saga, result));
    }
    results
}

/// Any operator action on one saga: what the functions above call. Recorded in the audit list
/// before and after.
pub async fn act(
    ports: &Backend,
    saga: SagaId,
    action: OperatorAction,
    who: &OperatorId,
    why: &str,
    action_id: Option<&str>,
) -> Result<OperatorOutcome, OperatorError> {
    let why = why.trim();
    if why.is_empty() {
        return Err(OperatorError::EmptyReason);
    }
    let action_id = match action_id {
        Some(id) if id.trim().is_empty() => return Err(OperatorError::EmptyActionId),
        Some(id) => id.to_owned(),
        None => new_action_id(),
    };
    let mut audit = Audit::pending(
        ports,
        who,
        action.as_str(),
        format!("saga/{saga}"),
        why,
        &action_id,
    )
    .await?;
    // The action is part of the saga's trace, under its root, however long after the booking.
    let span = tracing::error_span!(
        "operator",
        saga_id = %saga,
        trace_id = %como_ports::trace::trace_id_hex(saga),
        action = action.as_str(),
        action_id = %action_id,
        outcome = tracing::field::Empty,
    );
    como_ports::trace::join_saga(&span, saga);
    let result = tracing::Instrument::instrument(
        apply(ports, saga, action, who, why, action_id),
        span.clone(),
    )
    .await;
    span.record(
        "outcome",
        match &result {
            Ok(done) if done.repeated => "repeated",
            Ok(_) => "applied",
            Err(OperatorError::Refused { .. } | OperatorError::NotFound(_)) => "refused",
            Err(_) => "failed",
        },
    );
    match &result {
        Ok(done) => {
            let outcome = if done.repeated {
                AuditOutcome::Repeated
            } else {
                AuditOutcome::Applied
            };
            audit
                .finish(
                    ports,
                    outcome,
                    format!("status {}", done.status.kind().as_str()),
                )
                .await;
        }
        Err(e @ (OperatorError::Refused { .. } | OperatorError::NotFound(_))) => {
            audit
                .finish(ports, AuditOutcome::Refused, e.to_string())
                .await;
        }
        Err(e) => {
            audit
                .finish(ports, AuditOutcome::Failed, e.to_string())
                .await
        }
    }
    result
}

async fn apply(
    ports: &Backend,
    saga: SagaId,
    action: OperatorAction,
    who: &OperatorId,
    why: &str,
    action_id: String,
) -> Result<OperatorOutcome, OperatorError> {
    let input = Input::Operator {
        command: OperatorCommand {
            action_id: action_id.clone(),
            operator: who.clone(),
            reason: why.to_owned(),
            action,
        },
    };
    let failed = |e: RuntimeError, action_id: &str| match e {
        RuntimeError::Port(source) => OperatorError::Store {
            saga,
            action,
            action_id: action_id.to_owned(),
            source,
        },
        RuntimeError::Contention(_) => OperatorError::Conflict {
            saga,
            action,
            action_id: action_id.to_owned(),
        },
        source => OperatorError::Runtime {
            saga,
            action,
            source,
        },
    };
    let outcome = match advance(ports, saga, &input, None)
        .await
        .map_err(|e| failed(e, &action_id))?
    {
        Advanced::Applied(applied) => OperatorOutcome {
            saga_id: saga,
            action_id,
            action,
            status: applied.state.status.clone(),
            version: applied.version,
            repeated: false,
        },
        // An operator action the engine accepts always changes the saga, so an unchanged one
        // is an action id it applied before: report where the saga stands now.
        Advanced::Unchanged => {
            let stored = ports
                .store
                .get(saga)
                .await
                .map_err(|e| failed(e.into(), &action_id))?
                .ok_or(OperatorError::NotFound(saga))?;
            OperatorOutcome {
                saga_id: saga,
                action_id,
                action,
                status: stored.value.status,
                version: stored.version,
                repeated: true,
            }
        }
        Advanced::NoSaga | Advanced::Refused(EngineError::NoSaga) => {
            return Err(OperatorError::NotFound(saga));
        }
        Advanced::Refused(error) => {
            return Err(OperatorError::Refused {
                saga,
                action,
                error,
            });
        }
    };
    tracing::info!(
        saga_id = %saga,
        reason = why,
        action = action.as_str(),
        action_id = %outcome.action_id,
        status = outcome.status.kind().as_str(),
        repeated = outcome.repeated,
        "operator action applied"
    );
    Ok(outcome)
}

/// Put dead letters back on their queue (all of the queue's, or those named), recorded in the
/// audit list like any other action. Returns how many went back.
pub async fn redrive(
    ports: &Backend,
    queue: QueueName,
    message_ids: Option<Vec<String>>,
    who: &OperatorId,
    why: &str,
) -> Result<usize, OperatorError> {
    let why = why.trim();
    if why.is_empty() {
        return Err(OperatorError::EmptyReason);
    }
    let action_id = new_action_id();
    let target = match &message_ids {
        None => format!("dead-letters/{queue}"),
        Some(ids) => format!("dead-letters/{queue}/{}", ids.join(",")),
    };
    let mut audit = Audit::pending(ports, who, "redrive", target, why, &action_id).await?;
    match ports.queue.redrive(queue, message_ids).await {
        Ok(n) => {
            audit
                .finish(ports, AuditOutcome::Applied, format!("{n} redriven"))
                .await;
            tracing::info!(reason = why, %queue, redriven = n, "dead letters redriven");
            Ok(n)
        }
        Err(e) => {
            audit
                .finish(ports, AuditOutcome::Failed, e.to_string())
                .await;
            Err(OperatorError::Redrive(e))
        }
    }
}

/// What forgetting a member did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    pub member_no: MemberNo,
    #[serde(flatten)]
    pub report: ErasureReport,
    /// Whether the store's older copies of the erased data (the embedded backend's WAL) were
    /// rewritten too; `false` when readers outlasted the wait (they are at the next
    /// checkpoint).
    pub compacted: bool,
}

/// Erase one member's personal data from every saga of theirs at once (a data-protection
/// request): finished sagas now, running ones when they finish. Recorded in the audit list
/// (who, why, how many) and in each saga's history. Repeating it erases what is left.
/// `action_id` names it in the audit list (one is made when none is given), so that a caller
/// that stops waiting can find how it ended.
pub async fn forget_member(
    ports: &Backend,
    member: &MemberNo,
    who: &OperatorId,
    why: &str,
    action_id: Option<String>,
) -> Result<Forgotten, OperatorError> {
    let why = why.trim();
    if why.is_empty() {
        return Err(OperatorError::EmptyReason);
    }
    let action_id = action_id.unwrap_or_else(new_action_id);
    let mut audit = Audit::pending(
        ports,
        who,
        "forget_member",
        format!("member/{member}"),
        why,
        &action_id,
    )
    .await?;
    let result = async {
        let report = crate::privacy::forget_member(ports, member).await?;
        let compacted = ports.store.compact().await?;
        Ok::<_, RuntimeError>(Forgotten {
            member_no: member.clone(),
            report,
            compacted,
        })
    }
    .await;
    match result {
        Ok(done) => {
            let r = &done.report;
            audit
                .finish(
                    ports,
                    AuditOutcome::Applied,
                    format!(
                        "{} sagas: {} erased now, {} when they finish, {} with nothing left to erase; {} dead letters erased",
                        r.sagas(),
                        r.erased,
                        r.when_done,
                        r.already,
                        r.dead_letters
                    ),
                )
                .await;
            tracing::info!(
                reason = why,
                erased = r.erased,
                when_done = r.when_done,
                already = r.already,
                dead_letters = r.dead_letters,
                "member forgotten"
            );
            Ok(done)
        }
        Err(e) => {
            audit
                .finish(ports, AuditOutcome::Failed, e.to_string())
                .await;
            Err(OperatorError::Forget(e))
        }
    }
}

fn new_action_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An action's audit entry, written pending before the action and finished after it.
struct Audit {
    entry: AuditEntry,
}

impl Audit {
    async fn pending(
        ports: &Backend,
        who: &OperatorId,
        action: &str,
        target: String,
        why: &str,
        action_id: &str,
    ) -> Result<Self, OperatorError> {
        let entry = AuditEntry {
            // Each request its own entry: an action id repeated is recorded again (as
            // `repeated`), and a bulk action's id is shared by its sagas.
            id: new_action_id(),
            at: ports.clock.now(),
            actor: who.to_string(),
            action: action.to_owned(),
            target,
            reason: why.to_owned(),
            action_id: action_id.to_owned(),
            outcome: AuditOutcome::Pending,
            detail: None,
            finished_at: None,
        };
        ports
            .audit
            .record(&entry)
            .await
            .map_err(OperatorError::Unrecorded)?;
        Ok(Self { entry })
    }

    /// Records how the action ended. A failure here leaves the pending entry (the saga's
    /// history, or the queue, says what happened); it is logged, not returned, because the
    /// action itself is done.
    async fn finish(&mut self, ports: &Backend, outcome: AuditOutcome, detail: String) {
        self.entry.outcome = outcome;
        self.entry.detail = Some(detail);
        self.entry.finished_at = Some(ports.clock.now());
        if let Err(e) = ports.audit.record(&self.entry).await {
            tracing::error!(
                entry = %self.entry.id,
                outcome = outcome.as_str(),
                error = %e,
                "the outcome of an operator action could not be recorded in the audit list; its entry stays pending"
            );
        }
    }
}
