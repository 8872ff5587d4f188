//! Command handlers: what a worker does for each operation of a command, one file per saga
//! step, and the translation of a client's [`Outcome`] into the reply the orchestrator reads.

mod book_experience;
mod check_credits;
mod hold_slot;
mod redeem_credits;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use como_schemas::{Operation, ReplyOutcome, StepOutput, Worker, WorkerCommand};

use crate::breaker::CircuitBreaker;
use crate::clients::memberson::MembersonClient;
use crate::clients::sevenrooms::{ApiClients, SevenRoomsClient};
use crate::clients::{Deadline, Guards, Outcome};

/// Whether the downstream can be called now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Its circuit is open: calling would fail at once.
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
}

/// One kind of worker's commands.
#[async_trait]
pub trait CommandHandler: Send + Sync {
    fn worker(&self) -> Worker;

    /// Whether the downstream can be called now (its circuit breaker).
    fn availability(&self) -> Availability;

    /// The downstream's circuit breaker, if calls go through one.
    fn breaker(&self) -> Option<Arc<CircuitBreaker>>;

    /// One cheap read that says whether the downstream answers at all (any answer that is not
    /// a 5xx counts), for the breaker's probes. Never a saga's command.
    async fn probe(&self, deadline: Deadline) -> Result<(), String>;

    /// Run the command against the downstream, within `deadline`.
    async fn handle(&self, command: &WorkerCommand, deadline: Deadline) -> ReplyOutcome;

    /// Take new downstream tokens now (a scheduled rotation); calls in flight are unharmed.
    async fn rotate_tokens(&self, _deadline: Deadline) -> Result<(), String> {
        Ok(())
    }
}

/// A command that would wait longer than this for its turn under the rate limit waits in the
/// queue instead, so that the worker keeps taking commands (and telling their sagas they wait)
/// rather than holding them while their deadlines run out.
const LONGEST_WAIT_IN_LINE: Duration = Duration::from_secs(1);

fn availability_of(guards: &Guards, downstream: &str) -> Availability {
    if let Some(retry_after) = guards.breaker.as_ref().and_then(|b| b.blocked_for()) {
        return Availability::Unavailable {
            retry_after,
            reason: format!("{downstream} circuit open"),
        };
    }
    if let Some(limit) = &guards.rate_limit {
        let wait = limit.expected_wait();
        if wait > LONGEST_WAIT_IN_LINE {
            return Availability::Unavailable {
                retry_after: wait,
                reason: format!(
                    "{downstream} busy: a backlog drains at its rate limit ({} calls/s)",
                    limit.snapshot().per_second
                ),
            };
        }
    }
    Availability::Available
}

/// The reply for a client outcome; `ok` turns the success value into the step's output.
/// `outcome` with the guest's own fields masked out of its words.
fn masked(outcome: ReplyOutcome, guest: &como_schemas::GuestContact) -> ReplyOutcome {
    let mask = |t: String| como_privacy::mask_guest(&t, guest);
    match outcome {
        ReplyOutcome::BusinessFailure { code, message } => ReplyOutcome::BusinessFailure {
            code,
            message: mask(message),
        },
        ReplyOutcome::RetryableFailure {
            reason,
            retry_after_ms,
            downstream_unavailable,
        } => ReplyOutcome::RetryableFailure {
            reason: mask(reason),
            retry_after_ms,
            downstream_unavailable,
        },
        ReplyOutcome::UnknownOutcome {
            reason,
            downstream_unavailable,
        } => ReplyOutcome::UnknownOutcome {
            reason: mask(reason),
            downstream_unavailable,
        },
        ReplyOutcome::NotApplied { reason } => ReplyOutcome::NotApplied {
            reason: mask(reason),
        },
        ReplyOutcome::Deferred {
            reason,
            retry_after_ms,
        } => ReplyOutcome::Deferred {
            reason: mask(reason),
            retry_after_ms,
        },
        ok @ ReplyOutcome::Succeeded { .. } => ok,
    }
}

fn reply<T>(outcome: Outcome<T>, ok: impl FnOnce(T) -> ReplyOutcome) -> ReplyOutcome {
    match success(outcome) {
        Ok(t) => ok(t),
        Err(failure) => failure,
    }
}

/// The success value, or the reply that reports the failure.
fn success<T>(outcome: Outcome<T>) -> Result<T, ReplyOutcome> {
    Err(match outcome {
        Outcome::Success(t) => return Ok(t),
        Outcome::BusinessFailure { code, message } => {
            ReplyOutcome::BusinessFailure { code, message }
        }
        Outcome::Retryable {
            reason,
            retry_after,
        } => ReplyOutcome::RetryableFailure {
            reason,
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            downstream_unavailable: false,
        },
        Outcome::Unknown { reason } => ReplyOutcome::UnknownOutcome {
            reason,
            downstream_unavailable: false,
        },
        Outcome::Unavailable {
            reason,
            retry_after,
            maybe_applied: false,
        } => ReplyOutcome::RetryableFailure {
            reason,
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            downstream_unavailable: true,
        },
        Outcome::Unavailable {
            reason,
            maybe_applied: true,
            ..
        } => ReplyOutcome::UnknownOutcome {
            reason,
            downstream_unavailable: true,
        },
    })
}

fn succeeded(output: StepOutput) -> ReplyOutcome {
    ReplyOutcome::Succeeded { output }
}

/// A compensation that found nothing left to undo.
fn compensated(note: impl Into<String>) -> ReplyOutcome {
    succeeded(StepOutput::Compensated {
        note: Some(note.into()),
        undone: false,
    })
}

/// A compensation that undid a live effect.
fn undone(note: impl Into<String>) -> ReplyOutcome {
    succeeded(StepOutput::Compensated {
        note: Some(note.into()),
        undone: true,
    })
}

/// A value from a downstream that does not fit our types (an empty id, say): the call's
/// effect is unknown to us, so it is reported as such, never guessed.
fn unreadable(what: &str, err: String) -> ReplyOutcome {
    ReplyOutcome::UnknownOutcome {
        reason: format!("the downstream answered with an unusable {what}: {err}"),
        downstream_unavailable: false,
    }
}

fn misrouted(command: &WorkerCommand, worker: Worker) -> ReplyOutcome {
    ReplyOutcome::BusinessFailure {
        code: "MISROUTED".into(),
        message: format!(
            "{} is not an operation of the {worker} worker",
            serde_json::to_value(command.operation.kind())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
    }
}

/// The Memberson (CRM) worker's commands.
pub struct CrmHandler {
    pub client: MembersonClient,
}

#[async_trait]
impl CommandHandler for CrmHandler {
    fn worker(&self) -> Worker {
        Worker::Crm
    }

    fn availability(&self) -> Availability {
        availability_of(self.client.guards(), "Memberson")
    }

    fn breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.client.guards().breaker.clone()
    }

    async fn probe(&self, deadline: Deadline) -> Result<(), String> {
        self.client.probe(deadline).await
    }

    async fn rotate_tokens(&self, deadline: Deadline) -> Result<(), String> {
        self.client.rotate_token(deadline).await
    }

    async fn handle(&self, command: &WorkerCommand, deadline: Deadline) -> ReplyOutcome {
        let c = &self.client;
        match &command.operation {
            Operation::CheckCredits { member_no, credits } => {
                check_credits::check(c, member_no, *credits, deadline).await
            }
            Operation::RedeemCredits {
                member_no,
                credits,
                receipt_no,
                transaction_at,
            } => {
                let request =
                    redeem_credits::request(c, member_no, *credits, receipt_no, *transaction_at);
                redeem_credits::redeem(c, &request, deadline).await
            }
            Operation::ReplayRedemption {
                member_no,
                credits,
                receipt_no,
                transaction_at,
            } => {
                let request =
                    redeem_credits::request(c, member_no, *credits, receipt_no, *transaction_at);
                redeem_credits::replay(c, &request, deadline).await
            }
            Operation::VoidRedemption {
                member_no,
                receipt_no,
            } => {
                redeem_credits::void(
                    c,
                    member_no,
                    receipt_no,
                    &command.saga_id.to_string(),
                    deadline,
                )
                .await
            }
            _ => misrouted(command, Worker::Crm),
        }
    }
}

/// How one venue is booked, from the venue catalogue: its SevenRooms API (the deployment's
/// when `None`) and the shifts sold for credits (empty: every shift).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VenueRouting {
    pub api_url: Option<String>,
    pub credit_shifts: Vec<String>,
}

impl VenueRouting {
    pub fn sells(&self, name: Option<&str>, persistent_id: Option<&str>) -> bool {
        como_schemas::sold_for_credits(&self.credit_shifts, name, persistent_id)
    }
}

/// Looks a venue's routing up (the application reads the live venue catalogue).
pub type VenueLookup = Arc<dyn Fn(&str) -> Option<VenueRouting> + Send + Sync>;

pub use crate::clients::sevenrooms::ConnectApi;

/// The SevenRooms worker's commands.
pub struct SevenRoomsHandler {
    /// The deployment's API, and the others venues name (they share its guards: one circuit
    /// and one rate limit for SevenRooms).
    pub clients: ApiClients,
    /// How long a hold lasts before SevenRooms lets it go.
    pub hold_seconds: u32,
    /// Each venue's API and credit shifts; none: every venue on the deployment's API, every
    /// shift.
    pub venues: Option<VenueLookup>,
    /// Opens the guest's contact for the booking: this worker is the one that needs it.
    pub vault: Arc<dyn como_ports::GuestVault>,
}

impl SevenRoomsHandler {
    pub fn new(client: SevenRoomsClient, hold_seconds: u32) -> Self {
        SevenRoomsHandler {
            clients: ApiClients::new(client),
            hold_seconds,
            venues: None,
            vault: Arc::new(como_ports::NoKeys),
        }
    }

    /// Opens sealed guests with `vault` (the deployment's data keys).
    #[must_use]
    pub fn with_vault(mut self, vault: Arc<dyn como_ports::GuestVault>) -> Self {
        self.vault = vault;
        self
    }

    pub fn with_venues(mut self, venues: VenueLookup, connect: ConnectApi) -> Self {
        self.venues = Some(venues);
        self.clients = self.clients.connecting(connect);
        self
    }

    fn routing(&self, venue: &como_schemas::VenueId) -> VenueRouting {
        self.venues
            .as_ref()
            .and_then(|lookup| lookup(venue.as_str()))
            .unwrap_or_default()
    }
}

#[async_trait]
impl CommandHandler for SevenRoomsHandler {
    fn worker(&self) -> Worker {
        Worker::Sevenrooms
    }

    fn availability(&self) -> Availability {
        availability_of(self.clients.default_client().guards(), "SevenRooms")
    }

    fn breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.clients.default_client().guards().breaker.clone()
    }

    async fn probe(&self, deadline: Deadline) -> Result<(), String> {
        self.clients.default_client().probe(deadline).await
    }

    async fn rotate_tokens(&self, deadline: Deadline) -> Result<(), String> {
        self.clients.rotate_tokens(deadline).await
    }

    async fn handle(&self, command: &WorkerCommand, deadline: Deadline) -> ReplyOutcome {
        let Some(venue) = command.operation.venue_id() else {
            return misrouted(command, Worker::Sevenrooms);
        };
        let routing = self.routing(venue);
        // A hold goes to the venue's API as the catalogue says now; the saga's later commands
        // to the API its hold went to (pinned in the hold's output and carried by each
        // command), even if the venue's settings have changed since.
        let c = &match &command.operation {
            Operation::HoldSlot { .. } => self.clients.at(routing.api_url.as_deref()),
            other => self.clients.at(other.sevenrooms_api()),
        };
        match &command.operation {
            Operation::HoldSlot {
                venue_id,
                date,
                time,
                party_size,
            } => {
                hold_slot::hold(
                    c,
                    venue_id,
                    *date,
                    *time,
                    *party_size,
                    hold_slot::HoldTerms {
                        seconds: self.hold_seconds,
                        routing: &routing,
                    },
                    deadline,
                )
                .await
            }
            Operation::ReleaseHold {
                venue_id, hold_id, ..
            } => hold_slot::release(c, venue_id, hold_id.as_ref(), deadline).await,
            Operation::BookExperience { guest, .. } => {
                let guest = match self.vault.open(command.saga_id, guest).await {
                    Ok(Some(contact)) => contact,
                    Ok(None) => {
                        return ReplyOutcome::BusinessFailure {
                            code: "GUEST_ERASED".into(),
                            message: "the guest's contact was erased: nobody to book for".into(),
                        };
                    }
                    Err(e @ como_ports::VaultError::Unauthentic(_)) => {
                        return ReplyOutcome::BusinessFailure {
                            code: "GUEST_UNREADABLE".into(),
                            message: e.to_string(),
                        };
                    }
                    // The keys may yet come (a rotation on its way here): try again.
                    Err(e) => {
                        return ReplyOutcome::RetryableFailure {
                            reason: e.to_string(),
                            retry_after_ms: None,
                            downstream_unavailable: false,
                        };
                    }
                };
                // SevenRooms' words may quote the guest back: masked before they leave.
                masked(
                    book_experience::book(c, &command.operation, &guest, deadline).await,
                    &guest,
                )
            }
            Operation::FindReservation {
                venue_id,
                external_id,
                date,
                ..
            } => book_experience::find(c, venue_id, *date, external_id, deadline).await,
            Operation::CancelReservation {
                venue_id,
                reservation_id,
                external_id,
                date,
                ..
            } => {
                book_experience::cancel(
                    c,
                    venue_id,
                    reservation_id.as_ref(),
                    external_id,
                    *date,
                    deadline,
                )
                .await
            }
            _ => misrouted(command, Worker::Sevenrooms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sevenrooms_words_quoting_the_guest_are_masked_in_every_kind_of_reply() {
        let request = como_schemas::examples::booking_request(
            "r-1",
            chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        );
        let g = request.guest.contact().unwrap().clone();
        let quote = format!(
            "guest {} {} ({}) refused",
            g.first_name.as_str(),
            g.last_name.as_str(),
            g.phone.as_str()
        );
        let replies = [
            ReplyOutcome::BusinessFailure {
                code: "INVALID".into(),
                message: quote.clone(),
            },
            ReplyOutcome::RetryableFailure {
                reason: quote.clone(),
                retry_after_ms: Some(5),
                downstream_unavailable: true,
            },
            ReplyOutcome::UnknownOutcome {
                reason: quote.clone(),
                downstream_unavailable: false,
            },
            ReplyOutcome::NotApplied {
                reason: quote.clone(),
            },
            ReplyOutcome::Deferred {
                reason: quote.clone(),
                retry_after_ms: None,
            },
        ];
        for reply in replies {
            let label = reply.label();
            let text = serde_json::to_string(&masked(reply, &g)).unwrap();
            for value in [
                g.first_name.as_str(),
                g.last_name.as_str(),
                g.phone.as_str(),
            ] {
                assert!(!text.contains(value), "{label}: {text}");
            }
            assert!(
                text.contains("guest [guest] [guest] ([guest]) refused"),
                "{text}"
            );
        }
    }
}
