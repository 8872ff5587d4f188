//! SevenRooms' answer to a booking (step 4). A success must carry the reservation id the
//! envelope's `data` names; a 2xx the client cannot read may have booked and is never a success
//! nor a refusal (the client then reconciles by `external_id`).
#![no_main]

use como_saga_fuzz::{answer, check_common, envelope_data, field, is_2xx, success};
use como_workers::clients::fuzzing::{Read, sevenrooms_book};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let read = sevenrooms_book(a.raw);
    check_common(&a.raw, &read, |_| false, false);
    if let Some(booking) = success(&read) {
        assert!(!booking.reconciled);
        let Some(data) = envelope_data(a.raw.body) else {
            return;
        };
        assert_eq!(
            field(&data, "reservation_id", 0).and_then(|v| v.as_str()),
            Some(booking.reservation_id.as_str())
        );
        assert_eq!(
            field(&data, "reference_code", 1).and_then(|v| v.as_str()),
            booking.reference_code.as_deref()
        );
    } else if is_2xx(&a.raw) {
        assert!(
            matches!(
                read,
                Read::Transient {
                    maybe_applied: true,
                    ..
                }
            ),
            "{read:?}"
        );
    }
});
