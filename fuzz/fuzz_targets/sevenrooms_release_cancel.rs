//! SevenRooms' answers to the compensations of steps 2 and 4: releasing a hold and cancelling a
//! reservation (`200 release` / `400 cancel` on the first line; without a shape, both). Each
//! success means nothing is left to undo: a 2xx, a 404, or for a cancel a refusal that says the
//! reservation is cancelled already; every other refusal is reported, never taken as done.
#![no_main]

use como_saga_fuzz::{answer, check_common, field, json, success};
use como_workers::clients::fuzzing::{sevenrooms_cancel, sevenrooms_release};
use como_workers::clients::sevenrooms::{CancelOutcome, ReleaseOutcome, refusal_code};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let status = a.raw.status;
    if a.shape != "cancel" {
        let read = sevenrooms_release(a.raw);
        check_common(&a.raw, &read, |s| s == 404, false);
        match success(&read) {
            Some(ReleaseOutcome::Released) => assert!((200..300).contains(&status)),
            Some(ReleaseOutcome::AlreadyGone) => assert_eq!(status, 404),
            None => {}
        }
    }
    if a.shape != "release" {
        // The refusal's `msg`, read independently (an oracle that may say "already" where the
        // client cannot read the envelope; that only lets the check below allow more).
        let msg = json(a.raw.body)
            .and_then(|v| field(&v, "msg", 1).and_then(|m| m.as_str().map(str::to_owned)))
            .unwrap_or_default();
        let already = refusal_code(&msg) == "ALREADY_CANCELLED";
        let read = sevenrooms_cancel(a.raw);
        check_common(&a.raw, &read, |s| s == 404 || already, false);
        match success(&read) {
            Some(CancelOutcome::Cancelled) => assert!((200..300).contains(&status)),
            Some(CancelOutcome::NotFound) => assert_eq!(status, 404),
            Some(CancelOutcome::AlreadyCancelled) => assert!(already, "{msg:?}"),
            None => {}
        }
    }
});
