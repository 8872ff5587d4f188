//! Incoming JSON is parsed once, at the edge, into types that cannot be invalid; a refusal names
//! the field and the reason.

use chrono::NaiveDate;
use como_schemas::{
    BookingRequested, InvalidInput, SagaId, WorkerCommand, WorkerReply, examples,
    parse_booking_request,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
}

fn good() -> Value {
    serde_json::to_value(examples::booking_request(
        "req-42",
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
    ))
    .unwrap()
}

fn refuse(doc: &Value) -> InvalidInput {
    parse_booking_request(&serde_json::to_vec(doc).unwrap(), today())
        .expect_err("the edge must refuse this")
}

#[test]
fn a_valid_request_parses_and_round_trips() {
    let doc = good();
    let parsed = parse_booking_request(&serde_json::to_vec(&doc).unwrap(), today()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
    assert_eq!(parsed.party_size.get(), 2);
    assert_eq!(parsed.time.to_string(), "19:30");
}

#[test]
fn party_size_zero_is_refused_by_name() {
    let mut doc = good();
    doc["party_size"] = json!(0);
    let err = refuse(&doc);
    assert_eq!(err.field, "party_size");
    assert_eq!(err.reason, "must be between 1 and 50, got 0");
    assert_eq!(
        err.to_string(),
        "invalid field `party_size`: must be between 1 and 50, got 0"
    );
}

#[test]
fn negative_and_zero_prices_are_refused() {
    let mut doc = good();
    doc["quoted_credits"] = json!(-100);
    let err = refuse(&doc);
    assert_eq!(err.field, "quoted_credits");
    assert!(err.reason.contains("must not be negative"), "{err}");

    doc["quoted_credits"] = json!(0);
    let err = refuse(&doc);
    assert_eq!(err.field, "quoted_credits");
    assert!(err.reason.contains("greater than 0"), "{err}");

    doc["quoted_credits"] = json!(12.5);
    assert_eq!(refuse(&doc).field, "quoted_credits");
}

#[test]
fn a_date_in_the_past_is_refused_and_today_is_accepted() {
    let mut doc = good();
    doc["date"] = json!("2026-11-23");
    let err = refuse(&doc);
    assert_eq!(err.field, "date");
    assert!(err.reason.contains("in the past"), "{err}");

    doc["date"] = json!("2026-11-24");
    parse_booking_request(&serde_json::to_vec(&doc).unwrap(), today()).unwrap();

    doc["date"] = json!("2026-02-30");
    assert_eq!(refuse(&doc).field, "date");
}

#[test]
fn malformed_phone_numbers_are_refused() {
    for phone in [
        "91234567",
        "+0123456789",
        "+65 9123 4567",
        "+65-91234567",
        "+123",
        "+1234567890123456",
    ] {
        let mut doc = good();
        doc["guest"]["phone"] = json!(phone);
        let err = refuse(&doc);
        assert_eq!(err.field, "guest.phone", "{phone}");
        assert!(err.reason.contains("E.164"), "{err}");
    }
}

#[test]
fn other_fields_are_checked_too() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("member_no", json!(""), "must not be empty"),
        ("member_no", json!("M 1"), "member number"),
        ("venue_id", json!("a/b"), "venue id"),
        ("time", json!("25:00"), "HH:MM"),
        ("time", json!("7:30"), "HH:MM"),
        ("schema_version", json!(2), "unsupported schema version 2"),
        ("request_id", json!(7), "invalid type"),
    ];
    for (field, value, reason) in cases {
        let mut doc = good();
        doc[field] = value.clone();
        let err = refuse(&doc);
        assert_eq!(err.field, field, "{value}");
        assert!(err.reason.contains(reason), "{field}={value}: {err}");
    }
    let mut doc = good();
    doc["guest"]["first_name"] = json!(" Mei");
    assert_eq!(refuse(&doc).field, "guest.first_name");
    let mut doc = good();
    doc["guest"]["email"] = json!("not-an-email");
    assert_eq!(refuse(&doc).field, "guest.email");
}

#[test]
fn missing_and_unknown_fields_are_refused() {
    let mut doc = good();
    doc.as_object_mut().unwrap().remove("venue_id");
    let err = refuse(&doc);
    assert!(err.reason.contains("missing field `venue_id`"), "{err}");

    let mut doc = good();
    doc["price"] = json!(1);
    let err = refuse(&doc);
    assert!(err.reason.contains("unknown field `price`"), "{err}");

    let err = parse_booking_request(b"{not json", today()).unwrap_err();
    assert_eq!(err.field, ".");
    let err = parse_booking_request(b"[]", today()).unwrap_err();
    assert_eq!(err.field, ".");
}

#[test]
fn guest_contact_stays_out_of_debug_output() {
    let request: BookingRequested = serde_json::from_value(good()).unwrap();
    let text = format!("{request:?}");
    assert!(!text.contains("+6591234567"), "{text}");
    assert!(!text.contains("Mei Ling"), "{text}");
    assert!(!text.contains("example.com"), "{text}");
}

#[test]
fn saga_id_is_derived_from_the_request_id() {
    let a: BookingRequested = serde_json::from_value(good()).unwrap();
    let mut other = good();
    other["request_id"] = json!("req-43");
    let b: BookingRequested = serde_json::from_value(other).unwrap();
    assert_eq!(a.saga_id(), a.clone().saga_id());
    assert_ne!(a.saga_id(), b.saga_id());
    assert_eq!(
        SagaId::parse(&a.saga_id().to_string()).unwrap(),
        a.saga_id()
    );
}

#[test]
fn commands_and_replies_round_trip_and_refuse_garbage() {
    let request: BookingRequested = serde_json::from_value(good()).unwrap();
    let cmd = examples::command(
        &request,
        "redeem_credits",
        como_schemas::CommandKind::Action,
        como_schemas::OperationKind::RedeemCredits,
        &[],
    );
    let text = serde_json::to_vec(&cmd).unwrap();
    let back: WorkerCommand = InvalidInput::parse_json(&text).unwrap();
    assert_eq!(back, cmd);
    for outcome in examples::all_outcomes() {
        let reply = examples::reply(&cmd, outcome);
        let back: WorkerReply =
            InvalidInput::parse_json(&serde_json::to_vec(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
    }
    let mut doc = serde_json::to_value(&cmd).unwrap();
    doc["operation"]["credits"] = json!(-1);
    let err =
        InvalidInput::parse_json::<WorkerCommand>(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    // An internally tagged enum is buffered before it is read, so the path stops at the
    // operation; the reason still says what is wrong.
    assert_eq!(err.field, "operation");
    assert!(err.reason.contains("must not be negative"), "{err}");
    let mut doc = serde_json::to_value(&cmd).unwrap();
    doc["operation"]["op"] = json!("launch_rockets");
    let err =
        InvalidInput::parse_json::<WorkerCommand>(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
    assert!(err.reason.contains("launch_rockets"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever bytes arrive, the edge answers with a value or a field-naming error; it never
    /// panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_every_message(&bytes)?;
    }

    /// Valid messages with a few bytes changed (the fuzz targets' seeds, in small): what the edge
    /// accepts is valid and round-trips; what it refuses names a field and a reason.
    #[test]
    fn mutated_messages_round_trip_or_are_refused(bytes in mutated_messages()) {
        check_every_message(&bytes)?;
    }

    /// Every party size outside 1..=50 is refused; every one inside is accepted.
    #[test]
    fn party_size_bounds(size in -1_000i64..1_000) {
        let mut doc = good();
        doc["party_size"] = json!(size);
        let result = parse_booking_request(&serde_json::to_vec(&doc).unwrap(), today());
        prop_assert_eq!(result.is_ok(), (1..=50).contains(&size));
    }
}

/// Parses `bytes` as each message read from outside (a booking request, a command, a reply):
/// an accepted one is valid, re-serialises and parses back to the same value; a refusal names
/// a field and a reason.
fn check_every_message(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn refusal(err: &InvalidInput) -> Result<(), TestCaseError> {
        prop_assert!(!err.field.is_empty() && !err.reason.is_empty(), "{:?}", err);
        Ok(())
    }
    match parse_booking_request(bytes, today()) {
        Ok(request) => {
            prop_assert!(request.date >= today() && request.quoted_credits.get() > 0);
            let again = parse_booking_request(&serde_json::to_vec(&request).unwrap(), today());
            prop_assert_eq!(again.as_ref(), Ok(&request));
        }
        Err(e) => refusal(&e)?,
    }
    match InvalidInput::parse_json::<WorkerCommand>(bytes) {
        Ok(command) => {
            let again = InvalidInput::parse_json(&serde_json::to_vec(&command).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(&command));
        }
        Err(e) => refusal(&e)?,
    }
    match InvalidInput::parse_json::<WorkerReply>(bytes) {
        Ok(reply) => {
            let again = InvalidInput::parse_json(&serde_json::to_vec(&reply).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(&reply));
        }
        Err(e) => refusal(&e)?,
    }
    Ok(())
}

/// One of each message, serialised, with up to four bytes inserted, replaced or removed.
fn mutated_messages() -> impl Strategy<Value = Vec<u8>> {
    let request: BookingRequested = serde_json::from_value(good()).unwrap();
    let command = examples::command(
        &request,
        "book_experience",
        como_schemas::CommandKind::Action,
        como_schemas::OperationKind::BookExperience,
        &[],
    );
    let mut messages = vec![
        serde_json::to_vec(&request).unwrap(),
        serde_json::to_vec(&command).unwrap(),
    ];
    for outcome in examples::all_outcomes() {
        messages.push(serde_json::to_vec(&examples::reply(&command, outcome)).unwrap());
    }
    (
        proptest::sample::select(messages),
        proptest::collection::vec(
            (any::<proptest::sample::Index>(), any::<u8>(), 0..3u8),
            0..4,
        ),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

#[test]
fn a_traceparent_is_taken_when_well_formed_and_refused_by_name_otherwise() {
    let mut doc = good();
    doc["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let parsed = parse_booking_request(&serde_json::to_vec(&doc).unwrap(), today()).unwrap();
    assert_eq!(
        parsed.traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
    ] {
        doc["traceparent"] = json!(bad);
        assert_eq!(refuse(&doc).field, "traceparent", "{bad:?}");
    }
}

#[test]
fn a_refused_name_phone_or_email_is_not_quoted_in_the_refusal() {
    for (field, value) in [
        ("phone", "+65 8777 6655"),
        ("email", "zyxwvu.guest-at-example"),
        ("first_name", " Zyxwvu"),
    ] {
        let mut doc = good();
        doc["guest"][field] = json!(value);
        let err = refuse(&doc);
        assert_eq!(err.field, format!("guest.{field}"), "{err}");
        assert!(
            !err.to_string().contains(value.trim()) && !err.to_string().contains("8777"),
            "the refusal quotes the guest's {field}: {err}"
        );
    }
}
