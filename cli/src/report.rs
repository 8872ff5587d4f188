//! What a run ended with: counts by outcome, and the money invariant checked against the
//! simulators' ledgers.

use como_engine::StatusKind;
use como_ports::Backend;
use como_schemas::SagaId;
use como_simulators::invariant::{SagaKeys, Violation, check_money_invariant};
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
        keys.push(SagaKeys::of(&stored.value));
    }
    summary.money_invariant_violations = check_money_invariant(ledger, &keys);
    Ok(summary)
}
