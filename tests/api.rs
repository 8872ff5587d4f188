//! The operator API over real HTTP, on the whole system in-process (`spawn_app`): every route's
//! role boundary (401 without a good token, 403 with the wrong role), bad input refused with the
//! field and nothing changed, a booking submitted and followed to its end, and an operator
//! cancelling a saga stuck behind a SevenRooms outage, the history naming who and why.

mod api_support;

use std::time::{Duration, Instant};

use api_support::Api;
use chrono::Utc;
use como_api::auth::{LocalKey, Role};
use como_schemas::{BookingRequested, MemberNo, VenueId, examples};
use como_simulators::seed::{MEMBER_RICH, VENUE_LARGE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The value of one series (name and labels, as written) in a Prometheus text scrape.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn booking(request_id: &str) -> BookingRequested {
    let date = Utc::now().date_naive() + chrono::Days::new(30);
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(MEMBER_RICH).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request
}

/// Every route but health, readiness and the document: who may call it.
fn routes(saga: &str) -> Vec<(Method, String, Option<String>, Vec<Role>)> {
    let action = json!({"action": "retry_now", "reason": "probe"}).to_string();
    let redrive = json!({"queue": "requests", "reason": "probe"}).to_string();
    let readers = vec![Role::Viewer, Role::Operator, Role::Submitter];
    vec![
        (
            Method::POST,
            "/v1/bookings".into(),
            Some(serde_json::to_string(&booking("api-roles")).unwrap()),
            vec![Role::Submitter],
        ),
        (Method::GET, "/v1/sagas".into(), None, readers.clone()),
        (
            Method::GET,
            format!("/v1/sagas/{saga}"),
            None,
            readers.clone(),
        ),
        (
            Method::GET,
            format!("/v1/sagas/{saga}/history"),
            None,
            readers.clone(),
        ),
        (Method::GET, "/v1/counts".into(), None, readers.clone()),
        (Method::GET, "/v1/stuck".into(), None, readers.clone()),
        (Method::GET, "/v1/latency".into(), None, readers.clone()),
        (Method::GET, "/v1/overview".into(), None, readers.clone()),
        (Method::GET, "/v1/me".into(), None, readers.clone()),
        (
            Method::POST,
            format!("/v1/sagas/{saga}/actions"),
            Some(action),
            vec![Role::Operator],
        ),
        (
            Method::GET,
            "/v1/experiences".into(),
            None,
            vec![Role::Submitter],
        ),
        (
            Method::GET,
            format!(
                "/v1/experiences/{VENUE_LARGE}/availability?date={}&party_size=2",
                Utc::now().date_naive() + chrono::Days::new(3)
            ),
            None,
            vec![Role::Submitter],
        ),
        (
            Method::GET,
            "/v1/dead-letters?queue=requests".into(),
            None,
            vec![Role::Viewer, Role::Operator],
        ),
        (
            Method::POST,
            "/v1/dead-letters/redrive".into(),
            Some(redrive),
            vec![Role::Operator],
        ),
        (
            Method::POST,
            "/v1/members/CM100009/forget".into(),
            Some(json!({"reason": "probe"}).to_string()),
            vec![Role::Operator],
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            None,
            vec![Role::Viewer, Role::Operator],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_missing_or_bad_token_and_the_wrong_role() {
    let api = Api::start().await;
    let saga = booking("api-roles").saga_id().to_string();
    let stranger = LocalKey::load_or_create(&api._dir.path().join("other.pem")).unwrap();
    let forged = stranger
        .mint("mallory", &Role::ALL, Duration::from_secs(600))
        .unwrap();
    for (method, path, body, allowed) in routes(&saga) {
        for token in [None, Some("garbage"), Some(forged.as_str())] {
            let (status, answer) = api
                .call(method.clone(), &path, token, body.as_deref())
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
        }
        for role in Role::ALL.into_iter().filter(|r| !allowed.contains(r)) {
            let token = api.token(role);
            let (status, answer) = api
                .call(method.clone(), &path, Some(&token), body.as_deref())
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} as {role:?}: {answer}"
            );
        }
    }
    // Nothing was submitted by the refused calls.
    let (status, _) = api.get(&format!("/v1/sagas/{saga}"), Role::Viewer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Health, readiness and the document need no token.
    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        let (status, body) = api.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in [
        "/v1/bookings",
        "/v1/sagas",
        "/v1/sagas/{id}/actions",
        "/v1/counts",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is in the document");
    }
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_submitted_over_http_is_followed_to_its_end_and_bad_input_changes_nothing() {
    let api = Api::start().await;
    let request = booking("api-submit-1");
    let body = serde_json::to_string(&request).unwrap();
    let (status, answer) = api.post("/v1/bookings", Role::Submitter, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let saga = answer["saga_id"].as_str().unwrap().to_owned();
    assert_eq!(saga, request.saga_id().to_string());
    let done = api
        .wait_status(&saga, "confirmed", Duration::from_secs(30))
        .await;
    assert_eq!(done["request"]["request_id"], "api-submit-1");
    assert!(
        done.get("waiting_on").is_none(),
        "a confirmed saga waits for nothing: {done}"
    );
    assert!(
        !done.to_string().contains("mei.ling@example.com"),
        "no personal data: {done}"
    );
    // Each step's latency, from the sagas' histories: the four steps that call a downstream,
    // each finished once in this one saga.
    let (status, latency) = api.get("/v1/latency", Role::Viewer).await;
    assert_eq!(status, StatusCode::OK, "{latency}");
    assert_eq!(latency["sampled_sagas"], 1, "{latency:#}");
    let steps: Vec<(&str, &str, u64)> = latency["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["step"].as_str().unwrap(),
                x["command"].as_str().unwrap(),
                x["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("check_credits", "action", 1),
            ("hold_slot", "action", 1),
            ("redeem_credits", "action", 1),
            ("book_experience", "action", 1)
        ],
        "{latency:#}"
    );
    let first = &latency["steps"][0];
    assert!(
        first["p50_ms"].as_u64().unwrap() <= first["max_ms"].as_u64().unwrap(),
        "{latency:#}"
    );
    let (status, _) = api.get("/v1/latency?sample=0", Role::Viewer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // /metrics: a latency histogram per step and kind of command, from this process's
    // orchestrator, each step's command counted once.
    let (_, metrics) = api.call(Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for step in [
        "check_credits",
        "hold_slot",
        "redeem_credits",
        "book_experience",
    ] {
        let series =
            format!("como_step_latency_seconds_count{{step=\"{step}\",command=\"action\"}}");
        assert_eq!(metric(&metrics, &series), Some(1.0), "{series}\n{metrics}");
        let inf = format!(
            "como_step_latency_seconds_bucket{{le=\"+Inf\",step=\"{step}\",command=\"action\"}}"
        );
        assert!(
            metrics.contains(&inf) || metrics.contains(&format!("como_step_latency_seconds_bucket{{step=\"{step}\",command=\"action\",le=\"+Inf\"}}")),
            "a +Inf bucket for {step}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE como_step_latency_seconds histogram"),
        "{metrics}"
    );
    // The same request again: its saga; the id with other content: 409.
    let (status, again) = api.post("/v1/bookings", Role::Submitter, &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "confirmed");
    let mut other = request.clone();
    other.party_size = como_schemas::PartySize::new(4).unwrap();
    other.quoted_credits = como_schemas::Credits::new(2_400).unwrap();
    let (status, conflict) = api.submit(&other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");

    // Bad input on every write: 400 naming the field, nothing changed.
    let mut bad = serde_json::to_value(booking("api-submit-bad")).unwrap();
    bad["party_size"] = json!(0);
    let bad_writes = [
        (
            "/v1/bookings",
            Role::Submitter,
            bad.to_string(),
            "party_size",
        ),
        ("/v1/bookings", Role::Submitter, "{not json".to_owned(), ""),
        (
            "/v1/bookings",
            Role::Submitter,
            {
                let mut unknown = serde_json::to_value(booking("api-submit-venue")).unwrap();
                unknown["venue_id"] = json!("no-such-venue");
                unknown.to_string()
            },
            "venue_id",
        ),
        (
            &*format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            json!({"action": "cancel", "reason": "  "}).to_string(),
            "reason",
        ),
        (
            &*format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            json!({"action": "resolve", "reason": "by hand"}).to_string(),
            "outcome",
        ),
        (
            &*format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            json!({"action": "explode", "reason": "x"}).to_string(),
            "action",
        ),
        (
            "/v1/dead-letters/redrive",
            Role::Operator,
            json!({"queue": "nowhere", "reason": "x"}).to_string(),
            "queue",
        ),
    ];
    for (path, role, body, field) in &bad_writes {
        let (status, answer) = api.post(path, *role, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid", "{answer}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], *field, "{answer}");
        }
    }
    for id in ["api-submit-bad", "api-submit-venue"] {
        let (status, _) = api
            .get(
                &format!("/v1/sagas/{}", booking(id).saga_id()),
                Role::Viewer,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id} was not submitted");
    }
    // Bad reads: 400 naming the parameter.
    for (path, field) in [
        ("/v1/sagas?status=happy", "status"),
        ("/v1/sagas?limit=0", "limit"),
        ("/v1/sagas?older_than=soon", "older_than"),
        ("/v1/sagas/not-a-saga", "id"),
    ] {
        let (status, answer) = api.get(path, Role::Viewer).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    // The saga reads back: in the list, counted, its history paged to the end.
    let (_, list) = api.get("/v1/sagas?status=confirmed", Role::Viewer).await;
    assert_eq!(list["items"][0]["saga_id"], saga.as_str(), "{list}");
    let (_, counts) = api.get("/v1/counts", Role::Viewer).await;
    assert_eq!(counts["total"], 1, "{counts}");
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sagas/{saga}/history?limit=3&cursor={c}"),
            None => format!("/v1/sagas/{saga}/history?limit=3"),
        };
        let (status, page) = api.get(&path, Role::Viewer).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        entries.extend(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert_eq!(page["total"], entries.len(), "{page}");
                break;
            }
        }
    }
    assert_eq!(entries.first().unwrap()["kind"], "started");
    assert_eq!(entries.last().unwrap()["kind"], "confirmed");

    // /metrics (no token): the store's counts, the queues, and the roles of this process.
    let (status, text) = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    for (series, want) in [
        ("como_sagas{status=\"confirmed\"}", 1.0),
        ("como_sagas{status=\"running\"}", 0.0),
        (
            "como_queue_messages{queue=\"requests\",state=\"visible\"}",
            0.0,
        ),
        ("como_orchestrator_inputs_total{outcome=\"started\"}", 1.0),
        ("como_circuit_open{downstream=\"SevenRooms\"}", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series} in:\n{text}");
    }
    for worker in ["crm", "sevenrooms"] {
        let series =
            format!("como_worker_commands_total{{worker=\"{worker}\",outcome=\"handled\"}}");
        assert!(
            metric(&text, &series).unwrap_or(0.0) >= 2.0,
            "{series} in:\n{text}"
        );
    }
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_a_saga_stuck_behind_an_outage_and_the_history_names_them() {
    let api = Api::start().await;
    let sevenrooms = api.sevenrooms_down().await;
    let saga = submit(&api, "api-stuck-1").await;
    let shown = api
        .wait_status(&saga, "waiting_for_downstream", Duration::from_secs(60))
        .await;
    // What it waits for, right now: SevenRooms, since when, until its deadline at the latest.
    assert_eq!(shown["waiting_on"]["on"], "downstream", "{shown:#}");
    assert_eq!(shown["waiting_on"]["downstream"], "SevenRooms", "{shown:#}");
    assert_eq!(
        shown["waiting_on"]["deadline"], shown["deadline"],
        "{shown:#}"
    );
    assert!(shown["waiting_on"]["since"].is_string(), "{shown:#}");
    let (_, waiting) = api
        .get("/v1/sagas?status=waiting_for_downstream", Role::Operator)
        .await;
    assert_eq!(waiting["items"][0]["saga_id"], saga.as_str(), "{waiting}");
    // The list's other filters: what waits on SevenRooms, what retries with errors, by member,
    // venue and start; each lists the saga or not, as it should.
    let listed = |path: String| {
        let api = &api;
        async move {
            let (status, page) = api.get(&path, Role::Viewer).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["saga_id"].as_str().unwrap().to_owned())
                .collect::<Vec<String>>()
        }
    };
    let just = vec![saga.clone()];
    assert_eq!(listed("/v1/sagas?downstream=sevenrooms".into()).await, just);
    assert!(
        listed("/v1/sagas?downstream=Memberson".into())
            .await
            .is_empty()
    );
    assert_eq!(
        listed(format!("/v1/sagas?member={MEMBER_RICH}")).await,
        just
    );
    assert!(listed("/v1/sagas?member=999999999".into()).await.is_empty());
    assert_eq!(
        listed(format!(
            "/v1/sagas?venue={VENUE_LARGE}&downstream=sevenrooms"
        ))
        .await,
        just
    );
    let hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let between = format!(
        "/v1/sagas?started_from={}&started_before={}",
        urlencoding(&hour_ago),
        urlencoding(&in_an_hour)
    );
    assert_eq!(listed(between).await, just);
    assert!(
        listed(format!(
            "/v1/sagas?started_from={}",
            urlencoding(&in_an_hour)
        ))
        .await
        .is_empty()
    );
    // Waiting for a downstream that is down spends no attempt: that is not retrying with
    // errors (the store conformance suite lists sagas that are).
    let (_, page) = api
        .get("/v1/sagas?downstream=sevenrooms", Role::Viewer)
        .await;
    let item = &page["items"][0];
    assert_eq!(item["downstream"], "SevenRooms", "{page:#}");
    assert_eq!(item["command"], "action", "{page:#}");
    assert_eq!(item["retrying"], false, "{page:#}");
    assert!(listed("/v1/sagas?retrying=true".into()).await.is_empty());
    assert!(
        listed("/v1/sagas?retrying=true&status=confirmed".into())
            .await
            .is_empty()
    );
    for bad in [
        "/v1/sagas?downstream=stripe",
        "/v1/sagas?member=",
        "/v1/sagas?started_from=today",
        "/v1/sagas?retrying=maybe",
        "/v1/sagas?started_from=2030-01-02T00:00:00Z&started_before=2030-01-01T00:00:00Z",
    ] {
        let (status, answer) = api.get(bad, Role::Viewer).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(answer["error"]["field"].is_string(), "{bad}: {answer}");
    }

    // /metrics shows it waiting, and SevenRooms' circuit open once the worker's calls have
    // failed enough to open it.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, metrics) = api.call(Method::GET, "/metrics", None, None).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        assert_eq!(
            metric(&metrics, "como_sagas{status=\"waiting_for_downstream\"}"),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "como_sagas_at_step{status=\"waiting_for_downstream\",step=\"hold_slot\"}"
            ),
            Some(1.0),
            "{metrics}"
        );
        if metric(&metrics, "como_circuit_open{downstream=\"SevenRooms\"}") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the circuit never showed open:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A viewer may look but not act; the operator acts, with a reason.
    let cancel = json!({"action": "cancel", "reason": "member asked to cancel by phone"});
    let (status, _) = api
        .post(
            &format!("/v1/sagas/{saga}/actions"),
            Role::Viewer,
            &cancel.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, done) = api
        .post(
            &format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            &cancel.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["action"], "cancel");
    assert_eq!(done["repeated"], false);
    // The same action id again changes nothing.
    let again = json!({"action": "cancel", "reason": "again", "action_id": done["action_id"]});
    let (status, repeated) = api
        .post(
            &format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            &again.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{repeated}");
    assert_eq!(repeated["repeated"], true, "{repeated}");

    // SevenRooms comes back; the hold is released and the saga ends cancelled.
    api.http
        .delete(format!("{sevenrooms}/_sim/faults"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    api.wait_status(&saga, "cancelled", Duration::from_secs(60))
        .await;

    let (_, history) = api
        .get(&format!("/v1/sagas/{saga}/history?limit=500"), Role::Viewer)
        .await;
    let acted: Vec<&Value> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "operator_action")
        .collect();
    assert_eq!(acted.len(), 1, "{history:#}");
    assert_eq!(acted[0]["operator"], "ops-alice");
    assert_eq!(acted[0]["reason"], "member asked to cancel by phone");
    // A finished saga refuses another action: 409, nothing changed.
    let (status, refused) = api
        .post(
            &format!("/v1/sagas/{saga}/actions"),
            Role::Operator,
            &json!({"action": "retry_now", "reason": "try"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "refused");

    // The audit list has every action, newest first, with who, why and how it ended: the
    // refused retry, the repeated cancel and the cancel; and a redrive, which changes no saga.
    let (status, _) = api
        .post(
            "/v1/dead-letters/redrive",
            Role::Operator,
            &json!({"queue": "replies", "reason": "after the fix"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, audit) = api.get("/v1/audit?actor=ops-alice", Role::Viewer).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let got: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("redrive", "applied", "after the fix"),
        ("retry_now", "refused", "try"),
        ("cancel", "repeated", "again"),
        ("cancel", "applied", "member asked to cancel by phone"),
    ];
    assert_eq!(
        got,
        want.map(|(a, o, r)| (a.to_owned(), o.to_owned(), r.to_owned())),
        "{audit:#}"
    );
    assert_eq!(audit["items"][3]["target"], format!("saga/{saga}"));
    assert_eq!(audit["items"][0]["target"], "dead-letters/replies");
    assert!(audit["items"][3]["finished_at"].is_string(), "{audit:#}");
    let (_, cancels) = api
        .get("/v1/audit?action=cancel&limit=1", Role::Operator)
        .await;
    assert_eq!(cancels["items"].as_array().unwrap().len(), 1, "{cancels}");
    let (_, rest) = api
        .get(
            &format!(
                "/v1/audit?action=cancel&cursor={}",
                cancels["next_cursor"].as_str().unwrap()
            ),
            Role::Operator,
        )
        .await;
    assert_eq!(rest["items"][0]["outcome"], "applied", "{rest}");
    let (_, none) = api.get("/v1/audit?actor=ops-bob", Role::Operator).await;
    assert_eq!(none["items"], json!([]), "{none}");
    let (_, later) = api
        .get("/v1/audit?from=2099-01-01T00:00:00Z", Role::Operator)
        .await;
    assert_eq!(later["items"], json!([]), "{later}");
    for bad in [
        "/v1/audit?action=delete",
        "/v1/audit?from=yesterday",
        "/v1/audit?from=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
        "/v1/audit?cursor=nope",
    ] {
        let (status, answer) = api.get(bad, Role::Operator).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    api.spawned.stop().await.unwrap();
}

/// `como-saga sagas ...` against the API, as an operator runs it.
fn como(api: &Api, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .args(args)
        .env("COMO_SAGA_API", &api.base)
        .env("COMO_SAGA_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_and_resolves_a_stuck_saga_from_the_command_line() {
    let api = Api::start().await;
    api.sevenrooms_down().await;
    let saga = submit(&api, "api-cli-1").await;
    api.wait_status(&saga, "waiting_for_downstream", Duration::from_secs(60))
        .await;
    let operator = api.token(Role::Operator);

    // Found with `sagas list`, as a table and as JSON.
    let out = como(
        &api,
        &operator,
        &["sagas", "list", "--status", "waiting_for_downstream"],
    );
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&saga), "{table}");
    let out = como(
        &api,
        &operator,
        &[
            "sagas",
            "list",
            "--status",
            "waiting_for_downstream",
            "--json",
        ],
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(listed["items"][0]["saga_id"], saga.as_str());

    // An action without a reason is bad usage; a viewer's is refused; the operator's is done.
    let out = como(
        &api,
        &operator,
        &["sagas", "resolve", &saga, "--outcome", "compensated"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let viewer = api.token(Role::Viewer);
    let out = como(
        &api,
        &viewer,
        &["sagas", "cancel", &saga, "--reason", "not mine to do"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let out = como(
        &api,
        &operator,
        &[
            "sagas",
            "resolve",
            &saga,
            "--outcome",
            "compensated",
            "--reason",
            "hold released by hand in SevenRooms; credits never redeemed",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("compensated"),
        "{out:?}"
    );

    // `sagas show` names who acted and why.
    let out = como(&api, &operator, &["sagas", "show", &saga]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("operator: ops-alice"), "{shown}");
    assert!(
        shown.contains("reason: hold released by hand in SevenRooms"),
        "{shown}"
    );
    // A request nobody can read is dead-lettered; the operator lists it, looks at it, and
    // puts it back (it is dead-lettered again: it is still unreadable).
    api.spawned
        .ports()
        .queue
        .send(
            como_ports::QueueName::Requests,
            vec![como_ports::OutgoingMessage::new(
                "{\"not\": \"a booking\"}".to_owned(),
            )],
        )
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = api
            .spawned
            .ports()
            .queue
            .dead_letters(como_ports::QueueName::Requests, 10)
            .await
            .unwrap();
        if let Some(d) = dead.into_iter().next() {
            break d;
        }
        assert!(
            Instant::now() < until,
            "the bad request was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = como(&api, &operator, &["dlq", "list", "--queue", "requests"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&dead.message_id),
        "{out:?}"
    );
    let out = como(
        &api,
        &operator,
        &["dlq", "show", &dead.message_id, "--queue", "requests"],
    );
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    // The field the sender got wrong is named; its value, which may be anything, is not kept.
    assert!(
        shown.contains("\"withheld_fields\": [\n    \"not\"\n  ]"),
        "{shown}"
    );
    assert!(!shown.contains("a booking"), "{shown}");
    assert!(shown.contains(&dead.reason), "{shown}");
    let out = como(
        &api,
        &operator,
        &["dlq", "show", "no-such-id", "--queue", "requests"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = como(
        &api,
        &operator,
        &[
            "dlq",
            "redrive",
            "--queue",
            "requests",
            "--id",
            &dead.message_id,
            "--reason",
            "looking at it again",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = como(
        &api,
        &operator,
        &["dlq", "list", "--queue", "notifications", "--json"],
    );
    assert!(
        out.status.success(),
        "the notifications queue is an operator's too: {out:?}"
    );

    // Without a token: a one-line error, exit 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"))
        .args(["sagas", "list"])
        .env("COMO_SAGA_API", &api.base)
        .env_remove("COMO_SAGA_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("COMO_SAGA_TOKEN"),
        "{out:?}"
    );
    api.spawned.stop().await.unwrap();
}

/// schemathesis (from PyPI, installed on first use under the target directory) generates
/// requests from `/openapi.json` against a running API with some sagas in it, and finds no
/// server error, no undocumented status or content type, and no response that breaks the
/// document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let python = tokio::task::spawn_blocking(|| {
        como_backend_aws::testing::venv("schemathesis-venv", "schemathesis>=4.3,<5")
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot install schemathesis: {e}"));
    let st = python.with_file_name("st");
    let api = Api::start().await;
    for n in 0..3 {
        let request = booking(&format!("api-schemathesis-{n}"));
        api.post(
            "/v1/bookings",
            Role::Submitter,
            &serde_json::to_string(&request).unwrap(),
        )
        .await;
    }
    let token = api
        .key
        .mint("schemathesis", &Role::ALL, Duration::from_secs(3600))
        .unwrap();
    let document = format!("{}/openapi.json", api.base);
    let mut command = std::process::Command::new(st);
    command.args([
        "--no-color",
        "run",
        &document,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        "--max-examples",
        "60",
        "--seed",
        "20261204",
        "-H",
        &format!("Authorization: Bearer {token}"),
        // An event stream answers until the token expires (an hour here): it has a test of
        // its own below.
        "--exclude-path",
        "/v1/live",
    ]);
    // Its cache and reports go to a directory of their own, not the checkout.
    let scratch = tempfile::tempdir().unwrap();
    command.current_dir(scratch.path());
    // Off the runtime's threads: the API under test runs on them.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("11 passed") || said.contains("passed"),
        "{said}"
    );
    api.spawned.stop().await.unwrap();
}

/// Submits a booking with request id `id`; returns its saga id.
async fn submit(api: &Api, id: &str) -> String {
    let (status, answer) = api.submit(&booking(id)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    booking(id).saga_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_acts_on_exactly_the_previewed_sagas_and_reads_each_back() {
    let api = Api::start().await;
    api.sevenrooms_down().await;
    let mut stuck = Vec::new();
    for n in 0..3 {
        let saga = submit(&api, &format!("api-bulk-{n}")).await;
        api.wait_status(&saga, "waiting_for_downstream", Duration::from_secs(60))
            .await;
        stuck.push(saga);
    }
    // The dry run lists them, changes nothing, and names them in its token.
    let filter = json!({"action": "force_compensation", "status": "waiting_for_downstream"});
    let (status, preview) = api
        .post("/v1/bulk/preview", Role::Operator, &filter.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let mut listed: Vec<String> = preview["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["saga_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut want = stuck.clone();
    want.sort();
    assert_eq!(listed, want);
    let (_, still) = api
        .get(&format!("/v1/sagas/{}", stuck[0]), Role::Viewer)
        .await;
    assert_eq!(still["status"]["status"], "waiting_for_downstream");
    let token = preview["preview_token"].as_str().unwrap().to_owned();
    // A saga that came after the preview is not acted on.
    let late = submit(&api, "api-bulk-late").await;
    api.wait_status(&late, "waiting_for_downstream", Duration::from_secs(60))
        .await;

    // Refusals: a viewer; a token altered; a saga outside the preview; no reason.
    let execute = |body: Value| body.to_string();
    let (status, _) = api
        .post(
            "/v1/bulk/execute",
            Role::Viewer,
            &execute(json!({"preview_token": token, "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let altered = format!("{}x", &token);
    for (body, field) in [
        (
            json!({"preview_token": altered, "reason": "x"}),
            "preview_token",
        ),
        (
            json!({"preview_token": token, "reason": "x", "saga_ids": [late]}),
            "saga_ids",
        ),
        (json!({"preview_token": token, "reason": " "}), "reason"),
    ] {
        let (status, answer) = api
            .post("/v1/bulk/execute", Role::Operator, &execute(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }

    let (status, done) = api
        .post(
            "/v1/bulk/execute",
            Role::Operator,
            &execute(json!({"preview_token": token, "reason": "SevenRooms incident 4711: give the slots back"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{done}");
    for r in results {
        assert_eq!(r["result"], "applied", "{done}");
        assert_ne!(
            r["status_after"], "waiting_for_downstream",
            "read back after the action: {done}"
        );
        assert!(stuck.contains(&r["saga_id"].as_str().unwrap().to_owned()));
    }
    let (_, late_now) = api.get(&format!("/v1/sagas/{late}"), Role::Viewer).await;
    assert_eq!(
        late_now["status"]["status"], "waiting_for_downstream",
        "the saga that came after the preview was not touched"
    );
    // The same preview again changes nothing twice.
    let (_, again) = api
        .post(
            "/v1/bulk/execute",
            Role::Operator,
            &execute(json!({"preview_token": token, "reason": "again"})),
        )
        .await;
    for r in again["results"].as_array().unwrap() {
        assert_eq!(r["result"], "repeated", "{again}");
    }
    // Each history names the operator and the reason once.
    let (_, history) = api
        .get(
            &format!("/v1/sagas/{}/history?limit=500", stuck[1]),
            Role::Viewer,
        )
        .await;
    let acted: Vec<&Value> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "operator_action")
        .collect();
    assert_eq!(acted.len(), 1, "{history:#}");
    assert_eq!(
        acted[0]["reason"],
        "SevenRooms incident 4711: give the slots back"
    );

    // The command line: a dry run by default, --yes acts on exactly the listed sagas.
    let operator = api.token(Role::Operator);
    let out = como(
        &api,
        &operator,
        &[
            "sagas",
            "compensate",
            "--status",
            "waiting_for_downstream",
            "--reason",
            "incident",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("dry run") && said.contains(&late), "{said}");
    let (_, untouched) = api.get(&format!("/v1/sagas/{late}"), Role::Viewer).await;
    assert_eq!(untouched["status"]["status"], "waiting_for_downstream");
    let out = como(
        &api,
        &operator,
        &[
            "sagas",
            "compensate",
            "--status",
            "waiting_for_downstream",
            "--reason",
            "incident 4711, the last one",
            "--yes",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let acted: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(acted["results"][0]["saga_id"], late.as_str(), "{acted}");
    assert_eq!(acted["results"][0]["result"], "applied", "{acted}");
    api.spawned.stop().await.unwrap();
}

/// A query parameter's value, percent-encoded.
fn urlencoding(v: &str) -> String {
    let mut url = reqwest::Url::parse("http://x.invalid/").unwrap();
    url.query_pairs_mut().append_pair("v", v);
    url.query().unwrap()[2..].to_owned()
}

/// Reads server-sent events from `response` until `want` events came or the stream ended;
/// returns each event's name and data, and whether the stream ended.
async fn events(
    response: reqwest::Response,
    want: usize,
    within: Duration,
) -> (Vec<(String, Value)>, bool) {
    let mut response = response;
    let mut text = String::new();
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + within;
    loop {
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !name.is_empty() {
                got.push((name, serde_json::from_str(&data).expect("JSON data")));
            }
        }
        if got.len() >= want {
            return (got, false);
        }
        match tokio::time::timeout_at(until, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => return (got, true),
            Ok(Err(e)) => panic!("the stream failed: {e}"),
            Err(_) => panic!("{} events after {within:?}, not {want}", got.len()),
        }
    }
}

/// The dashboard's routes: its files, with a policy that allows only this origin; who the
/// token names; the overview (counts, circuits from the workers' shared records, queues) and
/// the same pushed as server-sent events until the token expires; the stuck list narrowed by
/// statuses; a saga's step outputs, and its guest's contact for an operator only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_its_live_overview_and_what_each_role_sees() {
    let api = Api::start().await;
    // The files, and the redirect to them; none needs a token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(format!("{}/", api.base)).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/dashboard/");
    for (path, kind, needle) in [
        ("/dashboard/", "text/html", "app.js"),
        ("/dashboard/app.js", "text/javascript", "/v1/live"),
        ("/dashboard/app.css", "text/css", "{"),
    ] {
        let r = http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(
            r.text().await.unwrap().contains(needle),
            "{path} holds {needle:?}"
        );
    }
    let (status, config) = api
        .call(Method::GET, "/dashboard/config.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, json!({"signin_url": null}));

    // Who the token names.
    let (status, me) = api.get("/v1/me", Role::Viewer).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], api_support::OPERATOR);
    assert_eq!(me["roles"], json!(["viewer"]));

    // A booking to the end: the overview counts it.
    let request = booking("api-dashboard-1");
    let saga = request.saga_id().to_string();
    api.submit(&request).await;
    api.wait_status(&saga, "confirmed", Duration::from_secs(30))
        .await;

    // Its outputs, as the workers reported them; the guest's contact for an operator only.
    let (_, view) = api.get(&format!("/v1/sagas/{saga}"), Role::Operator).await;
    let outputs: Vec<&Value> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["output"])
        .collect();
    assert!(
        outputs
            .iter()
            .any(|o| o["kind"] == "experience_booked" && o["reservation_id"].is_string()),
        "{view:#}"
    );
    assert!(
        outputs
            .iter()
            .any(|o| o["kind"] == "credits_redeemed" && o["receipt_no"].is_string()),
        "{view:#}"
    );
    assert_eq!(
        view["request"]["guest"]["phone"],
        request.guest.contact().unwrap().phone.as_str(),
        "{view:#}"
    );
    for role in [Role::Viewer, Role::Submitter] {
        let (_, view) = api.get(&format!("/v1/sagas/{saga}"), role).await;
        assert!(view["request"].get("guest").is_none(), "{role:?}: {view:#}");
        assert!(
            !view
                .to_string()
                .contains(request.guest.contact().unwrap().phone.as_str()),
            "{role:?}: {view:#}"
        );
    }

    // The overview; SevenRooms found down by a worker shows as an open circuit.
    let down = como_ports::records::SharedHealth {
        up: false,
        since_ms: Utc::now().timestamp_millis(),
        next_probe_at_ms: Utc::now().timestamp_millis() + 30_000,
        by: "test".into(),
    };
    let records = api.spawned.ports().records.clone();
    let key = como_ports::records::SharedHealth::key("SevenRooms");
    let before = records.get(&key).await.unwrap();
    assert!(
        records
            .swap(
                &key,
                before.as_deref(),
                &serde_json::to_string(&down).unwrap()
            )
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, overview) = api.get("/v1/overview", Role::Viewer).await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert!(
        overview["counts"]["total"].as_u64().unwrap() >= 1,
        "{overview:#}"
    );
    let circuit = |o: &Value, d: &str| {
        o["circuits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["downstream"] == d)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        circuit(&overview, "memberson")["state"],
        "closed",
        "{overview:#}"
    );
    assert_eq!(
        circuit(&overview, "sevenrooms")["state"],
        "open",
        "{overview:#}"
    );
    assert!(
        circuit(&overview, "sevenrooms")["next_probe_at"].is_string(),
        "{overview:#}"
    );
    let queues: Vec<&str> = overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(
        queues,
        [
            "requests",
            "replies",
            "commands-crm",
            "commands-sevenrooms",
            "notifications"
        ]
    );
    assert!(overview["series_since"].is_string(), "{overview:#}");

    // Live: the stream needs a token, pushes the overview at once and again, and ends by
    // itself when the token expires (this one lives 4 s).
    let (status, _) = api.call(Method::GET, "/v1/live", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let short = api
        .key
        .mint("wall-screen", &[Role::Viewer], Duration::from_secs(4))
        .unwrap();
    let response = api
        .http
        .get(format!("{}/v1/live", api.base))
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (got, ended) = events(response, 100, Duration::from_secs(15)).await;
    assert!(ended, "the stream ends when its token expires");
    assert!(
        got.len() >= 2,
        "one overview at once and more every 2 s: {}",
        got.len()
    );
    assert!(
        got.iter()
            .all(|(name, data)| name == "overview" && data["counts"]["by_status"].is_array())
    );
    let at: Vec<&str> = got.iter().map(|(_, d)| d["at"].as_str().unwrap()).collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "each event a newer read: {at:?}"
    );

    // A stream open when the server stops ends then: a graceful stop does not wait for it.
    let open = || {
        api.http
            .get(format!("{}/v1/live", api.base))
            .bearer_auth(api.token(Role::Viewer))
            .send()
    };
    let (got, ended) = events(open().await.unwrap(), 1, Duration::from_secs(5)).await;
    assert_eq!((got.len(), ended), (1, false));
    let response = open().await.unwrap();
    api.spawned.shutdown.cancel();
    let (_, ended) = events(response, 100, Duration::from_secs(5)).await;
    assert!(ended, "the stream ends when the server stops");
    api.spawned.stop().await.unwrap();
}

/// The stuck list is narrowed by live statuses; a finished status or an unknown one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stuck_list_takes_live_statuses_only() {
    let api = Api::start().await;
    let (status, stuck) = api
        .get(
            "/v1/stuck?older_than=0s&status=waiting_for_downstream,reconciling,needs_operator",
            Role::Viewer,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stuck}");
    assert_eq!(stuck["items"], json!([]));
    for bad in ["confirmed", "running,bogus"] {
        let (status, answer) = api
            .get(&format!("/v1/stuck?status={bad}"), Role::Viewer)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], "status", "{answer}");
    }
    api.spawned.stop().await.unwrap();
}
