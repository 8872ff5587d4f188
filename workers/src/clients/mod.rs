//! Typed clients for the two downstreams, and what they share: the outcome classification every
//! call ends in, the caller's deadline, the retry policy (backon: exponential backoff with jitter,
//! honouring `Retry-After`, bounded by attempts, total time and the deadline), and the guards
//! (circuit breaker, rate limit) each attempt passes through.
//!
//! Every call takes a [`Deadline`]: the orchestrator times a step out after it, so a call never
//! starts an attempt, nor waits for one, past it.
//!
//! How an attempt's result is classified (after the retries the policy and the deadline allow):
//!
//! | attempt result | read | idempotent write (redeem, void, cancel, release) | other write (hold, book) |
//! |---|---|---|---|
//! | 2xx | `Success` | `Success` | `Success` |
//! | 4xx refusal | `BusinessFailure` | `BusinessFailure`, or `Success` for "already done" / "never existed" on a compensation; `Unknown` if an earlier attempt may have landed | `BusinessFailure` |
//! | 429, connection refused | retried, then `Retryable` | retried, then `Retryable` (`Unknown` if an earlier attempt may have landed) | retried, then `Retryable` |
//! | 5xx, timeout, unreadable 2xx | retried, then `Retryable` | retried, then `Unknown` | `Unknown` at once (book then reconciles by `external_id`) |
//! | 401 | new token, one more try, then `Retryable` | same | same |
//! | circuit open, local rate limit past the deadline, deadline passed | `Retryable`, nothing sent | same | same |
//!
//! A call whose last failure is the downstream's unavailability (a refused connection, a
//! 502/503/504, an open circuit, or any failure once the breaker has opened) ends
//! `Unavailable` instead of `Retryable` or `Unknown` (saying whether an attempt may have
//! landed): the saga then waits for the downstream without spending an attempt.

pub mod memberson;
pub mod secret_token;
pub mod sevenrooms;
pub mod token;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use como_ports::{Clock, SystemClock};
use como_schemas::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;
use tracing::Instrument;

use crate::breaker::{BreakerState, CircuitBreaker, Verdict};
use crate::rate_limit::RateLimit;

/// Stable codes of business failures, shared by both clients.
pub mod codes {
    pub const INSUFFICIENT_POINTS: &str = "INSUFFICIENT_POINTS";
    pub const MEMBER_EXPIRED: &str = "MEMBER_EXPIRED";
    pub const MEMBER_TERMINATED: &str = "MEMBER_TERMINATED";
    pub const MEMBER_NOT_FOUND: &str = "MEMBER_NOT_FOUND";
    /// The `ReceiptNo` was used before with a different redeem body.
    pub const DUPLICATE_RECEIPT: &str = "DUPLICATE_RECEIPT";
    pub const SLOT_UNAVAILABLE: &str = "SLOT_UNAVAILABLE";
    pub const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
    pub const PAST_CANCELLATION_CUTOFF: &str = "PAST_CANCELLATION_CUTOFF";
    /// Memberson will not void a redemption locked for settlement (a void's refusal: a person
    /// must act).
    pub const RECEIPT_LOCKED: &str = "RECEIPT_LOCKED";
    pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
    /// A booking's `external_id` belongs to a reservation that has been cancelled since.
    pub const RESERVATION_CANCELLED: &str = "RESERVATION_CANCELLED";
    pub const VENUE_NOT_FOUND: &str = "VENUE_NOT_FOUND";
    /// The downstream refused the request as malformed: retrying the same request cannot help.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
}

/// How a downstream call ended, as a worker reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T> {
    /// The call took effect (or, for a compensation, there is nothing left to undo).
    Success(T),
    /// The downstream refused for a reason retrying will not change; `code` is from [`codes`].
    BusinessFailure { code: String, message: String },
    /// The call did not take effect; it may succeed later (after `retry_after` when given).
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The call may or may not have taken effect: reconcile before retrying or compensating.
    Unknown { reason: String },
    /// The downstream is unavailable (its circuit open, connections refused, 502/503/504 to
    /// every attempt): the call ended because of the outage, not because of the request.
    /// `maybe_applied` says whether an attempt may still have taken effect (then the call is
    /// unknown as well, and is looked up once the downstream is back).
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
        maybe_applied: bool,
    },
}

impl<T> Outcome<T> {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    pub fn success(self) -> Option<T> {
        match self {
            Outcome::Success(t) => Some(t),
            _ => None,
        }
    }

    /// The business failure code, if that is how the call ended.
    pub fn failure_code(&self) -> Option<&str> {
        match self {
            Outcome::BusinessFailure { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Success(t) => Outcome::Success(f(t)),
            Outcome::BusinessFailure { code, message } => {
                Outcome::BusinessFailure { code, message }
            }
            Outcome::Retryable {
                reason,
                retry_after,
            } => Outcome::Retryable {
                reason,
                retry_after,
            },
            Outcome::Unknown { reason } => Outcome::Unknown { reason },
            Outcome::Unavailable {
                reason,
                retry_after,
                maybe_applied,
            } => Outcome::Unavailable {
                reason,
                retry_after,
                maybe_applied,
            },
        }
    }

    pub(crate) fn business(code: &str, message: impl Into<String>) -> Self {
        Outcome::BusinessFailure {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The moment by which a call must be over. Once set, it counts down on tokio's clock: it only
/// bounds timeouts and sleeps (and tests control those by pausing tokio's time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn at_instant(instant: Instant) -> Self {
        Self(instant)
    }

    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// A deadline given as a point in time, as commands carry it: the time left is `when`
    /// minus `clock.now()` (none if `when` is not after it), so whoever controls the clock
    /// controls whether the command still has time.
    pub fn at(when: Timestamp, clock: &dyn Clock) -> Self {
        Self::after(Duration::from_millis(when.millis_since(clock.now())))
    }

    /// [`Deadline::at`] on the system clock, for callers without a [`Clock`] (the fuzz
    /// targets); the worker runtime passes its port's clock.
    pub fn at_utc(when: chrono::DateTime<chrono::Utc>) -> Self {
        Self::at(Timestamp::from_datetime(when), &SystemClock)
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn is_expired(self) -> bool {
        self.remaining().is_zero()
    }

    pub fn min(self, other: Deadline) -> Deadline {
        if self.0 <= other.0 { self } else { other }
    }
}

/// Timeouts and retries of one client.
#[derive(Clone, Debug, PartialEq)]
pub struct CallPolicy {
    /// Longest wait for one HTTP attempt (also capped by the deadline).
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest a call may take over all its attempts, whatever the deadline allows.
    pub max_elapsed: Duration,
    /// Randomise each backoff so that callers that failed together do not retry together.
    pub jitter: bool,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            max_attempts: 4,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            max_elapsed: Duration::from_secs(20),
            jitter: true,
        }
    }
}

impl CallPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_total_delay(Some(self.max_elapsed));
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }
}

/// What a call does to the downstream, which decides what may be retried and what an
/// unanswered attempt means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing: retry any transient failure; never unknown.
    Read,
    /// Changes state, but repeating it is safe (an idempotency key, or an answer that says
    /// "already done"): retry any transient failure; unknown if an attempt may have landed and
    /// none answered for sure.
    IdempotentWrite,
    /// Changes state and repeating it might do it twice: retry only failures that prove the
    /// request was not processed; anything else is unknown at once.
    Write,
}

/// An attempt that did not settle the call.
#[derive(Clone, Debug)]
pub(crate) struct Transient {
    pub reason: String,
    pub retry_after: Option<Duration>,
    /// The request may have been processed (a timeout, a 5xx, an unreadable answer).
    pub maybe_applied: bool,
    /// Whether another attempt could help at all (not when the circuit is open, say).
    pub retry: bool,
    /// What the attempt says about the downstream's health, for the circuit breaker.
    pub verdict: Verdict,
    /// The downstream is unavailable rather than failing this request: a refused connection,
    /// a 502/503/504, an open circuit.
    pub unavailable: bool,
}

impl Transient {
    /// The request never reached the downstream's logic (connection refused, 429, ...).
    pub fn not_sent(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            reason: reason.into(),
            retry_after,
            maybe_applied: false,
            retry: true,
            verdict: Verdict::Failure,
            unavailable: false,
        }
    }

    pub fn maybe_applied(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry_after: None,
            maybe_applied: true,
            retry: true,
            verdict: Verdict::Failure,
            unavailable: false,
        }
    }

    /// Marks the failure as the downstream's unavailability.
    pub fn unavailable(mut self) -> Self {
        self.unavailable = true;
        self
    }

    /// Refused on this side (circuit open, rate limit, deadline): nothing was sent, and
    /// retrying within this call cannot help.
    pub fn local(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            reason: reason.into(),
            retry_after,
            maybe_applied: false,
            retry: false,
            verdict: Verdict::Neutral,
            unavailable: false,
        }
    }

    /// Refused on this side because of a backlog: the call's turn, or the time left for it,
    /// came too late. Nothing was sent, and the wait is the downstream's capacity, not the
    /// request's failure, so it counts as unavailability (it spends no saga's attempt).
    pub fn backlog(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::local(reason, retry_after).unavailable()
    }

    /// The downstream answered, so it is up, but the answer settles nothing (429, a 401 after
    /// a fresh token).
    pub fn answered(reason: impl Into<String>, retry_after: Option<Duration>, retry: bool) -> Self {
        Self {
            reason: reason.into(),
            retry_after,
            maybe_applied: false,
            retry,
            verdict: Verdict::Neutral,
            unavailable: false,
        }
    }
}

/// An attempt either settles the call or is transient.
pub(crate) type Attempt<T> = Result<Outcome<T>, Transient>;

/// Parses `Retry-After` given in seconds (HTTP dates are rare in APIs and are ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// Classifies a transport error: a request that never connected was not processed; anything
/// after the request was sent (a timeout, a broken body) may have been.
pub(crate) fn transport_error(err: &reqwest::Error) -> Transient {
    if err.is_connect() {
        Transient::not_sent(format!("cannot connect: {err}"), None).unavailable()
    } else if err.is_timeout() {
        Transient::maybe_applied("timed out waiting for the answer")
    } else {
        Transient::maybe_applied(format!("transport failure: {err}"))
    }
}

/// The transient failure for a 429 or 5xx answer; `None` for any other status.
pub(crate) fn transient_status(answer: &Answer) -> Option<Transient> {
    let status = answer.status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        Some(Transient::answered(
            "rate limited by the downstream (429)",
            answer.retry_after,
            true,
        ))
    } else if status.is_server_error() {
        let mut t = Transient::maybe_applied(format!("server error ({status})"));
        t.retry_after = answer.retry_after;
        // A gateway that cannot reach the service, or a service that says it is down: the
        // request may still have landed (so it stays maybe applied), but the failure is the
        // downstream's, not the request's.
        t.unavailable = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        );
        Some(t)
    } else {
        None
    }
}

/// The per-downstream guards every attempt passes: the circuit breaker and the rate limit.
#[derive(Clone, Default)]
pub struct Guards {
    pub breaker: Option<Arc<CircuitBreaker>>,
    pub rate_limit: Option<Arc<RateLimit>>,
}

impl Guards {
    pub fn new(breaker: Arc<CircuitBreaker>, rate_limit: Arc<RateLimit>) -> Self {
        Self {
            breaker: Some(breaker),
            rate_limit: Some(rate_limit),
        }
    }
}

/// The shortest time worth starting an attempt in: with less left before the deadline, the
/// attempt is not sent (its answer could not come in time, and it would only leave an unknown
/// outcome behind).
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Runs one call: attempts through the guards, retried by `policy` within `deadline`, classified
/// by `effect`. Each attempt is cut off at the policy's attempt timeout or the deadline.
pub(crate) async fn call<T, F, Fut>(
    policy: &CallPolicy,
    guards: &Guards,
    effect: Effect,
    deadline: Deadline,
    mut attempt: F,
) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let deadline = deadline.min(Deadline::after(policy.max_elapsed));
    if deadline.is_expired() {
        // Nothing sent: the command reached its call too late, behind a backlog.
        return Outcome::Unavailable {
            reason: "the deadline passed before the call started".to_owned(),
            retry_after: None,
            maybe_applied: false,
        };
    }
    // Set by any attempt that may have landed: the call is then unknown unless a later attempt
    // settles it.
    let maybe_applied = AtomicBool::new(false);
    let downstream = guards
        .breaker
        .as_ref()
        .map(|b| b.name().to_owned())
        .or_else(|| guards.rate_limit.as_ref().map(|l| l.name().to_owned()))
        .unwrap_or_else(|| "downstream".to_owned());
    let tries = std::sync::atomic::AtomicU32::new(0);
    let run_once = || {
        // Futures are lazy: nothing is sent until the guards below have let the attempt through.
        let fut = attempt();
        // One span per attempt within the call (the command's attempt is its parent's).
        let span = tracing::info_span!(
            "call",
            otel.kind = "client",
            downstream = downstream.as_str(),
            call_attempt = tries.fetch_add(1, Ordering::Relaxed) + 1,
            outcome = tracing::field::Empty,
        );
        let traced = span.clone();
        let attempt = async {
            if let Some(limit) = &guards.rate_limit
                && let Err(wait) = limit.acquire(deadline).await
            {
                // Our share of the downstream's capacity is taken until after the deadline.
                return Err(Transient::backlog(
                    format!(
                        "local rate limit for {} would pass the deadline",
                        limit.name()
                    ),
                    Some(wait),
                ));
            }
            let permit = match &guards.breaker {
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(open) => {
                        return Err(Transient::local(
                            format!("circuit for {} is open", breaker.name()),
                            Some(open.retry_after),
                        )
                        .unavailable());
                    }
                },
                None => None,
            };
            let budget = policy.attempt_timeout.min(deadline.remaining());
            if budget < MIN_ATTEMPT.min(policy.attempt_timeout) {
                // Its turn came too late for an attempt that could be answered.
                return Err(Transient::backlog("the deadline passed", None));
            }
            let result = match tokio::time::timeout(budget, fut).await {
                Ok(result) => result,
                Err(_) => Err(Transient::maybe_applied(format!(
                    "no answer within {} ms",
                    budget.as_millis()
                ))),
            };
            if let Some(permit) = permit {
                permit.record(match &result {
                    Ok(_) => Verdict::Success,
                    Err(t) => t.verdict,
                });
            }
            result
        };
        async move {
            let result = attempt.instrument(traced).await;
            span.record(
                "outcome",
                match &result {
                    Ok(o) if o.is_success() => "succeeded",
                    Ok(_) => "refused",
                    Err(t) if t.maybe_applied => "maybe_applied",
                    Err(_) => "not_applied",
                },
            );
            result
        }
    };
    let result = run_once
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|t: &Transient| {
            if t.maybe_applied {
                maybe_applied.store(true, Ordering::Relaxed);
            }
            t.retry && (effect != Effect::Write || !t.maybe_applied)
        })
        .adjust(|t: &Transient, backoff: Option<Duration>| {
            // backoff is None once the attempts or the total delay are used up.
            let wait = match (backoff, t.retry_after) {
                (Some(b), Some(ra)) => b.max(ra),
                (b, _) => b?,
            };
            // Never sleep into the deadline: an attempt needs time to run after the wait.
            (wait < deadline.remaining()).then_some(wait)
        })
        .notify(|t: &Transient, wait: Duration| {
            tracing::debug!(reason = %t.reason, ?wait, "retrying a downstream call");
        })
        .await;
    match result {
        // A refusal answers for the attempt that got it, not for an earlier one that may still
        // land (servers finish what they started after the client gave up): the call's outcome
        // stays unknown, to be reconciled once no attempt can land any more.
        Ok(Outcome::BusinessFailure { code, message })
            if effect != Effect::Read && maybe_applied.load(Ordering::Relaxed) =>
        {
            Outcome::Unknown {
                reason: format!(
                    "refused ({code}: {message}) after an earlier attempt that may still land"
                ),
            }
        }
        Ok(outcome) => outcome,
        Err(t) => {
            let maybe = effect != Effect::Read
                && (t.maybe_applied || maybe_applied.load(Ordering::Relaxed));
            // The breaker is the judge of an outage: the failures that ended this call may
            // not look like one (time-outs, 500s) yet have opened it.
            let down = t.unavailable
                || guards
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state() != BreakerState::Closed);
            if down {
                Outcome::Unavailable {
                    reason: t.reason,
                    retry_after: t.retry_after,
                    maybe_applied: maybe,
                }
            } else if maybe {
                Outcome::Unknown { reason: t.reason }
            } else {
                Outcome::Retryable {
                    reason: t.reason,
                    retry_after: t.retry_after,
                }
            }
        }
    }
}

/// A probe of the downstream's health: one attempt, outside the circuit breaker (whose state
/// it decides) but through the rate limit, within `deadline`. Up when the downstream answers
/// with anything but a 5xx (a 4xx to a probe's made-up key is an answer); down on a 5xx, no
/// connection, no token, or no answer in time.
pub(crate) async fn probe<F>(guards: &Guards, deadline: Deadline, attempt: F) -> Result<(), String>
where
    F: Future<Output = Result<Answer, Transient>>,
{
    if let Some(limit) = &guards.rate_limit {
        limit
            .acquire(deadline)
            .await
            .map_err(|_| "no turn within the probe's time under the rate limit".to_owned())?;
    }
    match tokio::time::timeout(deadline.remaining(), attempt).await {
        Err(_) => Err("no answer in time".to_owned()),
        Ok(Err(t)) if t.verdict == Verdict::Neutral => Ok(()),
        Ok(Err(t)) => Err(t.reason),
        Ok(Ok(answer)) if answer.status.is_server_error() => {
            Err(format!("server error ({})", answer.status))
        }
        Ok(Ok(_)) => Ok(()),
    }
}

/// A downstream's answer, reduced to what classification needs.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: bytes::Bytes,
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answer, Transient> {
    let response = request.send().await.map_err(|e| transport_error(&e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.map_err(|e| transport_error(&e))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

fn token_failure(err: token::TokenError) -> Transient {
    match err {
        token::TokenError::Unavailable {
            reason,
            retry_after,
        } => Transient::not_sent(format!("no token: {reason}"), retry_after).unavailable(),
        token::TokenError::Refused(reason) => {
            Transient::answered(format!("credentials refused: {reason}"), None, false)
        }
    }
}

/// Sends a request built with the current token; on a 401, takes a fresh token and sends once
/// more; a second 401 ends the call.
pub(crate) async fn send_with_token(
    tokens: &dyn token::TokenSource,
    deadline: Deadline,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Answer, Transient> {
    let token = tokens.token(deadline).await.map_err(token_failure)?;
    let answer = send(build(&token.value)).await?;
    if answer.status != StatusCode::UNAUTHORIZED {
        return Ok(answer);
    }
    tracing::debug!("token refused; refreshing it and retrying once");
    let fresh = tokens
        .refresh(&token, deadline)
        .await
        .map_err(token_failure)?;
    let answer = send(build(&fresh.value)).await?;
    if answer.status == StatusCode::UNAUTHORIZED {
        return Err(Transient::answered(
            "unauthorized (401) even with a fresh token",
            None,
            false,
        ));
    }
    Ok(answer)
}

/// Decodes a success body; an unreadable one may hide an applied effect.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Transient> {
    serde_json::from_slice(body)
        .map_err(|e| Transient::maybe_applied(format!("unreadable answer: {e}")))
}

/// Joins a base URL and a path without doubling the slash.
pub(crate) fn join(base: &str, path: &str) -> String {
    let mut url = String::with_capacity(base.len() + path.len());
    url.push_str(base.trim_end_matches('/'));
    url.push_str(path);
    url
}

/// Entry points for the fuzz targets and property tests: each reads one downstream answer
/// (status, `Retry-After`, body) exactly as a client attempt does once the answer is in, without
/// a network. Not an API: the clients are.
#[doc(hidden)]
pub mod fuzzing {
    use std::time::Duration;

    use como_ports::{Clock, SystemClock};
    use como_schemas::Timestamp;
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::memberson::{self, MemberSummary, Redemption, VoidOutcome};
    use super::sevenrooms::{
        self, Booking, CancelOutcome, HoldConfirmation, ReleaseOutcome, Reservation, SearchPage,
        Shift, Venue,
    };
    use super::token::{Token, TokenError};
    use super::{Answer, Attempt, Outcome, Transient, transient_status};

    /// One HTTP answer as it comes off the wire.
    #[derive(Clone, Copy, Debug)]
    pub struct RawAnswer<'a> {
        pub status: u16,
        /// The `Retry-After` header's bytes, if the answer has one.
        pub retry_after: Option<&'a [u8]>,
        pub body: &'a [u8],
    }

    /// What one attempt made of an answer.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Read<T> {
        /// The answer settles the call.
        Settled(Outcome<T>),
        /// It does not: the retry policy decides what follows.
        Transient {
            reason: String,
            retry_after: Option<Duration>,
            /// The request may have been processed.
            maybe_applied: bool,
            /// Another attempt could help.
            retry: bool,
        },
        /// No HTTP client hands over such an answer (a status outside 100..=999, or a header
        /// value HTTP does not allow).
        NotHttp,
    }

    impl<T> From<Transient> for Read<T> {
        fn from(t: Transient) -> Self {
            Read::Transient {
                reason: t.reason,
                retry_after: t.retry_after,
                maybe_applied: t.maybe_applied,
                retry: t.retry,
            }
        }
    }

    fn answer(raw: RawAnswer<'_>) -> Option<Answer> {
        let status = StatusCode::from_u16(raw.status).ok()?;
        let mut headers = HeaderMap::new();
        if let Some(value) = raw.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_bytes(value).ok()?);
        }
        Some(Answer {
            status,
            retry_after: super::retry_after(&headers),
            body: bytes::Bytes::copy_from_slice(raw.body),
        })
    }

    /// As an authenticated attempt reads an answer: a 401 here is the one that came back even
    /// with a fresh token; 429 and 5xx are transient; the rest is the operation's to classify.
    fn attempt<T>(raw: RawAnswer<'_>, classify: impl FnOnce(&Answer) -> Attempt<T>) -> Read<T> {
        let Some(answer) = answer(raw) else {
            return Read::NotHttp;
        };
        if answer.status == StatusCode::UNAUTHORIZED {
            return Transient::answered("unauthorized (401) even with a fresh token", None, false)
                .into();
        }
        if let Some(t) = transient_status(&answer) {
            return t.into();
        }
        match classify(&answer) {
            Ok(outcome) => Read::Settled(outcome),
            Err(t) => t.into(),
        }
    }

    /// `Retry-After` as the clients read it.
    pub fn retry_after(value: &[u8]) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_bytes(value).ok()?);
        super::retry_after(&headers)
    }

    pub fn memberson_summary(
        raw: RawAnswer<'_>,
        member_no: &str,
        point_type: &str,
    ) -> Read<MemberSummary> {
        attempt(raw, |a| {
            memberson::classify_summary(a, member_no, point_type)
        })
    }

    pub fn memberson_redeem(raw: RawAnswer<'_>) -> Read<Redemption> {
        attempt(raw, memberson::classify_redeem)
    }

    pub fn memberson_void(raw: RawAnswer<'_>) -> Read<VoidOutcome> {
        attempt(raw, memberson::classify_void)
    }

    /// The answer to Memberson's authenticate call; `None` for [`Read::NotHttp`].
    pub fn memberson_token(
        raw: RawAnswer<'_>,
        assumed_lifetime: Duration,
    ) -> Option<Result<Token, TokenError>> {
        Some(memberson::token_answer(
            &answer(raw)?,
            assumed_lifetime,
            SystemClock.now(),
        ))
    }

    pub fn sevenrooms_venues(raw: RawAnswer<'_>) -> Read<Vec<Venue>> {
        attempt(raw, sevenrooms::classify_venues)
    }

    pub fn sevenrooms_availability(raw: RawAnswer<'_>) -> Read<Vec<Shift>> {
        attempt(raw, sevenrooms::classify_availability)
    }

    pub fn sevenrooms_hold(raw: RawAnswer<'_>) -> Read<HoldConfirmation> {
        attempt(raw, sevenrooms::classify_hold)
    }

    pub fn sevenrooms_release(raw: RawAnswer<'_>) -> Read<ReleaseOutcome> {
        attempt(raw, sevenrooms::classify_release)
    }

    pub fn sevenrooms_book(raw: RawAnswer<'_>) -> Read<Booking> {
        attempt(raw, sevenrooms::classify_book)
    }

    pub fn sevenrooms_reservation(raw: RawAnswer<'_>) -> Read<Reservation> {
        attempt(raw, sevenrooms::classify_reservation)
    }

    pub fn sevenrooms_search(raw: RawAnswer<'_>) -> Read<SearchPage> {
        attempt(raw, sevenrooms::classify_search)
    }

    pub fn sevenrooms_cancel(raw: RawAnswer<'_>) -> Read<CancelOutcome> {
        attempt(raw, sevenrooms::classify_cancel)
    }

    /// The answer to SevenRooms' `POST /auth`; `None` for [`Read::NotHttp`].
    pub fn sevenrooms_token(raw: RawAnswer<'_>) -> Option<Result<Token, TokenError>> {
        Some(sevenrooms::token_answer(&answer(raw)?))
    }

    /// A token's `token_expiration_datetime` as the SevenRooms client reads it.
    pub fn sevenrooms_token_expiry(text: &str) -> Option<Timestamp> {
        sevenrooms::expiry(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_ports::ManualClock;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_is_measured_from_the_clock_it_is_given() {
        // 2100-01-01: a deadline in 2050 is still ahead by the wall clock, past by this one.
        let late = ManualClock::new(Timestamp::from_millis(4_102_444_800_000));
        let when = Timestamp::from_millis(2_524_608_000_000);
        assert!(
            SystemClock.now() < when,
            "the wall clock says there is time"
        );
        let d = Deadline::at(when, &late);
        assert!(d.is_expired());
        assert_eq!(d.remaining(), Duration::ZERO);

        // 2001-09-09: a deadline long past by the wall clock has 5 s left by this one.
        let early = ManualClock::new(Timestamp::from_millis(1_000_000_000_000));
        let d = Deadline::at(Timestamp::from_millis(1_000_000_005_000), &early);
        assert!(!d.is_expired());
        assert_eq!(d.remaining(), Duration::from_secs(5));
        // From then on it counts down on tokio's (paused) clock.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(d.is_expired());
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn a_write_whose_attempt_may_have_landed_is_unknown_and_not_retried() {
        let policy = CallPolicy {
            min_backoff: Duration::from_millis(1),
            ..CallPolicy::default()
        };
        let mut calls = 0;
        let outcome: Outcome<()> = call(
            &policy,
            &Guards::default(),
            Effect::Write,
            Deadline::after(Duration::from_secs(5)),
            || {
                calls += 1;
                async { Err(Transient::maybe_applied("server error (500)")) }
            },
        )
        .await;
        assert!(matches!(outcome, Outcome::Unknown { .. }));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn an_idempotent_write_is_unknown_even_when_the_last_failure_was_a_429() {
        let policy = CallPolicy {
            min_backoff: Duration::from_millis(1),
            max_attempts: 2,
            ..CallPolicy::default()
        };
        let mut calls = 0;
        let outcome: Outcome<()> = call(
            &policy,
            &Guards::default(),
            Effect::IdempotentWrite,
            Deadline::after(Duration::from_secs(5)),
            || {
                calls += 1;
                let first = calls == 1;
                async move {
                    if first {
                        Err(Transient::maybe_applied("timed out"))
                    } else {
                        Err(Transient::not_sent("429", None))
                    }
                }
            },
        )
        .await;
        assert!(matches!(outcome, Outcome::Unknown { .. }), "{outcome:?}");
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn a_read_is_retryable_after_its_attempts_and_never_unknown() {
        let policy = CallPolicy {
            min_backoff: Duration::from_millis(1),
            max_attempts: 3,
            ..CallPolicy::default()
        };
        let mut calls = 0;
        let outcome: Outcome<()> = call(
            &policy,
            &Guards::default(),
            Effect::Read,
            Deadline::after(Duration::from_secs(5)),
            || {
                calls += 1;
                async { Err(Transient::maybe_applied("server error (503)")) }
            },
        )
        .await;
        assert!(matches!(outcome, Outcome::Retryable { .. }));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_retry_after_past_the_deadline_ends_the_call_at_once() {
        let policy = CallPolicy {
            max_attempts: 10,
            ..CallPolicy::default()
        };
        let mut calls = 0;
        let started = Instant::now();
        let outcome: Outcome<()> = call(
            &policy,
            &Guards::default(),
            Effect::Read,
            Deadline::after(Duration::from_secs(2)),
            || {
                calls += 1;
                async {
                    Err(Transient::answered(
                        "429",
                        Some(Duration::from_secs(30)),
                        true,
                    ))
                }
            },
        )
        .await;
        assert_eq!(calls, 1);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            outcome,
            Outcome::Retryable {
                reason: "429".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
    }

    #[tokio::test]
    async fn an_expired_deadline_sends_nothing() {
        let mut calls = 0;
        let outcome: Outcome<()> = call(
            &CallPolicy::default(),
            &Guards::default(),
            Effect::Write,
            Deadline::after(Duration::ZERO),
            || {
                calls += 1;
                async { Ok(Outcome::Success(())) }
            },
        )
        .await;
        // Nothing was sent, and the command came too late for a call: a backlog's wait, which
        // spends no attempt.
        assert!(matches!(
            outcome,
            Outcome::Unavailable {
                maybe_applied: false,
                ..
            }
        ));
        assert_eq!(calls, 0);
    }
}
