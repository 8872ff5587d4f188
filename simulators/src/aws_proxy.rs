//! A fault-injecting HTTP proxy in front of an AWS-compatible endpoint (moto on loopback in the
//! tests): every request is forwarded to the upstream, except that a share of them, chosen by
//! rules and a seed, is answered with a fault instead. It speaks the JSON protocols the SDKs in
//! this workspace use, and tells calls apart by their `X-Amz-Target` header:
//! `DynamoDB_20120810.PutItem` (service `dynamodb`), `AmazonSQS.SendMessageBatch` (`sqs`),
//! `AWSEvents.PutEvents` (`events`), `secretsmanager.GetSecretValue` (`secretsmanager`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use como_simulators::aws_proxy::{AwsFaultProxy, Fault, Rule};
//!
//! let proxy = AwsFaultProxy::start("http://127.0.0.1:5000", 7).await?;
//! // Point the SDK at proxy.endpoint() instead of the upstream, then:
//! proxy.set_rules(vec![Rule::new("dynamodb", Some("PutItem"), Fault::Throttling).probability(0.3)]);
//! // ...
//! println!("{:?}", proxy.fired()); // {"throttling": 12}
//! proxy.clear();
//! # Ok(()) }
//! ```
//!
//! Admin routes (never faulted): `GET /_proxy/faults` (the rules, each with the times it
//! fired), `PUT /_proxy/faults` (replace them; one rule or a list), `POST /_proxy/faults` (add),
//! `DELETE /_proxy/faults` (remove all), `GET /_proxy/stats` (`{"fired": {kind: n},
//! "requests": {"service.Operation": n}}`).
//!
//! Each request draws its own generator from `(seed, request number)`, as the simulators'
//! faults do: the same seed and the same order of requests give the same faults. The first
//! rule (in order) that matches and fires decides.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};

/// One rule: which calls, what fault, how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// `dynamodb`, `sqs`, `events` (or `eventbridge`), `secretsmanager`; `*`: any.
    pub service: String,
    /// The operation (`PutItem`, `SendMessageBatch`, `PutEvents`, ...); none: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(flatten)]
    pub fault: Fault,
    /// Chance, per matching call, that the rule fires.
    #[serde(default = "certain")]
    pub probability: f64,
    /// Fire at most this many times (none: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

fn certain() -> f64 {
    1.0
}

impl Rule {
    /// A rule that fires on every matching call, without limit.
    pub fn new(service: &str, operation: Option<&str>, fault: Fault) -> Self {
        Self {
            service: service.to_owned(),
            operation: operation.map(str::to_owned),
            fault,
            probability: 1.0,
            times: None,
        }
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Why the rule cannot be installed, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(format!(
                "probability {} is not within 0..1",
                self.probability
            ));
        }
        if let Fault::ServerError { status } = self.fault
            && !(500..600).contains(&status)
        {
            return Err(format!("status {status} is not a 5xx"));
        }
        Ok(())
    }

    fn matches(&self, call: &Call) -> bool {
        let service = match self.service.as_str() {
            "eventbridge" => "events",
            s => s,
        };
        (service == "*" || service.eq_ignore_ascii_case(&call.service))
            && self
                .operation
                .as_deref()
                .is_none_or(|op| op == call.operation)
            && (!matches!(self.fault, Fault::PartialBatch) || call.is_batch())
    }
}

/// What a rule does to a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 400 `ProvisionedThroughputExceededException` (DynamoDB's throttling of a table or
    /// index), without forwarding.
    ProvisionedThroughputExceeded,
    /// HTTP 400 `ThrottlingException`, without forwarding.
    Throttling,
    /// HTTP 5xx (500 by default, or 503) with the body the service sends (`InternalServerError`
    /// / `InternalFailure` / `InternalException`; `ServiceUnavailable`), without forwarding.
    ServerError {
        #[serde(default = "default_status")]
        status: u16,
    },
    /// Forward at once (the call takes effect), then hold the answer `ms` before passing it on:
    /// meant to be past the client's timeouts.
    Slow { ms: u64 },
    /// Drop the connection without an answer (a reset); the call is not forwarded.
    Reset,
    /// Forward (the call takes effect), then drop the connection instead of answering.
    LostAnswer,
    /// Forward (the call takes effect), then answer 500 instead of the real answer.
    #[serde(rename = "lost_answer_500")]
    LostAnswer500,
    /// On a batch call (`SendMessageBatch`, `DeleteMessageBatch`,
    /// `ChangeMessageVisibilityBatch`, `PutEvents`): forward only every other entry (the
    /// second, the fourth, ...) and answer the others as failed entries, as the services do
    /// when part of a batch fails (SQS `InternalError`, EventBridge `InternalFailure`).
    PartialBatch,
}

fn default_status() -> u16 {
    500
}

impl Fault {
    /// The name [`AwsFaultProxy::fired`] counts it under.
    pub fn label(&self) -> String {
        match self {
            Fault::ProvisionedThroughputExceeded => "provisioned_throughput_exceeded".into(),
            Fault::Throttling => "throttling".into(),
            Fault::ServerError { status } => format!("server_error_{status}"),
            Fault::Slow { .. } => "slow".into(),
            Fault::Reset => "reset".into(),
            Fault::LostAnswer => "lost_answer".into(),
            Fault::LostAnswer500 => "lost_answer_500".into(),
            Fault::PartialBatch => "partial_batch".into(),
        }
    }
}

/// A rule as installed, with the times it fired.
#[derive(Clone, Debug, Serialize)]
pub struct InstalledRule {
    #[serde(flatten)]
    pub rule: Rule,
    pub fired: u64,
}

/// Which call a request is.
struct Call {
    service: String,
    operation: String,
}

impl Call {
    fn of(headers: &HeaderMap) -> Call {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (prefix, operation) = target.split_once('.').unwrap_or(("", target));
        let service = match prefix {
            "DynamoDB_20120810" => "dynamodb".to_owned(),
            "AmazonSQS" => "sqs".to_owned(),
            "AWSEvents" => "events".to_owned(),
            "" => "unknown".to_owned(),
            other => other.to_ascii_lowercase(),
        };
        Call {
            service,
            operation: if operation.is_empty() {
                "unknown".into()
            } else {
                operation.into()
            },
        }
    }

    fn is_batch(&self) -> bool {
        matches!(
            (self.service.as_str(), self.operation.as_str()),
            (
                "sqs",
                "SendMessageBatch" | "DeleteMessageBatch" | "ChangeMessageVisibilityBatch"
            ) | ("events", "PutEvents")
        )
    }

    fn name(&self) -> String {
        format!("{}.{}", self.service, self.operation)
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    seed: u64,
    sequence: AtomicU64,
    rules: Mutex<Vec<InstalledRule>>,
    fired: Mutex<BTreeMap<String, u64>>,
    requests: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The fault for this call, if a rule fires (counted).
    fn decide(&self, call: &Call) -> Option<Fault> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut rng = SmallRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rules = lock(&self.rules);
        for installed in rules.iter_mut() {
            let rule = &installed.rule;
            if !rule.matches(call) || rule.times.is_some_and(|t| installed.fired >= t) {
                continue;
            }
            if rule.probability < 1.0 && rng.random::<f64>() >= rule.probability {
                continue;
            }
            installed.fired += 1;
            *lock(&self.fired).entry(rule.fault.label()).or_insert(0) += 1;
            tracing::debug!(call = %call.name(), fault = %rule.fault.label(), "fault injected");
            return Some(rule.fault.clone());
        }
        None
    }

    async fn forward(&self, parts: &axum::http::request::Parts, body: Bytes) -> Response {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers.clone();
        for h in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::CONNECTION,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        let sent = self
            .client
            .request(parts.method.clone(), format!("{}{path}", self.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response();
            }
        };
        let status = answer.status();
        let mut headers = answer.headers().clone();
        for h in [
            header::CONTENT_LENGTH,
            header::CONNECTION,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        match answer.bytes().await {
            Ok(body) => (status, headers, body).into_response(),
            Err(e) => (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
        }
    }
}

/// The connection a request came on: a fault can drop it.
#[derive(Clone)]
struct Connection(Arc<Notify>);

impl Connection {
    /// Drop the connection (with a reset) without an answer: this future never completes, the
    /// connection's task drops it with the connection.
    async fn drop_it(&self) -> Response {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// An error answer as `service` sends it: status, JSON body with `__type` and `message`, and
/// for SQS (a query-compatible JSON protocol) the `x-amzn-query-error` header.
fn error_answer(service: &str, status: u16, code: &str, message: &str) -> Response {
    let (namespace, content_type) = match service {
        "dynamodb" => (
            "com.amazonaws.dynamodb.v20120810",
            "application/x-amz-json-1.0",
        ),
        "sqs" => ("com.amazonaws.sqs", "application/x-amz-json-1.0"),
        _ => ("", "application/x-amz-json-1.1"),
    };
    let kind = if namespace.is_empty() {
        code.to_owned()
    } else {
        format!("{namespace}#{code}")
    };
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({ "__type": kind, "message": message })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    if service == "sqs" {
        let fault = if status < 500 { "Sender" } else { "Receiver" };
        if let Ok(v) = HeaderValue::from_str(&format!("{code};{fault}")) {
            headers.insert("x-amzn-query-error", v);
        }
    }
    response
}

fn throttled(service: &str, code: &str) -> Response {
    let message = match code {
        "ProvisionedThroughputExceededException" => {
            "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."
        }
        _ => "Rate of requests exceeds the allowed throughput.",
    };
    error_answer(service, 400, code, message)
}

fn server_error(service: &str, status: u16) -> Response {
    let (code, message) = match (service, status) {
        (_, 503) => ("ServiceUnavailable", "Service is unable to handle request."),
        ("dynamodb", _) => ("InternalServerError", "Internal server error"),
        ("events", _) => ("InternalException", "An internal error occurred."),
        _ => (
            "InternalFailure",
            "We encountered an internal error. Please try again.",
        ),
    };
    error_answer(service, status, code, message)
}

/// A batch call with every other entry left out (the first, the third, ...): the body to
/// forward (none when nothing is left) and the entries left out.
fn split_batch(body: &Bytes) -> Option<(Option<Bytes>, Vec<Value>)> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let entries = request.get_mut("Entries")?.as_array_mut()?;
    let all = std::mem::take(entries);
    let (mut failed, mut kept) = (Vec::new(), Vec::new());
    for (i, e) in all.into_iter().enumerate() {
        if i % 2 == 0 {
            failed.push(e);
        } else {
            kept.push(e);
        }
    }
    if kept.is_empty() {
        return Some((None, failed));
    }
    *entries = kept;
    let forward = serde_json::to_vec(&request).ok().map(Bytes::from);
    Some((forward, failed))
}

impl Shared {
    /// [`Fault::PartialBatch`]: forward part of the batch, and answer as the service would
    /// have had the rest failed.
    async fn partial(
        &self,
        call: &Call,
        parts: &axum::http::request::Parts,
        body: Bytes,
    ) -> Response {
        let Some((forward, failed)) = split_batch(&body) else {
            return self.forward(parts, body).await;
        };
        let (status, headers, mut answer) = match forward {
            Some(b) => {
                let response = self.forward(parts, b).await;
                let (p, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                if !p.status.is_success() {
                    return (p.status, p.headers, bytes).into_response();
                }
                let value: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
                (p.status, p.headers, value)
            }
            None => (StatusCode::OK, HeaderMap::new(), json!({})),
        };
        if call.service == "events" {
            // Entries answer in order: the failed ones at the even positions.
            let mut accepted = answer["Entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter();
            let n = failed.len() + accepted.len();
            let entries: Vec<Value> = (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        json!({"ErrorCode": "InternalFailure", "ErrorMessage": "Internal failure (injected)."})
                    } else {
                        accepted.next().unwrap_or(json!({}))
                    }
                })
                .collect();
            let failed_count = entries
                .iter()
                .filter(|e| e.get("ErrorCode").is_some())
                .count();
            answer = json!({"FailedEntryCount": failed_count, "Entries": entries});
        } else {
            let list = answer
                .as_object_mut()
                .map(|o| o.entry("Failed").or_insert(json!([])));
            if let Some(Value::Array(list)) = list {
                for e in failed {
                    list.push(json!({
                        "Id": e.get("Id").cloned().unwrap_or(Value::Null),
                        "SenderFault": false,
                        "Code": "InternalError",
                        "Message": "Internal error (injected).",
                    }));
                }
            }
            if let Some(o) = answer.as_object_mut() {
                o.entry("Successful").or_insert(json!([]));
            }
        }
        let mut response = (status, headers, Json(answer)).into_response();
        let content_type = if call.service == "events" {
            "application/x-amz-json-1.1"
        } else {
            "application/x-amz-json-1.0"
        };
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("request body: {e}")).into_response(),
    };
    let call = Call::of(&parts.headers);
    *lock(&shared.requests).entry(call.name()).or_insert(0) += 1;
    let Some(fault) = shared.decide(&call) else {
        return shared.forward(&parts, body).await;
    };
    match fault {
        Fault::ProvisionedThroughputExceeded => {
            throttled(&call.service, "ProvisionedThroughputExceededException")
        }
        Fault::Throttling => throttled(&call.service, "ThrottlingException"),
        Fault::ServerError { status } => server_error(&call.service, status),
        Fault::Slow { ms } => {
            let answer = shared.forward(&parts, body).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer
        }
        Fault::Reset => connection.drop_it().await,
        Fault::LostAnswer => {
            let _ = shared.forward(&parts, body).await;
            connection.drop_it().await
        }
        Fault::LostAnswer500 => {
            let _ = shared.forward(&parts, body).await;
            server_error(&call.service, 500)
        }
        Fault::PartialBatch => shared.partial(&call, &parts, body).await,
    }
}

/// One rule or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Rules {
    Many(Vec<Rule>),
    One(Rule),
}

impl Rules {
    fn checked(self) -> Result<Vec<Rule>, Response> {
        let rules = match self {
            Rules::Many(r) => r,
            Rules::One(r) => vec![r],
        };
        for r in &rules {
            r.check()
                .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())?;
        }
        Ok(rules)
    }
}

fn installed(rules: Vec<Rule>) -> impl Iterator<Item = InstalledRule> {
    rules
        .into_iter()
        .map(|rule| InstalledRule { rule, fired: 0 })
}

fn admin(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_proxy/faults",
            get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.rules).clone()) })
                .put(
                    |State(s): State<Arc<Shared>>, Json(rules): Json<Rules>| async move {
                        let rules = rules.checked()?;
                        *lock(&s.rules) = installed(rules).collect();
                        Ok::<_, Response>(StatusCode::NO_CONTENT)
                    },
                )
                .post(
                    |State(s): State<Arc<Shared>>, Json(rules): Json<Rules>| async move {
                        let rules = rules.checked()?;
                        lock(&s.rules).extend(installed(rules));
                        Ok::<_, Response>(StatusCode::NO_CONTENT)
                    },
                )
                .delete(|State(s): State<Arc<Shared>>| async move {
                    lock(&s.rules).clear();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/_proxy/stats",
            get(|State(s): State<Arc<Shared>>| async move {
                Json(json!({
                    "fired": lock(&s.fired).clone(),
                    "requests": lock(&s.requests).clone(),
                }))
            }),
        )
        .fallback(proxy)
        .with_state(shared)
}

/// A running proxy; it stops when dropped.
pub struct AwsFaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl AwsFaultProxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://127.0.0.1:5000`);
    /// `seed` decides which calls the rules' probabilities pick.
    pub async fn start(upstream: &str, seed: u64) -> io::Result<AwsFaultProxy> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            seed,
            sequence: AtomicU64::new(0),
            rules: Mutex::new(Vec::new()),
            fired: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(BTreeMap::new()),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(());
        let router = admin(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: pause rather than spin.
                        tracing::warn!(error = %e, "the AWS fault proxy cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tokio::spawn(serve(stream, router.clone(), stopped.clone()));
            }
        });
        Ok(AwsFaultProxy {
            addr,
            shared,
            _stop: stop,
            task,
        })
    }

    /// The URL to point an SDK at: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replace every rule (the counts of [`Self::fired`] stay). A probability outside 0..1 is
    /// clamped.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let rules = rules.into_iter().map(|mut r| {
            r.probability = r.probability.clamp(0.0, 1.0);
            r
        });
        *lock(&self.shared.rules) = installed(rules.collect()).collect();
    }

    /// Remove every rule: everything is forwarded again.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// The rules as installed, with the times each fired.
    pub fn rules(&self) -> Vec<InstalledRule> {
        lock(&self.shared.rules).clone()
    }

    /// Faults fired since the start, by [`Fault::label`].
    pub fn fired(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.fired).clone()
    }

    /// Calls received since the start (faulted or not), by `service.Operation`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for AwsFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve one connection until the client closes it, a fault drops it, or the proxy stops.
async fn serve(stream: TcpStream, router: Router, mut stopped: watch::Receiver<()>) {
    // A second handle on the socket, to make a dropped connection a reset (SO_LINGER 0).
    let Ok(std) = stream.into_std() else { return };
    let Ok(handle) = std.try_clone() else { return };
    let Ok(stream) = TcpStream::from_std(std) else {
        return;
    };
    let drop_it = Arc::new(Notify::new());
    let service =
        TowerToHyperService::new(router.layer(Extension(Connection(Arc::clone(&drop_it)))));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = drop_it.notified() => {
            let _ = TcpSocket::from_std_stream(handle).set_zero_linger();
        }
        _ = stopped.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_the_admin_route_takes_them() {
        let rules: Rules = serde_json::from_str(
            r#"[{"service":"dynamodb","operation":"PutItem","kind":"provisioned_throughput_exceeded","probability":0.5},
                {"service":"sqs","kind":"server_error","status":503,"times":2},
                {"service":"events","kind":"lost_answer_500"},
                {"service":"*","kind":"slow","ms":3000}]"#,
        )
        .unwrap();
        let rules = rules.checked().ok().unwrap();
        assert_eq!(rules[0].fault, Fault::ProvisionedThroughputExceeded);
        assert_eq!(rules[1].fault, Fault::ServerError { status: 503 });
        assert_eq!(rules[1].times, Some(2));
        assert_eq!(rules[2].fault.label(), "lost_answer_500");
        assert_eq!(rules[3].fault, Fault::Slow { ms: 3000 });
        let bad: Rules =
            serde_json::from_str(r#"{"service":"sqs","kind":"server_error","status":404}"#)
                .unwrap();
        assert!(bad.checked().is_err());
    }

    #[test]
    fn calls_are_told_apart_by_their_target() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonSQS.SendMessageBatch"),
        );
        let call = Call::of(&h);
        assert_eq!(call.name(), "sqs.SendMessageBatch");
        assert!(call.is_batch());
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("DynamoDB_20120810.PutItem"),
        );
        assert_eq!(Call::of(&h).name(), "dynamodb.PutItem");
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AWSEvents.PutEvents"),
        );
        assert!(Call::of(&h).is_batch());
    }

    #[test]
    fn a_partial_batch_leaves_out_every_other_entry() {
        let body = Bytes::from(r#"{"QueueUrl":"q","Entries":[{"Id":"0"},{"Id":"1"},{"Id":"2"}]}"#);
        let (forward, failed) = split_batch(&body).unwrap();
        let forward: Value = serde_json::from_slice(&forward.unwrap()).unwrap();
        assert_eq!(forward["Entries"], json!([{"Id":"1"}]));
        assert_eq!(failed, vec![json!({"Id":"0"}), json!({"Id":"2"})]);
        let (forward, failed) = split_batch(&Bytes::from(r#"{"Entries":[{"Id":"0"}]}"#)).unwrap();
        assert!(forward.is_none() && failed.len() == 1);
    }

    #[test]
    fn the_same_seed_fires_on_the_same_calls() {
        let picks = |seed| {
            let shared = Shared {
                upstream: String::new(),
                client: reqwest::Client::new(),
                seed,
                sequence: AtomicU64::new(0),
                rules: Mutex::new(
                    installed(vec![
                        Rule::new("dynamodb", None, Fault::Throttling).probability(0.5),
                    ])
                    .collect(),
                ),
                fired: Mutex::new(BTreeMap::new()),
                requests: Mutex::new(BTreeMap::new()),
            };
            let call = Call {
                service: "dynamodb".into(),
                operation: "GetItem".into(),
            };
            (0..64)
                .map(|_| shared.decide(&call).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        let fired = picks(7).into_iter().filter(|f| *f).count();
        assert!((16..48).contains(&fired), "{fired} of 64");
    }

    /// GET `url`, read as JSON.
    async fn get_json(http: &reqwest::Client, url: &str) -> Value {
        http.get(url).send().await.unwrap().json().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_admin_routes_set_clear_and_count_faults() {
        // An upstream that answers every call `{"ok":true}`.
        let upstream = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let answer = Router::new().fallback(|| async { Json(json!({"ok": true})) });
        tokio::spawn(async move { axum::serve(upstream, answer).await });
        let proxy = AwsFaultProxy::start(&format!("http://{addr}"), 1)
            .await
            .unwrap();
        let base = proxy.endpoint();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let call = |target: &'static str| {
            http.post(&base)
                .header("x-amz-target", target)
                .body("{}")
                .send()
        };
        let faults = format!("{base}/_proxy/faults");

        assert_eq!(
            call("DynamoDB_20120810.GetItem").await.unwrap().status(),
            200
        );
        let set = http
            .post(&faults)
            .json(&json!([
                {"service": "dynamodb", "operation": "PutItem", "kind": "throttling"},
                {"service": "sqs", "kind": "reset", "times": 1},
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 204);
        let throttled = call("DynamoDB_20120810.PutItem").await.unwrap();
        assert_eq!(throttled.status(), 400);
        let body: Value = throttled.json().await.unwrap();
        assert_eq!(
            body["__type"],
            "com.amazonaws.dynamodb.v20120810#ThrottlingException"
        );
        assert!(call("AmazonSQS.SendMessageBatch").await.is_err(), "reset");
        assert_eq!(
            call("AmazonSQS.SendMessageBatch").await.unwrap().status(),
            200,
            "a rule that fired its times is spent"
        );
        let bad = http
            .put(&faults)
            .json(&json!({"service": "sqs", "kind": "server_error", "status": 404}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let listed = get_json(&http, &faults).await;
        assert_eq!(listed[0]["fired"], 1);
        let stats = get_json(&http, &format!("{base}/_proxy/stats")).await;
        assert_eq!(stats["fired"], json!({"reset": 1, "throttling": 1}));
        assert_eq!(stats["requests"]["sqs.SendMessageBatch"], 2);
        let cleared = http.delete(&faults).send().await.unwrap();
        assert_eq!(cleared.status(), 204);
        assert_eq!(
            call("DynamoDB_20120810.PutItem").await.unwrap().status(),
            200
        );
        assert_eq!(proxy.fired().get("throttling"), Some(&1));
    }
}
