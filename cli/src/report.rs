//! What a run ended with: counts by outcome, and the money invariant checked against the
//! simulators' ledgers.

use como_engine::{SagaState, StatusKind};
use como_ports::Backend;
use como_schemas::{ReceiptNo, SagaId, StepOutput};
use como_simulators::invariant::{SagaEnd, SagaKeys, Violation, check_money_invariant};
use como_simulators::ledger::Ledger;
use serde::Serialize;

/// The summary `up --exit-when-done` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub submitted: usize,
    pub rejected: u64,
    pub confirmed: usize,
    pub compensated: usize,
    pub cancelled: usize,
    pub needs_operator: usize,
    pub in_flight: usize,
    pub elapsed_ms: u128,
    pub sagas_per_second: f64,
    /// Checked against the simulators' ledgers.
    pub money_invariant_violations: Vec<Violation>,
}

/// The keys of one saga's downstream effects, and how it ended.
pub fn keys_of(state: &SagaState) -> SagaKeys {
    let end = match state.status.kind() {
        StatusKind::Confirmed => SagaEnd::Confirmed,
        StatusKind::Compensated => SagaEnd::Compensated,
        StatusKind::Cancelled => SagaEnd::Cancelled,
        _ => SagaEnd::Unfinished,
    };
    let hold_id = state.steps.iter().find_map(|s| match &s.output {
        Some(StepOutput::SlotHeld { hold_id }) => Some(hold_id.to_string()),
        _ => None,
    });
    SagaKeys {
        saga_id: state.saga_id.to_string(),
        member_no: state.request.member_no.to_string(),
        receipt_no: ReceiptNo::for_saga(state.saga_id).to_string(),
        external_id: state.saga_id.to_string(),
        hold_id,
        end,
    }
}

/// Count the outcomes of `sagas` and check them against `ledger`.
pub async fn summarise(
    ports: &Backend,
    sagas: &[SagaId],
    ledger: &Ledger,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        submitted: sagas.len(),
        ..Summary::default()
    };
    let mut keys = Vec::with_capacity(sagas.len());
    for id in sagas {
        let Some(stored) = ports.store.get(*id).await? else {
            continue;
        };
        match stored.value.status.kind() {
            StatusKind::Confirmed => summary.confirmed += 1,
            StatusKind::Compensated => summary.compensated += 1,
            StatusKind::Cancelled => summary.cancelled += 1,
            StatusKind::NeedsOperator => summary.needs_operator += 1,
            _ => summary.in_flight += 1,
        }
        keys.push(keys_of(&stored.value));
    }
    summary.money_invariant_violations = check_money_invariant(ledger, &keys);
    Ok(summary)
}
