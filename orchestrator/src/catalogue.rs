//! The venues como-saga books and their prices in Como Credits. A request's quoted price is
//! checked against the venue's own price before any credits move: the quote is what the member
//! was shown, never what they are charged on trust.

use std::collections::BTreeMap;

use como_schemas::{BookingRequested, Credits, InvalidInput, PartySize, VenueId};
use serde::{Deserialize, Serialize};

/// The price of one venue's experience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenuePrice {
    pub credits_per_guest: u64,
}

/// Venue id to price.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VenueCatalogue(BTreeMap<String, VenuePrice>);

impl VenueCatalogue {
    pub fn new(venues: impl IntoIterator<Item = (String, VenuePrice)>) -> Self {
        Self(venues.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn venues(&self) -> impl Iterator<Item = (&str, &VenuePrice)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The price for `party` guests at `venue`, if the venue is known.
    pub fn price(&self, venue: &VenueId, party: PartySize) -> Option<u64> {
        self.0
            .get(venue.as_str())
            .map(|p| p.credits_per_guest.saturating_mul(u64::from(party.get())))
    }

    /// Refuse a request for an unknown venue, or whose quote is not the venue's price.
    pub fn check(&self, request: &BookingRequested) -> Result<(), InvalidInput> {
        let Some(price) = self.price(&request.venue_id, request.party_size) else {
            return Err(InvalidInput::new(
                "venue_id",
                format!(
                    "{} is not a venue bookable with Como Credits",
                    request.venue_id
                ),
            ));
        };
        if request.quoted_credits != Credits::new(price).unwrap_or_default() {
            return Err(InvalidInput::new(
                "quoted_credits",
                format!(
                    "the quote of {} credits does not match the venue's price of {price} credits for {} guests",
                    request.quoted_credits, request.party_size
                ),
            ));
        }
        Ok(())
    }
}
