//! The money invariant, checked against the simulators' own ledgers rather than against the
//! orchestrator's view, and against the ledgers as a whole rather than only against the sagas
//! the store lists:
//!
//! - every member's balance is the opening balance less every live redemption;
//! - a confirmed saga has exactly one live redemption (its `ReceiptNo`) and one live reservation
//!   (its `external_id`); a compensated or cancelled one has neither; any other stopped saga
//!   (`needs_operator`) has as many live redemptions as live reservations;
//! - the redemption is the saga's member's and for the saga's credits; the reservation is at the
//!   saga's venue, for its party, under its member;
//! - no live effect without a saga: a live `CS-` redemption or a live reservation with an
//!   `external_id` that belongs to no listed saga;
//! - no receipt redeemed twice, no two reservations with one `external_id`;
//! - no finished saga leaves a hold it knew of live.
//!
//! Live holds are reported, not flagged: SevenRooms offers no way to find a hold whose answer
//! was lost, and such a hold frees itself when it expires. Sagas waiting for an operator are
//! listed with their reasons.
//!
//! Anyone can run it from outside: it needs only the ledger (`GET /_sim/ledger`) and, per saga,
//! its outcome and its keys ([`SagaKeys`]). Pass every saga of the run: an effect of a saga
//! left out of the list is reported as an effect without a saga.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ledger::{
    HoldStatus, Ledger, MemberLedger, RedemptionEntry, RedemptionStatus, ReservationEntry,
};

/// The prefix of every `ReceiptNo` a saga redeems under (`como_schemas::ReceiptNo::for_saga`).
pub const SAGA_RECEIPT_PREFIX: &str = "CS-";

/// How a saga ended, as the orchestrator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaEnd {
    Confirmed,
    Compensated,
    Cancelled,
    /// Stopped until an operator acts: its effects must still pair up (a live redemption with a
    /// live reservation), and it is listed with its reason.
    NeedsOperator,
    /// Still running: its effects belong to it, but nothing more is asserted of them.
    Unfinished,
}

/// One saga, the keys its effects carry downstream, and what they should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaKeys {
    pub saga_id: String,
    pub member_no: String,
    pub receipt_no: String,
    pub external_id: String,
    /// The hold the saga learnt of, if any.
    pub hold_id: Option<String>,
    pub end: SagaEnd,
    /// Credits the saga charges: the request's quoted credits.
    pub amount: i64,
    pub venue_id: String,
    pub party_size: u32,
    /// Why the saga waits for an operator (`reason: detail`), when it does.
    pub needs_operator_reason: Option<String>,
}

impl SagaKeys {
    /// The keys of a saga's effects as the engine derives them: the `ReceiptNo` and
    /// `external_id` from the saga id, the hold from the hold step's output, the amount, venue
    /// and party from the request; and how it ended.
    pub fn of(state: &como_engine::SagaState) -> SagaKeys {
        use como_engine::{SagaStatus, StatusKind};
        let end = match state.status.kind() {
            StatusKind::Confirmed => SagaEnd::Confirmed,
            StatusKind::Compensated => SagaEnd::Compensated,
            StatusKind::Cancelled => SagaEnd::Cancelled,
            StatusKind::NeedsOperator => SagaEnd::NeedsOperator,
            _ => SagaEnd::Unfinished,
        };
        let needs_operator_reason = match &state.status {
            SagaStatus::NeedsOperator { reason, detail, .. } => {
                Some(format!("{}: {detail}", reason.as_str()))
            }
            _ => None,
        };
        let hold_id = state.steps.iter().find_map(|s| match &s.output {
            Some(como_schemas::StepOutput::SlotHeld { hold_id, .. }) => Some(hold_id.to_string()),
            _ => None,
        });
        let request = &state.request;
        SagaKeys {
            saga_id: state.saga_id.to_string(),
            member_no: request.member_no.to_string(),
            receipt_no: como_schemas::ReceiptNo::for_saga(state.saga_id).to_string(),
            external_id: state.saga_id.to_string(),
            hold_id,
            end,
            amount: i64::try_from(request.quoted_credits.get()).unwrap_or(i64::MAX),
            venue_id: request.venue_id.to_string(),
            party_size: u32::from(request.party_size.get()),
            needs_operator_reason,
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The saga the rule is about; for an effect without a saga, the saga id its key names;
    /// empty when the rule is about no saga (a member's balance).
    pub saga_id: String,
    pub rule: String,
}

/// Holds still holding covers when the ledger was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReport {
    /// Holds in status `HELD`.
    pub live: usize,
    /// When the last of them expires: by then, every one has freed its covers.
    pub latest_expiry: Option<DateTime<Utc>>,
    /// Those a listed saga knew of (its `hold_id`); the others' answers were lost.
    pub by_saga_known: usize,
}

/// A saga stopped for an operator, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedsOperatorEntry {
    pub saga_id: String,
    pub reason: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantReport {
    pub violations: Vec<Violation>,
    pub live_holds: HoldReport,
    pub needs_operator: Vec<NeedsOperatorEntry>,
}

impl InvariantReport {
    /// No rule is broken (live holds and sagas waiting for an operator are not breaches).
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Check both ledgers as a whole and every saga against them.
pub fn check(ledger: &Ledger, sagas: &[SagaKeys]) -> InvariantReport {
    let mut report = InvariantReport::default();
    // Indexes first: a chaos run checks tens of thousands of sagas.
    let mut by_receipt: HashMap<&str, Vec<(&MemberLedger, &RedemptionEntry)>> = HashMap::new();
    for m in &ledger.memberson.members {
        for r in &m.redemptions {
            by_receipt
                .entry(r.receipt_no.as_str())
                .or_default()
                .push((m, r));
        }
    }
    let mut by_external_id: HashMap<&str, Vec<&ReservationEntry>> = HashMap::new();
    for r in &ledger.sevenrooms.reservations {
        if let Some(id) = &r.external_id {
            by_external_id.entry(id.as_str()).or_default().push(r);
        }
    }
    let receipts: HashSet<&str> = sagas.iter().map(|s| s.receipt_no.as_str()).collect();
    let external_ids: HashSet<&str> = sagas.iter().map(|s| s.external_id.as_str()).collect();

    check_balances(ledger, &mut report.violations);
    check_effects_without_saga(ledger, &receipts, &external_ids, &mut report.violations);
    for saga in sagas {
        let redemptions = by_receipt
            .get(saga.receipt_no.as_str())
            .map_or(&[][..], Vec::as_slice);
        let reservations = by_external_id
            .get(saga.external_id.as_str())
            .map_or(&[][..], Vec::as_slice);
        check_saga(
            ledger,
            saga,
            redemptions,
            reservations,
            &mut report.violations,
        );
        if saga.end == SagaEnd::NeedsOperator {
            report.needs_operator.push(NeedsOperatorEntry {
                saga_id: saga.saga_id.clone(),
                reason: saga
                    .needs_operator_reason
                    .clone()
                    .unwrap_or_else(|| "no reason recorded".to_owned()),
            });
        }
    }
    report.live_holds = hold_report(ledger, sagas);
    report
}

/// Check every saga against the ledger: [`check`]'s violations alone.
pub fn check_money_invariant(ledger: &Ledger, sagas: &[SagaKeys]) -> Vec<Violation> {
    check(ledger, sagas).violations
}

fn check_balances(ledger: &Ledger, violations: &mut Vec<Violation>) {
    for m in &ledger.memberson.members {
        if !m.is_consistent() {
            violations.push(Violation {
                saga_id: String::new(),
                rule: format!(
                    "member {}: balance {} is not the opening balance {} less {} in live redemptions",
                    m.member_no,
                    m.balance,
                    m.opening_balance,
                    m.live_redeemed()
                ),
            });
        }
    }
}

/// The saga id a saga's `ReceiptNo` names (`CS-<hex>`), or the receipt itself.
fn saga_of_receipt(receipt_no: &str) -> String {
    receipt_no
        .strip_prefix(SAGA_RECEIPT_PREFIX)
        .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
        .map_or_else(|| receipt_no.to_owned(), |id| id.to_string())
}

fn check_effects_without_saga(
    ledger: &Ledger,
    receipts: &HashSet<&str>,
    external_ids: &HashSet<&str>,
    violations: &mut Vec<Violation>,
) {
    for m in &ledger.memberson.members {
        for r in &m.redemptions {
            if r.status == RedemptionStatus::Redeemed
                && r.receipt_no.starts_with(SAGA_RECEIPT_PREFIX)
                && !receipts.contains(r.receipt_no.as_str())
            {
                violations.push(Violation {
                    saga_id: saga_of_receipt(&r.receipt_no),
                    rule: format!(
                        "live redemption {} ({} credits from {}) belongs to no saga",
                        r.receipt_no, r.amount, m.member_no
                    ),
                });
            }
        }
    }
    for r in &ledger.sevenrooms.reservations {
        if let Some(id) = &r.external_id
            && r.is_live()
            && !external_ids.contains(id.as_str())
        {
            violations.push(Violation {
                saga_id: id.clone(),
                rule: format!(
                    "live reservation {} at {} belongs to no saga",
                    r.reservation_id, r.venue_id
                ),
            });
        }
    }
}

fn check_saga(
    ledger: &Ledger,
    saga: &SagaKeys,
    redemptions: &[(&MemberLedger, &RedemptionEntry)],
    reservations: &[&ReservationEntry],
    violations: &mut Vec<Violation>,
) {
    let mut flag = |rule: String| {
        violations.push(Violation {
            saga_id: saga.saga_id.clone(),
            rule,
        })
    };
    if redemptions.len() > 1 {
        flag(format!(
            "receipt {} redeemed {} times",
            saga.receipt_no,
            redemptions.len()
        ));
    }
    for (member, r) in redemptions {
        if member.member_no != saga.member_no {
            flag(format!(
                "receipt {} redeemed from {}, not from the saga's member {}",
                saga.receipt_no, member.member_no, saga.member_no
            ));
        }
        if r.amount != saga.amount {
            flag(format!(
                "receipt {} redeemed {} credits, not the saga's {}",
                saga.receipt_no, r.amount, saga.amount
            ));
        }
    }
    if reservations.len() > 1 {
        flag(format!(
            "{} reservations carry its external_id",
            reservations.len()
        ));
    }
    for r in reservations {
        if r.venue_id != saga.venue_id {
            flag(format!(
                "reservation {} is at {}, not at the saga's venue {}",
                r.reservation_id, r.venue_id, saga.venue_id
            ));
        }
        if r.party_size != saga.party_size {
            flag(format!(
                "reservation {} is for {}, not for the saga's party of {}",
                r.reservation_id, r.party_size, saga.party_size
            ));
        }
        if let Some(loyalty_id) = &r.loyalty_id
            && *loyalty_id != saga.member_no
        {
            flag(format!(
                "reservation {} is under member {loyalty_id}, not the saga's member {}",
                r.reservation_id, saga.member_no
            ));
        }
    }

    let live_redemptions = redemptions
        .iter()
        .filter(|(_, r)| r.status == RedemptionStatus::Redeemed)
        .count();
    let live_reservations = reservations.iter().filter(|r| r.is_live()).count();
    match saga.end {
        SagaEnd::Confirmed => {
            if live_redemptions != 1 {
                flag(format!(
                    "confirmed with {live_redemptions} live redemptions"
                ));
            }
            if live_reservations != 1 {
                flag(format!(
                    "confirmed with {live_reservations} live reservations"
                ));
            }
        }
        SagaEnd::Compensated | SagaEnd::Cancelled => {
            if live_redemptions != 0 {
                flag("compensated but the member is still charged".into());
            }
            if live_reservations != 0 {
                flag("compensated but a reservation is still live".into());
            }
        }
        SagaEnd::NeedsOperator => {
            if live_redemptions != live_reservations {
                flag(format!(
                    "needs an operator with {live_redemptions} live redemptions and \
                     {live_reservations} live reservations"
                ));
            }
        }
        SagaEnd::Unfinished => {}
    }
    let finished = matches!(
        saga.end,
        SagaEnd::Confirmed | SagaEnd::Compensated | SagaEnd::Cancelled
    );
    let hold = saga
        .hold_id
        .as_deref()
        .and_then(|h| ledger.sevenrooms.hold(h));
    if finished && hold.is_some_and(|h| h.status == HoldStatus::Held) {
        flag("finished but its hold is still held".into());
    }
}

fn hold_report(ledger: &Ledger, sagas: &[SagaKeys]) -> HoldReport {
    let known: HashSet<&str> = sagas.iter().filter_map(|s| s.hold_id.as_deref()).collect();
    let live: Vec<_> = ledger
        .sevenrooms
        .holds
        .iter()
        .filter(|h| h.status == HoldStatus::Held)
        .collect();
    HoldReport {
        live: live.len(),
        latest_expiry: live.iter().map(|h| h.expires_at).max(),
        by_saga_known: live
            .iter()
            .filter(|h| known.contains(h.reservation_hold_id.as_str()))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, NaiveTime, TimeZone};

    use super::*;
    use crate::ledger::{HoldEntry, MembersonLedger, SevenRoomsLedger};
    use crate::seed::MemberStatus;

    const MEMBER: &str = "CM100001";
    const OTHER_MEMBER: &str = "CM100002";
    const VENUE: &str = "como-dempsey-candlenut";
    const AMOUNT: i64 = 1_500;
    const OPENING: i64 = 250_000;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, minute, 0).unwrap()
    }

    fn saga(n: u128, end: SagaEnd) -> SagaKeys {
        let id = uuid::Uuid::from_u128(n);
        SagaKeys {
            saga_id: id.to_string(),
            member_no: MEMBER.to_owned(),
            receipt_no: format!("CS-{}", id.simple()),
            external_id: id.to_string(),
            hold_id: Some(format!("hold-{n}")),
            end,
            amount: AMOUNT,
            venue_id: VENUE.to_owned(),
            party_size: 2,
            needs_operator_reason: (end == SagaEnd::NeedsOperator)
                .then(|| "compensation_refused: past the cut-off".to_owned()),
        }
    }

    fn redemption(receipt_no: &str, amount: i64, live: bool) -> RedemptionEntry {
        RedemptionEntry {
            receipt_no: receipt_no.to_owned(),
            transaction_id: "TX1".to_owned(),
            point_type: "COMO_CREDITS".to_owned(),
            amount,
            status: if live {
                RedemptionStatus::Redeemed
            } else {
                RedemptionStatus::Voided
            },
            redeemed_at: at(0),
            voided_at: (!live).then(|| at(1)),
            void_transaction_id: (!live).then(|| "TX2".to_owned()),
            void_reason: None,
        }
    }

    fn reservation(external_id: &str, live: bool) -> ReservationEntry {
        ReservationEntry {
            reservation_id: format!("res-{external_id}"),
            reference_code: "ABC123".to_owned(),
            venue_id: VENUE.to_owned(),
            external_id: Some(external_id.to_owned()),
            loyalty_id: Some(MEMBER.to_owned()),
            guest: None,
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            time: NaiveTime::from_hms_opt(19, 0, 0).unwrap(),
            party_size: 2,
            status_code: if live { "RESERVED" } else { "CANCELED" }.to_owned(),
            reservation_hold_id: None,
            created_at: at(0),
            cancelled_at: (!live).then(|| at(1)),
        }
    }

    fn hold(id: &str, status: HoldStatus, expires: DateTime<Utc>) -> HoldEntry {
        HoldEntry {
            reservation_hold_id: id.to_owned(),
            venue_id: VENUE.to_owned(),
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            time: NaiveTime::from_hms_opt(19, 0, 0).unwrap(),
            party_size: 2,
            status,
            created_at: at(0),
            expires_at: expires,
            reservation_id: None,
        }
    }

    fn member(member_no: &str, redemptions: Vec<RedemptionEntry>) -> MemberLedger {
        let mut m = MemberLedger {
            member_no: member_no.to_owned(),
            status: MemberStatus::Active,
            tier: "Gold".to_owned(),
            opening_balance: OPENING,
            balance: OPENING,
            redemptions,
        };
        m.balance = OPENING - m.live_redeemed();
        m
    }

    /// A ledger with these redemptions (all from [`MEMBER`]) and reservations, balances
    /// consistent.
    fn ledger(redemptions: Vec<RedemptionEntry>, reservations: Vec<ReservationEntry>) -> Ledger {
        Ledger {
            memberson: MembersonLedger {
                members: vec![member(MEMBER, redemptions), member(OTHER_MEMBER, vec![])],
            },
            sevenrooms: SevenRoomsLedger {
                reservations,
                holds: Vec::new(),
            },
        }
    }

    /// The effects of a saga that ended confirmed.
    fn confirmed_effects(s: &SagaKeys) -> (RedemptionEntry, ReservationEntry) {
        (
            redemption(&s.receipt_no, AMOUNT, true),
            reservation(&s.external_id, true),
        )
    }

    fn rules(report: &InvariantReport) -> Vec<String> {
        let mut rules: Vec<String> = report
            .violations
            .iter()
            .map(|v| format!("{}|{}", v.saga_id, v.rule))
            .collect();
        rules.sort();
        rules
    }

    fn only(saga: &SagaKeys, rule: &str) -> Vec<String> {
        vec![format!("{}|{rule}", saga.saga_id)]
    }

    #[test]
    fn the_effects_of_finished_sagas_that_pair_up_break_no_rule() {
        let confirmed = saga(1, SagaEnd::Confirmed);
        let compensated = saga(2, SagaEnd::Compensated);
        let waiting = saga(3, SagaEnd::NeedsOperator);
        let running = saga(4, SagaEnd::Unfinished);
        let (r1, b1) = confirmed_effects(&confirmed);
        let (r3, b3) = confirmed_effects(&waiting);
        let ledger = ledger(
            vec![
                r1,
                redemption(&compensated.receipt_no, AMOUNT, false),
                r3,
                // Running: charged, not booked yet.
                redemption(&running.receipt_no, AMOUNT, true),
                // Not a saga's receipt: someone else's redemption.
                redemption("POS-77", 300, true),
            ],
            vec![b1, reservation(&compensated.external_id, false), b3],
        );
        let report = check(&ledger, &[confirmed, compensated, waiting, running]);
        assert_eq!(rules(&report), Vec::<String>::new());
        assert!(report.holds());
    }

    #[test]
    fn a_balance_that_is_not_the_opening_balance_less_live_redemptions_breaks_the_invariant() {
        let s = saga(1, SagaEnd::Confirmed);
        let (r, b) = confirmed_effects(&s);
        let mut ledger = ledger(vec![r], vec![b]);
        // Charged twice for one redemption.
        ledger.memberson.members[0].balance -= AMOUNT;
        assert_eq!(
            rules(&check(&ledger, &[s])),
            vec![format!(
                "|member {MEMBER}: balance {} is not the opening balance {OPENING} less {AMOUNT} \
                 in live redemptions",
                OPENING - 2 * AMOUNT
            )]
        );
    }

    #[test]
    fn a_confirmed_saga_has_exactly_one_live_redemption_and_one_live_reservation() {
        let s = saga(1, SagaEnd::Confirmed);
        let (r, b) = confirmed_effects(&s);
        let unpaid = ledger(vec![redemption(&s.receipt_no, AMOUNT, false)], vec![b]);
        assert_eq!(
            rules(&check(&unpaid, std::slice::from_ref(&s))),
            only(&s, "confirmed with 0 live redemptions")
        );
        let unbooked = ledger(vec![r], vec![]);
        assert_eq!(
            rules(&check(&unbooked, std::slice::from_ref(&s))),
            only(&s, "confirmed with 0 live reservations")
        );
    }

    #[test]
    fn a_compensated_or_cancelled_saga_leaves_no_live_redemption_nor_reservation() {
        for end in [SagaEnd::Compensated, SagaEnd::Cancelled] {
            let s = saga(1, end);
            let charged = ledger(
                vec![redemption(&s.receipt_no, AMOUNT, true)],
                vec![reservation(&s.external_id, false)],
            );
            assert_eq!(
                rules(&check(&charged, std::slice::from_ref(&s))),
                only(&s, "compensated but the member is still charged")
            );
            let booked = ledger(
                vec![redemption(&s.receipt_no, AMOUNT, false)],
                vec![reservation(&s.external_id, true)],
            );
            assert_eq!(
                rules(&check(&booked, std::slice::from_ref(&s))),
                only(&s, "compensated but a reservation is still live")
            );
        }
    }

    #[test]
    fn a_saga_waiting_for_an_operator_has_as_many_live_redemptions_as_live_reservations() {
        let s = saga(1, SagaEnd::NeedsOperator);
        let charged_not_booked = ledger(
            vec![redemption(&s.receipt_no, AMOUNT, true)],
            vec![reservation(&s.external_id, false)],
        );
        assert_eq!(
            rules(&check(&charged_not_booked, std::slice::from_ref(&s))),
            only(
                &s,
                "needs an operator with 1 live redemptions and 0 live reservations"
            )
        );
        let booked_not_charged = ledger(vec![], vec![reservation(&s.external_id, true)]);
        assert_eq!(
            rules(&check(&booked_not_charged, std::slice::from_ref(&s))),
            only(
                &s,
                "needs an operator with 0 live redemptions and 1 live reservations"
            )
        );
        // A running saga is between its steps: nothing to pair yet.
        let running = SagaKeys {
            end: SagaEnd::Unfinished,
            ..s
        };
        assert!(check(&charged_not_booked, &[running]).holds());
    }

    #[test]
    fn the_redemption_is_the_saga_members_and_for_the_sagas_credits() {
        let s = saga(1, SagaEnd::Confirmed);
        let (_, b) = confirmed_effects(&s);
        let mut wrong_member = ledger(vec![], vec![b.clone()]);
        wrong_member.memberson.members[1] =
            member(OTHER_MEMBER, vec![redemption(&s.receipt_no, AMOUNT, true)]);
        assert_eq!(
            rules(&check(&wrong_member, std::slice::from_ref(&s))),
            only(
                &s,
                &format!(
                    "receipt {} redeemed from {OTHER_MEMBER}, not from the saga's member {MEMBER}",
                    s.receipt_no
                )
            )
        );
        let wrong_amount = ledger(vec![redemption(&s.receipt_no, 15, true)], vec![b]);
        assert_eq!(
            rules(&check(&wrong_amount, std::slice::from_ref(&s))),
            only(
                &s,
                &format!(
                    "receipt {} redeemed 15 credits, not the saga's {AMOUNT}",
                    s.receipt_no
                )
            )
        );
    }

    #[test]
    fn the_reservation_is_at_the_sagas_venue_for_its_party_under_its_member() {
        let s = saga(1, SagaEnd::Confirmed);
        let (r, b) = confirmed_effects(&s);
        let res = b.reservation_id.clone();
        let cases = [
            (
                ReservationEntry {
                    venue_id: "como-uma-paro-bukhari".to_owned(),
                    ..b.clone()
                },
                format!(
                    "reservation {res} is at como-uma-paro-bukhari, not at the saga's venue {VENUE}"
                ),
            ),
            (
                ReservationEntry {
                    party_size: 4,
                    ..b.clone()
                },
                format!("reservation {res} is for 4, not for the saga's party of 2"),
            ),
            (
                ReservationEntry {
                    loyalty_id: Some(OTHER_MEMBER.to_owned()),
                    guest: None,
                    ..b.clone()
                },
                format!(
                    "reservation {res} is under member {OTHER_MEMBER}, not the saga's member {MEMBER}"
                ),
            ),
        ];
        for (reservation, rule) in cases {
            let ledger = ledger(vec![r.clone()], vec![reservation]);
            assert_eq!(
                rules(&check(&ledger, std::slice::from_ref(&s))),
                only(&s, &rule)
            );
        }
        // A reservation made without a loyalty id names no member to compare.
        let anonymous = ledger(
            vec![r],
            vec![ReservationEntry {
                loyalty_id: None,
                guest: None,
                ..b
            }],
        );
        assert!(check(&anonymous, &[s]).holds());
    }

    #[test]
    fn a_live_effect_of_no_listed_saga_breaks_the_invariant() {
        let listed = saga(1, SagaEnd::Confirmed);
        let unlisted = saga(2, SagaEnd::Confirmed);
        let (r1, b1) = confirmed_effects(&listed);
        let (r2, b2) = confirmed_effects(&unlisted);
        let ledger = ledger(
            vec![
                r1,
                r2,
                // Voided: no effect left.
                redemption("CS-00000000000000000000000000000009", AMOUNT, false),
                // Not a saga's receipt: not ours to judge.
                redemption("POS-1", 100, true),
            ],
            vec![b1, b2, reservation("saga-9", false)],
        );
        assert_eq!(
            rules(&check(&ledger, &[listed])),
            vec![
                format!(
                    "{}|live redemption {} ({AMOUNT} credits from {MEMBER}) belongs to no saga",
                    unlisted.saga_id, unlisted.receipt_no
                ),
                format!(
                    "{}|live reservation res-{} at {VENUE} belongs to no saga",
                    unlisted.saga_id, unlisted.external_id
                ),
            ]
        );
    }

    #[test]
    fn a_receipt_is_never_redeemed_twice_and_an_external_id_never_booked_twice() {
        let s = saga(1, SagaEnd::Compensated);
        let mut twice = ledger(vec![redemption(&s.receipt_no, AMOUNT, false)], vec![]);
        twice.memberson.members[0]
            .redemptions
            .push(redemption(&s.receipt_no, AMOUNT, false));
        assert_eq!(
            rules(&check(&twice, std::slice::from_ref(&s))),
            only(&s, &format!("receipt {} redeemed 2 times", s.receipt_no))
        );
        let booked_twice = ledger(
            vec![],
            vec![
                reservation(&s.external_id, false),
                reservation(&s.external_id, false),
            ],
        );
        assert_eq!(
            rules(&check(&booked_twice, std::slice::from_ref(&s))),
            only(&s, "2 reservations carry its external_id")
        );
    }

    #[test]
    fn live_holds_are_reported_and_one_a_finished_saga_knew_of_is_a_violation() {
        let running = saga(1, SagaEnd::Unfinished);
        let compensated = saga(2, SagaEnd::Compensated);
        let confirmed = saga(3, SagaEnd::Confirmed);
        let (r3, b3) = confirmed_effects(&confirmed);
        let mut ledger = ledger(vec![r3], vec![b3]);
        ledger.sevenrooms.holds = vec![
            hold("hold-1", HoldStatus::Held, at(5)),
            hold("hold-lost", HoldStatus::Held, at(9)),
            hold("hold-2", HoldStatus::Released, at(30)),
            hold("hold-3", HoldStatus::Booked, at(40)),
            hold("hold-old", HoldStatus::Expired, at(50)),
        ];
        let sagas = [running, compensated.clone(), confirmed.clone()];
        let report = check(&ledger, &sagas);
        assert!(report.holds(), "{:?}", report.violations);
        assert_eq!(
            report.live_holds,
            HoldReport {
                live: 2,
                latest_expiry: Some(at(9)),
                by_saga_known: 1,
            }
        );

        ledger.sevenrooms.holds[2].status = HoldStatus::Held;
        ledger.sevenrooms.holds[3].status = HoldStatus::Held;
        let report = check(&ledger, &sagas);
        let mut expected = only(&compensated, "finished but its hold is still held");
        expected.extend(only(&confirmed, "finished but its hold is still held"));
        expected.sort();
        assert_eq!(rules(&report), expected);
        assert_eq!(report.live_holds.live, 4);
        assert_eq!(report.live_holds.latest_expiry, Some(at(40)));
    }

    #[test]
    fn sagas_waiting_for_an_operator_are_listed_with_their_reasons() {
        let waiting = saga(1, SagaEnd::NeedsOperator);
        let silent = SagaKeys {
            needs_operator_reason: None,
            ..saga(2, SagaEnd::NeedsOperator)
        };
        let report = check(
            &ledger(vec![], vec![]),
            &[saga(3, SagaEnd::Confirmed), waiting.clone(), silent.clone()],
        );
        assert_eq!(
            report.needs_operator,
            vec![
                NeedsOperatorEntry {
                    saga_id: waiting.saga_id,
                    reason: "compensation_refused: past the cut-off".to_owned(),
                },
                NeedsOperatorEntry {
                    saga_id: silent.saga_id,
                    reason: "no reason recorded".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn check_money_invariant_is_the_reports_violations() {
        let s = saga(1, SagaEnd::Confirmed);
        let ledger = ledger(vec![], vec![]);
        assert_eq!(
            check_money_invariant(&ledger, std::slice::from_ref(&s)),
            check(&ledger, &[s]).violations
        );
    }

    #[test]
    fn saga_keys_come_from_the_engines_state() {
        let request = como_schemas::examples::booking_request(
            "req-1",
            NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        );
        let now = como_schemas::Timestamp::from_datetime(at(0));
        let mut state = como_engine::transition(
            &como_engine::como::current(),
            None,
            &como_engine::Input::Start {
                request: request.clone(),
            },
            now,
        )
        .unwrap()
        .state;
        let keys = SagaKeys::of(&state);
        assert_eq!(keys.end, SagaEnd::Unfinished);
        assert_eq!(keys.saga_id, request.saga_id().to_string());
        assert_eq!(keys.external_id, keys.saga_id);
        assert_eq!(
            keys.receipt_no,
            como_schemas::ReceiptNo::for_saga(request.saga_id()).to_string()
        );
        assert_eq!(keys.member_no, request.member_no.to_string());
        assert_eq!(
            (keys.amount, keys.venue_id.as_str(), keys.party_size),
            (1_200, request.venue_id.as_str(), 2)
        );
        assert_eq!(keys.needs_operator_reason, None);

        state.status = como_engine::SagaStatus::NeedsOperator {
            reason: como_schemas::events::NeedsOperatorReason::CompensationRefused,
            step: como_schemas::StepName::parse("book_experience").unwrap(),
            detail: "past the cut-off".to_owned(),
        };
        let keys = SagaKeys::of(&state);
        assert_eq!(keys.end, SagaEnd::NeedsOperator);
        assert_eq!(
            keys.needs_operator_reason.as_deref(),
            Some("compensation_refused: past the cut-off")
        );
    }
}
