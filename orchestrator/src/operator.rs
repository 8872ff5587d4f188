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

use como_engine::{EngineError, Input, OperatorCommand, SagaStatus};
use como_ports::{Backend, PortError};
use como_schemas::{OperatorId, SagaId};

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

/// Any operator action on one saga: what the functions above call.
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
        saga = %saga,
        operator = %who,
        reason = why,
        action = action.as_str(),
        action_id = %outcome.action_id,
        status = outcome.status.kind().as_str(),
        repeated = outcome.repeated,
        "operator action applied"
    );
    Ok(outcome)
}

fn new_action_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
