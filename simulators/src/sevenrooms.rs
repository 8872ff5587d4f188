//! The SevenRooms API 2.4 simulator: token authentication (`Authorization: <token>`, no `Bearer`),
//! venues, availability with a finite number of covers per slot, holds that expire, form-encoded
//! booking with `external_id` unique per venue, get, search by date, and cancel, all in the
//! `{status, data, msg, request_id}` envelope.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{Common, Simulated, admin_routes};
use crate::faults::{Action, Plan};
use crate::ledger::{GuestEntry, HoldEntry, HoldStatus, ReservationEntry, SevenRoomsLedger};
use crate::seed::{SeedVenue, VENUE_GROUP_ID};

/// Operation names, for fault rules.
pub const OPS: &[&str] = &[
    "auth",
    "venues",
    "availability",
    "hold",
    "release_hold",
    "book",
    "get",
    "search",
    "cancel",
];
/// The operations that change the ledger; a `late` fault lands late on these.
pub const WRITE_OPS: &[&str] = &["hold", "release_hold", "book", "cancel"];
/// Business refusals a `refuse` fault can force: `SLOT_UNAVAILABLE` on `hold` and `book`,
/// `HOLD_EXPIRED` on `book`, `PAST_CANCELLATION_CUTOFF` on `cancel`.
pub const REFUSALS: &[&str] = &[
    "SLOT_UNAVAILABLE",
    "HOLD_EXPIRED",
    "PAST_CANCELLATION_CUTOFF",
];

/// The `msg` of each refusal. SevenRooms publishes no error codes; clients recognise these texts.
pub const MSG_SLOT_UNAVAILABLE: &str = "The requested time slot is no longer available.";
pub const MSG_HOLD_EXPIRED: &str = "The reservation hold has expired or does not exist.";
pub const MSG_PAST_CUTOFF: &str =
    "The reservation can no longer be cancelled: it is past the cancellation cut-off.";
pub const MSG_ALREADY_CANCELLED: &str = "Reservation has already been cancelled.";

use como_schemas::credentials::ExposeSecret;
pub use como_schemas::credentials::SevenRoomsCredentials;

/// The API client the simulator accepts unless configured otherwise (the local stack's and the
/// tests').
pub fn simulator_credentials() -> SevenRoomsCredentials {
    SevenRoomsCredentials {
        client_id: "como-saga".to_owned(),
        client_secret: "simulator-client-secret".into(),
    }
}

#[derive(Clone, Debug)]
pub struct SevenRoomsConfig {
    /// How long a token from `POST /auth` lives (about a day in the real service).
    pub token_lifetime: Duration,
    pub credentials: SevenRoomsCredentials,
    /// A reservation cannot be cancelled this close to its start.
    pub cancellation_cutoff: Duration,
    /// Hold time when the request names none.
    pub default_hold: Duration,
}

impl Default for SevenRoomsConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(24 * 3600),
            credentials: simulator_credentials(),
            cancellation_cutoff: Duration::from_secs(2 * 3600),
            default_hold: Duration::from_secs(300),
        }
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

fn error(status: StatusCode, _code: &str, msg: &str) -> Response {
    let request_id = format!("sr-{:08x}", REQUEST_SEQ.fetch_add(1, Ordering::Relaxed));
    (
        status,
        Json(serde_json::json!({
            "status": status.as_u16(),
            "msg": msg,
            "request_id": request_id,
        })),
    )
        .into_response()
}

fn bad_request(msg: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", msg)
}

fn not_found(msg: &str) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", msg)
}

#[derive(Serialize)]
struct Envelope<T> {
    status: u16,
    msg: Option<&'static str>,
    data: T,
}

fn ok<T: Serialize>(data: T) -> Response {
    Json(Envelope {
        status: 200,
        msg: None,
        data,
    })
    .into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ResStatus {
    Reserved,
    Canceled,
}

impl ResStatus {
    fn code(self) -> &'static str {
        match self {
            ResStatus::Reserved => "RESERVED",
            ResStatus::Canceled => "CANCELED",
        }
    }
}

struct Hold {
    id: String,
    venue: usize,
    date: NaiveDate,
    time: NaiveTime,
    party: u32,
    status: HoldStatus,
    created: DateTime<Utc>,
    expires: DateTime<Utc>,
    reservation: Option<String>,
}

impl Hold {
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == HoldStatus::Held && self.expires > now
    }

    fn status_at(&self, now: DateTime<Utc>) -> HoldStatus {
        if self.status == HoldStatus::Held && self.expires <= now {
            HoldStatus::Expired
        } else {
            self.status
        }
    }
}

struct Reservation {
    id: String,
    reference_code: String,
    venue: usize,
    external_id: Option<String>,
    loyalty_id: Option<String>,
    first_name: String,
    last_name: String,
    phone: String,
    email: Option<String>,
    date: NaiveDate,
    time: NaiveTime,
    party: u32,
    status: ResStatus,
    hold: Option<String>,
    created: DateTime<Utc>,
    cancelled: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Slot {
    reserved: u32,
    /// Indices of holds that were live when last looked at.
    holds: Vec<usize>,
}

#[derive(Default)]
struct Book {
    holds: Vec<Hold>,
    hold_index: HashMap<String, usize>,
    reservations: Vec<Reservation>,
    reservation_index: HashMap<String, usize>,
    /// Per venue: `external_id` to reservation index.
    by_external: HashMap<usize, HashMap<String, usize>>,
    by_date: BTreeMap<NaiveDate, Vec<usize>>,
    slots: HashMap<(usize, NaiveDate, NaiveTime), Slot>,
}

impl Book {
    /// Covers taken in a slot by reservations and live holds; forgets holds that have expired.
    fn taken(&mut self, key: (usize, NaiveDate, NaiveTime), now: DateTime<Utc>) -> u32 {
        let Some(slot) = self.slots.get_mut(&key) else {
            return 0;
        };
        let holds = &self.holds;
        slot.holds.retain(|&h| holds[h].is_live(now));
        slot.reserved + slot.holds.iter().map(|&h| self.holds[h].party).sum::<u32>()
    }
}

pub(crate) struct SevenRooms {
    common: Common,
    config: SevenRoomsConfig,
    venues: Vec<SeedVenue>,
    venue_index: HashMap<String, usize>,
    book: Mutex<Book>,
    tokens: crate::common::TokenTable,
    id_seq: AtomicU64,
}

fn parse_date(s: &str) -> Result<NaiveDate, Response> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad_request("date must be YYYY-MM-DD."))
}

fn parse_time(s: &str) -> Result<NaiveTime, Response> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .map_err(|_| bad_request("time must be HH:MM."))
}

fn parse_party(s: &str) -> Result<u32, Response> {
    match s.parse::<u32>() {
        Ok(n) if (1..=50).contains(&n) => Ok(n),
        _ => Err(bad_request("party_size must be a number from 1 to 50.")),
    }
}

fn is_e164(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or("");
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[derive(Serialize)]
struct VenueView<'a> {
    id: &'a str,
    name: &'a str,
    venue_group_id: &'a str,
    timezone: &'a str,
    currency_code: &'a str,
}

#[derive(Serialize)]
struct ReservationView<'a> {
    id: &'a str,
    reference_code: &'a str,
    external_id: Option<&'a str>,
    loyalty_id: Option<&'a str>,
    venue_id: &'a str,
    venue_group_id: &'static str,
    first_name: &'a str,
    last_name: &'a str,
    date: NaiveDate,
    time_slot_iso: String,
    max_guests: u32,
    status_code: &'static str,
    reservation_hold_id: Option<&'a str>,
    created: DateTime<Utc>,
}

#[derive(Serialize)]
struct Booked<'a> {
    reservation_id: &'a str,
    reference_code: &'a str,
    external_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Held<'a> {
    reservation_hold_id: &'a str,
    hold_duration_sec: u64,
    #[serde(serialize_with = "naive_iso")]
    hold_expiration_datetime: chrono::NaiveDateTime,
}

fn naive_iso<S: serde::Serializer>(t: &chrono::NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S"))
}

#[derive(Serialize)]
struct Released<'a> {
    reservation_hold_id: &'a str,
    status: HoldStatus,
}

#[derive(Serialize)]
struct Cancelled<'a> {
    reservation_id: &'a str,
}

#[derive(Serialize)]
struct AvailabilityView {
    availability: Vec<ShiftView>,
}

#[derive(Serialize)]
struct ShiftView {
    name: &'static str,
    is_closed: bool,
    shift_persistent_id: &'static str,
    times: Vec<TimeView>,
}

#[derive(Serialize)]
struct TimeView {
    time: String,
    time_iso: String,
    #[serde(rename = "type")]
    kind: &'static str,
    access_persistent_id: &'static str,
}

#[derive(Deserialize)]
struct AuthForm {
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Deserialize)]
struct VenuesQuery {
    venue_group_id: Option<String>,
}

#[derive(Deserialize)]
struct AvailabilityQuery {
    date: Option<String>,
    party_size: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

#[derive(Deserialize)]
struct HoldForm {
    date: Option<String>,
    time: Option<String>,
    party_size: Option<String>,
    #[allow(dead_code)]
    shift_persistent_id: Option<String>,
    #[allow(dead_code)]
    access_persistent_id: Option<String>,
    hold_wait_time_sec: Option<String>,
}

#[derive(Deserialize)]
struct BookForm {
    date: Option<String>,
    time: Option<String>,
    party_size: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    reservation_hold_id: Option<String>,
    external_id: Option<String>,
    loyalty_id: Option<String>,
    email: Option<String>,
    #[allow(dead_code)]
    notes: Option<String>,
}

#[derive(Deserialize)]
struct SearchQuery {
    venue_group_id: Option<String>,
    venue_id: Option<String>,
    from_date: Option<String>,
    to_date: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, Response> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(bad_request(&format!("{name} is required."))),
    }
}

/// Turns a handler's `Result<Response, Response>` into the answer.
fn either(r: Result<Response, Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

impl SevenRooms {
    pub fn new(common: Common, config: SevenRoomsConfig, venues: Vec<SeedVenue>) -> Self {
        let venue_index = venues
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.to_owned(), i))
            .collect();
        Self {
            common,
            config,
            venues,
            venue_index,
            book: Mutex::new(Book::default()),
            tokens: crate::common::TokenTable::default(),
            id_seq: AtomicU64::new(1),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let log = self.common.log.clone();
        Router::new()
            .route("/auth", post(auth))
            .route("/venues", get(venues))
            .route("/venues/{venue_id}/availability", get(availability))
            .route("/venues/{venue_id}/holds", post(hold))
            .route("/venues/{venue_id}/holds/{hold_id}", delete(release_hold))
            .route("/venues/{venue_id}/book", put(book))
            .route("/reservations", get(search))
            .route(
                "/reservations/{reservation_id}",
                get(get_reservation).delete(cancel),
            )
            .merge(admin_routes::<SevenRooms>())
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(
                log,
                crate::common::detached,
            ))
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.id_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn venue(&self, id: &str) -> Result<usize, Response> {
        self.venue_index
            .get(id)
            .copied()
            .ok_or_else(|| not_found("Venue not found."))
    }

    fn unauthorized(&self) -> Response {
        self.common.unauthorized.fetch_add(1, Ordering::Relaxed);
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid or expired authorization token.",
        )
    }

    /// The token is the whole `Authorization` value: `Bearer <token>` is refused, as by the
    /// real API. An `ExpireToken` plan revokes the presented token first.
    fn check_auth(&self, headers: &HeaderMap, plan: &Plan) -> Result<(), Response> {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(self.unauthorized());
        };
        if plan.action == Action::ExpireToken {
            self.tokens.revoke(token);
        }
        if self.tokens.is_valid(token, self.common.clock.now()) {
            Ok(())
        } else {
            Err(self.unauthorized())
        }
    }

    /// Admission, faults and authentication for an authenticated operation.
    async fn enter(&self, op: &'static str, headers: &HeaderMap) -> Result<Plan, Response> {
        let plan = self.common.admit(op, error).await?;
        self.check_auth(headers, &plan)?;
        Ok(plan)
    }

    /// The slot's start in UTC, when `time` is a bookable time of an open shift on `date`.
    fn slot_start(&self, venue: usize, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let v = &self.venues[venue];
        let bookable = v
            .shifts
            .iter()
            .any(|s| !s.is_closed_on(date) && s.times().contains(&time));
        bookable.then(|| {
            (date.and_time(time) - chrono::Duration::minutes(i64::from(v.utc_offset_minutes)))
                .and_utc()
        })
    }

    fn reservation_view<'a>(&'a self, r: &'a Reservation) -> ReservationView<'a> {
        ReservationView {
            id: &r.id,
            reference_code: &r.reference_code,
            external_id: r.external_id.as_deref(),
            loyalty_id: r.loyalty_id.as_deref(),
            venue_id: self.venues[r.venue].id,
            venue_group_id: VENUE_GROUP_ID,
            first_name: &r.first_name,
            last_name: &r.last_name,
            date: r.date,
            time_slot_iso: r
                .date
                .and_time(r.time)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string(),
            max_guests: r.party,
            status_code: r.status.code(),
            reservation_hold_id: r.hold.as_deref(),
            created: r.created,
        }
    }

    pub fn expire_all_tokens(&self) {
        self.tokens.revoke_all();
    }

    pub fn snapshot(&self) -> SevenRoomsLedger {
        let now = self.common.clock.now();
        let book = self.book();
        SevenRoomsLedger {
            reservations: book
                .reservations
                .iter()
                .map(|r| ReservationEntry {
                    reservation_id: r.id.clone(),
                    reference_code: r.reference_code.clone(),
                    venue_id: self.venues[r.venue].id.to_owned(),
                    external_id: r.external_id.clone(),
                    loyalty_id: r.loyalty_id.clone(),
                    guest: Some(GuestEntry {
                        first_name: r.first_name.clone(),
                        last_name: r.last_name.clone(),
                        phone: r.phone.clone(),
                        email: r.email.clone(),
                    }),
                    date: r.date,
                    time: r.time,
                    party_size: r.party,
                    status_code: r.status.code().to_owned(),
                    reservation_hold_id: r.hold.clone(),
                    created_at: r.created,
                    cancelled_at: r.cancelled,
                })
                .collect(),
            holds: book
                .holds
                .iter()
                .map(|h| HoldEntry {
                    reservation_hold_id: h.id.clone(),
                    venue_id: self.venues[h.venue].id.to_owned(),
                    date: h.date,
                    time: h.time,
                    party_size: h.party,
                    status: h.status_at(now),
                    created_at: h.created,
                    expires_at: h.expires,
                    reservation_id: h.reservation.clone(),
                })
                .collect(),
        }
    }

    fn do_availability(&self, venue: usize, q: &AvailabilityQuery) -> Result<Response, Response> {
        let date = parse_date(required(&q.date, "date")?)?;
        let party = parse_party(required(&q.party_size, "party_size")?)?;
        let start = q.start_time.as_deref().map(parse_time).transpose()?;
        let end = q.end_time.as_deref().map(parse_time).transpose()?;
        let now = self.common.clock.now();
        let v = &self.venues[venue];
        let mut book = self.book();
        let availability: Vec<ShiftView> = v
            .shifts
            .iter()
            .map(|s| {
                let closed = s.is_closed_on(date);
                let times = if closed {
                    Vec::new()
                } else {
                    s.times()
                        .into_iter()
                        .filter(|t| {
                            start.is_none_or(|st| *t >= st) && end.is_none_or(|en| *t <= en)
                        })
                        .filter(|t| self.slot_start(venue, date, *t).is_some_and(|at| at > now))
                        .map(|t| {
                            let taken = book.taken((venue, date, t), now);
                            let fits = taken + party <= v.covers_per_slot;
                            TimeView {
                                time: t.format("%H:%M").to_string(),
                                time_iso: date.and_time(t).format("%Y-%m-%d %H:%M:%S").to_string(),
                                kind: if fits { "book" } else { "request" },
                                access_persistent_id: s.access_persistent_id,
                            }
                        })
                        .collect()
                };
                ShiftView {
                    name: s.name,
                    is_closed: closed,
                    shift_persistent_id: s.shift_persistent_id,
                    times,
                }
            })
            .collect();
        drop(book);
        Ok(ok(AvailabilityView { availability }))
    }

    fn do_hold(&self, venue: usize, form: &HoldForm, plan: &Plan) -> Result<Response, Response> {
        let date = parse_date(required(&form.date, "date")?)?;
        let time = parse_time(required(&form.time, "time")?)?;
        let party = parse_party(required(&form.party_size, "party_size")?)?;
        let hold_secs = match form.hold_wait_time_sec.as_deref() {
            None | Some("") => self.config.default_hold.as_secs(),
            Some(s) => s
                .parse::<u64>()
                .map_err(|_| bad_request("hold_wait_time_sec must be a number."))?,
        };
        let now = self.common.clock.now();
        let starts = self
            .slot_start(venue, date, time)
            .ok_or_else(|| bad_request("The requested time is not offered by the venue."))?;
        if matches!(&plan.action, Action::Refuse(c) if c == "SLOT_UNAVAILABLE") || starts <= now {
            return Err(bad_request(MSG_SLOT_UNAVAILABLE));
        }
        let mut book = self.book();
        let key = (venue, date, time);
        if book.taken(key, now) + party > self.venues[venue].covers_per_slot {
            return Err(bad_request(MSG_SLOT_UNAVAILABLE));
        }
        let id = format!("hold-{:010}", self.next_id());
        let expires = now + chrono::Duration::seconds(i64::try_from(hold_secs).unwrap_or(300));
        let index = book.holds.len();
        book.holds.push(Hold {
            id: id.clone(),
            venue,
            date,
            time,
            party,
            status: HoldStatus::Held,
            created: now,
            expires,
            reservation: None,
        });
        book.hold_index.insert(id.clone(), index);
        book.slots.entry(key).or_default().holds.push(index);
        drop(book);
        Ok(ok(Held {
            reservation_hold_id: &id,
            hold_duration_sec: hold_secs,
            hold_expiration_datetime: expires.naive_utc(),
        }))
    }

    fn do_release_hold(&self, venue: usize, hold_id: &str) -> Result<Response, Response> {
        let now = self.common.clock.now();
        let mut book = self.book();
        let Some(&i) = book.hold_index.get(hold_id) else {
            return Err(not_found("Reservation hold not found."));
        };
        let hold = &mut book.holds[i];
        if hold.venue != venue {
            return Err(not_found("Reservation hold not found."));
        }
        // Releasing again, or releasing an expired or booked hold, changes nothing.
        if hold.is_live(now) {
            hold.status = HoldStatus::Released;
        }
        let status = hold.status_at(now);
        Ok(ok(Released {
            reservation_hold_id: hold_id,
            status,
        }))
    }

    fn do_book(&self, venue: usize, form: &BookForm, plan: &Plan) -> Result<Response, Response> {
        let date = parse_date(required(&form.date, "date")?)?;
        let time = parse_time(required(&form.time, "time")?)?;
        let party = parse_party(required(&form.party_size, "party_size")?)?;
        let first_name = required(&form.first_name, "first_name")?;
        let last_name = required(&form.last_name, "last_name")?;
        let phone = required(&form.phone, "phone")?;
        if !is_e164(phone) {
            return Err(bad_request("phone must be in E.164 format."));
        }
        let external_id = form.external_id.as_deref().filter(|s| !s.is_empty());
        let now = self.common.clock.now();
        let starts = self
            .slot_start(venue, date, time)
            .ok_or_else(|| bad_request("The requested time is not offered by the venue."))?;
        let mut book = self.book();
        // A create repeated with the same external_id answers with the first reservation.
        if let Some(ext) = external_id
            && let Some(&i) = book.by_external.get(&venue).and_then(|m| m.get(ext))
        {
            let r = &book.reservations[i];
            return Ok(ok(Booked {
                reservation_id: &r.id,
                reference_code: &r.reference_code,
                external_id: r.external_id.as_deref(),
            }));
        }
        let forced = match &plan.action {
            Action::Refuse(code) if code == "HOLD_EXPIRED" => Some(MSG_HOLD_EXPIRED),
            Action::Refuse(code) if code == "SLOT_UNAVAILABLE" => Some(MSG_SLOT_UNAVAILABLE),
            _ => None,
        };
        if let Some(msg) = forced {
            return Err(bad_request(msg));
        }
        if starts <= now {
            return Err(bad_request(MSG_SLOT_UNAVAILABLE));
        }
        let key = (venue, date, time);
        let hold_id = form
            .reservation_hold_id
            .as_deref()
            .filter(|s| !s.is_empty());
        let hold_index = match hold_id {
            Some(hid) => {
                let live = book.hold_index.get(hid).copied().filter(|&i| {
                    let h = &book.holds[i];
                    h.venue == venue && h.date == date && h.time == time && h.is_live(now)
                });
                let Some(i) = live else {
                    return Err(bad_request(MSG_HOLD_EXPIRED));
                };
                if party > book.holds[i].party {
                    return Err(bad_request("party_size is larger than the hold."));
                }
                Some(i)
            }
            None => {
                if book.taken(key, now) + party > self.venues[venue].covers_per_slot {
                    return Err(bad_request(MSG_SLOT_UNAVAILABLE));
                }
                None
            }
        };
        let n = self.next_id();
        let id = format!("res-{n:010}");
        let reference_code = format!("{:06X}", n.wrapping_mul(2_654_435_761) & 0xFF_FFFF);
        let index = book.reservations.len();
        if let Some(h) = hold_index {
            let hold = &mut book.holds[h];
            hold.status = HoldStatus::Booked;
            hold.reservation = Some(id.clone());
        }
        let slot = book.slots.entry(key).or_default();
        slot.reserved += party;
        if let Some(h) = hold_index {
            slot.holds.retain(|&x| x != h);
        }
        book.reservations.push(Reservation {
            id: id.clone(),
            reference_code: reference_code.clone(),
            venue,
            external_id: external_id.map(str::to_owned),
            loyalty_id: form.loyalty_id.clone().filter(|s| !s.is_empty()),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            phone: phone.to_owned(),
            email: form.email.clone().filter(|s| !s.is_empty()),
            date,
            time,
            party,
            status: ResStatus::Reserved,
            hold: hold_id.map(str::to_owned),
            created: now,
            cancelled: None,
        });
        book.reservation_index.insert(id.clone(), index);
        book.by_date.entry(date).or_default().push(index);
        if let Some(ext) = external_id {
            book.by_external
                .entry(venue)
                .or_default()
                .insert(ext.to_owned(), index);
        }
        drop(book);
        Ok(ok(Booked {
            reservation_id: &id,
            reference_code: &reference_code,
            external_id,
        }))
    }

    fn do_get(&self, id: &str) -> Result<Response, Response> {
        let book = self.book();
        let r = book
            .reservation_index
            .get(id)
            .map(|&i| &book.reservations[i])
            .ok_or_else(|| not_found("Reservation not found."))?;
        Ok(ok(self.reservation_view(r)))
    }

    fn do_search(&self, q: &SearchQuery) -> Result<Response, Response> {
        let from = parse_date(required(&q.from_date, "from_date")?)?;
        let to = parse_date(required(&q.to_date, "to_date")?)?;
        let limit = match q.limit.as_deref() {
            None | Some("") => 100,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=400).contains(&n) => n,
                _ => return Err(bad_request("limit must be a number from 1 to 400.")),
            },
        };
        let skip = match q.cursor.as_deref() {
            None | Some("") => 0,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| bad_request("cursor is not valid."))?,
        };
        if q.venue_group_id
            .as_deref()
            .is_some_and(|g| !g.is_empty() && g != VENUE_GROUP_ID)
            || from > to
        {
            return Ok(ok(serde_json::json!({ "results": [], "cursor": null })));
        }
        let venue = match q.venue_id.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => Some(self.venue(v)?),
            None => None,
        };
        let book = self.book();
        let mut matching = book
            .by_date
            .range(from..=to)
            .flat_map(|(_, ids)| ids.iter())
            .map(|&i| &book.reservations[i])
            .filter(|r| venue.is_none_or(|v| r.venue == v))
            .skip(skip);
        let page: Vec<_> = matching
            .by_ref()
            .take(limit)
            .map(|r| self.reservation_view(r))
            .collect();
        let more = matching.next().is_some();
        let cursor = more.then(|| (skip + page.len()).to_string());
        Ok(ok(serde_json::json!({ "results": page, "cursor": cursor })))
    }

    fn do_cancel(&self, id: &str, plan: &Plan) -> Result<Response, Response> {
        let now = self.common.clock.now();
        let cutoff = chrono::Duration::from_std(self.config.cancellation_cutoff)
            .unwrap_or(chrono::Duration::hours(2));
        let mut book = self.book();
        let Some(&i) = book.reservation_index.get(id) else {
            return Err(not_found("Reservation not found."));
        };
        let r = &book.reservations[i];
        if r.status == ResStatus::Canceled {
            return Err(bad_request(MSG_ALREADY_CANCELLED));
        }
        let starts = (r.date.and_time(r.time)
            - chrono::Duration::minutes(i64::from(self.venues[r.venue].utc_offset_minutes)))
        .and_utc();
        let forced = matches!(&plan.action, Action::Refuse(c) if c == "PAST_CANCELLATION_CUTOFF");
        if forced || now + cutoff > starts {
            return Err(bad_request(MSG_PAST_CUTOFF));
        }
        let key = (r.venue, r.date, r.time);
        let party = r.party;
        let r = &mut book.reservations[i];
        r.status = ResStatus::Canceled;
        r.cancelled = Some(now);
        if let Some(slot) = book.slots.get_mut(&key) {
            slot.reserved = slot.reserved.saturating_sub(party);
        }
        drop(book);
        Ok(ok(Cancelled { reservation_id: id }))
    }
}

impl Simulated for SevenRooms {
    type Ledger = SevenRoomsLedger;

    fn common(&self) -> &Common {
        &self.common
    }

    fn ledger(&self, _touched: bool) -> SevenRoomsLedger {
        self.snapshot()
    }

    fn expire_tokens(&self) {
        self.expire_all_tokens();
    }
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, Response> {
    f.map(|Form(t)| t)
        .map_err(|e| bad_request(&format!("Invalid form body: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    q.map(|Query(t)| t)
        .map_err(|e| bad_request(&format!("Invalid query: {e}")))
}

async fn auth(
    State(sim): State<Arc<SevenRooms>>,
    body: Result<Form<AuthForm>, FormRejection>,
) -> Response {
    let plan = match sim.common.admit("auth", error).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let body = match form(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let creds = &sim.config.credentials;
    if body.client_id.as_deref() != Some(creds.client_id.as_str())
        || body.client_secret.as_deref() != Some(creds.client_secret.expose_secret())
    {
        return sim.unauthorized();
    }
    let now = sim.common.clock.now();
    let expiry = now
        + chrono::Duration::from_std(sim.config.token_lifetime)
            .unwrap_or(chrono::Duration::hours(24));
    let token = uuid::Uuid::new_v4().simple().to_string();
    sim.tokens.issue(token.clone(), now, expiry);
    sim.common.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let response = Json(serde_json::json!({
        "status": 200,
        "msg": "Authentication successful",
        "data": {
            "token": token,
            "token_expiration_datetime": expiry.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
        },
    }))
    .into_response();
    sim.common.finish(&plan, response, error).await
}

async fn venues(
    State(sim): State<Arc<SevenRooms>>,
    headers: HeaderMap,
    q: Result<Query<VenuesQuery>, QueryRejection>,
) -> Response {
    let plan = match sim.enter("venues", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(query(q).map(|q| {
        let group = q.venue_group_id.unwrap_or_default();
        let results: Vec<VenueView<'_>> = if group.is_empty() || group == VENUE_GROUP_ID {
            sim.venues
                .iter()
                .map(|v| VenueView {
                    id: v.id,
                    name: v.name,
                    venue_group_id: VENUE_GROUP_ID,
                    timezone: v.timezone,
                    currency_code: v.currency_code,
                })
                .collect()
        } else {
            Vec::new()
        };
        ok(serde_json::json!({ "results": results }))
    }));
    sim.common.finish(&plan, response, error).await
}

async fn availability(
    State(sim): State<Arc<SevenRooms>>,
    Path(venue_id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<AvailabilityQuery>, QueryRejection>,
) -> Response {
    let plan = match sim.enter("availability", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(
        sim.venue(&venue_id)
            .and_then(|v| sim.do_availability(v, &query(q)?)),
    );
    sim.common.finish(&plan, response, error).await
}

async fn hold(
    State(sim): State<Arc<SevenRooms>>,
    Path(venue_id): Path<String>,
    headers: HeaderMap,
    body: Result<Form<HoldForm>, FormRejection>,
) -> Response {
    let plan = match sim.enter("hold", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(
        sim.venue(&venue_id)
            .and_then(|v| sim.do_hold(v, &form(body)?, &plan)),
    );
    sim.common.finish(&plan, response, error).await
}

async fn release_hold(
    State(sim): State<Arc<SevenRooms>>,
    Path((venue_id, hold_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let plan = match sim.enter("release_hold", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(
        sim.venue(&venue_id)
            .and_then(|v| sim.do_release_hold(v, &hold_id)),
    );
    sim.common.finish(&plan, response, error).await
}

async fn book(
    State(sim): State<Arc<SevenRooms>>,
    Path(venue_id): Path<String>,
    headers: HeaderMap,
    body: Result<Form<BookForm>, FormRejection>,
) -> Response {
    let plan = match sim.enter("book", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(
        sim.venue(&venue_id)
            .and_then(|v| sim.do_book(v, &form(body)?, &plan)),
    );
    sim.common.finish(&plan, response, error).await
}

async fn get_reservation(
    State(sim): State<Arc<SevenRooms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let plan = match sim.enter("get", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(sim.do_get(&id));
    sim.common.finish(&plan, response, error).await
}

async fn search(
    State(sim): State<Arc<SevenRooms>>,
    headers: HeaderMap,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let plan = match sim.enter("search", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(query(q).and_then(|q| sim.do_search(&q)));
    sim.common.finish(&plan, response, error).await
}

async fn cancel(
    State(sim): State<Arc<SevenRooms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let plan = match sim.enter("cancel", &headers).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    let response = either(sim.do_cancel(&id, &plan));
    sim.common.finish(&plan, response, error).await
}
