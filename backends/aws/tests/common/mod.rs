//! What the AWS backend's tests against moto share.

use std::time::Duration;

use como_engine::{HistoryEntry, Input, SagaState, como};
use como_ports::{Backend, QueueName};
use como_schemas::{SagaEvent, examples};

/// A saga just started by the engine (a booking for a month from now): its state, the events
/// and the history entries of its start.
pub fn started(name: &str) -> (SagaState, Vec<SagaEvent>, Vec<HistoryEntry>) {
    let date = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let request = examples::booking_request(name, date);
    let now = como_ports::Clock::now(&como_ports::SystemClock);
    let d = como_engine::transition(&como::current(), None, &Input::Start { request }, now)
        .expect("the engine starts a saga");
    (d.state, d.events, d.history)
}

/// The body of every message on `queue` now, received through `ports` (and hidden for a
/// minute).
pub async fn bodies(ports: &Backend, queue: QueueName) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = ports
            .queue
            .receive(queue, 10, Duration::from_secs(60), Duration::ZERO)
            .await
            .expect("receive");
        if got.is_empty() {
            return out;
        }
        out.extend(got.into_iter().map(|d| d.body));
    }
}
