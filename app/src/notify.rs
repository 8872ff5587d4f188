//! Operator notifications: a saga that needs a person is pushed to a webhook, not only found by
//! polling.
//!
//! The orchestrator sends every `SagaNeedsOperator` event to the `notifications` queue with the
//! saga's write (`como_orchestrator::advance::effects_of`), so a notification exists exactly
//! when the saga stopped, whatever crashes after. The notifier, which runs with the
//! orchestrator, delivers each one:
//! - `POST` of the event's JSON to the webhook, with `Content-Type: application/json` and
//!   - `Como-Event-Id`: the event's id (the same on every retry: a receiver drops duplicates);
//!   - `Como-Event-Type`: `SagaNeedsOperator`;
//!   - `Como-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the shared
//!     secret>` (a receiver recomputes it and refuses a stale `t`);
//! - a 2xx answer deletes the notification; anything else (an error, a time-out, another
//!   status) leaves it on the queue, hidden for a back-off that doubles with each receive
//!   (5 s, 10 s, 20 s, ... up to 10 minutes), so delivery is at least once; after the queue's
//!   receive limit it moves to the queue's dead letters, where `como-saga dlq list --queue
//!   notifications` shows it and `dlq redrive` sends it again;
//! - without a webhook configured, notifications are taken off the queue unsent (the bus on
//!   AWS, the API and `sagas list --status needs_operator` still show the saga).
//!
//! On AWS the same event also goes out on EventBridge (detail-type `SagaNeedsOperator`) with
//! the other outcomes.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use como_ports::consumer::{ConsumeOptions, consume};
use como_ports::{Backend, Delivery, QueueName};
use como_schemas::SagaEvent;
use como_schemas::credentials::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// Where notifications go.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    /// The shared secret the signature is made with.
    pub secret: SecretString,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// How long one delivery may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The back-off before the next try of a notification received `receive_count` times.
pub fn backoff(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// The `Como-Signature` header of `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{unix_seconds}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// Delivers notifications until `shutdown`.
pub async fn run(ports: Backend, webhook: Option<Webhook>, shutdown: CancellationToken) {
    let http = match reqwest::Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "the notifier cannot build its HTTP client; notifications wait on their queue");
            return;
        }
    };
    let webhook = webhook.map(Arc::new);
    let queue = ports.queue.clone();
    let options = ConsumeOptions {
        concurrency: 4,
        batch: 10,
        visibility: CALL_TIMEOUT * 3,
        poll_wait: Duration::from_millis(500),
        error_backoff: Duration::from_secs(1),
    };
    consume(
        ports.queue.clone(),
        QueueName::Notifications,
        options,
        shutdown,
        move |d| {
            let queue = queue.clone();
            let http = http.clone();
            let webhook = webhook.clone();
            async move { handle(&*queue, &http, webhook.as_deref(), d).await }
        },
    )
    .await;
}

async fn handle(
    queue: &dyn como_ports::Queue,
    http: &reqwest::Client,
    webhook: Option<&Webhook>,
    d: Delivery,
) {
    let q = QueueName::Notifications;
    let event: SagaEvent = match serde_json::from_str(&d.body) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("not a notification (a saga event's JSON): {e}");
            if let Err(e) = queue.dead_letter(q, &d.receipt, &reason).await {
                tracing::warn!(error = %e, "a notification that cannot be read could not be dead-lettered; it comes back");
            }
            return;
        }
    };
    // The notification's work is part of its saga's trace, and its log lines say whose.
    let span =
        como_ports::trace::receive_span(q, &d, como_ports::trace::Work::saga(Some(event.saga_id)));
    tracing::Instrument::instrument(notify(queue, http, webhook, &d, &event), span).await;
}

async fn notify(
    queue: &dyn como_ports::Queue,
    http: &reqwest::Client,
    webhook: Option<&Webhook>,
    d: &Delivery,
    event: &SagaEvent,
) {
    let q = QueueName::Notifications;
    let delivered = match webhook {
        None => {
            tracing::debug!("no webhook configured: the notification is dropped");
            true
        }
        Some(hook) => deliver(http, hook, event, &d.body).await,
    };
    tracing::Span::current().record("outcome", if delivered { "delivered" } else { "retrying" });
    if delivered {
        if let Err(e) = queue.delete(q, vec![d.receipt.clone()]).await {
            tracing::warn!(error = %e, "a delivered notification could not be deleted; it may be delivered again");
        }
    } else {
        let wait = backoff(d.receive_count);
        if let Err(e) = queue.change_visibility(q, &d.receipt, wait).await {
            tracing::warn!(error = %e, "a notification's back-off could not be set; it comes back after its visibility");
        }
    }
}

/// One try; whether the webhook took it.
async fn deliver(http: &reqwest::Client, hook: &Webhook, event: &SagaEvent, body: &str) -> bool {
    let now = chrono::Utc::now().timestamp();
    let answer = http
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Como-Event-Id", &event.event_id)
        .header("Como-Event-Type", event.body.type_name())
        .header(
            "Como-Signature",
            signature(hook.secret.expose_secret(), now, body),
        )
        .body(body.to_owned())
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            tracing::info!(event = %event.event_id, "operator notified by webhook");
            true
        }
        Ok(r) => {
            tracing::warn!(
                status = r.status().as_u16(),
                "the webhook refused a notification; it is tried again"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "the webhook could not be reached; the notification is tried again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_and_the_body() {
        // As Python's `hmac.new(b"whsec-test", b'1700000000.{"a":1}', hashlib.sha256)` makes it.
        assert_eq!(
            signature("whsec-test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=fed7a1a6c799a6367d73724d76bc70c16678908a32a879cd1ded6565ac05cece"
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
