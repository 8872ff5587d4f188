//! An operator fixes a stuck saga by hand, over real HTTP on the whole system in-process
//! (`spawn_app`: both simulators, the orchestrator and both workers on a real SQLite file):
//! SevenRooms refuses the booking after the credits were redeemed, and Memberson refuses to void
//! the redemption (it is locked for settlement), so the compensation is refused and the saga
//! stops in `needs_operator`. The operator finds it with `como-saga sagas list`, voids the
//! redemption and releases the hold by hand in the downstream systems, then records it with
//! `como-saga sagas resolve`; the history names the operator and the reason, and the ledgers
//! show the member paid nothing and nothing is booked or held.

mod api_support;
mod support;

use std::time::{Duration, Instant};

use api_support::{Api, OPERATOR};
use chrono::Utc;
use como_api::auth::Role;
use como_app::notify::{Webhook, signature};
use como_schemas::credentials::ExposeSecret;
use como_schemas::{BookingRequested, MemberNo, VenueId, examples};
use como_simulators::ledger::{HoldStatus, RedemptionStatus};
use como_simulators::seed::{MEMBER_RICH, VENUE_LARGE};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec-operator-test";

/// A webhook receiver on loopback: records every delivery, and refuses the first with a 500
/// (the notifier must try again).
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(Instant, axum::http::HeaderMap, String)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got: std::sync::Arc<std::sync::Mutex<Vec<(Instant, axum::http::HeaderMap, String)>>> =
            std::sync::Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((Instant::now(), headers, body));
                    if seen.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    fn deliveries(&self) -> Vec<(Instant, axum::http::HeaderMap, String)> {
        self.got.lock().unwrap().clone()
    }
}
const REASON: &str = "voided by hand in Memberson: receipt locked for settlement";

impl Api {
    /// `GET path` as a viewer, which must answer 200.
    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path, Role::Viewer).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body:#}");
        body
    }

    /// Every entry of the saga's history, paged to the end.
    async fn history(&self, saga: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/sagas/{saga}/history?limit=100&cursor={c}"),
                None => format!("/v1/sagas/{saga}/history?limit=100"),
            };
            let page = self.get_ok(&path).await;
            entries.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return entries,
            }
        }
    }
}

/// Memberson as a person at the CRM uses it: signed in with the tenant's credentials.
async fn memberson_void(
    api: &Api,
    member: &str,
    receipt: &str,
    reason: &str,
) -> (StatusCode, Value) {
    let creds = api.spawned.sims.memberson_credentials();
    let base = api.memberson();
    let token: String = api
        .http
        .post(format!("{base}/api/user/authenticate"))
        .header("SvcAuth", creds.svc_auth.expose_secret())
        .json(&json!({"Username": creds.username, "Password": creds.password.expose_secret()}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("sign in to Memberson")
        .json()
        .await
        .expect("a token");
    let response = api
        .http
        .post(format!("{base}/api/transaction/void-redeem-point"))
        .header("SvcAuth", creds.svc_auth.expose_secret())
        .header("Token", token)
        .json(&json!({"MemberNo": member, "ReceiptNo": receipt, "Reason": reason}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// SevenRooms as a person at the venue uses it: releases a reservation hold.
async fn sevenrooms_release(api: &Api, venue: &str, hold_id: &str) -> (StatusCode, Value) {
    let creds = api.spawned.sims.sevenrooms_credentials();
    let base = api.sevenrooms();
    let auth: Value = api
        .http
        .post(format!("{base}/auth"))
        .form(&[
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.expose_secret()),
        ])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("sign in to SevenRooms")
        .json()
        .await
        .expect("an envelope");
    let token = auth["data"]["token"].as_str().expect("a token").to_owned();
    let response = api
        .http
        .delete(format!("{base}/venues/{venue}/holds/{hold_id}"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `como-saga ...` against the API, as an operator runs it (off the runtime's threads: the API
/// under test runs on them).
async fn como(api: &Api, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_como-saga"));
    command
        .args(args)
        .env("COMO_SAGA_API", &api.base)
        .env("COMO_SAGA_TOKEN", api.token(Role::Operator));
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn booking(request_id: &str) -> BookingRequested {
    let date = Utc::now().date_naive() + chrono::Days::new(30);
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(MEMBER_RICH).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_whose_compensation_is_refused_is_found_fixed_by_hand_and_resolved() {
    let started = Instant::now();
    let receiver = Receiver::start().await;
    let webhook = Webhook {
        url: receiver.url.clone(),
        secret: WEBHOOK_SECRET.into(),
    };
    let api = Api::start_with(|app| app.with_webhook(Some(webhook))).await;
    let opening = api.ledger().await;
    let balance_before = opening.memberson.member(MEMBER_RICH).unwrap().balance;

    // SevenRooms refuses the booking (after the credits are redeemed), and Memberson refuses to
    // void a redemption: it is locked for settlement.
    api.put_faults(
        &api.sevenrooms(),
        json!([{"kind": "refuse", "code": "SLOT_UNAVAILABLE", "ops": ["book"]}]),
    )
    .await;
    api.put_faults(
        &api.memberson(),
        json!([{"kind": "refuse", "code": "RECEIPT_LOCKED", "ops": ["void"]}]),
    )
    .await;

    let request = booking("operator-stuck-1");
    let saga_id = request.saga_id();
    let saga = saga_id.to_string();
    let (status, accepted) = api.submit(&request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["saga_id"], saga.as_str(), "{accepted}");
    let stuck = api
        .wait_status(&saga, "needs_operator", Duration::from_secs(60))
        .await;
    let status = &stuck["status"];
    assert_eq!(status["reason"], "compensation_refused", "{stuck:#}");
    assert_eq!(status["step"], "redeem_credits", "{stuck:#}");
    assert_eq!(status["compensating"], "compensated", "{stuck:#}");
    // The worker reports Memberson's refusal, code and message.
    let detail = status["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Memberson refused to undo redeem_credits")
            && detail.contains("locked for settlement"),
        "the view names Memberson's refusal: {stuck:#}"
    );
    assert_eq!(stuck["waiting_on"]["on"], "operator", "{stuck:#}");
    println!("stuck after {:?}: {:#}", started.elapsed(), status);

    // Pushed, not only polled: the webhook got SagaNeedsOperator, signed; it refused the first
    // delivery, and the notifier tried again after its back-off.
    let until = Instant::now() + Duration::from_secs(60);
    while receiver.deliveries().len() < 2 {
        assert!(
            Instant::now() < until,
            "the webhook was not tried again: {:?}",
            receiver.deliveries()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        2,
        "delivered once accepted: {deliveries:?}"
    );
    for (_, headers, body) in &deliveries {
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "SagaNeedsOperator", "{event:#}");
        assert_eq!(event["saga_id"], saga.as_str(), "{event:#}");
        assert_eq!(event["reason"], "compensation_refused", "{event:#}");
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("como-event-type"), "SagaNeedsOperator");
        assert_eq!(header("como-event-id"), event["event_id"].as_str().unwrap());
        let sig = header("como-signature");
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("a signature time");
        assert_eq!(
            sig,
            signature(WEBHOOK_SECRET, t, body),
            "the signature verifies"
        );
        assert_ne!(sig, signature("another secret", t, body));
    }
    assert_eq!(
        deliveries[0].2, deliveries[1].2,
        "the same notification again"
    );
    let gap = deliveries[1].0 - deliveries[0].0;
    assert!(
        gap >= Duration::from_secs(4),
        "tried again after a back-off: {gap:?}"
    );

    // /metrics counts the compensation the refused booking began (the redemption's void).
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "como_compensations_total{step=\"redeem_credits\"} 1.0"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l
                == "como_sagas_at_step{status=\"needs_operator\",step=\"redeem_credits\"} 1.0"),
        "{metrics}"
    );

    // Found from the command line, as a table and as JSON.
    let out = como(&api, &["sagas", "list", "--status", "needs_operator"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&saga), "{}", stdout(&out));
    let out = como(
        &api,
        &["sagas", "list", "--status", "needs_operator", "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["saga_id"].as_str())
        .collect();
    assert_eq!(ids, [saga.as_str()], "{listed:#}");

    // Before the fix: the credits are taken and not given back, the slot still held, nothing
    // booked.
    let (_, keys) = api.keys(saga_id).await;
    let receipt = format!("CS-{}", saga.replace('-', ""));
    assert_eq!(keys.receipt_no, receipt);
    let hold_id = keys.hold_id.clone().expect("the saga learnt its hold");
    let credits = i64::try_from(request.quoted_credits.get()).unwrap();
    let ledger = api.ledger().await;
    let member = ledger.memberson.member(MEMBER_RICH).unwrap();
    let redeemed: Vec<_> = ledger.memberson.redemptions_for_receipt(&receipt).collect();
    assert_eq!(
        redeemed.len(),
        1,
        "{:#?}",
        ledger.memberson.member(MEMBER_RICH)
    );
    assert_eq!(
        redeemed[0].1.status,
        RedemptionStatus::Redeemed,
        "{redeemed:#?}"
    );
    assert_eq!(redeemed[0].1.amount, credits);
    assert_eq!(member.balance, balance_before - credits);
    assert_eq!(ledger.sevenrooms.with_external_id(&saga).count(), 0);
    assert_eq!(
        ledger.sevenrooms.hold(&hold_id).map(|h| h.status),
        Some(HoldStatus::Held),
        "{:#?}",
        ledger.sevenrooms.holds
    );
    // Memberson did refuse the void: the rule fired, and it refuses a person too while locked.
    let installed = api
        .get_json(&format!("{}/_sim/faults", api.memberson()))
        .await;
    assert!(installed[0]["fired"].as_u64().unwrap() >= 1, "{installed}");
    let (code, refused) = memberson_void(&api, MEMBER_RICH, &receipt, "by hand").await;
    assert_eq!(
        (code, &refused["Code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("RECEIPT_LOCKED")),
        "{refused}"
    );
    assert_eq!(
        api.ledger()
            .await
            .memberson
            .member(MEMBER_RICH)
            .unwrap()
            .balance,
        balance_before - credits
    );

    // The operator fixes it by hand: the lock is lifted, the redemption voided in Memberson,
    // the hold released in SevenRooms; then the saga is resolved as compensated.
    api.delete_faults(&api.memberson()).await;
    api.delete_faults(&api.sevenrooms()).await;
    let (code, voided) = memberson_void(&api, MEMBER_RICH, &receipt, REASON).await;
    assert_eq!(code, StatusCode::OK, "{voided}");
    assert_eq!(voided["AlreadyVoided"], false, "{voided}");
    let (code, released) = sevenrooms_release(&api, VENUE_LARGE, &hold_id).await;
    assert_eq!(code, StatusCode::OK, "{released}");
    let out = como(
        &api,
        &[
            "sagas",
            "resolve",
            &saga,
            "--outcome",
            "compensated",
            "--reason",
            REASON,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("compensated"), "{out:?}");

    // `sagas show` names who acted and why.
    let out = como(&api, &["sagas", "show", &saga]).await;
    assert!(out.status.success(), "{out:?}");
    let shown = stdout(&out);
    assert!(shown.contains(&format!("operator: {OPERATOR}")), "{shown}");
    assert!(shown.contains(&format!("reason: {REASON}")), "{shown}");

    // The API: compensated, the history records the refusal, then the operator and the reason.
    let view = api
        .wait_status(&saga, "compensated", Duration::from_secs(10))
        .await;
    assert!(view.get("waiting_on").is_none(), "{view:#}");
    let history = api.history(&saga).await;
    let acted: Vec<&Value> = history
        .iter()
        .filter(|h| h["kind"] == "operator_action")
        .collect();
    assert_eq!(acted.len(), 1, "{history:#?}");
    assert_eq!(acted[0]["operator"], OPERATOR, "{:#}", acted[0]);
    assert_eq!(acted[0]["reason"], REASON, "{:#}", acted[0]);
    assert_eq!(acted[0]["detail"], "resolve_compensated", "{:#}", acted[0]);
    let refusal = history
        .iter()
        .position(|h| h["needs_operator_reason"] == "compensation_refused")
        .unwrap_or_else(|| panic!("no entry records the refusal: {history:#?}"));
    let action = history
        .iter()
        .position(|h| h["kind"] == "operator_action")
        .unwrap();
    assert!(refusal < action, "{history:#?}");
    assert_eq!(
        history.last().unwrap()["kind"],
        "compensated",
        "{history:#?}"
    );
    let out = como(
        &api,
        &["sagas", "list", "--status", "needs_operator", "--json"],
    )
    .await;
    let listed: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(listed["items"], json!([]), "{listed:#}");

    // The ledgers: the redemption voided, the balance as it was, nothing booked, nothing held;
    // the money invariant holds for the saga as it ended.
    let ledger = api.ledger().await;
    let member = ledger.memberson.member(MEMBER_RICH).unwrap();
    assert_eq!(member.balance, balance_before, "{member:#?}");
    let redeemed: Vec<_> = ledger.memberson.redemptions_for_receipt(&receipt).collect();
    assert_eq!(redeemed.len(), 1, "{member:#?}");
    assert_eq!(
        redeemed[0].1.status,
        RedemptionStatus::Voided,
        "{member:#?}"
    );
    assert_eq!(redeemed[0].1.void_reason.as_deref(), Some(REASON));
    assert!(
        ledger
            .sevenrooms
            .with_external_id(&saga)
            .all(|r| !r.is_live()),
        "{:#?}",
        ledger.sevenrooms.reservations
    );
    assert_eq!(
        ledger.sevenrooms.hold(&hold_id).map(|h| h.status),
        Some(HoldStatus::Released),
        "{:#?}",
        ledger.sevenrooms.holds
    );
    assert!(
        ledger
            .sevenrooms
            .holds
            .iter()
            .all(|h| h.status != HoldStatus::Held),
        "{:#?}",
        ledger.sevenrooms.holds
    );
    let (state, _) = api.keys(saga_id).await;
    let (counts, violations) = support::verdict(&[Some(state)], &ledger);
    assert_eq!(counts.get("compensated"), Some(&1), "{counts:?}");
    assert!(violations.is_empty(), "{violations:#?}");

    api.spawned.stop().await.unwrap();
    println!("done in {:?}", started.elapsed());
}
