//! The orchestrator's handlers against a real SQLite file: a request becomes a saga exactly
//! once, a bad one is refused with the field and the reason (a dead letter, never a saga), so
//! is a request id reused for another booking (the first saga untouched), a reply for no saga
//! is dead-lettered, and timers kept in the store fire.

use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use como_engine::StatusKind;
use como_orchestrator::intake::handle_request;
use como_orchestrator::replies::handle_reply;
use como_orchestrator::timers::sweep;
use como_orchestrator::{IntakeOutcome, VenueCatalogue, VenuePrice, submit};
use como_ports::{EventBus, OutgoingMessage, PortResult, QueueName};
use como_schemas::{BookingRejected, CommandKind, SagaEvent, Worker, WorkerCommand, examples};

mod support;

use support::*;

fn request() -> como_schemas::BookingRequested {
    examples::booking_request("intake-1", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap())
}

#[tokio::test]
async fn a_request_becomes_one_saga_and_a_duplicate_changes_nothing() {
    let r = rig();
    let req = request();
    submit(&r.ports, &req).await.unwrap();
    submit(&r.ports, &req).await.unwrap();
    let first = next(&r.ports, QueueName::Requests).await.unwrap();
    match handle_request(&r.ports, &r.catalogue, &first)
        .await
        .unwrap()
    {
        IntakeOutcome::Started(applied) => {
            assert_eq!(applied.state.saga_id, req.saga_id());
            assert_eq!(applied.sent.len(), 1, "the first command");
        }
        other => panic!("{other:?}"),
    }
    let second = next(&r.ports, QueueName::Requests).await.unwrap();
    assert_eq!(
        handle_request(&r.ports, &r.catalogue, &second)
            .await
            .unwrap(),
        IntakeOutcome::Duplicate(req.saga_id())
    );
    let saga = r.ports.store.get(req.saga_id()).await.unwrap().unwrap();
    assert_eq!(saga.version, 1);
    assert_eq!(saga.value.status.kind(), StatusKind::Running);
    // One command for the CRM worker, and both request messages acknowledged.
    let cmd = next(&r.ports, QueueName::Commands(Worker::Crm))
        .await
        .unwrap();
    let cmd: WorkerCommand = serde_json::from_str(&cmd.body).unwrap();
    assert_eq!(
        (cmd.step.as_str(), cmd.kind),
        ("check_credits", CommandKind::Action)
    );
    assert!(
        next(&r.ports, QueueName::Commands(Worker::Crm))
            .await
            .is_none()
    );
    r.clock.advance_ms(60_000);
    assert!(
        next(&r.ports, QueueName::Requests).await.is_none(),
        "nothing comes back"
    );
    assert_eq!(
        r.ports.store.history(req.saga_id()).await.unwrap().len(),
        2,
        "started + command sent"
    );
}

/// The event bus of the backend, keeping a copy of every rejection published.
struct RecordingBus {
    inner: Arc<dyn EventBus>,
    rejections: Mutex<Vec<BookingRejected>>,
}

#[async_trait::async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, events: Vec<SagaEvent>) -> PortResult<()> {
        self.inner.publish(events).await
    }

    async fn publish_rejection(&self, rejection: BookingRejected) -> PortResult<()> {
        self.rejections.lock().unwrap().push(rejection.clone());
        self.inner.publish_rejection(rejection).await
    }

    async fn recent(&self, limit: usize) -> PortResult<Vec<SagaEvent>> {
        self.inner.recent(limit).await
    }
}

#[tokio::test]
async fn a_reused_request_id_with_other_content_is_refused_and_the_first_saga_is_untouched() {
    let mut r = rig();
    let bus = Arc::new(RecordingBus {
        inner: r.ports.bus.clone(),
        rejections: Mutex::new(Vec::new()),
    });
    r.ports.bus = bus.clone();
    // A second venue, so that the other booking passes every other check.
    let catalogue = VenueCatalogue::new([
        (
            "como-cuisine".to_owned(),
            VenuePrice {
                credits_per_guest: 600,
            },
        ),
        (
            "como-elsewhere".to_owned(),
            VenuePrice {
                credits_per_guest: 500,
            },
        ),
    ]);
    let req = request();
    let id = req.saga_id();
    submit(&r.ports, &req).await.unwrap();
    let first = next(&r.ports, QueueName::Requests).await.unwrap();
    assert!(matches!(
        handle_request(&r.ports, &catalogue, &first).await.unwrap(),
        IntakeOutcome::Started(_)
    ));
    let before = r.ports.store.get(id).await.unwrap().unwrap();
    let history_before = r.ports.store.history(id).await.unwrap().len();

    // The identical request again, in a new message laid out differently (keys in another
    // order): a harmless duplicate.
    let relaid = serde_json::to_value(&req).unwrap().to_string();
    assert_ne!(relaid, serde_json::to_string(&req).unwrap());
    r.ports
        .queue
        .send(QueueName::Requests, vec![OutgoingMessage::new(relaid)])
        .await
        .unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    assert_eq!(
        handle_request(&r.ports, &catalogue, &d).await.unwrap(),
        IntakeOutcome::Duplicate(id)
    );
    assert!(bus.rejections.lock().unwrap().is_empty(), "no rejection");

    // The same request id for another booking: another venue, date and party.
    let mut other = request();
    other.venue_id = como_schemas::VenueId::parse("como-elsewhere").unwrap();
    other.date = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
    other.party_size = como_schemas::PartySize::new(3).unwrap();
    other.quoted_credits = como_schemas::Credits::new(1_500).unwrap();
    submit(&r.ports, &other).await.unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    let refusal = match handle_request(&r.ports, &catalogue, &d).await.unwrap() {
        IntakeOutcome::Rejected(invalid) => invalid,
        other => panic!("a reused request id must be refused: {other:?}"),
    };
    assert_eq!(refusal.field, "request_id");
    let expected = format!(
        "REQUEST_ID_REUSED: request id intake-1 is already used by saga {id} with other \
         content (venue_id, date, party_size, quoted_credits differ)"
    );
    assert!(refusal.reason.starts_with(&expected), "{refusal}");

    // Only the guest's phone differs: refused too, naming the field and not the number.
    let mut other_phone = request();
    let mut contact = other_phone.guest.contact().unwrap().clone();
    contact.phone = como_schemas::Phone::parse("+6599999999").unwrap();
    other_phone.guest = contact.into();
    submit(&r.ports, &other_phone).await.unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    match handle_request(&r.ports, &catalogue, &d).await.unwrap() {
        IntakeOutcome::Rejected(invalid) => {
            assert!(
                invalid.reason.contains("(guest.phone differs)"),
                "{invalid}"
            );
            assert!(!invalid.reason.contains("99999999"), "{invalid}");
        }
        other => panic!("{other:?}"),
    }

    // A `BookingRejected` with the reason, and a dead letter, for each of the two.
    let rejections = bus.rejections.lock().unwrap().clone();
    assert_eq!(rejections.len(), 2, "{rejections:?}");
    assert_eq!(rejections[0].request_id.as_deref(), Some("intake-1"));
    assert_eq!(rejections[0].field, "request_id");
    assert_eq!(rejections[0].reason, refusal.reason);
    let dead = r
        .ports
        .queue
        .dead_letters(QueueName::Requests, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter().any(|d| d.reason.contains(&expected)),
        "{dead:?}"
    );

    // The first saga is untouched: same version, same state, no new history entry.
    let after = r.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.value, before.value);
    // The request as it was sent, its guest kept sealed.
    let mut kept = after.value.request.clone();
    assert!(kept.guest.sealed().is_some(), "the guest is kept sealed");
    kept.guest = r
        .ports
        .vault
        .open(id, &kept.guest)
        .await
        .unwrap()
        .unwrap()
        .into();
    assert_eq!(kept, req);
    assert_eq!(
        r.ports.store.history(id).await.unwrap().len(),
        history_before
    );
    // Every request message is settled (acknowledged or dead-lettered), and the first
    // command is the only one sent.
    r.clock.advance_ms(60_000);
    assert!(next(&r.ports, QueueName::Requests).await.is_none());
    assert!(
        next(&r.ports, QueueName::Commands(Worker::Crm))
            .await
            .is_some()
    );
    assert!(
        next(&r.ports, QueueName::Commands(Worker::Crm))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn bad_requests_are_refused_by_field_and_never_become_sagas() {
    let r = rig();
    let mut wrong_price = request();
    wrong_price.quoted_credits = como_schemas::Credits::new(1).unwrap();
    let mut unknown_venue = request();
    unknown_venue.venue_id = como_schemas::VenueId::parse("nowhere").unwrap();
    let mut bad = serde_json::to_value(request()).unwrap();
    bad["party_size"] = serde_json::json!(0);
    let bodies = [
        (
            serde_json::to_string(&wrong_price).unwrap(),
            "quoted_credits",
        ),
        (serde_json::to_string(&unknown_venue).unwrap(), "venue_id"),
        (bad.to_string(), "party_size"),
        ("not json at all".to_owned(), "."),
    ];
    for (body, field) in &bodies {
        r.ports
            .queue
            .send(
                QueueName::Requests,
                vec![OutgoingMessage::new(body.clone())],
            )
            .await
            .unwrap();
        let d = next(&r.ports, QueueName::Requests).await.unwrap();
        match handle_request(&r.ports, &r.catalogue, &d).await.unwrap() {
            IntakeOutcome::Rejected(invalid) => assert_eq!(&invalid.field, field, "{invalid}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    let dead = r
        .ports
        .queue
        .dead_letters(QueueName::Requests, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 4);
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("does not match the venue's price"))
    );
    assert!(dead.iter().any(|d| d.reason.contains("party_size")));
    assert!(
        r.ports
            .store
            .get(request().saga_id())
            .await
            .unwrap()
            .is_none(),
        "no saga was created"
    );
}

#[tokio::test]
async fn a_reply_for_no_saga_is_dead_lettered() {
    let r = rig();
    let req = request();
    let cmd = examples::command(
        &req,
        "check_credits",
        CommandKind::Action,
        como_schemas::OperationKind::CheckCredits,
        &[],
    );
    let reply = examples::reply(&cmd, examples::all_outcomes().remove(0));
    r.ports
        .queue
        .send(
            QueueName::Replies,
            vec![OutgoingMessage::new(serde_json::to_string(&reply).unwrap())],
        )
        .await
        .unwrap();
    r.ports
        .queue
        .send(QueueName::Replies, vec![OutgoingMessage::new("{}".into())])
        .await
        .unwrap();
    for _ in 0..2 {
        let d = next(&r.ports, QueueName::Replies).await.unwrap();
        handle_reply(&r.ports, &d).await.unwrap();
    }
    let dead = r
        .ports
        .queue
        .dead_letters(QueueName::Replies, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| d.reason.contains("does not exist")));
    assert!(dead.iter().any(|d| d.reason.contains("unreadable reply")));
}

#[tokio::test]
async fn timers_kept_in_the_store_fire_when_due() {
    let r = rig();
    let req = request();
    submit(&r.ports, &req).await.unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    handle_request(&r.ports, &r.catalogue, &d).await.unwrap();
    // The worker took the command and then died: the command is gone, no reply comes.
    let first = next(&r.ports, QueueName::Commands(Worker::Crm))
        .await
        .unwrap();
    r.ports
        .queue
        .delete(QueueName::Commands(Worker::Crm), vec![first.receipt])
        .await
        .unwrap();
    assert_eq!(sweep(&r.ports, 100, 4).await.unwrap(), 0, "nothing due yet");
    // No reply: the attempt times out (15 s + 5 s grace), and the check is retried.
    r.clock.advance_ms(20_000);
    assert_eq!(sweep(&r.ports, 100, 4).await.unwrap(), 1);
    r.clock.advance_ms(10_000);
    sweep(&r.ports, 100, 4).await.unwrap();
    let retry = next(&r.ports, QueueName::Commands(Worker::Crm))
        .await
        .unwrap();
    let retry: WorkerCommand = serde_json::from_str(&retry.body).unwrap();
    assert_eq!((retry.step.as_str(), retry.attempt), ("check_credits", 2));
    let history = r.ports.store.history(req.saga_id()).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.kind == como_engine::HistoryKind::TimedOut)
    );
}

/// What a reply to `cmd` that succeeded looks like.
fn succeeded(cmd: &WorkerCommand) -> como_schemas::WorkerReply {
    let outcome = examples::all_outcomes()
        .into_iter()
        .find(|o| matches!(o, como_schemas::ReplyOutcome::Succeeded { .. }))
        .unwrap();
    examples::reply(cmd, outcome)
}

/// An orchestrator that remembers what it writes (its ports' store is the cache) and
/// another one sharing its file: the first starts a saga (version 1, which it remembers), the
/// other applies the check's reply (version 2 sends the hold). Returns the cache, the first
/// one's ports, the saga, the check and the hold.
async fn moved_on_by_another(
    r: &Rig,
) -> (
    Arc<como_orchestrator::cache::RememberingStore>,
    como_ports::Backend,
    como_schemas::SagaId,
    WorkerCommand,
    WorkerCommand,
) {
    use como_orchestrator::{Advanced, advance};
    let mut mine = r.ports.clone();
    let cache = Arc::new(como_orchestrator::cache::RememberingStore::new(
        r.ports.store.clone(),
    ));
    mine.store = cache.clone();
    let req = request();
    submit(&mine, &req).await.unwrap();
    let d = next(&mine, QueueName::Requests).await.unwrap();
    handle_request(&mine, &r.catalogue, &d).await.unwrap();
    let id = req.saga_id();
    assert_eq!(mine.store.get(id).await.unwrap().unwrap().version, 1);
    let command = |body: String| serde_json::from_str::<WorkerCommand>(&body).unwrap();
    let check = command(
        next(&r.ports, QueueName::Commands(Worker::Crm))
            .await
            .unwrap()
            .body,
    );
    let input = como_engine::Input::Reply {
        reply: succeeded(&check),
    };
    assert!(matches!(
        advance(&r.ports, id, &input, None).await.unwrap(),
        Advanced::Applied(_)
    ));
    let hold = command(
        next(&r.ports, QueueName::Commands(Worker::Sevenrooms))
            .await
            .unwrap()
            .body,
    );
    (cache, mine, id, check, hold)
}

#[tokio::test]
async fn a_remembered_saga_that_another_orchestrator_moved_on_is_read_again() {
    use como_orchestrator::{Advanced, advance_with};

    let r = rig();
    let (cache, mine, id, check, hold) = moved_on_by_another(&r).await;
    // This one still remembers version 1.
    assert_eq!(mine.store.get(id).await.unwrap().unwrap().version, 1);

    // The hold's reply is for an attempt that version 1 never sent: judged against the
    // remembered state it would be refused (and dead-lettered); it is judged again against
    // the store, and applied.
    let input = como_engine::Input::Reply {
        reply: succeeded(&hold),
    };
    match advance_with(&mine, Some(&cache), id, &input, None)
        .await
        .unwrap()
    {
        Advanced::Applied(applied) => assert_eq!(applied.version, 3),
        other => panic!("{other:?}"),
    }
    // A duplicate of the check's reply against the now remembered version 3 teaches nothing.
    let input = como_engine::Input::Reply {
        reply: succeeded(&check),
    };
    assert!(matches!(
        advance_with(&mine, Some(&cache), id, &input, None)
            .await
            .unwrap(),
        Advanced::Unchanged
    ));
    assert_eq!(r.ports.store.get(id).await.unwrap().unwrap().version, 3);
}

/// The cache seen by a task of an orchestrator while another task of the same process, say a
/// timer or a reply for the same saga that lost its write, drops the saga's entry: every read
/// returns what is remembered, and the entry is gone right after.
struct DroppedMeanwhile(Arc<como_orchestrator::cache::RememberingStore>);

#[async_trait::async_trait]
impl como_ports::SagaReader for DroppedMeanwhile {
    async fn get(
        &self,
        id: como_schemas::SagaId,
    ) -> PortResult<Option<como_ports::Versioned<como_engine::SagaState>>> {
        let got = self.0.get(id).await;
        self.0.read_store(id).await?;
        got
    }
    async fn query(&self, q: &como_ports::SagaQuery) -> PortResult<como_ports::SagaPage> {
        self.0.query(q).await
    }
    async fn history(
        &self,
        id: como_schemas::SagaId,
    ) -> PortResult<Vec<como_engine::HistoryEntry>> {
        self.0.history(id).await
    }
    async fn counts(&self) -> PortResult<Vec<(StatusKind, u64)>> {
        self.0.counts().await
    }
    async fn stuck(
        &self,
        q: &como_ports::SagaQuery,
        limit: usize,
    ) -> PortResult<Vec<como_ports::SagaSummary>> {
        self.0.stuck(q, limit).await
    }
}

#[async_trait::async_trait]
impl como_ports::SagaWriter for DroppedMeanwhile {
    async fn create(
        &self,
        state: &como_engine::SagaState,
        effects: como_ports::Effects,
    ) -> PortResult<como_ports::CreateOutcome> {
        self.0.create(state, effects).await
    }
    async fn update(
        &self,
        state: &como_engine::SagaState,
        expected: u64,
        effects: como_ports::Effects,
    ) -> PortResult<como_ports::UpdateOutcome> {
        self.0.update(state, expected, effects).await
    }
    async fn due(
        &self,
        now: como_schemas::Timestamp,
        limit: usize,
    ) -> PortResult<Vec<como_schemas::SagaId>> {
        self.0.due(now, limit).await
    }
}

/// The race the crash runs on AWS met ("reply for action attempt 3 of hold_slot, but 2 were
/// sent", dead-lettered, and the booking compensated): a reply judged against a stale
/// remembered state whose entry another task dropped before the refusal was looked at. It is
/// judged again against the store all the same, and applied.
#[tokio::test]
async fn a_reply_refused_by_a_stale_memory_is_judged_again_even_if_another_task_dropped_it() {
    use como_orchestrator::{Advanced, advance_with};

    let r = rig();
    let (cache, _mine, id, _check, hold) = moved_on_by_another(&r).await;

    let mut racing = r.ports.clone();
    racing.store = Arc::new(DroppedMeanwhile(cache.clone()));
    let input = como_engine::Input::Reply {
        reply: succeeded(&hold),
    };
    match advance_with(&racing, Some(&cache), id, &input, None)
        .await
        .unwrap()
    {
        Advanced::Applied(applied) => assert_eq!(applied.version, 3),
        other => panic!("the hold's reply must be applied, not {other:?}"),
    }
    assert_eq!(r.ports.store.get(id).await.unwrap().unwrap().version, 3);
}
