//! Memberson's member summary as the client reads it (step 1, check credits). Besides the rules
//! every answer follows: a member is ACTIVE only when the body says `"Status": "ACTIVE"`, and the
//! balance is the first account of the client's point type, in whole credits.
#![no_main]

use como_saga_fuzz::{answer, check_common, field, is_2xx, json, success};
use como_workers::clients::fuzzing::{Read, memberson_summary};
use como_workers::clients::memberson::MemberStatus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(a) = answer(data) else { return };
    let read = memberson_summary(a.raw, "CM100001", "COMO_CREDITS");
    check_common(&a.raw, &read, |_| false, true);
    if let Some(summary) = success(&read) {
        assert!(is_2xx(&a.raw));
        let Some(body) = json(a.raw.body) else { return };
        let entries = field(&body, "MembershipSummaries", 0).expect("with summaries");
        let entry = entries.get(0).expect("a success has a membership");
        let status = field(entry, "Status", 2).and_then(|s| s.as_str());
        assert_eq!(
            summary.status == MemberStatus::Active,
            status == Some("ACTIVE")
        );
        let accounts = field(entry, "AccountSummaries", 4).and_then(|a| a.as_array());
        let balance = accounts
            .and_then(|accounts| {
                accounts.iter().find(|a| {
                    field(a, "PointType", 0).and_then(|p| p.as_str()) == Some("COMO_CREDITS")
                })
            })
            .and_then(|a| field(a, "Balance", 1))
            .and_then(|b| b.as_f64())
            .unwrap_or(0.0);
        assert_eq!(summary.balance, balance.floor() as i64);
    }
    if let Read::Settled(como_workers::clients::Outcome::BusinessFailure { code, .. }) = &read
        && is_2xx(&a.raw)
    {
        assert_eq!(
            code, "MEMBER_NOT_FOUND",
            "a 2xx refuses only a summary without a membership"
        );
    }
});
