//! Memberson's answer to a void (the compensation of step 3). Every success means the points are
//! not taken: a 2xx (already voided only when the body says `"AlreadyVoided": true`), or a 404
//! (nothing under the receipt). Nothing else is a success.
#![no_main]

use como_saga_fuzz::{answer, check_common, field, json, success};
use como_workers::clients::fuzzing::memberson_void;
use como_workers::clients::memberson::VoidOutcome;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let read = memberson_void(a.raw);
    check_common(&a.raw, &read, |s| s == 404, false);
    match success(&read) {
        Some(VoidOutcome::NeverRedeemed) => assert_eq!(a.raw.status, 404),
        Some(VoidOutcome::AlreadyVoided) => {
            if let Some(body) = json(a.raw.body) {
                assert_eq!(
                    field(&body, "AlreadyVoided", 2).and_then(|v| v.as_bool()),
                    Some(true)
                );
            }
        }
        Some(VoidOutcome::Voided { .. }) => {
            assert!((200..300).contains(&a.raw.status));
        }
        None => {}
    }
});
