//! Commands as a worker reads them off its queue (`InvalidInput::parse_json::<WorkerCommand>`):
//! an accepted command round-trips, what the worker computes from it before any call (its
//! deadline, the park delay) never panics, and every reply it can send about it round-trips.
#![no_main]

use std::time::Duration;

use como_schemas::{InvalidInput, SchemaVersion, Timestamp, WorkerCommand, WorkerReply, examples};
use como_workers::clients::Deadline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let command: WorkerCommand = match InvalidInput::parse_json(data) {
        Ok(c) => c,
        Err(invalid) => {
            assert!(!invalid.field.is_empty() && !invalid.reason.is_empty());
            return;
        }
    };
    let text = serde_json::to_vec(&command).expect("an accepted command serialises");
    let back: WorkerCommand = InvalidInput::parse_json(&text).expect("and parses again");
    assert_eq!(back, command);
    assert!(command.operation.kind().worker().is_some());

    let now = Timestamp::from_millis(1_790_000_000_000);
    let left = Duration::from_millis(command.deadline.millis_since(now));
    let _ = left
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(1));
    let deadline = Deadline::at_utc(command.deadline.to_datetime());
    let _ = deadline.remaining();

    for outcome in examples::all_outcomes() {
        let reply = WorkerReply {
            schema_version: SchemaVersion::CURRENT,
            command_id: command.command_id.clone(),
            saga_id: command.saga_id,
            step: command.step.clone(),
            kind: command.kind,
            attempt: command.attempt,
            worker: command.worker,
            replied_at: now,
            outcome,
        };
        let text = serde_json::to_vec(&reply).unwrap();
        let back: WorkerReply =
            InvalidInput::parse_json(&text).expect("the orchestrator reads the reply");
        assert_eq!(back, reply);
    }
});
