//! `como-saga submit`: put one booking request on the request queue. The request is checked
//! here with the same edge validation the orchestrator applies, so a mistake is reported at
//! once, naming the field. Submitting the same `--request-id` again is the same request; the
//! same `--request-id` with another booking is refused by the orchestrator (a `BookingRejected`
//! and a dead letter), and reported here with the same check
//! (`como_orchestrator::intake::same_request`) against the saga that holds the id.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use como_engine::StatusKind;
use como_schemas::parse_booking_request;

use crate::exit::{self, NEEDS_OPERATOR, NOT_BOOKED, STILL_RUNNING, USAGE};
use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

// The exit codes are `crate::exit`'s; this is what they mean for `submit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes:
  0  submitted (with --wait: the booking is confirmed)
  1  the command failed (for example, the backend cannot be reached)
  2  bad usage, or an invalid request (named by field); nothing was sent
  3  --wait gave up after 5 minutes; the saga goes on and may still finish
  4  the booking was not made: the saga was compensated or cancelled (the reason is
     printed), or the request is refused because its request id is already used by
     another booking (REQUEST_ID_REUSED, on standard error; without --wait, told only if
     that booking's saga already exists)
  5  --wait: the saga stopped for an operator (the reason is printed); it is neither
     booked nor undone until someone acts")]
pub struct SubmitArgs {
    /// The paying member's number.
    #[arg(long)]
    pub member: String,
    /// The venue's id.
    #[arg(long)]
    pub venue: String,
    /// The date, YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// The slot's start, HH:MM (venue local time).
    #[arg(long)]
    pub time: String,
    /// Number of guests.
    #[arg(long)]
    pub party: i64,
    /// The price in credits the member was quoted.
    #[arg(long)]
    pub credits: i64,
    /// The request's id; a repeated id is the same request (a duplicate that changes nothing),
    /// and a repeated id with another booking is refused (exit code 4). A new one is made if
    /// not given.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The guest's first name on the reservation.
    #[arg(long, default_value = "Como")]
    pub first_name: String,
    /// The guest's last name on the reservation.
    #[arg(long, default_value = "Member")]
    pub last_name: String,
    /// The guest's phone, E.164.
    #[arg(long, default_value = "+6560000000")]
    pub phone: String,
    /// The guest's e-mail.
    #[arg(long)]
    pub email: Option<String>,
    /// Wait until the saga is finished or needs an operator, and print how it ended: the
    /// reservation and the receipt, or why it was not booked.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object on stdout, and nothing else: `{"request_id", "saga_id"}`; with
    /// --wait, the saga as it ended (the API's view of it).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid_like()));
    let mut doc = serde_json::json!({
        "schema_version": como_schemas::SCHEMA_VERSION,
        "request_id": request_id,
        "member_no": args.member,
        "venue_id": args.venue,
        "date": args.date,
        "time": args.time,
        "party_size": args.party,
        "quoted_credits": args.credits,
        "guest": {
            "first_name": args.first_name,
            "last_name": args.last_name,
            "phone": args.phone,
        },
    });
    if let Some(email) = &args.email {
        doc["guest"]["email"] = serde_json::json!(email);
    }
    let today = chrono::Utc::now().date_naive();
    let request = match parse_booking_request(doc.to_string().as_bytes(), today) {
        Ok(r) => r,
        Err(invalid) => {
            eprintln!("error: {invalid}");
            return Ok(exit::code(USAGE));
        }
    };
    if let Err(invalid) = settings.venues.check(&request) {
        eprintln!("error: {invalid}");
        return Ok(exit::code(USAGE));
    }
    stack::runtime()?.block_on(async {
        crate::aws_credentials::check(&settings).await?;
        let mut backend = stack::open_backend(&settings)?;
        // The guest's contact goes on the queue sealed with the deployment's data keys.
        backend.ports.vault = stack::data_keys(&settings, &backend.ports, false).await?;
        let saga = como_orchestrator::submit(&backend.ports, &request)
            .await
            .context("cannot submit the request")?;
        let submitted = format!("submitted request {} as saga {saga}", request.request_id);
        // With --json, standard output holds the JSON alone.
        if !args.json {
            println!("{submitted}");
        } else if args.wait {
            eprintln!("{submitted}");
        } else {
            println!(
                "{}",
                serde_json::json!({"request_id": request.request_id, "saga_id": saga})
            );
        }
        // A request id already used by another booking: the orchestrator refuses the request
        // (it was sent all the same, so that the refusal is recorded as for any other client).
        let vault = backend.ports.vault.clone();
        let refused = async |existing: &como_engine::SagaState| {
            let conflict =
                como_orchestrator::intake::same_request(vault.as_ref(), &existing.request, &request)
                    .await
                    .ok()?
                    .err()?;
            eprintln!("error: the request was refused: {}", conflict.reason);
            Some(exit::code(NOT_BOOKED))
        };
        let mut code = ExitCode::SUCCESS;
        if !args.wait {
            if let Some(s) = backend.ports.store.get(saga).await? {
                code = refused(&s.value).await.unwrap_or(code);
            }
        } else {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(300);
            let mut last_status = None;
            loop {
                if tokio::time::Instant::now() > give_up {
                    let now = last_status
                        .map(|s| serde_json::to_string(&s))
                        .transpose()?
                        .unwrap_or_else(|| "not yet started".into());
                    eprintln!(
                        "still not finished after 5 minutes; the saga {saga} goes on without this command (now: {now})"
                    );
                    code = exit::code(STILL_RUNNING);
                    break;
                }
                if let Some(s) = backend.ports.store.get(saga).await? {
                    last_status = Some(s.value.status.clone());
                    if let Some(c) = refused(&s.value).await {
                        code = c;
                        break;
                    }
                    let kind = s.value.status.kind();
                    if kind.is_terminal() || kind == StatusKind::NeedsOperator {
                        let history = backend.ports.store.history(saga).await?;
                        if args.json {
                            let view = como_orchestrator::view::SagaView::of(&s.value, &history);
                            println!("{}", serde_json::to_string(&view)?);
                        } else {
                            println!("{}", outcome_line(&s.value, &history));
                        }
                        code = exit::code(ended(kind));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        backend.close().await;
        Ok(code)
    })
}

/// The exit code of `--wait` for a saga that ended, or stopped, as `kind`.
fn ended(kind: StatusKind) -> u8 {
    match kind {
        StatusKind::Confirmed => exit::SUCCESS,
        StatusKind::NeedsOperator => NEEDS_OPERATOR,
        StatusKind::Compensated | StatusKind::Cancelled => NOT_BOOKED,
        // Not ended yet (never asked: `--wait` stops only at one of the above).
        StatusKind::Running
        | StatusKind::WaitingForDownstream
        | StatusKind::Reconciling
        | StatusKind::Compensating => STILL_RUNNING,
    }
}

/// How a finished saga ended, for a person: the reservation and the receipt, or why it was
/// not booked (the refusal or error that turned it back, or why it waits for an operator).
fn outcome_line(state: &como_engine::SagaState, history: &[como_engine::HistoryEntry]) -> String {
    use como_engine::{HistoryKind, SagaStatus};
    use como_schemas::StepOutput;
    let why = || {
        history
            .iter()
            .rev()
            .find(|h| h.kind == HistoryKind::CompensationStarted)
            .and_then(|h| h.error.clone().or_else(|| h.detail.clone()))
            .or_else(|| state.steps.iter().rev().find_map(|s| s.last_error.clone()))
            .unwrap_or_else(|| "no reason recorded".into())
    };
    match &state.status {
        SagaStatus::Confirmed => {
            let mut parts = vec!["confirmed".to_owned()];
            for step in &state.steps {
                match &step.output {
                    Some(StepOutput::ExperienceBooked { reservation_id }) => {
                        parts.push(format!("reservation {reservation_id}"))
                    }
                    Some(StepOutput::CreditsRedeemed { receipt_no, .. }) => parts.push(format!(
                        "{} credits redeemed (receipt {receipt_no})",
                        state.request.quoted_credits
                    )),
                    _ => {}
                }
            }
            parts.join(": ")
        }
        SagaStatus::Compensated => {
            format!("compensated: not booked, nothing charged: {}", why())
        }
        SagaStatus::Cancelled => format!("cancelled: {}", why()),
        SagaStatus::NeedsOperator { reason, detail, .. } => {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("needs an operator ({reason}): {detail}")
        }
        other => other.kind().as_str().to_owned(),
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_a_saga_ends_has_its_exit_code() {
        assert_eq!(ended(StatusKind::Confirmed), 0);
        assert_eq!(ended(StatusKind::Compensated), 4);
        assert_eq!(ended(StatusKind::Cancelled), 4);
        assert_eq!(ended(StatusKind::NeedsOperator), 5);
        assert_eq!(ended(StatusKind::Compensating), 3);
    }
}
