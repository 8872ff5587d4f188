//! SevenRooms' answer to a hold (step 2). A hold has no key to look it up by: a success must carry
//! the hold id the envelope's `data` names; a 2xx the client cannot read may have held covers
//! and is never a success nor a refusal.
#![no_main]

use como_saga_fuzz::{answer, check_common, envelope_data, field, is_2xx, success};
use como_workers::clients::fuzzing::{Read, sevenrooms_hold};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let read = sevenrooms_hold(a.raw);
    check_common(&a.raw, &read, |_| false, false);
    if let Some(hold) = success(&read) {
        let Some(data) = envelope_data(a.raw.body) else {
            return;
        };
        assert_eq!(
            field(&data, "reservation_hold_id", 0).and_then(|v| v.as_str()),
            Some(hold.reservation_hold_id.as_str())
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
