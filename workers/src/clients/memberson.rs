//! The Memberson CRM client (Como Credits): member summary, redeem points, void a redemption,
//! and the service-token minter.
//!
//! Redeem is idempotent on `ReceiptNo` (the same body again answers as the first time), so a
//! redeem whose outcome is unknown is settled by sending the very same request again:
//! [`MembersonClient::reconcile_redeem`]. Void is safe to repeat and its "already voided" and
//! "never redeemed" answers are successes, as a compensation needs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use como_ports::{Clock, SystemClock};
use como_schemas::Timestamp;
use reqwest::StatusCode;
/// The credentials' secret type, and the trait that reads one (for the callers that send it).
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::token::{CachedTokenSource, Token, TokenError, TokenMinter, TokenSource};
use super::{
    Answer, Attempt, CallPolicy, Deadline, Effect, Guards, Outcome, call, codes, decode, join,
    send, send_with_token, transient_status,
};

/// The long-lived credentials (one type with the simulator's: see [`como_schemas::credentials`]).
pub use como_schemas::credentials::MembersonCredentials;

/// Membership status as Memberson reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MemberStatus {
    Active,
    Expired,
    Terminated,
    #[serde(other)]
    Other,
}

/// A member's standing and balance in one point type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_no: String,
    pub tier: Option<String>,
    pub status: MemberStatus,
    pub expiry_date: Option<NaiveDate>,
    /// Balance in the client's point type (0 when the member has no such account).
    pub balance: i64,
}

/// A redeem request. Keep it as built: a replay must be the same body, or Memberson answers
/// 409 `DUPLICATE_RECEIPT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RedeemRequest {
    pub member_no: String,
    pub point_type: String,
    pub amount: i64,
    pub transaction_date: DateTime<Utc>,
    pub location: String,
    pub redemption_code: String,
    pub description: String,
    /// The idempotency key, derived from the saga and step.
    pub receipt_no: String,
}

/// The answer to a redeem (the first one's, on a replay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Redemption {
    pub transaction_id: String,
    pub member_no: String,
    pub receipt_no: String,
    pub amount: i64,
    pub balance: i64,
    /// Memberson answered 409: the `ReceiptNo` is already used (by an earlier attempt whose
    /// body differed), so the credits were taken, but this answer carries neither the
    /// transaction id nor the balance.
    #[serde(skip)]
    pub receipt_already_used: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VoidRequest {
    pub member_no: String,
    pub receipt_no: String,
    pub reason: String,
}

/// How a void ended; every variant means the points are not (or no longer) taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoidOutcome {
    Voided {
        transaction_id: String,
        balance: i64,
    },
    AlreadyVoided,
    /// Memberson knows no redemption under this receipt: nothing was taken.
    NeverRedeemed,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VoidAnswer {
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    balance: Option<i64>,
    #[serde(default)]
    already_voided: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SummaryAnswer {
    #[serde(default)]
    membership_summaries: Vec<SummaryEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SummaryEntry {
    member_no: Option<String>,
    tier: Option<String>,
    status: Option<MemberStatus>,
    expiry_date: Option<NaiveDate>,
    #[serde(default)]
    account_summaries: Vec<AccountEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccountEntry {
    point_type: Option<String>,
    balance: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

fn error_body(body: &[u8]) -> (String, String) {
    let e: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    (e.code.unwrap_or_default(), e.message.unwrap_or_default())
}

/// Classifies an answer that is not a 2xx, 401 (handled by the token layer) or transient.
fn refusal<T>(answer: &Answer) -> Outcome<T> {
    let (code, message) = error_body(&answer.body);
    let stable = match (answer.status, code.as_str()) {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            c @ (codes::INSUFFICIENT_POINTS
            | codes::MEMBER_EXPIRED
            | codes::MEMBER_TERMINATED
            | codes::RECEIPT_LOCKED),
        ) => c,
        (StatusCode::NOT_FOUND, _) => codes::MEMBER_NOT_FOUND,
        (StatusCode::CONFLICT, _) => codes::DUPLICATE_RECEIPT,
        _ => codes::INVALID_REQUEST,
    };
    let message = if message.is_empty() {
        format!("{} {code}", answer.status)
    } else {
        message
    };
    Outcome::business(stable, message)
}

/// Mints service tokens with `POST /api/user/authenticate`.
pub struct MembersonAuthenticator {
    http: reqwest::Client,
    base_url: String,
    credentials: MembersonCredentials,
    /// Memberson does not say how long a token lives; the cache assumes this.
    assumed_lifetime: Duration,
    /// Stamps a new token's assumed expiry.
    clock: Arc<dyn Clock>,
}

impl MembersonAuthenticator {
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<String>,
        credentials: MembersonCredentials,
        assumed_lifetime: Duration,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into(),
            credentials,
            assumed_lifetime,
            clock: Arc::new(SystemClock),
        }
    }

    /// Stamps expiries on `clock` instead of the system clock (the one the token cache
    /// decides expiry on: [`CachedTokenSource::with_clock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[async_trait]
impl TokenMinter for MembersonAuthenticator {
    async fn mint(&self, deadline: Deadline) -> Result<Token, TokenError> {
        let request = self
            .http
            .post(join(&self.base_url, "/api/user/authenticate"))
            .header("SvcAuth", self.credentials.svc_auth.expose_secret())
            .json(&serde_json::json!({
                "Username": self.credentials.username,
                "Password": self.credentials.password.expose_secret(),
            }))
            .timeout(deadline.remaining());
        let unavailable = |reason: String, retry_after| TokenError::Unavailable {
            reason,
            retry_after,
        };
        let answer = send(request)
            .await
            .map_err(|t| unavailable(t.reason, t.retry_after))?;
        token_answer(&answer, self.assumed_lifetime, self.clock.now())
    }
}

/// Reads the answer to `POST /api/user/authenticate`: the token is the body, a JSON string,
/// assumed to work for `assumed_lifetime` from `now`.
pub(crate) fn token_answer(
    answer: &Answer,
    assumed_lifetime: Duration,
    now: Timestamp,
) -> Result<Token, TokenError> {
    let unavailable = |reason: String, retry_after| TokenError::Unavailable {
        reason,
        retry_after,
    };
    match answer.status {
        s if s.is_success() => {
            let value: String = serde_json::from_slice(&answer.body)
                .map_err(|e| unavailable(format!("unreadable token: {e}"), None))?;
            let expires_at = now.plus_ms(super::token::millis(assumed_lifetime));
            Ok(Token::new(value, Some(expires_at)))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(TokenError::Refused(error_body(&answer.body).1))
        }
        s => Err(unavailable(
            format!("authenticate answered {s}"),
            answer.retry_after,
        )),
    }
}

/// Settings for [`MembersonClient::connect`].
#[derive(Clone, Debug)]
pub struct MembersonSettings {
    pub base_url: String,
    pub credentials: MembersonCredentials,
    /// The point type redeemed and reported (`COMO_CREDITS` for the Como tenant).
    pub point_type: String,
    pub policy: CallPolicy,
    pub assumed_token_lifetime: Duration,
    /// Renew a token this long before its assumed expiry.
    pub token_refresh_margin: Duration,
}

impl MembersonSettings {
    pub fn new(base_url: impl Into<String>, credentials: MembersonCredentials) -> Self {
        Self {
            base_url: base_url.into(),
            credentials,
            point_type: "COMO_CREDITS".to_owned(),
            policy: CallPolicy::default(),
            assumed_token_lifetime: Duration::from_secs(3600),
            token_refresh_margin: Duration::from_secs(300),
        }
    }
}

/// The Memberson client. Cheap to clone; clones share the connection pool and token cache.
#[derive(Clone)]
pub struct MembersonClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    svc_auth: Arc<str>,
    point_type: Arc<str>,
    redeem_description: Arc<str>,
    tokens: Arc<dyn TokenSource>,
    policy: CallPolicy,
    guards: Guards,
}

/// The `Description` of a redemption unless configured otherwise.
pub const DEFAULT_REDEEM_DESCRIPTION: &str = "Experience paid with Como Credits";

impl MembersonClient {
    /// Takes a new token now (see [`super::token::TokenSource::renew`]): minted where the client mints its
    /// own, read from the secret store where the secret holds it.
    pub async fn rotate_token(&self, deadline: Deadline) -> Result<(), String> {
        self.tokens.renew(deadline).await.map_err(|e| e.to_string())
    }

    /// A client over any token source (the cached authenticator, or a secret store).
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<Arc<str>>,
        svc_auth: impl Into<Arc<str>>,
        point_type: impl Into<Arc<str>>,
        tokens: Arc<dyn TokenSource>,
        policy: CallPolicy,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into(),
            svc_auth: svc_auth.into(),
            point_type: point_type.into(),
            redeem_description: DEFAULT_REDEEM_DESCRIPTION.into(),
            tokens,
            policy,
            guards: Guards::default(),
        }
    }

    /// A client that authenticates itself and caches its tokens.
    pub fn connect(http: reqwest::Client, settings: MembersonSettings) -> Self {
        let minter = MembersonAuthenticator::new(
            http.clone(),
            settings.base_url.clone(),
            settings.credentials.clone(),
            settings.assumed_token_lifetime,
        );
        let tokens = Arc::new(CachedTokenSource::new(
            minter,
            settings.token_refresh_margin,
        ));
        Self::new(
            http,
            settings.base_url,
            settings.credentials.svc_auth.expose_secret(),
            settings.point_type,
            tokens,
            settings.policy,
        )
    }

    /// Passes every attempt through this circuit breaker and rate limit.
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
    }

    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// Redeems with this `Description` (a deployment's wording; it may change between two
    /// attempts of one redemption, which Memberson then answers 409, taken as redeemed).
    pub fn with_redeem_description(mut self, description: impl Into<Arc<str>>) -> Self {
        self.redeem_description = description.into();
        self
    }

    pub fn redeem_description(&self) -> &str {
        &self.redeem_description
    }

    /// The point type this client redeems and reports.
    pub fn point_type(&self) -> &str {
        &self.point_type
    }

    async fn attempt<T>(
        &self,
        deadline: Deadline,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        classify: impl Fn(&Answer) -> Attempt<T>,
    ) -> Attempt<T> {
        let answer = send_with_token(self.tokens.as_ref(), deadline, |token| {
            build(token)
                .header("SvcAuth", &*self.svc_auth)
                .header("Token", token)
        })
        .await?;
        if let Some(t) = transient_status(&answer) {
            return Err(t);
        }
        classify(&answer)
    }

    /// Whether Memberson answers: the summary of a member number that no member has (a read
    /// that changes nothing; its 404 is an answer), with the service token.
    pub async fn probe(&self, deadline: Deadline) -> Result<(), String> {
        let url = join(
            &self.base_url,
            "/api/profile/COMO-SAGA-HEALTH-PROBE/summary",
        );
        super::probe(
            &self.guards,
            deadline,
            send_with_token(self.tokens.as_ref(), deadline, |token| {
                self.http
                    .get(&url)
                    .header("SvcAuth", &*self.svc_auth)
                    .header("Token", token)
            }),
        )
        .await
    }

    /// The member's status, tier and balance (step 1: check credits).
    pub async fn member_summary(
        &self,
        member_no: &str,
        deadline: Deadline,
    ) -> Outcome<MemberSummary> {
        let url = join(&self.base_url, &format!("/api/profile/{member_no}/summary"));
        call(&self.policy, &self.guards, Effect::Read, deadline, || {
            self.attempt(
                deadline,
                |_| self.http.get(&url),
                |answer| classify_summary(answer, member_no, &self.point_type),
            )
        })
        .await
    }

    /// Redeems points (step 3). Retried on any transient failure, which the `ReceiptNo` makes
    /// safe; `Unknown` only when no attempt got a definite answer.
    ///
    /// A 409 means the `ReceiptNo`, which only this saga's redeem carries, is already used: an
    /// earlier attempt of this very redemption landed with another body (a deploy that changed
    /// the description, say). The credits are taken, so the redemption is applied: reporting
    /// it refused would let the saga compensate without a void and keep the member's credits.
    pub async fn redeem(&self, request: &RedeemRequest, deadline: Deadline) -> Outcome<Redemption> {
        let url = join(&self.base_url, "/api/transaction/redeem-point");
        let outcome = call(
            &self.policy,
            &self.guards,
            Effect::IdempotentWrite,
            deadline,
            || {
                self.attempt(
                    deadline,
                    |_| self.http.post(&url).json(request),
                    classify_redeem,
                )
            },
        )
        .await;
        match outcome {
            Outcome::BusinessFailure { code, message } if code == codes::DUPLICATE_RECEIPT => {
                tracing::warn!(receipt = %request.receipt_no, %message,
                    "the ReceiptNo is already used by an earlier redeem with another body: taking it as redeemed");
                Outcome::Success(Redemption {
                    transaction_id: "unknown".to_owned(),
                    member_no: request.member_no.clone(),
                    receipt_no: request.receipt_no.clone(),
                    amount: request.amount,
                    balance: 0,
                    receipt_already_used: true,
                })
            }
            other => other,
        }
    }

    /// Settles a redeem whose outcome is unknown: sends the same request again. The answer is
    /// the first redemption's if it landed, or a fresh redemption (or refusal) if it did not.
    pub async fn reconcile_redeem(
        &self,
        request: &RedeemRequest,
        deadline: Deadline,
    ) -> Outcome<Redemption> {
        self.redeem(request, deadline).await
    }

    /// Voids a redemption (compensation of step 3).
    pub async fn void(&self, request: &VoidRequest, deadline: Deadline) -> Outcome<VoidOutcome> {
        let url = join(&self.base_url, "/api/transaction/void-redeem-point");
        call(
            &self.policy,
            &self.guards,
            Effect::IdempotentWrite,
            deadline,
            || {
                self.attempt(
                    deadline,
                    |_| self.http.post(&url).json(request),
                    classify_void,
                )
            },
        )
        .await
    }
}

/// Reads a member summary answer (`GET /api/profile/{member}/summary`) that is not transient.
pub(crate) fn classify_summary(
    answer: &Answer,
    member_no: &str,
    point_type: &str,
) -> Attempt<MemberSummary> {
    if !answer.status.is_success() {
        return Ok(refusal(answer));
    }
    let body: SummaryAnswer = decode(&answer.body)?;
    let Some(entry) = body.membership_summaries.into_iter().next() else {
        return Ok(Outcome::business(
            codes::MEMBER_NOT_FOUND,
            "no membership in the summary",
        ));
    };
    let balance = entry
        .account_summaries
        .iter()
        .find(|a| a.point_type.as_deref() == Some(point_type))
        .and_then(|a| a.balance)
        .unwrap_or(0.0);
    Ok(Outcome::Success(MemberSummary {
        member_no: entry.member_no.unwrap_or_else(|| member_no.to_owned()),
        tier: entry.tier,
        status: entry.status.unwrap_or(MemberStatus::Other),
        expiry_date: entry.expiry_date,
        // Credits are whole; a fractional balance is never enough for a fractional part more.
        balance: balance.floor() as i64,
    }))
}

/// Reads a redeem answer that is not transient: a 2xx must carry the redemption.
pub(crate) fn classify_redeem(answer: &Answer) -> Attempt<Redemption> {
    if answer.status.is_success() {
        Ok(Outcome::Success(decode(&answer.body)?))
    } else {
        Ok(refusal(answer))
    }
}

/// Reads a void answer that is not transient.
pub(crate) fn classify_void(answer: &Answer) -> Attempt<VoidOutcome> {
    if answer.status.is_success() {
        let body: VoidAnswer = decode(&answer.body)?;
        return Ok(Outcome::Success(if body.already_voided == Some(true) {
            VoidOutcome::AlreadyVoided
        } else {
            VoidOutcome::Voided {
                transaction_id: body.transaction_id.unwrap_or_default(),
                balance: body.balance.unwrap_or_default(),
            }
        }));
    }
    // Nothing under this receipt (or no such member): no points were taken, so there is
    // nothing to give back.
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(Outcome::Success(VoidOutcome::NeverRedeemed));
    }
    Ok(refusal(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_print_without_their_secrets() {
        let creds = MembersonCredentials {
            svc_auth: "svc-auth-4711".into(),
            username: "como-saga".into(),
            password: "hunter2-password".into(),
        };
        let settings = MembersonSettings::new("http://memberson.test", creds.clone());
        for printed in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{settings:?}"),
        ] {
            assert!(!printed.contains("svc-auth-4711"), "{printed}");
            assert!(!printed.contains("hunter2-password"), "{printed}");
            assert!(printed.contains("REDACTED"), "{printed}");
            assert!(printed.contains("como-saga"), "{printed}");
        }
        assert_eq!(creds.password.expose_secret(), "hunter2-password");
    }
}
