//! Erasing the guest's personal data: after the retention period once a saga has finished,
//! and for one member on request (`como-saga members forget`). Both go through the engine
//! ([`Input::Erase`]): a finished saga loses its contact at once; a running one when it
//! finishes (its booking still needs the guest). The history and the money facts stay. Both
//! are idempotent and safe while sagas run: each erasure is a conditional write on the saga's
//! version, like any other transition.

use std::time::Duration;

use como_engine::Input;
use como_engine::state::StatusKind;
use como_ports::{Backend, DeadLetter, QueueName, SagaQuery};
use como_schemas::{Erasure, ErasureReason, Guest, MemberNo, SagaId, Timestamp, Worker};
use serde_json::Value;

use crate::advance::{Advanced, RuntimeError, advance_with};
use crate::cache::RememberingStore;

/// How long a finished saga keeps the guest's contact, by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the orchestrator looks for sagas past their retention, by default.
pub const DEFAULT_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Sagas read per page while looking.
const PAGE: usize = 200;

/// What one erasure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    /// The contact is gone.
    Now,
    /// The saga still runs: its contact goes when it finishes.
    WhenDone,
    /// Nothing to do: erased before, or already waiting for the saga to finish.
    Already,
    /// No saga has this id.
    NoSaga,
}

/// Erase one saga's personal data for `reason`.
pub async fn erase(
    ports: &Backend,
    saga: SagaId,
    reason: ErasureReason,
) -> Result<Erased, RuntimeError> {
    erase_with(ports, None, saga, reason).await
}

/// [`erase`] by an orchestrator whose `ports.store` is `cache` (see `advance_with`).
async fn erase_with(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    saga: SagaId,
    reason: ErasureReason,
) -> Result<Erased, RuntimeError> {
    match advance_with(ports, cache, saga, &Input::Erase { reason }, None).await? {
        Advanced::Applied(applied) => Ok(if applied.state.request.guest.is_personal() {
            Erased::WhenDone
        } else {
            Erased::Now
        }),
        Advanced::Unchanged => Ok(Erased::Already),
        Advanced::NoSaga => Ok(Erased::NoSaga),
        Advanced::Refused(e) => Err(RuntimeError::Port(como_ports::PortError::Invalid(format!(
            "saga {saga}: the engine refused the erasure: {e}"
        )))),
    }
}

/// How many sagas an erasure over many touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureReport {
    /// Sagas whose contact was erased now.
    pub erased: u64,
    /// Running sagas whose contact goes when they finish.
    pub when_done: u64,
    /// Sagas with nothing left to erase.
    pub already: u64,
    /// Dead letters whose guest was erased.
    pub dead_letters: u64,
}

impl ErasureReport {
    fn add(&mut self, e: Erased) {
        match e {
            Erased::Now => self.erased += 1,
            Erased::WhenDone => self.when_done += 1,
            Erased::Already | Erased::NoSaga => self.already += 1,
        }
    }

    /// Every saga looked at.
    pub fn sagas(&self) -> u64 {
        self.erased + self.when_done + self.already
    }
}

/// Erase `member`'s personal data from every saga of theirs.
pub async fn forget_member(
    ports: &Backend,
    member: &MemberNo,
) -> Result<ErasureReport, RuntimeError> {
    let mut report = ErasureReport::default();
    let query = SagaQuery {
        member: Some(member.clone()),
        ..SagaQuery::default()
    };
    let mut pages = Pages::new(ports, query);
    while let Some(sagas) = pages.next().await? {
        for saga in sagas {
            report.add(erase(ports, saga, ErasureReason::MemberRequest).await?);
        }
    }
    let member = member.as_str();
    report.dead_letters = erase_dead_letters(ports, ErasureReason::MemberRequest, &|_, body| {
        names_member(body, member)
    })
    .await?;
    Ok(report)
}

/// The queues whose dead letters may hold a guest: refused booking requests, and SevenRooms
/// commands (`book_experience`) set aside.
const QUEUES_WITH_GUESTS: [QueueName; 2] =
    [QueueName::Requests, QueueName::Commands(Worker::Sevenrooms)];

/// Erase the guest from every dead letter `chosen` picks (given the letter and its body as
/// JSON), on every queue whose dead letters may hold one; returns how many were changed. Each
/// `guest` that is not erased yet (sealed, or in the clear from before sealing) becomes
/// `{"erased": {"at", "reason"}}`; the rest of the body, the reason and the letter's id stay,
/// so an operator still sees what was set aside and why. A dead letter that is not JSON holds
/// no guest that intake kept (it keeps only a note of its length). Idempotent: a letter with
/// nothing left to erase is not changed.
async fn erase_dead_letters(
    ports: &Backend,
    reason: ErasureReason,
    chosen: &(dyn Fn(&DeadLetter, &Value) -> bool + Send + Sync),
) -> Result<u64, RuntimeError> {
    let erased = serde_json::to_value(Guest::Erased {
        erased: Erasure {
            at: ports.clock.now(),
            reason,
        },
    })
    .map_err(|e| RuntimeError::Port(como_ports::PortError::Invalid(e.to_string())))?;
    let rewrite = |d: &DeadLetter| {
        let mut body: Value = serde_json::from_str(&d.body).ok()?;
        if !chosen(d, &body) {
            return None;
        }
        erase_guests(&mut body, &erased).then(|| body.to_string())
    };
    let mut n = 0;
    for queue in QUEUES_WITH_GUESTS {
        n += ports.queue.rewrite_dead_letters(queue, &rewrite).await? as u64;
    }
    Ok(n)
}

/// Replace every `guest` in `v` that is not erased yet with `erased`; whether any was.
fn erase_guests(v: &mut Value, erased: &Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut any = false;
            for (k, child) in map.iter_mut() {
                if k == "guest" {
                    if child.get("erased").is_none() {
                        *child = erased.clone();
                        any = true;
                    }
                } else {
                    any |= erase_guests(child, erased);
                }
            }
            any
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, x| erase_guests(x, erased) | any),
        _ => false,
    }
}

/// Whether a dead letter's body is `member`'s: a request names them as `member_no`, a
/// SevenRooms command as its `loyalty_id`.
fn names_member(v: &Value, member: &str) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, child)| {
            (matches!(k.as_str(), "member_no" | "loyalty_id") && child.as_str() == Some(member))
                || names_member(child, member)
        }),
        Value::Array(items) => items.iter().any(|x| names_member(x, member)),
        _ => false,
    }
}

/// The sagas `query` finds, a page of ids at a time.
struct Pages<'a> {
    ports: &'a Backend,
    query: SagaQuery,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(ports: &'a Backend, query: SagaQuery) -> Self {
        Pages {
            ports,
            query: SagaQuery {
                limit: PAGE,
                ..query
            },
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<SagaId>>, RuntimeError> {
        if self.done {
            return Ok(None);
        }
        let page = self.ports.store.query(&self.query).await?;
        match page.next_cursor {
            Some(next) => self.query.cursor = Some(next),
            None => self.done = true,
        }
        Ok(Some(page.items.iter().map(|s| s.saga_id).collect()))
    }
}

/// Erase the personal data of every saga that finished (last changed) before `now -
/// retention` and still holds it.
pub async fn sweep_retention(
    ports: &Backend,
    cache: Option<&RememberingStore>,
    retention: Duration,
    now: Timestamp,
) -> Result<ErasureReport, RuntimeError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = Timestamp::from_millis(now.as_millis().saturating_sub(retention_ms));
    let mut report = ErasureReport::default();
    for status in StatusKind::ALL.into_iter().filter(StatusKind::is_terminal) {
        let query = SagaQuery {
            status: Some(status),
            updated_before: Some(before),
            personal_data: Some(true),
            ..SagaQuery::default()
        };
        let mut pages = Pages::new(ports, query);
        while let Some(sagas) = pages.next().await? {
            for saga in sagas {
                report.add(erase_with(ports, cache, saga, ErasureReason::Retention).await?);
            }
        }
    }
    // Dead letters set aside longer ago than the retention (on SQS they expire after 14 days
    // by themselves; on the embedded backend they stay until redriven).
    report.dead_letters = erase_dead_letters(ports, ErasureReason::Retention, &|d, _| {
        d.dead_lettered_at < before
    })
    .await?;
    Ok(report)
}

/// How far a re-encryption has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reencrypted {
    /// Sagas looked at.
    pub sagas: u64,
    /// Sagas whose guest was sealed again with the primary key.
    pub resealed: u64,
    /// Sagas whose guest was sealed with the primary key already, or erased.
    pub current: u64,
    /// Sagas whose guest does not open with any key this process has (named in the log).
    pub unreadable: u64,
}

/// Seal every saga's guest again with the key that seals now (after a rotation), so that an
/// old key can be retired. Safe while sagas run: each saga is written by a conditional write
/// on its version (read again and redone when it changed meanwhile), and nothing but the
/// ciphertext changes (not its history, not when it was last changed). `progress` is called
/// after every page.
pub async fn reencrypt(
    ports: &Backend,
    mut progress: impl FnMut(&Reencrypted),
) -> Result<Reencrypted, RuntimeError> {
    let primary = ports
        .vault
        .sealing_key()
        .ok_or(RuntimeError::Vault(como_ports::VaultError::NoKeys))?;
    let mut done = Reencrypted::default();
    let mut pages = Pages::new(ports, SagaQuery::default());
    while let Some(sagas) = pages.next().await? {
        for saga in sagas {
            done.sagas += 1;
            match reseal(ports, saga, &primary).await? {
                Resealed::Done => done.resealed += 1,
                Resealed::Current => done.current += 1,
                Resealed::Unreadable => done.unreadable += 1,
            }
        }
        progress(&done);
    }
    Ok(done)
}

enum Resealed {
    Done,
    Current,
    Unreadable,
}

async fn reseal(ports: &Backend, saga: SagaId, primary: &str) -> Result<Resealed, RuntimeError> {
    for _ in 0..16 {
        let Some(stored) = ports.store.get(saga).await? else {
            return Ok(Resealed::Current);
        };
        let guest = &stored.value.request.guest;
        match guest.sealed() {
            Some(s) if s.key_id() != primary => {}
            // Sealed with the primary, erased, or (from before sealing) in the clear: a
            // contact in the clear is sealed too.
            Some(_) | None if guest.contact().is_none() => return Ok(Resealed::Current),
            _ => {}
        }
        let contact = match ports.vault.open(saga, guest).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Resealed::Current),
            Err(e) => {
                tracing::warn!(saga_id = %saga, error = %e, "cannot open the guest's contact to seal it again");
                return Ok(Resealed::Unreadable);
            }
        };
        let mut state = stored.value.clone();
        state.request.guest = ports.vault.seal(saga, &contact.into())?;
        match ports
            .store
            .update(&state, stored.version, como_ports::Effects::default())
            .await?
        {
            como_ports::UpdateOutcome::Updated { .. } => return Ok(Resealed::Done),
            como_ports::UpdateOutcome::Conflict => continue,
        }
    }
    Err(RuntimeError::Contention(saga))
}

#[cfg(test)]
mod tests {
    use super::*;
    use como_schemas::{CommandKind, OperationKind, WorkerCommand, examples};

    /// A SevenRooms command set aside names its member as `loyalty_id` and holds the guest
    /// inside its operation: erased there, the letter is still a command, and erasing again
    /// changes nothing.
    #[test]
    fn a_sevenrooms_command_letter_is_found_by_member_and_loses_only_its_guest() {
        let mut request = examples::booking_request(
            "dl-1",
            chrono::NaiveDate::from_ymd_opt(2026, 12, 24).unwrap(),
        );
        request.member_no = MemberNo::parse("CM100777").unwrap();
        let command = examples::command(
            &request,
            "book_experience",
            CommandKind::Action,
            OperationKind::BookExperience,
            &[],
        );
        let mut body = serde_json::to_value(&command).unwrap();
        assert!(names_member(&body, "CM100777"));
        assert!(!names_member(&body, "CM100778"));
        let erased = serde_json::to_value(Guest::Erased {
            erased: Erasure {
                at: Timestamp::from_millis(1_790_000_000_000),
                reason: ErasureReason::MemberRequest,
            },
        })
        .unwrap();
        assert!(erase_guests(&mut body, &erased));
        assert!(!erase_guests(&mut body, &erased), "nothing left to erase");
        let kept: WorkerCommand = serde_json::from_value(body).unwrap();
        match kept.operation {
            como_schemas::Operation::BookExperience {
                guest, loyalty_id, ..
            } => {
                assert_eq!(
                    guest.erasure().map(|e| e.reason),
                    Some(ErasureReason::MemberRequest)
                );
                assert_eq!(loyalty_id.as_str(), "CM100777");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(kept.saga_id, command.saga_id);
    }
}
