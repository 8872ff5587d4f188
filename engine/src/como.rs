//! The Como booking saga, version 1, and the registry of every definition a saga may be pinned
//! to.
//!
//! | # | step            | worker     | action                   | compensation        |
//! |---|-----------------|------------|--------------------------|---------------------|
//! | 1 | check_credits   | CRM        | member ACTIVE, balance   | none (read only)    |
//! | 2 | hold_slot       | SevenRooms | hold the slot            | release the hold    |
//! | 3 | redeem_credits  | CRM        | redeem with `ReceiptNo`  | void the redemption |
//! | 4 | book_experience | SevenRooms | book, `external_id`      | cancel reservation  |
//! | 5 | confirm         | (local)    | publish BookingConfirmed | none                |

use como_schemas::{OperationKind, StepName};

use crate::definition::{
    CompensationDefinition, ErrorHandling, Handling, OnReconcileExhausted, RetryPolicy,
    SagaDefinition, StepDefinition,
};

pub const COMO_BOOKING: &str = "como_booking";

fn step_name(s: &str) -> StepName {
    StepName::parse(s).unwrap_or_else(|e| unreachable!("step names here are snake_case: {e}"))
}

/// Retries of a forward action: quick, a handful, within a minute.
fn action_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff_ms: 250,
        multiplier_percent: 200,
        max_backoff_ms: 8_000,
        jitter_percent: 25,
        max_attempts: 5,
        max_total_ms: 60_000,
    }
}

/// Retries of a compensation: patient, because giving up means a person must step in.
fn compensation_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff_ms: 500,
        multiplier_percent: 200,
        max_backoff_ms: 60_000,
        jitter_percent: 25,
        max_attempts: 12,
        max_total_ms: 30 * 60_000,
    }
}

const ATTEMPT_TIMEOUT_MS: u64 = 15_000;

/// Version 1 of the Como booking saga.
pub fn booking_v1() -> SagaDefinition {
    // A write whose outcome is unknown is looked up before anything else happens to it.
    let reconcile_writes = ErrorHandling {
        business: Handling::Compensate,
        retryable: Handling::Retry,
        unknown: Handling::Reconcile,
        timeout: Handling::Reconcile,
        // The compensations (void by ReceiptNo, cancel by external_id) cope with nothing to
        // undo, so compensating is safe even when the effect was never found.
        reconcile_exhausted: OnReconcileExhausted::Compensate,
    };
    // A read, or a hold that expires by itself: trying again is the reconciliation.
    let retry_all = ErrorHandling {
        business: Handling::Compensate,
        retryable: Handling::Retry,
        unknown: Handling::Retry,
        timeout: Handling::Retry,
        reconcile_exhausted: OnReconcileExhausted::Compensate,
    };
    let compensation = |operation| {
        Some(CompensationDefinition {
            operation,
            retry: compensation_retry(),
            timeout_ms: ATTEMPT_TIMEOUT_MS,
        })
    };
    SagaDefinition {
        name: COMO_BOOKING.into(),
        version: 1,
        deadline_ms: 15 * 60_000,
        compensation_deadline_ms: 2 * 60 * 60_000,
        reply_grace_ms: 5_000,
        // Ten minutes catches a downstream that finished a call long after we gave up on it;
        // a day catches one that replayed a backlog after an incident.
        audit_after_ms: vec![10 * 60_000, 24 * 60 * 60_000],
        steps: vec![
            StepDefinition {
                name: step_name("check_credits"),
                action: OperationKind::CheckCredits,
                compensation: None,
                reconcile: None,
                retry: action_retry(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                on_error: retry_all.clone(),
            },
            StepDefinition {
                name: step_name("hold_slot"),
                action: OperationKind::HoldSlot,
                compensation: compensation(OperationKind::ReleaseHold),
                // SevenRooms holds carry no key to look up; an orphan hold from an attempt
                // whose outcome was lost expires after its hold time.
                reconcile: None,
                retry: action_retry(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                on_error: retry_all,
            },
            StepDefinition {
                name: step_name("redeem_credits"),
                action: OperationKind::RedeemCredits,
                compensation: compensation(OperationKind::VoidRedemption),
                reconcile: Some(OperationKind::ReplayRedemption),
                retry: action_retry(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                on_error: reconcile_writes.clone(),
            },
            StepDefinition {
                name: step_name("book_experience"),
                action: OperationKind::BookExperience,
                compensation: compensation(OperationKind::CancelReservation),
                reconcile: Some(OperationKind::FindReservation),
                retry: action_retry(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                on_error: reconcile_writes,
            },
            StepDefinition {
                name: step_name("confirm"),
                action: OperationKind::PublishConfirmation,
                compensation: None,
                reconcile: None,
                retry: action_retry(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                on_error: ErrorHandling {
                    business: Handling::Compensate,
                    retryable: Handling::Retry,
                    unknown: Handling::Retry,
                    timeout: Handling::Retry,
                    reconcile_exhausted: OnReconcileExhausted::Compensate,
                },
            },
        ],
    }
}

/// The definition a saga is pinned to, by name and version; `None` if this build does not
/// know it (the runtime then leaves the saga alone and says so, rather than guessing).
pub fn lookup(name: &str, version: u32) -> Option<SagaDefinition> {
    match (name, version) {
        (COMO_BOOKING, 1) => Some(booking_v1()),
        _ => None,
    }
}

/// The definition new sagas start with.
pub fn current() -> SagaDefinition {
    booking_v1()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booking_v1_is_valid_and_registered() {
        let def = booking_v1();
        def.validate().expect("valid");
        assert_eq!(lookup(COMO_BOOKING, 1), Some(def));
        assert_eq!(lookup(COMO_BOOKING, 2), None);
        let def = booking_v1();
        let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "check_credits",
                "hold_slot",
                "redeem_credits",
                "book_experience",
                "confirm"
            ]
        );
    }

    #[test]
    fn validation_catches_broken_definitions() {
        let mut def = booking_v1();
        def.steps.swap(3, 4);
        assert!(def.validate().unwrap_err().problem.contains("last"));

        let mut def = booking_v1();
        def.steps[2].reconcile = None;
        assert!(
            def.validate()
                .unwrap_err()
                .problem
                .contains("no reconciliation")
        );

        let mut def = booking_v1();
        def.steps[1].name = def.steps[0].name.clone();
        assert!(def.validate().unwrap_err().problem.contains("twice"));

        let mut def = booking_v1();
        def.steps[1].compensation.as_mut().unwrap().operation = OperationKind::VoidRedemption;
        assert!(
            def.validate()
                .unwrap_err()
                .problem
                .contains("another worker")
        );
    }
}
