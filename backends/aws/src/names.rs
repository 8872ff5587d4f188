//! Every AWS resource name in one place. The bootstrap, the backend and the Terraform under
//! `infra/` (its `modules/data/names.tf`) all spell names through here (the Terraform by the
//! same rules, checked by `tests/names.rs`), so that they cannot drift apart.
//!
//! A deployment has a prefix (`como-saga` by default; tests use a unique one each); every name
//! is the prefix, a dash, and the resource's own name.

use como_ports::QueueName;

/// The prefix of a deployment whose settings name none.
pub const DEFAULT_PREFIX: &str = "como-saga";

/// The suffix of each queue's dead-letter queue.
pub const DLQ_SUFFIX: &str = "-dlq";

/// The one DynamoDB table's own name: sagas, their history, and idempotency records.
pub const TABLE: &str = "sagas";
/// The index of sagas by status, most recently updated first.
pub const STATUS_INDEX: &str = "by-status";
/// The sparse index of sagas with a timer (or an unfinished outbox), earliest first.
pub const DUE_INDEX: &str = "by-due";
/// The attribute DynamoDB's TTL reads (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The event bus's own name.
pub const BUS: &str = "bus";
/// The rule that routes `BookingRequested` events into the request queue.
pub const BOOKING_RULE: &str = "booking-requested";
/// The id of the rule's one target.
pub const BOOKING_TARGET_ID: &str = "requests-queue";
/// The `source` of booking requests submitted as events.
pub const BOOKING_SOURCE: &str = "como.booking";
/// The `detail-type` of booking requests submitted as events.
pub const BOOKING_DETAIL_TYPE: &str = "BookingRequested";
/// The `source` of the lifecycle events the backend publishes.
pub const EVENT_SOURCE: &str = "como.saga";

/// The secrets' own names, as the `SecretStore` port names them.
pub const MEMBERSON_TOKEN_SECRET: &str = "memberson-token";
pub const MEMBERSON_CREDENTIALS_SECRET: &str = "memberson-credentials";
pub const SEVENROOMS_CREDENTIALS_SECRET: &str = "sevenrooms-credentials";
pub const SECRETS: [&str; 3] = [
    MEMBERSON_TOKEN_SECRET,
    MEMBERSON_CREDENTIALS_SECRET,
    SEVENROOMS_CREDENTIALS_SECRET,
];

/// The roles that run as their own service, each with its own IAM role in Terraform.
pub const ROLES: [&str; 3] = ["orchestrator", "worker-crm", "worker-sevenrooms"];

/// The names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn of(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn queue(&self, queue: QueueName) -> String {
        self.of(queue.as_str())
    }

    pub fn dead_letter_queue(&self, queue: QueueName) -> String {
        format!("{}{DLQ_SUFFIX}", self.queue(queue))
    }

    pub fn table(&self) -> String {
        self.of(TABLE)
    }

    pub fn bus(&self) -> String {
        self.of(BUS)
    }

    pub fn booking_rule(&self) -> String {
        self.of(BOOKING_RULE)
    }

    /// Secrets Manager names use a slash, as its console groups them by path.
    pub fn secret(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("p");
        assert_eq!(n.queue(QueueName::Requests), "p-requests");
        assert_eq!(
            n.dead_letter_queue(QueueName::Commands(como_schemas::Worker::Crm)),
            "p-commands-crm-dlq"
        );
        assert_eq!(n.table(), "p-sagas");
        assert_eq!(n.bus(), "p-bus");
        assert_eq!(n.booking_rule(), "p-booking-requested");
        assert_eq!(n.secret(MEMBERSON_TOKEN_SECRET), "p/memberson-token");
    }
}
