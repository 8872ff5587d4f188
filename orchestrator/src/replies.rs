//! A worker's reply advances its saga. A reply that cannot be read, or names a saga or an
//! attempt that does not exist, goes to the dead letters with the reason; it never stops the
//! orchestrator.

use como_engine::Input;
use como_ports::{Backend, Delivery, QueueName, trace};
use como_schemas::{InvalidInput, WorkerReply};
use tracing::Instrument;

use crate::advance::{Advanced, Applied, RuntimeError, advance_with};
use crate::cache::RememberingStore;

/// Handle one message from the reply queue. Returns the stored transition, if the reply made one.
pub async fn handle_reply(
    ports: &Backend,
    delivery: &Delivery,
) -> Result<Option<Box<Applied>>, RuntimeError> {
    handle_reply_with(ports, None, delivery).await
}

/// [`handle_reply`] by an orchestrator that remembers the sagas it wrote last.
pub(crate) async fn handle_reply_with(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    delivery: &Delivery,
) -> Result<Option<Box<Applied>>, RuntimeError> {
    let parsed = InvalidInput::parse_json::<WorkerReply>(delivery.body.as_bytes());
    let work = match &parsed {
        Ok(r) => trace::Work {
            saga: Some(r.saga_id),
            step: Some(r.step.as_str()),
            kind: Some(r.kind.as_str()),
            attempt: Some(r.attempt),
            operation: None,
        },
        Err(_) => trace::Work::default(),
    };
    let span = trace::receive_span(QueueName::Replies, delivery, work);
    let result = apply(ports, cache, delivery, parsed)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &result {
            Ok(Some(_)) => "applied",
            Ok(None) => "unchanged",
            Err(_) => "error",
        },
    );
    result
}

async fn apply(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    delivery: &Delivery,
    parsed: Result<WorkerReply, InvalidInput>,
) -> Result<Option<Box<Applied>>, RuntimeError> {
    let reply = match parsed {
        Ok(r) => r,
        Err(invalid) => {
            dead_letter(ports, delivery, &format!("unreadable reply: {invalid}")).await?;
            return Ok(None);
        }
    };
    let saga_id = reply.saga_id;
    let ack = Some((QueueName::Replies, delivery.receipt.clone()));
    match advance_with(ports, cache, saga_id, &Input::Reply { reply }, ack).await? {
        Advanced::Applied(applied) => return Ok(Some(applied)),
        Advanced::Unchanged => {}
        Advanced::NoSaga => {
            let reason = format!("reply for saga {saga_id}, which does not exist");
            dead_letter(ports, delivery, &reason).await?;
        }
        Advanced::Refused(e) => dead_letter(ports, delivery, &e.to_string()).await?,
    }
    Ok(None)
}

async fn dead_letter(
    ports: &Backend,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), RuntimeError> {
    tracing::warn!(reason, "reply dead-lettered");
    ports
        .queue
        .dead_letter(QueueName::Replies, &delivery.receipt, reason)
        .await?;
    Ok(())
}
