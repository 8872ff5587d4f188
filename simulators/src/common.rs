//! What both simulators share: fault planning and delays, request counters, the shutdown signal,
//! the detached handling of every request, the request log, and the `/_sim/...` admin routes
//! (ledger, faults, outage, clock, tokens, stats, requests).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, NestedPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::clock::SimClock;
use crate::faults::{Action, FaultError, FaultRule, FaultSet, InstalledRule, Plan};
use crate::requests::{REQUEST_LOG_CAPACITY, RequestFilter, RequestLog};

/// Renders an error in the simulator's own body format.
pub(crate) type RenderError = fn(StatusCode, &str, &str) -> Response;

/// What a request's detached task knows of the connection it came from: when the call arrived,
/// a way to answer before the handler has finished (a `late` fault), and its number in the
/// request log (none for the admin routes).
struct Arrival {
    at: Instant,
    answer: Option<oneshot::Sender<Response>>,
    logged: Option<u64>,
}

tokio::task_local! {
    static ARRIVAL: RefCell<Arrival>;
}

/// Middleware: log every API request as it arrives, and handle every request in a task of its
/// own, detached from the connection.
///
/// hyper drops a handler's future when the client disconnects, so without this a call the
/// client gave up on (a `hang` past its timeout) would never land; a real server finishes what
/// it has begun. The task also lets a handler answer early and carry on (a `late` fault).
pub(crate) async fn detached(
    State(log): State<Arc<RequestLog>>,
    request: Request,
    next: Next,
) -> Response {
    // Under `Listen::Shared` the path is already relative to the simulator's base URL.
    let path = request.uri().path();
    let logged = (!(path == "/_sim" || path.starts_with("/_sim/")))
        .then(|| log.arrive(request.method(), path, route(&request)));
    let (answer, early) = oneshot::channel();
    let arrival = RefCell::new(Arrival {
        at: Instant::now(),
        answer: Some(answer),
        logged,
    });
    let task_log = log.clone();
    let mut task = tokio::spawn(ARRIVAL.scope(arrival, async move {
        let response = next.run(request).await;
        // In the task, so that an answer nobody waits for any more is recorded too.
        if let Some(seq) = logged {
            task_log.answered(seq, response.status().as_u16());
        }
        response
    }));
    // Dropping the handle when the client has gone leaves the task running to its end.
    tokio::select! {
        Ok(response) = early => response,
        joined = &mut task => joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a simulator handler panicked");
            if let Some(seq) = logged {
                log.answered(seq, StatusCode::INTERNAL_SERVER_ERROR.as_u16());
            }
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }),
    }
}

/// The route a request matched, relative to the simulator's base URL (without the
/// `Listen::Shared` prefix).
fn route(request: &Request) -> Option<String> {
    let matched = request.extensions().get::<MatchedPath>()?.as_str();
    let nested = request
        .extensions()
        .get::<NestedPath>()
        .map_or("", NestedPath::as_str);
    Some(matched.strip_prefix(nested).unwrap_or(matched).to_owned())
}

/// The current request's number in the request log, if it is logged.
fn logged() -> Option<u64> {
    ARRIVAL.try_with(|a| a.borrow().logged).ok().flatten()
}

/// Sends `response` to the client now, if the request has not been answered yet; returns when
/// the call arrived.
fn answer_early(response: Response, log: &RequestLog) -> Option<Instant> {
    let (at, answer, logged) = ARRIVAL
        .try_with(|a| {
            let mut a = a.borrow_mut();
            (a.at, a.answer.take(), a.logged)
        })
        .ok()?;
    let answer = answer?;
    if let Some(seq) = logged {
        log.answered(seq, response.status().as_u16());
    }
    // The client may have left during the admission delay: the effect lands all the same.
    let _ = answer.send(response);
    Some(at)
}

pub(crate) struct Common {
    pub faults: FaultSet,
    pub clock: SimClock,
    shutdown: watch::Receiver<bool>,
    ops: &'static [&'static str],
    /// The operations that change something, on which a `late` fault lands late.
    writes: &'static [&'static str],
    requests: Vec<AtomicU64>,
    /// Every API request, for `GET /_sim/requests` and `GET /_sim/requests/rate`.
    pub log: Arc<RequestLog>,
    pub tokens_issued: AtomicU64,
    pub unauthorized: AtomicU64,
}

impl Common {
    pub fn new(
        seed: u64,
        ops: &'static [&'static str],
        writes: &'static [&'static str],
        refusals: &'static [&'static str],
        clock: SimClock,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            faults: FaultSet::new(seed, ops, refusals),
            clock,
            shutdown,
            ops,
            writes,
            requests: ops.iter().map(|_| AtomicU64::new(0)).collect(),
            log: Arc::new(RequestLog::new(REQUEST_LOG_CAPACITY)),
            tokens_issued: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        }
    }

    /// Counts a request for `op`, decides its faults, waits out its delay, and answers at once
    /// when the plan is a plain failure. On a `late` plan for a write, answers the client at
    /// once, waits until the effect is due, and lets the caller go on with the work.
    pub async fn admit(&self, op: &'static str, render: RenderError) -> Result<Plan, Response> {
        if let Some(i) = self.ops.iter().position(|o| *o == op) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
        let plan = self.faults.plan(op);
        if let Some(seq) = logged() {
            self.log
                .admitted(seq, op, self.writes.contains(&op), &plan.fired);
        }
        if !plan.delay.is_zero() && !self.sleep(plan.delay).await {
            return Err(shutting_down(render));
        }
        match plan.action {
            Action::Fail {
                status,
                retry_after_secs,
            } => Err(failure(render, status, retry_after_secs)),
            Action::Late { status, after } => {
                if !self.writes.contains(&op) {
                    return Err(failure(render, status, None));
                }
                let Some(arrived) = answer_early(failure(render, status, None), &self.log) else {
                    // Not under `detached`: nobody to answer early, so nothing happens.
                    return Err(failure(render, status, None));
                };
                let due = (arrived + after).saturating_duration_since(Instant::now());
                if !self.sleep(due).await {
                    return Err(shutting_down(render));
                }
                Ok(Plan {
                    action: Action::Proceed,
                    ..plan
                })
            }
            _ => Ok(plan),
        }
    }

    /// Applies the end of a commit-then-fail plan to a finished response.
    pub async fn finish(&self, plan: &Plan, response: Response, render: RenderError) -> Response {
        match plan.action {
            Action::CommitThenFail {
                status: Some(status),
                ..
            } => failure(render, status, None),
            Action::CommitThenFail { status: None, lost } => {
                // The effect is applied; keep the caller waiting past its timeout so that the
                // answer is lost to it.
                self.sleep(lost).await;
                render(
                    StatusCode::GATEWAY_TIMEOUT,
                    "RESPONSE_LOST",
                    "The response was lost.",
                )
            }
            _ => response,
        }
    }

    /// Sleeps for `d` unless the simulator shuts down first; true when the whole time passed.
    pub async fn sleep(&self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            requests: self
                .ops
                .iter()
                .zip(&self.requests)
                .map(|(op, n)| ((*op).to_owned(), n.load(Ordering::Relaxed)))
                .collect(),
            faults_fired: self.faults.fired_by_kind(),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
        }
    }
}

fn shutting_down(render: RenderError) -> Response {
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "SHUTTING_DOWN",
        "The simulator is shutting down.",
    )
}

fn failure(render: RenderError, status: u16, retry_after_secs: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (name, msg) = match status {
        429 => ("TOO_MANY_REQUESTS", "Rate limit exceeded."),
        502 => ("BAD_GATEWAY", "Bad gateway."),
        503 => ("SERVICE_UNAVAILABLE", "Service unavailable."),
        504 => ("GATEWAY_TIMEOUT", "Gateway timeout."),
        _ => ("INTERNAL_ERROR", "Internal server error."),
    };
    let mut response = render(code, name, msg);
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Request and fault counters of one simulator, served at `GET /_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received per operation, faults included.
    pub requests: BTreeMap<String, u64>,
    /// Faults injected per kind.
    pub faults_fired: BTreeMap<String, u64>,
    pub tokens_issued: u64,
    /// Requests refused with 401 (bad, expired or revoked token or credentials).
    pub unauthorized: u64,
}

impl Stats {
    pub fn requests(&self, op: &str) -> u64 {
        self.requests.get(op).copied().unwrap_or(0)
    }
}

/// What each simulator provides to the admin routes.
pub(crate) trait Simulated: Send + Sync + 'static {
    type Ledger: Serialize;
    fn common(&self) -> &Common;
    /// The ledger; with `touched`, only the accounts something happened to.
    fn ledger(&self, touched: bool) -> Self::Ledger;
    fn expire_tokens(&self);
}

#[derive(Deserialize)]
struct OutageBody {
    for_ms: u64,
    #[serde(default)]
    after_ms: u64,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    ops: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct AdvanceBody {
    ms: u64,
}

#[derive(Serialize)]
struct ClockView {
    now: chrono::DateTime<chrono::Utc>,
    offset_ms: u64,
}

/// The `/_sim/...` routes of a simulator.
pub(crate) fn admin_routes<S: Simulated>() -> Router<Arc<S>> {
    Router::new()
        .route("/_sim/ledger", get(ledger::<S>))
        .route("/_sim/stats", get(stats::<S>))
        .route(
            "/_sim/faults",
            get(get_faults::<S>)
                .put(put_faults::<S>)
                .post(post_faults::<S>)
                .delete(delete_faults::<S>),
        )
        .route("/_sim/outage", post(outage::<S>))
        .route("/_sim/tokens/expire", post(expire_tokens::<S>))
        .route("/_sim/clock", get(clock::<S>))
        .route("/_sim/clock/advance", post(advance_clock::<S>))
        .route("/_sim/requests", get(requests::<S>))
        .route("/_sim/requests/rate", get(request_rate::<S>))
}

fn bad_request(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid body: {e}")))
}

/// Accepts one rule or a list of rules.
fn parse_rules(body: &Bytes) -> Result<Vec<FaultRule>, Response> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<FaultRule>),
        One(FaultRule),
    }
    Ok(match parse::<OneOrMany>(body)? {
        OneOrMany::Many(rules) => rules,
        OneOrMany::One(rule) => vec![rule],
    })
}

fn installed(result: Result<(), FaultError>, faults: &FaultSet) -> Response {
    match result {
        Ok(()) => Json::<Vec<InstalledRule>>(faults.installed()).into_response(),
        Err(e) => bad_request(e),
    }
}

#[derive(Deserialize)]
struct LedgerQuery {
    #[serde(default)]
    touched: bool,
}

async fn ledger<S: Simulated>(
    State(sim): State<Arc<S>>,
    axum::extract::Query(query): axum::extract::Query<LedgerQuery>,
) -> Response {
    Json(sim.ledger(query.touched)).into_response()
}

async fn stats<S: Simulated>(State(sim): State<Arc<S>>) -> Response {
    Json(sim.common().stats()).into_response()
}

async fn get_faults<S: Simulated>(State(sim): State<Arc<S>>) -> Response {
    Json(sim.common().faults.installed()).into_response()
}

async fn put_faults<S: Simulated>(State(sim): State<Arc<S>>, body: Bytes) -> Response {
    match parse_rules(&body) {
        Ok(rules) => installed(sim.common().faults.set(rules), &sim.common().faults),
        Err(r) => r,
    }
}

async fn post_faults<S: Simulated>(State(sim): State<Arc<S>>, body: Bytes) -> Response {
    match parse_rules(&body) {
        Ok(rules) => installed(sim.common().faults.add(rules), &sim.common().faults),
        Err(r) => r,
    }
}

async fn delete_faults<S: Simulated>(State(sim): State<Arc<S>>) -> Response {
    installed(sim.common().faults.set(Vec::new()), &sim.common().faults)
}

async fn outage<S: Simulated>(State(sim): State<Arc<S>>, body: Bytes) -> Response {
    let body: OutageBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut rule = FaultRule::new(crate::faults::FaultKind::Outage {
        status: body.status.unwrap_or(503),
    })
    .window(
        Duration::from_millis(body.after_ms),
        Duration::from_millis(body.for_ms),
    );
    rule.ops = body.ops;
    installed(sim.common().faults.add(vec![rule]), &sim.common().faults)
}

async fn expire_tokens<S: Simulated>(State(sim): State<Arc<S>>) -> StatusCode {
    sim.expire_tokens();
    StatusCode::NO_CONTENT
}

fn clock_view(clock: &SimClock) -> Json<ClockView> {
    Json(ClockView {
        now: clock.now(),
        offset_ms: u64::try_from(clock.offset().as_millis()).unwrap_or(u64::MAX),
    })
}

async fn clock<S: Simulated>(State(sim): State<Arc<S>>) -> Response {
    clock_view(&sim.common().clock).into_response()
}

async fn advance_clock<S: Simulated>(State(sim): State<Arc<S>>, body: Bytes) -> Response {
    match parse::<AdvanceBody>(&body) {
        Ok(b) => {
            sim.common().clock.advance(Duration::from_millis(b.ms));
            clock_view(&sim.common().clock).into_response()
        }
        Err(r) => r,
    }
}

async fn requests<S: Simulated>(
    State(sim): State<Arc<S>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    match RequestFilter::from_query(&pairs, false) {
        Ok((filter, _)) => Json(sim.common().log.page(&filter)).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn request_rate<S: Simulated>(
    State(sim): State<Arc<S>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    match RequestFilter::from_query(&pairs, true) {
        Ok((filter, window_ms)) => Json(sim.common().log.rate(&filter, window_ms)).into_response(),
        Err(e) => bad_request(e),
    }
}

/// The service tokens a simulator has issued, with their expiry. Both simulators keep their
/// tokens the same way; only the header and the error body differ.
#[derive(Debug, Default)]
pub struct TokenTable(
    std::sync::RwLock<std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>,
);

impl TokenTable {
    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<
        '_,
        std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
    > {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new token valid until `expiry`, dropping those that have expired.
    pub fn issue(
        &self,
        token: String,
        now: chrono::DateTime<chrono::Utc>,
        expiry: chrono::DateTime<chrono::Utc>,
    ) {
        let mut tokens = self.write();
        tokens.retain(|_, e| *e > now);
        tokens.insert(token, expiry);
    }

    pub fn revoke(&self, token: &str) {
        self.write().remove(token);
    }

    pub fn revoke_all(&self) {
        self.write().clear();
    }

    pub fn is_valid(&self, token: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .is_some_and(|expiry| *expiry > now)
    }
}
