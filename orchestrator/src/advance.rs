//! Every change to a saga: load it, run the engine, write it back only if nobody else did in
//! the meantime (the store's version check), and on a conflict re-read and re-apply. Two
//! orchestrators can never both advance one saga; the loser simply sees the winner's state.

use como_engine::{Decision, EngineError, Input, SagaDefinition, SagaState, como, transition};
use como_ports::{Backend, Effects, OutgoingMessage, PortError, QueueName, Receipt, UpdateOutcome};
use como_schemas::events::SagaEventBody;
use como_schemas::{CommandId, SagaId};

use crate::cache::RememberingStore;
use tracing::Instrument;

/// How an input ended.
#[derive(Debug)]
pub enum Advanced {
    /// The saga changed and the change is stored.
    Applied(Box<Applied>),
    /// The input taught nothing (a duplicate, a stale reply, a timer with nothing due); its
    /// message, if any, was acknowledged.
    Unchanged,
    /// No saga has this id.
    NoSaga,
    /// The engine refused the input (malformed for this saga, or an operator action that is
    /// not possible now); nothing changed and nothing was acknowledged.
    Refused(EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("saga {saga} is pinned to {name} v{version}, which this build does not know")]
    UnknownDefinition {
        saga: SagaId,
        name: String,
        version: u32,
    },
    #[error("saga {0} kept changing under us; giving up for now (the input will be redelivered)")]
    Contention(SagaId),
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The guest's contact cannot be sealed or opened here (no data keys, or not these).
    #[error("the guest's contact: {0}")]
    Vault(#[from] como_ports::VaultError),
}

/// A stored transition, as observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub state: SagaState,
    pub version: u64,
    /// The commands the transition sent.
    pub sent: Vec<CommandId>,
    /// The command whose reply it applied, when the input was a reply.
    pub replied: Option<CommandId>,
    /// Effects that landed after the saga ended and that this transition's audit found undone.
    pub late_effects_undone: u32,
}

impl Applied {
    /// The transition `decision` as stored at `version`; `replied` is the command whose reply
    /// it applied.
    pub(crate) fn stored(decision: Decision, version: u64, replied: Option<CommandId>) -> Self {
        let late_effects_undone = decision
            .history
            .iter()
            .filter(|h| h.kind == como_engine::HistoryKind::LateEffectUndone)
            .count() as u32;
        Applied {
            sent: decision
                .commands
                .iter()
                .map(|c| c.command_id.clone())
                .collect(),
            state: decision.state,
            version,
            replied,
            late_effects_undone,
        }
    }
}

/// Something in the same process that wants to see every stored transition (the benchmark,
/// tests). Called after the write committed; must be quick.
pub type Observer = std::sync::Arc<dyn Fn(&Applied) + Send + Sync>;

/// How many times to re-read and re-apply after losing a conditional write.
const MAX_CONFLICTS: usize = 16;

/// The definition a saga is pinned to.
pub fn definition_of(state: &SagaState) -> Result<SagaDefinition, RuntimeError> {
    let mut def = como::lookup(&state.definition, state.definition_version).ok_or_else(|| {
        RuntimeError::UnknownDefinition {
            saga: state.saga_id,
            name: state.definition.clone(),
            version: state.definition_version,
        }
    })?;
    with_overrides(&mut def);
    Ok(def)
}

/// The definition new sagas start with, with the deployment's overrides.
pub fn current_definition() -> SagaDefinition {
    let mut def = como::current();
    with_overrides(&mut def);
    def
}

fn with_overrides(def: &mut SagaDefinition) {
    if let Some(audit_after_ms) = AUDIT_AFTER_MS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        def.audit_after_ms = audit_after_ms;
    }
    if let Some(deadline_ms) = *DEADLINE_MS.read().unwrap_or_else(|p| p.into_inner()) {
        def.deadline_ms = deadline_ms;
    }
}

/// The deployment's forward deadline, when it overrides the definitions' own.
static DEADLINE_MS: std::sync::RwLock<Option<u64>> = std::sync::RwLock::new(None);

/// Sets how long a saga may take to move forward (waiting for a downstream that is down
/// included) before it compensates, for every definition, for sagas started from now on in
/// this process (a saga's deadline is fixed when it starts). A deployment setting
/// (`deadline`); the Como booking's own is 15 minutes.
pub fn set_deadline(deadline: std::time::Duration) -> Result<(), String> {
    let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    if ms < 1_000 {
        return Err("the deadline must be at least one second".into());
    }
    *DEADLINE_MS.write().unwrap_or_else(|p| p.into_inner()) = Some(ms);
    Ok(())
}

/// The deployment's late-effect audit schedule, when it overrides the definitions' own.
static AUDIT_AFTER_MS: std::sync::RwLock<Option<Vec<u64>>> = std::sync::RwLock::new(None);

/// Sets when compensated and cancelled sagas are audited for late effects (offsets from the
/// saga's end, strictly increasing; empty for no audit), for every definition, from now on in
/// this process. A deployment setting (`audit_after`), not part of a definition's meaning: a
/// saga already ended is audited on the schedule in force when its timer comes.
pub fn set_audit_after(after: &[std::time::Duration]) -> Result<(), String> {
    let ms: Vec<u64> = after
        .iter()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .collect();
    if ms.first() == Some(&0) || ms.windows(2).any(|w| w[0] >= w[1]) {
        return Err("audit times must be positive and strictly increasing".into());
    }
    *AUDIT_AFTER_MS.write().unwrap_or_else(|p| p.into_inner()) = Some(ms);
    Ok(())
}

/// Apply `input` to saga `saga_id` and store the result; `ack` is the message this input came
/// in, deleted in the same write (or right away if nothing changed).
pub async fn advance(
    ports: &Backend,
    saga_id: SagaId,
    input: &Input,
    ack: Option<(QueueName, Receipt)>,
) -> Result<Advanced, RuntimeError> {
    advance_with(ports, None, saga_id, input, ack).await
}

/// [`advance`] by an orchestrator whose `ports.store` is `cache`, its memory of the sagas it
/// wrote last: an input judged against a remembered state is judged again against the store.
pub async fn advance_with(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    saga_id: SagaId,
    input: &Input,
    ack: Option<(QueueName, Receipt)>,
) -> Result<Advanced, RuntimeError> {
    // Whether the state read is the store's own. Through the cache it may be a remembered
    // one, which may be stale; whether it was cannot be told afterwards (another task of this
    // process may have dropped the entry since), so an input that the state read refuses or
    // learns nothing from is judged again against a read of the store itself before it is
    // dead-lettered or acknowledged.
    let mut fresh = cache.is_none();
    for _ in 0..MAX_CONFLICTS {
        let stored = match cache {
            Some(c) if fresh => c.read_store(saga_id).await?,
            _ => ports.store.get(saga_id).await?,
        };
        let Some(stored) = stored else {
            return Ok(Advanced::NoSaga);
        };
        let def = definition_of(&stored.value)?;
        let decision = {
            // `to` and, for a compensated or cancelled saga under its late-effect audit, the
            // audit's round: what a trace shows of the engine's step. A `debug` span: the
            // transition is microseconds of pure computation, and its outcome is on `persist`
            // too; traces carry it with `COMO_SAGA_TRACE=debug`.
            let span = tracing::debug_span!(
                "transition",
                from = stored.value.status.kind().as_str(),
                to = tracing::field::Empty,
                audit_round = tracing::field::Empty,
                version = stored.version,
            );
            let _entered = span.enter();
            let decision = transition(&def, Some(&stored.value), input, ports.clock.now());
            if let Ok(d) = &decision
                && !span.is_disabled()
            {
                span.record("to", d.state.status.kind().as_str());
                if let Some(audit) = &d.state.audit {
                    span.record("audit_round", audit.rounds + 1);
                }
            }
            decision
        };
        let decision = match decision {
            Ok(d) => d,
            Err(_) if !fresh => {
                fresh = true;
                continue;
            }
            Err(e) => return Ok(Advanced::Refused(e)),
        };
        if !decision.changed && !fresh {
            fresh = true;
            continue;
        }
        if !decision.changed {
            if let Some((queue, receipt)) = ack {
                // Perhaps delivered again because the process that wrote the saga died
                // before carrying the write out; a saga with a timer gets that done by its
                // next write anyway.
                if stored.value.wake_at.is_none() {
                    ports.store.flush(saga_id).await?;
                }
                ports.queue.delete(queue, vec![receipt]).await?;
            }
            return Ok(Advanced::Unchanged);
        }
        let mut effects = effects_of(&decision, ack.clone())?;
        if let Input::Reply { reply } = input {
            effects.answers = Some(reply.command_id.as_str().to_owned());
        }
        let persist = tracing::info_span!(
            "persist",
            version = stored.version,
            to = decision.state.status.kind().as_str(),
            commands = decision.commands.len(),
            events = decision.events.len(),
            outcome = tracing::field::Empty,
        );
        let written = ports
            .store
            .update(&decision.state, stored.version, effects)
            .instrument(persist.clone())
            .await;
        persist.record(
            "outcome",
            match &written {
                Ok(UpdateOutcome::Updated { .. }) => "updated",
                Ok(UpdateOutcome::Conflict) => "conflict",
                Err(_) => "error",
            },
        );
        match written? {
            UpdateOutcome::Updated { version } => {
                say_outcome(&decision);
                let replied = match input {
                    Input::Reply { reply } => Some(reply.command_id.clone()),
                    _ => None,
                };
                return Ok(Advanced::Applied(Box::new(Applied::stored(
                    decision, version, replied,
                ))));
            }
            UpdateOutcome::Conflict => continue,
        }
    }
    Err(RuntimeError::Contention(saga_id))
}

/// The one line at the default log level (target `saga`) for an outcome an operator must hear
/// of: the saga compensates, needs an operator, or had a late effect undone; with the reason.
/// Inside the work's span, so with the saga id and trace id. Reasons are the engine's and the
/// workers' words about the call, never the request's personal fields.
fn say_outcome(decision: &Decision) {
    // A downstream's words may quote the request back: the SevenRooms worker, the one that
    // holds the guest's contact, masks it before replying (`como_privacy::mask_guest`).
    let scrub = |text: &str| text.to_owned();
    for event in &decision.events {
        match &event.body {
            SagaEventBody::BookingFailed { step, code, reason } => tracing::info!(
                target: "saga",
                step = step.as_str(),
                code = code.as_str(),
                reason = scrub(reason),
                "saga compensating"
            ),
            SagaEventBody::SagaNeedsOperator {
                reason,
                step,
                detail,
            } => tracing::warn!(
                target: "saga",
                step = step.as_str(),
                reason = ?reason,
                detail = scrub(detail),
                "saga needs an operator"
            ),
            _ => {}
        }
    }
    for h in &decision.history {
        if h.kind == como_engine::HistoryKind::LateEffectUndone {
            let detail = scrub(h.detail.as_deref().unwrap_or(""));
            tracing::warn!(
                target: "saga",
                step = h.step.as_ref().map(|s| s.as_str()),
                detail,
                "late effect undone"
            );
        }
    }
}

/// What the store must carry out with a decision: its commands go to their worker's queue,
/// and an event a person must hear of (`SagaNeedsOperator`) to the notifications queue, with
/// the write, so that the notifier delivers it at least once.
pub fn effects_of(
    decision: &Decision,
    ack: Option<(QueueName, Receipt)>,
) -> Result<Effects, serde_json::Error> {
    // Each message carries the context of the work that sent it, so that the worker's span
    // is a child of it.
    let traced = |body: String| {
        let mut m = OutgoingMessage::new(body);
        como_ports::trace::inject(&mut m.attributes);
        m
    };
    let commands = decision.commands.iter().map(|cmd| {
        Ok((
            QueueName::Commands(cmd.worker),
            traced(serde_json::to_string(cmd)?),
        ))
    });
    let notifications = decision
        .events
        .iter()
        .filter(|e| matches!(e.body, SagaEventBody::SagaNeedsOperator { .. }))
        .map(|e| Ok((QueueName::Notifications, traced(serde_json::to_string(e)?))));
    let sends = commands
        .chain(notifications)
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok(Effects {
        sends,
        events: {
            // Events leave through the bus with the context of the work that made them.
            let traceparent = como_ports::trace::current_traceparent();
            let mut events = decision.events.clone();
            if traceparent.is_some() {
                for e in &mut events {
                    e.traceparent.clone_from(&traceparent);
                }
            }
            events
        },
        history: decision.history.clone(),
        ack,
        answers: None,
    })
}
