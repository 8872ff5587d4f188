//! The Memberson CRM simulator (the Como tenant): service-token authentication, member summary,
//! redeem points idempotent on `ReceiptNo`, and void, with the contract's status codes and
//! `{"Code","Message"}` error bodies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{Common, Simulated, admin_routes};
use crate::faults::{Action, Plan};
use crate::ledger::{MemberLedger, MembersonLedger, RedemptionEntry, RedemptionStatus};
use crate::seed::{MemberStatus, POINT_TYPE, SeedMember};

/// Operation names, for fault rules.
pub const OPS: &[&str] = &["authenticate", "summary", "redeem", "void"];
/// The operations that change the ledger; a `late` fault lands late on these.
pub const WRITE_OPS: &[&str] = &["redeem", "void"];
/// Business refusals a `refuse` fault can force on `redeem`.
pub const REDEEM_REFUSALS: &[&str] =
    &["INSUFFICIENT_POINTS", "MEMBER_EXPIRED", "MEMBER_TERMINATED"];
/// Business refusals a `refuse` fault can force on `void`: `RECEIPT_LOCKED`, the redemption is
/// locked (for settlement) and the CRM will not void it until a person unlocks it. The void
/// answers 422 and gives nothing back.
pub const VOID_REFUSALS: &[&str] = &["RECEIPT_LOCKED"];
/// Every code a `refuse` fault accepts: [`REDEEM_REFUSALS`] act on `redeem` and
/// [`VOID_REFUSALS`] on `void`; a code on an operation it does not belong to changes nothing.
pub const REFUSALS: &[&str] = &[
    "INSUFFICIENT_POINTS",
    "MEMBER_EXPIRED",
    "MEMBER_TERMINATED",
    "RECEIPT_LOCKED",
];

use como_schemas::credentials::ExposeSecret;
pub use como_schemas::credentials::MembersonCredentials;

/// The long-lived credentials the simulator accepts unless configured otherwise (the local
/// stack's and the tests').
pub fn simulator_credentials() -> MembersonCredentials {
    MembersonCredentials {
        svc_auth: "Y29tby1zYWdh,c2ltdWxhdG9yLXNlY3JldA==".into(),
        username: "como-saga".to_owned(),
        password: "simulator-secret".into(),
    }
}

#[derive(Clone, Debug)]
pub struct MembersonConfig {
    /// How long a service token stays valid. The real lifetime is not published.
    pub token_lifetime: Duration,
    pub credentials: MembersonCredentials,
}

impl Default for MembersonConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            credentials: simulator_credentials(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthenticateBody {
    username: String,
    password: String,
}

/// The redeem request as the contract spells it; kept whole so that a replay can be compared.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RedeemBody {
    member_no: String,
    point_type: String,
    amount: i64,
    #[serde(default)]
    transaction_date: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    redemption_code: Option<String>,
    #[serde(default)]
    description: Option<String>,
    receipt_no: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RedeemAnswer {
    transaction_id: String,
    member_no: String,
    receipt_no: String,
    amount: i64,
    balance: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VoidBody {
    member_no: String,
    receipt_no: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VoidAnswer {
    transaction_id: String,
    member_no: String,
    receipt_no: String,
    amount: i64,
    balance: i64,
    already_voided: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SummaryAnswer<'a> {
    membership_summaries: [MembershipSummary<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MembershipSummary<'a> {
    member_no: &'a str,
    #[serde(rename = "Type")]
    kind: &'static str,
    tier: &'a str,
    status: &'static str,
    expiry_date: NaiveDate,
    account_summaries: [AccountSummary; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AccountSummary {
    point_type: &'static str,
    balance: i64,
}

struct Redemption {
    body: RedeemBody,
    answer: RedeemAnswer,
    redeemed_at: DateTime<Utc>,
    void: Option<(String, DateTime<Utc>, Option<String>)>,
}

struct Member {
    seed: SeedMember,
    balance: i64,
    redemptions: Vec<Redemption>,
    by_receipt: HashMap<String, usize>,
}

pub(crate) struct Memberson {
    common: Common,
    config: MembersonConfig,
    members: Mutex<HashMap<String, Member>>,
    tokens: crate::common::TokenTable,
    transaction_seq: AtomicU64,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "Code": code, "Message": message })),
    )
        .into_response()
}

impl Memberson {
    pub fn new(common: Common, config: MembersonConfig, members: Vec<SeedMember>) -> Self {
        let members = members
            .into_iter()
            .map(|seed| {
                let member = Member {
                    balance: seed.balance,
                    seed: seed.clone(),
                    redemptions: Vec::new(),
                    by_receipt: HashMap::new(),
                };
                (seed.member_no, member)
            })
            .collect();
        Self {
            common,
            config,
            members: Mutex::new(members),
            tokens: crate::common::TokenTable::default(),
            transaction_seq: AtomicU64::new(1),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let log = self.common.log.clone();
        Router::new()
            .route("/api/user/authenticate", post(authenticate))
            .route("/api/profile/{member_no}/summary", get(summary))
            .route("/api/transaction/redeem-point", post(redeem))
            .route("/api/transaction/void-redeem-point", post(void))
            .merge(admin_routes::<Memberson>())
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(
                log,
                crate::common::detached,
            ))
    }

    pub fn common(&self) -> &Common {
        &self.common
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_transaction_id(&self) -> String {
        format!(
            "TX{:010}",
            self.transaction_seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn unauthorized(&self, code: &str, message: &str) -> Response {
        self.common.unauthorized.fetch_add(1, Ordering::Relaxed);
        error(StatusCode::UNAUTHORIZED, code, message)
    }

    fn check_svc_auth(&self, headers: &HeaderMap) -> Result<(), Response> {
        match headers.get("SvcAuth").and_then(|v| v.to_str().ok()) {
            Some(v) if v == self.config.credentials.svc_auth.expose_secret() => Ok(()),
            _ => Err(self.unauthorized("INVALID_SVCAUTH", "SvcAuth is missing or wrong.")),
        }
    }

    /// Checks `SvcAuth` and `Token`; an `ExpireToken` plan revokes the presented token first.
    fn check_auth(&self, headers: &HeaderMap, plan: &Plan) -> Result<(), Response> {
        self.check_svc_auth(headers)?;
        let Some(token) = headers.get("Token").and_then(|v| v.to_str().ok()) else {
            return Err(self.unauthorized("INVALID_TOKEN", "Token is missing."));
        };
        if plan.action == Action::ExpireToken {
            self.tokens.revoke(token);
        }
        if self.tokens.is_valid(token, self.common.clock.now()) {
            Ok(())
        } else {
            Err(self.unauthorized("INVALID_TOKEN", "Token is invalid or has expired."))
        }
    }

    pub fn expire_all_tokens(&self) {
        self.tokens.revoke_all();
    }

    pub fn snapshot(&self) -> MembersonLedger {
        let members = self.members();
        let mut out: Vec<MemberLedger> = members
            .values()
            .map(|m| MemberLedger {
                member_no: m.seed.member_no.clone(),
                status: m.seed.status,
                tier: m.seed.tier.to_owned(),
                opening_balance: m.seed.balance,
                balance: m.balance,
                redemptions: m
                    .redemptions
                    .iter()
                    .map(|r| RedemptionEntry {
                        receipt_no: r.answer.receipt_no.clone(),
                        transaction_id: r.answer.transaction_id.clone(),
                        point_type: r.body.point_type.clone(),
                        amount: r.answer.amount,
                        status: if r.void.is_some() {
                            RedemptionStatus::Voided
                        } else {
                            RedemptionStatus::Redeemed
                        },
                        redeemed_at: r.redeemed_at,
                        voided_at: r.void.as_ref().map(|v| v.1),
                        void_transaction_id: r.void.as_ref().map(|v| v.0.clone()),
                        void_reason: r.void.as_ref().and_then(|v| v.2.clone()),
                    })
                    .collect(),
            })
            .collect();
        drop(members);
        out.sort_by(|a, b| a.member_no.cmp(&b.member_no));
        MembersonLedger { members: out }
    }

    fn do_redeem(&self, body: RedeemBody, plan: &Plan) -> Response {
        if body.amount <= 0 || body.receipt_no.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "Amount must be positive and ReceiptNo present.",
            );
        }
        if body.point_type != POINT_TYPE {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_POINT_TYPE",
                "Unknown point type.",
            );
        }
        let now = self.common.clock.now();
        let mut members = self.members();
        let Some(member) = members.get_mut(&body.member_no) else {
            return error(
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
                "Member not found.",
            );
        };
        // Idempotency first: a replay answers as the first time, whatever happened since.
        if let Some(&i) = member.by_receipt.get(&body.receipt_no) {
            let first = &member.redemptions[i];
            return if first.body == body {
                Json(first.answer.clone()).into_response()
            } else {
                error(
                    StatusCode::CONFLICT,
                    "DUPLICATE_RECEIPT",
                    "ReceiptNo was already used with another request.",
                )
            };
        }
        let refusal = match (&plan.action, member.seed.status) {
            (Action::Refuse(code), _) if REDEEM_REFUSALS.contains(&code.as_str()) => {
                Some(code.as_str())
            }
            (_, MemberStatus::Expired) => Some("MEMBER_EXPIRED"),
            (_, MemberStatus::Terminated) => Some("MEMBER_TERMINATED"),
            _ if member.balance < body.amount => Some("INSUFFICIENT_POINTS"),
            _ => None,
        };
        if let Some(code) = refusal {
            let message = match code {
                "MEMBER_EXPIRED" => "Membership has expired.",
                "MEMBER_TERMINATED" => "Membership is terminated.",
                _ => "Insufficient points.",
            };
            return error(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        }
        member.balance -= body.amount;
        let answer = RedeemAnswer {
            transaction_id: self.next_transaction_id(),
            member_no: body.member_no.clone(),
            receipt_no: body.receipt_no.clone(),
            amount: body.amount,
            balance: member.balance,
        };
        member
            .by_receipt
            .insert(body.receipt_no.clone(), member.redemptions.len());
        member.redemptions.push(Redemption {
            body,
            answer: answer.clone(),
            redeemed_at: now,
            void: None,
        });
        Json(answer).into_response()
    }

    fn do_void(&self, body: VoidBody, plan: &Plan) -> Response {
        let now = self.common.clock.now();
        let mut members = self.members();
        let Some(member) = members.get_mut(&body.member_no) else {
            return error(
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
                "Member not found.",
            );
        };
        let Some(&i) = member.by_receipt.get(&body.receipt_no) else {
            return error(
                StatusCode::NOT_FOUND,
                "RECEIPT_NOT_FOUND",
                "No redemption with this ReceiptNo.",
            );
        };
        let amount = member.redemptions[i].answer.amount;
        let already_voided = member.redemptions[i].void.is_some();
        if !already_voided
            && let Action::Refuse(code) = &plan.action
            && VOID_REFUSALS.contains(&code.as_str())
        {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "The redemption is locked for settlement and cannot be voided.",
            );
        }
        if !already_voided {
            member.balance += amount;
            let id = self.next_transaction_id();
            member.redemptions[i].void = Some((id, now, body.reason));
        }
        let transaction_id = member.redemptions[i]
            .void
            .as_ref()
            .map(|v| v.0.clone())
            .unwrap_or_default();
        Json(VoidAnswer {
            transaction_id,
            member_no: body.member_no,
            receipt_no: body.receipt_no,
            amount,
            balance: member.balance,
            already_voided,
        })
        .into_response()
    }
}

impl Simulated for Memberson {
    type Ledger = MembersonLedger;

    fn common(&self) -> &Common {
        &self.common
    }

    fn ledger(&self, touched: bool) -> MembersonLedger {
        let mut ledger = self.snapshot();
        if touched {
            ledger.members.retain(|m| !m.redemptions.is_empty());
        }
        ledger
    }

    fn expire_tokens(&self) {
        self.expire_all_tokens();
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("Invalid request body: {e}"),
        )
    })
}

async fn authenticate(
    State(sim): State<Arc<Memberson>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plan = match sim.common.admit("authenticate", error).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    if let Err(r) = sim.check_svc_auth(&headers) {
        return r;
    }
    let body: AuthenticateBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let creds = &sim.config.credentials;
    if body.username != creds.username || body.password != creds.password.expose_secret() {
        return sim.unauthorized("INVALID_CREDENTIALS", "Username or password is wrong.");
    }
    let now = sim.common.clock.now();
    let lifetime =
        chrono::Duration::from_std(sim.config.token_lifetime).unwrap_or(chrono::Duration::hours(1));
    let token = uuid::Uuid::new_v4().to_string();
    sim.tokens.issue(token.clone(), now, now + lifetime);
    sim.common.tokens_issued.fetch_add(1, Ordering::Relaxed);
    let response = Json(token).into_response();
    sim.common.finish(&plan, response, error).await
}

async fn summary(
    State(sim): State<Arc<Memberson>>,
    Path(member_no): Path<String>,
    headers: HeaderMap,
) -> Response {
    let plan = match sim.common.admit("summary", error).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    if let Err(r) = sim.check_auth(&headers, &plan) {
        return r;
    }
    let response = {
        let members = sim.members();
        match members.get(&member_no) {
            None => error(
                StatusCode::NOT_FOUND,
                "MEMBER_NOT_FOUND",
                "Member not found.",
            ),
            Some(m) => Json(SummaryAnswer {
                membership_summaries: [MembershipSummary {
                    member_no: &m.seed.member_no,
                    kind: "Individual",
                    tier: m.seed.tier,
                    status: m.seed.status.as_str(),
                    expiry_date: m.seed.expiry_date,
                    account_summaries: [AccountSummary {
                        point_type: POINT_TYPE,
                        balance: m.balance,
                    }],
                }],
            })
            .into_response(),
        }
    };
    sim.common.finish(&plan, response, error).await
}

async fn redeem(State(sim): State<Arc<Memberson>>, headers: HeaderMap, body: Bytes) -> Response {
    let plan = match sim.common.admit("redeem", error).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    if let Err(r) = sim.check_auth(&headers, &plan) {
        return r;
    }
    let response = match parse::<RedeemBody>(&body) {
        Ok(body) => sim.do_redeem(body, &plan),
        Err(r) => r,
    };
    sim.common.finish(&plan, response, error).await
}

async fn void(State(sim): State<Arc<Memberson>>, headers: HeaderMap, body: Bytes) -> Response {
    let plan = match sim.common.admit("void", error).await {
        Ok(plan) => plan,
        Err(r) => return r,
    };
    if let Err(r) = sim.check_auth(&headers, &plan) {
        return r;
    }
    let response = match parse::<VoidBody>(&body) {
        Ok(body) => sim.do_void(body, &plan),
        Err(r) => r,
    };
    sim.common.finish(&plan, response, error).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultKind, FaultRule};
    use crate::seed::MEMBER_RICH;

    fn memberson() -> Memberson {
        let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let common = Common::new(
            1,
            OPS,
            WRITE_OPS,
            REFUSALS,
            crate::SimClock::new(),
            shutdown_rx,
        );
        Memberson::new(common, MembersonConfig::default(), crate::seed::members(0))
    }

    fn redeem_body(receipt_no: &str, amount: i64) -> RedeemBody {
        RedeemBody {
            member_no: MEMBER_RICH.to_owned(),
            point_type: POINT_TYPE.to_owned(),
            amount,
            transaction_date: None,
            location: None,
            redemption_code: None,
            description: None,
            receipt_no: receipt_no.to_owned(),
        }
    }

    fn void_body(receipt_no: &str) -> VoidBody {
        VoidBody {
            member_no: MEMBER_RICH.to_owned(),
            receipt_no: receipt_no.to_owned(),
            reason: Some("test".to_owned()),
        }
    }

    fn refuse(sim: &Memberson, code: &str, op: &str) -> Plan {
        sim.common
            .faults
            .set(vec![
                FaultRule::new(FaultKind::Refuse { code: code.into() }).on([op]),
            ])
            .expect("a valid refusal");
        sim.common.faults.plan(op)
    }

    async fn code_of(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, body["Code"].as_str().unwrap_or_default().to_owned())
    }

    fn rich(sim: &Memberson) -> MemberLedger {
        sim.snapshot()
            .members
            .into_iter()
            .find(|m| m.member_no == MEMBER_RICH)
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_void_answers_422_and_gives_nothing_back() {
        let sim = memberson();
        let redeemed = sim.do_redeem(redeem_body("CS-locked", 1_500), &Plan::default());
        assert_eq!(redeemed.status(), StatusCode::OK);
        let before = rich(&sim);

        let plan = refuse(&sim, "RECEIPT_LOCKED", "void");
        let refused = sim.do_void(void_body("CS-locked"), &plan);
        assert_eq!(
            code_of(refused).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "RECEIPT_LOCKED".to_owned()
            )
        );
        let after = rich(&sim);
        assert_eq!(after.balance, before.balance);
        assert_eq!(
            after.redemptions[0].status,
            RedemptionStatus::Redeemed,
            "{after:?}"
        );

        // Once the lock is gone the void goes through.
        let voided = sim.do_void(void_body("CS-locked"), &Plan::default());
        assert_eq!(voided.status(), StatusCode::OK);
        let after = rich(&sim);
        assert_eq!(after.balance, after.opening_balance);
        assert_eq!(after.redemptions[0].status, RedemptionStatus::Voided);
    }

    #[tokio::test]
    async fn a_refusal_code_acts_only_on_its_own_operation() {
        let sim = memberson();
        // A void refusal on a redeem, and a redeem refusal on a void, change nothing.
        let plan = refuse(&sim, "RECEIPT_LOCKED", "redeem");
        let redeemed = sim.do_redeem(redeem_body("CS-other", 1_000), &plan);
        assert_eq!(redeemed.status(), StatusCode::OK);
        let plan = refuse(&sim, "INSUFFICIENT_POINTS", "void");
        let voided = sim.do_void(void_body("CS-other"), &plan);
        assert_eq!(voided.status(), StatusCode::OK);
        // A void already done answers as done, locked or not.
        let plan = refuse(&sim, "RECEIPT_LOCKED", "void");
        let again = sim.do_void(void_body("CS-other"), &plan);
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(rich(&sim).balance, rich(&sim).opening_balance);
    }
}
