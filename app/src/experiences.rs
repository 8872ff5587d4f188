//! The API's [`ExperienceSource`]: SevenRooms read with its client (token from `POST /auth`,
//! cached and renewed on a 401), one client per API base URL (a venue may name its own), a
//! rate limit, and the workers' shared health record (`health/sevenrooms`) as the circuit:
//! while the SevenRooms worker's breaker holds SevenRooms down, a view reads nothing and the
//! cache serves what it has (see `como_api::experiences`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use como_api::experiences::{
    ExperienceSource, ShiftTimes, SourceError, SourceTarget, TimeSlot, VenueDetails,
};
use como_ports::records::SharedHealth;
use como_ports::{Clock, IdempotencyRecords};
use como_workers::clients::sevenrooms::{
    ApiClients, AvailabilityRequest, SevenRoomsClient, SevenRoomsSettings,
};
use como_workers::clients::{CallPolicy, Deadline, Guards, Outcome};

use crate::settings::Settings;

/// How long past its next probe a "down" health record is still believed.
const STALE_DOWN_MS: i64 = 60_000;

/// How long a member's view waits for SevenRooms, all attempts included.
const VIEW_DEADLINE: Duration = Duration::from_secs(4);

pub struct SevenRoomsViews {
    clients: ApiClients,
    health: Arc<dyn IdempotencyRecords>,
    clock: Arc<dyn Clock>,
}

impl SevenRoomsViews {
    /// The source for `settings`' SevenRooms, or `None` when no SevenRooms URL is configured.
    pub fn new(
        settings: &Settings,
        health: Arc<dyn IdempotencyRecords>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<SevenRoomsViews>> {
        let r = &settings.sevenrooms;
        let Some(url) = r.base_url.clone() else {
            return Ok(None);
        };
        let mut client_settings = SevenRoomsSettings::new(url.clone(), r.credentials.clone());
        // A member waits on this: two short attempts, not a worker's patient retries.
        client_settings.policy = CallPolicy {
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 2,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_elapsed: VIEW_DEADLINE,
            jitter: true,
        };
        let guards = Guards {
            breaker: None,
            rate_limit: Some(crate::stack::rate_limit("sevenrooms-views", r.rate_limit)),
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(32)
            .build()?;
        let connect = move |url: &str| {
            let mut at = client_settings.clone();
            at.base_url = url.to_owned();
            SevenRoomsClient::connect(http.clone(), at).with_guards(guards.clone())
        };
        Ok(Some(SevenRoomsViews {
            clients: ApiClients::new(connect(&url)).connecting(Arc::new(connect)),
            health,
            clock,
        }))
    }

    fn client(&self, target: &SourceTarget) -> SevenRoomsClient {
        self.clients.at(target.api_url.as_deref())
    }

    /// Mints new tokens for every SevenRooms API these views read (a scheduled rotation).
    pub async fn rotate_tokens(&self) -> Result<(), String> {
        self.clients
            .rotate_tokens(Deadline::after(Duration::from_secs(30)))
            .await
    }

    /// `Err` while the workers hold SevenRooms down (their breaker is open), with when their
    /// next probe goes.
    async fn circuit(&self) -> Result<(), SourceError> {
        let Ok(Some(text)) = self.health.get(&SharedHealth::key("sevenrooms")).await else {
            return Ok(());
        };
        let Ok(health) = serde_json::from_str::<SharedHealth>(&text) else {
            return Ok(());
        };
        let now = self.clock.now().as_millis();
        // A "down" whose next probe is long overdue was left by workers that are gone (nobody
        // probes): it says nothing about SevenRooms now, so the view asks.
        if health.up || now > health.next_probe_at_ms + STALE_DOWN_MS {
            return Ok(());
        }
        Err(SourceError::Unavailable {
            reason: "its circuit is open (the SevenRooms worker found it down)".into(),
            retry_after: Some(Duration::from_millis(
                u64::try_from(health.next_probe_at_ms - now).unwrap_or(0),
            )),
        })
    }
}

fn failed<T>(outcome: Outcome<T>) -> Result<T, SourceError> {
    match outcome {
        Outcome::Success(t) => Ok(t),
        Outcome::BusinessFailure { code, message } => {
            Err(SourceError::Refused(format!("{code}: {message}")))
        }
        Outcome::Retryable {
            reason,
            retry_after,
        }
        | Outcome::Unavailable {
            reason,
            retry_after,
            ..
        } => Err(SourceError::Unavailable {
            reason,
            retry_after,
        }),
        Outcome::Unknown { reason } => Err(SourceError::Unavailable {
            reason,
            retry_after: None,
        }),
    }
}

#[async_trait]
impl ExperienceSource for SevenRoomsViews {
    async fn venues(&self, target: &SourceTarget) -> Result<Vec<VenueDetails>, SourceError> {
        self.circuit().await?;
        let group = target.venue_group_id.as_deref().unwrap_or_default();
        let venues = failed(
            self.client(target)
                .venues(group, Deadline::after(VIEW_DEADLINE))
                .await,
        )?;
        Ok(venues
            .into_iter()
            .map(|v| VenueDetails {
                id: v.id,
                name: v.name,
                timezone: v.timezone,
                currency_code: v.currency_code,
            })
            .collect())
    }

    async fn availability(
        &self,
        target: &SourceTarget,
        venue_id: &str,
        date: NaiveDate,
        party: u32,
    ) -> Result<Vec<ShiftTimes>, SourceError> {
        self.circuit().await?;
        let request = AvailabilityRequest {
            date,
            party_size: party,
            start_time: None,
            end_time: None,
        };
        let shifts = failed(
            self.client(target)
                .availability(venue_id, &request, Deadline::after(VIEW_DEADLINE))
                .await,
        )?;
        Ok(shifts
            .into_iter()
            .map(|s| ShiftTimes {
                times: s
                    .times
                    .iter()
                    .map(|t| TimeSlot {
                        time: t.time.get(..5).unwrap_or(&t.time).to_owned(),
                        bookable: t.is_bookable(),
                    })
                    .collect(),
                name: s.name,
                shift_persistent_id: s.shift_persistent_id,
                is_closed: s.is_closed,
            })
            .collect())
    }
}
