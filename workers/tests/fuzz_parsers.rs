//! The fast guard of the fuzz targets (`fuzz/`, see docs/fuzzing.md) inside the normal test
//! suite: every downstream answer the clients parse, and the simulators' fault rules, from
//! arbitrary bytes and from real answers with a few bytes changed. Nothing panics, and the
//! classification keeps its promises: 429 and 5xx are transient, a refusal carries a known code,
//! and a write's answer the client cannot read is never a success.

use std::sync::OnceLock;
use std::time::Duration;

use como_simulators::{
    Downstream, FaultKind, FaultRule, FaultsFile, SimConfig, SimHandle, Simulators, memberson,
    sevenrooms,
};
use como_workers::clients::fuzzing::{self, RawAnswer, Read};
use como_workers::clients::{Outcome, codes};
use proptest::prelude::*;

/// Real answers of the simulators (as `fuzz/seeds/capture.sh` records them), to mutate.
const BODIES: &[&str] = &[
    r#"{"MembershipSummaries":[{"MemberNo":"CM100001","Type":"Individual","Tier":"Platinum","Status":"ACTIVE","ExpiryDate":"2030-12-31","AccountSummaries":[{"PointType":"COMO_CREDITS","Balance":250000}]}]}"#,
    r#"{"TransactionId":"TX0000000001","MemberNo":"CM100001","ReceiptNo":"CS-seed-1","Amount":1200,"Balance":248800}"#,
    r#"{"TransactionId":"TX0000000003","MemberNo":"CM100001","ReceiptNo":"CS-seed-1","Amount":1200,"Balance":250000,"AlreadyVoided":true}"#,
    r#"{"Code":"INSUFFICIENT_POINTS","Message":"Insufficient points."}"#,
    r#""047db615-54b0-4179-9c90-b19aaf080bde""#,
    r#"{"status":200,"msg":null,"data":{"reservation_hold_id":"hold-0000000001","hold_duration_sec":300}}"#,
    r#"{"status":200,"msg":null,"data":{"reservation_id":"res-0000000002","reference_code":"6EF362","external_id":"seed-saga-1"}}"#,
    r#"{"status":200,"msg":null,"data":{"cursor":null,"results":[{"id":"res-0000000002","external_id":"seed-saga-1","venue_id":"como-dempsey-candlenut","date":"2026-12-24","status_code":"RESERVED"}]}}"#,
    r#"{"status":200,"msg":null,"data":{"availability":[{"name":"Dinner","is_closed":false,"shift_persistent_id":"shift-1","times":[{"time":"19:30","type":"book","access_persistent_id":"a-1"}]}]}}"#,
    r#"{"status":200,"msg":null,"data":{"results":[{"id":"como-dempsey-candlenut","name":"Candlenut"}]}}"#,
    r#"{"status":200,"msg":"ok","data":{"token":"88ce3226fbde62","token_expiration_datetime":"2026-11-25T16:51:08.085"}}"#,
    r#"{"msg":"Reservation has already been cancelled.","request_id":"sr-1","status":400}"#,
    r#"{"msg":"The requested time slot is no longer available.","request_id":"sr-7","status":400}"#,
];

const STATUSES: &[u16] = &[
    200, 201, 204, 302, 400, 401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504,
];

fn mutated(base: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(base),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..4),
    )
        .prop_map(|(body, edits)| {
            let mut bytes = body.as_bytes().to_vec();
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

/// (status, Retry-After, body): arbitrary, or a real answer slightly off.
fn answers() -> impl Strategy<Value = (u16, Option<Vec<u8>>, Vec<u8>)> {
    let status = prop_oneof![3 => prop::sample::select(STATUSES), 1 => 0..1100u16];
    let retry_after = prop::option::of(prop_oneof![
        (0..100_000u64).prop_map(|s| s.to_string().into_bytes()),
        Just(b"Wed, 21 Oct 2015 07:28:00 GMT".to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ]);
    let body = prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated(BODIES),];
    (status, retry_after, body)
}

fn expected_retry_after(header: Option<&[u8]>) -> Option<Duration> {
    let text = std::str::from_utf8(header?).ok()?;
    if !text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

const KNOWN_CODES: &[&str] = &[
    codes::INSUFFICIENT_POINTS,
    codes::MEMBER_EXPIRED,
    codes::MEMBER_TERMINATED,
    codes::MEMBER_NOT_FOUND,
    codes::DUPLICATE_RECEIPT,
    codes::SLOT_UNAVAILABLE,
    codes::HOLD_EXPIRED,
    codes::PAST_CANCELLATION_CUTOFF,
    codes::RESERVATION_NOT_FOUND,
    codes::RESERVATION_CANCELLED,
    codes::VENUE_NOT_FOUND,
    codes::INVALID_REQUEST,
    "ALREADY_CANCELLED",
];

/// What every answer's classification promises. `success_off_2xx`: statuses other than 2xx this
/// operation takes as success (a compensation's 404); `write`: a 2xx it cannot read is unknown.
fn check<T: std::fmt::Debug>(
    raw: &RawAnswer<'_>,
    read: &Read<T>,
    success_off_2xx: &[u16],
    write: bool,
) -> Result<(), TestCaseError> {
    let http = (100..=999).contains(&raw.status)
        && raw
            .retry_after
            .is_none_or(|h| h.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)));
    if !http {
        prop_assert!(matches!(read, Read::NotHttp), "{:?}", read);
        return Ok(());
    }
    let ok = (200..300).contains(&raw.status);
    match (raw.status, read) {
        (401, Read::Transient { retry, .. }) => prop_assert!(!retry),
        (
            429,
            Read::Transient {
                maybe_applied: false,
                retry_after,
                ..
            },
        )
        | (
            500..=599,
            Read::Transient {
                maybe_applied: true,
                retry_after,
                ..
            },
        ) => prop_assert_eq!(*retry_after, expected_retry_after(raw.retry_after)),
        (401 | 429 | 500..=599, other) => prop_assert!(false, "not transient: {:?}", other),
        (_, Read::Transient { maybe_applied, .. }) => prop_assert!(ok && *maybe_applied),
        (s, Read::Settled(Outcome::Success(_))) => {
            prop_assert!(ok || success_off_2xx.contains(&s), "{} {:?}", s, read)
        }
        (_, Read::Settled(Outcome::BusinessFailure { code, .. })) => {
            prop_assert!(KNOWN_CODES.contains(&code.as_str()), "{}", code)
        }
        (_, other) => prop_assert!(false, "{:?}", other),
    }
    if write && ok && !matches!(read, Read::Settled(Outcome::Success(_))) {
        prop_assert!(
            matches!(
                read,
                Read::Transient {
                    maybe_applied: true,
                    ..
                }
            ),
            "an unreadable 2xx to a write is unknown: {:?}",
            read
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn memberson_answers_keep_the_classification((status, retry_after, body) in answers()) {
        let raw = RawAnswer { status, retry_after: retry_after.as_deref(), body: &body };
        let summary = fuzzing::memberson_summary(raw, "CM100001", "COMO_CREDITS");
        check(&raw, &summary, &[], false)?;
        if let Read::Settled(Outcome::BusinessFailure { code, .. }) = &summary
            && (200..300).contains(&status)
        {
            prop_assert_eq!(code.as_str(), codes::MEMBER_NOT_FOUND);
        }
        check(&raw, &fuzzing::memberson_redeem(raw), &[], true)?;
        check(&raw, &fuzzing::memberson_void(raw), &[404], false)?;
        if let Some(Ok(_)) = fuzzing::memberson_token(raw, Duration::from_secs(60)) {
            prop_assert!((200..300).contains(&status));
        }
    }

    #[test]
    fn sevenrooms_answers_keep_the_classification((status, retry_after, body) in answers()) {
        let raw = RawAnswer { status, retry_after: retry_after.as_deref(), body: &body };
        check(&raw, &fuzzing::sevenrooms_venues(raw), &[], false)?;
        check(&raw, &fuzzing::sevenrooms_availability(raw), &[], false)?;
        check(&raw, &fuzzing::sevenrooms_reservation(raw), &[], false)?;
        check(&raw, &fuzzing::sevenrooms_search(raw), &[], false)?;
        check(&raw, &fuzzing::sevenrooms_hold(raw), &[], true)?;
        check(&raw, &fuzzing::sevenrooms_book(raw), &[], true)?;
        check(&raw, &fuzzing::sevenrooms_release(raw), &[404], false)?;
        // A cancel also takes a refusal whose message says "already cancelled" as done.
        let cancel = fuzzing::sevenrooms_cancel(raw);
        let off: Vec<u16> = (100..1000).filter(|s| !(200..300).contains(s)).collect();
        check(&raw, &cancel, &off, false)?;
        if let Read::Settled(Outcome::Success(
            como_workers::clients::sevenrooms::CancelOutcome::AlreadyCancelled,
        )) = &cancel
        {
            let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
            prop_assert!(text.contains("already"), "{}", text);
        }
        if let Some(Ok(_)) = fuzzing::sevenrooms_token(raw) {
            prop_assert!((200..300).contains(&status));
        }
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = fuzzing::sevenrooms_token_expiry(text);
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_or_nothing(header in prop::collection::vec(any::<u8>(), 0..24)) {
        let is_value = header.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f));
        let read = fuzzing::retry_after(&header);
        prop_assert_eq!(read, if is_value { expected_retry_after(Some(&header)) } else { None });
    }
}

const RULES: &[&str] = &[
    r#"{"kind": "commit_then_fail", "status": 500, "ops": ["redeem"], "probability": 0.2, "times": 5, "after_ms": 0, "for_ms": 10000}"#,
    r#"[{"kind":"latency","fixed_ms":1,"jitter_ms":5},{"kind":"hang","ms":10},{"kind":"server_error","status":503,"ops":["book","hold"]},{"kind":"rate_limited","retry_after_secs":2},{"kind":"token_expiry","times":1},{"kind":"outage","status":502,"after_ms":10,"for_ms":20},{"kind":"refuse","code":"SLOT_UNAVAILABLE","probability":0.5}]"#,
    r#"{"memberson":[{"kind":"refuse","code":"INSUFFICIENT_POINTS","ops":["redeem"]}],"sevenrooms":[{"kind":"commit_then_fail","ops":["book"],"lost_ms":5}]}"#,
];

/// What `PUT`/`POST /_sim/faults` accept: one rule or a list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<FaultRule>),
    One(FaultRule),
}

fn simulators() -> &'static SimHandle {
    static SIMS: OnceLock<(tokio::runtime::Runtime, SimHandle)> = OnceLock::new();
    &SIMS
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let config = SimConfig {
                bulk_members: 0,
                ..SimConfig::default()
            };
            let sims = rt.block_on(Simulators::start(config)).unwrap();
            (rt, sims)
        })
        .1
}

fn valid(rule: &FaultRule, ops: &[&str], refusals: &[&str]) -> bool {
    let status = match &rule.kind {
        FaultKind::ServerError { status } | FaultKind::Outage { status } => Some(*status),
        FaultKind::CommitThenFail { status, .. } => *status,
        FaultKind::Refuse { code } if !refusals.contains(&code.as_str()) => return false,
        _ => None,
    };
    rule.ops.iter().all(|op| ops.contains(&op.as_str()))
        && (0.0..=1.0).contains(&rule.probability)
        && status.is_none_or(|s| (500..600).contains(&s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Fault rules as the admin routes and the `--faults` file read them: accepted rules
    /// round-trip, and a simulator refuses exactly the invalid ones.
    #[test]
    fn fault_rules_round_trip_or_are_refused(
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated(RULES)]
    ) {
        if let Ok(parsed) = serde_json::from_slice::<OneOrMany>(&body) {
            let rules = match parsed {
                OneOrMany::Many(rules) => rules,
                OneOrMany::One(rule) => vec![rule],
            };
            let back: Vec<FaultRule> =
                serde_json::from_slice(&serde_json::to_vec(&rules).unwrap()).unwrap();
            prop_assert_eq!(&back, &rules);
            let sims = simulators();
            for (downstream, ops, refusals) in [
                (Downstream::Memberson, memberson::OPS, memberson::REFUSALS),
                (Downstream::SevenRooms, sevenrooms::OPS, sevenrooms::REFUSALS),
            ] {
                let result = sims.set_faults(downstream, rules.clone());
                prop_assert_eq!(result.is_ok(), rules.iter().all(|r| valid(r, ops, refusals)));
                sims.clear_faults(downstream);
            }
        }
        if let Ok(file) = serde_json::from_slice::<FaultsFile>(&body) {
            let back: FaultsFile =
                serde_json::from_slice(&serde_json::to_vec(&file).unwrap()).unwrap();
            prop_assert_eq!(back, file);
        }
    }
}

#[test]
fn the_mutated_answers_include_readable_successes() {
    // The guard above is only worth its cases if some of them are accepted answers.
    let raw = RawAnswer {
        status: 200,
        retry_after: None,
        body: BODIES[1].as_bytes(),
    };
    assert!(matches!(
        fuzzing::memberson_redeem(raw),
        Read::Settled(Outcome::Success(_))
    ));
}
