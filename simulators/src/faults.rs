//! Fault injection: rules that make a simulator slow, failing, rate-limited, forgetful of tokens,
//! down for a window, or refusing on business grounds, decided per request from a seed so that a
//! run can be reproduced.
//!
//! Each request draws its own generator from `(seed, request sequence number)`, so the decisions
//! for the n-th request do not depend on locks or on what other requests drew: the same seed and
//! the same order of requests give the same faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One fault rule: what to inject, on which operations, how often and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Operation names the rule applies to (see [`crate::memberson::OPS`] and
    /// [`crate::sevenrooms::OPS`]); empty means every operation of the simulator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<String>,
    /// Chance, per matching request, that the rule fires.
    #[serde(default = "certain")]
    pub probability: f64,
    /// Fire at most this many times, then stay quiet (`None`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// The rule is active from this long after it was installed...
    #[serde(default)]
    pub after_ms: u64,
    /// ...for this long (`None`: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
}

fn certain() -> f64 {
    1.0
}

/// What a rule injects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the answer by `fixed_ms` plus a uniform random `0..=jitter_ms`.
    Latency {
        fixed_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Hold the request for `ms` (meant to be past the client's timeout), then process it as
    /// usual: the effect lands late, after the client has given up.
    Hang {
        #[serde(default = "default_hang_ms")]
        ms: u64,
    },
    /// Answer with this 5xx status without doing anything.
    ServerError {
        #[serde(default = "default_server_error")]
        status: u16,
    },
    /// Answer 429 with `Retry-After: retry_after_secs` without doing anything.
    RateLimited {
        #[serde(default = "default_retry_after")]
        retry_after_secs: u64,
    },
    /// Apply the effect, then fail: with `status` set, answer that 5xx; without it, lose the
    /// response (hold the connection for `lost_ms`, past the client's timeout, then answer 504).
    CommitThenFail {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default = "default_hang_ms")]
        lost_ms: u64,
    },
    /// Treat the presented token as expired: revoke it and answer 401.
    TokenExpiry,
    /// Every matching request fails with `status` (use with a window: an outage).
    Outage {
        #[serde(default = "default_outage_status")]
        status: u16,
    },
    /// Refuse on business grounds with this code (see each simulator's `REFUSALS`).
    Refuse { code: String },
    /// A gateway gives up at once while the server carries on: answer `status` (504 by
    /// default) straight away, and apply the effect `ms` after the call arrived, whatever the
    /// client does meanwhile. On a write (see each simulator's `WRITE_OPS`); on a read it is a
    /// plain failure with `status`.
    Late {
        #[serde(default = "default_late_ms")]
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

fn default_hang_ms() -> u64 {
    30_000
}
fn default_late_ms() -> u64 {
    8_000
}
fn default_server_error() -> u16 {
    500
}
fn default_retry_after() -> u64 {
    1
}
fn default_outage_status() -> u16 {
    503
}

impl FaultKind {
    const NAMES: [&'static str; 9] = [
        "latency",
        "hang",
        "server_error",
        "rate_limited",
        "commit_then_fail",
        "token_expiry",
        "outage",
        "refuse",
        "late",
    ];

    /// The kind's name, as in the rules' `kind` field.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            FaultKind::Latency { .. } => 0,
            FaultKind::Hang { .. } => 1,
            FaultKind::ServerError { .. } => 2,
            FaultKind::RateLimited { .. } => 3,
            FaultKind::CommitThenFail { .. } => 4,
            FaultKind::TokenExpiry => 5,
            FaultKind::Outage { .. } => 6,
            FaultKind::Refuse { .. } => 7,
            FaultKind::Late { .. } => 8,
        }
    }

    /// Latency and hangs add delay and let later rules decide the answer; the others decide it.
    fn is_delay(&self) -> bool {
        matches!(self, FaultKind::Latency { .. } | FaultKind::Hang { .. })
    }
}

impl FaultRule {
    /// A rule that always fires on every operation, for ever.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            ops: Vec::new(),
            probability: 1.0,
            times: None,
            after_ms: 0,
            for_ms: None,
        }
    }

    /// Restricts the rule to these operations.
    pub fn on<I, S>(mut self, ops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ops = ops.into_iter().map(Into::into).collect();
        self
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Active from `after` after installation, for `length`.
    pub fn window(mut self, after: Duration, length: Duration) -> Self {
        self.after_ms = duration_ms(after);
        self.for_ms = Some(duration_ms(length));
        self
    }

    /// An outage: every operation answers 503 from now for `length`.
    pub fn outage(length: Duration) -> Self {
        Self::new(FaultKind::Outage { status: 503 }).window(Duration::ZERO, length)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A rule the fault set refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("unknown operation {op:?}; this simulator has {known:?}")]
    UnknownOp {
        op: String,
        known: &'static [&'static str],
    },
    #[error("unknown refusal code {code:?}; this simulator refuses with {known:?}")]
    UnknownRefusal {
        code: String,
        known: &'static [&'static str],
    },
    #[error("probability {0} is not within 0..=1")]
    Probability(f64),
    #[error("status {0} is not a 5xx status")]
    Status(u16),
}

/// What a request must suffer, decided once when it arrives.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub delay: Duration,
    pub action: Action,
    /// The kinds of the rules that fired for this request, in rule order (for the request log).
    pub fired: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Action {
    #[default]
    Proceed,
    /// Answer `status` (with `Retry-After` when set) without doing anything.
    Fail {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    ExpireToken,
    /// Do the work, then answer `status` or, without one, lose the answer for `lost`.
    CommitThenFail {
        status: Option<u16>,
        lost: Duration,
    },
    /// Answer `status` at once; do the work `after` the call arrived, in the background.
    Late {
        status: u16,
        after: Duration,
    },
    Refuse(String),
}

struct ActiveRule {
    rule: FaultRule,
    installed: Instant,
    fired: AtomicU64,
}

impl ActiveRule {
    fn applies(&self, op: &str, now: Instant) -> bool {
        if !self.rule.ops.is_empty() && !self.rule.ops.iter().any(|o| o == op) {
            return false;
        }
        let elapsed = duration_ms(now.saturating_duration_since(self.installed));
        if elapsed < self.rule.after_ms {
            return false;
        }
        match self.rule.for_ms {
            Some(length) => elapsed < self.rule.after_ms.saturating_add(length),
            None => true,
        }
    }

    /// Counts one firing unless the rule has used up its `times`.
    fn take(&self) -> bool {
        match self.rule.times {
            None => {
                self.fired.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(limit) => self
                .fired
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok(),
        }
    }
}

/// A rule as installed, with how often it has fired (for `GET /_sim/faults`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstalledRule {
    #[serde(flatten)]
    pub rule: FaultRule,
    pub fired: u64,
}

/// The fault rules of one simulator and the seeded source of its random decisions.
pub(crate) struct FaultSet {
    seed: u64,
    seq: AtomicU64,
    // Swapped whole on every change; requests clone the `Arc` under a short read lock and never
    // hold the lock while they wait.
    rules: RwLock<Arc<Vec<Arc<ActiveRule>>>>,
    ops: &'static [&'static str],
    refusals: &'static [&'static str],
    fired: [AtomicU64; 9],
}

impl FaultSet {
    pub fn new(seed: u64, ops: &'static [&'static str], refusals: &'static [&'static str]) -> Self {
        Self {
            seed,
            seq: AtomicU64::new(0),
            rules: RwLock::new(Arc::new(Vec::new())),
            ops,
            refusals,
            fired: Default::default(),
        }
    }

    fn validate(&self, rule: &FaultRule) -> Result<(), FaultError> {
        for op in &rule.ops {
            if !self.ops.contains(&op.as_str()) {
                return Err(FaultError::UnknownOp {
                    op: op.clone(),
                    known: self.ops,
                });
            }
        }
        if !(0.0..=1.0).contains(&rule.probability) {
            return Err(FaultError::Probability(rule.probability));
        }
        let status = match &rule.kind {
            FaultKind::ServerError { status } | FaultKind::Outage { status } => Some(*status),
            FaultKind::CommitThenFail { status, .. } | FaultKind::Late { status, .. } => *status,
            FaultKind::Refuse { code } if !self.refusals.contains(&code.as_str()) => {
                return Err(FaultError::UnknownRefusal {
                    code: code.clone(),
                    known: self.refusals,
                });
            }
            _ => None,
        };
        match status {
            Some(s) if !(500..600).contains(&s) => Err(FaultError::Status(s)),
            _ => Ok(()),
        }
    }

    /// Replaces every rule.
    pub fn set(&self, rules: Vec<FaultRule>) -> Result<(), FaultError> {
        for rule in &rules {
            self.validate(rule)?;
        }
        let now = Instant::now();
        let active = rules
            .into_iter()
            .map(|rule| {
                Arc::new(ActiveRule {
                    rule,
                    installed: now,
                    fired: AtomicU64::new(0),
                })
            })
            .collect();
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
        Ok(())
    }

    /// Adds rules after the existing ones, keeping those and their counts.
    pub fn add(&self, rules: Vec<FaultRule>) -> Result<(), FaultError> {
        for rule in &rules {
            self.validate(rule)?;
        }
        let now = Instant::now();
        let mut guard = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<_> = guard.iter().cloned().collect();
        next.extend(rules.into_iter().map(|rule| {
            Arc::new(ActiveRule {
                rule,
                installed: now,
                fired: AtomicU64::new(0),
            })
        }));
        *guard = Arc::new(next);
        Ok(())
    }

    pub fn installed(&self) -> Vec<InstalledRule> {
        self.current()
            .iter()
            .map(|r| InstalledRule {
                rule: r.rule.clone(),
                fired: r.fired.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How many times each kind of fault has fired since start-up.
    pub fn fired_by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        FaultKind::NAMES
            .iter()
            .zip(&self.fired)
            .map(|(name, n)| ((*name).to_owned(), n.load(Ordering::Relaxed)))
            .collect()
    }

    fn current(&self) -> Arc<Vec<Arc<ActiveRule>>> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decides what the next request for `op` suffers.
    pub fn plan(&self, op: &str) -> Plan {
        let rules = self.current();
        let mut plan = Plan::default();
        if rules.is_empty() {
            return plan;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rng = SmallRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let now = Instant::now();
        for active in rules.iter() {
            let kind = &active.rule.kind;
            if !active.applies(op, now) || (!kind.is_delay() && plan.action != Action::Proceed) {
                continue;
            }
            if active.rule.probability < 1.0 && rng.random::<f64>() >= active.rule.probability {
                continue;
            }
            if !active.take() {
                continue;
            }
            self.fired[kind.index()].fetch_add(1, Ordering::Relaxed);
            plan.fired.push(kind.name());
            match kind {
                FaultKind::Latency {
                    fixed_ms,
                    jitter_ms,
                } => {
                    let jitter = if *jitter_ms > 0 {
                        rng.random_range(0..=*jitter_ms)
                    } else {
                        0
                    };
                    plan.delay += Duration::from_millis(fixed_ms.saturating_add(jitter));
                }
                FaultKind::Hang { ms } => plan.delay += Duration::from_millis(*ms),
                FaultKind::ServerError { status } | FaultKind::Outage { status } => {
                    plan.action = Action::Fail {
                        status: *status,
                        retry_after_secs: None,
                    }
                }
                FaultKind::RateLimited { retry_after_secs } => {
                    plan.action = Action::Fail {
                        status: 429,
                        retry_after_secs: Some(*retry_after_secs),
                    }
                }
                FaultKind::CommitThenFail { status, lost_ms } => {
                    plan.action = Action::CommitThenFail {
                        status: *status,
                        lost: Duration::from_millis(*lost_ms),
                    }
                }
                FaultKind::TokenExpiry => plan.action = Action::ExpireToken,
                FaultKind::Refuse { code } => plan.action = Action::Refuse(code.clone()),
                FaultKind::Late { ms, status } => {
                    plan.action = Action::Late {
                        status: status.unwrap_or(504),
                        after: Duration::from_millis(*ms),
                    }
                }
            }
        }
        plan
    }
}

/// Fault rules for both simulators, as read from a file at start-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultsFile {
    #[serde(default)]
    pub memberson: Vec<FaultRule>,
    #[serde(default)]
    pub sevenrooms: Vec<FaultRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &[&str] = &["read", "write"];
    const REFUSALS: &[&str] = &["NOPE"];

    fn decisions(seed: u64) -> Vec<Plan> {
        let set = FaultSet::new(seed, OPS, REFUSALS);
        set.set(vec![
            FaultRule::new(FaultKind::ServerError { status: 502 }).probability(0.3),
            FaultRule::new(FaultKind::Latency {
                fixed_ms: 1,
                jitter_ms: 50,
            }),
        ])
        .unwrap();
        (0..200).map(|_| set.plan("read")).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let a = decisions(7);
        assert_eq!(a, decisions(7));
        assert_ne!(a, decisions(8));
        let failures = a.iter().filter(|p| p.action != Action::Proceed).count();
        assert!((30..=90).contains(&failures), "{failures} of 200 at p=0.3");
    }

    #[test]
    fn times_limits_firings_and_ops_limit_the_target() {
        let set = FaultSet::new(1, OPS, REFUSALS);
        set.set(vec![
            FaultRule::new(FaultKind::TokenExpiry)
                .on(["write"])
                .times(2),
        ])
        .unwrap();
        assert_eq!(set.plan("read").action, Action::Proceed);
        assert_eq!(set.plan("write").action, Action::ExpireToken);
        assert_eq!(set.plan("write").action, Action::ExpireToken);
        assert_eq!(set.plan("write").action, Action::Proceed);
        assert_eq!(set.installed()[0].fired, 2);
        assert_eq!(set.fired_by_kind()["token_expiry"], 2);
    }

    #[test]
    fn a_window_bounds_an_outage_in_time() {
        let set = FaultSet::new(1, OPS, REFUSALS);
        set.set(vec![FaultRule::outage(Duration::from_millis(300))])
            .unwrap();
        assert!(matches!(
            set.plan("read").action,
            Action::Fail { status: 503, .. }
        ));
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(set.plan("read").action, Action::Proceed);
    }

    #[test]
    fn invalid_rules_are_refused() {
        let set = FaultSet::new(1, OPS, REFUSALS);
        assert!(matches!(
            set.set(vec![FaultRule::new(FaultKind::TokenExpiry).on(["delete"])]),
            Err(FaultError::UnknownOp { .. })
        ));
        assert!(matches!(
            set.add(vec![FaultRule::new(FaultKind::Refuse { code: "X".into() })]),
            Err(FaultError::UnknownRefusal { .. })
        ));
        assert_eq!(
            set.add(vec![FaultRule::new(FaultKind::ServerError { status: 404 })]),
            Err(FaultError::Status(404))
        );
    }

    #[test]
    fn rules_read_from_json_with_defaults() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"kind":"commit_then_fail","status":500,"ops":["write"],"times":5}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            FaultRule::new(FaultKind::CommitThenFail {
                status: Some(500),
                lost_ms: 30_000
            })
            .on(["write"])
            .times(5)
        );
        let late: FaultRule = serde_json::from_str(r#"{"kind":"late","ops":["write"]}"#).unwrap();
        assert_eq!(
            late,
            FaultRule::new(FaultKind::Late {
                ms: 8_000,
                status: None
            })
            .on(["write"])
        );
    }

    #[test]
    fn a_late_fault_decides_the_answer_and_is_counted() {
        let set = FaultSet::new(1, OPS, REFUSALS);
        set.set(vec![
            FaultRule::new(FaultKind::Late {
                ms: 250,
                status: None,
            })
            .times(1),
        ])
        .unwrap();
        assert_eq!(
            set.plan("write").action,
            Action::Late {
                status: 504,
                after: Duration::from_millis(250)
            }
        );
        assert_eq!(set.plan("write").action, Action::Proceed);
        assert_eq!(set.fired_by_kind()["late"], 1);
        assert_eq!(
            set.add(vec![FaultRule::new(FaultKind::Late {
                ms: 1,
                status: Some(200)
            })]),
            Err(FaultError::Status(200))
        );
    }
}
