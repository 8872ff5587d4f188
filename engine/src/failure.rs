//! Why a booking failed: the code a `BookingFailed` event carries and a `compensation_started`
//! history entry records as its detail.
//!
//! The engine names its own reasons with the variants below; a downstream's refusal (a worker's
//! `BusinessFailure`, such as `INSUFFICIENT_POINTS`) passes through as [`FailureCode::Business`]
//! with the downstream's code unchanged. Every variant is written as the same
//! SCREAMING_SNAKE string the engine wrote before this type existed, so events and history
//! already stored read the same, and the event's `code` field stays a string on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a booking failed and its saga compensates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// An action's retry policy ran out: `RETRIES_EXHAUSTED`.
    RetriesExhausted,
    /// The saga's deadline passed while it was still going forward: `DEADLINE_PASSED`.
    DeadlinePassed,
    /// No reply came before an attempt's time-out, and the step compensates on that:
    /// `TIMED_OUT`.
    TimedOut,
    /// An action's outcome is unknown (or could not be settled), and the step compensates on
    /// that: `UNKNOWN_OUTCOME`.
    UnknownOutcome,
    /// A retryable failure, on a step that compensates on it: `RETRYABLE_FAILURE`.
    RetryableFailure,
    /// The worker reported that the action did not take effect, on a step that compensates on
    /// it: `NOT_APPLIED`.
    NotApplied,
    /// An operator cancelled the saga: `CANCELLED`.
    Cancelled,
    /// An operator forced compensation: `OPERATOR_COMPENSATION`.
    OperatorCompensation,
    /// A downstream refused for good, with its own code (`INSUFFICIENT_POINTS`,
    /// `SLOT_UNAVAILABLE`, ...), written as the downstream wrote it.
    Business(String),
}

impl FailureCode {
    /// The codes the engine itself gives, every one.
    pub const ENGINE: [FailureCode; 8] = [
        FailureCode::RetriesExhausted,
        FailureCode::DeadlinePassed,
        FailureCode::TimedOut,
        FailureCode::UnknownOutcome,
        FailureCode::RetryableFailure,
        FailureCode::NotApplied,
        FailureCode::Cancelled,
        FailureCode::OperatorCompensation,
    ];

    /// The code as written in events and history.
    pub fn as_str(&self) -> &str {
        match self {
            FailureCode::RetriesExhausted => "RETRIES_EXHAUSTED",
            FailureCode::DeadlinePassed => "DEADLINE_PASSED",
            FailureCode::TimedOut => "TIMED_OUT",
            FailureCode::UnknownOutcome => "UNKNOWN_OUTCOME",
            FailureCode::RetryableFailure => "RETRYABLE_FAILURE",
            FailureCode::NotApplied => "NOT_APPLIED",
            FailureCode::Cancelled => "CANCELLED",
            FailureCode::OperatorCompensation => "OPERATOR_COMPENSATION",
            FailureCode::Business(code) => code,
        }
    }

    /// Read a code as written. The engine's own codes read as their variants; any other text
    /// is a downstream's code. (A downstream code spelled like one of the engine's reads back
    /// as the engine's: the text, which is all that is stored, is the same.)
    pub fn parse(code: &str) -> FailureCode {
        FailureCode::ENGINE
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| FailureCode::Business(code.to_owned()))
    }

    /// Whether the engine gave it (rather than a downstream).
    pub fn is_engine(&self) -> bool {
        !matches!(self, FailureCode::Business(_))
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FailureCode> for String {
    fn from(code: FailureCode) -> String {
        match code {
            FailureCode::Business(code) => code,
            other => other.as_str().to_owned(),
        }
    }
}

impl Serialize for FailureCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(FailureCode::parse(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, the downstream's included, writes the string the engine wrote before the
    /// enum existed, and reads back as itself.
    #[test]
    fn every_code_round_trips_to_the_same_string() {
        let written = [
            (FailureCode::RetriesExhausted, "RETRIES_EXHAUSTED"),
            (FailureCode::DeadlinePassed, "DEADLINE_PASSED"),
            (FailureCode::TimedOut, "TIMED_OUT"),
            (FailureCode::UnknownOutcome, "UNKNOWN_OUTCOME"),
            (FailureCode::RetryableFailure, "RETRYABLE_FAILURE"),
            (FailureCode::NotApplied, "NOT_APPLIED"),
            (FailureCode::Cancelled, "CANCELLED"),
            (FailureCode::OperatorCompensation, "OPERATOR_COMPENSATION"),
            (
                FailureCode::Business("INSUFFICIENT_POINTS".into()),
                "INSUFFICIENT_POINTS",
            ),
            (
                FailureCode::Business("SLOT_UNAVAILABLE".into()),
                "SLOT_UNAVAILABLE",
            ),
        ];
        // The table names every engine code once.
        for code in FailureCode::ENGINE {
            assert_eq!(written.iter().filter(|(c, _)| *c == code).count(), 1);
        }
        for (code, text) in written {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(code.to_string(), text);
            assert_eq!(String::from(code.clone()), text);
            assert_eq!(serde_json::from_str::<FailureCode>(&json).unwrap(), code);
            assert_eq!(FailureCode::parse(text), code);
            assert_eq!(code.is_engine(), !matches!(code, FailureCode::Business(_)));
        }
    }

    #[test]
    fn a_downstream_code_passes_through_unchanged() {
        for text in [
            "INSUFFICIENT_POINTS",
            "MEMBER_NOT_FOUND",
            "weird code 42",
            "",
        ] {
            let code = FailureCode::parse(text);
            assert_eq!(code, FailureCode::Business(text.to_owned()));
            assert_eq!(serde_json::to_value(&code).unwrap(), text);
        }
    }

    /// Stored before `FailureCode` existed (written by the engine at commit 7d53d50): a state
    /// whose step failed with a downstream's code, one that timed out, the
    /// `compensation_started` entries and the `BookingFailed` events. Each reads and writes
    /// back byte for byte, and the codes read as the variants the engine now gives.
    const STORED: [&str; 2] = [
        r#"{"saga_id":"676f5ba9-d22f-53f4-82f3-c2c1477ceb58","definition":"como_booking","definition_version":1,"request":{"schema_version":1,"request_id":"req-140","member_no":"M100001","venue_id":"como-cuisine","date":"2026-12-24","time":"19:30","party_size":2,"quoted_credits":1200,"guest":{"first_name":"Mei Ling","last_name":"Tan","phone":"+6591234567","email":"mei.ling@example.com"}},"started_at":"2026-09-21T14:13:20.000Z","updated_at":"2026-09-21T14:13:23.809Z","deadline":"2026-09-21T14:28:20.000Z","compensation_deadline":"2026-09-21T16:13:23.809Z","phase":{"phase":"done","outcome":"compensated"},"steps":[{"name":"check_credits","action":{"sent":1,"charged":1},"settles_at":"2026-09-21T14:13:40.000Z","last_error":"INSUFFICIENT_POINTS: INSUFFICIENT_POINTS (test)"},{"name":"hold_slot"},{"name":"redeem_credits"},{"name":"book_experience"},{"name":"confirm"}],"status":{"status":"compensated"},"transitions":3,"events_published":3,"waiting_since":"2026-09-21T14:13:21.910Z"}"#,
        r#"{"saga_id":"a0a74a56-1187-55a5-8f57-bc01c8bfb3af","definition":"como_booking","definition_version":1,"request":{"schema_version":1,"request_id":"req-1","member_no":"M100001","venue_id":"como-cuisine","date":"2026-12-24","time":"19:30","party_size":2,"quoted_credits":1200,"guest":{"first_name":"Mei Ling","last_name":"Tan","phone":"+6591234567","email":"mei.ling@example.com"}},"started_at":"2026-09-21T14:13:20.000Z","updated_at":"2026-09-21T14:13:40.000Z","deadline":"2026-09-21T14:28:20.000Z","compensation_deadline":"2026-09-21T16:13:40.000Z","phase":{"phase":"done","outcome":"compensated"},"steps":[{"name":"check_credits","action":{"sent":1,"charged":1,"round_started_at":"2026-09-21T14:13:20.000Z"},"unsettled":[1],"settles_at":"2026-09-21T14:13:40.000Z","last_error":"attempt 1 timed out"},{"name":"hold_slot"},{"name":"redeem_credits"},{"name":"book_experience"},{"name":"confirm"}],"status":{"status":"compensated"},"transitions":2,"events_published":3}"#,
    ];
    const STORED_HISTORY: [&str; 2] = [
        r#"{"transition":3,"at":"2026-09-21T14:13:23.809Z","kind":"compensation_started","step":"check_credits","status":"compensated","detail":"INSUFFICIENT_POINTS","error":"check_credits: INSUFFICIENT_POINTS: INSUFFICIENT_POINTS (test)"}"#,
        r#"{"transition":2,"at":"2026-09-21T14:13:40.000Z","kind":"compensation_started","step":"check_credits","status":"compensated","detail":"TIMED_OUT","error":"check_credits: attempt 1 timed out"}"#,
    ];
    const STORED_EVENTS: [&str; 2] = [
        r#"{"schema_version":1,"event_id":"676f5ba9-d22f-53f4-82f3-c2c1477ceb58:1","saga_id":"676f5ba9-d22f-53f4-82f3-c2c1477ceb58","request_id":"req-140","at":"2026-09-21T14:13:23.809Z","type":"BookingFailed","step":"check_credits","code":"INSUFFICIENT_POINTS","reason":"check_credits: INSUFFICIENT_POINTS: INSUFFICIENT_POINTS (test)"}"#,
        r#"{"schema_version":1,"event_id":"a0a74a56-1187-55a5-8f57-bc01c8bfb3af:1","saga_id":"a0a74a56-1187-55a5-8f57-bc01c8bfb3af","request_id":"req-1","at":"2026-09-21T14:13:40.000Z","type":"BookingFailed","step":"check_credits","code":"TIMED_OUT","reason":"check_credits: attempt 1 timed out"}"#,
    ];

    fn same_bytes<T: serde::de::DeserializeOwned + Serialize>(text: &str) -> T {
        let value: T = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
        value
    }

    #[test]
    fn what_was_stored_before_reads_and_writes_back_unchanged() {
        use como_schemas::SagaEvent;
        use como_schemas::events::SagaEventBody;

        use crate::decision::{HistoryEntry, HistoryKind};
        use crate::state::SagaState;

        let expected = [
            FailureCode::Business("INSUFFICIENT_POINTS".into()),
            FailureCode::TimedOut,
        ];
        for (i, code) in expected.into_iter().enumerate() {
            let state: SagaState = same_bytes(STORED[i]);
            assert!(state.is_terminal());
            let entry: HistoryEntry = same_bytes(STORED_HISTORY[i]);
            assert_eq!(entry.kind, HistoryKind::CompensationStarted);
            assert_eq!(FailureCode::parse(entry.detail.as_deref().unwrap()), code);
            let event: SagaEvent = same_bytes(STORED_EVENTS[i]);
            let SagaEventBody::BookingFailed { code: written, .. } = &event.body else {
                panic!("a BookingFailed event");
            };
            assert_eq!(FailureCode::parse(written), code);
        }
    }

    /// The engine, driven, still writes the codes as it did: a downstream's refusal, an
    /// operator's cancel and forced compensation, the deadline.
    #[test]
    fn the_engine_writes_the_codes_it_wrote_before() {
        use chrono::NaiveDate;
        use como_schemas::events::SagaEventBody;
        use como_schemas::{OperatorId, ReplyOutcome, Timestamp, examples};

        use crate::decision::HistoryKind;
        use crate::input::{Input, OperatorAction, OperatorCommand};
        use crate::{SagaState, como, transition};

        let def = como::booking_v1();
        let t0 = Timestamp::from_millis(1_790_000_000_000);
        let start = |id: &str| {
            let request =
                examples::booking_request(id, NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
            transition(&def, None, &Input::Start { request }, t0).unwrap()
        };
        let failed = |decision: crate::Decision| {
            let code = decision.events.iter().find_map(|e| match &e.body {
                SagaEventBody::BookingFailed { code, .. } => Some(code.clone()),
                _ => None,
            });
            let detail = decision
                .history
                .iter()
                .find(|h| h.kind == HistoryKind::CompensationStarted)
                .and_then(|h| h.detail.clone());
            assert_eq!(code, detail);
            code.expect("the booking failed")
        };
        let operator = |state: &SagaState, action: OperatorAction| {
            let command = OperatorCommand {
                action_id: "op-1".into(),
                operator: OperatorId::parse("ops.alice").unwrap(),
                reason: "test".into(),
                action,
            };
            transition(&def, Some(state), &Input::Operator { command }, t0).unwrap()
        };

        let d = start("refused");
        let reply = examples::reply(
            &d.commands[0],
            ReplyOutcome::BusinessFailure {
                code: "INSUFFICIENT_POINTS".into(),
                message: "balance 300 is below 1200".into(),
            },
        );
        let refused = transition(&def, Some(&d.state), &Input::Reply { reply }, t0).unwrap();
        assert_eq!(failed(refused), "INSUFFICIENT_POINTS");

        let d = start("cancelled");
        assert_eq!(
            failed(operator(&d.state, OperatorAction::Cancel)),
            "CANCELLED"
        );
        assert_eq!(
            failed(operator(&d.state, OperatorAction::ForceCompensation)),
            "OPERATOR_COMPENSATION"
        );

        let late = d.state.deadline;
        let expired = transition(&def, Some(&d.state), &Input::Timer, late).unwrap();
        assert_eq!(failed(expired), "DEADLINE_PASSED");
    }
}
