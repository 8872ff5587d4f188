//! Viewing an experience before paying: the venues bookable with credits (their SevenRooms
//! details) and a venue's availability, read from SevenRooms through a cache, with failover.
//!
//! - **The source** ([`ExperienceSource`]): what the application gives the API to read
//!   SevenRooms with (its client, circuit breaker and rate limit, and the shared health record
//!   that says SevenRooms is down); this crate never sees the client.
//! - **The cache** ([`ExperienceCache`]): venue details for hours, availability for seconds
//!   ([`CacheConfig`]). Concurrent misses of one key make one downstream call, which every
//!   waiter shares (moka's `try_get_with`), so a burst of views of one venue costs one call per
//!   period however many members look.
//! - **Failover**: when the source fails (the circuit is open, SevenRooms answers 5xx or not at
//!   all), the last value read is served marked `stale`, with its age and the reason, and the
//!   failure is remembered for a moment ([`CacheConfig::failure_backoff`]) so that a dead
//!   SevenRooms is not asked again at every view. With nothing read before, the answer is 503
//!   with `Retry-After`.
//!
//! A view only informs: a booking made from a stale view is still checked by the saga's hold
//! step, which reads SevenRooms' availability again and holds the slot before any credits
//! move; and its price is always the venue's configured one (intake refuses another quote).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a venue is read in SevenRooms: its API (the deployment's when `None`) and its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceTarget {
    pub api_url: Option<String>,
    pub venue_group_id: Option<String>,
}

/// A venue as SevenRooms describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VenueDetails {
    pub id: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub currency_code: Option<String>,
}

/// One shift's times on a date, for a party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShiftTimes {
    pub name: Option<String>,
    pub shift_persistent_id: Option<String>,
    pub is_closed: bool,
    pub times: Vec<TimeSlot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeSlot {
    /// `HH:MM`, the venue's local time.
    pub time: String,
    /// Whether the slot could be booked for this party when it was read (otherwise it can only
    /// be requested).
    pub bookable: bool,
}

/// Why the source could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// SevenRooms is down, or its circuit is open: try again after `retry_after` if given.
    #[error("SevenRooms is unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// SevenRooms refused the read (an unknown venue, a date it will not show).
    #[error("SevenRooms refused: {0}")]
    Refused(String),
}

/// What the API reads SevenRooms with.
#[async_trait]
pub trait ExperienceSource: Send + Sync {
    /// The venues of `target`'s group.
    async fn venues(&self, target: &SourceTarget) -> Result<Vec<VenueDetails>, SourceError>;
    /// `venue_id`'s shifts on `date` for `party` guests.
    async fn availability(
        &self,
        target: &SourceTarget,
        venue_id: &str,
        date: NaiveDate,
        party: u32,
    ) -> Result<Vec<ShiftTimes>, SourceError>;
}

/// How long each kind of value is fresh, and how failures are remembered.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Venue details are fresh this long (they change rarely).
    pub details_ttl: Duration,
    /// Availability is fresh this long (a slot may go at any moment; the hold step checks).
    pub availability_ttl: Duration,
    /// After a failed read, the same key is not read again for this long: views get the stale
    /// value (or 503) without a call.
    pub failure_backoff: Duration,
    /// The last value read is kept for failover this long.
    pub stale_limit: Duration,
    /// At most this many keys of each kind.
    pub capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            details_ttl: Duration::from_secs(6 * 3600),
            availability_ttl: Duration::from_secs(10),
            failure_backoff: Duration::from_secs(2),
            stale_limit: Duration::from_secs(24 * 3600),
            capacity: 10_000,
        }
    }
}

/// A value and when it was read.
#[derive(Debug)]
pub struct Fetched<V> {
    pub value: V,
    pub at: Instant,
    pub at_wall: chrono::DateTime<chrono::Utc>,
}

/// A value served, fresh or stale.
#[derive(Debug, Clone)]
pub struct Served<V> {
    pub fetched: Arc<Fetched<V>>,
    /// Why it is stale (the read that failed), if it is.
    pub stale: Option<String>,
}

impl<V> Served<V> {
    pub fn age(&self) -> Duration {
        self.fetched.at.elapsed()
    }
}

/// Nothing to serve: the source failed and nothing was read before.
#[derive(Debug, Clone)]
pub struct NothingCached {
    pub error: SourceError,
    /// When to try again.
    pub retry_after: Duration,
}

/// One kind of value: fresh entries, the last value read of each key, and recent failures.
struct Tier<K, V> {
    fresh: moka::future::Cache<K, Arc<Fetched<V>>>,
    last: moka::future::Cache<K, Arc<Fetched<V>>>,
    failed: moka::future::Cache<K, SourceError>,
    backoff: Duration,
}

impl<K, V> Tier<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn new(ttl: Duration, config: &CacheConfig) -> Self {
        Tier {
            fresh: moka::future::Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(ttl)
                .build(),
            last: moka::future::Cache::builder()
                .max_capacity(config.capacity)
                // Never shorter than a fresh entry lives: there is always a last value to fall
                // back on.
                .time_to_live(config.stale_limit.max(ttl.saturating_mul(2)))
                .build(),
            failed: moka::future::Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(config.failure_backoff)
                .build(),
            backoff: config.failure_backoff,
        }
    }

    async fn get<F>(&self, key: K, read: F) -> Result<Served<V>, NothingCached>
    where
        F: std::future::Future<Output = Result<V, SourceError>>,
    {
        if let Some(fetched) = self.fresh.get(&key).await {
            return Ok(Served {
                fetched,
                stale: None,
            });
        }
        if let Some(error) = self.failed.get(&key).await {
            return self.fallback(&key, error).await;
        }
        let (last, failed) = (&self.last, &self.failed);
        let k = key.clone();
        let outcome = self
            .fresh
            .try_get_with(key.clone(), async move {
                match read.await {
                    Ok(value) => {
                        let fetched = Arc::new(Fetched {
                            value,
                            at: Instant::now(),
                            at_wall: chrono::Utc::now(),
                        });
                        last.insert(k, fetched.clone()).await;
                        Ok(fetched)
                    }
                    Err(error) => {
                        // Remembered before the waiters are let go, so that none of them, nor
                        // a view right after, reads again during the backoff.
                        failed.insert(k, error.clone()).await;
                        Err(error)
                    }
                }
            })
            .await;
        match outcome {
            Ok(fetched) => Ok(Served {
                fetched,
                stale: None,
            }),
            Err(error) => self.fallback(&key, SourceError::clone(&error)).await,
        }
    }

    async fn fallback(&self, key: &K, error: SourceError) -> Result<Served<V>, NothingCached> {
        match self.last.get(key).await {
            Some(fetched) => Ok(Served {
                fetched,
                stale: Some(error.to_string()),
            }),
            None => {
                let retry_after = match &error {
                    SourceError::Unavailable {
                        retry_after: Some(r),
                        ..
                    } => (*r).max(self.backoff),
                    _ => self.backoff,
                };
                Err(NothingCached { error, retry_after })
            }
        }
    }
}

type AvailabilityKey = (SourceTarget, String, NaiveDate, u32);

/// The cache in front of an [`ExperienceSource`].
pub struct ExperienceCache {
    source: Arc<dyn ExperienceSource>,
    details: Tier<SourceTarget, Vec<VenueDetails>>,
    availability: Tier<AvailabilityKey, Vec<ShiftTimes>>,
    config: CacheConfig,
}

impl ExperienceCache {
    pub fn new(source: Arc<dyn ExperienceSource>, config: CacheConfig) -> Self {
        ExperienceCache {
            details: Tier::new(config.details_ttl, &config),
            availability: Tier::new(config.availability_ttl, &config),
            source,
            config,
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The venues of `target`'s group.
    pub async fn venues(
        &self,
        target: &SourceTarget,
    ) -> Result<Served<Vec<VenueDetails>>, NothingCached> {
        self.details
            .get(target.clone(), self.source.venues(target))
            .await
    }

    /// A venue's availability.
    pub async fn availability(
        &self,
        target: &SourceTarget,
        venue_id: &str,
        date: NaiveDate,
        party: u32,
    ) -> Result<Served<Vec<ShiftTimes>>, NothingCached> {
        let key = (target.clone(), venue_id.to_owned(), date, party);
        self.availability
            .get(key, self.source.availability(target, venue_id, date, party))
            .await
    }
}

// ---- The routes ----

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use como_orchestrator::VenueSettings;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::{ApiQuery, ApiState, require};

/// How fresh a served value is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Freshness {
    /// Whether SevenRooms could not be read just now and this is the last value read.
    pub stale: bool,
    /// Why it is stale: the read that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    /// When it was read from SevenRooms (RFC 3339).
    pub fetched_at: String,
    /// How long ago, in seconds.
    pub age_seconds: f64,
}

impl<V> From<&Served<V>> for Freshness {
    fn from(s: &Served<V>) -> Self {
        Freshness {
            stale: s.stale.is_some(),
            stale_reason: s.stale.clone(),
            fetched_at: s
                .fetched
                .at_wall
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            age_seconds: (s.age().as_secs_f64() * 1000.0).round() / 1000.0,
        }
    }
}

/// One experience: a venue bookable with Como Credits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Experience {
    pub venue_id: String,
    /// The venue's name, timezone and currency as SevenRooms gives them (absent when SevenRooms
    /// has never been read for this venue, or does not list it).
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub currency_code: Option<String>,
    /// The price per guest in Como Credits: what a booking costs, whatever a client quotes.
    pub credits_per_guest: u64,
    /// The shifts sold for credits (empty: every shift).
    pub credit_shifts: Vec<String>,
    /// How fresh the details are (absent with the details).
    pub details: Option<Freshness>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperienceList {
    pub experiences: Vec<Experience>,
    /// Whether any venue's details are stale or missing.
    pub degraded: bool,
}

/// A venue's availability on a date, for a party, in the shifts sold for credits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AvailabilityView {
    pub venue_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub party_size: u32,
    pub credits_per_guest: u64,
    /// The price of this party in Como Credits: the `quoted_credits` of a booking from this view.
    pub credits: u64,
    pub shifts: Vec<ShiftTimes>,
    /// Names this view; a booking request may carry it as `availability_id`.
    pub availability_id: String,
    #[serde(flatten)]
    pub freshness: Freshness,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AvailabilityParams {
    /// The day, `YYYY-MM-DD` (today or later, within a year).
    date: String,
    /// Guests, 1 to 50.
    party_size: u32,
}

fn target(settings: &VenueSettings) -> SourceTarget {
    SourceTarget {
        api_url: settings.api_url.clone(),
        venue_group_id: settings.venue_group_id.clone(),
    }
}

fn cache(state: &ApiState) -> Result<&ExperienceCache, ApiError> {
    state.experiences.as_deref().ok_or_else(|| {
        ApiError::not_configured(
            "this API reads no SevenRooms: set COMO_SAGA_SEVENROOMS_URL (and its credentials) for it",
        )
    })
}

fn unavailable(what: &str, nothing: NothingCached) -> ApiError {
    if let SourceError::Refused(why) = &nothing.error {
        // SevenRooms answered, and refused: trying again will not help.
        return ApiError::sevenrooms_refused(format!("SevenRooms refused to show {what}: {why}"));
    }
    let seconds = crate::error::whole_seconds(nothing.retry_after);
    ApiError::sevenrooms_unavailable(
        format!(
            "{}; nothing is cached for {what}; try again in {seconds} s",
            nothing.error
        ),
        nothing.retry_after,
    )
}

/// The experiences (venues bookable with Como Credits) with their SevenRooms details and
/// prices. Details come from a cache (hours); when SevenRooms is down, the last details read
/// are served marked stale.
#[utoipa::path(get, path = "/v1/experiences", responses(
    (status = 200, body = ExperienceList),
    (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
    (status = 502, body = crate::error::ErrorBody, description = "SevenRooms refused to list the venues (`sevenrooms_refused`), and nothing was read before"),
    (status = 503, body = crate::error::ErrorBody, description = "SevenRooms is unavailable and no venue's details were ever read; the `Retry-After` header says when to try again"),
))]
pub(crate) async fn list_experiences(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<ExperienceList>, ApiError> {
    require(&caller, &[Role::Submitter])?;
    let cache = cache(&state)?;
    let catalogue = state.catalogue.current();
    let mut targets: Vec<SourceTarget> =
        catalogue.venues.venues().map(|(_, v)| target(v)).collect();
    targets.sort_by(|a, b| (&a.api_url, &a.venue_group_id).cmp(&(&b.api_url, &b.venue_group_id)));
    targets.dedup();
    // Each venue group (and API) once, all at the same time.
    let answers = futures::future::join_all(targets.iter().map(|t| cache.venues(t))).await;
    let mut read = Vec::with_capacity(targets.len());
    let mut last_failure = None;
    for (t, answer) in targets.into_iter().zip(answers) {
        match answer {
            Ok(served) => read.push((t, served)),
            Err(nothing) => last_failure = Some(nothing),
        }
    }
    if read.is_empty()
        && let Some(nothing) = last_failure
    {
        return Err(unavailable("any venue", nothing));
    }
    let mut degraded = false;
    let experiences = catalogue
        .venues
        .venues()
        .map(|(id, v)| {
            let t = target(v);
            let found = read
                .iter()
                .find(|(rt, _)| *rt == t)
                .and_then(|(_, served)| {
                    served
                        .fetched
                        .value
                        .iter()
                        .find(|d| d.id == id)
                        .map(|d| (d, Freshness::from(served)))
                });
            degraded |= found.as_ref().is_none_or(|(_, f)| f.stale);
            Experience {
                venue_id: id.to_owned(),
                name: found.as_ref().and_then(|(d, _)| d.name.clone()),
                timezone: found.as_ref().and_then(|(d, _)| d.timezone.clone()),
                currency_code: found.as_ref().and_then(|(d, _)| d.currency_code.clone()),
                credits_per_guest: v.credits_per_guest,
                credit_shifts: v.credit_shifts.clone(),
                details: found.map(|(_, f)| f),
            }
        })
        .collect();
    Ok(axum::Json(ExperienceList {
        experiences,
        degraded,
    }))
}

/// A venue's availability on a date for a party, in the shifts sold for credits, with the
/// party's price in credits. Read from a cache (seconds); when SevenRooms is down, the last
/// availability read is served marked stale with its age. A slot shown here is checked again
/// by the booking's hold step: a stale view never sells a slot that is gone.
#[utoipa::path(get, path = "/v1/experiences/{venue_id}/availability",
    params(("venue_id" = String, Path, description = "a venue of `GET /v1/experiences`"), AvailabilityParams),
    responses(
        (status = 200, body = AvailabilityView),
        (status = 400, body = crate::error::ErrorBody, description = "a bad date or party size: names the parameter"),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "not a venue bookable with Como Credits"),
        (status = 502, body = crate::error::ErrorBody, description = "SevenRooms refused to show this availability (`sevenrooms_refused`), and nothing was read before"),
        (status = 503, body = crate::error::ErrorBody, description = "SevenRooms is unavailable and this availability was never read; the `Retry-After` header says when to try again"),
    ))]
pub(crate) async fn venue_availability(
    State(state): State<ApiState>,
    caller: Caller,
    Path(venue_id): Path<String>,
    ApiQuery(params): ApiQuery<AvailabilityParams>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Submitter])?;
    let date = NaiveDate::parse_from_str(&params.date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("date", "a day as YYYY-MM-DD"))?;
    let today = chrono::Utc::now().date_naive();
    // A day behind UTC still is today somewhere a venue may be.
    if date < today - chrono::Days::new(1) || date > today + chrono::Days::new(366) {
        return Err(ApiError::invalid(
            "date",
            "a day from today to a year ahead",
        ));
    }
    let party = u8::try_from(params.party_size)
        .ok()
        .and_then(|p| como_schemas::PartySize::new(p).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "party_size",
                &format!("between 1 and {} guests", como_schemas::PartySize::MAX),
            )
        })?;
    let cache = cache(&state)?;
    let catalogue = state.catalogue.current();
    let Some(settings) = catalogue.venues.get(&venue_id) else {
        return Err(ApiError::not_found(format!(
            "{venue_id} is not a venue bookable with Como Credits (GET /v1/experiences lists them)"
        )));
    };
    let party_size = u32::from(party.get());
    let served = cache
        .availability(&target(settings), &venue_id, date, party_size)
        .await
        .map_err(|nothing| unavailable(&format!("{venue_id} on {date}"), nothing))?;
    let shifts = served
        .fetched
        .value
        .iter()
        .filter(|s| {
            !s.is_closed && settings.sells(s.name.as_deref(), s.shift_persistent_id.as_deref())
        })
        .cloned()
        .collect();
    let freshness = Freshness::from(&served);
    let view = AvailabilityView {
        availability_id: format!(
            "{venue_id}/{date}/{party_size}@{}",
            served.fetched.at_wall.timestamp_millis()
        ),
        venue_id,
        date: date.to_string(),
        party_size,
        credits_per_guest: settings.credits_per_guest,
        credits: settings
            .credits_per_guest
            .saturating_mul(u64::from(party_size)),
        shifts,
        freshness,
    };
    let mut response = (StatusCode::OK, axum::Json(view)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
