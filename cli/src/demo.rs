//! Sample bookings for `como-saga up --demo N`: a realistic mix. Most succeed; some members are
//! short of credits or no longer active; some bookings go to a chef's table whose slots fill
//! after a few guests; a few carry a wrong quote and are refused at the edge; and the
//! simulators inject downstream faults (errors, commit-then-fail, latency, refusals) into a
//! share of the calls, so that retries, reconciliation and compensation all show.

use std::time::Duration;

use chrono::{Days, NaiveDate};
use como_orchestrator::VenueCatalogue;
use como_schemas::{
    BookingRequested, Credits, Email, GuestContact, MemberNo, PartySize, PersonName, Phone,
    RequestId, SchemaVersion, SlotTime, VenueId,
};
use como_simulators::faults::{FaultKind, FaultRule, FaultsFile};
use como_simulators::seed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The faults `up` installs in the simulators for a demo.
pub fn faults() -> FaultsFile {
    FaultsFile {
        memberson: vec![
            FaultRule::new(FaultKind::Latency {
                fixed_ms: 2,
                jitter_ms: 8,
            }),
            FaultRule::new(FaultKind::ServerError { status: 503 })
                .on(["summary"])
                .probability(0.03),
            FaultRule::new(FaultKind::CommitThenFail {
                status: Some(500),
                lost_ms: 0,
            })
            .on(["redeem"])
            .probability(0.04),
        ],
        sevenrooms: vec![
            FaultRule::new(FaultKind::Latency {
                fixed_ms: 3,
                jitter_ms: 12,
            }),
            FaultRule::new(FaultKind::RateLimited {
                retry_after_secs: 1,
            })
            .on(["hold"])
            .probability(0.02),
            FaultRule::new(FaultKind::CommitThenFail {
                status: Some(502),
                lost_ms: 0,
            })
            .on(["book"])
            .probability(0.04),
            FaultRule::new(FaultKind::Refuse {
                code: "SLOT_UNAVAILABLE".into(),
            })
            .on(["book"])
            .probability(0.03),
        ],
    }
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| unreachable!("demo values are valid: {e}"))
}

/// `n` booking requests for dates after `today`, reproducible from `seed`.
pub fn bookings(
    n: usize,
    today: NaiveDate,
    catalogue: &VenueCatalogue,
    seed_value: u64,
    run: &str,
) -> Vec<BookingRequested> {
    let mut rng = StdRng::seed_from_u64(seed_value);
    let times = [
        "18:00", "18:30", "19:00", "19:30", "20:00", "20:30", "21:00",
    ];
    (0..n)
        .map(|i| {
            let roll: f64 = rng.random();
            let (member, venue) = if roll < 0.08 {
                (seed::MEMBER_LOW_BALANCE.to_owned(), seed::VENUE_LARGE)
            } else if roll < 0.12 {
                (seed::MEMBER_EXPIRED.to_owned(), seed::VENUE_LARGE)
            } else if roll < 0.22 {
                (
                    seed::bulk_member_no(rng.random_range(0..1000)),
                    seed::VENUE_SMALL,
                )
            } else {
                (
                    seed::bulk_member_no(rng.random_range(0..1000)),
                    seed::VENUE_LARGE,
                )
            };
            // The chef's table gets few dates and times so that its slots fill.
            let (days, time) = if venue == seed::VENUE_SMALL {
                (1 + rng.random_range(0..2), times[rng.random_range(0..2)])
            } else {
                (
                    1 + rng.random_range(0..60),
                    times[rng.random_range(0..times.len())],
                )
            };
            let party = must(PartySize::new(rng.random_range(2..=4)));
            let venue_id = must(VenueId::parse(venue));
            let price = catalogue.price(&venue_id, party).unwrap_or(1_000);
            // A few quotes are stale: the edge must refuse them.
            let quoted = if rng.random::<f64>() < 0.02 {
                price + 100
            } else {
                price
            };
            BookingRequested {
                schema_version: SchemaVersion::CURRENT,
                request_id: must(RequestId::parse(format!("demo-{run}-{i:06}"))),
                member_no: must(MemberNo::parse(member)),
                venue_id,
                date: today.checked_add_days(Days::new(days)).unwrap_or(today),
                time: must(SlotTime::parse(time)),
                party_size: party,
                quoted_credits: must(Credits::new(quoted)),
                traceparent: None,
                availability_id: None,
                guest: GuestContact {
                    first_name: must(PersonName::parse("Demo")),
                    last_name: must(PersonName::parse(format!("Guest {i}"))),
                    phone: must(Phone::parse(format!("+659{:07}", i % 10_000_000))),
                    email: Some(must(Email::parse(format!("guest{i}@example.com")))),
                }
                .into(),
            }
        })
        .collect()
}

/// How often `up` prints progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
