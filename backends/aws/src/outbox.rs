//! The outbox: the effects of a saga write that go to other services (commands to send,
//! events to publish), kept in the saga item by the same conditional write that stores the new
//! state, because a DynamoDB write and an SQS send cannot commit together.
//!
//! After the write they are carried out in this order: events, then sends. Then:
//! - an outbox of exactly one command is proven delivered by the reply to that command, which
//!   is what brings the saga's next write (`Effects::answers`): nothing more is written for it;
//! - any other outbox (events only, as when a saga finishes; several commands; commands
//!   carried forward) is marked delivered in the item (`m`, one small update) right after;
//! - a write finds the previous outbox pending when it is neither proven nor marked, and
//!   carries it forward in its own outbox, so it is never overwritten undelivered (it goes out
//!   again: commands are idempotent downstream, events carry ids);
//! - a live saga always has a timer of its own, whose write does that carrying; a saga
//!   without one (finished, or stopped for an operator) is indexed as due at the write plus
//!   `outbox_grace`, and the timer sweep's `due` re-sends a pending outbox it finds there;
//! - the sweep never re-sends a single command while the saga has a timer (its reply may
//!   simply not have come yet: the downstream is slow, or down and the command waits in its
//!   queue; a hold sent twice is a second hold), nor any outbox younger than `outbox_grace`
//!   (its writer may be marking it at that moment). A sweep can meet both: a write leaves an
//!   earlier index entry that is still ahead where it is, and another orchestrator's sweep
//!   finds it before the saga's own timer.
//!
//! History is not part of the outbox: it stays in the saga item (see `store`) until there is
//! enough of it to go to a history item of its own.

use std::collections::BTreeMap;

use como_ports::{Effects, OutgoingMessage, QueueName};
use como_schemas::SagaEvent;
use serde::{Deserialize, Serialize};

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSend {
    pub queue: QueueName,
    /// Kept as JSON in the outbox's JSON when it is JSON (a command), not as an escaped
    /// string: the saga item is deflated, and a command then shares its text with the state.
    #[serde(with = "json_or_text")]
    pub body: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

mod json_or_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(body: &str, ser: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(body) {
            // A JSON string stays text (read back, it would come out unquoted), and so does a
            // body shaped like the wrapper itself.
            Ok(raw)
                if !body.trim_start().starts_with('"')
                    && serde_json::from_str::<Text<String>>(body).is_err() =>
            {
                raw.serialize(ser)
            }
            _ => Text { text: body }.serialize(ser),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
        let raw = Box::<RawValue>::deserialize(de)?;
        match serde_json::from_str::<Text<String>>(raw.get()) {
            Ok(t) => Ok(t.text),
            Err(_) => Ok(raw.get().to_owned()),
        }
    }

    /// A body that is not JSON: `{"text": ...}`, which no JSON body of ours looks like.
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Text<T> {
        text: T,
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// What one write (and the undelivered writes before it) must still carry out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// The version whose write this outbox belongs to.
    pub version: u64,
    /// When that write was made (ms since the epoch; 0 in items written before it was kept):
    /// the sweep leaves an outbox younger than the grace to its writer, which may still be
    /// carrying it out.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<PendingSend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SagaEvent>,
}

impl Outbox {
    /// The outbox of a write at `version`, or `None` when the write has nothing to send or
    /// publish (the acknowledgement is not kept: a crash before it redelivers the input, which
    /// then changes nothing and is acknowledged).
    pub fn of(version: u64, at: i64, effects: &Effects) -> Option<Outbox> {
        if effects.sends.is_empty() && effects.events.is_empty() {
            return None;
        }
        Some(Outbox {
            version,
            at,
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
        })
    }

    /// This outbox with an earlier, undelivered one carried forward (its effects first).
    pub fn after(self, earlier: Option<Outbox>) -> Outbox {
        let Some(mut e) = earlier else { return self };
        e.version = self.version;
        e.at = self.at;
        e.sends.extend(self.sends);
        e.events.extend(self.events);
        e
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
    fn carrying_forward_keeps_the_earlier_effects_first() {
        let effects = |body: &str| Effects {
            sends: vec![(QueueName::Replies, OutgoingMessage::new(body.into()))],
            ..Effects::default()
        };
        let first = Outbox::of(2, 0, &effects("a")).unwrap();
        let second = Outbox::of(3, 0, &effects("b")).unwrap().after(Some(first));
        assert_eq!(second.version, 3);
        let bodies: Vec<&str> = second.sends.iter().map(|s| s.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b"]);
        assert!(Outbox::of(4, 0, &Effects::default()).is_none());
    }

    #[test]
    fn bodies_read_back_as_they_were_sent() {
        for body in [
            r#"{"command_id":"c-1","n":[1,2]}"#,
            "not json",
            r#""a json string""#,
            r#"{"text":"looks like the wrapper"}"#,
            "",
        ] {
            let outbox = Outbox::of(
                1,
                0,
                &Effects {
                    sends: vec![(QueueName::Replies, OutgoingMessage::new(body.into()))],
                    ..Effects::default()
                },
            )
            .unwrap();
            let json = serde_json::to_string(&outbox).unwrap();
            let back: Outbox = serde_json::from_str(&json).unwrap();
            assert_eq!(back.sends[0].body, body, "{json}");
        }
        let json = serde_json::to_string(
            &Outbox::of(
                1,
                0,
                &Effects {
                    sends: vec![(
                        QueueName::Replies,
                        OutgoingMessage::new(r#"{"a":1}"#.into()),
                    )],
                    ..Effects::default()
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            json.contains(r#""body":{"a":1}"#),
            "a JSON body is kept as JSON: {json}"
        );
    }
}
