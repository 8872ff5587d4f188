//! The command line on the AWS backend against a local moto server, as an operator runs it:
//! `infra bootstrap` (twice: the second run finds everything), `up --backend aws --demo 30
//! --exit-when-done --json` (the summary: every saga finished, the money invariant holds
//! against the simulators' ledgers), and `rotate-tokens` (a new Memberson token becomes the
//! secret's current version, each run a new one).

use std::process::{Command, Output};

use como_backend_aws::{AwsBackend, AwsConfig, names, testing};
use como_simulators::{SimConfig, Simulators};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_como-saga");

/// `como-saga` pointed at moto through the SDK's standard environment, nothing else.
fn como(endpoint: &str, prefix: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env("COMO_SAGA_BACKEND", "aws")
        .env("COMO_SAGA_AWS_PREFIX", prefix)
        .output()
        .expect("run como-saga")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn bootstrap_then_up_runs_the_demo_on_aws() {
    let endpoint = testing::moto().endpoint.clone();
    let prefix = testing::unique_prefix("cliup");

    let first = json_of(&como(
        &endpoint,
        &prefix,
        &["infra", "bootstrap", "--backend", "aws", "--json"],
    ));
    let created = first["created"].as_array().unwrap();
    assert!(
        created
            .iter()
            .any(|c| c.as_str() == Some(&format!("table {prefix}-sagas"))),
        "{first}"
    );
    assert!(
        created.len() >= 8 + 1 + 1 + 3,
        "8 queues, the table, the bus, 3 secrets: {first}"
    );
    let again = json_of(&como(
        &endpoint,
        &prefix,
        &["infra", "bootstrap", "--backend", "aws", "--json"],
    ));
    let created_again: Vec<&str> = again["created"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|c| !c.starts_with("TTL"))
        .collect();
    assert!(
        created_again.is_empty(),
        "a second run creates nothing: {again}"
    );

    let summary = json_of(&como(
        &endpoint,
        &prefix,
        &[
            "up",
            "--backend",
            "aws",
            "--demo",
            "30",
            "--exit-when-done",
            "--json",
        ],
    ));
    assert_eq!(summary["submitted"], 30, "{summary}");
    assert_eq!(summary["in_flight"], 0, "every saga finished: {summary}");
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    assert!(n("confirmed") >= 15, "most of the demo succeeds: {summary}");
    assert_eq!(
        n("confirmed") + n("compensated") + n("cancelled") + n("needs_operator") + n("rejected"),
        30,
        "{summary}"
    );
    assert_eq!(
        summary["money_invariant_violations"],
        serde_json::json!([]),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_tokens_promotes_a_tested_new_token() {
    let endpoint = tokio::task::spawn_blocking(|| testing::moto().endpoint.clone())
        .await
        .unwrap();
    let prefix = testing::unique_prefix("rotate");
    let sim = Simulators::start(SimConfig::default()).await.unwrap();
    let boot = {
        let (e, p) = (endpoint.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || como(&e, &p, &["infra", "bootstrap"]))
            .await
            .unwrap()
    };
    assert!(
        boot.status.success(),
        "{}",
        String::from_utf8_lossy(&boot.stderr)
    );

    let sdk = testing::sdk_config(&endpoint).await;
    let backend = AwsBackend::connect_with(
        &sdk,
        AwsConfig {
            prefix: prefix.clone(),
            ..AwsConfig::default()
        },
    )
    .await
    .unwrap();
    let secrets = backend.ports().secrets;
    assert_eq!(
        secrets
            .current(names::MEMBERSON_TOKEN_SECRET)
            .await
            .unwrap(),
        None,
        "no token before the first rotation"
    );

    let mut versions = Vec::new();
    for _ in 0..2 {
        let (e, p, url) = (
            endpoint.clone(),
            prefix.clone(),
            sim.memberson_url().to_owned(),
        );
        let out = tokio::task::spawn_blocking(move || {
            como(
                &e,
                &p,
                &["rotate-tokens", "--memberson-url", &url, "--json"],
            )
        })
        .await
        .unwrap();
        let result = json_of(&out);
        assert_eq!(result["promoted"], true, "{result}");
        let current = secrets
            .current(names::MEMBERSON_TOKEN_SECRET)
            .await
            .unwrap()
            .expect("a current token");
        assert_eq!(
            Some(current.version_id.as_str()),
            result["version_id"].as_str()
        );
        assert!(!current.value.is_empty());
        assert_eq!(
            secrets
                .pending(names::MEMBERSON_TOKEN_SECRET)
                .await
                .unwrap(),
            None,
            "nothing left pending"
        );
        versions.push(current);
    }
    assert_ne!(versions[0].version_id, versions[1].version_id);
    assert_ne!(
        versions[0].value, versions[1].value,
        "each run mints a new token"
    );

    // A wrong password: the new token cannot be minted, and the current one stays.
    let (e, p, url) = (
        endpoint.clone(),
        prefix.clone(),
        sim.memberson_url().to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["rotate-tokens", "--memberson-url", &url])
            .env("AWS_ENDPOINT_URL", &e)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("COMO_SAGA_BACKEND", "aws")
            .env("COMO_SAGA_AWS_PREFIX", &p)
            .env("COMO_SAGA_MEMBERSON_PASSWORD", "wrong")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        secrets
            .current(names::MEMBERSON_TOKEN_SECRET)
            .await
            .unwrap()
            .map(|c| c.version_id),
        Some(versions[1].version_id.clone())
    );
    let _ = sim.shutdown().await;
}
