//! The JSON Schema files under `schemas/json/` are the contract for the outside world. These
//! tests fail when the files and the Rust types drift apart, and check that the files really
//! describe the messages: every example validates, and values the edge refuses are refused by
//! the files too.

use chrono::NaiveDate;
use como_schemas::command::{CommandKind, OperationKind};
use como_schemas::examples;
use como_schemas::export::{SCHEMA_FILES, checked_in_dir, export_all, render};
use como_schemas::reply::StepOutput;
use como_schemas::values::HoldId;
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = checked_in_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); run `como-saga schemas export`",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("schema files are JSON")
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&load(name))
        .expect("a valid JSON Schema")
}

fn assert_valid(name: &str, instance: &Value) {
    let v = validator(name);
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name} refused {instance}: {errors:?}");
}

fn assert_invalid(name: &str, instance: &Value) {
    assert!(
        !validator(name).is_valid(instance),
        "{name} accepted {instance}"
    );
}

#[test]
fn schema_files_match_types() {
    if std::env::var_os("COMO_UPDATE_SCHEMAS").is_some() {
        export_all(checked_in_dir()).expect("write schema files");
    }
    let mut drifted = Vec::new();
    for file in SCHEMA_FILES {
        let expected = render(&(file.generate)());
        let actual =
            std::fs::read_to_string(checked_in_dir().join(file.file_name)).unwrap_or_default();
        if expected != actual {
            drifted.push(file.file_name);
        }
    }
    assert!(
        drifted.is_empty(),
        "schema files differ from the Rust types: {drifted:?}. If the change is intended, run \
         `cargo run -- schemas export` (or COMO_UPDATE_SCHEMAS=1 cargo test -p como-schemas) and \
         review the diff: a changed contract may need a new schema_version."
    );
}

#[test]
fn every_schema_file_is_generated_and_no_stray_files() {
    let mut on_disk: Vec<String> = std::fs::read_dir(checked_in_dir())
        .expect("schemas/json exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = SCHEMA_FILES
        .iter()
        .map(|f| f.file_name.to_owned())
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
}

#[test]
fn examples_validate_against_the_files() {
    let request =
        examples::booking_request("req-1", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
    assert_valid(
        "booking-requested.schema.json",
        &serde_json::to_value(&request).unwrap(),
    );

    let held = StepOutput::SlotHeld {
        hold_id: HoldId::parse("h-1").unwrap(),
        sevenrooms_api: None,
    };
    let steps = [
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
            CommandKind::Reconcile,
            OperationKind::ReplayRedemption,
        ),
        (
            "redeem_credits",
            CommandKind::Compensation,
            OperationKind::VoidRedemption,
        ),
        (
            "book_experience",
            CommandKind::Action,
            OperationKind::BookExperience,
        ),
        (
            "book_experience",
            CommandKind::Reconcile,
            OperationKind::FindReservation,
        ),
        (
            "book_experience",
            CommandKind::Compensation,
            OperationKind::CancelReservation,
        ),
    ];
    for (step, kind, op) in steps {
        let cmd = examples::command(&request, step, kind, op, &[&held]);
        assert_valid(
            "worker-command.schema.json",
            &serde_json::to_value(&cmd).unwrap(),
        );
        for outcome in examples::all_outcomes() {
            let reply = examples::reply(&cmd, outcome);
            assert_valid(
                "worker-reply.schema.json",
                &serde_json::to_value(&reply).unwrap(),
            );
        }
    }
    for event in examples::all_events(&request) {
        assert_valid(
            "saga-event.schema.json",
            &serde_json::to_value(&event).unwrap(),
        );
    }
    assert_valid(
        "booking-rejected.schema.json",
        &serde_json::to_value(examples::booking_rejected()).unwrap(),
    );
}

/// A value the Rust edge refuses must be refused by the published schema as well, so that a
/// producer validating against the file learns of the mistake before sending.
#[test]
fn the_files_refuse_what_the_edge_refuses() {
    let request =
        examples::booking_request("req-1", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
    let good = serde_json::to_value(&request).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("party_size", json!(0)),
        ("party_size", json!(51)),
        ("quoted_credits", json!(-5)),
        ("schema_version", json!(2)),
        ("time", json!("7pm")),
        ("date", json!("24/12/2026")),
        ("member_no", json!("")),
        ("request_id", json!("has spaces")),
    ];
    for (field, value) in cases {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert_invalid("booking-requested.schema.json", &bad);
        let text = serde_json::to_vec(&bad).unwrap();
        let err = como_schemas::parse_booking_request(&text, today()).expect_err("edge refuses it");
        assert_eq!(err.field, field, "{value} in {field}: {err}");
    }
    let mut bad = good.clone();
    bad["guest"]["phone"] = json!("91234567");
    assert_invalid("booking-requested.schema.json", &bad);
    let mut bad = good.clone();
    bad["surprise"] = json!(true);
    assert_invalid("booking-requested.schema.json", &bad);
}
