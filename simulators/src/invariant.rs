//! The money invariant, checked against the simulators' own ledgers rather than against the
//! orchestrator's view: every confirmed saga has exactly one live redemption and one live
//! reservation; every compensated or cancelled saga has no live redemption, no live
//! reservation and no live hold it knew of; no receipt was ever redeemed twice.
//!
//! Anyone can run it from outside: it needs only the ledger (`GET /_sim/ledger`) and, per saga,
//! its outcome and its keys (the `ReceiptNo` and `external_id` derived from the saga id).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{HoldStatus, Ledger, RedemptionEntry, RedemptionStatus, ReservationEntry};

/// How a saga ended, as the orchestrator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaEnd {
    Confirmed,
    Compensated,
    Cancelled,
    /// Still running or waiting for an operator: nothing is asserted of it but the
    /// never-twice rule.
    Unfinished,
}

/// One saga and the keys its effects carry downstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaKeys {
    pub saga_id: String,
    pub member_no: String,
    pub receipt_no: String,
    pub external_id: String,
    /// The hold the saga learnt of, if any.
    pub hold_id: Option<String>,
    pub end: SagaEnd,
}

impl SagaKeys {
    /// The keys of a saga's effects as the engine derives them: the `ReceiptNo` and
    /// `external_id` from the saga id, the hold from the hold step's output; and how it ended.
    pub fn of(state: &como_engine::SagaState) -> SagaKeys {
        use como_engine::StatusKind;
        let end = match state.status.kind() {
            StatusKind::Confirmed => SagaEnd::Confirmed,
            StatusKind::Compensated => SagaEnd::Compensated,
            StatusKind::Cancelled => SagaEnd::Cancelled,
            _ => SagaEnd::Unfinished,
        };
        let hold_id = state.steps.iter().find_map(|s| match &s.output {
            Some(como_schemas::StepOutput::SlotHeld { hold_id }) => Some(hold_id.to_string()),
            _ => None,
        });
        SagaKeys {
            saga_id: state.saga_id.to_string(),
            member_no: state.request.member_no.to_string(),
            receipt_no: como_schemas::ReceiptNo::for_saga(state.saga_id).to_string(),
            external_id: state.saga_id.to_string(),
            hold_id,
            end,
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub saga_id: String,
    pub rule: String,
}

/// Check every saga against the ledger.
pub fn check_money_invariant(ledger: &Ledger, sagas: &[SagaKeys]) -> Vec<Violation> {
    // Indexes first: a chaos run checks tens of thousands of sagas.
    let mut by_receipt: HashMap<(&str, &str), Vec<&RedemptionEntry>> = HashMap::new();
    for m in &ledger.memberson.members {
        for r in &m.redemptions {
            by_receipt
                .entry((m.member_no.as_str(), r.receipt_no.as_str()))
                .or_default()
                .push(r);
        }
    }
    let mut by_external_id: HashMap<&str, Vec<&ReservationEntry>> = HashMap::new();
    for r in &ledger.sevenrooms.reservations {
        if let Some(id) = &r.external_id {
            by_external_id.entry(id.as_str()).or_default().push(r);
        }
    }
    let mut violations = Vec::new();
    let mut flag = |saga: &SagaKeys, rule: String| {
        violations.push(Violation {
            saga_id: saga.saga_id.clone(),
            rule,
        })
    };
    for saga in sagas {
        let none = Vec::new();
        let redemptions = by_receipt
            .get(&(saga.member_no.as_str(), saga.receipt_no.as_str()))
            .unwrap_or(&none);
        if redemptions.len() > 1 {
            flag(
                saga,
                format!(
                    "receipt {} redeemed {} times",
                    saga.receipt_no,
                    redemptions.len()
                ),
            );
        }
        let live_redemptions = redemptions
            .iter()
            .filter(|r| r.status == RedemptionStatus::Redeemed)
            .count();
        let no_reservations = Vec::new();
        let reservations = by_external_id
            .get(saga.external_id.as_str())
            .unwrap_or(&no_reservations);
        let live_reservations = reservations.iter().filter(|r| r.is_live()).count();
        match saga.end {
            SagaEnd::Confirmed => {
                if live_redemptions != 1 {
                    flag(
                        saga,
                        format!("confirmed with {live_redemptions} live redemptions"),
                    );
                }
                if live_reservations != 1 {
                    flag(
                        saga,
                        format!("confirmed with {live_reservations} live reservations"),
                    );
                }
            }
            SagaEnd::Compensated | SagaEnd::Cancelled => {
                if live_redemptions != 0 {
                    flag(saga, "compensated but the member is still charged".into());
                }
                if live_reservations != 0 {
                    flag(saga, "compensated but a reservation is still live".into());
                }
                let hold = saga
                    .hold_id
                    .as_deref()
                    .and_then(|h| ledger.sevenrooms.hold(h));
                if hold.is_some_and(|h| h.status == HoldStatus::Held) {
                    flag(saga, "compensated but its hold is still held".into());
                }
            }
            SagaEnd::Unfinished => {}
        }
        if reservations.len() > 1 {
            flag(
                saga,
                format!("{} reservations carry its external_id", reservations.len()),
            );
        }
    }
    violations
}
