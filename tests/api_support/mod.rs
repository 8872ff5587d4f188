//! The whole system in-process (`spawn_app`: both simulators, the orchestrator and both workers
//! on a real SQLite file) with its operator API served on loopback, and an HTTP client that
//! signs its tokens with the API's local key, and the simulators' ledgers read over HTTP: what
//! the API tests, the operator's test and the dashboard's test share.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use como_api::auth::{LocalKey, Role};
use como_app::{App, SpawnOptions, Spawned, spawn_app};
use como_schemas::{BookingRequested, SagaId};
use como_simulators::invariant::SagaKeys;
use como_simulators::ledger::Ledger;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Who the tokens name.
pub const OPERATOR: &str = "ops-alice";

pub struct Api {
    pub spawned: Spawned,
    pub base: String,
    pub key: LocalKey,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(|app| app).await
    }

    /// With `prepare` applied to the application before its roles start.
    pub async fn start_with(prepare: impl FnOnce(App) -> App) -> Api {
        let spawned = spawn_app(
            SpawnOptions {
                quick: true,
                ..SpawnOptions::default()
            },
            prepare,
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = LocalKey::load_or_create(&dir.path().join("key.pem")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        spawned
            .app
            .serve_api(
                listener,
                &key.auth_config(),
                Some(spawned.running.metrics()),
                &spawned.shutdown,
            )
            .unwrap();
        Api {
            spawned,
            base,
            key,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A token for `role`, naming [`OPERATOR`].
    pub fn token(&self, role: Role) -> String {
        self.key
            .mint(OPERATOR, &[role], Duration::from_secs(600))
            .unwrap()
    }

    /// `method path` with `token` (none: no `Authorization`) and a JSON `body`; the status and
    /// the answer (JSON, or the text as a string).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, role: Role) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.token(role)), None)
            .await
    }

    pub async fn post(&self, path: &str, role: Role, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.token(role)), Some(body))
            .await
    }

    /// `POST /v1/bookings` of `request`, as a submitter.
    pub async fn submit(&self, request: &BookingRequested) -> (StatusCode, Value) {
        let body = serde_json::to_string(request).unwrap();
        self.post("/v1/bookings", Role::Submitter, &body).await
    }

    /// SevenRooms answers 503 to everything (for five minutes, or until its faults are
    /// cleared); returns its base URL.
    pub async fn sevenrooms_down(&self) -> String {
        let sevenrooms = self.spawned.sims.sevenrooms_url().to_owned();
        self.http
            .post(format!("{sevenrooms}/_sim/outage"))
            .json(&serde_json::json!({"for_ms": 300_000, "status": 503}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        sevenrooms
    }

    pub fn memberson(&self) -> String {
        self.spawned.sims.memberson_url().to_owned()
    }

    pub fn sevenrooms(&self) -> String {
        self.spawned.sims.sevenrooms_url().to_owned()
    }

    /// The saga's state as the store holds it, and the keys its effects carry downstream.
    pub async fn keys(&self, saga: SagaId) -> (como_engine::SagaState, SagaKeys) {
        let state = self
            .spawned
            .ports()
            .store
            .get(saga)
            .await
            .unwrap()
            .expect("the saga is stored")
            .value;
        let keys = SagaKeys::of(&state);
        (state, keys)
    }

    /// Both ledgers, read over HTTP as any outside checker would.
    pub async fn ledger(&self) -> Ledger {
        let memberson = self
            .get_json(&format!("{}/_sim/ledger", self.memberson()))
            .await;
        let sevenrooms = self
            .get_json(&format!("{}/_sim/ledger", self.sevenrooms()))
            .await;
        Ledger {
            memberson: serde_json::from_value(memberson).expect("Memberson's ledger"),
            sevenrooms: serde_json::from_value(sevenrooms).expect("SevenRooms' ledger"),
        }
    }

    pub async fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap()
    }

    /// Replaces a simulator's fault rules through its admin route.
    pub async fn put_faults(&self, base: &str, rules: Value) {
        let response = self
            .http
            .put(format!("{base}/_sim/faults"))
            .json(&rules)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "{base} refused the rules {rules}: {}",
            response.text().await.unwrap()
        );
    }

    pub async fn delete_faults(&self, base: &str) {
        self.http
            .delete(format!("{base}/_sim/faults"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("DELETE {base}/_sim/faults: {e}"));
    }

    /// The saga's view, or `None` until the orchestrator has taken the request off its queue.
    pub async fn saga(&self, saga: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/sagas/{saga}", self.base))
            .bearer_auth(self.token(Role::Viewer))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.json().await.unwrap()),
            other => panic!(
                "GET /v1/sagas/{saga}: {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }

    /// Polls the saga until its status is `want`; panics after `within`, or at once when it
    /// ends otherwise, with the saga's view.
    pub async fn wait_status(&self, saga: &str, want: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let view = self.saga(saga).await;
            let status = view.as_ref().map(|v| v["status"]["status"].clone());
            if status.as_ref().is_some_and(|s| s == want) {
                return view.unwrap();
            }
            let ended = status
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|s| ["confirmed", "compensated", "cancelled"].contains(&s));
            let view = view.unwrap_or(Value::Null);
            assert!(
                !ended,
                "saga {saga} ended without ever being {want}; it is: {view:#}"
            );
            assert!(
                Instant::now() < until,
                "saga {saga} did not become {want} within {within:?}; it is: {view:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
