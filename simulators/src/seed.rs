//! Seed data: the members and venues every simulator starts with, public so that demos and tests
//! can build realistic bookings (a member who can pay, one who cannot, a slot that fills up).

use chrono::{NaiveDate, NaiveTime};

/// The only point type the Como tenant redeems.
pub const POINT_TYPE: &str = "COMO_CREDITS";
/// The venue group all seed venues belong to.
pub const VENUE_GROUP_ID: &str = "como-hotels-and-resorts";

/// A member in good standing with a large balance.
pub const MEMBER_RICH: &str = "CM100001";
/// An active member with few credits (120): most experiences are out of reach.
pub const MEMBER_LOW_BALANCE: &str = "CM100004";
/// An active member with no credits at all.
pub const MEMBER_EMPTY: &str = "CM100005";
/// A member whose membership has expired (balance left, but redemptions are refused).
pub const MEMBER_EXPIRED: &str = "CM100006";
/// A terminated member.
pub const MEMBER_TERMINATED: &str = "CM100007";

/// Membership status as Memberson reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MemberStatus {
    Active,
    Expired,
    Terminated,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "ACTIVE",
            MemberStatus::Expired => "EXPIRED",
            MemberStatus::Terminated => "TERMINATED",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SeedMember {
    pub member_no: String,
    pub tier: &'static str,
    pub status: MemberStatus,
    pub expiry_date: NaiveDate,
    pub balance: i64,
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
}

/// Number of the `i`-th bulk member (`0..bulk`), for load tests that need many distinct members.
pub fn bulk_member_no(i: usize) -> String {
    format!("CM{:06}", 200_000 + i)
}

/// Credits each bulk member starts with.
pub const BULK_MEMBER_BALANCE: i64 = 10_000_000;

/// The hand-made members, then `bulk` active members with large balances.
pub fn members(bulk: usize) -> Vec<SeedMember> {
    use MemberStatus::*;
    let m = |no: &str, tier, status, expiry, balance| SeedMember {
        member_no: no.to_owned(),
        tier,
        status,
        expiry_date: expiry,
        balance,
    };
    let mut all = vec![
        m(MEMBER_RICH, "Platinum", Active, date(2030, 12, 31), 250_000),
        m("CM100002", "Gold", Active, date(2029, 6, 30), 48_000),
        m("CM100003", "Classic", Active, date(2028, 3, 31), 9_500),
        m(
            MEMBER_LOW_BALANCE,
            "Classic",
            Active,
            date(2028, 1, 31),
            120,
        ),
        m(MEMBER_EMPTY, "Classic", Active, date(2027, 11, 30), 0),
        m(MEMBER_EXPIRED, "Gold", Expired, date(2024, 12, 31), 30_000),
        m(
            MEMBER_TERMINATED,
            "Classic",
            Terminated,
            date(2025, 5, 31),
            5_000,
        ),
        m("CM100008", "Gold", Active, date(2029, 9, 30), 15_750),
        m("CM100009", "Platinum", Active, date(2031, 2, 28), 120_000),
        m("CM100010", "Classic", Active, date(2028, 8, 31), 2_400),
        m("CM100011", "Classic", Expired, date(2023, 10, 31), 800),
        m("CM100012", "Gold", Active, date(2030, 4, 30), 64_000),
    ];
    all.extend((0..bulk).map(|i| SeedMember {
        member_no: bulk_member_no(i),
        tier: "Classic",
        status: Active,
        expiry_date: date(2035, 12, 31),
        balance: BULK_MEMBER_BALANCE,
    }));
    all
}

/// A shift: bookable times from `first` to `last` every `interval_min` minutes.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedShift {
    pub name: &'static str,
    pub shift_persistent_id: &'static str,
    pub access_persistent_id: &'static str,
    pub first: NaiveTime,
    pub last: NaiveTime,
    pub interval_min: u32,
    /// Days of the week the shift is closed (0 = Monday).
    pub closed_weekdays: &'static [u32],
}

impl SeedShift {
    /// Every bookable time of the shift.
    pub fn times(&self) -> Vec<NaiveTime> {
        let mut out = Vec::new();
        let mut t = self.first;
        while t <= self.last {
            out.push(t);
            let next = t + chrono::Duration::minutes(i64::from(self.interval_min.max(1)));
            if next <= t {
                break;
            }
            t = next;
        }
        out
    }

    pub fn is_closed_on(&self, date: NaiveDate) -> bool {
        use chrono::Datelike;
        self.closed_weekdays
            .contains(&date.weekday().num_days_from_monday())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SeedVenue {
    pub id: &'static str,
    pub name: &'static str,
    pub timezone: &'static str,
    /// The zone's offset from UTC; the seed zones keep no daylight saving.
    pub utc_offset_minutes: i32,
    pub currency_code: &'static str,
    /// Covers (guests) each time slot can take, holds and reservations together.
    pub covers_per_slot: u32,
    pub shifts: Vec<SeedShift>,
}

/// A venue that seats many: bookings there rarely find the slot full.
pub const VENUE_LARGE: &str = "como-dempsey-candlenut";
/// A chef's table with 6 covers per slot: a few bookings fill a slot.
pub const VENUE_SMALL: &str = "como-metropolitan-chefs-table";

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

fn dinner(id: &'static str, access: &'static str, closed: &'static [u32]) -> SeedShift {
    SeedShift {
        name: "Dinner",
        shift_persistent_id: id,
        access_persistent_id: access,
        first: t(18, 0),
        last: t(21, 30),
        interval_min: 30,
        closed_weekdays: closed,
    }
}

fn lunch(id: &'static str, access: &'static str) -> SeedShift {
    SeedShift {
        name: "Lunch",
        shift_persistent_id: id,
        access_persistent_id: access,
        first: t(12, 0),
        last: t(14, 0),
        interval_min: 30,
        closed_weekdays: &[],
    }
}

/// The seed venues.
pub fn venues() -> Vec<SeedVenue> {
    vec![
        SeedVenue {
            id: VENUE_LARGE,
            name: "Candlenut, COMO Dempsey",
            timezone: "Asia/Singapore",
            utc_offset_minutes: 8 * 60,
            currency_code: "SGD",
            covers_per_slot: 200,
            shifts: vec![
                lunch("shift-candlenut-lunch", "access-candlenut-lunch"),
                dinner("shift-candlenut-dinner", "access-candlenut-dinner", &[]),
            ],
        },
        SeedVenue {
            id: "como-dempsey-cookhouse",
            name: "Dempsey Cookhouse & Bar, COMO Dempsey",
            timezone: "Asia/Singapore",
            utc_offset_minutes: 8 * 60,
            currency_code: "SGD",
            covers_per_slot: 60,
            shifts: vec![dinner(
                "shift-cookhouse-dinner",
                "access-cookhouse-dinner",
                &[0],
            )],
        },
        SeedVenue {
            id: VENUE_SMALL,
            name: "Chef's Table at Nahm, COMO Metropolitan Bangkok",
            timezone: "Asia/Bangkok",
            utc_offset_minutes: 7 * 60,
            currency_code: "THB",
            covers_per_slot: 6,
            shifts: vec![dinner("shift-nahm-dinner", "access-nahm-chefs-table", &[])],
        },
        SeedVenue {
            id: "como-uma-ubud-kemiri",
            name: "Kemiri, COMO Uma Ubud",
            timezone: "Asia/Makassar",
            utc_offset_minutes: 8 * 60,
            currency_code: "IDR",
            covers_per_slot: 40,
            shifts: vec![
                lunch("shift-kemiri-lunch", "access-kemiri-lunch"),
                dinner("shift-kemiri-dinner", "access-kemiri-dinner", &[]),
            ],
        },
        SeedVenue {
            id: "como-cocoa-island-ufaa",
            name: "Ufaa, COMO Cocoa Island",
            timezone: "Indian/Maldives",
            utc_offset_minutes: 5 * 60,
            currency_code: "USD",
            covers_per_slot: 24,
            shifts: vec![dinner("shift-ufaa-dinner", "access-ufaa-dinner", &[])],
        },
        SeedVenue {
            id: "como-uma-paro-bukhari",
            name: "Bukhari, COMO Uma Paro",
            timezone: "Asia/Thimphu",
            utc_offset_minutes: 6 * 60,
            currency_code: "BTN",
            covers_per_slot: 30,
            shifts: vec![dinner("shift-bukhari-dinner", "access-bukhari-dinner", &[])],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_covers_every_kind_of_member_and_small_and_large_venues() {
        let members = members(3);
        assert_eq!(members.len(), 15);
        for status in [
            MemberStatus::Active,
            MemberStatus::Expired,
            MemberStatus::Terminated,
        ] {
            assert!(members.iter().any(|m| m.status == status));
        }
        assert!(members.iter().any(|m| m.balance == 0));
        let venues = venues();
        assert!(
            venues
                .iter()
                .any(|v| v.id == VENUE_SMALL && v.covers_per_slot < 10)
        );
        assert_eq!(venues[0].shifts[1].times().len(), 8);
    }
}
