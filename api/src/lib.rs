//! The operator and monitoring HTTP API (JSON; its OpenAPI 3.1 document, generated from the
//! handlers below, is served at `/openapi.json`).
//!
//! It reads sagas through the store's read port ([`SagaReader`]) and changes them only through
//! the operator module (`como_orchestrator::operator`), recording who acted and why; bookings
//! go in through `como_orchestrator::submit`, as every other way in. It never sees a backend, a
//! worker or a simulator: `como_app::App` hands it its ports (`.ci/layering` checks).
//!
//! Layout: [`auth`] (bearer JWTs, roles, the local signing key); [`error`] (every refusal as
//! `{"error": {"code", "message", "field"?}}` with its status); this file: the routes, their
//! handlers and the OpenAPI document.
//!
//! | route | roles | what |
//! |---|---|---|
//! | `GET /healthz` | none | the process is up |
//! | `GET /readyz` | none | the store and the queues answer, and this process's writes go through |
//! | `GET /openapi.json` | none | this API's OpenAPI document |
//! | `GET /metrics` | none | Prometheus text: sagas by status, queue depths, dead letters, and the roles this process runs |
//! | `POST /v1/bookings` | submitter | submit a booking (idempotent on its request id; 409 for a reused id) |
//! | `GET /v1/experiences` | submitter | the venues bookable with credits: SevenRooms details and prices (cached; stale when SevenRooms is down) |
//! | `GET /v1/experiences/{venue}/availability` | submitter | a venue's times on a date for a party, in the shifts sold for credits, with the price (cached for seconds; stale or 503 when SevenRooms is down) |
//! | `GET /v1/sagas` | any | sagas by status, step and age, newest first, by pages |
//! | `GET /v1/sagas/{id}` | any | one saga |
//! | `GET /v1/sagas/{id}/history` | any | its history, oldest first, by pages |
//! | `GET /v1/counts` | any | how many sagas in each status |
//! | `GET /v1/stuck` | any | sagas not finished and unchanged for a while, longest first |
//! | `GET /v1/latency` | any | how long each step took (percentiles) in the most recently started sagas |
//! | `POST /v1/sagas/{id}/actions` | operator | retry now, force compensation, cancel, resolve |
//! | `POST /v1/bulk/preview` | operator | the sagas a bulk retry or compensation would act on, and a token naming exactly them (changes nothing) |
//! | `POST /v1/bulk/execute` | operator | the previewed action on exactly the previewed sagas, rate-limited, each result read back |
//! | `GET /v1/dead-letters` | viewer, operator | the dead letters of a queue |
//! | `POST /v1/dead-letters/redrive` | operator | put dead letters back on their queue |
//! | `POST /v1/members/{member_no}/forget` | operator | erase one member's personal data from every saga of theirs (a data-protection request) |
//! | `GET /v1/audit` | viewer, operator | operator actions by actor, action and period, newest first |
//! | `GET /v1/me` | any | who the token names, and its roles |
//! | `GET /v1/overview` | any | counts, the last hour per minute, circuits, queues, dead letters |
//! | `GET /v1/live` | any | the overview again each time it is read (server-sent events) |
//! | `GET /dashboard/` | none | the web dashboard (static files; it reads the routes above with the caller's token) |

pub mod auth;
pub mod bulk;
pub mod dashboard;
pub mod error;
pub mod experiences;
pub mod live;
pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use como_engine::StatusKind;
use como_orchestrator::LiveCatalogue;
use como_orchestrator::operator::{self, OperatorAction, ResolvedOutcome};
use como_orchestrator::view::{HistoryView, SagaView};
use como_ports::{Backend, QueueName, SagaQuery, SagaReader, SagaSummary};
use como_schemas::{
    MemberNo, OperatorId, SagaId, StepName, Timestamp, VenueId, Worker, parse_booking_request,
};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::auth::{Caller, Role, Verifier};
pub use crate::error::ApiError;

/// What every handler holds.
#[derive(Clone)]
pub struct ApiState {
    /// For the operator module and intake: the only ways this API changes anything.
    ports: Backend,
    reader: Arc<dyn SagaReader>,
    verifier: Arc<Verifier>,
    catalogue: LiveCatalogue,
    /// Viewing experiences: the cache in front of SevenRooms, when this API reads one.
    experiences: Option<Arc<experiences::ExperienceCache>>,
    previews: Arc<bulk::PreviewSigner>,
    process_metrics: Option<metrics::ProcessMetrics>,
    pulse: live::Pulse,
    dashboard: dashboard::DashboardConfig,
    /// Cancelled when the server shuts down: open event streams end then, so that a graceful
    /// shutdown does not wait for a dashboard to close.
    closing: tokio_util::sync::CancellationToken,
}

impl ApiState {
    pub fn new(
        ports: Backend,
        verifier: Verifier,
        catalogue: impl Into<LiveCatalogue>,
    ) -> Result<ApiState, String> {
        Ok(ApiState {
            reader: ports.reader(),
            verifier: Arc::new(verifier),
            catalogue: catalogue.into(),
            experiences: None,
            previews: Arc::new(bulk::PreviewSigner::new()?),
            process_metrics: None,
            pulse: live::Pulse::new(ports.clone(), live::LiveConfig::default()),
            dashboard: dashboard::DashboardConfig::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            ports,
        })
    }

    /// How often the dashboard's overview is read (the default: every 2 s while watched).
    pub fn with_live(mut self, config: live::LiveConfig) -> ApiState {
        self.pulse = live::Pulse::new(self.ports.clone(), config);
        self
    }

    /// Serve `/v1/experiences` through `cache`.
    pub fn with_experiences(mut self, cache: experiences::ExperienceCache) -> ApiState {
        self.experiences = Some(Arc::new(cache));
        self
    }

    /// What the dashboard is told (its sign-in page).
    pub fn with_dashboard(mut self, config: dashboard::DashboardConfig) -> ApiState {
        self.dashboard = config;
        self
    }

    /// Adds what the serving process also runs to `/metrics`.
    pub fn with_process_metrics(mut self, metrics: metrics::ProcessMetrics) -> ApiState {
        self.process_metrics = Some(metrics);
        self
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
        .route("/v1/bookings", post(submit_booking))
        .route("/v1/experiences", get(experiences::list_experiences))
        .route(
            "/v1/experiences/{venue_id}/availability",
            get(experiences::venue_availability),
        )
        .route("/v1/sagas", get(list_sagas))
        .route("/v1/sagas/{id}", get(show_saga))
        .route("/v1/sagas/{id}/history", get(saga_history))
        .route("/v1/sagas/{id}/actions", post(act_on_saga))
        .route("/v1/counts", get(counts))
        .route("/v1/stuck", get(stuck))
        .route("/v1/latency", get(latency))
        .route("/v1/bulk/preview", post(bulk_preview))
        .route("/v1/bulk/execute", post(bulk_execute))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/redrive", post(redrive))
        .route("/v1/members/{member_no}/forget", post(forget_member))
        .route("/v1/audit", get(audit_list))
        .route("/v1/me", get(me))
        .route("/v1/overview", get(overview))
        .route("/v1/live", get(live_stream))
        .merge(dashboard::routes(state.dashboard.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn(dashboard::security_headers))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    state.pulse.start();
    let state = ApiState {
        closing: shutdown.clone(),
        ..state
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "como-saga operator API",
        description = "Sagas of \"pay with Como Credits, then book the experience\": read them, act on them, submit bookings."
    ),
    paths(
        healthz, readyz, metrics_text, submit_booking, list_sagas, show_saga, saga_history, act_on_saga,
        counts, stuck, latency, bulk_preview, bulk_execute, dead_letters, redrive, forget_member, audit_list,
        me, overview, live_stream, experiences::list_experiences, experiences::venue_availability
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, Health, BookingAccepted, SagaPage, HistoryPage,
        Counts, StatusCount, StepCountView, ActionRequest, ActionKind, Outcome, ActionResult, DeadLetters,
        DeadLetterItem, RedriveRequest, Redriven, ForgetRequest, MemberForgotten, bulk::BulkAction, bulk::PreviewRequest,
        bulk::PreviewItem, bulk::PreviewResult, bulk::ExecuteRequest, bulk::ExecuteItem,
        bulk::ExecuteResult, AuditPageView, AuditItem, Latency, StepLatency, SagaView, HistoryView,
        SagaSummary, como_engine::SagaStatus, Me, live::Overview, live::Minute, live::Circuit,
        live::QueueView, experiences::ExperienceList, experiences::Experience,
        experiences::AvailabilityView, experiences::ShiftTimes, experiences::TimeSlot,
        experiences::Freshness
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> Response {
    axum::Json(openapi()).into_response()
}

/// The caller, from the `Authorization` header; a missing or bad token is 401.
impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state
            .verifier
            .verify_header(header)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }
}

/// Query parameters; a malformed one is 400 naming it, as JSON like every refusal.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<ApiState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." {
                    "query".to_owned()
                } else {
                    field
                };
                ApiError::invalid(&field, &e.into_inner().to_string())
            })
    }
}

/// 403 unless the caller holds one of `roles`.
pub(crate) fn require(caller: &Caller, roles: &[Role]) -> Result<(), ApiError> {
    if caller.has_any(roles) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} may not do this: it needs the role {}",
        caller.id,
        roles
            .iter()
            .map(Role::as_str)
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

const READERS: &[Role] = &[Role::Viewer, Role::Operator, Role::Submitter];

/// Who may see a guest's contact details: the operator, who may have to call the guest about
/// a booking fixed by hand. A viewer (a wall dashboard, monitoring) and a submitter do not.
const PERSONAL_DATA: &[Role] = &[Role::Operator];

#[derive(Serialize, ToSchema)]
struct Health {
    status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The store and the queues answer, and this process's writes go through (not ready while
/// they fail: a full disk, a locked or read-only file, a throttled AWS; the answer says why).
#[utoipa::path(get, path = "/readyz", security(()), responses(
    (status = 200, body = Health), (status = 503, body = error::ErrorBody)
))]
async fn readyz(State(state): State<ApiState>) -> Result<axum::Json<Health>, ApiError> {
    if let Some(why) = como_ports::health::not_ready() {
        return Err(ApiError::unavailable(why));
    }
    state.reader.counts().await.map_err(ApiError::unavailable)?;
    // The queue's depth: an attribute read, where listing dead letters would receive (and on
    // SQS hide for a moment) the messages it looks at.
    state
        .ports
        .queue
        .depth(QueueName::Requests)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(axum::Json(Health {
        status: "ready".into(),
    }))
}

/// Prometheus text format: sagas by status, each queue's depth and dead letters, and the
/// counters and circuits of the roles this process runs.
#[utoipa::path(get, path = "/metrics", security(()), responses(
    (status = 200, content_type = "text/plain", body = String),
    (status = 503, body = error::ErrorBody),
))]
async fn metrics_text(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let text = metrics::scrape(&state).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
struct BookingAccepted {
    /// The saga that runs (or ran) the booking: derived from the request id.
    saga_id: String,
    /// `accepted` (queued now) or the status of the saga the same request started before.
    status: String,
}

/// Submit a booking request (the `BookingRequested` message). Idempotent on `request_id`: the
/// same request again answers with its saga; the id with other content is 409.
#[utoipa::path(post, path = "/v1/bookings", request_body(content = Object, description = "a BookingRequested (schemas/json/booking_requested.json)"), responses(
    (status = 202, body = BookingAccepted, description = "queued"),
    (status = 200, body = BookingAccepted, description = "the same request was submitted before"),
    (status = 400, body = error::ErrorBody, description = "not a valid request: names the field"),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
    (status = 409, body = error::ErrorBody, description = "the request id was used for another request"),
))]
async fn submit_booking(
    State(state): State<ApiState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Submitter])?;
    let today = chrono::Utc::now().date_naive();
    let request = parse_booking_request(&body, today)
        .map_err(|invalid| ApiError::invalid(&invalid.field, &invalid.reason))?;
    let saga_id = request.saga_id();
    // A repeat is answered with its saga before the price is checked: a request that started
    // its saga before the venue's price changed is still that booking, not a refusal.
    let existing = state.reader.get(saga_id).await.map_err(ApiError::store)?;
    if existing.is_none() {
        state
            .catalogue
            .current()
            .venues
            .check(&request)
            .map_err(|invalid| ApiError::invalid(&invalid.field, &invalid.reason))?;
    }
    if let Some(existing) = existing {
        let same = como_orchestrator::intake::same_request(
            state.ports.vault.as_ref(),
            &existing.value.request,
            &request,
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "cannot compare with the first request of this id now ({e})"
            ))
        })?;
        if same.is_err() {
            return Err(ApiError::conflict(format!(
                "request id {} was used for another booking (saga {saga_id}); use a new request id",
                request.request_id
            )));
        }
        let body = BookingAccepted {
            saga_id: saga_id.to_string(),
            status: existing.value.status.kind().as_str().to_owned(),
        };
        return Ok((StatusCode::OK, axum::Json(body)).into_response());
    }
    como_orchestrator::submit(&state.ports, &request)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let body = BookingAccepted {
        saga_id: saga_id.to_string(),
        status: "accepted".into(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only sagas in this status (`running`, `waiting_for_downstream`, `reconciling`,
    /// `compensating`, `confirmed`, `compensated`, `cancelled`, `needs_operator`).
    status: Option<String>,
    /// Only sagas at this step.
    step: Option<String>,
    /// Only sagas unchanged for at least this long (`30s`, `10m`, `2h`).
    older_than: Option<String>,
    /// Only this member's sagas (member number).
    member: Option<String>,
    /// Only sagas at this venue (venue id).
    venue: Option<String>,
    /// Only sagas started at or after this time (RFC 3339).
    started_from: Option<String>,
    /// Only sagas started before this time (RFC 3339).
    started_before: Option<String>,
    /// Only live sagas whose current command goes to this downstream: `memberson` or
    /// `sevenrooms`.
    downstream: Option<String>,
    /// Only live sagas retrying with errors: the current command failed at least once
    /// (each listed with its attempt and last error).
    retrying: Option<bool>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// At most this many (1 to 500; 50 when not given).
    limit: Option<usize>,
}

/// The filters of a list or a bulk preview, as given.
pub(crate) struct Filters<'a> {
    pub status: Option<&'a str>,
    pub step: Option<&'a str>,
    pub older_than: Option<&'a str>,
    pub member: Option<&'a str>,
    pub venue: Option<&'a str>,
    pub started_from: Option<&'a str>,
    pub started_before: Option<&'a str>,
    pub downstream: Option<&'a str>,
    pub retrying: Option<bool>,
}

impl Filters<'_> {
    /// The store query they make, or the first bad one named.
    pub(crate) fn query(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<SagaQuery, ApiError> {
        let step = self
            .step
            .map(|s| StepName::parse(s).map_err(|e| ApiError::invalid("step", &e.to_string())))
            .transpose()?;
        let member = self
            .member
            .map(|m| MemberNo::parse(m).map_err(|e| ApiError::invalid("member", &e.to_string())))
            .transpose()?;
        let venue = self
            .venue
            .map(|v| VenueId::parse(v).map_err(|e| ApiError::invalid("venue", &e.to_string())))
            .transpose()?;
        let started_from = time_of("started_from", self.started_from)?;
        let started_before = time_of("started_before", self.started_before)?;
        if let (Some(f), Some(b)) = (started_from, started_before)
            && f >= b
        {
            return Err(ApiError::invalid(
                "started_before",
                "started_before must be after started_from",
            ));
        }
        let downstream = self
            .downstream
            .map(|d| {
                Worker::ALL
                    .into_iter()
                    .map(|w| w.downstream())
                    .find(|name| name.eq_ignore_ascii_case(d))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "downstream",
                            &format!("{d:?} is not a downstream: memberson or sevenrooms"),
                        )
                    })
            })
            .transpose()?;
        Ok(SagaQuery {
            status: status_of(self.status)?,
            step,
            updated_before: older_than("older_than", self.older_than)?,
            member,
            venue,
            started_from,
            started_before,
            downstream,
            retrying: self.retrying.unwrap_or(false),
            personal_data: None,
            cursor,
            limit,
        })
    }
}

#[derive(Serialize, ToSchema)]
struct SagaPage {
    /// Saga summaries: id, request id, member, venue, status, step, started, updated, next
    /// wake-up, version; while live, the current command, its attempt, its downstream, the
    /// step's last error and whether it is retrying with errors.
    items: Vec<SagaSummary>,
    /// Give it back as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=500 => Ok(n),
        n => Err(ApiError::invalid(
            "limit",
            &format!("{n} is outside 1 to 500"),
        )),
    }
}

pub(crate) fn status_of(status: Option<&str>) -> Result<Option<StatusKind>, ApiError> {
    status
        .map(|s| {
            StatusKind::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    &format!(
                        "{s:?} is not a status; one of {}",
                        StatusKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                )
            })
        })
        .transpose()
}

pub(crate) fn older_than(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            let d =
                como_schemas::time::parse_duration(v).map_err(|e| ApiError::invalid(field, &e))?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let now = Timestamp::from_datetime(chrono::Utc::now()).as_millis();
            Ok(Timestamp::from_millis(
                now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
            ))
        })
        .transpose()
}

/// Sagas by status, step and age, most recently started first, a page at a time.
#[utoipa::path(get, path = "/v1/sagas", params(ListParams), responses(
    (status = 200, body = SagaPage), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn list_sagas(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<SagaPage>, ApiError> {
    require(&caller, READERS)?;
    let query = Filters {
        status: params.status.as_deref(),
        step: params.step.as_deref(),
        older_than: params.older_than.as_deref(),
        member: params.member.as_deref(),
        venue: params.venue.as_deref(),
        started_from: params.started_from.as_deref(),
        started_before: params.started_before.as_deref(),
        downstream: params.downstream.as_deref(),
        retrying: params.retrying,
    }
    .query(params.cursor.clone(), limit_of(params.limit)?)?;
    let page = state.reader.query(&query).await.map_err(|e| match e {
        como_ports::PortError::Invalid(why) => ApiError::invalid("cursor", &why),
        other => ApiError::store(other),
    })?;
    Ok(axum::Json(SagaPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

fn saga_id_of(id: &str) -> Result<SagaId, ApiError> {
    SagaId::parse(id).map_err(|e| ApiError::invalid("id", &e.to_string()))
}

/// One saga: its request (the guest's contact only for the operator role), status, steps with
/// what each produced (hold, receipt, reservation), deadlines, and what it waits for right now
/// (`waiting_on`: a reply to a command since when, a downstream that is down, a timer and why,
/// or a person).
#[utoipa::path(get, path = "/v1/sagas/{id}", params(("id" = SagaId, Path, description = "the saga id")), responses(
    (status = 200, body = SagaView, description = "the saga, with what it waits on now"),
    (status = 400, body = error::ErrorBody), (status = 401, body = error::ErrorBody),
    (status = 403, body = error::ErrorBody), (status = 404, body = error::ErrorBody),
))]
async fn show_saga(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<SagaView>, ApiError> {
    require(&caller, READERS)?;
    let id = saga_id_of(&id)?;
    let stored = state
        .reader
        .get(id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(format!("no saga has id {id}")))?;
    // The history says since when a command is out; it is served by its own paged route.
    let history = state.reader.history(id).await.map_err(ApiError::store)?;
    let mut view = SagaView::from(&stored.value);
    view.waiting_on = como_orchestrator::view::waiting_on(&stored.value, Some(&history));
    if caller.has_any(PERSONAL_DATA) {
        // Opened here, for this caller only; an erased guest has nothing to open.
        match state
            .ports
            .vault
            .open(id, &stored.value.request.guest)
            .await
        {
            Ok(Some(contact)) => view.request.with_guest(&contact),
            Ok(None) => {}
            Err(e) => tracing::warn!(saga_id = %id, error = %e, "cannot open the guest's contact"),
        }
    }
    Ok(axum::Json(view))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageParams {
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// At most this many (1 to 500; 50 when not given).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct HistoryPage {
    items: Vec<HistoryView>,
    /// Give it back as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
    /// Entries in the whole history.
    total: usize,
}

/// A saga's history, oldest first, a page at a time: no cap on its length.
#[utoipa::path(get, path = "/v1/sagas/{id}/history", params(("id" = SagaId, Path, description = "the saga id"), PageParams), responses(
    (status = 200, body = HistoryPage), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
    (status = 404, body = error::ErrorBody),
))]
async fn saga_history(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    require(&caller, READERS)?;
    let id = saga_id_of(&id)?;
    let limit = limit_of(params.limit)?;
    let from = match params.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("cursor", "not a cursor this API returned"))?,
    };
    let history = state.reader.history(id).await.map_err(ApiError::store)?;
    // A saga's first write records its start, so only an empty history needs the saga read to
    // tell "no such saga" apart.
    if history.is_empty()
        && state
            .reader
            .get(id)
            .await
            .map_err(ApiError::store)?
            .is_none()
    {
        return Err(ApiError::not_found(format!("no saga has id {id}")));
    }
    let total = history.len();
    let items: Vec<HistoryView> = history
        .iter()
        .skip(from)
        .take(limit)
        .map(HistoryView::from)
        .collect();
    let next = from + items.len();
    Ok(axum::Json(HistoryPage {
        items,
        next_cursor: (next < total).then(|| next.to_string()),
        total,
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusCount {
    status: String,
    count: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counts {
    /// Every status, with how many sagas are in it now.
    by_status: Vec<StatusCount>,
    total: u64,
    /// The sagas not finished, by status and the step they are at, most first.
    by_step: Vec<StepCountView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepCountView {
    status: String,
    step: String,
    count: u64,
}

/// How many sagas are in each status, and those not finished at each step: exact, kept as
/// sagas change (the embedded backend reads them from its counts, never from the sagas).
#[utoipa::path(get, path = "/v1/counts", responses(
    (status = 200, body = Counts), (status = 401, body = error::ErrorBody),
    (status = 403, body = error::ErrorBody),
))]
async fn counts(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<Counts>, ApiError> {
    require(&caller, READERS)?;
    live::read_counts(&state.ports)
        .await
        .map(axum::Json)
        .map_err(ApiError::unavailable)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StuckParams {
    /// Unchanged for at least this long (`0s`, `30s`, `10m`; `5m` when not given).
    older_than: Option<String>,
    /// Only sagas in these live statuses, comma-separated (`waiting_for_downstream,reconciling,needs_operator`);
    /// every live status when not given.
    status: Option<String>,
    /// Only sagas at this step.
    step: Option<String>,
    /// Only this member's sagas (member number).
    member: Option<String>,
    /// Only sagas at this venue (venue id).
    venue: Option<String>,
    /// Only sagas started at or after this time (RFC 3339).
    started_from: Option<String>,
    /// Only sagas started before this time (RFC 3339).
    started_before: Option<String>,
    /// Only sagas whose current command goes to this downstream: `memberson` or `sevenrooms`.
    downstream: Option<String>,
    /// Only sagas retrying with errors.
    retrying: Option<bool>,
    /// At most this many (1 to 500; 50 when not given).
    limit: Option<usize>,
}

/// Sagas not finished and unchanged for a while, the longest unchanged first, narrowed by
/// the list's filters.
#[utoipa::path(get, path = "/v1/stuck", params(StuckParams), responses(
    (status = 200, body = SagaPage), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn stuck(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<StuckParams>,
) -> Result<axum::Json<SagaPage>, ApiError> {
    require(&caller, READERS)?;
    let limit = limit_of(params.limit)?;
    let filter = Filters {
        status: None,
        step: params.step.as_deref(),
        older_than: Some(params.older_than.as_deref().unwrap_or("5m")),
        member: params.member.as_deref(),
        venue: params.venue.as_deref(),
        started_from: params.started_from.as_deref(),
        started_before: params.started_before.as_deref(),
        downstream: params.downstream.as_deref(),
        retrying: params.retrying,
    }
    .query(None, limit)?;
    let statuses = live_statuses_of(params.status.as_deref())?;
    let mut items = Vec::new();
    for status in statuses {
        let filter = SagaQuery {
            status,
            ..filter.clone()
        };
        items.extend(
            state
                .reader
                .stuck(&filter, limit)
                .await
                .map_err(ApiError::store)?,
        );
    }
    items.sort_by_key(|s| (s.updated_at, s.saga_id));
    items.truncate(limit);
    Ok(axum::Json(SagaPage {
        items,
        next_cursor: None,
    }))
}

/// A comma-separated list of live statuses: each as `Some`, or one `None` (every live status)
/// when not given.
fn live_statuses_of(list: Option<&str>) -> Result<Vec<Option<StatusKind>>, ApiError> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(vec![None]);
    };
    let mut statuses = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(status) = status_of(Some(name))? else {
            continue;
        };
        if status.is_terminal() {
            return Err(ApiError::invalid(
                "status",
                &format!("{name:?} is a finished status: nothing in it is stuck"),
            ));
        }
        if !statuses.contains(&Some(status)) {
            statuses.push(Some(status));
        }
    }
    Ok(statuses)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ActionKind {
    RetryNow,
    ForceCompensation,
    Cancel,
    Resolve,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Confirmed,
    Compensated,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    action: ActionKind,
    /// Why (kept in the saga's history with who acted); required.
    reason: String,
    /// `resolve` only: the outcome declared.
    outcome: Option<Outcome>,
    /// The same id applied twice changes the saga once; generated when not given.
    action_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ActionResult {
    saga_id: String,
    action_id: String,
    action: String,
    /// The saga's status after the action, read back from the store.
    status: String,
    version: u64,
    /// The saga had applied this action id before: nothing changed this time.
    repeated: bool,
}

/// Act on a saga: retry now, force compensation, cancel (compensating what took effect), or
/// resolve by hand with an outcome. Recorded in its history with who and why.
#[utoipa::path(post, path = "/v1/sagas/{id}/actions", params(("id" = SagaId, Path, description = "the saga id")), request_body = ActionRequest, responses(
    (status = 200, body = ActionResult), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
    (status = 404, body = error::ErrorBody),
    (status = 409, body = error::ErrorBody, description = "the engine refused the action now, or the saga kept changing"),
    (status = 503, body = error::ErrorBody),
))]
async fn act_on_saga(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<ActionResult>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let id = saga_id_of(&id)?;
    let request: ActionRequest = error::parse_body(&body)?;
    let action = match (request.action, request.outcome) {
        (ActionKind::Resolve, Some(outcome)) => OperatorAction::Resolve {
            outcome: match outcome {
                Outcome::Confirmed => ResolvedOutcome::Confirmed,
                Outcome::Compensated => ResolvedOutcome::Compensated,
            },
        },
        (ActionKind::Resolve, None) => {
            return Err(ApiError::invalid(
                "outcome",
                "resolve needs the outcome: confirmed or compensated",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "outcome",
                "only resolve takes an outcome",
            ));
        }
        (ActionKind::RetryNow, None) => OperatorAction::RetryNow,
        (ActionKind::ForceCompensation, None) => OperatorAction::ForceCompensation,
        (ActionKind::Cancel, None) => OperatorAction::Cancel,
    };
    let who = OperatorId::parse(&caller.id)
        .map_err(|e| ApiError::forbidden(format!("the token's user cannot act: {e}")))?;
    let done = operator::act(
        &state.ports,
        id,
        action,
        &who,
        &request.reason,
        request.action_id.as_deref(),
    )
    .await
    .map_err(ApiError::from)?;
    Ok(axum::Json(ActionResult {
        saga_id: done.saga_id.to_string(),
        action_id: done.action_id,
        action: done.action.as_str().to_owned(),
        status: done.status.kind().as_str().to_owned(),
        version: done.version,
        repeated: done.repeated,
    }))
}

/// A bulk retry or compensation, step 1: the sagas it would act on now, and a token naming
/// exactly them. Changes nothing.
#[utoipa::path(post, path = "/v1/bulk/preview", request_body = bulk::PreviewRequest, responses(
    (status = 200, body = bulk::PreviewResult), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn bulk_preview(
    State(state): State<ApiState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<axum::Json<bulk::PreviewResult>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let request = error::parse_body(&body)?;
    Ok(axum::Json(bulk::preview(&state, &caller, request).await?))
}

/// A bulk retry or compensation, step 2: the previewed action on exactly the previewed sagas
/// (or a part of them), rate-limited, each saga's result read back from the store.
#[utoipa::path(post, path = "/v1/bulk/execute", request_body = bulk::ExecuteRequest, responses(
    (status = 200, body = bulk::ExecuteResult), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn bulk_execute(
    State(state): State<ApiState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<axum::Json<bulk::ExecuteResult>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let request = error::parse_body(&body)?;
    Ok(axum::Json(bulk::execute(&state, &caller, request).await?))
}

fn queue_of(name: &str) -> Result<QueueName, ApiError> {
    QueueName::parse(name).ok_or_else(|| {
        let all: Vec<&str> = QueueName::ALL.iter().map(|q| q.as_str()).collect();
        ApiError::invalid(
            "queue",
            &format!("{name:?} is not a queue: {}", all.join(", ")),
        )
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadLetterParams {
    /// `requests`, `replies`, `commands-crm`, `commands-sevenrooms` or `notifications`.
    queue: String,
    /// At most this many (1 to 500; 50 when not given).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct DeadLetterItem {
    message_id: String,
    queue: String,
    reason: String,
    receive_count: u32,
    dead_lettered_at: String,
    /// The message as it was sent; for a reader without the operator role, with any guest
    /// that is not sealed withheld.
    body: String,
}

#[derive(Serialize, ToSchema)]
struct DeadLetters {
    items: Vec<DeadLetterItem>,
}

/// The dead letters of a queue, with why each was set aside.
#[utoipa::path(get, path = "/v1/dead-letters", params(DeadLetterParams), responses(
    (status = 200, body = DeadLetters), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn dead_letters(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<DeadLetterParams>,
) -> Result<axum::Json<DeadLetters>, ApiError> {
    require(&caller, &[Role::Viewer, Role::Operator])?;
    let queue = queue_of(&params.queue)?;
    let personal = caller.has_any(PERSONAL_DATA);
    let letters = state
        .ports
        .queue
        .dead_letters(queue, limit_of(params.limit)?)
        .await
        .map_err(ApiError::store)?;
    Ok(axum::Json(DeadLetters {
        items: letters
            .into_iter()
            .map(|d| DeadLetterItem {
                message_id: d.message_id,
                queue: params.queue.clone(),
                reason: d.reason,
                receive_count: d.receive_count,
                dead_lettered_at: d.dead_lettered_at.to_string(),
                // A guest in the clear (a dead letter from before sealing, or one the queue
                // set aside by itself) only for a reader who may see personal data.
                body: if personal {
                    d.body
                } else {
                    como_orchestrator::intake::without_personal_data(&d.body)
                },
            })
            .collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// `requests`, `replies`, `commands-crm`, `commands-sevenrooms` or `notifications`.
    queue: String,
    /// Only these dead letters; all of the queue's when not given.
    message_ids: Option<Vec<String>>,
    /// Why (logged with who acted); required.
    reason: String,
}

#[derive(Serialize, ToSchema)]
struct Redriven {
    queue: String,
    redriven: usize,
}

/// Put dead letters back on their queue: all of a queue's, or those named.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", request_body = RedriveRequest, responses(
    (status = 200, body = Redriven), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn redrive(
    State(state): State<ApiState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<axum::Json<Redriven>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let request: RedriveRequest = error::parse_body(&body)?;
    if request.reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "say why you redrive"));
    }
    let queue = queue_of(&request.queue)?;
    let who = OperatorId::parse(&caller.id)
        .map_err(|e| ApiError::forbidden(format!("the token's user cannot act: {e}")))?;
    let redriven = operator::redrive(
        &state.ports,
        queue,
        request.message_ids.clone(),
        &who,
        &request.reason,
    )
    .await?;
    Ok(axum::Json(Redriven {
        queue: request.queue,
        redriven,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ForgetRequest {
    /// Why (the data-protection request it answers); kept in the audit list. Required.
    reason: String,
}

/// What forgetting a member did (`done`), or that it goes on (`done: false`, 202: the audit
/// entry with `action_id` says how it ended).
#[derive(Serialize, ToSchema)]
struct MemberForgotten {
    member_no: String,
    /// The audit list's entry for this erasure.
    action_id: String,
    /// Whether it has ended; when not, the counts are not known yet.
    done: bool,
    /// Sagas whose guest contact was erased now.
    erased: u64,
    /// Running sagas whose guest contact is erased when they finish.
    when_done: u64,
    /// Sagas with nothing left to erase (erased before).
    already: u64,
    /// Dead letters (refused requests, SevenRooms commands set aside) whose guest was erased.
    dead_letters: u64,
    /// Whether the store's older copies (the embedded backend's WAL) were rewritten too.
    compacted: bool,
}

/// Erase one member's personal data (the guest's name, phone and e-mail) from every saga of
/// theirs (finished sagas at once, running ones when they finish) and from the dead letters
/// that name them. The money facts and the history stay. Recorded in the audit list and in
/// each saga's history; repeating it erases what is left.
#[utoipa::path(post, path = "/v1/members/{member_no}/forget", request_body = ForgetRequest, params(("member_no" = String, Path, description = "the Memberson member number")), responses(
    (status = 200, body = MemberForgotten, description = "erased"),
    (status = 202, body = MemberForgotten, description = "still erasing: the audit entry `action_id` says how it ended"),
    (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
    (status = 503, body = error::ErrorBody),
))]
async fn forget_member(
    State(state): State<ApiState>,
    caller: Caller,
    Path(member_no): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<MemberForgotten>), ApiError> {
    require(&caller, &[Role::Operator])?;
    let member = MemberNo::parse(member_no).map_err(|e| ApiError::invalid("member_no", &e))?;
    let request: ForgetRequest = error::parse_body(&body)?;
    if request.reason.trim().is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "say why you erase (the data-protection request it answers)",
        ));
    }
    let who = OperatorId::parse(&caller.id)
        .map_err(|e| ApiError::forbidden(format!("the token's user cannot act: {e}")))?;
    // A member's sagas are found by reading the store (on AWS every saga item, which a large
    // table makes slow): the erasure runs on its own, and the answer waits for it a while.
    // Past that, 202 with the action id; the audit list says how it ended.
    let action_id = uuid::Uuid::new_v4().to_string();
    let ports = state.ports.clone();
    let (m, reason, id) = (member.clone(), request.reason.clone(), action_id.clone());
    let work =
        tokio::spawn(
            async move { operator::forget_member(&ports, &m, &who, &reason, Some(id)).await },
        );
    match tokio::time::timeout(FORGET_WAIT, work).await {
        Ok(joined) => {
            let done =
                joined.map_err(|e| ApiError::internal(format!("the erasure stopped: {e}")))??;
            Ok((
                StatusCode::OK,
                axum::Json(MemberForgotten {
                    member_no: member.to_string(),
                    action_id,
                    done: true,
                    erased: done.report.erased,
                    when_done: done.report.when_done,
                    already: done.report.already,
                    dead_letters: done.report.dead_letters,
                    compacted: done.compacted,
                }),
            ))
        }
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(MemberForgotten {
                member_no: member.to_string(),
                action_id,
                done: false,
                erased: 0,
                when_done: 0,
                already: 0,
                dead_letters: 0,
                compacted: false,
            }),
        )),
    }
}

/// How long `POST /v1/members/{member_no}/forget` waits for the erasure before it answers
/// 202 (well inside a load balancer's idle timeout).
const FORGET_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Only this person's actions (the token's user).
    actor: Option<String>,
    /// Only this action: `retry_now`, `force_compensation`, `cancel`, `resolve_confirmed`,
    /// `resolve_compensated`, `redrive` or `forget_member`.
    action: Option<String>,
    /// At or after this time (RFC 3339).
    from: Option<String>,
    /// Before this time (RFC 3339).
    until: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// At most this many (1 to 500; 50 when not given).
    limit: Option<usize>,
}

/// One operator action.
#[derive(Serialize, ToSchema)]
struct AuditItem {
    /// When it was asked for (RFC 3339).
    at: String,
    actor: String,
    action: String,
    /// `saga/<id>` or `dead-letters/<queue>[/<message ids>]`.
    target: String,
    reason: String,
    /// Shared by the sagas of one bulk action.
    action_id: String,
    /// `pending` (not known to have finished), `applied`, `repeated`, `refused` or `failed`.
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AuditPageView {
    items: Vec<AuditItem>,
    /// Give it back as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

const AUDIT_ACTIONS: [&str; 7] = [
    "retry_now",
    "force_compensation",
    "cancel",
    "resolve_confirmed",
    "resolve_compensated",
    "redrive",
    "forget_member",
];

fn time_of(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| Timestamp::parse(v).map_err(|e| ApiError::invalid(field, &e)))
        .transpose()
}

/// Operator actions (single, bulk, redrive) with who asked, why, when and how each ended,
/// newest first.
#[utoipa::path(get, path = "/v1/audit", params(AuditParams), responses(
    (status = 200, body = AuditPageView), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn audit_list(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<axum::Json<AuditPageView>, ApiError> {
    require(&caller, &[Role::Viewer, Role::Operator])?;
    if let Some(action) = &params.action
        && !AUDIT_ACTIONS.contains(&action.as_str())
    {
        return Err(ApiError::invalid(
            "action",
            &format!("{action:?} is not an action: {}", AUDIT_ACTIONS.join(", ")),
        ));
    }
    let from = time_of("from", params.from.as_deref())?;
    let until = time_of("until", params.until.as_deref())?;
    if let (Some(f), Some(u)) = (from, until)
        && f >= u
    {
        return Err(ApiError::invalid("until", "until must be after from"));
    }
    let page = state
        .ports
        .audit
        .list(&como_ports::AuditQuery {
            actor: params.actor.clone(),
            action: params.action.clone(),
            from,
            until,
            cursor: params.cursor.clone(),
            limit: limit_of(params.limit)?,
        })
        .await
        .map_err(|e| match e {
            como_ports::PortError::Invalid(why) => ApiError::invalid("cursor", &why),
            other => ApiError::store(other),
        })?;
    Ok(axum::Json(AuditPageView {
        items: page
            .items
            .into_iter()
            .map(|e| AuditItem {
                at: e.at.to_string(),
                actor: e.actor,
                action: e.action,
                target: e.target,
                reason: e.reason,
                action_id: e.action_id,
                outcome: e.outcome.as_str().to_owned(),
                detail: e.detail,
                finished_at: e.finished_at.map(|t| t.to_string()),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LatencyParams {
    /// How many of the most recently started sagas to measure (1 to 1000; 200 when not given).
    sample: Option<usize>,
}

/// One step's latency over the sample.
#[derive(Serialize, ToSchema)]
struct StepLatency {
    step: String,
    /// `action` (the step going forward) or `compensation` (undoing it).
    command: String,
    /// Sagas of the sample in which the step finished.
    count: usize,
    p50_ms: u64,
    p90_ms: u64,
    p99_ms: u64,
    max_ms: u64,
    /// Of those, how many needed more than one attempt.
    retried: usize,
}

#[derive(Serialize, ToSchema)]
struct Latency {
    /// Sagas read (the most recently started, of any status).
    sampled_sagas: usize,
    /// When the oldest and the newest of them started.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    /// From a step's first command to the step's end, retries and waits included, in the
    /// saga's order of steps.
    steps: Vec<StepLatency>,
}

/// The value at `q` (0 to 1) of sorted `values`, by nearest rank.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How long each step took, as percentiles over the most recently started sagas, read from
/// their histories (each request reads `sample` histories).
#[utoipa::path(get, path = "/v1/latency", params(LatencyParams), responses(
    (status = 200, body = Latency), (status = 400, body = error::ErrorBody),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
))]
async fn latency(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<LatencyParams>,
) -> Result<axum::Json<Latency>, ApiError> {
    require(&caller, READERS)?;
    let sample = match params.sample.unwrap_or(200) {
        n @ 1..=1000 => n,
        n => {
            return Err(ApiError::invalid(
                "sample",
                &format!("{n} is outside 1 to 1000"),
            ));
        }
    };
    let page = state
        .reader
        .query(&SagaQuery {
            limit: sample,
            ..SagaQuery::default()
        })
        .await
        .map_err(ApiError::store)?;
    let mut by_step: Vec<(
        (como_schemas::StepName, como_schemas::CommandKind),
        Vec<u64>,
        usize,
    )> = Vec::new();
    for summary in &page.items {
        let history = state
            .reader
            .history(summary.saga_id)
            .await
            .map_err(ApiError::store)?;
        for d in como_orchestrator::view::step_durations(&history) {
            let key = (d.step, d.command);
            let slot = match by_step.iter().position(|(k, _, _)| *k == key) {
                Some(i) => i,
                None => {
                    by_step.push((key, Vec::new(), 0));
                    by_step.len() - 1
                }
            };
            by_step[slot].1.push(d.millis);
            if d.attempts > 1 {
                by_step[slot].2 += 1;
            }
        }
    }
    // Forward steps in the saga's order, then the compensations.
    by_step.sort_by_key(|((_, kind), _, _)| *kind == como_schemas::CommandKind::Compensation);
    let steps = by_step
        .into_iter()
        .map(|((step, kind), mut ms, retried)| {
            ms.sort_unstable();
            StepLatency {
                step: step.to_string(),
                command: kind.as_str().to_owned(),
                count: ms.len(),
                p50_ms: percentile(&ms, 0.50),
                p90_ms: percentile(&ms, 0.90),
                p99_ms: percentile(&ms, 0.99),
                max_ms: ms.last().copied().unwrap_or(0),
                retried,
            }
        })
        .collect();
    Ok(axum::Json(Latency {
        sampled_sagas: page.items.len(),
        from: page.items.last().map(|s| s.started_at.to_string()),
        until: page.items.first().map(|s| s.started_at.to_string()),
        steps,
    }))
}

#[cfg(test)]
mod document_tests {
    //! The OpenAPI document describes the saga routes' answers by their types, and what those
    //! types serialize to conforms to it.

    use chrono::NaiveDate;
    use como_engine::{Input, OperatorAction, OperatorCommand, ResolvedOutcome, como, transition};
    use como_ports::SagaSummary;
    use como_schemas::{CommandKind, OperatorId, Timestamp, WorkerCommand, examples};
    use serde_json::{Value, json};

    use super::*;

    fn document() -> Value {
        serde_json::to_value(openapi()).unwrap()
    }

    /// The schema `reference` (`#/components/schemas/X`) names.
    fn component<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
        let name = reference
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("not a component reference: {reference}"));
        &doc["components"]["schemas"][name]
    }

    fn properties(schema: &Value) -> Vec<&str> {
        schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_saga_routes_answer_their_types_not_objects() {
        let doc = document();
        let ok = |path: &str| {
            doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"]
                .clone()
        };

        let id = &doc["paths"]["/v1/sagas/{id}"]["get"]["parameters"][0];
        assert_eq!(id["name"], "id");
        assert_eq!(component(&doc, &id["schema"]["$ref"])["format"], "uuid");

        let saga = component(&doc, &ok("/v1/sagas/{id}"));
        let props = properties(saga);
        for p in [
            "saga_id",
            "status",
            "waiting_on",
            "steps",
            "request",
            "deadline",
            "transitions",
        ] {
            assert!(props.contains(&p), "SagaView lacks {p}: {props:?}");
        }
        // Optional fields are absent rather than null.
        assert_eq!(
            saga["properties"]["waiting_on"]["$ref"],
            "#/components/schemas/WaitingOn"
        );
        assert!(
            !saga["required"]
                .as_array()
                .unwrap()
                .contains(&json!("waiting_on"))
        );
        // Tagged enums: one object per variant, the tag naming it.
        let status = component(&doc, &saga["properties"]["status"]["$ref"]);
        let tags: Vec<&Value> = status["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| &v["properties"]["status"]["enum"][0])
            .collect();
        assert_eq!(tags.len(), StatusKind::ALL.len());
        for kind in StatusKind::ALL {
            assert!(tags.contains(&&json!(kind.as_str())), "{kind:?}");
        }

        for page in ["/v1/sagas", "/v1/stuck"] {
            let page = component(&doc, &ok(page));
            let summary = component(&doc, &page["properties"]["items"]["items"]["$ref"]);
            let props = properties(summary);
            for p in [
                "saga_id",
                "status",
                "step",
                "retrying",
                "attempt",
                "last_error",
            ] {
                assert!(props.contains(&p), "SagaSummary lacks {p}: {props:?}");
            }
            let status = component(&doc, &summary["properties"]["status"]["$ref"]);
            assert_eq!(
                status["oneOf"].as_array().unwrap().len(),
                StatusKind::ALL.len()
            );
        }

        let history = component(&doc, &ok("/v1/sagas/{id}/history"));
        let entry = component(&doc, &history["properties"]["items"]["items"]["$ref"]);
        let props = properties(entry);
        for p in [
            "at", "kind", "status", "step", "command", "code", "operator",
        ] {
            assert!(props.contains(&p), "HistoryView lacks {p}: {props:?}");
        }
        let kinds = component(&doc, &entry["properties"]["kind"]["$ref"]);
        assert!(
            kinds["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("command_sent"))
        );
    }

    /// An object schema that says nothing of its shape, anywhere in a response.
    fn shapeless<'a>(doc: &'a Value, schema: &'a Value, seen: &mut Vec<&'a str>) -> bool {
        if let Some(reference) = schema["$ref"].as_str() {
            if seen.contains(&reference) {
                return false;
            }
            seen.push(reference);
            return shapeless(doc, component(doc, &schema["$ref"]), seen);
        }
        let object = schema["type"] == "object";
        let described = [
            "properties",
            "oneOf",
            "anyOf",
            "allOf",
            "additionalProperties",
        ]
        .iter()
        .any(|k| schema.get(k).is_some());
        if object && !described || schema.as_object().is_some_and(|o| o.is_empty()) {
            return true;
        }
        let mut children: Vec<&Value> = Vec::new();
        for k in ["oneOf", "anyOf", "allOf"] {
            children.extend(schema[k].as_array().into_iter().flatten());
        }
        children.extend(
            schema["properties"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values()),
        );
        children.extend(schema.get("items"));
        children.into_iter().any(|c| shapeless(doc, c, seen))
    }

    #[test]
    fn no_response_is_a_bare_object() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (code, response) in op["responses"].as_object().unwrap() {
                    for content in response["content"]
                        .as_object()
                        .into_iter()
                        .flat_map(|c| c.values())
                    {
                        assert!(
                            !shapeless(&doc, &content["schema"], &mut Vec::new()),
                            "{method} {path} {code} answers an object of no described shape"
                        );
                    }
                }
            }
        }
    }

    /// The values' schemas in the document say what their JSON Schemas (schemas/json, from
    /// schemars) say: the same type, format, pattern and values.
    #[test]
    fn values_are_described_as_their_json_schemas_describe_them() {
        fn same<T: schemars::JsonSchema + utoipa::ToSchema>(doc: &Value) {
            let name = <T as utoipa::ToSchema>::name();
            let ours = &doc["components"]["schemas"][name.as_ref()];
            let theirs = serde_json::to_value(schemars::schema_for!(T)).unwrap();
            // A string enum: the same values (schemars writes one `const` per documented
            // variant).
            if let Some(values) = ours["enum"].as_array() {
                let theirs: Vec<&Value> = match theirs["enum"].as_array() {
                    Some(values) => values.iter().collect(),
                    None => theirs["oneOf"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| &v["const"])
                        .collect(),
                };
                assert_eq!(values.iter().collect::<Vec<_>>(), theirs, "{name}");
                return;
            }
            // OpenAPI gives integers a width (int32, int64) that JSON Schema does not.
            let keys: &[&str] = if theirs["type"] == "integer" {
                &["type"]
            } else {
                &["type", "format", "pattern"]
            };
            for key in keys {
                assert_eq!(ours.get(key), theirs.get(key), "{name}: {key}");
            }
        }
        let doc = document();
        same::<como_schemas::RequestId>(&doc);
        same::<como_schemas::MemberNo>(&doc);
        same::<como_schemas::VenueId>(&doc);
        same::<como_schemas::StepName>(&doc);
        same::<como_schemas::OperatorId>(&doc);
        same::<como_schemas::SagaId>(&doc);
        same::<como_schemas::Timestamp>(&doc);
        same::<como_schemas::SlotTime>(&doc);
        same::<como_schemas::Credits>(&doc);
        same::<como_schemas::PartySize>(&doc);
        same::<CommandKind>(&doc);
        same::<como_schemas::events::NeedsOperatorReason>(&doc);
        same::<como_schemas::events::CompensatedAs>(&doc);
    }

    /// One saga driven through the engine by a fixed pseudo-random walk.
    struct Walk {
        def: como_engine::SagaDefinition,
        state: como_engine::SagaState,
        now: Timestamp,
        commands: Vec<WorkerCommand>,
        history: Vec<como_engine::HistoryEntry>,
        seed: u64,
    }

    impl Walk {
        fn start(n: u64) -> Walk {
            let def = como::booking_v1();
            let now = Timestamp::from_millis(1_790_000_000_000);
            let request = examples::booking_request(
                &format!("document-{n}"),
                NaiveDate::from_ymd_opt(2026, 12, 24).unwrap(),
            );
            let d = transition(&def, None, &Input::Start { request }, now).unwrap();
            Walk {
                def,
                state: d.state,
                now,
                commands: d.commands,
                history: d.history,
                seed: n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            }
        }

        fn next(&mut self, below: u64) -> u64 {
            // xorshift64
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed % below
        }

        /// One input, chosen by the walk; false when the engine took none (it refused, or it
        /// changed nothing).
        fn step(&mut self) -> bool {
            let input = match self.next(10) {
                0..=5 => {
                    let Some(cmd) = self.commands.last().cloned() else {
                        return false;
                    };
                    self.now = self.now.plus_ms(250);
                    let outcome = match self.next(4) {
                        0 | 1 => examples::success(&cmd),
                        _ => {
                            let all = examples::all_outcomes();
                            let pick = self.next(all.len() as u64) as usize;
                            all[pick].clone()
                        }
                    };
                    let mut reply = examples::reply(&cmd, outcome);
                    reply.replied_at = self.now;
                    Input::Reply { reply }
                }
                6 | 7 => {
                    let Some(at) = self.state.wake_at else {
                        return false;
                    };
                    self.now = at.max(self.now);
                    Input::Timer
                }
                _ => {
                    let action = match self.next(5) {
                        0 => OperatorAction::RetryNow,
                        1 => OperatorAction::ForceCompensation,
                        2 => OperatorAction::Cancel,
                        3 => OperatorAction::Resolve {
                            outcome: ResolvedOutcome::Confirmed,
                        },
                        _ => OperatorAction::Resolve {
                            outcome: ResolvedOutcome::Compensated,
                        },
                    };
                    Input::Operator {
                        command: OperatorCommand {
                            action_id: format!("walk-{}", self.history.len()),
                            operator: OperatorId::parse("ops@example.com").unwrap(),
                            reason: "the walk".into(),
                            action,
                        },
                    }
                }
            };
            match transition(&self.def, Some(&self.state), &input, self.now) {
                Ok(d) if d.changed => {
                    self.state = d.state;
                    self.commands.extend(d.commands);
                    self.history.extend(d.history);
                    true
                }
                _ => false,
            }
        }
    }

    fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
        let schema = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
    }

    fn assert_conforms(validator: &jsonschema::Validator, name: &str, instance: &Value) {
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} refused {instance:#}: {errors:#?}"
        );
    }

    #[test]
    fn views_and_summaries_of_sagas_in_every_state_conform_to_the_document() {
        let doc = document();
        let saga = validator(&doc, "SagaView");
        let summary = validator(&doc, "SagaSummary");
        let page = validator(&doc, "HistoryPage");
        let mut statuses = std::collections::BTreeSet::new();
        let mut waits = std::collections::BTreeSet::new();
        for n in 0..120 {
            let mut walk = Walk::start(n);
            for _ in 0..40 {
                walk.step();
                let view = serde_json::to_value(SagaView::of(&walk.state, &walk.history)).unwrap();
                assert_conforms(&saga, "SagaView", &view);
                statuses.insert(view["status"]["status"].as_str().unwrap().to_owned());
                if let Some(on) = view["waiting_on"]["on"].as_str() {
                    waits.insert(on.to_owned());
                }
                let bare = serde_json::to_value(SagaView::from(&walk.state)).unwrap();
                assert_conforms(&saga, "SagaView", &bare);
                let listed = serde_json::to_value(SagaSummary::of(&walk.state, 3)).unwrap();
                assert_conforms(&summary, "SagaSummary", &listed);
            }
            let items: Vec<HistoryView> = walk.history.iter().map(HistoryView::from).collect();
            let history = serde_json::to_value(HistoryPage {
                total: items.len(),
                items,
                next_cursor: None,
            })
            .unwrap();
            assert_conforms(&page, "HistoryPage", &history);
        }
        // The walks reach every status and every kind of wait.
        assert_eq!(statuses.len(), StatusKind::ALL.len(), "{statuses:?}");
        assert_eq!(waits.len(), 4, "{waits:?}");
        // And the schemas bite: a field of another shape, a missing one, an unknown tag.
        let good = serde_json::to_value(SagaView::from(&Walk::start(0).state)).unwrap();
        for (pointer, bad) in [
            ("/saga_id", json!("not-a-uuid")),
            ("/started_at", json!(1_790_000_000_000_i64)),
            ("/status", json!({"status": "running"})),
            (
                "/status",
                json!({"status": "paused", "step": "check_credits"}),
            ),
            ("/waiting_on/on", json!("nothing")),
            ("/steps/0/effect", json!("perhaps")),
            ("/request/time", json!("25:00")),
        ] {
            let mut view = good.clone();
            *view.pointer_mut(pointer).unwrap() = bad;
            assert!(
                !saga.is_valid(&view),
                "SagaView took {pointer} = {}",
                view.pointer(pointer).unwrap()
            );
        }
        let mut listed = serde_json::to_value(SagaSummary::of(&Walk::start(0).state, 1)).unwrap();
        listed["status"] = json!({"status": "compensating", "step": "hold_slot"});
        assert!(
            !summary.is_valid(&listed),
            "SagaSummary took a status without its attempt"
        );
    }
}

/// Who the token names.
#[derive(Serialize, ToSchema)]
struct Me {
    id: String,
    /// `viewer`, `operator`, `submitter`.
    roles: Vec<String>,
    /// When the token expires (seconds since the epoch).
    expires_at: u64,
}

/// Who the token names, and its roles: what a dashboard shows and offers.
#[utoipa::path(get, path = "/v1/me", responses(
    (status = 200, body = Me), (status = 401, body = error::ErrorBody),
))]
async fn me(caller: Caller) -> axum::Json<Me> {
    axum::Json(Me {
        roles: caller.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        id: caller.id,
        expires_at: caller.expires_at,
    })
}

/// Counts by status and by step, sagas started, finished and compensated per minute over the
/// last hour this process watched, each downstream's circuit, queue depths with the oldest
/// message's age, and dead letters.
#[utoipa::path(get, path = "/v1/overview", responses(
    (status = 200, body = live::Overview), (status = 401, body = error::ErrorBody),
    (status = 403, body = error::ErrorBody), (status = 503, body = error::ErrorBody),
))]
async fn overview(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<live::Overview>, ApiError> {
    require(&caller, READERS)?;
    let current = state.pulse.current().await.map_err(ApiError::unavailable)?;
    Ok(axum::Json((*current).clone()))
}

/// The overview as server-sent events: an `overview` event now, then one each time it is read
/// again (every 2 s while anyone watches), until the token expires or the server stops. Send the token in the
/// `Authorization` header (a browser reads the stream with `fetch`).
#[utoipa::path(get, path = "/v1/live", responses(
    (status = 200, content_type = "text/event-stream", description = "`event: overview` with an Overview as `data`, repeatedly"),
    (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody),
    (status = 503, body = error::ErrorBody),
))]
async fn live_stream(State(state): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    require(&caller, READERS)?;
    let rx = state.pulse.subscribe();
    let first = state.pulse.current().await.map_err(ApiError::unavailable)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let until = tokio::time::Instant::now()
        + std::time::Duration::from_secs(caller.expires_at.saturating_sub(now));
    let event = |o: &live::Overview| Event::default().event("overview").json_data(o);
    let closing = state.closing.clone();
    let stream = futures::stream::unfold((rx, Some(first)), move |(mut rx, first)| {
        let closing = closing.clone();
        async move {
            if let Some(o) = first {
                return Some((event(&o), (rx, None)));
            }
            tokio::select! {
                changed = rx.changed() => {
                    changed.ok()?;
                    let o = rx.borrow_and_update().clone()?;
                    Some((event(&o), (rx, None)))
                }
                () = tokio::time::sleep_until(until) => None,
                () = closing.cancelled() => None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
