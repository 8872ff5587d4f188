//! Intake: a booking request becomes a saga exactly once, or is refused with the field and the
//! reason. The saga id is derived from the request id, so a repeated request finds the saga
//! it created; a refused request leaves a dead letter and a `BookingRejected` event, never a
//! half-created saga. A request that reuses the id of another request (same id, other booking,
//! see [`same_request`]) is refused the same way, and the saga of the first is left untouched.

use std::time::Duration;

use como_engine::{Input, transition};
use como_ports::{
    Backend, CreateOutcome, Delivery, GuestVault, OutgoingMessage, PortError, QueueName,
    VaultError, trace,
};
use como_schemas::{
    BookingRejected, BookingRequested, GuestContact, InvalidInput, SagaId, SchemaVersion,
    Timestamp, parse_booking_request,
};
use tracing::Instrument;

use crate::advance::{Applied, RuntimeError, effects_of};
use crate::catalogue::VenueCatalogue;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    Started(Box<Applied>),
    /// The request was seen before (the same booking, see [`same_request`]); its saga exists.
    Duplicate(SagaId),
    /// Refused: malformed, priced wrongly, or its id is already used by another booking.
    Rejected(InvalidInput),
}

/// Put a booking request on the request queue (what the HTTP API and `como-saga submit` do).
/// Returns the id of the saga it will run as.
///
/// The guest's contact is sealed first (`Backend::vault`): the queue, and a dead letter the
/// request may become, hold it sealed only.
pub async fn submit(ports: &Backend, request: &BookingRequested) -> Result<SagaId, RuntimeError> {
    let saga = request.saga_id();
    let mut sealed = request.clone();
    sealed.guest = ports.vault.seal(saga, &request.guest)?;
    let body = serde_json::to_string(&sealed)?;
    let span =
        tracing::info_span!("submit", saga_id = %saga, trace_id = %trace::trace_id_hex(saga));
    trace::join_saga(&span, saga);
    async {
        let mut message = OutgoingMessage::new(body);
        trace::inject(&mut message.attributes);
        ports.queue.send(QueueName::Requests, vec![message]).await
    }
    .instrument(span)
    .await?;
    Ok(saga)
}

/// Handle one message from the request queue.
pub async fn handle_request(
    ports: &Backend,
    catalogue: &VenueCatalogue,
    delivery: &Delivery,
) -> Result<IntakeOutcome, RuntimeError> {
    let now = ports.clock.now();
    let today = now.to_datetime().date_naive();
    let parsed = parse_booking_request(delivery.body.as_bytes(), today);
    // The price is checked with the catalogue of now; a repeat of a request that started its
    // saga before a price change is still that saga's (see `intake`).
    let priced = match &parsed {
        Ok(r) => catalogue.check(r),
        Err(_) => Ok(()),
    };
    let span = trace::receive_span(
        QueueName::Requests,
        delivery,
        trace::Work::saga(parsed.as_ref().ok().map(BookingRequested::saga_id)),
    );
    // A request sent as an EventBridge event carries its submitter's context in its body.
    if let Ok(BookingRequested {
        traceparent: Some(traceparent),
        ..
    }) = &parsed
    {
        trace::link(&span, traceparent);
    }
    let outcome = intake(ports, delivery, parsed, priced, now)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &outcome {
            Ok(IntakeOutcome::Started(_)) => "started",
            Ok(IntakeOutcome::Duplicate(_)) => "duplicate",
            Ok(IntakeOutcome::Rejected(_)) => "rejected",
            Err(_) => "error",
        },
    );
    outcome
}

async fn intake(
    ports: &Backend,
    delivery: &Delivery,
    parsed: Result<BookingRequested, InvalidInput>,
    priced: Result<(), InvalidInput>,
    now: Timestamp,
) -> Result<IntakeOutcome, RuntimeError> {
    let request = match parsed {
        Ok(r) => r,
        Err(invalid) => {
            reject(ports, delivery, &invalid, None).await?;
            return Ok(IntakeOutcome::Rejected(invalid));
        }
    };
    // From here on the guest is kept sealed only. A guest that came sealed (by the API or
    // `submit`) must open for this saga: one that does not is refused before anything moves.
    let came_in_the_clear = request.guest.contact().is_some();
    let request = match seal_request(ports, request).await? {
        Ok(r) => r,
        Err((invalid, r)) => {
            reject(ports, delivery, &invalid, Some(&r)).await?;
            return Ok(IntakeOutcome::Rejected(invalid));
        }
    };
    let outcome = admit(ports, delivery, &request, priced, now).await;
    if came_in_the_clear && outcome.is_err() {
        keep_sealed(ports, delivery, &request).await;
    }
    outcome
}

/// When a request whose guest came in the clear (from the event bus) is put back sealed,
/// after it could not be admitted: about when the one received would have been seen again.
pub const SEALED_RETRY_DELAY: Duration = Duration::from_secs(10);

/// A request from the event bus that intake could not admit (the store unreachable, say) is
/// not left on the queue with its guest in the clear, to wait there and, after the queue's
/// last receive, to become a dead letter as it came: a copy with the guest sealed goes back
/// on the queue (with the same trace context, after [`SEALED_RETRY_DELAY`]) and the one
/// received is deleted. The copy is judged like any request, and a queue that gives up on it
/// sets it aside sealed. If the copy cannot be sent, the one received stays, as before; if it
/// is sent and the one received cannot be deleted, both come back and the second is the
/// first's duplicate.
async fn keep_sealed(ports: &Backend, delivery: &Delivery, request: &BookingRequested) {
    let saga = request.saga_id();
    let copy = match serde_json::to_string(request) {
        Ok(body) => OutgoingMessage {
            body,
            delay: SEALED_RETRY_DELAY,
            attributes: delivery.attributes.clone(),
        },
        Err(e) => {
            tracing::warn!(saga_id = %saga, error = %e, "a request could not be written sealed; it stays as it came");
            return;
        }
    };
    if let Err(e) = ports.queue.send(QueueName::Requests, vec![copy]).await {
        tracing::warn!(saga_id = %saga, error = %e, "a request with its guest in the clear could not be put back sealed; it stays as it came");
        return;
    }
    match ports
        .queue
        .delete(QueueName::Requests, vec![delivery.receipt.clone()])
        .await
    {
        Ok(()) => {
            tracing::info!(saga_id = %saga, "a request not admitted yet was put back with its guest sealed")
        }
        Err(e) => {
            tracing::warn!(saga_id = %saga, error = %e, "a request was put back sealed, but the one received could not be deleted; it comes back as a duplicate")
        }
    }
}

/// The rest of intake, for a request whose guest is sealed.
async fn admit(
    ports: &Backend,
    delivery: &Delivery,
    request: &BookingRequested,
    priced: Result<(), InvalidInput>,
    now: Timestamp,
) -> Result<IntakeOutcome, RuntimeError> {
    let saga_id = request.saga_id();
    if let Err(invalid) = priced {
        // Not the venue's price now. A repeat of a request whose saga started before the
        // price changed is that saga's duplicate, not a refusal: its answer must not tell a
        // client that retried that the booking was not made.
        if let Some(existing) = ports.store.get(saga_id).await?
            && same_request(ports.vault.as_ref(), &existing.value.request, request)
                .await?
                .is_ok()
        {
            ports
                .queue
                .delete(QueueName::Requests, vec![delivery.receipt.clone()])
                .await?;
            return Ok(IntakeOutcome::Duplicate(saga_id));
        }
        reject(ports, delivery, &invalid, Some(request)).await?;
        return Ok(IntakeOutcome::Rejected(invalid));
    }
    let def = crate::advance::current_definition();
    let decision = match transition(
        &def,
        None,
        &Input::Start {
            request: request.clone(),
        },
        now,
    ) {
        Ok(d) => d,
        Err(e) => {
            let invalid = InvalidInput::new(".", e.to_string());
            reject(ports, delivery, &invalid, Some(request)).await?;
            return Ok(IntakeOutcome::Rejected(invalid));
        }
    };
    let ack = Some((QueueName::Requests, delivery.receipt.clone()));
    let effects = effects_of(&decision, ack)?;
    let persist = tracing::info_span!("persist", version = 0, commands = decision.commands.len());
    match ports
        .store
        .create(&decision.state, effects)
        .instrument(persist)
        .await?
    {
        CreateOutcome::Created { version } => {
            trace::start_booking(saga_id, decision.state.request.request_id.as_str());
            Ok(IntakeOutcome::Started(Box::new(Applied::stored(
                decision, version, None,
            ))))
        }
        CreateOutcome::Exists => {
            // Nothing was written. Only now is the stored saga read (a repeat is rare), and
            // never written: whatever the verdict, the first saga stays as it is. Every store
            // reads its own writes here (SQLite; DynamoDB with a consistent read), so a saga
            // that `create` found is there to compare with.
            let Some(existing) = ports.store.get(saga_id).await? else {
                // The store said the saga exists and the read finds none: never acknowledge a
                // request whose saga cannot be seen; it comes back and is judged again.
                return Err(RuntimeError::Port(PortError::Unavailable(format!(
                    "the store said saga {saga_id} exists, but it cannot be read; the request is kept"
                ))));
            };
            if let Err(conflict) = same_request(
                ports.vault.as_ref(),
                &existing.value.request,
                &decision.state.request,
            )
            .await?
            {
                reject(ports, delivery, &conflict, Some(&decision.state.request)).await?;
                return Ok(IntakeOutcome::Rejected(conflict));
            }
            ports
                .queue
                .delete(QueueName::Requests, vec![delivery.receipt.clone()])
                .await?;
            Ok(IntakeOutcome::Duplicate(saga_id))
        }
    }
}

/// Whether `repeat`, a request whose id is that of `first` (the request that started the saga),
/// is the same request: `Ok` for a harmless duplicate, or the refusal naming the fields that
/// differ (their names only: the values may be personal data).
///
/// The same request means the same booking: every business field of `BookingRequested` is
/// compared, the request id, the member, the venue, the date, the time, the party size, the
/// quoted credits and the guest (first and last name, phone, e-mail; an e-mail given once and
/// left out once differs). Values are compared as parsed, so two spellings that parse to the
/// same value (JSON key order, white space) are the same request. Left out is `schema_version`,
/// which says how the request was written, not what it asks for: a client that retries after
/// an upgrade sends the same booking. Transport metadata (the queue message's id, when it was
/// sent or received, how often it was delivered) is not part of `BookingRequested` at all, so
/// a client may send the same request any number of times, from new messages, and it stays one
/// booking. The fields are listed without `..`, so that a field added to the request must be
/// placed on one side or the other here.
///
/// The guests are compared in the clear (each is sealed with a nonce of its own, so two seals
/// of one contact never match). A first request whose guest has been erased since is compared
/// without it. `Err` when they cannot be compared now (a key this process has not read yet):
/// the caller tries again later rather than call the repeat another booking.
pub async fn same_request(
    vault: &dyn GuestVault,
    first: &BookingRequested,
    repeat: &BookingRequested,
) -> Result<Result<(), InvalidInput>, VaultError> {
    let BookingRequested {
        schema_version: _,
        request_id,
        member_no,
        venue_id,
        date,
        time,
        party_size,
        quoted_credits,
        guest: _,
        traceparent: _,
        availability_id: _,
    } = repeat;
    let mut differs = vec![
        ("request_id", *request_id != first.request_id),
        ("member_no", *member_no != first.member_no),
        ("venue_id", *venue_id != first.venue_id),
        ("date", *date != first.date),
        ("time", *time != first.time),
        ("party_size", *party_size != first.party_size),
        ("quoted_credits", *quoted_credits != first.quoted_credits),
    ];
    let saga = first.saga_id();
    let first_guest = vault.open(saga, &first.guest).await?;
    let repeat_guest = match vault.open(saga, &repeat.guest).await {
        Ok(g) => g,
        // Sealed for another saga, or altered: not the same guest.
        Err(VaultError::Unauthentic(_)) => None,
        Err(e) => return Err(e),
    };
    match (first_guest, repeat_guest) {
        // Erased since: the booking is told by its other fields.
        (None, _) if !first.guest.is_personal() => {}
        (Some(a), Some(b)) => {
            let GuestContact {
                first_name,
                last_name,
                phone,
                email,
            } = b;
            differs.extend([
                ("guest.first_name", first_name != a.first_name),
                ("guest.last_name", last_name != a.last_name),
                ("guest.phone", phone != a.phone),
                ("guest.email", email != a.email),
            ]);
        }
        _ => differs.push(("guest", true)),
    }
    let fields: Vec<&str> = differs
        .iter()
        .filter(|(_, d)| *d)
        .map(|(name, _)| *name)
        .collect();
    if fields.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(InvalidInput::new(
        "request_id",
        format!(
            "{REQUEST_ID_REUSED}: request id {} is already used by saga {} with other content \
             ({} {}); a new booking needs a new request id",
            repeat.request_id,
            first.saga_id(),
            fields.join(", "),
            if fields.len() == 1 {
                "differs"
            } else {
                "differ"
            },
        ),
    )))
}

/// `request` with its guest sealed for its saga, or the refusal (with the request as it may
/// be kept) when a guest that came sealed does not open for it.
async fn seal_request(
    ports: &Backend,
    mut request: BookingRequested,
) -> Result<Result<BookingRequested, (InvalidInput, BookingRequested)>, RuntimeError> {
    let saga = request.saga_id();
    if request.guest.sealed().is_some()
        && let Err(e) = ports.vault.open(saga, &request.guest).await
    {
        // A key this process has not read yet (a rotation on its way here) or no keys at all:
        // the request stays on its queue and is judged again.
        if matches!(e, VaultError::NoKeys | VaultError::UnknownKey(_)) {
            return Err(e.into());
        }
        let invalid = InvalidInput::new(
            "guest",
            format!(
                "{e}; a sealed guest comes from this deployment's own API, for this request id"
            ),
        );
        return Ok(Err((invalid, request)));
    }
    request.guest = ports.vault.seal(saga, &request.guest)?;
    Ok(Ok(request))
}

/// How the reason of a refusal for a reused request id begins (`BookingRejected` has no code
/// field, so the code leads the reason, where a consumer can match it).
pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";

/// Publish `BookingRejected`, then move the request to the dead letters. In this order, a
/// crash in between publishes the rejection again (same event id) rather than losing it.
///
/// The dead letter keeps no personal data in the clear: a request that was read keeps its
/// guest sealed; one that could not be read loses its `guest` (a refusal of that shape comes
/// back the same if redriven), and a body that is not JSON at all is not kept.
async fn reject(
    ports: &Backend,
    delivery: &Delivery,
    invalid: &InvalidInput,
    read: Option<&BookingRequested>,
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
    let body = kept_body(ports, &delivery.body, read)?;
    ports
        .queue
        .dead_letter_as(
            QueueName::Requests,
            &delivery.receipt,
            &invalid.to_string(),
            body,
        )
        .await?;
    Ok(())
}

/// The body a refused request is dead-lettered with: see [`reject`].
fn kept_body(
    ports: &Backend,
    body: &str,
    read: Option<&BookingRequested>,
) -> Result<String, RuntimeError> {
    if let Some(request) = read {
        let mut kept = request.clone();
        kept.guest = ports.vault.seal(request.saga_id(), &request.guest)?;
        return Ok(serde_json::to_string(&kept)?);
    }
    Ok(match serde_json::from_str::<serde_json::Value>(body) {
        // Only the request's own fields that hold no personal data, and a guest only sealed:
        // a misspelt field may hold anything. The names of the others are kept, so that an
        // operator sees what the sender got wrong.
        Ok(serde_json::Value::Object(doc)) => {
            let mut kept = serde_json::Map::new();
            let mut withheld = Vec::new();
            for (k, v) in doc {
                let keep = match k.as_str() {
                    "guest" => is_sealed_guest(&v),
                    other => NOT_PERSONAL.contains(&other),
                };
                if keep {
                    kept.insert(k, v);
                } else {
                    withheld.push(serde_json::Value::String(k));
                }
            }
            if !withheld.is_empty() {
                kept.insert(
                    WITHHELD_FIELDS.to_owned(),
                    serde_json::Value::Array(withheld),
                );
            }
            serde_json::Value::Object(kept).to_string()
        }
        Ok(_) | Err(_) => withheld(body),
    })
}

/// Where a refused request's dead letter names the fields whose values were not kept.
pub const WITHHELD_FIELDS: &str = "withheld_fields";

/// The fields of `BookingRequested` that hold no personal data.
const NOT_PERSONAL: [&str; 10] = [
    "schema_version",
    "request_id",
    "member_no",
    "venue_id",
    "date",
    "time",
    "party_size",
    "quoted_credits",
    "traceparent",
    "availability_id",
];

/// Whether `v` is a guest in its sealed form (`{"sealed": "v1...."}` and nothing else).
fn is_sealed_guest(v: &serde_json::Value) -> bool {
    v.as_object().is_some_and(|g| {
        g.len() == 1
            && g.get("sealed")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|s| como_schemas::SealedGuest::parse(s).is_ok())
    })
}

fn withheld(body: &str) -> String {
    serde_json::json!({
        "withheld": format!(
            "a body of {} bytes that is not a JSON object: not kept, as it may hold personal data",
            body.len()
        )
    })
    .to_string()
}

/// A message body as a reader who may not see personal data is shown it: every `guest` in it
/// that is not sealed (a dead letter from before sealing, or one a queue set aside by itself)
/// is withheld, and a body that is not JSON is not shown.
pub fn without_personal_data(body: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "guest" && !is_sealed_guest(child) && child.get("erased").is_none() {
                        *child =
                            serde_json::json!({"withheld": "personal data: for the operator role"});
                    } else {
                        walk(child);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => withheld(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_without_the_operator_role_sees_no_guest_in_the_clear() {
        let clear = r#"{"request_id":"r","guest":{"first_name":"Mei","phone":"+6591234567"},"operation":{"guest":{"last_name":"Tan"}},"items":[{"guest":"Mei"}]}"#;
        let shown = without_personal_data(clear);
        for word in ["Mei", "Tan", "6591234567"] {
            assert!(!shown.contains(word), "{shown}");
        }
        assert!(shown.contains(r#""request_id":"r""#), "{shown}");
        let sealed = r#"{"guest":{"sealed":"v1.k1.AAAA"},"x":{"guest":{"erased":{"at":"2026-01-01T00:00:00.000Z","reason":"retention"}}}}"#;
        let shown: serde_json::Value =
            serde_json::from_str(&without_personal_data(sealed)).unwrap();
        assert_eq!(shown["guest"]["sealed"], "v1.k1.AAAA");
        assert_eq!(shown["x"]["guest"]["erased"]["reason"], "retention");
        assert!(without_personal_data("Mei Tan +6591234567").contains("withheld"));
        // A `sealed` that is not a sealed value is withheld too.
        assert!(!without_personal_data(r#"{"guest":{"sealed":"Mei Tan"}}"#).contains("Mei"));
    }
}
