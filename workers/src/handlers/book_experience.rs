//! Step 4, book the experience with the hold and `external_id` = saga id. Reconcile: search for
//! the `external_id`. Compensation: cancel the reservation, found by `external_id` when its id
//! was never learnt; a reservation already cancelled, or never made, is nothing to undo.

use chrono::NaiveDate;
use como_schemas::{GuestContact, Operation, ReplyOutcome, ReservationId, StepOutput, VenueId};

use super::{compensated, reply, succeeded, undone};
use crate::clients::sevenrooms::{BookRequest, CancelOutcome, SevenRoomsClient};
use crate::clients::{Deadline, Outcome};

fn booked(id: String) -> ReplyOutcome {
    match ReservationId::parse(id) {
        Ok(reservation_id) => succeeded(StepOutput::ExperienceBooked { reservation_id }),
        Err(e) => super::unreadable("reservation id", e),
    }
}

/// Book with the guest's contact, opened from the command by the caller.
pub async fn book(
    client: &SevenRoomsClient,
    operation: &Operation,
    guest: &GuestContact,
    deadline: Deadline,
) -> ReplyOutcome {
    let Operation::BookExperience {
        venue_id,
        date,
        time,
        party_size,
        hold_id,
        external_id,
        loyalty_id,
        ..
    } = operation
    else {
        unreachable!("dispatched on BookExperience")
    };
    let request = BookRequest {
        date: *date,
        time: time.time(),
        party_size: u32::from(party_size.get()),
        first_name: guest.first_name.to_string(),
        last_name: guest.last_name.to_string(),
        phone: guest.phone.to_string(),
        email: guest.email.as_ref().map(ToString::to_string),
        reservation_hold_id: hold_id.as_ref().map(ToString::to_string),
        external_id: Some(external_id.clone()),
        loyalty_id: Some(loyalty_id.to_string()),
        notes: Some("Paid with Como Credits".to_owned()),
    };
    reply(
        client.book(venue_id.as_str(), &request, deadline).await,
        |b| booked(b.reservation_id),
    )
}

pub async fn find(
    client: &SevenRoomsClient,
    venue: &VenueId,
    date: NaiveDate,
    external_id: &str,
    deadline: Deadline,
) -> ReplyOutcome {
    reply(
        client
            .find_by_external_id(venue.as_str(), date, external_id, deadline)
            .await,
        |found| match found {
            Some(r) if !r.is_cancelled() => booked(r.id),
            Some(_) => ReplyOutcome::NotApplied {
                reason: "the reservation with this external_id is cancelled".into(),
            },
            None => ReplyOutcome::NotApplied {
                reason: "no reservation with this external_id".into(),
            },
        },
    )
}

pub async fn cancel(
    client: &SevenRoomsClient,
    venue: &VenueId,
    reservation: Option<&ReservationId>,
    external_id: &str,
    date: NaiveDate,
    deadline: Deadline,
) -> ReplyOutcome {
    let outcome: Outcome<CancelOutcome> = match reservation {
        Some(id) => client.cancel(id.as_str(), deadline).await,
        None => {
            client
                .cancel_by_external_id(venue.as_str(), date, external_id, deadline)
                .await
        }
    };
    reply(outcome, |c| match c {
        CancelOutcome::Cancelled => undone("reservation cancelled"),
        CancelOutcome::AlreadyCancelled => compensated("the reservation was already cancelled"),
        CancelOutcome::NotFound => compensated("no reservation to cancel"),
    })
}
