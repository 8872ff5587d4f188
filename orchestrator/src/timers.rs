//! Timers live in the store as each saga's `wake_at`, so they survive restarts; a sweep feeds
//! `Input::Timer` to every saga whose time has come. A timer that two orchestrators both fire,
//! or that fires early, is harmless: the engine acts only on what is due.

use como_engine::Input;
use como_ports::{Backend, trace};
use futures::StreamExt;
use tracing::Instrument;

use crate::advance::{Advanced, Observer, RuntimeError, advance_with};
use crate::cache::RememberingStore;

/// Fire the timers of up to `limit` due sagas, `concurrency` at a time. Returns how many
/// sagas were due.
pub async fn sweep(
    ports: &Backend,
    limit: usize,
    concurrency: usize,
) -> Result<usize, RuntimeError> {
    sweep_observed(ports, None, limit, concurrency, None).await
}

/// [`sweep`] by an orchestrator that may remember the sagas it wrote last, showing every
/// stored transition to `observer`.
pub(crate) async fn sweep_observed(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    limit: usize,
    concurrency: usize,
    observer: Option<&Observer>,
) -> Result<usize, RuntimeError> {
    let due = ports.store.due(ports.clock.now(), limit).await?;
    let n = due.len();
    futures::stream::iter(due)
        .for_each_concurrent(concurrency, |saga_id| {
            // A timer's work (a retry, a time-out, a reconciliation, a late-effect audit) has
            // no message to take a parent from: it hangs under the saga's root.
            let span = tracing::error_span!(
                "timer",
                saga_id = %saga_id,
                trace_id = %trace::trace_id_hex(saga_id),
                outcome = tracing::field::Empty,
            );
            trace::join_saga(&span, saga_id);
            let work = async move {
                let outcome = match advance_with(ports, cache, saga_id, &Input::Timer, None).await {
                    Ok(Advanced::Applied(applied)) => {
                        if let Some(observe) = observer {
                            observe(&applied);
                        }
                        "applied"
                    }
                    Ok(Advanced::Unchanged | Advanced::NoSaga) => "nothing_due",
                    Ok(Advanced::Refused(e)) => {
                        tracing::warn!(error = %e, "timer refused");
                        "refused"
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "timer failed; it stays due");
                        "error"
                    }
                };
                tracing::Span::current().record("outcome", outcome);
            };
            work.instrument(span)
        })
        .await;
    Ok(n)
}
