//! The ledgers: what each simulated system has actually done, in the form `GET /_sim/ledger`
//! serves, so that a checker outside the saga (a test, `como-saga chaos`) can verify the money
//! invariant against the "external" systems rather than against the orchestrator's own view.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::seed::MemberStatus;

/// Both ledgers at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub memberson: MembersonLedger,
    pub sevenrooms: SevenRoomsLedger,
}

/// Memberson: every member's balance with every redemption and void.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MembersonLedger {
    /// Sorted by member number.
    pub members: Vec<MemberLedger>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberLedger {
    pub member_no: String,
    pub status: MemberStatus,
    pub tier: String,
    /// Balance at start-up.
    pub opening_balance: i64,
    pub balance: i64,
    /// In the order they were made.
    pub redemptions: Vec<RedemptionEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RedemptionStatus {
    /// The points are taken.
    Redeemed,
    /// The redemption was voided and the points came back.
    Voided,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedemptionEntry {
    pub receipt_no: String,
    pub transaction_id: String,
    pub point_type: String,
    pub amount: i64,
    pub status: RedemptionStatus,
    pub redeemed_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_transaction_id: Option<String>,
    pub void_reason: Option<String>,
}

impl MemberLedger {
    /// Credits taken by redemptions that are not voided.
    pub fn live_redeemed(&self) -> i64 {
        self.redemptions
            .iter()
            .filter(|r| r.status == RedemptionStatus::Redeemed)
            .map(|r| r.amount)
            .sum()
    }

    /// The balance is the opening balance less every live redemption.
    pub fn is_consistent(&self) -> bool {
        self.opening_balance - self.live_redeemed() == self.balance
    }
}

impl MembersonLedger {
    pub fn member(&self, member_no: &str) -> Option<&MemberLedger> {
        self.members.iter().find(|m| m.member_no == member_no)
    }

    /// Every redemption made under `receipt_no`, with its member.
    pub fn redemptions_for_receipt<'a>(
        &'a self,
        receipt_no: &'a str,
    ) -> impl Iterator<Item = (&'a MemberLedger, &'a RedemptionEntry)> + 'a {
        self.members.iter().flat_map(move |m| {
            m.redemptions
                .iter()
                .filter(move |r| r.receipt_no == receipt_no)
                .map(move |r| (m, r))
        })
    }
}

/// SevenRooms: every reservation and every hold with its status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SevenRoomsLedger {
    /// In the order they were made.
    pub reservations: Vec<ReservationEntry>,
    /// In the order they were made.
    pub holds: Vec<HoldEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationEntry {
    pub reservation_id: String,
    pub reference_code: String,
    pub venue_id: String,
    pub external_id: Option<String>,
    pub loyalty_id: Option<String>,
    /// Who the reservation is for, as it was booked (the simulator's own fake guests: what a
    /// test checks reached SevenRooms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestEntry>,
    pub date: NaiveDate,
    pub time: NaiveTime,
    pub party_size: u32,
    /// `RESERVED` or `CANCELED`, as SevenRooms spells them.
    pub status_code: String,
    pub reservation_hold_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// The guest named on a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestEntry {
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl ReservationEntry {
    pub fn is_live(&self) -> bool {
        self.status_code == "RESERVED"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HoldStatus {
    /// Holding covers until `expires_at`.
    Held,
    Released,
    Expired,
    /// Turned into a reservation.
    Booked,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldEntry {
    pub reservation_hold_id: String,
    pub venue_id: String,
    pub date: NaiveDate,
    pub time: NaiveTime,
    pub party_size: u32,
    pub status: HoldStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reservation_id: Option<String>,
}

impl SevenRoomsLedger {
    /// Every reservation, live or cancelled, made with `external_id`.
    pub fn with_external_id<'a>(
        &'a self,
        external_id: &'a str,
    ) -> impl Iterator<Item = &'a ReservationEntry> + 'a {
        self.reservations
            .iter()
            .filter(move |r| r.external_id.as_deref() == Some(external_id))
    }

    pub fn reservation(&self, reservation_id: &str) -> Option<&ReservationEntry> {
        self.reservations
            .iter()
            .find(|r| r.reservation_id == reservation_id)
    }

    pub fn hold(&self, hold_id: &str) -> Option<&HoldEntry> {
        self.holds.iter().find(|h| h.reservation_hold_id == hold_id)
    }
}
