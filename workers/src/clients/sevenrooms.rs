//! The SevenRooms client (API 2.4): venues, availability, holds, booking with `external_id`,
//! get, search, cancel, and the token minter (`POST /auth`).
//!
//! SevenRooms has no idempotency key. A booking carries `external_id` (the saga id), and a
//! booking whose outcome is unknown is settled by searching for that `external_id` before any
//! new attempt: [`SevenRoomsClient::book`] does this itself, and
//! [`SevenRoomsClient::find_by_external_id`] is the reconcile call a worker can make later.
//! SevenRooms publishes no error codes either: refusals are recognised by their `msg` text, in
//! [`refusal_code`] alone, so that a change in wording is fixed in one place.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use como_schemas::Timestamp;
use reqwest::StatusCode;
pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::token::{CachedTokenSource, Token, TokenError, TokenMinter, TokenSource};
use super::{
    Answer, Attempt, CallPolicy, Deadline, Effect, Guards, Outcome, call, codes, decode, join,
    send, send_with_token, transient_status,
};

/// The long-lived credentials (one type with the simulator's: see [`como_schemas::credentials`]).
pub use como_schemas::credentials::SevenRoomsCredentials;

/// The `{status, data, msg, request_id}` envelope; any field may be null.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    msg: Option<String>,
}

fn error_msg(body: &[u8]) -> String {
    serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(body)
        .ok()
        .and_then(|e| e.msg)
        .unwrap_or_default()
}

/// The stable code for a 400 refusal, from its message.
pub fn refusal_code(msg: &str) -> &'static str {
    let msg = msg.to_ascii_lowercase();
    if msg.contains("already been cancel") || msg.contains("already cancel") {
        ALREADY_CANCELLED
    } else if msg.contains("no longer available") || msg.contains("not available") {
        codes::SLOT_UNAVAILABLE
    } else if msg.contains("hold") && (msg.contains("expired") || msg.contains("does not exist")) {
        codes::HOLD_EXPIRED
    } else if msg.contains("cut-off")
        || msg.contains("cutoff")
        || msg.contains("no longer be cancel")
    {
        codes::PAST_CANCELLATION_CUTOFF
    } else {
        codes::INVALID_REQUEST
    }
}

/// Not a failure for a cancel: the reservation is cancelled already.
const ALREADY_CANCELLED: &str = "ALREADY_CANCELLED";

/// Classifies a 4xx that is neither a 401 nor a 429; `not_found` is the code for a 404.
fn refusal<T>(answer: &Answer, not_found: &str) -> Outcome<T> {
    let msg = error_msg(&answer.body);
    let code = if answer.status == StatusCode::NOT_FOUND {
        not_found
    } else {
        refusal_code(&msg)
    };
    let message = if msg.is_empty() {
        answer.status.to_string()
    } else {
        msg
    };
    Outcome::business(code, message)
}

fn data<T: DeserializeOwned>(answer: &Answer) -> Result<T, super::Transient> {
    let envelope: Envelope<T> = decode(&answer.body)?;
    envelope
        .data
        .ok_or_else(|| super::Transient::maybe_applied("answer without data"))
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Venue {
    pub id: String,
    pub name: Option<String>,
    pub venue_group_id: Option<String>,
    pub timezone: Option<String>,
    pub currency_code: Option<String>,
}

#[derive(Deserialize)]
struct VenueList {
    #[serde(alias = "venues", default)]
    results: Vec<Venue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityRequest {
    pub date: NaiveDate,
    pub party_size: u32,
    pub start_time: Option<NaiveTime>,
    pub end_time: Option<NaiveTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Shift {
    pub name: Option<String>,
    #[serde(default)]
    pub is_closed: bool,
    pub shift_persistent_id: Option<String>,
    #[serde(default)]
    pub times: Vec<SlotTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SlotTime {
    pub time: String,
    pub time_iso: Option<String>,
    /// `book` (bookable now) or `request`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub access_persistent_id: Option<String>,
}

impl SlotTime {
    pub fn is_bookable(&self) -> bool {
        self.kind.as_deref() == Some("book")
    }
}

#[derive(Deserialize)]
struct AvailabilityData {
    #[serde(default)]
    availability: Vec<Shift>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    pub date: NaiveDate,
    pub time: NaiveTime,
    pub party_size: u32,
    pub shift_persistent_id: Option<String>,
    pub access_persistent_id: Option<String>,
    /// How long the hold lasts (SevenRooms' default is 300 s).
    pub hold_wait_time_sec: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HoldConfirmation {
    pub reservation_hold_id: String,
}

/// How a hold release ended; both mean the slot is not held any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released,
    /// Unknown to SevenRooms (never made, or gone).
    AlreadyGone,
}

/// A booking. Personal fields are sent to SevenRooms and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct BookRequest {
    pub date: NaiveDate,
    pub time: NaiveTime,
    pub party_size: u32,
    pub first_name: String,
    pub last_name: String,
    /// E.164.
    pub phone: String,
    pub email: Option<String>,
    pub reservation_hold_id: Option<String>,
    /// The saga id: how an unknown outcome is reconciled.
    pub external_id: Option<String>,
    pub loyalty_id: Option<String>,
    pub notes: Option<String>,
}

impl std::fmt::Debug for BookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookRequest")
            .field("date", &self.date)
            .field("time", &self.time)
            .field("party_size", &self.party_size)
            .field("reservation_hold_id", &self.reservation_hold_id)
            .field("external_id", &self.external_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    pub reservation_id: String,
    pub reference_code: Option<String>,
    /// Found by searching for the `external_id` after an unanswered attempt.
    pub reconciled: bool,
}

#[derive(Deserialize)]
struct BookData {
    reservation_id: String,
    reference_code: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub reference_code: Option<String>,
    pub external_id: Option<String>,
    pub venue_id: Option<String>,
    pub date: Option<NaiveDate>,
    pub time_slot_iso: Option<String>,
    pub max_guests: Option<u32>,
    /// `RESERVED`, `CANCELED`, `NO_SHOW`, `COMPLETE`, ...
    pub status_code: Option<String>,
}

impl Reservation {
    pub fn is_cancelled(&self) -> bool {
        matches!(self.status_code.as_deref(), Some("CANCELED" | "CANCELLED"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchRequest {
    pub venue_group_id: Option<String>,
    pub venue_id: Option<String>,
    pub from_date: NaiveDate,
    pub to_date: NaiveDate,
    /// At most 400.
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SearchPage {
    #[serde(default)]
    pub results: Vec<Reservation>,
    pub cursor: Option<String>,
}

/// How a cancel ended; every variant means no live reservation is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyCancelled,
    /// SevenRooms knows no such reservation.
    NotFound,
}

#[derive(Deserialize)]
struct AuthData {
    token: String,
    token_expiration_datetime: Option<String>,
}

/// Mints tokens with `POST /auth`.
pub struct SevenRoomsAuthenticator {
    http: reqwest::Client,
    base_url: String,
    credentials: SevenRoomsCredentials,
}

impl SevenRoomsAuthenticator {
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<String>,
        credentials: SevenRoomsCredentials,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into(),
            credentials,
        }
    }
}

/// The token's expiry as a point in time; the naive time is taken as UTC. The token cache
/// compares it with its clock.
pub(crate) fn expiry(naive: &str) -> Option<Timestamp> {
    let at = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?
        .and_utc();
    Some(Timestamp::from_datetime(at))
}

#[async_trait]
impl TokenMinter for SevenRoomsAuthenticator {
    async fn mint(&self, deadline: Deadline) -> Result<Token, TokenError> {
        let request = self
            .http
            .post(join(&self.base_url, "/auth"))
            .form(&[
                ("client_id", self.credentials.client_id.as_str()),
                (
                    "client_secret",
                    self.credentials.client_secret.expose_secret(),
                ),
            ])
            .timeout(deadline.remaining());
        let unavailable = |reason: String, retry_after| TokenError::Unavailable {
            reason,
            retry_after,
        };
        let answer = send(request)
            .await
            .map_err(|t| unavailable(t.reason, t.retry_after))?;
        token_answer(&answer)
    }
}

/// Reads the answer to `POST /auth`.
pub(crate) fn token_answer(answer: &Answer) -> Result<Token, TokenError> {
    let unavailable = |reason: String, retry_after| TokenError::Unavailable {
        reason,
        retry_after,
    };
    match answer.status {
        s if s.is_success() => {
            let auth: AuthData = data(answer).map_err(|t| unavailable(t.reason, None))?;
            let expires_at = auth.token_expiration_datetime.as_deref().and_then(expiry);
            Ok(Token::new(auth.token, expires_at))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
            Err(TokenError::Refused(error_msg(&answer.body)))
        }
        s => Err(unavailable(
            format!("auth answered {s}"),
            answer.retry_after,
        )),
    }
}

/// Settings for [`SevenRoomsClient::connect`].
#[derive(Clone, Debug)]
pub struct SevenRoomsSettings {
    pub base_url: String,
    pub credentials: SevenRoomsCredentials,
    pub policy: CallPolicy,
    /// Renew a token this long before it expires.
    pub token_refresh_margin: Duration,
}

impl SevenRoomsSettings {
    pub fn new(base_url: impl Into<String>, credentials: SevenRoomsCredentials) -> Self {
        Self {
            base_url: base_url.into(),
            credentials,
            policy: CallPolicy::default(),
            token_refresh_margin: Duration::from_secs(3600),
        }
    }
}

fn hhmm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

/// Makes a client for another SevenRooms API base URL (its own token, the same guards).
pub type ConnectApi = Arc<dyn Fn(&str) -> SevenRoomsClient + Send + Sync>;

/// SevenRooms clients by API base URL: the deployment's, and one for each other API a venue
/// names, made on first use by `connect`.
pub struct ApiClients {
    default: SevenRoomsClient,
    connect: Option<ConnectApi>,
    others: std::sync::Mutex<std::collections::HashMap<String, SevenRoomsClient>>,
}

impl ApiClients {
    /// `default` only, until [`ApiClients::connecting`] says how to reach another API.
    pub fn new(default: SevenRoomsClient) -> Self {
        ApiClients {
            default,
            connect: None,
            others: Default::default(),
        }
    }

    pub fn connecting(mut self, connect: ConnectApi) -> Self {
        self.connect = Some(connect);
        self
    }

    /// The deployment's client.
    pub fn default_client(&self) -> &SevenRoomsClient {
        &self.default
    }

    /// The client for `api`, or the deployment's when `None` (or when no other API can be
    /// reached).
    pub fn at(&self, api: Option<&str>) -> SevenRoomsClient {
        match (api, &self.connect) {
            (Some(url), Some(connect)) => self
                .others
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(url.to_owned())
                .or_insert_with(|| connect(url))
                .clone(),
            _ => self.default.clone(),
        }
    }

    /// Takes a new token for every API (a scheduled rotation); each on its own, the failures
    /// named together.
    pub async fn rotate_tokens(&self, deadline: Deadline) -> Result<(), String> {
        let mut clients = vec![self.default.clone()];
        clients.extend(
            self.others
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned(),
        );
        let mut failed = Vec::new();
        for client in clients {
            if let Err(e) = client.rotate_token(deadline).await {
                failed.push(format!("{}: {e}", client.base_url));
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(failed.join("; ")),
        }
    }
}

/// The SevenRooms client. Cheap to clone; clones share the connection pool and token cache.
#[derive(Clone)]
pub struct SevenRoomsClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    tokens: Arc<dyn TokenSource>,
    policy: CallPolicy,
    guards: Guards,
}

impl SevenRoomsClient {
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<Arc<str>>,
        tokens: Arc<dyn TokenSource>,
        policy: CallPolicy,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into(),
            tokens,
            policy,
            guards: Guards::default(),
        }
    }

    /// A client that authenticates itself and caches its tokens.
    pub fn connect(http: reqwest::Client, settings: SevenRoomsSettings) -> Self {
        let minter = SevenRoomsAuthenticator::new(
            http.clone(),
            settings.base_url.clone(),
            settings.credentials,
        );
        let tokens = Arc::new(CachedTokenSource::new(
            minter,
            settings.token_refresh_margin,
        ));
        Self::new(http, settings.base_url, tokens, settings.policy)
    }

    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// Mints a new token now (see [`super::token::TokenSource::renew`]).
    pub async fn rotate_token(&self, deadline: Deadline) -> Result<(), String> {
        self.tokens.renew(deadline).await.map_err(|e| e.to_string())
    }

    fn url(&self, path: &str) -> String {
        join(&self.base_url, path)
    }

    async fn attempt<T>(
        &self,
        deadline: Deadline,
        build: impl Fn() -> reqwest::RequestBuilder,
        classify: impl Fn(&Answer) -> Attempt<T>,
    ) -> Attempt<T> {
        // The token is the whole header value: no `Bearer ` prefix.
        let answer = send_with_token(self.tokens.as_ref(), deadline, |token| {
            build().header(reqwest::header::AUTHORIZATION, token)
        })
        .await?;
        if let Some(t) = transient_status(&answer) {
            return Err(t);
        }
        classify(&answer)
    }

    async fn run<T>(
        &self,
        effect: Effect,
        deadline: Deadline,
        build: impl Fn() -> reqwest::RequestBuilder,
        classify: impl Fn(&Answer) -> Attempt<T>,
    ) -> Outcome<T> {
        call(&self.policy, &self.guards, effect, deadline, || {
            self.attempt(deadline, &build, &classify)
        })
        .await
    }

    /// Whether SevenRooms answers: the venues of a group that does not exist (a read that
    /// changes nothing), with a token, so that a probe also finds an auth outage.
    pub async fn probe(&self, deadline: Deadline) -> Result<(), String> {
        let url = self.url("/venues");
        super::probe(
            &self.guards,
            deadline,
            send_with_token(self.tokens.as_ref(), deadline, |token| {
                self.http
                    .get(&url)
                    .query(&[("venue_group_id", "como-saga-health-probe")])
                    .header(reqwest::header::AUTHORIZATION, token)
            }),
        )
        .await
    }

    pub async fn venues(&self, venue_group_id: &str, deadline: Deadline) -> Outcome<Vec<Venue>> {
        let url = self.url("/venues");
        self.run(
            Effect::Read,
            deadline,
            || {
                self.http
                    .get(&url)
                    .query(&[("venue_group_id", venue_group_id)])
            },
            classify_venues,
        )
        .await
    }

    pub async fn availability(
        &self,
        venue_id: &str,
        request: &AvailabilityRequest,
        deadline: Deadline,
    ) -> Outcome<Vec<Shift>> {
        let url = self.url(&format!("/venues/{venue_id}/availability"));
        let mut query = vec![
            ("date", request.date.to_string()),
            ("party_size", request.party_size.to_string()),
        ];
        if let Some(t) = request.start_time {
            query.push(("start_time", hhmm(t)));
        }
        if let Some(t) = request.end_time {
            query.push(("end_time", hhmm(t)));
        }
        self.run(
            Effect::Read,
            deadline,
            || self.http.get(&url).query(&query),
            classify_availability,
        )
        .await
    }

    /// Holds a slot (step 2). Not retried once it may have landed: a hold has no key to look
    /// it up by, so an unknown hold is left to expire on its own.
    pub async fn hold(
        &self,
        venue_id: &str,
        request: &HoldRequest,
        deadline: Deadline,
    ) -> Outcome<HoldConfirmation> {
        let url = self.url(&format!("/venues/{venue_id}/holds"));
        let mut form = vec![
            ("date", request.date.to_string()),
            ("time", hhmm(request.time)),
            ("party_size", request.party_size.to_string()),
        ];
        if let Some(s) = &request.shift_persistent_id {
            form.push(("shift_persistent_id", s.clone()));
        }
        if let Some(a) = &request.access_persistent_id {
            form.push(("access_persistent_id", a.clone()));
        }
        if let Some(secs) = request.hold_wait_time_sec {
            form.push(("hold_wait_time_sec", secs.to_string()));
        }
        self.run(
            Effect::Write,
            deadline,
            || self.http.post(&url).form(&form),
            classify_hold,
        )
        .await
    }

    /// Releases a hold (compensation of step 2). A hold SevenRooms does not know is as good
    /// as released.
    pub async fn release_hold(
        &self,
        venue_id: &str,
        hold_id: &str,
        deadline: Deadline,
    ) -> Outcome<ReleaseOutcome> {
        let url = self.url(&format!("/venues/{venue_id}/holds/{hold_id}"));
        self.run(
            Effect::IdempotentWrite,
            deadline,
            || self.http.delete(&url),
            classify_release,
        )
        .await
    }

    async fn book_once(
        &self,
        venue_id: &str,
        request: &BookRequest,
        deadline: Deadline,
    ) -> Outcome<Booking> {
        let url = self.url(&format!("/venues/{venue_id}/book"));
        let mut form = vec![
            ("date", request.date.to_string()),
            ("time", hhmm(request.time)),
            ("party_size", request.party_size.to_string()),
            ("first_name", request.first_name.clone()),
            ("last_name", request.last_name.clone()),
            ("phone", request.phone.clone()),
        ];
        let optional = [
            ("reservation_hold_id", &request.reservation_hold_id),
            ("external_id", &request.external_id),
            ("loyalty_id", &request.loyalty_id),
            ("email", &request.email),
            ("notes", &request.notes),
        ];
        form.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
        );
        self.run(
            Effect::Write,
            deadline,
            || self.http.put(&url).form(&form),
            classify_book,
        )
        .await
    }

    /// Books (step 4). When an attempt may have landed, searches for the `external_id` before
    /// trying again, so that a retry never makes a second reservation; `Unknown` when neither
    /// a booking nor its absence could be established within the deadline. A search that
    /// finds only a cancelled reservation ends in `RESERVATION_CANCELLED`.
    ///
    /// A search that finds nothing does not prove that an unanswered attempt will never land:
    /// SevenRooms may still be working on it after we gave up. So once an attempt may have
    /// landed, a later refusal (`SLOT_UNAVAILABLE`, very likely taken by that very attempt)
    /// is reported as `Unknown`, and the saga looks the booking up once no attempt can land.
    pub async fn book(
        &self,
        venue_id: &str,
        request: &BookRequest,
        deadline: Deadline,
    ) -> Outcome<Booking> {
        let rounds = self.policy.max_attempts.max(1);
        let mut outcome = self.book_once(venue_id, request, deadline).await;
        let mut open_attempt: Option<String> = None;
        for _ in 1..rounds {
            let (Outcome::Unknown { reason }
            | Outcome::Unavailable {
                reason,
                maybe_applied: true,
                ..
            }) = &outcome
            else {
                break;
            };
            open_attempt.get_or_insert_with(|| reason.clone());
            let Some(external_id) = &request.external_id else {
                return outcome;
            };
            match self
                .find_by_external_id(venue_id, request.date, external_id, deadline)
                .await
            {
                Outcome::Success(Some(found)) if found.is_cancelled() => {
                    // Booked once, then cancelled: reporting it booked would confirm a saga
                    // without a live reservation.
                    return Outcome::business(
                        codes::RESERVATION_CANCELLED,
                        format!(
                            "the reservation {} with this external_id is cancelled",
                            found.id
                        ),
                    );
                }
                Outcome::Success(Some(found)) => {
                    return Outcome::Success(Booking {
                        reservation_id: found.id,
                        reference_code: found.reference_code,
                        reconciled: true,
                    });
                }
                Outcome::Success(None) if !deadline.is_expired() => {
                    tracing::debug!(%reason, "booking not found after an unanswered attempt; booking again");
                    outcome = self.book_once(venue_id, request, deadline).await;
                }
                _ => break,
            }
        }
        match (open_attempt, outcome) {
            (Some(earlier), Outcome::BusinessFailure { code, message }) => Outcome::Unknown {
                reason: format!(
                    "refused ({code}: {message}) while an earlier attempt may still land ({earlier})"
                ),
            },
            (
                Some(_),
                Outcome::Unavailable {
                    reason,
                    retry_after,
                    ..
                },
            ) => Outcome::Unavailable {
                reason,
                retry_after,
                maybe_applied: true,
            },
            // The search could not run (the downstream went down after the attempt).
            (Some(earlier), Outcome::Unknown { .. })
                if self
                    .guards
                    .breaker
                    .as_ref()
                    .and_then(|b| b.blocked_for())
                    .is_some() =>
            {
                Outcome::Unavailable {
                    reason: earlier,
                    retry_after: None,
                    maybe_applied: true,
                }
            }
            (_, outcome) => outcome,
        }
    }

    /// One reservation by id.
    pub async fn get_reservation(
        &self,
        reservation_id: &str,
        deadline: Deadline,
    ) -> Outcome<Reservation> {
        let url = self.url(&format!("/reservations/{reservation_id}"));
        self.run(
            Effect::Read,
            deadline,
            || self.http.get(&url),
            classify_reservation,
        )
        .await
    }

    /// One page of reservations by date.
    pub async fn search_reservations(
        &self,
        request: &SearchRequest,
        deadline: Deadline,
    ) -> Outcome<SearchPage> {
        let url = self.url("/reservations");
        let mut query = vec![
            ("from_date", request.from_date.to_string()),
            ("to_date", request.to_date.to_string()),
            ("limit", request.limit.clamp(1, 400).to_string()),
        ];
        if let Some(g) = &request.venue_group_id {
            query.push(("venue_group_id", g.clone()));
        }
        if let Some(v) = &request.venue_id {
            query.push(("venue_id", v.clone()));
        }
        if let Some(c) = &request.cursor {
            query.push(("cursor", c.clone()));
        }
        self.run(
            Effect::Read,
            deadline,
            || self.http.get(&url).query(&query),
            classify_search,
        )
        .await
    }

    /// Reconciles a booking: the reservation made at `venue_id` on `date` with `external_id`,
    /// if any (a live one before a cancelled one).
    pub async fn find_by_external_id(
        &self,
        venue_id: &str,
        date: NaiveDate,
        external_id: &str,
        deadline: Deadline,
    ) -> Outcome<Option<Reservation>> {
        let mut request = SearchRequest {
            venue_id: Some(venue_id.to_owned()),
            from_date: date,
            to_date: date,
            limit: 400,
            ..SearchRequest::default()
        };
        let mut cancelled = None;
        loop {
            let page = match self.search_reservations(&request, deadline).await {
                Outcome::Success(page) => page,
                other => return other.map(|_| None),
            };
            for r in page.results {
                let same_venue = r.venue_id.as_deref().is_none_or(|v| v == venue_id);
                if same_venue && r.external_id.as_deref() == Some(external_id) {
                    if !r.is_cancelled() {
                        return Outcome::Success(Some(r));
                    }
                    cancelled.get_or_insert(r);
                }
            }
            match page.cursor {
                Some(c) if !c.is_empty() => request.cursor = Some(c),
                _ => return Outcome::Success(cancelled),
            }
        }
    }

    /// Cancels a reservation (compensation of step 4). Already cancelled, or unknown, is
    /// success; past the cut-off is a business failure.
    pub async fn cancel(&self, reservation_id: &str, deadline: Deadline) -> Outcome<CancelOutcome> {
        let url = self.url(&format!("/reservations/{reservation_id}"));
        self.run(
            Effect::IdempotentWrite,
            deadline,
            || self.http.delete(&url),
            classify_cancel,
        )
        .await
    }

    /// Cancels whatever reservation carries `external_id`, for when the reservation id is not
    /// known (the booking's answer was lost). None found is success.
    pub async fn cancel_by_external_id(
        &self,
        venue_id: &str,
        date: NaiveDate,
        external_id: &str,
        deadline: Deadline,
    ) -> Outcome<CancelOutcome> {
        match self
            .find_by_external_id(venue_id, date, external_id, deadline)
            .await
        {
            Outcome::Success(None) => Outcome::Success(CancelOutcome::NotFound),
            Outcome::Success(Some(r)) if r.is_cancelled() => {
                Outcome::Success(CancelOutcome::AlreadyCancelled)
            }
            Outcome::Success(Some(r)) => self.cancel(&r.id, deadline).await,
            other => other.map(|_| CancelOutcome::NotFound),
        }
    }
}

/// Reads a venue list answer that is not transient.
pub(crate) fn classify_venues(answer: &Answer) -> Attempt<Vec<Venue>> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::VENUE_NOT_FOUND));
    }
    Ok(Outcome::Success(data::<VenueList>(answer)?.results))
}

/// Reads an availability answer that is not transient.
pub(crate) fn classify_availability(answer: &Answer) -> Attempt<Vec<Shift>> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::VENUE_NOT_FOUND));
    }
    Ok(Outcome::Success(
        data::<AvailabilityData>(answer)?.availability,
    ))
}

/// Reads a hold answer that is not transient: a 2xx must carry the hold id.
pub(crate) fn classify_hold(answer: &Answer) -> Attempt<HoldConfirmation> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::VENUE_NOT_FOUND));
    }
    Ok(Outcome::Success(data(answer)?))
}

/// Reads a hold release answer that is not transient.
pub(crate) fn classify_release(answer: &Answer) -> Attempt<ReleaseOutcome> {
    if answer.status.is_success() {
        Ok(Outcome::Success(ReleaseOutcome::Released))
    } else if answer.status == StatusCode::NOT_FOUND {
        Ok(Outcome::Success(ReleaseOutcome::AlreadyGone))
    } else {
        Ok(refusal(answer, codes::VENUE_NOT_FOUND))
    }
}

/// Reads a booking answer that is not transient: a 2xx must carry the reservation id.
pub(crate) fn classify_book(answer: &Answer) -> Attempt<Booking> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::VENUE_NOT_FOUND));
    }
    let booked: BookData = data(answer)?;
    Ok(Outcome::Success(Booking {
        reservation_id: booked.reservation_id,
        reference_code: booked.reference_code,
        reconciled: false,
    }))
}

/// Reads one reservation's answer that is not transient.
pub(crate) fn classify_reservation(answer: &Answer) -> Attempt<Reservation> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::RESERVATION_NOT_FOUND));
    }
    Ok(Outcome::Success(data(answer)?))
}

/// Reads a page of a reservation search that is not transient.
pub(crate) fn classify_search(answer: &Answer) -> Attempt<SearchPage> {
    if !answer.status.is_success() {
        return Ok(refusal(answer, codes::VENUE_NOT_FOUND));
    }
    Ok(Outcome::Success(data(answer)?))
}

/// Reads a cancel answer that is not transient.
pub(crate) fn classify_cancel(answer: &Answer) -> Attempt<CancelOutcome> {
    if answer.status.is_success() {
        return Ok(Outcome::Success(CancelOutcome::Cancelled));
    }
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(Outcome::Success(CancelOutcome::NotFound));
    }
    match refusal::<CancelOutcome>(answer, codes::RESERVATION_NOT_FOUND) {
        Outcome::BusinessFailure { code, .. } if code == ALREADY_CANCELLED => {
            Ok(Outcome::Success(CancelOutcome::AlreadyCancelled))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_messages_map_to_stable_codes() {
        for (msg, code) in [
            (
                "The requested time slot is no longer available.",
                codes::SLOT_UNAVAILABLE,
            ),
            (
                "The reservation hold has expired or does not exist.",
                codes::HOLD_EXPIRED,
            ),
            (
                "The reservation can no longer be cancelled: it is past the cancellation cut-off.",
                codes::PAST_CANCELLATION_CUTOFF,
            ),
            ("Reservation has already been cancelled.", ALREADY_CANCELLED),
            ("phone must be in E.164 format.", codes::INVALID_REQUEST),
        ] {
            assert_eq!(refusal_code(msg), code, "{msg}");
        }
    }

    #[test]
    fn credentials_print_without_their_secret() {
        let creds = SevenRoomsCredentials {
            client_id: "como-client".into(),
            client_secret: "s3cr3t-client-secret".into(),
        };
        let settings = SevenRoomsSettings::new("http://sevenrooms.test", creds.clone());
        for printed in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{settings:?}"),
        ] {
            assert!(!printed.contains("s3cr3t-client-secret"), "{printed}");
            assert!(printed.contains("REDACTED"), "{printed}");
            assert!(printed.contains("como-client"), "{printed}");
        }
        assert_eq!(creds.client_secret.expose_secret(), "s3cr3t-client-secret");
    }

    #[test]
    fn a_naive_expiry_is_read_as_utc() {
        let utc = chrono::DateTime::parse_from_rfc3339("2030-01-15T12:34:56.789Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = Timestamp::from_datetime(utc);
        assert_eq!(expiry("2030-01-15T12:34:56.789"), Some(at));
        assert_eq!(expiry("2030-01-15 12:34:56.789"), Some(at));
        assert_eq!(
            expiry("2030-01-15T12:34:56"),
            Some(Timestamp::from_millis(at.as_millis() - 789))
        );
        assert_eq!(expiry("not a time"), None);
    }
}
