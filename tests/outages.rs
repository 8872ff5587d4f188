//! Degraded service instead of no service, over real HTTP with every role its own process: a
//! downstream that is down makes bookings wait (status `waiting_for_downstream`, since when),
//! spends none of their attempts, and the backlog drains at the downstream's rate limit once
//! it is back. The simulators' ledgers are the truth.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use como_engine::{SagaState, SagaStatus, StatusKind};
use como_ports::Backend;
use como_schemas::{
    BookingRequested, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone, RequestId,
    SagaId, SchemaVersion, SlotTime, VenueId,
};
use como_simulators::invariant::{SagaKeys, check};
use como_simulators::seed;
use support::*;

/// `n` bookings that succeed in fair weather: distinct rich members at the large venue,
/// spread over enough slots that none fills.
fn fair_weather_bookings(n: usize, tag: &str) -> Vec<BookingRequested> {
    let today = Utc::now().date_naive();
    (0..n)
        .map(|i| BookingRequested {
            schema_version: SchemaVersion::CURRENT,
            request_id: RequestId::parse(format!("{tag}-{i}")).unwrap(),
            member_no: MemberNo::parse(seed::bulk_member_no(i % 1000)).unwrap(),
            venue_id: VenueId::parse(seed::VENUE_LARGE).unwrap(),
            date: today
                .checked_add_days(Days::new(1 + (i % 10) as u64))
                .unwrap(),
            time: SlotTime::parse(["19:00", "19:30", "20:00"][(i / 10) % 3]).unwrap(),
            party_size: PartySize::new(2).unwrap(),
            quoted_credits: Credits::new(1_200).unwrap(),
            traceparent: None,
            availability_id: None,
            guest: GuestContact {
                first_name: PersonName::parse("Test").unwrap(),
                last_name: PersonName::parse(format!("Guest {i}")).unwrap(),
                phone: Phone::parse(format!("+6592{:06}", i)).unwrap(),
                email: None,
            }
            .into(),
        })
        .collect()
}

async fn outage(base: &str, for_ms: u64) {
    reqwest::Client::new()
        .post(format!("{base}/_sim/outage"))
        .json(&serde_json::json!({ "for_ms": for_ms, "status": 503 }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("start an outage");
}

/// The probes SevenRooms saw since `since_ms` (its venues list, which no step reads), from its
/// request log: when each came and what it was answered.
async fn probes_since(base: &str, since_ms: i64) -> Vec<(i64, Option<u64>)> {
    let log: serde_json::Value = reqwest::get(format!(
        "{base}/_sim/requests?since_ms={since_ms}&path_prefix=/venues"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "/venues")
        .map(|r| (r["at_ms"].as_i64().unwrap(), r["status"].as_u64()))
        .collect()
}

/// Ends every fault window on a simulator (an outage included) now.
async fn end_faults(base: &str) {
    reqwest::Client::new()
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("end the outage");
}

/// Every step's attempts charged against its retry policy: as on a clean run, one action each,
/// no lookups.
fn assert_nothing_spent(state: &SagaState) {
    for step in state.steps.iter().filter(|s| s.action.sent > 0) {
        assert_eq!(
            (step.action.charged, step.reconcile.charged),
            (1, 0),
            "{}: {} spent attempts on the outage: {:?}",
            state.saga_id,
            step.name,
            step
        );
    }
}

fn whole_ledger_holds(states: &[Option<SagaState>], ledger: &como_simulators::ledger::Ledger) {
    let keys: Vec<SagaKeys> = states.iter().flatten().map(SagaKeys::of).collect();
    let report = check(ledger, &keys);
    assert!(report.holds(), "money invariant: {:?}", report.violations);
}

/// One booking under a 40 s outage of `downstream`: it waits, shows it, and confirms after.
async fn one_booking_waits_out_an_outage(downstream: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let base = if downstream == "SevenRooms" {
        sims.sevenrooms.clone()
    } else {
        sims.memberson.clone()
    };
    // The outage lasts 40 s, and longer on a machine so loaded that the booking has not reached
    // the downstream by then (up to 150 s): it ends once the saga has been seen waiting.
    outage(&base, 300_000).await;
    let began = Instant::now();
    let at_least = began + Duration::from_secs(40);
    let at_most = began + Duration::from_secs(150);
    let request = fair_weather_bookings(1, &format!("outage-{downstream}")).remove(0);
    let id = como_orchestrator::submit(&ports, &request).await.unwrap();
    let submitted = Utc::now();

    let mut seen_waiting = None;
    // Every status the saga showed, in order, for the failure message.
    let mut statuses: Vec<SagaStatus> = Vec::new();
    while Instant::now() < at_most && (seen_waiting.is_none() || Instant::now() < at_least) {
        if let Some(s) = ports.store.get(id).await.unwrap() {
            if statuses.last() != Some(&s.value.status) {
                statuses.push(s.value.status.clone());
            }
            let kind = s.value.status.kind();
            assert!(
                !kind.is_terminal() && kind != StatusKind::NeedsOperator,
                "ended during the outage: {:?}",
                s.value.status
            );
            if let SagaStatus::WaitingForDownstream {
                downstream: d,
                since,
                compensating,
                ..
            } = &s.value.status
            {
                assert_eq!(d, downstream);
                assert!(!compensating);
                let since = since.expect("since when it waits").to_datetime();
                assert!(
                    (since - submitted).num_seconds().abs() < 10,
                    "waiting since {since}, submitted at {submitted}"
                );
                seen_waiting.get_or_insert(since);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_waiting.is_some(),
        "the saga showed waiting_for_downstream during the outage; it showed {statuses:?}, \
         history {:#?}",
        ports.store.history(id).await.unwrap()
    );
    end_faults(&base).await;
    let states = wait_all(&ports, &[id], Duration::from_secs(60)).await;
    let state = states[0].clone().expect("the saga exists");
    assert_eq!(state.status, SagaStatus::Confirmed, "{state:#?}");
    assert_nothing_spent(&state);
    whole_ledger_holds(&states, &sims.ledger().await);
    let worker_log = roles
        .iter()
        .map(Role::output)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        worker_log.contains(&format!("{downstream} circuit open")),
        "the worker said its circuit was open:\n{worker_log}"
    );
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_waits_out_a_40s_sevenrooms_outage_and_spends_no_attempt() {
    one_booking_waits_out_an_outage("SevenRooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_waits_out_a_40s_memberson_outage_and_spends_no_attempt() {
    one_booking_waits_out_an_outage("Memberson").await;
}

async fn states_of(ports: &Backend, ids: &[SagaId]) -> Vec<Option<SagaState>> {
    let mut states = Vec::with_capacity(ids.len());
    for id in ids {
        states.push(ports.store.get(*id).await.unwrap().map(|v| v.value));
    }
    states
}

/// SevenRooms' rate limit in this test (calls per second from its one worker process), and
/// the burst: over any second SevenRooms may see at most their sum.
const RATE: u64 = 50;
const BURST: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bookings_through_a_two_minute_outage_all_confirm_at_the_rate_limit() {
    const N: usize = 1_000;
    const OUTAGE_MS: u64 = 120_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let rate = RATE.to_string();
    let burst = BURST.to_string();
    let env = [
        ("COMO_SAGA_SEVENROOMS_RATE_LIMIT", rate.as_str()),
        ("COMO_SAGA_SEVENROOMS_RATE_LIMIT_BURST", burst.as_str()),
    ];
    let mut roles = roles(&db, &sims, dir.path(), &env);
    let (backend, ports) = open(&db);
    outage(&sims.sevenrooms, OUTAGE_MS).await;
    let began = Instant::now();
    let outage_ends_ms = Utc::now().timestamp_millis() as u64 + OUTAGE_MS;
    let requests = fair_weather_bookings(N, "drain");
    let mut ids = Vec::with_capacity(N);
    for r in &requests {
        ids.push(como_orchestrator::submit(&ports, r).await.unwrap());
    }
    eprintln!("submitted {N} bookings in {:?}", began.elapsed());

    // During the outage: nothing confirms, and the sagas wait.
    let mut most_waiting = 0;
    while began.elapsed() < Duration::from_millis(OUTAGE_MS) {
        let counts: BTreeMap<StatusKind, u64> =
            ports.store.counts().await.unwrap().into_iter().collect();
        assert_eq!(
            counts.get(&StatusKind::Confirmed).copied().unwrap_or(0)
                + counts.get(&StatusKind::Compensated).copied().unwrap_or(0),
            0,
            "nothing ends while SevenRooms is down: {counts:?}"
        );
        most_waiting = most_waiting.max(
            counts
                .get(&StatusKind::WaitingForDownstream)
                .copied()
                .unwrap_or(0),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        most_waiting >= (N as u64) * 9 / 10,
        "the backlog showed waiting_for_downstream: at most {most_waiting} at once"
    );

    // After it: every booking confirms, in the order they came, as far as the rate allows.
    let states = wait_all(&ports, &ids, Duration::from_secs(600)).await;
    let drained = Utc::now().timestamp_millis() as u64;
    let mut counts = BTreeMap::new();
    for s in &states {
        *counts
            .entry(s.as_ref().map_or("missing", |s| s.status.kind().as_str()))
            .or_insert(0) += 1;
    }
    if counts.get("confirmed") != Some(&N) {
        for (id, s) in ids.iter().zip(&states) {
            if s.as_ref()
                .is_some_and(|s| s.status != SagaStatus::Confirmed)
            {
                for h in ports.store.history(*id).await.unwrap() {
                    eprintln!("{id}: {}", serde_json::to_string(&h).unwrap());
                }
                break;
            }
        }
    }
    assert_eq!(counts.get("confirmed"), Some(&N), "{counts:?}");
    let states = states_of(&ports, &ids).await;
    for s in states.iter().flatten() {
        assert_nothing_spent(s);
    }
    whole_ledger_holds(&states, &sims.ledger().await);
    let last_update = states
        .iter()
        .flatten()
        .map(|s| s.updated_at.as_millis() as u64)
        .max()
        .unwrap();

    // What SevenRooms saw after the outage, from its own request log.
    let url = format!(
        "{}/_sim/requests/rate?since_ms={outage_ends_ms}&until_ms={drained}&window_ms=1000&exclude_status=503",
        sims.sevenrooms
    );
    let rate: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let peak = rate["peak"].as_u64().unwrap();
    let total = rate["total"].as_u64().unwrap();
    eprintln!(
        "drain: {N} bookings confirmed {:.1} s after the outage ended; SevenRooms saw {total} requests, peak {peak} in one second (limit {RATE}/s, burst {BURST})",
        (last_update.saturating_sub(outage_ends_ms)) as f64 / 1000.0
    );
    assert!(total >= 2 * N as u64, "a hold and a booking each: {rate}");
    assert!(
        peak <= RATE + BURST,
        "SevenRooms saw {peak} requests in one second, over its limit of {RATE}/s: {rate}"
    );

    // Oldest first: the first tenth submitted confirmed, on the whole, before the last tenth.
    let confirmed_at = |range: std::ops::Range<usize>| -> f64 {
        let v: Vec<f64> = states[range]
            .iter()
            .flatten()
            .map(|s| s.updated_at.as_millis() as f64)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let first = confirmed_at(0..N / 10);
    let last = confirmed_at(N - N / 10..N);
    eprintln!(
        "the first tenth confirmed on average {:.1} s before the last tenth",
        (last - first) / 1000.0
    );
    assert!(
        last - first > 10_000.0,
        "oldest first: the first tenth confirmed on average {:.1} s before the last tenth",
        (last - first) / 1000.0
    );
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_whose_downstream_is_down_waits_and_finishes_after_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    // SevenRooms refuses the booking (after 3 s, long enough to take Memberson down first),
    // so the redemption must be voided while Memberson is down.
    let sims = Sims::start(
        dir.path(),
        Some(
            r#"{"sevenrooms": [
                {"kind": "latency", "fixed_ms": 3000, "ops": ["book"], "times": 1},
                {"kind": "refuse", "code": "SLOT_UNAVAILABLE", "ops": ["book"], "times": 1}
            ]}"#,
        ),
    );
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    let (backend, ports) = open(&db);
    let request = fair_weather_bookings(1, "compensate-in-outage").remove(0);
    let id = como_orchestrator::submit(&ports, &request).await.unwrap();
    // Once the booking is out, Memberson goes down for 40 s.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let state = ports.store.get(id).await.unwrap().map(|v| v.value);
        if state.is_some_and(|s| s.steps[3].action.sent > 0) {
            break;
        }
        assert!(Instant::now() < until, "the booking was never sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 40 s, or until the compensation has been seen waiting on a loaded machine (up to 150 s).
    outage(&sims.memberson, 300_000).await;
    let at_least = Instant::now() + Duration::from_secs(40);
    let at_most = Instant::now() + Duration::from_secs(150);
    let mut waited = false;
    while Instant::now() < at_most && (!waited || Instant::now() < at_least) {
        let s = ports.store.get(id).await.unwrap().unwrap().value;
        let kind = s.status.kind();
        assert!(
            !kind.is_terminal() && kind != StatusKind::NeedsOperator,
            "ended during the outage: {:?}",
            s.status
        );
        if let SagaStatus::WaitingForDownstream {
            downstream,
            compensating: true,
            since: Some(_),
            ..
        } = &s.status
        {
            assert_eq!(downstream, "Memberson");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(waited, "the compensation showed waiting_for_downstream");
    end_faults(&sims.memberson).await;
    let states = wait_all(&ports, &[id], Duration::from_secs(60)).await;
    let state = states[0].clone().unwrap();
    assert_eq!(state.status, SagaStatus::Compensated, "{state:#?}");
    let redeem = &state.steps[2];
    assert!(redeem.compensated);
    assert_eq!(
        redeem.compensation.charged, 1,
        "the void spent nothing on the outage: {redeem:?}"
    );
    whole_ledger_holds(&states, &sims.ledger().await);
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}

#[tokio::test]
async fn an_unreachable_downstream_is_unavailable_not_failed() {
    // A port nothing listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = como_workers::clients::memberson::MembersonClient::connect(
        reqwest::Client::new(),
        como_workers::clients::memberson::MembersonSettings::new(
            url,
            como_workers::clients::memberson::MembersonCredentials {
                svc_auth: "user,password".into(),
                username: "user".into(),
                password: "password".into(),
            },
        ),
    );
    let outcome = client
        .member_summary(
            seed::MEMBER_RICH,
            como_workers::clients::Deadline::after(Duration::from_secs(5)),
        )
        .await;
    assert!(
        matches!(
            outcome,
            como_workers::clients::Outcome::Unavailable {
                maybe_applied: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_probe_a_downstream_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saga.sqlite");
    let sims = Sims::start(dir.path(), None);
    let mut roles = roles(&db, &sims, dir.path(), &[]);
    roles.push(Role::start(
        &["worker", "sevenrooms"],
        &db,
        &sims,
        dir.path().join("worker-sevenrooms-2.log"),
    ));
    let (backend, ports) = open(&db);
    // A booking first, so that both workers hold a SevenRooms token: a probe then reaches the
    // venues list rather than failing at the token.
    let mut warm_up = Vec::new();
    for r in fair_weather_bookings(4, "two-probers-warm-up") {
        warm_up.push(como_orchestrator::submit(&ports, &r).await.unwrap());
    }
    let warmed = wait_all(&ports, &warm_up, Duration::from_secs(60)).await;
    let since_ms = Utc::now().timestamp_millis();
    // The outage lasts until three probes have failed, however long the bookings take to reach
    // SevenRooms on a loaded machine (a fixed window can end before the breaker ever opened).
    outage(&sims.sevenrooms, 300_000).await;
    let ids: Vec<SagaId> = {
        let mut ids = Vec::new();
        for r in fair_weather_bookings(20, "two-probers").into_iter().skip(4) {
            ids.push(como_orchestrator::submit(&ports, &r).await.unwrap());
        }
        ids
    };
    let until = std::time::Instant::now() + Duration::from_secs(150);
    while probes_since(&sims.sevenrooms, since_ms)
        .await
        .iter()
        .filter(|(_, s)| *s == Some(503))
        .count()
        < 3
    {
        assert!(
            std::time::Instant::now() < until,
            "three probes never failed: {:?}",
            probes_since(&sims.sevenrooms, since_ms).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    end_faults(&sims.sevenrooms).await;
    let states = wait_all(&ports, &ids, Duration::from_secs(120)).await;
    for s in &states {
        assert_eq!(
            s.as_ref().map(|s| s.status.kind()),
            Some(StatusKind::Confirmed),
            "{s:?}"
        );
    }
    let all: Vec<_> = warmed.into_iter().chain(states).collect();
    whole_ledger_holds(&all, &sims.ledger().await);
    let probes = probes_since(&sims.sevenrooms, since_ms).await;
    let failed = probes.iter().filter(|(_, s)| *s == Some(503)).count();
    assert!(failed >= 3, "probes during the outage: {probes:?}");
    // One turn at a time across both processes: a cool-down (3 s) between probes, never two
    // at once (each process alone would probe every cool-down, the pair twice as often).
    for pair in probes.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        // Half the cool-down: the log's times are arrivals, which a loaded machine delays.
        assert!(gap >= 1_500, "two probes {gap} ms apart: {probes:?}");
    }
    for r in &mut roles {
        r.stop();
    }
    backend.close().await;
}
