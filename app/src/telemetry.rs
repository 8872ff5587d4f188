//! Telemetry, set up once per process: logs on standard error (human-readable, or JSON lines),
//! and traces exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` says where to.
//!
//! - **Logs**: filtered by `COMO_SAGA_LOG` (or `RUST_LOG`); by default warnings and errors, and
//!   the one line per saga outcome an operator must hear of (target `saga`: a saga compensates,
//!   needs an operator, has a late effect undone). A line of saga work carries the saga id and
//!   the trace id through its span (`receive{saga_id=… trace_id=…}`).
//! - **Traces**: `tracing` spans become OpenTelemetry spans (`tracing-opentelemetry`), batched
//!   on the SDK's own thread and exported over OTLP, HTTP with protobuf by default, gRPC with
//!   `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`. Sampling follows `OTEL_TRACES_SAMPLER` and
//!   `OTEL_TRACES_SAMPLER_ARG`, the service name `OTEL_SERVICE_NAME`. Saga work never waits
//!   for the collector: a span that finds the export queue full is dropped and counted
//!   ([`SpanCounts`]), as are the spans of a batch the collector did not take.
//! - **Personal data** never reaches either: the request's guest contact prints redacted, spans
//!   carry ids only, and the HTTP and AWS client libraries' wire-level logs (which show bodies)
//!   are capped below `trace` whatever the filter says.
//!
//! Propagation (what a message carries, how a booking is one trace) is `como_ports::trace`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use como_ports::trace::SagaRatio;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    #[default]
    Human,
    /// One JSON object per line, for a log store: the event's fields, its level, target and
    /// time, and the spans it happened in (with the saga id and trace id).
    Json,
}

/// The default log filter: warnings, errors and saga outcomes; the AWS configuration loader
/// only for errors (what it warns of, the credentials check says in one line).
pub const DEFAULT_FILTER: &str = "warn,saga=info,aws_config=error";

/// The crates whose spans are traced.
const TRACED: [&str; 9] = [
    "como_saga",
    "como_app",
    "como_api",
    "como_orchestrator",
    "como_workers",
    "como_ports",
    "como_backend_aws",
    "como_backend_embedded",
    "saga",
];

/// Libraries whose `trace` level logs request and response bodies (personal data): capped at
/// `debug` whatever the filter asks.
const WIRE_LEVEL: [&str; 9] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_http",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "tonic",
];

/// Spans the process ended, exported, or dropped (the queue to the exporter was full, or the
/// collector did not take the batch).
#[derive(Debug, Default)]
pub struct SpanCounts {
    pub ended: AtomicU64,
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    /// Handed to the exporter's queue and not yet exported or dropped.
    outstanding: AtomicU64,
}

impl SpanCounts {
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What [`init`] set up; dropping it flushes the spans still queued (for a few seconds at most).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    counts: Arc<SpanCounts>,
    /// Drives the gRPC exporter's connection.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    pub fn counts(&self) -> Arc<SpanCounts> {
        self.counts.clone()
    }

    /// Export what is queued now, and wait for it.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown_with_timeout(Duration::from_secs(5));
            // Whatever did not reach the collector by now is lost: dropped, or still on its
            // way to a collector that did not answer in time.
            let ended = self.counts.ended.load(Ordering::Relaxed);
            let dropped = ended.saturating_sub(self.counts.exported());
            if dropped > 0 {
                eprintln!(
                    "warning: {dropped} spans were dropped (the collector was slow or down); {} were exported",
                    self.counts.exported()
                );
            }
        }
        // After the last export; never blocks, even if dropped inside an async context.
        if let Some(runtime) = self._runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The process's counts, for `/metrics` and `bench` (zero when nothing is exported).
static COUNTS: std::sync::OnceLock<Arc<SpanCounts>> = std::sync::OnceLock::new();

pub fn span_counts() -> Option<Arc<SpanCounts>> {
    COUNTS.get().cloned()
}

/// The process's tracer provider, when spans are exported: [`flush`] reaches it from anywhere.
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Export the spans queued now and wait for it (`bench` does before it counts them). Call it
/// outside an async context, or from a blocking task.
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// Set up logs and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
/// is set, trace export. `role` names the process in its spans (`como.role`). An error is a
/// configuration the operator must fix (an unknown protocol or sampler); the process then
/// logs without traces rather than not starting.
pub fn init(format: LogFormat, role: &str) -> Telemetry {
    let (exporter, problem) = if otlp_configured() {
        match otlp_exporter() {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let telemetry = match exporter {
        Some((exporter, runtime)) => {
            let mut t = init_with(format, role, Some(exporter));
            t._runtime = runtime;
            t
        }
        None => init_with::<NoExporter>(format, role, None),
    };
    if let Some(problem) = problem {
        tracing::error!("traces are not exported: {problem:#}");
    }
    telemetry
}

/// [`init`] with a given exporter (tests hand over an in-memory one), or none.
pub fn init_with<E: SpanExporter + 'static>(
    format: LogFormat,
    role: &str,
    exporter: Option<E>,
) -> Telemetry {
    let counts = Arc::new(SpanCounts::default());
    let _ = COUNTS.set(counts.clone());
    let filter = std::env::var("COMO_SAGA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let logs = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!(
            "warning: COMO_SAGA_LOG {filter:?} is not a log filter ({e}); using {DEFAULT_FILTER:?}"
        );
        EnvFilter::new(DEFAULT_FILTER)
    });
    // The wire-level cap is part of the log layer's own filter, not a layer of its own: a
    // global layer that enables what the log filter does not would make every disabled
    // `debug!` in the program ask the filters again at each hit (the callsite's interest
    // becomes "sometimes"), which costs throughput with telemetry off.
    let wire_cap = WIRE_LEVEL.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::DEBUG),
    );
    let logs = logs.and(wire_cap);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(logs)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(logs)
            .boxed(),
    };
    let provider = exporter.map(|exporter| {
        let sampler = sampler_from_env();
        como_ports::trace::install(sampler.clone());
        let processor = CountingProcessor {
            inner: BatchSpanProcessor::builder(CountingExporter {
                inner: exporter,
                counts: counts.clone(),
            })
            .build(),
            counts: counts.clone(),
            limit: queue_limit(),
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "como-saga".into());
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_id_generator(como_ports::trace::SagaIds::default())
            .with_resource(
                Resource::builder()
                    .with_service_name(service)
                    .with_attribute(KeyValue::new("como.role", role.to_owned()))
                    .with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())))
                    .build(),
            )
            .build()
    });
    let traces = provider.as_ref().map(|p| {
        let level = trace_level();
        let traced = TRACED
            .iter()
            .fold(Targets::new(), |t, target| t.with_target(*target, level));
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("como-saga"))
            // What a span costs on the hot path: no source location, thread, target or
            // busy/idle timing (a clock read on every poll of an instrumented future), and no
            // OpenTelemetry context attached on every enter (`trace::inject` asks the span
            // itself).
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(traced)
    });
    if let Some(p) = &provider {
        let _ = PROVIDER.set(p.clone());
    }
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init();
    Telemetry {
        provider,
        counts,
        _runtime: None,
    }
}

/// Which spans are exported: `COMO_SAGA_TRACE` (`info` by default: every unit of saga work;
/// `debug` adds each engine transition).
fn trace_level() -> LevelFilter {
    match std::env::var("COMO_SAGA_TRACE") {
        Err(_) => LevelFilter::INFO,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!(
                "warning: COMO_SAGA_TRACE {v:?} is not a level (error, warn, info, debug, trace); using info"
            );
            LevelFilter::INFO
        }),
    }
}

fn otlp_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The exporter (one type for both transports) and, for gRPC, the runtime that drives it.
type OtlpExporter = (
    opentelemetry_otlp::SpanExporter,
    Option<tokio::runtime::Runtime>,
);

/// The OTLP exporter the environment asks for. The HTTP client is built on a thread of its own
/// (a blocking client must not be built inside an async runtime); the gRPC channel on a small
/// runtime of its own, which then drives the connection.
fn otlp_exporter() -> anyhow::Result<OtlpExporter> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    match protocol.trim() {
        "grpc" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-grpc")
                .enable_all()
                .build()
                .context("cannot start the OTLP exporter's runtime")?;
            let exporter = {
                let _inside = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .build()
                    .context("cannot set up the OTLP/gRPC exporter")?
            };
            Ok((exporter, Some(runtime)))
        }
        "http/protobuf" => {
            let exporter = std::thread::spawn(|| {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the OTLP/HTTP exporter's set-up panicked"))?
            .context("cannot set up the OTLP/HTTP exporter")?;
            Ok((exporter, None))
        }
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported: use \"http/protobuf\" (the default) or \"grpc\""
        ),
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name (the specification's
/// values), parent-based always-on by default. An unknown value falls back to the default
/// with a warning.
pub fn sampler_from_env() -> Sampler {
    let name = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
    match sampler_named(name.trim(), arg.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {e}; sampling every trace");
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
        }
    }
}

fn sampler_named(name: &str, arg: Option<&str>) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match arg.map(str::trim) {
            None | Some("") => Ok(1.0),
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG {a:?} is not a ratio between 0 and 1"
                )),
            },
        }
    };
    Ok(match name {
        "" | "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        // On the saga id's hash bits (see `SagaRatio`), not the SDK's `TraceIdRatioBased`.
        "traceidratio" => Sampler::ParentBased(Box::new(SagaRatio(ratio()?))),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(SagaRatio(ratio()?))),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not a known sampler"
            ));
        }
    })
}

/// The export queue's size (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default, as the SDK's).
fn queue_limit() -> u64 {
    std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2048)
}

/// The batch processor, with the count of what it was handed and what it dropped: a span that
/// would find the queue full is dropped here, counted, rather than inside the SDK, which only
/// says so at shutdown.
#[derive(Debug)]
struct CountingProcessor {
    inner: BatchSpanProcessor,
    counts: Arc<SpanCounts>,
    limit: u64,
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.counts.ended.fetch_add(1, Ordering::Relaxed);
        let queued = self.counts.outstanding.fetch_add(1, Ordering::Relaxed);
        if queued >= self.limit {
            self.counts.outstanding.fetch_sub(1, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting what it exported and what the collector did not take.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    counts: Arc<SpanCounts>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        self.counts.outstanding.fetch_sub(n, Ordering::Relaxed);
        match &result {
            Ok(()) => self.counts.exported.fetch_add(n, Ordering::Relaxed),
            Err(_) => self.counts.dropped.fetch_add(n, Ordering::Relaxed),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The type of "no exporter".
#[derive(Debug)]
struct NoExporter;

impl SpanExporter for NoExporter {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_are_named_as_the_specification_names_them() {
        assert!(matches!(
            sampler_named("", None),
            Ok(Sampler::ParentBased(_))
        ));
        assert!(matches!(
            sampler_named("traceidratio", Some("0.25")),
            Ok(Sampler::ParentBased(_))
        ));
        assert!(sampler_named("traceidratio", Some("2")).is_err());
        assert!(sampler_named("sometimes", None).is_err());
    }
}
