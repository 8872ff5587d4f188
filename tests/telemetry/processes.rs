//! The binary as an operator runs it, exporting its spans to an OTLP receiver in this test: over
//! HTTP with protobuf (the default) and over gRPC, decoded with the protocol's own types.
//!
//! - `up --demo` sends the spans of every role of the system (intake, orchestrator, both
//!   workers, their downstream calls), and each booking is one trace whose spans all hang
//!   together under its `booking` root.
//! - With every log at `trace`, in JSON and in human form, and spans exported, a guest's name,
//!   phone and e-mail appear in neither.
//!
//! Everything here talks to 127.0.0.1 only: the receiver, the simulators `up` starts, its API.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_como-saga");
const SERVICE: &str = "como-saga-test";

/// The tests here each run the whole system as a process (some several): one at a time, so
/// that two cores are not shared by several systems racing their timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

/// One span as received, with the attributes of the resource (process) that sent it.
#[derive(Clone, Debug)]
struct Received {
    resource: Vec<KeyValue>,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }

    fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource, key)
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(value_text)
}

fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the receiver was sent: the spans, and any request it could not take (a wrong path, a
/// body that is not an `ExportTraceServiceRequest`).
#[derive(Clone, Default)]
struct Inbox {
    spans: Arc<Mutex<Vec<Received>>>,
    strays: Arc<Mutex<Vec<String>>>,
}

impl Inbox {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn stray(&self, what: String) {
        self.strays.lock().unwrap().push(what);
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn strays(&self) -> Vec<String> {
        self.strays.lock().unwrap().clone()
    }

    /// Wait until no span has arrived for a second (10 s at most): the exporter flushes at
    /// exit, but a batch may still be on its way.
    fn settle(&self) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = usize::MAX;
        let mut quiet_since = Instant::now();
        loop {
            let n = self.spans.lock().unwrap().len();
            if n != last {
                last = n;
                quiet_since = Instant::now();
            }
            if (n > 0 && quiet_since.elapsed() >= Duration::from_secs(1))
                || Instant::now() > deadline
            {
                return self.spans();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn env(self) -> &'static str {
        match self {
            Protocol::Http => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// An OTLP trace receiver on a free port of 127.0.0.1, on a runtime of its own.
struct Receiver {
    protocol: Protocol,
    endpoint: String,
    inbox: Inbox,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Collector(Inbox);

#[async_trait::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(State(inbox): State<Inbox>, body: Bytes) -> axum::response::Response {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            inbox.take(request);
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
                .into_response()
        }
        Err(e) => {
            inbox.stray(format!(
                "POST /v1/traces with a body that does not decode: {e}"
            ));
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

async fn http_stray(
    State(inbox): State<Inbox>,
    method: axum::http::Method,
    uri: Uri,
) -> StatusCode {
    inbox.stray(format!("{method} {uri}"));
    StatusCode::NOT_FOUND
}

impl Receiver {
    fn start(protocol: Protocol) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inbox = Inbox::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        match protocol {
            Protocol::Http => {
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(http_export))
                    .fallback(http_stray)
                    .with_state(inbox.clone());
                runtime.spawn(async move { axum::serve(listener, app).await });
            }
            Protocol::Grpc => {
                let service = TraceServiceServer::new(Collector(inbox.clone()));
                runtime.spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                        .await
                });
            }
        }
        Receiver {
            protocol,
            endpoint: format!("http://{address}"),
            inbox,
            _runtime: runtime,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// `como-saga` in `dir`, exporting to `receiver`, with nothing of this environment's own
/// settings (no AWS, no proxies: every address it is given is 127.0.0.1).
fn como(dir: &Path, receiver: &Receiver) -> Command {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let lower = name.to_ascii_lowercase();
        if name.starts_with("COMO_SAGA_")
            || name.starts_with("AWS_")
            || name.starts_with("OTEL_")
            || name == "RUST_LOG"
            || lower.ends_with("_proxy")
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", receiver.protocol.env())
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_SERVICE_NAME", SERVICE)
        .stdin(Stdio::null());
    cmd
}

/// A process whose standard output and error go to files (no pipe to fill and block it).
struct Run {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

impl Run {
    fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Run {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start como-saga for {name}: {e}"));
        Run {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `n` lines of both outputs, for a failure message.
    fn said(&self, n: usize) -> String {
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- {} stdout (last {n} lines):\n{}\n--- {} stderr (last {n} lines):\n{}",
            self.name,
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }

    /// Wait for the exit, killing the process after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "como-saga {} did not end within {timeout:?}:\n{}",
                    self.name,
                    self.said(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (a graceful stop), and wait for the exit.
    fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait(timeout)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What was received, in a few lines: spans by name and by process, and any stray request.
fn census(receiver: &Receiver, spans: &[Received]) -> String {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut processes: BTreeMap<String, usize> = BTreeMap::new();
    for s in spans {
        *names.entry(s.span.name.as_str()).or_default() += 1;
        let who = format!(
            "service.name={} como.role={}",
            s.resource_attr("service.name").unwrap_or_default(),
            s.resource_attr("como.role").unwrap_or_default()
        );
        *processes.entry(who).or_default() += 1;
    }
    format!(
        "received over {:?} at {}: {} spans; by name {names:?}; by process {processes:?}; \
         requests the receiver could not take: {:?}",
        receiver.protocol,
        receiver.endpoint,
        spans.len(),
        receiver.inbox.strays()
    )
}

/// Span and trace ids of a saga id as the booking span carries it (a UUID, with or without
/// hyphens): the trace id is the UUID's hex.
fn saga_hex(saga_id: &str) -> String {
    saga_id.replace('-', "").to_ascii_lowercase()
}

/// The traces of the sagas: for each `booking` span (the root, one per saga), the problems of
/// its trace. An empty list when every trace hangs together.
fn trace_problems(spans: &[Received]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut by_trace: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(s.trace_id()).or_default().push(s);
    }
    // Every span that names a saga is in the saga's trace.
    for s in spans {
        if let Some(saga_id) = s.attr("saga_id")
            && s.trace_id() != saga_hex(&saga_id)
        {
            problems.push(format!(
                "a `{}` span of saga {saga_id} is in trace {}, not in the saga's",
                s.span.name,
                s.trace_id()
            ));
        }
    }
    let bookings: Vec<&Received> = spans.iter().filter(|s| s.span.name == "booking").collect();
    let mut sagas = BTreeSet::new();
    for booking in &bookings {
        let Some(saga_id) = booking.attr("saga_id") else {
            problems.push(format!(
                "a `booking` span has no saga_id attribute: {booking:?}"
            ));
            continue;
        };
        if !sagas.insert(saga_id.clone()) {
            continue;
        }
        let expected = saga_hex(&saga_id);
        if booking.trace_id() != expected {
            problems.push(format!(
                "saga {saga_id}: its `booking` span is in trace {}, not in the trace of the saga id \
                 ({expected})",
                booking.trace_id()
            ));
            continue;
        }
        if !booking.span.parent_span_id.is_empty() {
            problems.push(format!(
                "saga {saga_id}: its `booking` span is not a root: it has parent {}",
                booking.parent_id()
            ));
        }
        let trace = &by_trace[&expected];
        let ids: BTreeSet<String> = trace.iter().map(|s| s.span_id()).collect();
        for s in trace.iter().filter(|s| s.span.name != "booking") {
            if s.span.parent_span_id.is_empty() {
                problems.push(format!(
                    "saga {saga_id}: a `{}` span ({}) in its trace has no parent",
                    s.span.name,
                    s.span_id()
                ));
            } else if !ids.contains(&s.parent_id()) {
                problems.push(format!(
                    "saga {saga_id}: the parent {} of a `{}` span ({}, attributes {:?}) is not a \
                     span of the trace that was received",
                    s.parent_id(),
                    s.span.name,
                    s.span_id(),
                    s.span
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.as_str(), value_text(kv.value.as_ref()?))))
                        .collect::<Vec<_>>()
                ));
            }
        }
        // Every saga's work starts with its request and a first command to a worker, which
        // replies.
        let names: BTreeSet<&str> = trace.iter().map(|s| s.span.name.as_str()).collect();
        for needed in ["request", "command", "reply"] {
            if !names.contains(needed) {
                problems.push(format!(
                    "saga {saga_id}: no `{needed}` span in its trace (it has {names:?})"
                ));
            }
        }
    }
    (sagas.len(), problems)
}

// ---------------------------------------------------------------------------------------------
// Every role's spans, one trace per booking
// ---------------------------------------------------------------------------------------------

/// The environment that puts a `como-saga` process on the AWS backend of the local
/// AWS-compatible server, under `prefix`.
fn on_aws(cmd: &mut Command, endpoint: &str, prefix: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("COMO_SAGA_BACKEND", "aws")
        .env("COMO_SAGA_AWS_PREFIX", prefix);
}

fn up_demo_exports_every_roles_spans(protocol: Protocol) {
    up_demo_exports_every_roles_spans_on(protocol, None);
}

fn up_demo_exports_every_roles_spans_on(protocol: Protocol, aws: Option<(&str, &str)>) {
    let started = Instant::now();
    let receiver = Receiver::start(protocol);
    let dir = tempfile::tempdir().unwrap();
    if let Some((endpoint, prefix)) = aws {
        let mut boot = como(dir.path(), &receiver);
        boot.args(["infra", "bootstrap", "--backend", "aws"]);
        on_aws(&mut boot, endpoint, prefix);
        let mut boot = Run::spawn(boot, dir.path(), "bootstrap");
        let status = boot.wait(Duration::from_secs(120));
        assert!(
            status.success(),
            "infra bootstrap failed:\n{}",
            boot.said(30)
        );
    }
    let mut cmd = como(dir.path(), &receiver);
    if let Some((endpoint, prefix)) = aws {
        on_aws(&mut cmd, endpoint, prefix);
    }
    // Engine transitions are `debug` spans: exported over HTTP here, not over gRPC.
    let transitions = protocol == Protocol::Http && aws.is_none();
    if transitions {
        cmd.env("COMO_SAGA_TRACE", "debug");
    }
    cmd.args([
        "up",
        "--demo",
        "20",
        "--exit-when-done",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--allow-needs-operator",
    ]);
    let mut up = Run::spawn(cmd, dir.path(), "up");
    let status = up.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "`up --demo 20 --exit-when-done` failed ({status}):\n{}",
        up.said(60)
    );
    if let Some((_, prefix)) = aws {
        let said = format!("{}{}", up.stdout(), up.stderr());
        assert!(
            said.contains(&format!("AWS deployment {prefix}")),
            "`up` ran on the AWS deployment {prefix}:\n{}",
            up.said(20)
        );
    }
    let took = up.started.elapsed();
    let stdout = up.stdout();
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stdout:\n{}", up.said(60)));
    let spans = receiver.inbox.settle();
    let census = census(&receiver, &spans);
    let mut problems = Vec::new();

    if spans.is_empty() {
        panic!(
            "no span reached the OTLP receiver ({:?} at {}) at all; {census}\n{}",
            protocol,
            receiver.endpoint,
            up.said(40)
        );
    }
    // Every role: intake, the orchestrator, both workers and their calls downstream.
    let names: BTreeSet<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
    for needed in [
        "submit", "request", "booking", "reply", "command", "call", "persist",
    ] {
        if !names.contains(needed) {
            problems.push(format!("no `{needed}` span was received"));
        }
    }
    // On the AWS backend the outbox is sent after the write: an `emit` span of its own.
    if aws.is_some() && !names.contains("emit") {
        problems.push("no `emit` span on the AWS backend".to_owned());
    }
    if names.contains("transition") != transitions {
        problems.push(format!(
            "`transition` spans were {}received with COMO_SAGA_TRACE={}",
            if transitions { "not " } else { "" },
            if transitions { "debug" } else { "unset" }
        ));
    }
    let values = |name: &str, key: &str| -> BTreeSet<String> {
        spans
            .iter()
            .filter(|s| s.span.name == name)
            .filter_map(|s| s.attr(key))
            .collect()
    };
    let queues = values("command", "queue");
    for queue in ["commands-crm", "commands-sevenrooms"] {
        if !queues.contains(queue) {
            problems.push(format!(
                "no `command` span with queue={queue} (the worker's side of that queue); \
                 queues seen: {queues:?}"
            ));
        }
    }
    let downstreams = values("call", "downstream");
    for downstream in ["memberson", "sevenrooms"] {
        if !downstreams.contains(downstream) {
            problems.push(format!(
                "no `call` span with downstream={downstream}; downstreams seen: {downstreams:?}"
            ));
        }
    }
    // The process that sent them.
    let services: BTreeSet<String> = spans
        .iter()
        .map(|s| s.resource_attr("service.name").unwrap_or_default())
        .collect();
    if services != BTreeSet::from([SERVICE.to_owned()]) {
        problems.push(format!(
            "service.name should be {SERVICE:?} (OTEL_SERVICE_NAME) on every span's resource, \
             is {services:?}"
        ));
    }
    let roles: BTreeSet<String> = spans
        .iter()
        .map(|s| s.resource_attr("como.role").unwrap_or_default())
        .collect();
    // (The bootstrap's process, if any, has spans of its own; only `up`'s carry saga work.)
    let roles: BTreeSet<String> = roles.into_iter().filter(|r| r != "cli").collect();
    if roles != BTreeSet::from(["up".to_owned()]) {
        problems.push(format!(
            "como.role should be \"up\" on every span's resource, is {roles:?}"
        ));
    }
    // One trace per booking, whole.
    let (sagas, trace_problems) = trace_problems(&spans);
    problems.extend(trace_problems);
    let submitted = summary["submitted"].as_u64().unwrap_or(0);
    let rejected = summary["rejected"].as_u64().unwrap_or(0);
    let expected_sagas = submitted.saturating_sub(rejected);
    if (sagas as u64) < expected_sagas || sagas == 0 {
        problems.push(format!(
            "{sagas} sagas have a `booking` span; {submitted} bookings were submitted and \
             {rejected} rejected at the edge, so {expected_sagas} sagas ran"
        ));
    }
    if up.stderr().contains("spans were dropped") {
        problems.push("the process says spans were dropped".to_owned());
    }
    assert!(
        problems.is_empty(),
        "spans of `up --demo` over OTLP {protocol:?}:\n  - {}\n{census}\nsummary: {summary}\n{}",
        problems.join("\n  - "),
        up.said(30)
    );
    eprintln!(
        "OTLP {protocol:?}: {} spans of {sagas} sagas, every trace whole; up took {took:?}, the \
         test {:?}; {census}",
        spans.len(),
        started.elapsed()
    );
}

#[test]
fn up_demo_exports_every_roles_spans_over_otlp_http() {
    let _one = one_at_a_time();
    up_demo_exports_every_roles_spans(Protocol::Http);
}

#[test]
fn up_demo_exports_every_roles_spans_over_otlp_grpc() {
    let _one = one_at_a_time();
    up_demo_exports_every_roles_spans(Protocol::Grpc);
}

/// The same on the AWS backend (SQS message attributes, the DynamoDB outbox), against the
/// local AWS-compatible server.
#[test]
fn up_demo_on_the_aws_backend_exports_whole_traces() {
    let _one = one_at_a_time();
    let moto = como_backend_aws::testing::moto();
    let prefix = como_backend_aws::testing::unique_prefix("otel");
    up_demo_exports_every_roles_spans_on(Protocol::Http, Some((&moto.endpoint, &prefix)));
}

// ---------------------------------------------------------------------------------------------
// Personal data
// ---------------------------------------------------------------------------------------------

struct Guest {
    first_name: String,
    last_name: String,
    phone: String,
    email: String,
}

impl Guest {
    /// Each value, and the forms it may take on the wire (a form-encoded phone has `%2B` for
    /// its `+`; a form-encoded e-mail `%40` for its `@`): the digits and the e-mail's local part
    /// are unique enough to stand for them.
    fn needles(&self) -> Vec<(&'static str, String)> {
        let local = self.email.split('@').next().unwrap_or_default().to_owned();
        vec![
            ("first name", self.first_name.clone()),
            ("last name", self.last_name.clone()),
            ("phone", self.phone.clone()),
            (
                "phone digits",
                self.phone.trim_start_matches('+').to_owned(),
            ),
            ("e-mail", self.email.clone()),
            ("e-mail's local part", local),
        ]
    }
}

/// Where `needle` occurs in `text`: the first line holding it (cut to 400 characters).
fn found_in(text: &str, needle: &str) -> Option<String> {
    let lower = needle.to_ascii_lowercase();
    text.lines()
        .find(|l| l.to_ascii_lowercase().contains(&lower))
        .map(|l| l.chars().take(400).collect())
}

/// One run of the whole system for personal data: `up` logging everything in `up_format`,
/// each guest's booking made through `como-saga submit` logging everything in `submit_format`,
/// both exporting their spans over OTLP/HTTP.
struct PiiRun {
    label: String,
    /// Each process's standard output and error, named.
    outputs: Vec<(String, String)>,
    spans: Vec<Received>,
    census: String,
    /// What would show that the guests' data was not really used, or not traced.
    sanity: Vec<String>,
    reservations: usize,
    sagas: usize,
    tail: String,
}

fn book_guests(up_format: &str, submit_format: &str, tag: &str, guests: &[Guest]) -> PiiRun {
    use como_schemas::{RequestId, SagaId};
    use como_simulators::seed;

    let label = format!("`up` logging {up_format}, `submit` logging {submit_format}");
    let receiver = Receiver::start(Protocol::Http);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("como-saga.sqlite");

    // The whole system, logging everything.
    let mut cmd = como(dir.path(), &receiver);
    cmd.args([
        "--log-format",
        up_format,
        "up",
        "--listen",
        "127.0.0.1:0",
        "--no-faults",
    ])
    .env("COMO_SAGA_LOG", "trace");
    let mut up = Run::spawn(cmd, dir.path(), "up");
    let ready = Instant::now() + Duration::from_secs(60);
    while !up.stdout().contains("press Ctrl-C to stop") {
        if let Some(status) = up.child.try_wait().unwrap() {
            panic!(
                "{label}: `up` ended before it was up ({status}):\n{}",
                up.said(60)
            );
        }
        assert!(
            Instant::now() < ready,
            "{label}: `up` is not up:\n{}",
            up.said(60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sevenrooms = up
        .stdout()
        .lines()
        .find(|l| l.contains("SevenRooms simulator:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_else(|| panic!("{label}: no SevenRooms URL:\n{}", up.said(20)));
    assert!(
        sevenrooms.starts_with("http://127.0.0.1:"),
        "the simulator is not on 127.0.0.1: {sevenrooms}"
    );

    // Each guest's booking, waited for.
    let today = chrono::Utc::now().date_naive();
    let mut submits = Vec::new();
    let mut sagas = Vec::new();
    let mut reservations = Vec::new();
    for (i, guest) in guests.iter().enumerate() {
        let request_id = format!("pii-{tag}-{up_format}-{i}");
        let date = today
            .checked_add_days(chrono::Days::new(3 + i as u64))
            .unwrap()
            .to_string();
        let mut cmd = como(dir.path(), &receiver);
        cmd.args(["--log-format", submit_format, "submit", "--database"])
            .arg(&db)
            .args([
                "--member",
                seed::MEMBER_RICH,
                "--venue",
                seed::VENUE_LARGE,
                "--date",
                &date,
                "--time",
                "19:30",
                "--party",
                "2",
                "--credits",
                "1200",
                "--request-id",
                &request_id,
                "--first-name",
                &guest.first_name,
                "--last-name",
                &guest.last_name,
                "--phone",
                &guest.phone,
                "--email",
                &guest.email,
                "--wait",
            ])
            .env("COMO_SAGA_LOG", "trace");
        let mut submit = Run::spawn(cmd, dir.path(), &format!("submit-{i}"));
        let status = submit.wait(Duration::from_secs(120));
        let said = submit.stdout();
        assert!(
            status.success() && said.contains("confirmed"),
            "{label}: guest {i}'s booking was not confirmed ({status}):\n{}\n{}",
            submit.said(40),
            up.said(40)
        );
        let reservation = said
            .split(|c: char| c.is_whitespace() || c == ':')
            .find(|w| w.starts_with("res-"))
            .unwrap_or_else(|| panic!("{label}: no reservation in {said:?}"))
            .to_owned();
        reservations.push(reservation);
        sagas.push(SagaId::for_request(&RequestId::parse(&request_id).unwrap()).simple());
        submits.push(submit);
    }

    // SevenRooms' ledger, as anyone outside reads it.
    let ledger: serde_json::Value = receiver._runtime.block_on(async {
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{sevenrooms}/_sim/ledger"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the SevenRooms ledger")
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    });
    let status = up.stop(Duration::from_secs(60));
    assert!(
        status.success(),
        "{label}: `up` did not stop cleanly ({status}):\n{}",
        up.said(40)
    );
    let spans = receiver.inbox.settle();
    let census = census(&receiver, &spans);

    // The data was really used: each booking is in SevenRooms' ledger, and each saga's trace
    // was exported, with its call to SevenRooms, and joins across the processes (the request
    // `submit` sent is the parent of the orchestrator's work on it).
    let mut sanity = Vec::new();
    let booked = ledger["reservations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (saga, reservation) in sagas.iter().zip(&reservations) {
        if !booked
            .iter()
            .any(|r| r["reservation_id"] == reservation.as_str() && r["status_code"] == "RESERVED")
        {
            sanity.push(format!(
                "reservation {reservation} (saga {saga}) is not RESERVED in SevenRooms' ledger: \
                 {ledger}"
            ));
        }
        let trace: Vec<&Received> = spans.iter().filter(|s| &s.trace_id() == saga).collect();
        if !trace
            .iter()
            .any(|s| s.span.name == "call" && s.attr("downstream").as_deref() == Some("sevenrooms"))
        {
            sanity.push(format!(
                "saga {saga}: no `call` span to sevenrooms in its trace (spans {:?})",
                trace.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            ));
        }
        let submit_spans: BTreeSet<String> = trace
            .iter()
            .filter(|s| {
                s.span.name == "submit" && s.resource_attr("como.role").as_deref() == Some("cli")
            })
            .map(|s| s.span_id())
            .collect();
        let joined = trace
            .iter()
            .any(|s| s.span.name == "request" && submit_spans.contains(&s.parent_id()));
        if !joined {
            sanity.push(format!(
                "saga {saga}: no `request` span (in `up`) whose parent is the `submit` span of \
                 the `como-saga submit` process ({} such spans received)",
                submit_spans.len()
            ));
        }
    }
    let (traced, trace_problems) = trace_problems(&spans);
    sanity.extend(trace_problems);

    let mut outputs = vec![
        ("`up` standard output".to_owned(), up.stdout()),
        (
            format!("`up` standard error ({up_format} logs)"),
            up.stderr(),
        ),
    ];
    for s in &submits {
        outputs.push((format!("`{}` standard output", s.name), s.stdout()));
        outputs.push((
            format!("`{}` standard error ({submit_format} logs)", s.name),
            s.stderr(),
        ));
    }
    PiiRun {
        label,
        outputs,
        spans,
        census,
        sanity,
        reservations: reservations.len(),
        sagas: traced,
        tail: up.said(20),
    }
}

#[test]
fn personal_data_never_reaches_logs_or_spans() {
    let _one = one_at_a_time();
    let started = Instant::now();
    // Values no log line or span could hold by chance.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        ^ u128::from(std::process::id());
    let tag: String = format!("{:x}", nonce % 0xffff_ffff)
        .chars()
        .map(|c| match c {
            // Letters only, so that a name is one word of letters.
            '0'..='9' => (b'g' + (c as u8 - b'0')) as char,
            c => c,
        })
        .collect();
    let digits = |salt: u128| format!("{:07}", (nonce / 7 + salt * 7_919) % 10_000_000);
    let guests = [
        Guest {
            first_name: format!("Quillonia{tag}"),
            last_name: format!("Vexbrandt{tag}"),
            phone: format!("+6598{}", digits(1)),
            email: format!("quillonia.{tag}@example.org"),
        },
        Guest {
            first_name: format!("Marisolde{tag}"),
            last_name: format!("Oxenthwaite{tag}"),
            phone: format!("+4479{}4", digits(2)),
            email: format!("m.oxenthwaite.{tag}@example.net"),
        },
        Guest {
            first_name: format!("Thadwick{tag}"),
            last_name: format!("Pelloquin{tag}"),
            phone: format!("+6193{}1", digits(3)),
            email: format!("thadwick_{tag}@example.com"),
        },
        Guest {
            first_name: format!("Ysoldine{tag}"),
            last_name: format!("Grumbacher{tag}"),
            phone: format!("+3367{}8", digits(4)),
            email: format!("ysoldine+{tag}@example.org"),
        },
    ];
    // JSON logs from the system and human ones from `submit`, then the other way round.
    let runs = [
        book_guests("json", "human", &tag, &guests[..2]),
        book_guests("human", "json", &tag, &guests[2..]),
    ];

    // Personal data: in no output of any process, in no span, of either run.
    let mut leaks = Vec::new();
    let mut lines = 0;
    let mut spans = 0;
    for run in &runs {
        lines += run
            .outputs
            .iter()
            .map(|(_, t)| t.lines().count())
            .sum::<usize>();
        spans += run.spans.len();
        for (g, guest) in guests.iter().enumerate() {
            for (what, needle) in guest.needles() {
                for (source, text) in &run.outputs {
                    if let Some(line) = found_in(text, &needle) {
                        leaks.push(format!(
                            "{}: guest {g}'s {what} {needle:?} is in {source}: {line}",
                            run.label
                        ));
                    }
                }
                for s in &run.spans {
                    if let Some(at) = found_in(&format!("{s:?}"), &needle) {
                        leaks.push(format!(
                            "{}: guest {g}'s {what} {needle:?} is in a `{}` span (trace {}, \
                             role {}): {at}",
                            run.label,
                            s.span.name,
                            s.trace_id(),
                            s.resource_attr("como.role").unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "personal data reached the logs or the spans:\n  - {}\n{}",
        leaks.join("\n  - "),
        runs.iter()
            .map(|r| format!("{}: {}", r.label, r.census))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for run in &runs {
        assert!(
            run.sanity.is_empty(),
            "{}: no personal data was found, but the run does not show that the guests' data \
             was used and traced:\n  - {}\n{}\n{}",
            run.label,
            run.sanity.join("\n  - "),
            run.census,
            run.tail
        );
    }
    eprintln!(
        "no personal data of {} guests in {lines} lines of output at `trace` (JSON and human) \
         or in {spans} spans of {} sagas; {} reservations made; took {:?}",
        guests.len(),
        runs.iter().map(|r| r.sagas).sum::<usize>(),
        runs.iter().map(|r| r.reservations).sum::<usize>(),
        started.elapsed()
    );
}

/// `up --demo` as a newcomer runs it, with `extra` environment; returns the run and its JSON
/// summary once it exited 0.
fn demo(
    dir: &Path,
    receiver: &Receiver,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Run, serde_json::Value) {
    let mut cmd = como(dir, receiver);
    cmd.args([
        "up",
        "--demo",
        "30",
        "--exit-when-done",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--allow-needs-operator",
    ])
    .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut up = Run::spawn(cmd, dir, "up");
    let status = up.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "`up --demo` failed ({status}):\n{}",
        up.said(60)
    );
    let summary: serde_json::Value = up
        .stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stdout:\n{}", up.said(60)));
    (up, summary)
}

/// At the default log level, with `--log-format json`, an operator gets one JSON line per
/// saga that compensates, with the step, code and reason, and the saga id and trace id of the
/// work it happened in; every log line is JSON.
#[test]
fn json_logs_say_each_compensation_once_with_its_saga_and_trace() {
    let _one = one_at_a_time();
    let receiver = Receiver::start(Protocol::Http);
    let dir = tempfile::tempdir().unwrap();
    // No trace export: the saga id and trace id are in the logs all the same.
    let (up, summary) = demo(
        dir.path(),
        &receiver,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
        &["--log-format", "json"],
    );
    assert!(
        receiver.inbox.spans().is_empty(),
        "nothing is exported without an endpoint"
    );
    let compensated = summary["compensated"].as_u64().unwrap();
    assert!(
        compensated > 0,
        "the demo compensates some bookings: {summary}"
    );
    let mut sagas = BTreeSet::new();
    for line in up.stderr().lines().filter(|l| l.starts_with('{')) {
        let log: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if log["message"] != "saga compensating" {
            continue;
        }
        for field in ["step", "code", "reason"] {
            assert!(log[field].is_string(), "no {field} in {line}");
        }
        assert_eq!(log["level"], "INFO", "{line}");
        let span = log["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s.get("saga_id").is_some()))
            .unwrap_or_else(|| panic!("no span with the saga id in {line}"));
        let saga = span["saga_id"].as_str().unwrap().to_owned();
        assert_eq!(
            span["trace_id"].as_str(),
            Some(saga.replace('-', "").as_str()),
            "the trace id is the saga id: {line}"
        );
        assert!(
            sagas.insert(saga.clone()),
            "saga {saga} said twice that it compensates"
        );
    }
    assert_eq!(
        sagas.len() as u64,
        compensated,
        "one line per compensated saga; stderr:\n{}",
        up.said(40)
    );
}

/// A collector that is down costs no booking and holds none up: every booking finishes, and
/// the spans that could not be exported are counted and reported.
#[test]
fn a_collector_that_is_down_costs_no_booking() {
    let _one = one_at_a_time();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    collector_that_does_not_answer_costs_no_booking(format!("http://127.0.0.1:{closed}"));
}

/// The worse case: a collector that takes the connection and never answers. The exporter
/// waits on it on its own thread; saga work does not.
#[test]
fn a_collector_that_never_answers_costs_no_booking() {
    let _one = one_at_a_time();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    collector_that_does_not_answer_costs_no_booking(format!("http://127.0.0.1:{port}"));
}

fn collector_that_does_not_answer_costs_no_booking(endpoint: String) {
    let receiver = Receiver::start(Protocol::Http);
    let dir = tempfile::tempdir().unwrap();
    let (up, summary) = demo(
        dir.path(),
        &receiver,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
        &[],
    );
    assert_eq!(summary["in_flight"], 0, "{summary}");
    assert_eq!(
        summary["confirmed"].as_u64().unwrap()
            + summary["compensated"].as_u64().unwrap()
            + summary["needs_operator"].as_u64().unwrap()
            + summary["cancelled"].as_u64().unwrap(),
        summary["submitted"].as_u64().unwrap() - summary["rejected"].as_u64().unwrap(),
        "{summary}"
    );
    // The demo takes seconds; the exit waits at most 5 s for the last export.
    assert!(
        up.started.elapsed() < Duration::from_secs(60),
        "a collector that does not answer held the run up: {:?}",
        up.started.elapsed()
    );
    let stderr = up.stderr();
    assert!(
        stderr.contains("spans were dropped"),
        "the dropped spans are reported:\n{}",
        up.said(20)
    );
}
