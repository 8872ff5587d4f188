//! The venues como-saga books: each one's price in Como Credits and its SevenRooms settings
//! (venue group, the API's base URL when it is not the deployment's, the shifts sold for
//! credits). A request's quoted price is checked against the venue's own price before any
//! credits move: the quote is what the member was shown, never what they are charged on trust.
//!
//! The catalogue is kept in the store, as one record under [`VENUES_KEY`] (a row of the
//! embedded database, an item of the DynamoDB table), changed only by compare-and-set
//! ([`update`]), so that `como-saga venues set` reaches every process without a restart: the
//! orchestrator, the API and the SevenRooms worker each hold a [`LiveCatalogue`] that reads the
//! record again every few seconds. The settings' venues (`COMO_SAGA_VENUES`, the settings
//! file's `[venues]`) seed the record when the store has none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use como_ports::IdempotencyRecords;
use como_schemas::{BookingRequested, Credits, InvalidInput, PartySize, VenueId};
use serde::{Deserialize, Serialize};

/// The store's key of the venue catalogue.
pub const VENUES_KEY: &str = "config/venues";

/// How often a [`LiveCatalogue`] reads the record again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The price of one venue's experience (the settings' short form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenuePrice {
    pub credits_per_guest: u64,
}

/// One venue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VenueSettings {
    /// The price per guest, in Como Credits: what every booking of this venue costs, whatever
    /// a client quotes.
    pub credits_per_guest: u64,
    /// The SevenRooms venue group the venue belongs to (its details are read by group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_group_id: Option<String>,
    /// The SevenRooms API's base URL for this venue, when it is not the deployment's
    /// (`COMO_SAGA_SEVENROOMS_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The shifts sold for credits, by name or persistent id; empty: every shift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credit_shifts: Vec<String>,
}

impl From<VenuePrice> for VenueSettings {
    fn from(p: VenuePrice) -> Self {
        VenueSettings::priced(p.credits_per_guest)
    }
}

impl VenueSettings {
    /// A venue at this price, with the deployment's SevenRooms and every shift.
    pub fn priced(credits_per_guest: u64) -> Self {
        VenueSettings {
            credits_per_guest,
            venue_group_id: None,
            api_url: None,
            credit_shifts: Vec::new(),
        }
    }

    /// Whether a shift (its name or persistent id) is sold for credits.
    pub fn sells(&self, name: Option<&str>, persistent_id: Option<&str>) -> bool {
        como_schemas::sold_for_credits(&self.credit_shifts, name, persistent_id)
    }

    /// Refuses settings no booking could use, naming the field.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.credits_per_guest == 0 {
            return Err(InvalidInput::new(
                "credits_per_guest",
                "a venue's price must be at least 1 credit per guest",
            ));
        }
        if let Some(url) = &self.api_url
            && !is_api_url(url)
        {
            return Err(InvalidInput::new(
                "api_url",
                format!(
                    "{url:?} is not an https URL (the deployment's SevenRooms credentials go there; plain http only to this machine's loopback)"
                ),
            ));
        }
        if Credits::new(
            self.credits_per_guest
                .saturating_mul(u64::from(PartySize::MAX)),
        )
        .is_err()
        {
            return Err(InvalidInput::new(
                "credits_per_guest",
                format!(
                    "{} credits a guest is more than a booking of {} guests can be charged",
                    self.credits_per_guest,
                    PartySize::MAX
                ),
            ));
        }
        if self.credit_shifts.iter().any(|s| s.trim().is_empty()) {
            return Err(InvalidInput::new(
                "credit_shifts",
                "a shift's name is empty",
            ));
        }
        Ok(())
    }
}

/// Whether `url` may be a venue's SevenRooms API: https with a host, or http to the loopback
/// (a local simulator).
fn is_api_url(url: &str) -> bool {
    let rest = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => rest,
        (None, Some(rest))
            if ["127.0.0.1", "localhost", "[::1]"]
                .iter()
                .any(|h| rest.starts_with(h) && rest[h.len()..].starts_with([':', '/'])) =>
        {
            rest
        }
        _ => return false,
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Venue id to settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VenueCatalogue(BTreeMap<String, VenueSettings>);

impl VenueCatalogue {
    pub fn new<S: Into<VenueSettings>>(venues: impl IntoIterator<Item = (String, S)>) -> Self {
        Self(venues.into_iter().map(|(k, v)| (k, v.into())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn venues(&self) -> impl Iterator<Item = (&str, &VenueSettings)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, venue: &str) -> Option<&VenueSettings> {
        self.0.get(venue)
    }

    /// Adds or replaces one venue.
    pub fn set(&mut self, venue: String, settings: VenueSettings) {
        self.0.insert(venue, settings);
    }

    /// Removes one venue; whether it was there.
    pub fn remove(&mut self, venue: &str) -> bool {
        self.0.remove(venue).is_some()
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

/// The record as stored: the catalogue and a version that every change increments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCatalogue {
    pub version: u64,
    pub venues: VenueCatalogue,
}

/// Why the stored catalogue could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("the store: {0}")]
    Store(#[from] como_ports::PortError),
    #[error("the stored venue catalogue ({VENUES_KEY}) is not readable: {0}")]
    Unreadable(serde_json::Error),
    #[error("the venue catalogue kept changing under this update; try again")]
    Contended,
}

/// The stored catalogue and its record's text (for a compare-and-set), if there is one.
async fn read(
    records: &dyn IdempotencyRecords,
) -> Result<Option<(StoredCatalogue, String)>, CatalogueError> {
    let Some(text) = records.get(VENUES_KEY).await? else {
        return Ok(None);
    };
    let stored = serde_json::from_str(&text).map_err(CatalogueError::Unreadable)?;
    Ok(Some((stored, text)))
}

/// The stored catalogue, if the store has one.
pub async fn load(
    records: &dyn IdempotencyRecords,
) -> Result<Option<StoredCatalogue>, CatalogueError> {
    Ok(read(records).await?.map(|(s, _)| s))
}

/// Changes the stored catalogue with `change` (given the current one, empty when the store
/// has none), by compare-and-set, trying again when another writer came first. Returns the
/// catalogue as stored, or `change`'s refusal.
pub async fn update<E>(
    records: &dyn IdempotencyRecords,
    mut change: impl FnMut(&mut VenueCatalogue) -> Result<(), E>,
) -> Result<Result<StoredCatalogue, E>, CatalogueError> {
    for _ in 0..16 {
        let current = read(records).await?;
        let (mut next, expected) = match current {
            Some((stored, text)) => (stored, Some(text)),
            None => (StoredCatalogue::default(), None),
        };
        if let Err(e) = change(&mut next.venues) {
            return Ok(Err(e));
        }
        next.version += 1;
        let text = serde_json::to_string(&next).map_err(CatalogueError::Unreadable)?;
        if records.swap(VENUES_KEY, expected.as_deref(), &text).await? {
            return Ok(Ok(next));
        }
    }
    Err(CatalogueError::Contended)
}

/// Writes `seed` as the stored catalogue when the store has none; returns the stored one.
pub async fn seed(
    records: &dyn IdempotencyRecords,
    seed: &VenueCatalogue,
) -> Result<StoredCatalogue, CatalogueError> {
    if let Some(stored) = load(records).await? {
        return Ok(stored);
    }
    let first = StoredCatalogue {
        version: 1,
        venues: seed.clone(),
    };
    let text = serde_json::to_string(&first).map_err(CatalogueError::Unreadable)?;
    if records.swap(VENUES_KEY, None, &text).await? {
        return Ok(first);
    }
    // Another process seeded it first.
    load(records).await?.ok_or(CatalogueError::Contended)
}

/// The catalogue a process uses now, read again from the store every [`REFRESH_EVERY`] by
/// [`LiveCatalogue::follow`]. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct LiveCatalogue {
    current: Arc<arc_swap::ArcSwap<StoredCatalogue>>,
    /// Whether the store's record has been read once (or found missing, or unreadable and
    /// given up on): see [`LiveCatalogue::opened`].
    opened: tokio::sync::watch::Sender<bool>,
}

impl From<VenueCatalogue> for LiveCatalogue {
    /// A catalogue that changes only by [`LiveCatalogue::replace`] (tests, `bench`).
    fn from(venues: VenueCatalogue) -> Self {
        LiveCatalogue::new(StoredCatalogue { version: 0, venues })
    }
}

impl LiveCatalogue {
    /// A catalogue that is open already (read from the store, or never stored).
    pub fn new(stored: StoredCatalogue) -> Self {
        LiveCatalogue {
            current: Arc::new(arc_swap::ArcSwap::from_pointee(stored)),
            opened: tokio::sync::watch::Sender::new(true),
        }
    }

    /// A catalogue of the settings' venues until [`LiveCatalogue::open_and_follow`] has read
    /// the store's.
    pub fn pending(configured: VenueCatalogue) -> Self {
        LiveCatalogue {
            current: Arc::new(arc_swap::ArcSwap::from_pointee(StoredCatalogue {
                version: 0,
                venues: configured,
            })),
            opened: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Waits until the store's catalogue has been read once: what the orchestrator does
    /// before it prices its first request.
    pub async fn opened(&self) {
        let mut rx = self.opened.subscribe();
        let _ = rx.wait_for(|o| *o).await;
    }

    /// Takes the store's catalogue, then follows it (see [`open`] and
    /// [`LiveCatalogue::follow`]). With `seed` (the orchestrator's process), the settings'
    /// venues become the store's when it has none; other processes only read, and until the
    /// store has a catalogue they go on with the settings' venues without writing them. While
    /// the store cannot be read, it tries again every second (saying so every 30 s): nothing
    /// is priced or routed on a guess meanwhile ([`LiveCatalogue::opened`]).
    pub async fn open_and_follow(
        self,
        records: Arc<dyn IdempotencyRecords>,
        seed: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let configured = self.current().venues.clone();
        let mut attempts: u64 = 0;
        loop {
            match open(records.as_ref(), &configured, seed).await {
                Ok(live) => {
                    self.replace(live.current().as_ref().clone());
                    break;
                }
                Err(e) => {
                    // Once at once, then every 30 tries (a second apart).
                    if attempts.is_multiple_of(30) {
                        tracing::warn!(error = %e, waited_s = attempts, "cannot read the venue catalogue yet; nothing is priced or booked until it can be read");
                    }
                    attempts += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        self.opened.send_replace(true);
        self.follow(records, REFRESH_EVERY, shutdown).await;
    }

    /// The catalogue now.
    pub fn current(&self) -> Arc<StoredCatalogue> {
        self.current.load_full()
    }

    pub fn replace(&self, stored: StoredCatalogue) {
        self.current.store(Arc::new(stored));
    }

    /// Reads the store's record again; keeps the current catalogue when it cannot.
    pub async fn refresh(&self, records: &dyn IdempotencyRecords) -> Result<(), CatalogueError> {
        if let Some(stored) = load(records).await?
            && stored.version != self.current.load().version
        {
            tracing::info!(
                version = stored.version,
                venues = stored.venues.len(),
                "the venue catalogue changed"
            );
            self.replace(stored);
        }
        Ok(())
    }

    /// Reads the store's record every `every` until `shutdown`.
    pub async fn follow(
        self,
        records: Arc<dyn IdempotencyRecords>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut said = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.refresh(records.as_ref()).await {
                Ok(()) => said = false,
                Err(e) if !said => {
                    tracing::warn!(error = %e, "cannot read the venue catalogue; keeping the last one read");
                    said = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// A catalogue read from the store; when the store has none, `configured`, written to the
/// store first with `seed_it`. With a warning when the settings name venues that differ from
/// the store's (the store wins: `como-saga venues set` changes it).
pub async fn open(
    records: &dyn IdempotencyRecords,
    configured: &VenueCatalogue,
    seed_it: bool,
) -> Result<LiveCatalogue, CatalogueError> {
    let stored = match load(records).await? {
        Some(stored) => stored,
        None if seed_it && !configured.is_empty() => seed(records, configured).await?,
        None => StoredCatalogue {
            version: 0,
            venues: configured.clone(),
        },
    };
    if !configured.is_empty() && stored.venues != *configured {
        tracing::warn!(
            stored = stored.venues.len(),
            configured = configured.len(),
            "the store's venue catalogue differs from the settings' venues; the store's is used (`como-saga venues list` shows it, `venues set` changes it)"
        );
    }
    Ok(LiveCatalogue::new(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_venues_settings_are_refused_by_the_field_at_fault() {
        let with_url = |url: &str| VenueSettings {
            api_url: Some(url.to_owned()),
            ..VenueSettings::priced(600)
        };
        for fine in [
            "https://api.sevenrooms.com/2_4",
            "https://eu.sevenrooms.example",
            "http://127.0.0.1:4411",
            "http://localhost:8080/sr",
        ] {
            assert_eq!(with_url(fine).validate(), Ok(()), "{fine}");
        }
        for bad in [
            "http://api.sevenrooms.com",
            "http://127.0.0.1.evil.example",
            "ftp://x",
            "https://",
            "https://a b",
            "sevenrooms.com",
        ] {
            assert_eq!(
                with_url(bad).validate().unwrap_err().field,
                "api_url",
                "{bad}"
            );
        }
        assert_eq!(
            VenueSettings::priced(0).validate().unwrap_err().field,
            "credits_per_guest"
        );
        assert_eq!(
            VenueSettings::priced(u64::MAX / 2)
                .validate()
                .unwrap_err()
                .field,
            "credits_per_guest"
        );
        let shifts = VenueSettings {
            credit_shifts: vec![" ".into()],
            ..VenueSettings::priced(600)
        };
        assert_eq!(shifts.validate().unwrap_err().field, "credit_shifts");
    }
}
