//! The simulators over raw HTTP on loopback: the contract's shapes (auth headers, error bodies,
//! envelope, `external_id` deduplication, search paging), the admin routes (ledger, faults,
//! outage, clock, stats), reproducible faults, the shared-address layout, and shutdown.

use std::time::Duration;

use chrono::Utc;
use como_simulators::ledger::RedemptionStatus;
use como_simulators::seed::{MEMBER_RICH, POINT_TYPE, VENUE_LARGE, VENUE_SMALL};
use como_simulators::{
    Downstream, FaultKind, FaultRule, InstalledRule, Listen, MembersonLedger, SevenRoomsLedger,
    SimConfig, SimHandle, Simulators, Stats,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(config: SimConfig) -> SimHandle {
    Simulators::start(SimConfig {
        bulk_members: 5,
        ..config
    })
    .await
    .expect("simulators start")
}

struct Memberson {
    http: reqwest::Client,
    base: String,
    svc_auth: String,
    token: String,
}

impl Memberson {
    async fn login(sim: &SimHandle) -> Self {
        let http = reqwest::Client::new();
        let creds = sim.memberson_credentials();
        let response = http
            .post(format!("{}/api/user/authenticate", sim.memberson_url()))
            .header("SvcAuth", &creds.svc_auth)
            .json(&json!({"Username": creds.username, "Password": creds.password}))
            .send()
            .await
            .expect("authenticate");
        assert_eq!(response.status(), StatusCode::OK);
        // The body is a bare JSON string holding a GUID.
        let token: String = response.json().await.expect("a JSON string");
        assert!(uuid::Uuid::parse_str(&token).is_ok(), "{token}");
        Self {
            http,
            base: sim.memberson_url().to_owned(),
            svc_auth: creds.svc_auth.clone(),
            token,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("SvcAuth", &self.svc_auth)
            .header("Token", &self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn summary(&self, member: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/api/profile/{member}/summary", self.base))
            .header("SvcAuth", &self.svc_auth)
            .header("Token", &self.token)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn redeem_body(receipt: &str, amount: i64) -> Value {
    json!({
        "MemberNo": MEMBER_RICH, "PointType": POINT_TYPE, "Amount": amount,
        "TransactionDate": "2026-03-01T12:00:00Z", "Location": "COMO Dempsey",
        "RedemptionCode": "EXPERIENCE", "Description": "Dinner", "ReceiptNo": receipt,
    })
}

async fn sevenrooms_token(http: &reqwest::Client, sim: &SimHandle) -> String {
    let creds = sim.sevenrooms_credentials();
    let body: Value = http
        .post(format!("{}/auth", sim.sevenrooms_url()))
        .form(&[
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("auth")
        .json()
        .await
        .expect("envelope");
    assert_eq!(body["status"], 200);
    assert!(body["data"]["token_expiration_datetime"].is_string());
    body["data"]["token"].as_str().expect("token").to_owned()
}

fn booking_date() -> String {
    (Utc::now().date_naive() + chrono::Duration::days(5)).to_string()
}

async fn book(
    http: &reqwest::Client,
    sim: &SimHandle,
    token: &str,
    venue: &str,
    external_id: &str,
) -> (StatusCode, Value) {
    let response = http
        .put(format!("{}/venues/{venue}/book", sim.sevenrooms_url()))
        .header("Authorization", token)
        .form(&[
            ("date", booking_date().as_str()),
            ("time", "19:30"),
            ("party_size", "2"),
            ("first_name", "Ada"),
            ("last_name", "Lovelace"),
            ("phone", "+6591234567"),
            ("external_id", external_id),
        ])
        .send()
        .await
        .expect("book");
    let status = response.status();
    (status, response.json().await.expect("envelope"))
}

#[tokio::test]
async fn memberson_speaks_the_contract_and_its_ledger_is_served_over_http() {
    let sim = start(SimConfig::default()).await;
    let m = Memberson::login(&sim).await;

    let (status, summary) = m.summary(MEMBER_RICH).await;
    assert_eq!(status, StatusCode::OK);
    let entry = &summary["MembershipSummaries"][0];
    assert_eq!(entry["Status"], "ACTIVE");
    assert_eq!(entry["AccountSummaries"][0]["Balance"], 250_000);

    let (status, first) = m
        .post("/api/transaction/redeem-point", redeem_body("R-1", 400))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["Balance"], 249_600);
    let (status, again) = m
        .post("/api/transaction/redeem-point", redeem_body("R-1", 400))
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    let (status, conflict) = m
        .post("/api/transaction/redeem-point", redeem_body("R-1", 401))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["Code"], "DUPLICATE_RECEIPT");

    let void = json!({"MemberNo": MEMBER_RICH, "ReceiptNo": "R-1", "Reason": "test"});
    let (status, voided) = m
        .post("/api/transaction/void-redeem-point", void.clone())
        .await;
    assert_eq!(
        (status, &voided["AlreadyVoided"]),
        (StatusCode::OK, &json!(false))
    );
    let (_, again) = m.post("/api/transaction/void-redeem-point", void).await;
    assert_eq!(again["AlreadyVoided"], true);
    let (status, missing) = m
        .post(
            "/api/transaction/void-redeem-point",
            json!({"MemberNo": MEMBER_RICH, "ReceiptNo": "R-none", "Reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, &missing["Code"]),
        (StatusCode::NOT_FOUND, &json!("RECEIPT_NOT_FOUND"))
    );

    let (status, body) = m.summary("CM000000").await;
    assert_eq!(
        (status, &body["Code"]),
        (StatusCode::NOT_FOUND, &json!("MEMBER_NOT_FOUND"))
    );
    let (status, body) = m
        .post("/api/transaction/redeem-point", json!({"oops": 1}))
        .await;
    assert_eq!(
        (status, &body["Code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_REQUEST"))
    );

    let over_http: MembersonLedger = m
        .http
        .get(format!("{}/_sim/ledger", sim.memberson_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, sim.memberson_ledger());
    let member = over_http.member(MEMBER_RICH).unwrap();
    assert_eq!(member.redemptions.len(), 1);
    let touched: MembersonLedger = m
        .http
        .get(format!("{}/_sim/ledger?touched=true", sim.memberson_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(over_http.members.len() > 10);
    assert_eq!(
        touched.members.len(),
        1,
        "only the member something happened to"
    );
    assert_eq!(member.redemptions[0].status, RedemptionStatus::Voided);
    assert_eq!(member.balance, 250_000);
}

#[tokio::test]
async fn memberson_refuses_missing_wrong_and_expired_tokens() {
    let sim = start(SimConfig::default()).await;
    let mut m = Memberson::login(&sim).await;
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);

    // The clock moves past the token's lifetime (1 h by default).
    let advanced: Value = m
        .http
        .post(format!("{}/_sim/clock/advance", sim.memberson_url()))
        .json(&json!({"ms": 3_601_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(advanced["offset_ms"], 3_601_000);
    let (status, body) = m.summary(MEMBER_RICH).await;
    assert_eq!(
        (status, &body["Code"]),
        (StatusCode::UNAUTHORIZED, &json!("INVALID_TOKEN"))
    );

    m.token = "not-a-token".into();
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::UNAUTHORIZED);
    let fresh = Memberson::login(&sim).await;
    assert_eq!(fresh.summary(MEMBER_RICH).await.0, StatusCode::OK);
    let status = fresh
        .http
        .post(format!("{}/_sim/tokens/expire", sim.memberson_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(fresh.summary(MEMBER_RICH).await.0, StatusCode::UNAUTHORIZED);
    let stats: Stats = fresh
        .http
        .get(format!("{}/_sim/stats", sim.memberson_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((stats.tokens_issued, stats.unauthorized), (2, 3));
}

#[tokio::test]
async fn sevenrooms_wants_the_bare_token_and_deduplicates_external_ids_per_venue() {
    let sim = start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let token = sevenrooms_token(&http, &sim).await;
    let venues = |auth: String| {
        http.get(format!("{}/venues", sim.sevenrooms_url()))
            .header("Authorization", auth)
            .send()
    };
    let refused = venues(format!("Bearer {token}")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert!(body["request_id"].is_string() && body["msg"].is_string());
    let listed: Value = venues(token.clone()).await.unwrap().json().await.unwrap();
    assert!(listed["data"]["results"].as_array().unwrap().len() >= 5);

    let (status, first) = book(&http, &sim, &token, VENUE_LARGE, "ext-1").await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = book(&http, &sim, &token, VENUE_LARGE, "ext-1").await;
    assert_eq!(
        again["data"]["reservation_id"],
        first["data"]["reservation_id"]
    );
    let (_, elsewhere) = book(&http, &sim, &token, VENUE_SMALL, "ext-1").await;
    assert_ne!(
        elsewhere["data"]["reservation_id"],
        first["data"]["reservation_id"]
    );

    let ledger: SevenRoomsLedger = http
        .get(format!("{}/_sim/ledger", sim.sevenrooms_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger, sim.sevenrooms_ledger());
    assert_eq!(ledger.with_external_id("ext-1").count(), 2);
    assert!(ledger.reservations.iter().all(|r| r.is_live()));

    let id = first["data"]["reservation_id"].as_str().unwrap();
    let cancel = || {
        http.delete(format!("{}/reservations/{id}", sim.sevenrooms_url()))
            .header("Authorization", &token)
            .send()
    };
    assert_eq!(cancel().await.unwrap().status(), StatusCode::OK);
    let twice = cancel().await.unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    let body: Value = twice.json().await.unwrap();
    assert_eq!(body["msg"], "Reservation has already been cancelled.");
}

#[tokio::test]
async fn sevenrooms_search_pages_by_cursor_and_echoes_external_ids() {
    let sim = start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let token = sevenrooms_token(&http, &sim).await;
    for i in 0..5 {
        assert_eq!(
            book(&http, &sim, &token, VENUE_LARGE, &format!("page-{i}"))
                .await
                .0,
            StatusCode::OK
        );
    }
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let mut query = vec![
            ("from_date", booking_date()),
            ("to_date", booking_date()),
            ("limit", "2".to_owned()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page: Value = http
            .get(format!("{}/reservations", sim.sevenrooms_url()))
            .header("Authorization", &token)
            .query(&query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["data"]["results"].as_array().unwrap() {
            seen.push(r["external_id"].as_str().unwrap().to_owned());
        }
        match page["data"]["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>()
    );
    let too_many = http
        .get(format!("{}/reservations", sim.sevenrooms_url()))
        .header("Authorization", &token)
        .query(&[
            ("from_date", booking_date()),
            ("to_date", booking_date()),
            ("limit", "401".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn faults_are_set_read_and_cleared_at_run_time_over_http() {
    let sim = start(SimConfig::default()).await;
    let m = Memberson::login(&sim).await;
    let faults = format!("{}/_sim/faults", sim.memberson_url());
    let installed: Vec<InstalledRule> = m
        .http
        .put(&faults)
        .json(&json!({"kind": "server_error", "status": 502, "ops": ["summary"], "times": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
    let read: Vec<InstalledRule> = m
        .http
        .get(&faults)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read[0].fired, 1);

    let invalid = m
        .http
        .post(&faults)
        .json(&json!({"kind": "server_error", "ops": ["no-such-op"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);

    let rate_limited = m
        .http
        .post(&faults)
        .json(&json!([{"kind": "rate_limited", "retry_after_secs": 7, "ops": ["summary"]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(rate_limited.status(), StatusCode::OK);
    let response = m
        .http
        .get(format!("{}/api/profile/{MEMBER_RICH}/summary", m.base))
        .header("SvcAuth", &m.svc_auth)
        .header("Token", &m.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");

    let cleared: Vec<InstalledRule> = m
        .http
        .delete(&faults)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cleared.is_empty());
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_outage_fails_every_call_for_its_window_but_not_the_admin_routes() {
    let sim = start(SimConfig::default()).await;
    let m = Memberson::login(&sim).await;
    let response = m
        .http
        .post(format!("{}/_sim/outage", sim.memberson_url()))
        .json(&json!({"for_ms": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        m.summary(MEMBER_RICH).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _) = m
        .post("/api/transaction/redeem-point", redeem_body("R-out", 1))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let ledger = m
        .http
        .get(format!("{}/_sim/ledger", sim.memberson_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ledger.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
}

/// The statuses of `n` sequential summary calls under a 30 % chance of a 500.
async fn statuses(seed: u64, n: usize) -> Vec<u16> {
    let mut config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    config.faults.memberson = vec![
        FaultRule::new(FaultKind::ServerError { status: 500 })
            .on(["summary"])
            .probability(0.3),
    ];
    let sim = start(config).await;
    let m = Memberson::login(&sim).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(m.summary(MEMBER_RICH).await.0.as_u16());
    }
    out
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed() {
    let a = statuses(42, 60).await;
    assert_eq!(a, statuses(42, 60).await);
    assert_ne!(a, statuses(43, 60).await);
    assert!(a.contains(&500) && a.contains(&200));
}

#[tokio::test]
async fn both_simulators_can_share_one_address_under_path_prefixes() {
    let sim = start(SimConfig {
        listen: Listen::Shared("127.0.0.1:0".parse().unwrap()),
        ..SimConfig::default()
    })
    .await;
    assert!(sim.memberson_url().ends_with("/memberson"));
    assert!(sim.sevenrooms_url().ends_with("/sevenrooms"));
    let m = Memberson::login(&sim).await;
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
    let http = reqwest::Client::new();
    let token = sevenrooms_token(&http, &sim).await;
    assert_eq!(
        book(&http, &sim, &token, VENUE_LARGE, "shared").await.0,
        StatusCode::OK
    );
    let ledger: SevenRoomsLedger = http
        .get(format!("{}/_sim/ledger", sim.sevenrooms_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger.reservations.len(), 1);
}

#[tokio::test]
async fn shutdown_ends_hanging_requests_instead_of_waiting_for_them() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(
        Downstream::SevenRooms,
        vec![FaultRule::new(FaultKind::Hang { ms: 60_000 }).on(["auth"])],
    )
    .unwrap();
    let url = format!("{}/auth", sim.sevenrooms_url());
    let hanging = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .form(&[("client_id", "x")])
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .expect("shutdown does not wait for the 60 s hang")
        .expect("clean shutdown");
    let answer = hanging.await.unwrap();
    assert!(answer.is_err() || answer.is_ok_and(|s| s == StatusCode::SERVICE_UNAVAILABLE));
}
