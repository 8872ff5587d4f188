//! Step 2, hold the slot: find the slot's shift and access rule in the venue's availability,
//! then hold it. Compensation: release the hold; a hold whose id was never learnt cannot be
//! released by id and expires by itself after its hold time.

use chrono::{NaiveDate, Timelike};
use como_schemas::{HoldId, PartySize, ReplyOutcome, SlotTime, StepOutput, VenueId};

use super::{compensated, reply, succeeded, undone};
use crate::clients::sevenrooms::{
    AvailabilityRequest, HoldRequest, ReleaseOutcome, SevenRoomsClient,
};
use crate::clients::{Deadline, codes};

/// How a hold is made: how long it lasts, and which shifts the venue sells for credits.
#[derive(Clone, Copy)]
pub struct HoldTerms<'a> {
    pub seconds: u32,
    pub routing: &'a super::VenueRouting,
}

pub async fn hold(
    client: &SevenRoomsClient,
    venue: &VenueId,
    date: NaiveDate,
    time: SlotTime,
    party: PartySize,
    terms: HoldTerms<'_>,
    deadline: Deadline,
) -> ReplyOutcome {
    let HoldTerms {
        seconds: hold_seconds,
        routing,
    } = terms;
    let wanted = time.time();
    let availability = client
        .availability(
            venue.as_str(),
            &AvailabilityRequest {
                date,
                party_size: u32::from(party.get()),
                start_time: Some(wanted),
                end_time: Some(wanted),
            },
            deadline,
        )
        .await;
    let shifts = match super::success(availability) {
        Ok(shifts) => shifts,
        Err(failure) => return failure,
    };
    let slot = shifts
        .into_iter()
        .filter(|s| !s.is_closed)
        // Only the shifts sold for credits: a time in another shift is not for sale here.
        .filter(|s| routing.sells(s.name.as_deref(), s.shift_persistent_id.as_deref()))
        .find_map(|shift| {
            shift
                .times
                .iter()
                .find(|t| t.is_bookable() && same_minute(&t.time, wanted))
                .map(|t| {
                    (
                        shift.shift_persistent_id.clone(),
                        t.access_persistent_id.clone(),
                    )
                })
        });
    let Some((shift, access)) = slot else {
        return ReplyOutcome::BusinessFailure {
            code: codes::SLOT_UNAVAILABLE.into(),
            message: format!(
                "no bookable slot at {time} on {date} for {party}{}",
                match routing.credit_shifts.is_empty() {
                    true => "",
                    false => " in the shifts sold for credits",
                }
            ),
        };
    };
    let request = HoldRequest {
        date,
        time: wanted,
        party_size: u32::from(party.get()),
        shift_persistent_id: shift,
        access_persistent_id: access,
        hold_wait_time_sec: Some(hold_seconds),
    };
    reply(
        client.hold(venue.as_str(), &request, deadline).await,
        |h| match HoldId::parse(h.reservation_hold_id) {
            Ok(hold_id) => succeeded(StepOutput::SlotHeld {
                hold_id,
                sevenrooms_api: routing.api_url.clone(),
            }),
            Err(e) => super::unreadable("hold id", e),
        },
    )
}

/// `HH:MM` or `HH:MM:SS`, or an ISO time, at the same minute as `wanted`.
fn same_minute(text: &str, wanted: chrono::NaiveTime) -> bool {
    let hm = text.get(..5).unwrap_or(text);
    chrono::NaiveTime::parse_from_str(hm, "%H:%M")
        .map(|t| t.hour() == wanted.hour() && t.minute() == wanted.minute())
        .unwrap_or(false)
}

pub async fn release(
    client: &SevenRoomsClient,
    venue: &VenueId,
    hold: Option<&HoldId>,
    deadline: Deadline,
) -> ReplyOutcome {
    let Some(hold) = hold else {
        return compensated("no hold id was ever learnt; an unknown hold expires by itself");
    };
    reply(
        client
            .release_hold(venue.as_str(), hold.as_str(), deadline)
            .await,
        |r| match r {
            ReleaseOutcome::Released => undone("hold released"),
            ReleaseOutcome::AlreadyGone => compensated("the hold was already gone"),
        },
    )
}
