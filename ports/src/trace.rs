//! Trace context: one booking is one trace, across processes, queues and hours.
//!
//! **A booking's trace id is its saga id** (the UUID's 128 bits). Every process that touches a
//! saga therefore knows its trace without reading anything: the orchestrator when a timer
//! fires or an operator acts hours later, a worker, the API. The trace's root is one short
//! span, `booking`, started when intake creates the saga ([`start_booking`]); its span id is
//! derived from the saga id too ([`saga_root`]), so that work that arrives with no message
//! context (a timer, an operator action, a message from a process with telemetry off) hangs
//! under it.
//!
//! Messages carry the sending span's context as W3C `traceparent` (and `tracestate`) queue
//! message attributes ([`inject`]); the receiving span takes it as its parent ([`join`]), so
//! that a worker's span is the child of the orchestrator's span that sent the command, and the
//! orchestrator's span for the reply is the child of the worker's. A message from another
//! trace (a request whose submitter had its own trace) is linked, not adopted. Each message of
//! a batch joins its own context: the receive call has no span that messages could inherit.
//!
//! With telemetry off ([`enabled`] false, the default) nothing here does any work: no context
//! is injected or extracted, and spans carry the saga id and the trace id (its hex) as fields
//! for the logs only.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use como_schemas::SagaId;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context message attributes.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

static ON: AtomicBool = AtomicBool::new(false);
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Turn propagation on, with the sampler the tracer provider uses (so that every process
/// takes the same decision for a saga's trace). Called once by the telemetry set-up when spans
/// are exported.
pub fn install(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
    ON.store(true, Ordering::Release);
}

/// Whether spans are exported (and context is therefore carried).
pub fn enabled() -> bool {
    ON.load(Ordering::Acquire)
}

/// The trace id of a saga's booking.
pub fn trace_id(saga: SagaId) -> TraceId {
    TraceId::from_bytes(*saga.as_uuid().as_bytes())
}

/// The trace id as logs and collectors print it: 32 lower-case hex digits.
pub fn trace_id_hex(saga: SagaId) -> impl std::fmt::Display {
    saga.as_uuid().simple()
}

/// The span id of a saga's root span (`booking`): the two halves of the saga id folded, never
/// zero.
fn root_span_id(saga: SagaId) -> SpanId {
    let b = saga.as_uuid().as_u128();
    let folded = (b as u64) ^ ((b >> 64) as u64);
    SpanId::from_bytes(folded.max(1).to_be_bytes())
}

/// A ratio sampler for trace ids that are saga ids. The SDK's `TraceIdRatioBased` reads the
/// trace id's low 64 bits, whose top bits in a UUID v5 are the fixed variant bits `10`: it
/// would sample no saga below a ratio of one half. This one reads the 56 bits after them,
/// all of them hash. It decides on the trace id alone, so every process agrees on a booking.
#[derive(Debug, Clone, Copy)]
pub struct SagaRatio(pub f64);

impl SagaRatio {
    pub fn samples(&self, trace_id: TraceId) -> bool {
        let bytes = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&bytes[9..16]);
        let draw = u64::from_be_bytes(low);
        let ratio = self.0.clamp(0.0, 1.0);
        (draw as f64) < ratio * (1u64 << 56) as f64
    }
}

impl ShouldSample for SagaRatio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[opentelemetry::KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let decision = if self.samples(trace_id) {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        };
        opentelemetry_sdk::trace::SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// Whether the deployment's sampler samples this saga's trace (a ratio sampler decides on the
/// trace id alone, so every process agrees).
fn sampled(saga: SagaId) -> bool {
    let Some(sampler) = SAMPLER.get() else {
        return false;
    };
    let decision = sampler.should_sample(
        None,
        trace_id(saga),
        "booking",
        &SpanKind::Internal,
        &[],
        &[],
    );
    decision.decision == SamplingDecision::RecordAndSample
}

/// The saga's root as a remote parent: what work with no message context hangs under.
pub fn saga_root(saga: SagaId) -> Context {
    let flags = if sampled(saga) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let root = SpanContext::new(
        trace_id(saga),
        root_span_id(saga),
        flags,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(root)
}

/// The context a message carries, if any and valid.
pub fn extract(attributes: &BTreeMap<String, String>) -> Option<SpanContext> {
    if !enabled() || !attributes.contains_key(TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Attributes(attributes));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Make `span` (created, not yet entered) part of saga `saga`'s trace: its parent is the
/// message's context when that belongs to the saga's trace, and the saga's root otherwise; a
/// context from another trace is linked. With no saga (a message that could not be read), a
/// message's context is the parent whatever its trace.
pub fn join(span: &tracing::Span, saga: Option<SagaId>, attributes: &BTreeMap<String, String>) {
    if !enabled() {
        return;
    }
    let carried = extract(attributes);
    let parent = match (saga, carried) {
        (Some(saga), Some(sc)) if sc.trace_id() == trace_id(saga) => {
            Context::new().with_remote_span_context(sc)
        }
        (Some(saga), other) => {
            if let Some(foreign) = other {
                span.add_link(foreign);
            }
            saga_root(saga)
        }
        (None, Some(sc)) => Context::new().with_remote_span_context(sc),
        (None, None) => return,
    };
    let _ = span.set_parent(parent);
}

/// Link `span` (created, not yet entered) to the context a `traceparent` names, when valid:
/// a booking request sent as an event carries its submitter's context in its body.
pub fn link(span: &tracing::Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    let mut attributes = BTreeMap::new();
    attributes.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(sc) = extract(&attributes) {
        span.add_link(sc);
    }
}

/// Make `span` part of saga `saga`'s trace, under its root: for work no message brought (a
/// timer, an operator action, a submission).
pub fn join_saga(span: &tracing::Span, saga: SagaId) {
    if enabled() {
        let _ = span.set_parent(saga_root(saga));
    }
}

/// Write the current span's context into a message's attributes.
pub fn inject(attributes: &mut BTreeMap<String, String>) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut AttributesMut(attributes));
    }
}

/// The current span's `traceparent`, for an event that leaves through the bus.
pub fn current_traceparent() -> Option<String> {
    let mut attributes = BTreeMap::new();
    inject(&mut attributes);
    attributes.remove(TRACEPARENT)
}

/// The span of one received message's work: `request`, `reply`, `command` or `notification`, with
/// the fields every unit of saga work carries (`saga_id`, `trace_id`, `step`, `attempt`,
/// `outcome`, the last filled in as the work ends). An `error`-level span, so that a log
/// line at any level inside it shows whose work it was. Made part of the saga's trace (or
/// the message's) before it is entered.
pub fn receive_span(
    queue: crate::QueueName,
    delivery: &crate::Delivery,
    work: Work<'_>,
) -> tracing::Span {
    // Every field is given here, at creation, rather than recorded afterwards: each record is
    // one more formatting of the span's fields for the log layer, on every message.
    let saga_id = work.saga.map(tracing::field::display);
    let trace_id = work
        .saga
        .map(|s| tracing::field::display(s.as_uuid().simple()));
    macro_rules! receive {
        ($name:literal) => {
            tracing::error_span!(
                $name,
                queue = queue.as_str(),
                message_id = delivery.message_id.as_str(),
                receive_count = delivery.receive_count,
                saga_id,
                trace_id,
                step = work.step,
                attempt = work.attempt,
                kind = work.kind,
                operation = work.operation,
                outcome = tracing::field::Empty,
            )
        };
    }
    // Span names are static: one per kind of message.
    let span = match queue {
        crate::QueueName::Requests => receive!("request"),
        crate::QueueName::Replies => receive!("reply"),
        crate::QueueName::Commands(_) => receive!("command"),
        crate::QueueName::Notifications => receive!("notification"),
    };
    join(&span, work.saga, &delivery.attributes);
    span
}

/// What a received message is about, as far as it could be read: the fields of its span.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work<'a> {
    pub saga: Option<SagaId>,
    pub step: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub attempt: Option<u32>,
    pub operation: Option<&'a str>,
}

impl Work<'_> {
    pub fn saga(saga: Option<SagaId>) -> Self {
        Work {
            saga,
            ..Work::default()
        }
    }
}

thread_local! {
    /// Ids the next span built on this thread must take (see [`SagaIds`]).
    static NEXT_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
    static NEXT_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// The tracer provider's id generator: random ids, except for a saga's root span, whose ids
/// [`start_booking`] sets for the one span it builds.
#[derive(Debug, Default)]
pub struct SagaIds(RandomIdGenerator);

impl IdGenerator for SagaIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// Record the root span of saga `saga`'s trace, `booking`, once, when intake created it. A
/// short span: the trace's length is its children's.
pub fn start_booking(saga: SagaId, request_id: &str) {
    if !enabled() {
        return;
    }
    let span = tracing::info_span!(
        target: "como_saga::trace",
        parent: None,
        "booking",
        saga_id = %saga,
        trace_id = %trace_id_hex(saga),
        request_id = %request_id,
    );
    NEXT_TRACE.with(|c| c.set(Some(trace_id(saga))));
    NEXT_SPAN.with(|c| c.set(Some(root_span_id(saga))));
    // Building the span here, on this thread, takes the ids just set.
    let built = span.context();
    NEXT_TRACE.with(Cell::take);
    NEXT_SPAN.with(Cell::take);
    debug_assert!(
        !built.span().span_context().is_valid()
            || built.span().span_context().span_id() == root_span_id(saga)
    );
}

struct Attributes<'a>(&'a BTreeMap<String, String>);

impl Extractor for Attributes<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct AttributesMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for AttributesMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator sets `tracestate` even when it is empty; SQS refuses a message
        // attribute without a value.
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_sampler_samples_its_share_of_sagas() {
        let ids: Vec<TraceId> = (0..20_000)
            .map(|i| {
                let request = como_schemas::RequestId::parse(format!("r-{i}")).unwrap();
                trace_id(SagaId::for_request(&request))
            })
            .collect();
        for ratio in [0.0, 0.01, 0.1, 0.5, 0.9, 1.0] {
            let sampler = SagaRatio(ratio);
            let share =
                ids.iter().filter(|t| sampler.samples(**t)).count() as f64 / ids.len() as f64;
            assert!(
                (share - ratio).abs() < 0.02,
                "ratio {ratio}: {share} of the sagas sampled"
            );
        }
    }

    #[test]
    fn no_injected_attribute_is_empty() {
        let mut attributes = BTreeMap::new();
        AttributesMut(&mut attributes).set(TRACESTATE, String::new());
        AttributesMut(&mut attributes).set(TRACEPARENT, "00-1-2-01".to_owned());
        assert_eq!(attributes.len(), 1);
        assert!(attributes.values().all(|v| !v.is_empty()));
    }

    #[test]
    fn a_sagas_trace_id_is_its_id_and_its_root_span_id_is_never_zero() {
        let saga = SagaId::parse("6f1d35a2-9c1e-4c4b-a7c2-3f0e8b51d9a4").unwrap();
        assert_eq!(
            trace_id(saga).to_string(),
            "6f1d35a29c1e4c4ba7c23f0e8b51d9a4"
        );
        assert_eq!(trace_id_hex(saga).to_string(), trace_id(saga).to_string());
        // Halves that fold to zero still give a valid span id.
        let folded = SagaId::parse("12345678-9abc-def0-1234-56789abcdef0").unwrap();
        assert_ne!(root_span_id(folded), SpanId::INVALID);
        assert_ne!(root_span_id(saga), SpanId::INVALID);
    }
}
