//! Viewing an experience before paying, over real HTTP: the API on the whole system in-process
//! (`spawn_app`, a real SQLite file), SevenRooms being the simulator over HTTP, whose own
//! counts of the calls it received (`/_sim/stats`) and ledgers are the truth.
//!
//! - a cache hit costs no SevenRooms call, and 100 concurrent views of one venue cost one;
//! - an outage serves the last view read, marked stale with its age; with nothing cached it
//!   is a 503 that says SevenRooms is unavailable and when to retry; so is an open circuit,
//!   without calling SevenRooms at all;
//! - the price is the venue's configured one (changed in the store, followed live), whatever
//!   a client quotes;
//! - the venue's settings in the store steer views and bookings: its own SevenRooms API, and
//!   only the shifts sold for credits;
//! - tokens rotate (on `up`'s schedule, while the simulators expire every old token) while
//!   views and bookings run, and none fails;
//! - `como-saga venues` sets, lists and removes venues, refusing bad settings by name.

mod api_support;

use std::time::{Duration, Instant};

use api_support::Api;
use chrono::{NaiveDate, Utc};
use como_api::auth::Role;
use como_app::settings::ExperienceTtls;
use como_orchestrator::VenueSettings;
use como_orchestrator::catalogue;
use como_ports::records::SharedHealth;
use como_schemas::{BookingRequested, Credits, MemberNo, SlotTime, VenueId, examples};
use como_simulators::seed::{MEMBER_RICH, VENUE_LARGE};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn day(ahead: u64) -> NaiveDate {
    Utc::now().date_naive() + chrono::Days::new(ahead)
}

/// Calls SevenRooms (`base`) received for `op`, by its own count.
async fn calls(api: &Api, base: &str, op: &str) -> u64 {
    let stats = api.get_json(&format!("{base}/_sim/stats")).await;
    stats["requests"][op].as_u64().unwrap_or(0)
}

struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

async fn view(api: &Api, venue: &str, date: NaiveDate, party: u32) -> Answer {
    fetch(
        api,
        &format!("/v1/experiences/{venue}/availability?date={date}&party_size={party}"),
    )
    .await
}

async fn fetch(api: &Api, path: &str) -> Answer {
    let response = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(api.token(Role::Submitter))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        retry_after,
    }
}

async fn outage(api: &Api) {
    api.http
        .post(format!("{}/_sim/outage", api.sevenrooms()))
        .json(&json!({"for_ms": 300_000, "status": 503}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap();
}

fn booking(request_id: &str, date: NaiveDate, time: &str, credits: u64) -> BookingRequested {
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(MEMBER_RICH).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request.time = SlotTime::parse(time).unwrap();
    request.quoted_credits = Credits::new(credits).unwrap();
    request
}

/// Changes one venue's settings in the store, as `como-saga venues set` does.
async fn set_venue(api: &Api, venue: &str, settings: VenueSettings) {
    catalogue::update(api.spawned.ports().records.as_ref(), |venues| {
        venues.set(venue.to_owned(), settings.clone());
        Ok::<_, ()>(())
    })
    .await
    .unwrap()
    .unwrap();
}

/// Polls `check` on the venue's view until it holds (the processes follow the store's
/// catalogue every few seconds).
async fn until_view(api: &Api, date: NaiveDate, check: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let a = view(api, VENUE_LARGE, date, 2).await;
        if a.status == StatusCode::OK && check(&a.body) {
            return a.body;
        }
        assert!(
            Instant::now() < until,
            "the view never showed the change: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_costs_no_call_and_a_hundred_concurrent_views_cost_one() {
    let api = Api::start().await;
    let sr = api.sevenrooms();
    let date = day(5);

    let before = calls(&api, &sr, "availability").await;
    let views = futures::future::join_all((0..100).map(|_| view(&api, VENUE_LARGE, date, 2))).await;
    for v in &views {
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
        assert_eq!(v.body["stale"], false, "{}", v.body);
    }
    assert_eq!(
        calls(&api, &sr, "availability").await - before,
        1,
        "100 concurrent views of one venue cost one SevenRooms call"
    );
    let first = &views[0].body;
    assert_eq!(first["credits"], 1_200, "600 a guest, for 2: {first}");
    let shifts: Vec<&str> = first["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(shifts, ["Lunch", "Dinner"], "{first}");
    assert!(
        first["availability_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{VENUE_LARGE}/{date}/2@")),
        "{first}"
    );

    // A hit: served from the cache, no call.
    let hit = view(&api, VENUE_LARGE, date, 2).await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.body["fetched_at"], first["fetched_at"], "the same read");
    assert_eq!(calls(&api, &sr, "availability").await - before, 1);
    // Another party size is another view: one more call.
    assert_eq!(
        view(&api, VENUE_LARGE, date, 4).await.status,
        StatusCode::OK
    );
    assert_eq!(calls(&api, &sr, "availability").await - before, 2);

    // The list: 100 concurrent cost one `venues` call, then none.
    let before = calls(&api, &sr, "venues").await;
    let lists = futures::future::join_all((0..100).map(|_| fetch(&api, "/v1/experiences"))).await;
    for l in &lists {
        assert_eq!(l.status, StatusCode::OK, "{}", l.body);
    }
    let list = &lists[0].body;
    assert_eq!(list["degraded"], false, "{list}");
    let candlenut = list["experiences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["venue_id"] == VENUE_LARGE)
        .unwrap_or_else(|| panic!("{VENUE_LARGE} is listed: {list}"));
    assert_eq!(candlenut["name"], "Candlenut, COMO Dempsey");
    assert_eq!(candlenut["credits_per_guest"], 600);
    assert_eq!(fetch(&api, "/v1/experiences").await.status, StatusCode::OK);
    assert_eq!(calls(&api, &sr, "venues").await - before, 1);

    // Bad input is named; an unknown venue is 404; another role is 403.
    let bad = fetch(
        &api,
        &format!("/v1/experiences/{VENUE_LARGE}/availability?date=tomorrow&party_size=2"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["field"], "date", "{}", bad.body);
    let bad = view(&api, VENUE_LARGE, date, 0).await;
    assert_eq!(bad.body["error"]["field"], "party_size", "{}", bad.body);
    let unknown = view(&api, "como-nowhere", date, 2).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let (status, _) = api.get("/v1/experiences", Role::Viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The command line reads the same views through the API, with a submitter's token.
    let token = api.token(Role::Submitter);
    let cli = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"))
            .args(&args)
            .args(["--api", &api.base, "--token", &token])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(vec!["experiences".into()]);
    assert!(listed.contains("Candlenut, COMO Dempsey"), "{listed}");
    let shown = cli(vec![
        "experiences".into(),
        VENUE_LARGE.into(),
        "--date".into(),
        date.to_string(),
        "--party".into(),
        "2".into(),
        "--json".into(),
    ]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["fetched_at"], first["fetched_at"], "the cached view");
    let no_token = std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .args(["experiences", "--api", &api.base])
        .env_remove("COMO_SAGA_TOKEN")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&no_token.stderr).contains("--role submitter"),
        "the hint names the role the command needs"
    );
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_serves_the_last_view_marked_stale_with_its_age() {
    let ttl = Duration::from_millis(500);
    let api = Api::start_with(|app| {
        app.with_experience_ttls(ExperienceTtls {
            details: ttl,
            availability: ttl,
        })
    })
    .await;
    let sr = api.sevenrooms();
    let date = day(6);
    let fresh = view(&api, VENUE_LARGE, date, 2).await;
    assert_eq!(fresh.body["stale"], false, "{}", fresh.body);
    assert_eq!(fetch(&api, "/v1/experiences").await.status, StatusCode::OK);

    outage(&api).await;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let before = calls(&api, &sr, "availability").await;
    let stale = view(&api, VENUE_LARGE, date, 2).await;
    assert_eq!(stale.status, StatusCode::OK, "{}", stale.body);
    assert_eq!(stale.body["stale"], true, "{}", stale.body);
    assert!(
        stale.body["age_seconds"].as_f64().unwrap() >= ttl.as_secs_f64(),
        "{}",
        stale.body
    );
    assert!(
        stale.body["stale_reason"]
            .as_str()
            .unwrap()
            .contains("SevenRooms is unavailable"),
        "{}",
        stale.body
    );
    assert_eq!(
        stale.body["shifts"], fresh.body["shifts"],
        "the last view read"
    );
    assert_eq!(stale.body["fetched_at"], fresh.body["fetched_at"]);
    let list = fetch(&api, "/v1/experiences").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["degraded"], true, "{}", list.body);
    let candlenut = list.body["experiences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["venue_id"] == VENUE_LARGE)
        .unwrap()
        .clone();
    assert_eq!(candlenut["name"], "Candlenut, COMO Dempsey");
    assert_eq!(candlenut["details"]["stale"], true, "{candlenut}");

    // A failed read is remembered for a moment: 30 more views cost SevenRooms no more calls
    // than the one failed read (two attempts).
    for _ in 0..30 {
        assert_eq!(view(&api, VENUE_LARGE, date, 2).await.body["stale"], true);
    }
    let during = calls(&api, &sr, "availability").await - before;
    assert!(during <= 2, "{during} calls during the outage");

    // SevenRooms is back: fresh again once the failure's backoff is over.
    api.delete_faults(&sr).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let again = view(&api, VENUE_LARGE, date, 2).await;
        if again.body["stale"] == false {
            break;
        }
        assert!(Instant::now() < until, "still stale: {}", again.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_cached_an_outage_or_an_open_circuit_is_a_503_that_says_when_to_retry() {
    let api = Api::start().await;
    let sr = api.sevenrooms();
    outage(&api).await;
    let none = view(&api, VENUE_LARGE, day(7), 2).await;
    assert_eq!(
        none.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        none.body
    );
    assert_eq!(none.body["error"]["code"], "sevenrooms_unavailable");
    let message = none.body["error"]["message"].as_str().unwrap();
    for words in [
        "SevenRooms is unavailable",
        "nothing is cached",
        "try again in",
    ] {
        assert!(message.contains(words), "{message}");
    }
    assert!(none.retry_after.is_some_and(|s| s >= 1), "Retry-After");
    let list = fetch(&api, "/v1/experiences").await;
    assert_eq!(
        list.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        list.body
    );
    assert!(list.retry_after.is_some());
    api.delete_faults(&sr).await;

    // The circuit: the SevenRooms worker found SevenRooms down (the shared health record) and
    // probes again in 30 s. A view then reads nothing and says when to come back.
    let records = api.spawned.ports().records.clone();
    let key = SharedHealth::key("sevenrooms");
    let now = Utc::now().timestamp_millis();
    let down = serde_json::to_string(&SharedHealth {
        up: false,
        since_ms: now,
        next_probe_at_ms: now + 30_000,
        by: "test".into(),
    })
    .unwrap();
    let current = records.get(&key).await.unwrap();
    assert!(records.swap(&key, current.as_deref(), &down).await.unwrap());
    let before = calls(&api, &sr, "availability").await;
    let open = view(&api, VENUE_LARGE, day(8), 2).await;
    assert_eq!(
        open.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        open.body
    );
    assert!(
        open.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit is open"),
        "{}",
        open.body
    );
    let retry = open.retry_after.unwrap();
    assert!((25..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        calls(&api, &sr, "availability").await,
        before,
        "an open circuit costs SevenRooms no call"
    );
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venue_sevenrooms_does_not_know_is_a_refusal_not_an_outage() {
    let api = Api::start().await;
    set_venue(&api, "como-ghost", VenueSettings::priced(500)).await;
    let until = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let a = view(&api, "como-ghost", day(7), 2).await;
        if a.status != StatusCode::NOT_FOUND {
            break a;
        }
        assert!(
            Instant::now() < until,
            "the catalogue change was never followed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "sevenrooms_refused");
    assert_eq!(refused.retry_after, None, "retrying will not help");
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_price_is_the_venues_configured_one_whatever_the_client_quotes() {
    let api = Api::start().await;
    let date = day(9);
    let stats = api.spawned.running.orchestrator.clone().unwrap();
    // A booking at today's price, before the change.
    let before = booking("view-price-before", date, "19:30", 1_200);
    let (status, first) = api.submit(&before).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    api.wait_status(
        first["saga_id"].as_str().unwrap(),
        "confirmed",
        Duration::from_secs(30),
    )
    .await;

    // The venue's price changes in the store; the API and the orchestrator follow it.
    set_venue(&api, VENUE_LARGE, VenueSettings::priced(750)).await;
    let shown = until_view(&api, date, |v| v["credits"] == 1_500).await;
    assert_eq!(shown["credits_per_guest"], 750);

    // A client retrying the earlier request is told its booking, not refused for the new price,
    // at the API and at intake.
    let rejected_before = stats.snapshot().rejected;
    let (status, again) = api.submit(&before).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["saga_id"], first["saga_id"]);
    assert_eq!(again["status"], "confirmed");
    como_orchestrator::submit(api.spawned.ports(), &before)
        .await
        .unwrap();

    // A client quoting another price (the old one, or any) is refused, naming the field.
    let (status, refused) = api
        .submit(&booking("view-price-wrong", date, "19:30", 1_200))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["field"], "quoted_credits", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1500"),
        "{refused}"
    );
    // Sent straight to the queue, past the API: the orchestrator refuses it too, and no
    // credits move.
    let sneaky = booking("view-price-sneaky", date, "19:30", 1);
    let sneaky_saga = como_orchestrator::submit(api.spawned.ports(), &sneaky)
        .await
        .unwrap();

    // From the view: the view's price and its id.
    let mut request = booking(
        "view-price-right",
        date,
        "19:30",
        shown["credits"].as_u64().unwrap(),
    );
    request.availability_id = Some(shown["availability_id"].as_str().unwrap().to_owned());
    let (status, accepted) = api.submit(&request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let saga = accepted["saga_id"].as_str().unwrap().to_owned();
    api.wait_status(&saga, "confirmed", Duration::from_secs(30))
        .await;

    let ledger = api.ledger().await;
    let member = ledger
        .memberson
        .members
        .iter()
        .find(|m| m.member_no == MEMBER_RICH)
        .unwrap();
    let receipt = |saga: &str| format!("CS-{}", saga.replace('-', ""));
    let paid: Vec<i64> = member
        .redemptions
        .iter()
        .filter(|r| r.receipt_no == receipt(&saga))
        .map(|r| r.amount)
        .collect();
    assert_eq!(paid, [1_500], "charged the configured price");
    assert!(api.saga(&sneaky_saga.to_string()).await.is_none());
    assert!(
        !member
            .redemptions
            .iter()
            .any(|r| r.receipt_no == receipt(&sneaky_saga.to_string())),
        "nothing charged for the refused quote"
    );
    // The only request intake refused is the sneaky one, not the retried one.
    let until = Instant::now() + Duration::from_secs(10);
    while stats.snapshot().rejected < rejected_before + 1 || stats.snapshot().duplicates == 0 {
        assert!(Instant::now() < until, "{:?}", stats.snapshot());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stats.snapshot().rejected,
        rejected_before + 1,
        "{:?}",
        stats.snapshot()
    );
    // The saga keeps the view it was booked from.
    let (state, _) = api.keys(request.saga_id()).await;
    assert_eq!(state.request.availability_id, request.availability_id);
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venues_settings_in_the_store_steer_its_views_and_bookings() {
    let api = Api::start().await;
    // The venue has its own SevenRooms API (another simulator), and sells only dinner.
    let other = como_simulators::Simulators::start(como_simulators::SimConfig::default())
        .await
        .unwrap();
    let other_sr = other.sevenrooms_url().to_owned();
    set_venue(
        &api,
        VENUE_LARGE,
        VenueSettings {
            credits_per_guest: 600,
            venue_group_id: None,
            api_url: Some(other_sr.clone()),
            credit_shifts: vec!["Dinner".into()],
        },
    )
    .await;
    let date = day(10);
    let shown = until_view(&api, date, |v| {
        v["shifts"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    assert_eq!(shown["shifts"][0]["name"], "Dinner", "{shown}");
    // Once the change is followed, a view reads the venue's own API only.
    let before_here = calls(&api, &api.sevenrooms(), "availability").await;
    let before_there = calls(&api, &other_sr, "availability").await;
    assert_eq!(
        view(&api, VENUE_LARGE, day(12), 2).await.status,
        StatusCode::OK
    );
    assert_eq!(
        calls(&api, &other_sr, "availability").await,
        before_there + 1
    );
    assert_eq!(
        calls(&api, &api.sevenrooms(), "availability").await,
        before_here,
        "the view read the venue's own API"
    );

    // Dinner is booked at the venue's own SevenRooms; lunch is not sold for credits, and is
    // refused before any credits move.
    let (_, dinner) = api
        .submit(&booking("steer-dinner", date, "19:30", 1_200))
        .await;
    let (_, lunch) = api
        .submit(&booking("steer-lunch", date, "12:30", 1_200))
        .await;
    let dinner = dinner["saga_id"].as_str().unwrap().to_owned();
    let lunch = lunch["saga_id"].as_str().unwrap().to_owned();
    api.wait_status(&dinner, "confirmed", Duration::from_secs(30))
        .await;
    let failed = api
        .wait_status(&lunch, "compensated", Duration::from_secs(30))
        .await;
    assert!(
        failed.to_string().contains("sold for credits"),
        "the refusal says why: {failed}"
    );
    let external = |saga: &str| saga.to_owned();
    let there = other.sevenrooms_ledger();
    assert!(
        there
            .reservations
            .iter()
            .any(|r| r.external_id.as_deref() == Some(&external(&dinner))
                && r.status_code == "RESERVED"),
        "the dinner is booked at the venue's own SevenRooms"
    );
    let here = api.ledger().await;
    assert!(
        !here
            .sevenrooms
            .reservations
            .iter()
            .any(|r| r.external_id.as_deref() == Some(&external(&dinner))),
        "and not at the deployment's"
    );
    let member = here
        .memberson
        .members
        .iter()
        .find(|m| m.member_no == MEMBER_RICH)
        .unwrap();
    assert!(
        !member
            .redemptions
            .iter()
            .any(|r| r.receipt_no == format!("CS-{}", lunch.replace('-', ""))),
        "the lunch moved no credits"
    );
    api.spawned.stop().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_while_views_and_bookings_run_and_none_fails() {
    let api = Api::start_with(|app| {
        app.with_experience_ttls(ExperienceTtls {
            details: Duration::from_millis(200),
            availability: Duration::from_millis(100),
        })
    })
    .await;
    let (sr, crm) = (api.sevenrooms(), api.memberson());
    let stats = |base: String| {
        let api = &api;
        async move { api.get_json(&format!("{base}/_sim/stats")).await }
    };
    let issued = |s: &Value| s["tokens_issued"].as_u64().unwrap();

    // `up`'s schedule, quickened. Alone first: each round takes a new token for the SevenRooms
    // worker, the views and the CRM worker (the views' client exists once a view was read).
    assert_eq!(
        view(&api, VENUE_LARGE, day(11), 2).await.status,
        StatusCode::OK
    );
    let (sr0, crm0) = (stats(sr.clone()).await, stats(crm.clone()).await);
    api.spawned
        .app
        .schedule_token_rotation(Duration::from_millis(300), &api.spawned.shutdown);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let (sr_a, crm_a) = (stats(sr.clone()).await, stats(crm.clone()).await);
    assert!(
        issued(&sr_a) - issued(&sr0) >= 6,
        "the schedule rotates: {sr0} -> {sr_a}"
    );
    assert!(
        issued(&crm_a) - issued(&crm0) >= 3,
        "the schedule rotates: {crm0} -> {crm_a}"
    );
    assert_eq!(
        sr_a["unauthorized"], sr0["unauthorized"],
        "no call was refused"
    );
    // Then the simulators also refuse every old token now and then, so that a rotation lands
    // on calls in flight.
    let run_for = Duration::from_secs(4);
    let expire = async {
        let end = Instant::now() + run_for;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(350)).await;
            for base in [&sr, &crm] {
                api.http
                    .post(format!("{base}/_sim/tokens/expire"))
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    let views = async {
        let end = Instant::now() + run_for;
        let mut seen = Vec::new();
        let mut i = 0u32;
        while Instant::now() < end {
            i += 1;
            let v = view(&api, VENUE_LARGE, day(11 + u64::from(i % 5)), 1 + i % 6).await;
            seen.push((v.status, v.body["stale"].clone(), v.body.to_string()));
            let l = fetch(&api, "/v1/experiences").await;
            seen.push((l.status, l.body["degraded"].clone(), l.body.to_string()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    };
    let bookings = async {
        let mut sagas = Vec::new();
        for i in 0..12 {
            let (status, body) = api
                .submit(&booking(&format!("rotate-{i}"), day(20), "19:00", 1_200))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            sagas.push(body["saga_id"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sagas
    };
    let ((), seen, sagas) = tokio::join!(expire, views, bookings);

    let failed: Vec<&(StatusCode, Value, String)> = seen
        .iter()
        .filter(|(status, stale, _)| *status != StatusCode::OK || *stale != false)
        .collect();
    assert!(seen.len() > 40, "{} views", seen.len());
    assert!(
        failed.is_empty(),
        "views failed or stale during the rotation: {failed:#?}"
    );
    for saga in &sagas {
        api.wait_status(saga, "confirmed", Duration::from_secs(60))
            .await;
    }
    let (sr1, crm1) = (stats(sr.clone()).await, stats(crm.clone()).await);
    // Each round mints a SevenRooms token for the worker and for the views, and a Memberson
    // token for the CRM worker; and tokens were refused mid-flight and renewed.
    assert!(issued(&sr1) - issued(&sr0) >= 10, "{sr0} -> {sr1}");
    assert!(issued(&crm1) - issued(&crm0) >= 5, "{crm0} -> {crm1}");
    assert!(sr1["unauthorized"].as_u64().unwrap() > 0, "{sr1}");
    // Every confirmed booking paid once and holds its reservation.
    let ledger = api.ledger().await;
    for saga in &sagas {
        let receipt = format!("CS-{}", saga.replace('-', ""));
        let live: Vec<_> = ledger
            .memberson
            .members
            .iter()
            .flat_map(|m| &m.redemptions)
            .filter(|r| r.receipt_no == receipt && r.voided_at.is_none())
            .collect();
        assert_eq!(live.len(), 1, "{saga} paid once");
        assert!(
            ledger
                .sevenrooms
                .reservations
                .iter()
                .any(|r| r.external_id.as_deref() == Some(saga.as_str())
                    && r.status_code == "RESERVED"),
            "{saga} is booked"
        );
    }
    api.spawned.stop().await.unwrap();
}

fn como_saga(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .args(args)
        .env_remove("COMO_SAGA_VENUES")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn venues_are_set_listed_and_removed_in_the_store_and_bad_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("venues.sqlite");
    let db = db.to_str().unwrap();
    let (code, out, _) = como_saga(&["venues", "list", "--database", db]);
    assert_eq!(code, 0);
    assert!(out.contains("no venue catalogue in the store yet"), "{out}");

    let (code, _, err) = como_saga(&["venues", "set", "como-new", "--database", db]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("credits_per_guest") && err.contains("como-new"),
        "{err}"
    );
    let (code, _, err) = como_saga(&[
        "venues",
        "set",
        "como-new",
        "--credits-per-guest",
        "0",
        "--database",
        db,
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = como_saga(&[
        "venues",
        "set",
        "como-new",
        "--credits-per-guest",
        "700",
        "--api-url",
        "ftp://x",
        "--database",
        db,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("api_url"), "{err}");

    let (code, out, err) = como_saga(&[
        "venues",
        "set",
        "como-new",
        "--credits-per-guest",
        "700",
        "--venue-group",
        "group-1",
        "--credit-shift",
        "Dinner",
        "--json",
        "--database",
        db,
    ]);
    assert_eq!(code, 0, "{err}");
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["version"], 1);
    assert_eq!(
        stored["venues"]["como-new"],
        json!({"credits_per_guest": 700, "venue_group_id": "group-1", "credit_shifts": ["Dinner"]})
    );
    // Only what is given changes.
    let (code, out, _) = como_saga(&[
        "venues",
        "set",
        "como-new",
        "--credits-per-guest",
        "650",
        "--json",
        "--database",
        db,
    ]);
    assert_eq!(code, 0);
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["version"], 2);
    assert_eq!(stored["venues"]["como-new"]["credits_per_guest"], 650);
    assert_eq!(
        stored["venues"]["como-new"]["credit_shifts"],
        json!(["Dinner"])
    );

    let (code, out, _) = como_saga(&["venues", "list", "--database", db]);
    assert_eq!(code, 0);
    assert!(
        out.contains("como-new") && out.contains("650") && out.contains("Dinner"),
        "{out}"
    );
    let (code, _, err) = como_saga(&["venues", "remove", "como-gone", "--database", db]);
    assert_eq!(code, 2);
    assert!(err.contains("como-gone"), "{err}");
    let (code, out, _) = como_saga(&["venues", "remove", "como-new", "--json", "--database", db]);
    assert_eq!(code, 0);
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["venues"], json!({}));
}

/// Polls views (a new day each time, so that each is a SevenRooms call) until one reaches the
/// SevenRooms at `base`: the processes follow the catalogue.
async fn until_views_reach(api: &Api, base: &str) {
    let until = Instant::now() + Duration::from_secs(15);
    let mut ahead = 30;
    loop {
        let before = calls(api, base, "availability").await;
        ahead += 1;
        assert_eq!(
            view(api, VENUE_LARGE, day(ahead), 2).await.status,
            StatusCode::OK
        );
        if calls(api, base, "availability").await > before {
            return;
        }
        assert!(Instant::now() < until, "the views never reached {base}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A saga's SevenRooms effects stay where its hold was made. The venue's API changes while the
/// saga waits between its hold and its redemption (a Memberson outage); the redemption is then
/// refused, and the compensation releases the hold at the API that holds it, not at the one
/// the venue names by then (where it would find nothing, leaving the hold behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_undoes_its_hold_where_it_made_it_when_the_venues_api_changes_meanwhile() {
    let api = Api::start().await;
    let other = como_simulators::Simulators::start(como_simulators::SimConfig::default())
        .await
        .unwrap();
    let other_sr = other.sevenrooms_url().to_owned();
    let moved = VenueSettings {
        api_url: Some(other_sr.clone()),
        ..VenueSettings::priced(600)
    };
    set_venue(&api, VENUE_LARGE, moved).await;
    until_views_reach(&api, &other_sr).await;

    api.http
        .post(format!("{}/_sim/outage", api.memberson()))
        .json(&json!({"for_ms": 300_000, "status": 503, "ops": ["redeem"]}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap();
    let (status, body) = api
        .submit(&booking("pinned-hold", day(14), "19:00", 1_200))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let saga = body["saga_id"].as_str().unwrap().to_owned();
    api.wait_status(&saga, "waiting_for_downstream", Duration::from_secs(30))
        .await;
    let held: Vec<_> = other
        .sevenrooms_ledger()
        .holds
        .into_iter()
        .filter(|h| h.status == como_simulators::ledger::HoldStatus::Held)
        .collect();
    assert_eq!(held.len(), 1, "the hold is at the venue's API of the time");

    // The venue moves back to the deployment's SevenRooms while the saga waits.
    set_venue(&api, VENUE_LARGE, VenueSettings::priced(600)).await;
    until_views_reach(&api, &api.sevenrooms()).await;
    let releases_here = calls(&api, &api.sevenrooms(), "release_hold").await;

    // Memberson is back, and refuses the redemption: the saga compensates.
    api.put_faults(
        &api.memberson(),
        json!([{"kind": "refuse", "code": "INSUFFICIENT_POINTS", "ops": ["redeem"]}]),
    )
    .await;
    api.wait_status(&saga, "compensated", Duration::from_secs(60))
        .await;
    let hold = other
        .sevenrooms_ledger()
        .holds
        .into_iter()
        .find(|h| h.reservation_hold_id == held[0].reservation_hold_id)
        .unwrap();
    assert_eq!(
        hold.status,
        como_simulators::ledger::HoldStatus::Released,
        "released where it was made"
    );
    assert_eq!(
        calls(&api, &api.sevenrooms(), "release_hold").await,
        releases_here,
        "nothing sent to the venue's new API"
    );
    api.spawned.stop().await.unwrap();
    other.shutdown().await.unwrap();
}
