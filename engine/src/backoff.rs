//! Retry delays: exponential, capped, with jitter that is deterministic.
//!
//! The jitter spreads retries of many sagas apart (so a recovering downstream is not hit by a
//! thundering herd) but is derived from the saga, step and attempt instead of a random number
//! generator: the engine stays a pure function, and a replayed transition decides the same.

use como_schemas::{CommandKind, SagaId};

use crate::definition::RetryPolicy;

/// The delay before attempt `next_attempt` (2 for the first retry).
pub fn delay_ms(
    policy: &RetryPolicy,
    saga: SagaId,
    step: &str,
    kind: CommandKind,
    next_attempt: u32,
) -> u64 {
    let retries_before = next_attempt.saturating_sub(2);
    let mut base = policy.initial_backoff_ms;
    for _ in 0..retries_before {
        base = base.saturating_mul(u64::from(policy.multiplier_percent)) / 100;
        if base >= policy.max_backoff_ms {
            break;
        }
    }
    let base = base.min(policy.max_backoff_ms);
    let jitter_span = base * u64::from(policy.jitter_percent) / 100;
    if jitter_span == 0 {
        return base;
    }
    // Uniform in [base - span, base + span].
    let h = unit_hash(saga, step, kind, next_attempt);
    (base - jitter_span) + h % (2 * jitter_span + 1)
}

/// A well-mixed 64-bit hash of the attempt's identity (FNV-1a, then a SplitMix64 finaliser).
fn unit_hash(saga: SagaId, step: &str, kind: CommandKind, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(saga.as_uuid().as_bytes());
    eat(step.as_bytes());
    eat(kind.as_str().as_bytes());
    eat(&attempt.to_le_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff_ms: 100,
            multiplier_percent: 200,
            max_backoff_ms: 1_000,
            jitter_percent: 20,
            max_attempts: 10,
            max_total_ms: 60_000,
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_and_is_capped() {
        let saga = SagaId::from_uuid(Uuid::from_u128(7));
        for (attempt, base) in [
            (2u32, 100u64),
            (3, 200),
            (4, 400),
            (5, 800),
            (6, 1_000),
            (9, 1_000),
        ] {
            let d = delay_ms(&policy(), saga, "hold_slot", CommandKind::Action, attempt);
            assert!(
                d >= base * 80 / 100 && d <= base * 120 / 100,
                "attempt {attempt}: {d}"
            );
        }
    }

    #[test]
    fn is_deterministic_and_spreads_sagas_apart() {
        let delays: Vec<u64> = (0..50u128)
            .map(|i| {
                delay_ms(
                    &policy(),
                    SagaId::from_uuid(Uuid::from_u128(i)),
                    "s",
                    CommandKind::Action,
                    3,
                )
            })
            .collect();
        let again: Vec<u64> = (0..50u128)
            .map(|i| {
                delay_ms(
                    &policy(),
                    SagaId::from_uuid(Uuid::from_u128(i)),
                    "s",
                    CommandKind::Action,
                    3,
                )
            })
            .collect();
        assert_eq!(delays, again);
        let mut distinct = delays.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 25,
            "jitter spreads 50 sagas over {} values",
            distinct.len()
        );
    }
}
