//! Writes the seeds of the message, fault-rule and settings targets from the project's own
//! valid examples (`como_schemas::examples`, the simulators' README, the README's settings):
//!
//!     cd fuzz && cargo +nightly run --example write_seeds
//!
//! The client targets' seeds are the simulators' real answers: `seeds/capture.sh`.

use std::path::Path;

use chrono::NaiveDate;
use como_schemas::{
    CommandKind, HoldId, OperationKind, ReservationId, StepOutput, WorkerCommand, examples,
};

fn write(target: &str, name: &str, body: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

fn main() {
    let date = NaiveDate::from_ymd_opt(2026, 12, 24).unwrap();
    let request = examples::booking_request("seed-1", date);
    write(
        "booking_request",
        "example",
        serde_json::to_vec_pretty(&request).unwrap(),
    );
    let mut no_email = request.clone();
    let mut contact = request.guest.contact().expect("the example's guest").clone();
    contact.email = None;
    no_email.guest = contact.into();
    write(
        "booking_request",
        "no-email",
        serde_json::to_vec(&no_email).unwrap(),
    );
    let mut party = serde_json::to_value(&request).unwrap();
    party["party_size"] = 0.into();
    write("booking_request", "party-zero", party.to_string());

    let held = StepOutput::SlotHeld {
        hold_id: HoldId::parse("hold-1").unwrap(),
        sevenrooms_api: None,
    };
    let booked = StepOutput::ExperienceBooked {
        reservation_id: ReservationId::parse("res-1").unwrap(),
    };
    let outputs = [&held, &booked];
    let commands: Vec<(&str, WorkerCommand)> = [
        (
            "check_credits",
            CommandKind::Action,
            OperationKind::CheckCredits,
        ),
        ("hold_slot", CommandKind::Action, OperationKind::HoldSlot),
        (
            "hold_slot",
            CommandKind::Compensation,
            OperationKind::ReleaseHold,
        ),
        (
            "redeem_credits",
            CommandKind::Action,
            OperationKind::RedeemCredits,
        ),
        (
            "redeem_credits",
            CommandKind::Compensation,
            OperationKind::VoidRedemption,
        ),
        (
            "redeem_credits",
            CommandKind::Reconcile,
            OperationKind::ReplayRedemption,
        ),
        (
            "book_experience",
            CommandKind::Action,
            OperationKind::BookExperience,
        ),
        (
            "book_experience",
            CommandKind::Compensation,
            OperationKind::CancelReservation,
        ),
        (
            "book_experience",
            CommandKind::Reconcile,
            OperationKind::FindReservation,
        ),
    ]
    .into_iter()
    .map(|(step, kind, op)| (step, examples::command(&request, step, kind, op, &outputs)))
    .collect();
    for (step, command) in &commands {
        let name = format!("{step}-{}", command.kind);
        write(
            "worker_command",
            &name,
            serde_json::to_vec(command).unwrap(),
        );
    }
    for (i, outcome) in examples::all_outcomes().into_iter().enumerate() {
        let (_, command) = &commands[i % commands.len()];
        let reply = examples::reply(command, outcome.clone());
        write(
            "worker_reply",
            &format!("{}-{i}", outcome.label()),
            serde_json::to_vec(&reply).unwrap(),
        );
    }
    for (i, output) in [
        StepOutput::Done,
        StepOutput::CreditsChecked {
            balance: como_schemas::Credits::new(5_000).unwrap(),
        },
        held.clone(),
        StepOutput::CreditsRedeemed {
            transaction_id: como_schemas::TransactionId::parse("TX1").unwrap(),
            receipt_no: como_schemas::ReceiptNo::parse("CS-1").unwrap(),
            balance: Some(como_schemas::Credits::new(3_800).unwrap()),
        },
        booked.clone(),
        StepOutput::Compensated {
            note: Some("hold released".into()),
            undone: true,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let reply = examples::reply(
            &commands[0].1,
            como_schemas::ReplyOutcome::Succeeded { output },
        );
        write(
            "worker_reply",
            &format!("succeeded-{i}"),
            serde_json::to_vec(&reply).unwrap(),
        );
    }

    write(
        "fault_rules",
        "one",
        r#"{"kind": "commit_then_fail", "status": 500, "ops": ["redeem"], "probability": 0.2, "times": 5, "after_ms": 0, "for_ms": 10000}"#,
    );
    write(
        "fault_rules",
        "list",
        r#"[{"kind":"latency","fixed_ms":1,"jitter_ms":5},{"kind":"hang","ms":10},{"kind":"server_error","status":503,"ops":["book","hold"]},{"kind":"rate_limited","retry_after_secs":2},{"kind":"token_expiry","times":1},{"kind":"outage","status":502,"after_ms":10,"for_ms":20},{"kind":"refuse","code":"SLOT_UNAVAILABLE","probability":0.5}]"#,
    );
    write(
        "fault_rules",
        "file",
        r#"{"memberson":[{"kind":"refuse","code":"INSUFFICIENT_POINTS","ops":["redeem"]}],"sevenrooms":[{"kind":"commit_then_fail","ops":["book"],"lost_ms":5}]}"#,
    );

    write(
        "settings_toml",
        "readme",
        r#"backend = "embedded"
database = "/var/lib/como-saga/como-saga.sqlite"

[memberson]
base_url = "https://como.memgate.com"
svc_auth = "..."
username = "..."
password = "..."
point_type = "COMO_CREDITS"
rate_limit_per_second = 50

[sevenrooms]
base_url = "https://api.sevenrooms.com/2_4"
client_id = "..."
client_secret = "..."
rate_limit_per_second = 20
hold_seconds = 300

[venues]
"como-dempsey-candlenut" = { credits_per_guest = 600 }
"#,
    );
    write("settings_toml", "empty", "");
    write(
        "settings_toml",
        "aws",
        "backend = \"aws\"\naws_prefix = \"como-staging\"\n[venues.como-cuisine]\ncredits_per_guest = 600\n",
    );
    println!("seeds written");
}
