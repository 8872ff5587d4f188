//! The `BookingRequested` event: a member asks to pay for an experience with Como Credits.
//!
//! Parsed once, at the edge, by [`parse_booking_request`]; whatever gets past it is a request
//! the saga can run with. The quoted price is what the member was shown: the orchestrator
//! checks it against the venue's own configured price before any credits move, and never
//! charges it on trust.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::personal::Guest;
use crate::values::{
    Credits, Email, MemberNo, PartySize, PersonName, Phone, RequestId, SagaId, SchemaVersion,
    SlotTime, VenueId,
};

/// A request to pay for an experience with Como Credits and book it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "BookingRequested")]
pub struct BookingRequested {
    pub schema_version: SchemaVersion,
    /// The caller's id for this request; submitting it again is the same request.
    pub request_id: RequestId,
    /// The member who pays.
    pub member_no: MemberNo,
    /// The venue of the experience.
    pub venue_id: VenueId,
    /// The day of the experience, `YYYY-MM-DD`; today or later.
    pub date: NaiveDate,
    /// The slot's start time, `HH:MM`, venue local time.
    pub time: SlotTime,
    pub party_size: PartySize,
    /// The price in credits the member was quoted; checked against the venue's price.
    pub quoted_credits: Credits,
    /// Who the reservation is for: the contact in the clear, or sealed by como-saga's own API.
    pub guest: Guest,
    /// The submitter's W3C trace context, for a request sent as an EventBridge event (which
    /// has no message attributes to carry it): the booking's trace links to it. Transport
    /// metadata, not part of the booking: a repeat with another value is the same request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"),
        length(max = 256)
    )]
    pub traceparent: Option<String>,
    /// The availability view the member booked from (`availability_id` of `GET
    /// /v1/experiences/{venue}/availability`), kept with the saga for whoever looks into it
    /// later. It changes nothing: the price is the venue's configured one, and the hold step
    /// reads SevenRooms' availability again. Not part of the booking when a repeat is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub availability_id: Option<String>,
}

/// The guest named on the reservation. Personal data: never logged, never put in a span.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestContact {
    pub first_name: PersonName,
    pub last_name: PersonName,
    /// E.164, as SevenRooms requires.
    pub phone: Phone,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
}

impl std::fmt::Debug for GuestContact {
    // Personal data stays out of logs, even through `{:?}` of a whole request.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestContact { .. }")
    }
}

impl BookingRequested {
    /// The saga this request runs as.
    pub fn saga_id(&self) -> SagaId {
        SagaId::for_request(&self.request_id)
    }

    /// Checks that need more than one field or the current date. `today` is the caller's
    /// today (an input, so that the check is testable and the engine stays clock-free).
    pub fn validate(&self, today: NaiveDate) -> Result<(), InvalidInput> {
        if self.date < today {
            return Err(InvalidInput::new(
                "date",
                format!("{} is in the past (today is {today})", self.date),
            ));
        }
        if !self.guest.is_personal() {
            return Err(InvalidInput::new(
                "guest",
                "is erased: a booking request names its guest",
            ));
        }
        if self.quoted_credits.get() == 0 {
            return Err(InvalidInput::new(
                "quoted_credits",
                "must be greater than 0: an experience paid with credits has a price",
            ));
        }
        if let Some(id) = &self.availability_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
        {
            return Err(InvalidInput::new(
                "availability_id",
                "1 to 128 printable characters, as GET /v1/experiences/{venue}/availability gave it",
            ));
        }
        if let Some(tp) = &self.traceparent
            && !is_traceparent(tp)
        {
            return Err(InvalidInput::new(
                "traceparent",
                "must be a W3C traceparent: 2 hex digits of version, 32 of trace id, 16 of parent id \
                 and 2 of flags, joined by '-' (for example \
                 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01)",
            ));
        }
        Ok(())
    }
}

/// Whether `s` has the shape of a W3C `traceparent` (version 00's four fields; a later
/// version may append fields after a '-').
fn is_traceparent(s: &str) -> bool {
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let parts: Vec<&str> = s.splitn(5, '-').collect();
    s.len() <= 256
        && parts.len() >= 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// Parse and validate a `BookingRequested` event from JSON. The error names the field and the
/// reason: `invalid field `party_size`: must be between 1 and 50, got 0`.
pub fn parse_booking_request(
    json: &[u8],
    today: NaiveDate,
) -> Result<BookingRequested, InvalidInput> {
    let request: BookingRequested = InvalidInput::parse_json(json)?;
    request.validate(today)?;
    Ok(request)
}
