//! The simulators over raw HTTP on loopback: the contract's shapes (auth headers, error bodies,
//! envelope, `external_id` deduplication, search paging), the admin routes (ledger, faults,
//! outage, clock, stats, the request log and its peak rate), reproducible faults, the
//! shared-address layout, and shutdown.

use como_schemas::credentials::ExposeSecret;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use como_simulators::ledger::RedemptionStatus;
use como_simulators::seed::{MEMBER_RICH, POINT_TYPE, VENUE_LARGE, VENUE_SMALL};
use como_simulators::{
    Downstream, FaultKind, FaultRule, InstalledRule, Listen, MembersonLedger, RequestFilter,
    RequestRate, RequestsPage, SevenRoomsLedger, SimConfig, SimHandle, Simulators, Stats,
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
            .header("SvcAuth", creds.svc_auth.expose_secret())
            .json(&json!({"Username": creds.username, "Password": creds.password.expose_secret()}))
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
            svc_auth: creds.svc_auth.expose_secret().to_owned(),
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
            ("client_secret", creds.client_secret.expose_secret()),
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
    // The request log's paths and routes are relative to the base URL, as for a lone simulator.
    let log: RequestsPage = sim_get(&http, sim.sevenrooms_url(), "/_sim/requests").await;
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = log
        .requests
        .iter()
        .map(|r| (r.path.as_str(), r.route.as_deref(), r.op.as_deref()))
        .collect();
    let book_path = format!("/venues/{VENUE_LARGE}/book");
    assert_eq!(
        seen,
        [
            ("/auth", Some("/auth"), Some("auth")),
            (
                book_path.as_str(),
                Some("/venues/{venue_id}/book"),
                Some("book")
            ),
        ]
    );
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A moment (epoch ms) after everything sent so far has arrived: the next millisecond, once the
/// wall clock has reached it (`since_ms` includes its own millisecond).
async fn next_ms() -> u64 {
    let t = now_ms() + 1;
    while now_ms() < t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t
}

/// `GET <base><path_and_query>`, expecting 200 and a JSON body of type `T`.
async fn sim_get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path_and_query: &str,
) -> T {
    let response = http
        .get(format!("{base}{path_and_query}"))
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK, "{path_and_query}");
    response.json().await.expect("admin body")
}

/// Sends `n` summary calls at once; returns their statuses.
async fn summary_burst(m: &Memberson, n: usize) -> Vec<StatusCode> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let call = m
            .http
            .get(format!("{}/api/profile/{MEMBER_RICH}/summary", m.base))
            .header("SvcAuth", &m.svc_auth)
            .header("Token", &m.token)
            .send();
        calls.spawn(async move { call.await.expect("summary").status() });
    }
    calls.join_all().await
}

#[tokio::test]
async fn the_request_log_keeps_api_calls_in_arrival_order_and_the_peak_slides_over_them() {
    let sim = start(SimConfig::default()).await;
    let started = now_ms();
    let m = Memberson::login(&sim).await;
    let since = next_ms().await;
    let burst = summary_burst(&m, 30).await;
    assert!(burst.iter().all(|s| *s == StatusCode::OK), "{burst:?}");
    let spread_since = next_ms().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
    }
    let base = sim.memberson_url();
    // Admin calls in between are not logged.
    let _: MembersonLedger = sim_get(&m.http, base, "/_sim/ledger").await;
    let _: Stats = sim_get(&m.http, base, "/_sim/stats").await;

    let all: RequestsPage = sim_get(&m.http, base, "/_sim/requests").await;
    assert_eq!(all.dropped, 0);
    assert_eq!(all.requests.len(), 36, "authenticate, 30 + 5 summaries");
    assert!(all.requests.iter().all(|r| !r.path.starts_with("/_sim")));
    assert!(
        all.requests
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at_ms <= w[1].at_ms),
        "oldest first"
    );
    let login = &all.requests[0];
    assert_eq!(
        (
            login.method.as_str(),
            login.path.as_str(),
            login.op.as_deref(),
            login.status
        ),
        (
            "POST",
            "/api/user/authenticate",
            Some("authenticate"),
            Some(200)
        )
    );
    assert!(login.at_ms >= started && login.at_ms <= since);
    let summary = &all.requests[35];
    assert_eq!(summary.method, "GET");
    assert_eq!(summary.path, format!("/api/profile/{MEMBER_RICH}/summary"));
    assert_eq!(
        summary.route.as_deref(),
        Some("/api/profile/{member_no}/summary")
    );
    assert_eq!(
        (summary.op.as_deref(), summary.class.as_deref()),
        (Some("summary"), Some("read"))
    );
    assert_eq!((summary.status, summary.faults.len()), (Some(200), 0));

    let page: RequestsPage = sim_get(
        &m.http,
        base,
        &format!("/_sim/requests?since_ms={since}&path_prefix=/api/profile/"),
    )
    .await;
    assert_eq!(page.requests.len(), 35);
    let none: RequestsPage =
        sim_get(&m.http, base, "/_sim/requests?path_prefix=/api/transaction").await;
    assert!(none.requests.is_empty());

    let rate: RequestRate = sim_get(
        &m.http,
        base,
        &format!("/_sim/requests/rate?since_ms={since}"),
    )
    .await;
    assert_eq!((rate.total, rate.window_ms, rate.dropped), (35, 1000, 0));
    // The burst, and at most the three spread calls that follow it within a second.
    assert!((30..=33).contains(&rate.peak), "{rate:?}");
    assert!(
        rate.peak_at_ms
            .is_some_and(|t| t >= since && t < spread_since)
    );
    // Spread 300 ms apart, no two of the last five share a 200 ms window.
    let spread: RequestRate = sim_get(
        &m.http,
        base,
        &format!("/_sim/requests/rate?since_ms={spread_since}&window_ms=200"),
    )
    .await;
    assert_eq!((spread.peak, spread.total, spread.window_ms), (1, 5, 200));
    // `until_ms` bounds the range; before the login nothing arrived.
    let empty: RequestRate = sim_get(
        &m.http,
        base,
        &format!("/_sim/requests/rate?until_ms={}", started.saturating_sub(1)),
    )
    .await;
    assert_eq!((empty.peak, empty.peak_at_ms, empty.total), (0, None, 0));
    // The same answers in-process.
    let filter = RequestFilter {
        since_ms: Some(since),
        ..RequestFilter::default()
    };
    assert_eq!(
        sim.request_rate(Downstream::Memberson, &filter, Duration::from_secs(1)),
        rate
    );
    assert_eq!(sim.requests(Downstream::Memberson, &filter), page);
    // A misspelt parameter or an empty window is refused rather than ignored.
    for query in [
        "/_sim/requests?since=1",
        "/_sim/requests?window_ms=1000",
        "/_sim/requests/rate?window_ms=0",
        "/_sim/requests/rate?since_ms=soon",
    ] {
        let response = m.http.get(format!("{base}{query}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn an_outages_answers_are_logged_with_their_fault_and_left_out_of_the_rate_when_asked() {
    let sim = start(SimConfig::default()).await;
    let m = Memberson::login(&sim).await;
    let since = next_ms().await;
    let response = m
        .http
        .post(format!("{}/_sim/outage", sim.memberson_url()))
        .json(&json!({"for_ms": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refused = summary_burst(&m, 10).await;
    assert!(
        refused
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(m.summary(MEMBER_RICH).await.0, StatusCode::OK);
    let (status, _) = m
        .post("/api/transaction/redeem-point", redeem_body("R-log", 1))
        .await;
    assert_eq!(status, StatusCode::OK);

    let base = sim.memberson_url();
    let page: RequestsPage =
        sim_get(&m.http, base, &format!("/_sim/requests?since_ms={since}")).await;
    assert_eq!(page.requests.len(), 12);
    for r in &page.requests[..10] {
        assert_eq!(r.status, Some(503));
        assert_eq!(r.faults, ["outage"]);
    }
    let redeem = &page.requests[11];
    assert_eq!(
        (redeem.op.as_deref(), redeem.class.as_deref(), redeem.status),
        (Some("redeem"), Some("write"), Some(200))
    );
    assert!(redeem.faults.is_empty());

    let everything: RequestRate = sim_get(
        &m.http,
        base,
        &format!("/_sim/requests/rate?since_ms={since}"),
    )
    .await;
    assert_eq!(everything.total, 12);
    assert!(everything.peak >= 10, "{everything:?}");
    // Repeated or comma-separated, the excluded statuses leave the outage's answers out.
    for exclude in [
        "exclude_status=503",
        "exclude_status=429,503",
        "exclude_status=429&exclude_status=503",
    ] {
        let answered: RequestRate = sim_get(
            &m.http,
            base,
            &format!("/_sim/requests/rate?since_ms={since}&{exclude}"),
        )
        .await;
        assert_eq!((answered.total, answered.peak), (2, 2), "{exclude}");
    }
    let writes: RequestRate = sim_get(
        &m.http,
        base,
        &format!(
            "/_sim/requests/rate?since_ms={since}&path_prefix=/api/transaction/&exclude_status=503"
        ),
    )
    .await;
    assert_eq!((writes.total, writes.peak), (1, 1));
}

#[tokio::test]
async fn a_request_still_running_is_logged_without_a_status_until_it_is_answered() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(
        Downstream::SevenRooms,
        vec![FaultRule::new(FaultKind::Hang { ms: 600 }).on(["auth"])],
    )
    .unwrap();
    let creds = sim.sevenrooms_credentials().clone();
    let url = format!("{}/auth", sim.sevenrooms_url());
    let http = reqwest::Client::new();
    let call = http
        .post(url)
        .form(&[
            ("client_id", creds.client_id),
            (
                "client_secret",
                creds.client_secret.expose_secret().to_owned(),
            ),
        ])
        .send();
    let hanging = tokio::spawn(async move { call.await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = sim.sevenrooms_url();
    let running: RequestsPage = sim_get(&http, base, "/_sim/requests").await;
    assert_eq!(running.requests.len(), 1);
    let auth = &running.requests[0];
    assert_eq!((auth.op.as_deref(), auth.status), (Some("auth"), None));
    assert_eq!(auth.faults, ["hang"]);
    // A request still running is not left out by `exclude_status`.
    let rate: RequestRate = sim_get(&http, base, "/_sim/requests/rate?exclude_status=200").await;
    assert_eq!(rate.total, 1);
    assert_eq!(hanging.await.unwrap().unwrap(), StatusCode::OK);
    let answered: RequestsPage = sim_get(&http, base, "/_sim/requests").await;
    assert_eq!(answered.requests[0].status, Some(200));
    assert_eq!(answered.requests[0].seq, auth.seq);
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
