//! Intake: a booking request becomes a saga exactly once, or is refused with the field and the
//! reason. The saga id is derived from the request id, so a repeated request finds the saga
//! it created; a refused request leaves a dead letter and a `BookingRejected` event, never a
//! half-created saga.

use como_engine::{Input, como, transition};
use como_ports::{Backend, CreateOutcome, Delivery, OutgoingMessage, QueueName};
use como_schemas::{
    BookingRejected, BookingRequested, InvalidInput, SagaId, SchemaVersion, parse_booking_request,
};

use crate::advance::{Applied, RuntimeError, effects_of};
use crate::catalogue::VenueCatalogue;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    Started(Box<Applied>),
    /// The request was seen before; its saga exists.
    Duplicate(SagaId),
    Rejected(InvalidInput),
}

/// Put a booking request on the request queue (what the HTTP API and `como-saga submit` do).
/// Returns the id of the saga it will run as.
pub async fn submit(ports: &Backend, request: &BookingRequested) -> Result<SagaId, RuntimeError> {
    let body = serde_json::to_string(request)?;
    ports
        .queue
        .send(QueueName::Requests, vec![OutgoingMessage::new(body)])
        .await?;
    Ok(request.saga_id())
}

/// Handle one message from the request queue.
pub async fn handle_request(
    ports: &Backend,
    catalogue: &VenueCatalogue,
    delivery: &Delivery,
) -> Result<IntakeOutcome, RuntimeError> {
    let now = ports.clock.now();
    let today = now.to_datetime().date_naive();
    let parsed = parse_booking_request(delivery.body.as_bytes(), today).and_then(|r| {
        catalogue.check(&r)?;
        Ok(r)
    });
    let request = match parsed {
        Ok(r) => r,
        Err(invalid) => {
            reject(ports, delivery, &invalid).await?;
            return Ok(IntakeOutcome::Rejected(invalid));
        }
    };
    let saga_id = request.saga_id();
    let def = como::current();
    let decision = match transition(&def, None, &Input::Start { request }, now) {
        Ok(d) => d,
        Err(e) => {
            let invalid = InvalidInput::new(".", e.to_string());
            reject(ports, delivery, &invalid).await?;
            return Ok(IntakeOutcome::Rejected(invalid));
        }
    };
    let ack = Some((QueueName::Requests, delivery.receipt.clone()));
    match ports
        .store
        .create(&decision.state, effects_of(&decision, ack)?)
        .await?
    {
        CreateOutcome::Created { version } => Ok(IntakeOutcome::Started(Box::new(Applied {
            sent: decision
                .commands
                .iter()
                .map(|c| c.command_id.clone())
                .collect(),
            state: decision.state,
            version,
            replied: None,
        }))),
        CreateOutcome::Exists => {
            ports
                .queue
                .delete(QueueName::Requests, vec![delivery.receipt.clone()])
                .await?;
            Ok(IntakeOutcome::Duplicate(saga_id))
        }
    }
}

/// Publish `BookingRejected`, then move the request to the dead letters. In this order, a
/// crash in between publishes the rejection again (same event id) rather than losing it.
async fn reject(
    ports: &Backend,
    delivery: &Delivery,
    invalid: &InvalidInput,
) -> Result<(), RuntimeError> {
    let request_id = serde_json::from_str::<serde_json::Value>(&delivery.body)
        .ok()
        .and_then(|v| v.get("request_id")?.as_str().map(str::to_owned));
    tracing::info!(field = %invalid.field, reason = %invalid.reason, "booking request rejected");
    ports
        .bus
        .publish_rejection(BookingRejected {
            schema_version: SchemaVersion::CURRENT,
            event_id: format!("rejected:{}", delivery.message_id),
            request_id,
            at: ports.clock.now(),
            field: invalid.field.clone(),
            reason: invalid.reason.clone(),
        })
        .await?;
    ports
        .queue
        .dead_letter(QueueName::Requests, &delivery.receipt, &invalid.to_string())
        .await?;
    Ok(())
}
