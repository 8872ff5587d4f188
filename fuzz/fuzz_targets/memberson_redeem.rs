//! Memberson's answer to a redeem (step 3, and its reconciliation by replay). A redeem is a write
//! of money: a success must carry the redemption, field for field as the body says; a 2xx the
//! client cannot read is never a success nor a refusal, but "may have been applied" (unknown).
#![no_main]

use como_saga_fuzz::{answer, check_common, field, is_2xx, json, success};
use como_workers::clients::fuzzing::{Read, memberson_redeem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let read = memberson_redeem(a.raw);
    check_common(&a.raw, &read, |_| false, false);
    if let Some(r) = success(&read) {
        let Some(body) = json(a.raw.body) else { return };
        let text = |name, at| field(&body, name, at).and_then(|v| v.as_str());
        let int = |name, at| field(&body, name, at).and_then(|v| v.as_i64());
        assert_eq!(text("TransactionId", 0), Some(r.transaction_id.as_str()));
        assert_eq!(text("MemberNo", 1), Some(r.member_no.as_str()));
        assert_eq!(text("ReceiptNo", 2), Some(r.receipt_no.as_str()));
        assert_eq!(int("Amount", 3), Some(r.amount));
        assert_eq!(int("Balance", 4), Some(r.balance));
    }
    if is_2xx(&a.raw) && success(&read).is_none() {
        assert!(
            matches!(
                read,
                Read::Transient {
                    maybe_applied: true,
                    ..
                }
            ),
            "an unreadable 2xx to a redeem may have taken the credits: {read:?}"
        );
    }
});
