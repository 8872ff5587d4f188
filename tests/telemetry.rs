//! Telemetry: one booking is one trace across the orchestrator and both workers.
//!
//! In this process: the whole system (`spawn_app`: the simulators on loopback, the orchestrator
//! and both workers as separate tasks exchanging real messages over the embedded queues) with
//! spans caught by an in-memory exporter. Three bookings meet the hard cases: a booking whose
//! `book` call fails with a 500 (an unknown outcome: reconciled by a search, then the step is
//! retried as attempt 2), and one refused at `book` (compensated: the redemption voided, the
//! hold released). Every span of a booking must carry its trace id (the saga id) and hang from
//! a span of the same trace, back to the booking's root.
//!
//! `processes`: the binary as a process, exporting over OTLP (HTTP and gRPC) to a receiver in
//! the test, and personal data at the most verbose level.

#[path = "telemetry/processes.rs"]
mod processes;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use como_app::telemetry::{LogFormat, init_with};
use como_app::{SpawnOptions, spawn_app};
use como_engine::StatusKind;
use como_schemas::{BookingRequested, SagaId};
use como_simulators::faults::{FaultKind, FaultRule};
use como_simulators::{Downstream, SimConfig};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The spans of one saga's trace, checked to form one tree under the booking's root; returns
/// them by name.
fn trace_of(spans: &[SpanData], saga: SagaId) -> BTreeMap<String, Vec<SpanData>> {
    let trace = TraceId::from_bytes(*saga.as_uuid().as_bytes());
    let mine: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    // Every span that names the saga is in its trace.
    for s in spans {
        if attribute(s, "saga_id").as_deref() == Some(saga.to_string().as_str()) {
            assert_eq!(
                s.span_context.trace_id(),
                trace,
                "span {} of saga {saga} is in another trace",
                s.name
            );
            assert_eq!(
                attribute(s, "trace_id").as_deref(),
                Some(trace.to_string().as_str()),
                "span {} carries another trace id field",
                s.name
            );
        }
    }
    let ids: std::collections::HashSet<SpanId> =
        mine.iter().map(|s| s.span_context.span_id()).collect();
    let roots: Vec<&&SpanData> = mine.iter().filter(|s| s.name == "booking").collect();
    assert_eq!(roots.len(), 1, "saga {saga}: one booking root span");
    assert_eq!(
        roots[0].parent_span_id,
        SpanId::INVALID,
        "the root has no parent"
    );
    for s in &mine {
        if s.name == "booking" {
            continue;
        }
        assert!(
            ids.contains(&s.parent_span_id),
            "saga {saga}: span {} ({:?}) hangs from {}, which is not a span of the booking's trace",
            s.name,
            s.attributes,
            s.parent_span_id
        );
    }
    let mut by_name: BTreeMap<String, Vec<SpanData>> = BTreeMap::new();
    for s in mine {
        by_name
            .entry(s.name.to_string())
            .or_default()
            .push(s.clone());
    }
    by_name
}

fn commands(trace: &BTreeMap<String, Vec<SpanData>>) -> Vec<&SpanData> {
    trace
        .get("command")
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

fn has_command(
    trace: &BTreeMap<String, Vec<SpanData>>,
    step: &str,
    kind: &str,
    attempt: &str,
) -> bool {
    commands(trace).iter().any(|s| {
        attribute(s, "step").as_deref() == Some(step)
            && attribute(s, "kind").as_deref() == Some(kind)
            && attribute(s, "attempt").as_deref() == Some(attempt)
    })
}

fn parent_of<'a>(spans: &'a [SpanData], child: &SpanData) -> Option<&'a SpanData> {
    spans
        .iter()
        .find(|s| s.span_context.span_id() == child.parent_span_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_is_one_trace_through_the_orchestrator_and_both_workers() {
    let exporter = InMemorySpanExporter::default();
    let telemetry = init_with(LogFormat::Human, "test", Some(exporter.clone()));
    let spawned = spawn_app(
        SpawnOptions {
            simulators: SimConfig::default(),
            quick: true,
            ..SpawnOptions::default()
        },
        |app| app,
    )
    .await
    .unwrap();
    let ports = spawned.ports().clone();
    let mut bookings = support::bookings(10, "trace").into_iter().skip(3);
    let mut run = |faults: Vec<FaultRule>| {
        let booking: BookingRequested = bookings.next().unwrap();
        spawned
            .sims
            .set_faults(Downstream::SevenRooms, faults)
            .unwrap();
        let ports = ports.clone();
        async move {
            let saga = como_orchestrator::submit(&ports, &booking).await.unwrap();
            let states = support::wait_all(&ports, &[saga], Duration::from_secs(60)).await;
            (saga, states[0].clone().expect("the saga exists"))
        }
    };
    // The booking's `book` calls answer 500 without booking (each attempt a `call` span):
    // unknown outcome, a search finds nothing, and the step is tried again as attempt 2.
    let (retried, state) = run(vec![
        FaultRule::new(FaultKind::ServerError { status: 500 })
            .on(["book"])
            .times(4),
    ])
    .await;
    assert_eq!(state.status.kind(), StatusKind::Confirmed, "{state:?}");
    // Refused at `book`: the redemption is voided and the hold released.
    let (compensated, state) = run(vec![
        FaultRule::new(FaultKind::Refuse {
            code: "SLOT_UNAVAILABLE".into(),
        })
        .on(["book"])
        .times(1),
    ])
    .await;
    assert_eq!(state.status.kind(), StatusKind::Compensated, "{state:?}");
    let (plain, state) = run(Vec::new()).await;
    assert_eq!(state.status.kind(), StatusKind::Confirmed, "{state:?}");
    // A request sent as an event carries its submitter's context in its body: the booking's
    // trace links to it.
    let submitter = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut linked_request = bookings.next().unwrap();
    linked_request.traceparent = Some(submitter.to_owned());
    let linked = como_orchestrator::submit(&ports, &linked_request)
        .await
        .unwrap();
    support::wait_all(&ports, &[linked], Duration::from_secs(60)).await;
    spawned.stop().await.unwrap();
    telemetry.flush();
    let spans = exporter.get_finished_spans().unwrap();

    if std::env::var("SHOW_TRACE").is_ok() {
        show(&spans, retried);
    }
    // The retried step: its reconciliation and its second attempt, each a worker's span whose
    // parent is the orchestrator's span that sent it, in the booking's trace.
    let trace = trace_of(&spans, retried);
    assert!(
        has_command(&trace, "book_experience", "action", "1"),
        "book attempt 1"
    );
    assert!(
        has_command(&trace, "book_experience", "reconcile", "1"),
        "the reconciliation's search"
    );
    assert!(
        has_command(&trace, "book_experience", "action", "2"),
        "book attempt 2"
    );
    for command in commands(&trace) {
        let parent = parent_of(&spans, command).expect("a command's parent span");
        assert!(
            ["reply", "request", "timer"].contains(&parent.name.as_ref()),
            "a command's span hangs from the orchestrator's work, not {}",
            parent.name
        );
    }
    // Both workers took part, and each downstream call is a span with its attempt.
    let queues: BTreeSet<String> = commands(&trace)
        .iter()
        .filter_map(|s| attribute(s, "queue"))
        .collect();
    assert_eq!(
        queues,
        BTreeSet::from(["commands-crm".to_owned(), "commands-sevenrooms".to_owned()])
    );
    let calls = trace.get("call").cloned().unwrap_or_default();
    let downstreams: BTreeSet<String> = calls
        .iter()
        .filter_map(|s| attribute(s, "downstream"))
        .collect();
    assert_eq!(
        downstreams.len(),
        2,
        "calls to both downstreams: {downstreams:?}"
    );
    assert!(calls.iter().all(|c| attribute(c, "call_attempt").is_some()));
    assert!(
        calls
            .iter()
            .any(|c| attribute(c, "outcome").as_deref() == Some("maybe_applied")),
        "the book attempt that answered 500 is a call span of its own"
    );
    // A reply's span in the orchestrator hangs from the worker's span for the command.
    for reply in trace.get("reply").cloned().unwrap_or_default() {
        let parent = parent_of(&spans, &reply).expect("a reply's parent span");
        assert_eq!(
            parent.name, "command",
            "a reply hangs from the worker's command span"
        );
    }
    for name in ["request", "persist", "reply", "timer"] {
        assert!(
            trace.contains_key(name),
            "no {name} span in the booking's trace: {:?}",
            trace.keys()
        );
    }

    // The compensation: each undo is a worker's span in the booking's trace.
    let trace = trace_of(&spans, compensated);
    assert!(
        has_command(&trace, "redeem_credits", "compensation", "1"),
        "the void"
    );
    assert!(
        has_command(&trace, "hold_slot", "compensation", "1"),
        "the release"
    );

    // A plain booking is one tree too, and no span of it strays into another trace.
    let trace = trace_of(&spans, plain);
    assert!(trace.contains_key("command"));

    let trace = trace_of(&spans, linked);
    let request = &trace["request"][0];
    assert!(
        request
            .links
            .iter()
            .any(|l| l.span_context.trace_id().to_string() == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "the intake span links the submitter's trace: {:?}",
        request.links
    );
}

/// Prints a booking's trace as a tree (`SHOW_TRACE=1`), for the README's example.
fn show(spans: &[SpanData], saga: SagaId) {
    let trace = TraceId::from_bytes(*saga.as_uuid().as_bytes());
    let mut mine: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    mine.sort_by_key(|s| s.start_time);
    fn walk(all: &[&SpanData], parent: SpanId, depth: usize) {
        for s in all.iter().filter(|s| s.parent_span_id == parent) {
            let fields: Vec<String> = [
                "queue",
                "step",
                "kind",
                "attempt",
                "downstream",
                "call_attempt",
                "outcome",
            ]
            .iter()
            .filter_map(|k| attribute(s, k).map(|v| format!("{k}={v}")))
            .collect();
            eprintln!("{}{} {}", "  ".repeat(depth), s.name, fields.join(" "));
            walk(all, s.span_context.span_id(), depth + 1);
        }
    }
    walk(&mine, SpanId::INVALID, 0);
}
