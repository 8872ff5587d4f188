//! What a run ended with: counts by outcome, and the money invariant checked against the
//! simulators' ledgers.

use como_engine::StatusKind;
use como_ports::Backend;
use como_schemas::SagaId;
use como_simulators::invariant::{HoldReport, NeedsOperatorEntry, SagaKeys, Violation, check};
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
    /// Checked against the simulators' ledgers as a whole.
    pub money_invariant_violations: Vec<Violation>,
    /// The sagas that stopped for an operator, with the reason.
    pub needs_operator_sagas: Vec<NeedsOperatorEntry>,
    /// Holds still live (each expires after its hold time).
    pub live_holds: HoldReport,
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
    let report = check(ledger, &keys);
    summary.money_invariant_violations = report.violations;
    summary.needs_operator_sagas = report.needs_operator;
    summary.live_holds = report.live_holds;
    Ok(summary)
}
