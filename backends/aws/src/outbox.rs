//! The outbox: the effects of a saga write (commands to send, events to publish, history to
//! append), kept in the saga item by the same conditional write that stores the new state,
//! because a DynamoDB write and an SQS send cannot commit together.
//!
//! After the write, the effects are carried out in this order: events, sends, then the
//! history item of the write's version, which is also the outbox's "done" marker (so marking
//! it done costs no extra write). A reader knows the outbox of version `v` is pending when the
//! saga item holds it and no history item `v` exists. Then:
//! - the next write of the saga carries the pending effects forward in its own outbox, so
//!   they are never overwritten undelivered (and go out again: commands are idempotent
//!   downstream, events carry ids, history items are keyed by version);
//! - a saga that may not be written again soon (finished, or waiting longer than the grace)
//!   is indexed as due at the write plus `outbox_grace`; the timer sweep's `due` re-sends a
//!   pending outbox it finds there, and the delivering writer clears that entry when done.

use std::collections::BTreeMap;

use como_engine::HistoryEntry;
use como_ports::{Effects, OutgoingMessage, QueueName};
use como_schemas::SagaEvent;
use serde::{Deserialize, Serialize};

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSend {
    pub queue: QueueName,
    pub body: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one write (and the undelivered writes before it) must still carry out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// The version whose write this outbox belongs to; history item `version` marks it done.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<PendingSend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SagaEvent>,
    /// History entries by the version that appended them (earlier, carried-forward versions
    /// first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<(u64, Vec<HistoryEntry>)>,
}

impl Outbox {
    /// The outbox of a write at `version`, or `None` when the write has no effects to carry
    /// out (the acknowledgement is not kept: a crash before it redelivers the input, which
    /// then changes nothing and is acknowledged).
    pub fn of(version: u64, effects: &Effects) -> Option<Outbox> {
        if effects.sends.is_empty() && effects.events.is_empty() && effects.history.is_empty() {
            return None;
        }
        Some(Outbox {
            version,
            sends: effects
                .sends
                .iter()
                .map(|(queue, m)| PendingSend {
                    queue: *queue,
                    body: m.body.clone(),
                    delay_ms: u64::try_from(m.delay.as_millis()).unwrap_or(u64::MAX),
                    attributes: m.attributes.clone(),
                })
                .collect(),
            events: effects.events.clone(),
            history: vec![(version, effects.history.clone())],
        })
    }

    /// This outbox with an earlier, undelivered one carried forward (its effects first).
    pub fn after(self, earlier: Option<Outbox>) -> Outbox {
        let Some(mut e) = earlier else { return self };
        e.version = self.version;
        e.sends.extend(self.sends);
        e.events.extend(self.events);
        e.history.extend(self.history);
        e
    }

    /// A carried-forward outbox with nothing of its own is still marked by `version`.
    pub fn with_marker(mut self) -> Outbox {
        if !self.history.iter().any(|(v, _)| *v == self.version) {
            self.history.push((self.version, Vec::new()));
        }
        self
    }

    pub fn sends_by_queue(&self) -> BTreeMap<QueueName, Vec<OutgoingMessage>> {
        let mut by_queue: BTreeMap<QueueName, Vec<OutgoingMessage>> = BTreeMap::new();
        for s in &self.sends {
            by_queue.entry(s.queue).or_default().push(OutgoingMessage {
                body: s.body.clone(),
                delay: std::time::Duration::from_millis(s.delay_ms),
                attributes: s.attributes.clone(),
            });
        }
        by_queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrying_forward_keeps_the_earlier_effects_first_and_the_new_marker() {
        let effects = |body: &str| Effects {
            sends: vec![(QueueName::Replies, OutgoingMessage::new(body.into()))],
            ..Effects::default()
        };
        let first = Outbox::of(2, &effects("a")).unwrap();
        let second = Outbox::of(3, &effects("b")).unwrap().after(Some(first));
        assert_eq!(second.version, 3);
        let bodies: Vec<&str> = second.sends.iter().map(|s| s.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b"]);
        assert_eq!(
            second.history.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(Outbox::of(4, &Effects::default()).is_none());
    }
}
