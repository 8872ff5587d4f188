//! A deployment's forward deadline (`COMO_SAGA_DEADLINE`) is the deadline of every saga started
//! after it is set; an unusable one is refused. Its own test binary, since it is process-wide.

mod support;

use std::time::Duration;

use chrono::NaiveDate;
use como_engine::como;
use como_orchestrator::IntakeOutcome;
use como_orchestrator::advance::{current_definition, set_deadline};
use como_orchestrator::intake::handle_request;
use como_orchestrator::submit;
use como_ports::QueueName;
use como_schemas::examples;
use support::*;

#[tokio::test]
async fn a_deployment_deadline_bounds_the_sagas_started_after_it() {
    assert_eq!(
        current_definition().deadline_ms,
        como::booking_v1().deadline_ms
    );
    assert!(
        set_deadline(Duration::from_millis(500)).is_err(),
        "under a second"
    );
    set_deadline(Duration::from_secs(90)).unwrap();
    assert_eq!(current_definition().deadline_ms, 90_000);

    let r = rig();
    let req =
        examples::booking_request("deadline-1", NaiveDate::from_ymd_opt(2026, 12, 24).unwrap());
    submit(&r.ports, &req).await.unwrap();
    let d = next(&r.ports, QueueName::Requests).await.unwrap();
    match handle_request(&r.ports, &r.catalogue, &d).await.unwrap() {
        IntakeOutcome::Started(applied) => {
            assert_eq!(applied.state.deadline, NOW.plus_ms(90_000));
        }
        other => panic!("{other:?}"),
    }
}
