//! Booking requests at the edge (`parse_booking_request`), then intake as the orchestrator does
//! it: whatever the edge accepts is valid, re-serialises and parses back to the same value, and
//! starts a saga whose first command the CRM worker can read.
#![no_main]

use chrono::NaiveDate;
use como_engine::{Input, como, transition};
use como_orchestrator::{VenueCatalogue, VenuePrice};
use como_schemas::{InvalidInput, Timestamp, WorkerCommand, parse_booking_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let request = match parse_booking_request(data, today) {
        Ok(r) => r,
        Err(invalid) => {
            assert!(!invalid.field.is_empty() && !invalid.reason.is_empty());
            let _ = invalid.to_string();
            return;
        }
    };
    assert!(request.date >= today);
    assert!(request.quoted_credits.get() > 0);
    let text = serde_json::to_vec(&request).expect("an accepted request serialises");
    let again = parse_booking_request(&text, today).expect("an accepted request parses again");
    assert_eq!(again, request);
    assert_eq!(again.saga_id(), request.saga_id());

    let catalogue = VenueCatalogue::new([(
        "como-cuisine".to_owned(),
        VenuePrice {
            credits_per_guest: 600,
        },
    )]);
    if catalogue.check(&request).is_err() {
        return;
    }
    let now = Timestamp::from_millis(1_795_000_000_000); // 2026-11-19
    let decision = transition(&como::current(), None, &Input::Start { request }, now)
        .expect("an accepted request starts a saga");
    assert_eq!(decision.commands.len(), 1);
    for command in &decision.commands {
        let text = serde_json::to_vec(command).unwrap();
        let back: WorkerCommand =
            InvalidInput::parse_json(&text).expect("the worker reads what the engine sends");
        assert_eq!(&back, command);
    }
});
