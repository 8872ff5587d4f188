//! Personal data at rest, end to end on a real SQLite file, with the operator API on loopback
//! and the simulators' ledgers as the truth:
//! - bookings with recognisable guests (through the API, and in the clear on the request queue
//!   as a bus event arrives) leave no name, phone or e-mail in the clear anywhere in the file,
//!   its WAL or its shared memory: not in the sagas, the history, the queues, the events, the
//!   dead letters of refused requests; yet SevenRooms gets the right guest, an operator reads
//!   it and a viewer does not;
//! - forgetting a member erases their contact from every saga (a running one when it
//!   finishes) and from the WAL once checkpointed, keeps the money facts checkable against the
//!   ledgers, is audited, and repeats harmlessly;
//! - retention erases finished sagas' contacts and leaves running ones; forgetting a member
//!   and the retention both erase the guest of refused requests' dead letters too;
//! - a key rotation seals new guests with the new key, old ones still open, and a
//!   re-encryption leaves nothing under the old key.
//! - the `keys` command makes, rotates and re-encrypts on the database file, and refuses to
//!   make new keys over sealed guests whose key file is missing;
//! - `up` and `keys rotate` under umask 000 leave every file they make the owner's alone.

mod api_support;

use std::time::Duration;

use api_support::{Api, OPERATOR};
use chrono::Utc;
use como_api::auth::Role;
use como_engine::HistoryKind;
use como_orchestrator::runtime::OrchestratorConfig;
use como_ports::QueueName;
use como_schemas::{
    BookingRequested, Email, ErasureReason, GuestContact, MemberNo, PersonName, Phone, SagaId,
    VenueId, examples,
};
use como_simulators::invariant::{SagaKeys, check};
use como_simulators::seed::{MEMBER_RICH, VENUE_LARGE};
use serde_json::json;

/// A guest whose every field is found by a plain byte search, and found nowhere else.
struct Person {
    first: &'static str,
    last: &'static str,
    phone: &'static str,
    email: &'static str,
}

const ZED: Person = Person {
    first: "Zyxwvu",
    last: "Qwertyson",
    phone: "+6598761234",
    email: "zyxwvu.q@privacy-test.example",
};

const YOLANDA: Person = Person {
    first: "Yolandaq",
    last: "Vbnmkerr",
    phone: "+6597653210",
    email: "yolandaq.v@privacy-test.example",
};

impl Person {
    fn contact(&self) -> GuestContact {
        GuestContact {
            first_name: PersonName::parse(self.first).unwrap(),
            last_name: PersonName::parse(self.last).unwrap(),
            phone: Phone::parse(self.phone).unwrap(),
            email: Some(Email::parse(self.email).unwrap()),
        }
    }

    /// Every spelling of this guest's data that must not be found.
    fn needles(&self) -> Vec<&'static str> {
        vec![
            self.first,
            self.last,
            self.phone,
            self.phone.trim_start_matches('+'),
            self.email,
        ]
    }
}

fn booking(request_id: &str, member: &str, guest: &Person) -> BookingRequested {
    let date = Utc::now().date_naive() + chrono::Days::new(30);
    let mut request = examples::booking_request(request_id, date);
    request.member_no = MemberNo::parse(member).unwrap();
    request.venue_id = VenueId::parse(VENUE_LARGE).unwrap();
    request.guest = guest.contact().into();
    request
}

/// The bytes of the database, its WAL and its shared memory, as they are on the disk now.
fn raw_files(api: &Api) -> Vec<(String, Vec<u8>)> {
    let db = api.spawned.app.settings().database.clone();
    ["", "-wal", "-shm"]
        .into_iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|b| (path, b))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn assert_absent(files: &[(String, Vec<u8>)], needles: &[&str]) {
    assert!(!files.is_empty());
    for (path, bytes) in files {
        for needle in needles {
            assert!(
                !contains(bytes, needle),
                "{needle:?} is in the clear in {path} ({} bytes)",
                bytes.len()
            );
        }
    }
}

fn saga_of(request: &BookingRequested) -> SagaId {
    request.saga_id()
}

/// Books `request` through the API until it is confirmed; the id of the key its guest is
/// stored sealed with.
async fn book_sealed_with(api: &Api, request: &BookingRequested) -> String {
    let (status, body) = api.submit(request).await;
    assert!(status.is_success(), "{status}: {body}");
    let saga = saga_of(request);
    api.wait_status(&saga.to_string(), "confirmed", Duration::from_secs(60))
        .await;
    let state = stored(api, saga).await;
    state
        .request
        .guest
        .sealed()
        .expect("sealed")
        .key_id()
        .to_owned()
}

/// `request` priced wrongly and put on the request queue sealed (as the API does): intake
/// refuses it, and its dead letter keeps the guest sealed. Returns that dead letter's sealed
/// guest, once it is there.
async fn refused(api: &Api, request_id: &str, member: &str, guest: &Person) -> String {
    let ports = api.spawned.ports();
    let mut request = booking(request_id, member, guest);
    request.quoted_credits = como_schemas::Credits::new(1).unwrap();
    como_orchestrator::submit(ports, &request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let dead = ports
                .queue
                .dead_letters(QueueName::Requests, 100)
                .await
                .unwrap();
            if let Some(d) = dead.iter().find(|d| d.body.contains(request_id)) {
                let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                return body["guest"]["sealed"]
                    .as_str()
                    .unwrap_or_else(|| panic!("kept sealed: {body}"))
                    .to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the refused request becomes a dead letter")
}

/// The guest of the dead letter of request `request_id`, as kept.
async fn dead_letter_guest(api: &Api, request_id: &str) -> serde_json::Value {
    let dead = api
        .spawned
        .ports()
        .queue
        .dead_letters(QueueName::Requests, 100)
        .await
        .unwrap();
    let d = dead
        .iter()
        .find(|d| d.body.contains(request_id))
        .unwrap_or_else(|| panic!("no dead letter of {request_id}: {dead:?}"));
    serde_json::from_str::<serde_json::Value>(&d.body).unwrap()["guest"].clone()
}

async fn stored(api: &Api, saga: SagaId) -> como_engine::SagaState {
    api.keys(saga).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_guest_contact_is_kept_in_the_clear_and_sevenrooms_still_gets_the_guest() {
    let api = Api::start().await;
    let ports = api.spawned.ports().clone();
    let mut needles = ZED.needles();
    needles.extend(YOLANDA.needles());
    // Through the API, and as `como-saga submit` does: sealed before it is queued.
    let by_api = booking("pd-api", MEMBER_RICH, &ZED);
    let (status, body) = api.submit(&by_api).await;
    assert!(status.is_success(), "{status}: {body}");
    let by_submit = booking("pd-submit", MEMBER_RICH, &YOLANDA);
    como_orchestrator::submit(&ports, &by_submit).await.unwrap();
    for r in [&by_api, &by_submit] {
        api.wait_status(
            &saga_of(r).to_string(),
            "confirmed",
            Duration::from_secs(60),
        )
        .await;
    }
    // Nothing in the clear in the file, its WAL or its shared memory, as they are while the
    // system runs: not in the sagas, the history, the queues or the events.
    let files = raw_files(&api);
    assert!(
        files
            .iter()
            .any(|(_, b)| contains(b, "\"sealed\":\"v1.k1.")),
        "the search reads the sagas: it finds the sealed guests"
    );
    assert_absent(&files, &needles);

    // SevenRooms got each booking's own guest, in full.
    let ledger = api.ledger().await;
    for (r, p) in [(&by_api, &ZED), (&by_submit, &YOLANDA)] {
        let reservation = ledger
            .sevenrooms
            .reservations
            .iter()
            .find(|x| x.external_id.as_deref() == Some(saga_of(r).to_string().as_str()))
            .expect("the booking's reservation");
        let g = reservation.guest.as_ref().expect("the guest booked");
        assert_eq!(
            (
                g.first_name.as_str(),
                g.last_name.as_str(),
                g.phone.as_str(),
                g.email.as_deref()
            ),
            (p.first, p.last, p.phone, Some(p.email))
        );
    }

    // The operator reads the contact, opened for them; a viewer and a submitter do not.
    let id = saga_of(&by_api).to_string();
    let (status, view) = api.get(&format!("/v1/sagas/{id}"), Role::Operator).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["request"]["guest"]["first_name"], ZED.first);
    assert_eq!(view["request"]["guest"]["phone"], ZED.phone);
    for role in [Role::Viewer, Role::Submitter] {
        let (status, view) = api.get(&format!("/v1/sagas/{id}"), role).await;
        assert_eq!(status, 200);
        for n in ZED.needles() {
            assert!(!view.to_string().contains(n), "{role:?} sees {n}: {view}");
        }
    }

    // Requests in the clear straight on the request queue, as another producer might put
    // them: one that books, one read but wrongly priced, one that cannot be read (a misspelt
    // field), one that is not JSON. The refused ones' dead letters keep no contact.
    let by_bus = booking("pd-bus", MEMBER_RICH, &YOLANDA);
    let mut mispriced = booking("pd-mispriced", MEMBER_RICH, &ZED);
    mispriced.quoted_credits = como_schemas::Credits::new(7).unwrap();
    let mut unreadable =
        serde_json::to_value(booking("pd-unreadable", MEMBER_RICH, &YOLANDA)).unwrap();
    unreadable["party_sise"] = json!(2);
    for body in [
        serde_json::to_string(&by_bus).unwrap(),
        serde_json::to_string(&mispriced).unwrap(),
        unreadable.to_string(),
        format!("not json {}", ZED.phone),
    ] {
        como_ports::Queue::send(
            ports.queue.as_ref(),
            QueueName::Requests,
            vec![como_ports::OutgoingMessage::new(body)],
        )
        .await
        .unwrap();
    }
    api.wait_status(
        &saga_of(&by_bus).to_string(),
        "confirmed",
        Duration::from_secs(60),
    )
    .await;
    let dead = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let d = ports
                .queue
                .dead_letters(QueueName::Requests, 10)
                .await
                .unwrap();
            if d.len() >= 3 {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("three refused requests dead-lettered");
    for d in &dead {
        for n in &needles {
            assert!(
                !d.body.contains(n) && !d.reason.contains(n),
                "{n} in dead letter {d:?}"
            );
        }
    }
    assert!(
        dead.iter().any(|d| d.body.contains("\"sealed\":\"v1.k1.")),
        "the mispriced request is kept with its guest sealed: {dead:?}"
    );
    // The events on the bus carry ids, never the guest.
    let events = serde_json::to_string(&ports.bus.recent(1000).await.unwrap()).unwrap();
    assert!(events.contains(&id), "the saga's events are there");
    for n in &needles {
        assert!(!events.contains(n), "{n} in an event");
    }
    // The clear-text messages were in the WAL until intake took them; once the WAL is
    // checkpointed (the erased rows zeroed: secure_delete), nothing of them is left.
    assert!(
        ports.store.compact().await.unwrap(),
        "the WAL was checkpointed"
    );
    assert_absent(&raw_files(&api), &needles);
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_member_erases_their_contact_everywhere_and_keeps_the_money_checkable() {
    let api = Api::start().await;
    let ports = api.spawned.ports().clone();
    let forgotten = MEMBER_RICH;
    let kept = "CM100002";
    let mine = [
        booking("forget-1", forgotten, &ZED),
        booking("forget-2", forgotten, &ZED),
    ];
    let other = booking("keep-1", kept, &YOLANDA);
    for r in mine.iter().chain([&other]) {
        let (status, body) = api.submit(r).await;
        assert!(status.is_success(), "{status}: {body}");
    }
    for r in mine.iter().chain([&other]) {
        api.wait_status(
            &saga_of(r).to_string(),
            "confirmed",
            Duration::from_secs(60),
        )
        .await;
    }
    // A third booking of the member, held up by a SevenRooms outage: still running when the
    // member is forgotten.
    api.sevenrooms_down().await;
    let running = booking("forget-3", forgotten, &ZED);
    let (status, body) = api.submit(&running).await;
    assert!(status.is_success(), "{status}: {body}");
    let running_id = saga_of(&running);
    tokio::time::timeout(Duration::from_secs(30), async {
        while ports.store.get(running_id).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();

    // A refused request of each member: dead letters that keep the guest sealed.
    let refused_mine = refused(&api, "forget-refused", forgotten, &ZED).await;
    let refused_other = refused(&api, "keep-refused", kept, &YOLANDA).await;

    let sealed_before: Vec<String> = {
        let mut s = vec![refused_mine.clone()];
        for r in &mine {
            let st = stored(&api, saga_of(r)).await;
            s.push(st.request.guest.sealed().unwrap().as_str().to_owned());
        }
        s
    };
    let files = raw_files(&api);
    assert!(
        sealed_before
            .iter()
            .all(|s| files.iter().any(|(_, b)| contains(b, s))),
        "before: the sealed contacts are in the file or its WAL"
    );

    // Only an operator may forget, with a reason.
    let path = format!("/v1/members/{forgotten}/forget");
    let (status, _) = api
        .post(&path, Role::Viewer, &json!({"reason": "x"}).to_string())
        .await;
    assert_eq!(status, 403);
    let (status, body) = api
        .post(&path, Role::Operator, &json!({"reason": " "}).to_string())
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, done) = api
        .post(
            &path,
            Role::Operator,
            &json!({"reason": "DPR-2026-117: erase on request"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["erased"], 2, "{done}");
    assert_eq!(done["when_done"], 1, "{done}");
    assert_eq!(done["dead_letters"], 1, "{done}");
    assert_eq!(done["compacted"], true, "{done}");
    assert_eq!(done["done"], true, "{done}");

    // Gone from both finished sagas, with when and why in their history; the other member's
    // guest stays and still opens.
    for r in &mine {
        let st = stored(&api, saga_of(r)).await;
        let erasure = st.request.guest.erasure().expect("erased");
        assert_eq!(erasure.reason, ErasureReason::MemberRequest);
        let history = ports.store.history(saga_of(r)).await.unwrap();
        assert!(
            history
                .iter()
                .any(|h| h.kind == HistoryKind::PersonalDataErased)
        );
        let (_, view) = api
            .get(&format!("/v1/sagas/{}", saga_of(r)), Role::Operator)
            .await;
        assert!(view["request"].get("guest").is_none(), "{view}");
        assert_eq!(view["request"]["guest_erased"]["reason"], "member_request");
    }
    let (_, view) = api
        .get(&format!("/v1/sagas/{}", saga_of(&other)), Role::Operator)
        .await;
    assert_eq!(
        view["request"]["guest"]["first_name"], YOLANDA.first,
        "{view}"
    );
    // The member's refused request is still a dead letter, with its guest erased; the other
    // member's keeps its guest sealed.
    let guest = dead_letter_guest(&api, "forget-refused").await;
    assert_eq!(guest["erased"]["reason"], "member_request", "{guest}");
    assert_eq!(
        dead_letter_guest(&api, "keep-refused").await["sealed"],
        refused_other.as_str()
    );
    // And from the file and the WAL (checkpointed and truncated by the erasure); the other
    // member's sealed guest is still found, so the search would have seen them.
    let files = raw_files(&api);
    for s in &sealed_before {
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, s),
                "an erased sealed contact is still in {path}"
            );
        }
    }
    let kept_sealed = stored(&api, saga_of(&other)).await;
    let kept_sealed = kept_sealed
        .request
        .guest
        .sealed()
        .unwrap()
        .as_str()
        .to_owned();
    assert!(files.iter().any(|(_, b)| contains(b, &kept_sealed)));

    // The running saga keeps its guest until it finishes, then loses it.
    let st = stored(&api, running_id).await;
    assert!(st.request.guest.sealed().is_some());
    assert_eq!(st.erase_when_done, Some(ErasureReason::MemberRequest));
    api.delete_faults(&api.sevenrooms()).await;
    api.wait_status(
        &running_id.to_string(),
        "confirmed",
        Duration::from_secs(90),
    )
    .await;
    let st = stored(&api, running_id).await;
    assert_eq!(
        st.request.guest.erasure().map(|e| e.reason),
        Some(ErasureReason::MemberRequest)
    );
    let ledger = api.ledger().await;
    let booked = ledger
        .sevenrooms
        .reservations
        .iter()
        .find(|x| x.external_id.as_deref() == Some(running_id.to_string().as_str()))
        .expect("the running saga booked");
    assert_eq!(
        booked.guest.as_ref().unwrap().first_name,
        ZED.first,
        "it booked with the guest"
    );

    // The money facts stay: every saga checks out against both ledgers.
    let mut keys = Vec::new();
    for r in mine.iter().chain([&other, &running]) {
        keys.push(SagaKeys::of(&stored(&api, saga_of(r)).await));
    }
    let report = check(&ledger, &keys);
    assert!(report.violations.is_empty(), "{:?}", report.violations);

    // Repeating it erases nothing more; the audit list says who asked and why.
    let (status, again) = api
        .post(
            &path,
            Role::Operator,
            &json!({"reason": "DPR-2026-117 again"}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            again["erased"].clone(),
            again["already"].clone(),
            again["dead_letters"].clone()
        ),
        (json!(0), json!(3), json!(0)),
        "{again}"
    );
    let (_, audit) = api
        .get("/v1/audit?action=forget_member", Role::Operator)
        .await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == OPERATOR && e["target"] == format!("member/{forgotten}"))
    );
    let first = entries
        .iter()
        .find(|e| e["action_id"] == done["action_id"])
        .expect("the answer names its audit entry");
    assert_eq!(first["outcome"], "applied", "{first}");
    assert!(
        first["detail"].as_str().unwrap().contains(
            "2 erased now, 1 when they finish, 0 with nothing left to erase; 1 dead letters erased"
        ),
        "{first}"
    );
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_finished_sagas_and_leaves_running_ones() {
    let api = Api::start_with(|app| {
        app.with_orchestrator_config(OrchestratorConfig {
            poll_wait: Duration::from_millis(50),
            retention: Some(Duration::from_secs(2)),
            retention_sweep_every: Duration::from_millis(300),
            ..OrchestratorConfig::default()
        })
    })
    .await;
    let done = booking("retention-done", MEMBER_RICH, &ZED);
    let (status, _) = api.submit(&done).await;
    assert!(status.is_success());
    api.wait_status(
        &saga_of(&done).to_string(),
        "confirmed",
        Duration::from_secs(60),
    )
    .await;
    // A refused request: its dead letter loses the guest past the retention too.
    refused(&api, "retention-refused", MEMBER_RICH, &ZED).await;
    api.sevenrooms_down().await;
    let waiting = booking("retention-waiting", MEMBER_RICH, &YOLANDA);
    let (status, _) = api.submit(&waiting).await;
    assert!(status.is_success());
    // The finished saga loses its contact within its retention and a sweep.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let st = stored(&api, saga_of(&done)).await;
            if let Some(e) = st.request.guest.erasure() {
                assert_eq!(e.reason, ErasureReason::Retention);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("erased by retention");
    tokio::time::timeout(Duration::from_secs(20), async {
        while dead_letter_guest(&api, "retention-refused").await["erased"]["reason"] != "retention"
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the dead letter's guest erased by retention");
    // Well past the retention, the running saga keeps its guest: its booking needs it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = stored(&api, saga_of(&waiting)).await;
    assert!(!st.status.kind().is_terminal(), "{:?}", st.status);
    assert!(
        st.request.guest.sealed().is_some(),
        "a running saga keeps its guest"
    );
    api.delete_faults(&api.sevenrooms()).await;
    api.wait_status(
        &saga_of(&waiting).to_string(),
        "confirmed",
        Duration::from_secs(90),
    )
    .await;
    let ledger = api.ledger().await;
    assert!(ledger.sevenrooms.reservations.iter().any(|r| {
        r.external_id.as_deref() == Some(saga_of(&waiting).to_string().as_str())
            && r.guest
                .as_ref()
                .is_some_and(|g| g.first_name == YOLANDA.first)
    }));
    api.spawned.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_seals_new_guests_old_ones_still_open_and_reencryption_moves_them() {
    let api = Api::start().await;
    let ports = api.spawned.ports().clone();
    let keys = api
        .spawned
        .app
        .data_keys()
        .expect("the app's data keys")
        .clone();
    let before = booking("rotate-before", MEMBER_RICH, &ZED);
    assert_eq!(book_sealed_with(&api, &before).await, "k1");
    assert_eq!(keys.rotate().await.unwrap(), "k2");
    let after = booking("rotate-after", MEMBER_RICH, &YOLANDA);
    assert_eq!(book_sealed_with(&api, &after).await, "k2");
    // The old key still opens what it sealed.
    let (_, view) = api
        .get(&format!("/v1/sagas/{}", saga_of(&before)), Role::Operator)
        .await;
    assert_eq!(view["request"]["guest"]["last_name"], ZED.last);
    // Re-encryption moves the old one to the new key; the history and the version of the
    // others are untouched.
    let history_before = ports.store.history(saga_of(&before)).await.unwrap().len();
    let done = como_orchestrator::privacy::reencrypt(&ports, |_| {})
        .await
        .unwrap();
    assert_eq!((done.resealed, done.unreadable), (1, 0), "{done:?}");
    assert!(done.current >= 1, "{done:?}");
    let st = stored(&api, saga_of(&before)).await;
    assert_eq!(st.request.guest.sealed().unwrap().key_id(), "k2");
    assert_eq!(
        ports.store.history(saga_of(&before)).await.unwrap().len(),
        history_before
    );
    let (_, view) = api
        .get(&format!("/v1/sagas/{}", saga_of(&before)), Role::Operator)
        .await;
    assert_eq!(view["request"]["guest"]["last_name"], ZED.last);
    // Again: nothing left under the old key.
    let again = como_orchestrator::privacy::reencrypt(&ports, |_| {})
        .await
        .unwrap();
    assert_eq!(again.resealed, 0, "{again:?}");
    // The key file says so too, and is the owner's alone.
    let key_file = api.spawned.app.settings().database.with_extension("keys");
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(text.contains("\"primary\": \"k2\""), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    api.spawned.stop().await.unwrap();
}

/// The binary, run in `dir` with a clean environment and `env`.
fn como(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (bool, String, String) {
    run(
        std::process::Command::new(env!("CARGO_BIN_EXE_como-saga")),
        dir,
        args,
        env,
    )
}

/// The binary, run in `dir` as `como` does, under umask 000.
fn como_under_umask_000(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut sh = std::process::Command::new("sh");
    sh.args([
        "-c",
        r#"umask 000 && exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_como-saga"),
    ]);
    run(sh, dir, args, &[])
}

fn run(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (bool, String, String) {
    cmd.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("COMO_SAGA_") || name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .env("HOME", dir)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run como-saga");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a newcomer's `up` leaves beside the database, under a umask that would let every
/// account read and write whatever is created with the default mode: the database, its WAL and
/// shared memory, the data keys (and their lock, after a rotation), the API's signing key and
/// `up`'s lock are the owner's alone.
#[test]
fn up_under_umask_000_leaves_every_file_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each file in the directory, with its permission bits in octal.
    let modes = || {
        let mut modes: Vec<(String, String)> = std::fs::read_dir(d)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    format!("{mode:o}"),
                )
            })
            .collect();
        modes.sort();
        modes
    };
    let all_private = |expected: &[&str]| {
        let modes = modes();
        for name in expected {
            assert!(modes.iter().any(|(n, _)| n == name), "no {name}: {modes:?}");
        }
        assert!(modes.iter().all(|(_, mode)| mode == "600"), "{modes:?}");
    };

    let (ok, out, err) = como_under_umask_000(d, &["up", "--demo", "5", "--exit-when-done"]);
    assert!(ok, "{out}\n{err}");
    // The WAL and shared memory too when they are left (their mode on creation is the
    // backend's own test, whatever the umask).
    all_private(&[
        "como-saga.sqlite",
        "como-saga.keys",
        "como-saga.sqlite.api-key.pem",
        "como-saga.sqlite.up.lock",
    ]);
    let (ok, out, err) = como_under_umask_000(d, &["keys", "rotate"]);
    assert!(ok, "{out}\n{err}");
    all_private(&["como-saga.keys", "como-saga.keys.lock"]);
}

#[test]
fn the_keys_command_makes_rotates_and_reencrypts_on_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No keys yet: `show` says how to make them.
    let (ok, _, err) = como(d, &["keys", "show"], &[]);
    assert!(!ok);
    assert!(err.contains("keys init"), "{err}");
    let (ok, out, err) = como(d, &["keys", "init"], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data keys made") && out.contains("k1"),
        "{out}"
    );
    let (ok, out, _) = como(d, &["keys", "init"], &[]);
    assert!(ok && out.contains("already there"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let key_file = d.join("como-saga.keys");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Bookings sealed with k1.
    let (ok, out, err) = como(
        d,
        &["up", "--demo", "12", "--exit-when-done", "--json"],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    // A rotation, then every saga's guest sealed again with the new key.
    let (ok, out, err) = como(d, &["keys", "rotate"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("k2"), "{out}");
    let (ok, out, err) = como(d, &["keys", "reencrypt", "--json"], &[]);
    assert!(ok, "{out}\n{err}");
    let done: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(done["primary"], "k2", "{done}");
    let resealed = done["done"]["resealed"].as_u64().unwrap();
    assert!(
        resealed >= 5,
        "the demo's sagas were sealed with k1: {done}"
    );
    assert_eq!(done["done"]["unreadable"], 0, "{done}");
    let (ok, out, _) = como(d, &["keys", "reencrypt", "--json"], &[]);
    assert!(ok);
    let again: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        again["done"]["resealed"], 0,
        "nothing left under k1: {again}"
    );
    assert_eq!(again["done"]["sagas"], done["done"]["sagas"]);
    let (ok, out, _) = como(d, &["keys", "show", "--json"], &[]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["keys"], json!(["k1", "k2"]));
    assert_eq!(shown["primary"], "k2");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let material = file["keys"]["k1"].as_str().unwrap();
    assert_eq!(material.len(), 44, "32 bytes in base64");
    assert!(!out.contains(material), "no key material is printed");
}

#[test]
fn a_lost_key_file_is_not_replaced_while_the_database_holds_sealed_guests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = como(d, &["up", "--demo", "5", "--exit-when-done"], &[]);
    assert!(ok, "{out}\n{err}");
    std::fs::rename(d.join("como-saga.keys"), d.join("elsewhere.keys")).unwrap();
    // Any command that would make new keys refuses, naming what to restore.
    let (ok, _, err) = como(d, &["keys", "init"], &[]);
    assert!(!ok);
    assert!(err.contains("restore the keys"), "{err}");
    assert!(!d.join("como-saga.keys").exists(), "no new key file");
    // Pointed at the keys, it goes on.
    let keys = d.join("elsewhere.keys");
    let (ok, _, err) = como(d, &["keys", "show"], &[("COMO_SAGA_DATA_KEY_FILE", &keys)]);
    assert!(ok, "{err}");
}
