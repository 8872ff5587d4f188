//! The simulators' fault rules, as `PUT`/`POST /_sim/faults` read them (one rule or a list) and
//! as the `--faults` file is read (`FaultsFile`). An accepted rule set round-trips; installed on a
//! running simulator it is refused exactly when a rule names an unknown operation or refusal, a
//! probability outside 0..=1 or a status outside 5xx, and once accepted the simulator lists
//! exactly those rules.
#![no_main]

use std::sync::OnceLock;

use como_simulators::{
    Downstream, FaultKind, FaultRule, FaultsFile, SimConfig, SimHandle, Simulators, memberson,
    sevenrooms,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// What the admin route accepts (`common::parse_rules`).
#[derive(Deserialize)]
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

fn install(downstream: Downstream, rules: &[FaultRule], ops: &[&str], refusals: &[&str]) {
    let sims = simulators();
    let result = sims.set_faults(downstream, rules.to_vec());
    let expected = rules.iter().all(|r| valid(r, ops, refusals));
    assert_eq!(result.is_ok(), expected, "{result:?}");
    if result.is_ok() {
        let installed: Vec<FaultRule> = sims
            .faults(downstream)
            .into_iter()
            .map(|i| i.rule)
            .collect();
        assert_eq!(installed, rules);
    }
    sims.clear_faults(downstream);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = serde_json::from_slice::<OneOrMany>(data) {
        let rules = match parsed {
            OneOrMany::Many(rules) => rules,
            OneOrMany::One(rule) => vec![rule],
        };
        let text = serde_json::to_vec(&rules).unwrap();
        let back: Vec<FaultRule> = serde_json::from_slice(&text).expect("rules read back");
        assert_eq!(back, rules);
        install(
            Downstream::Memberson,
            &rules,
            memberson::OPS,
            memberson::REFUSALS,
        );
        install(
            Downstream::SevenRooms,
            &rules,
            sevenrooms::OPS,
            sevenrooms::REFUSALS,
        );
    }
    if let Ok(file) = serde_json::from_slice::<FaultsFile>(data) {
        let text = serde_json::to_vec(&file).unwrap();
        let back: FaultsFile = serde_json::from_slice(&text).expect("a faults file reads back");
        assert_eq!(back, file);
    }
});
