//! The command line on the AWS backend against a local moto server, as an operator runs it:
//! `infra bootstrap` (twice: the second run finds everything), `up --backend aws --demo 30
//! --exit-when-done --json` (the summary: every saga finished, the money invariant holds
//! against the simulators' ledgers; `up` fills the empty token secret first, and on a second
//! run replaces the token its new simulators refuse), `rotate-tokens` (a new Memberson token
//! becomes the secret's current version, each run a new one), and the CRM worker as its own
//! process taking its token from the secret: waiting for the first rotation, then re-reading
//! the secret when Memberson refuses a revoked token. And a SevenRooms outage on AWS: the
//! sagas wait (their commands parked on SQS, the health shared through one DynamoDB item) and
//! confirm after it without spending attempts.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use chrono::Days;
use como_backend_aws::{AwsBackend, AwsConfig, names, testing};
use como_engine::{SagaStatus, StatusKind};
use como_ports::Backend;
use como_schemas::{
    BookingRequested, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone, RequestId,
    SagaId, SchemaVersion, SlotTime, VenueId,
};
use como_simulators::invariant::{SagaKeys, check};
use como_simulators::{SimConfig, SimHandle, Simulators, seed};
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

    // Right after the bootstrap the token secret holds no token: `up` rotates once first.
    let (summary, said) = up_demo(&endpoint, &prefix, 30);
    assert!(
        said.contains("had no token yet: rotated it once"),
        "up says it filled the token secret: {said}"
    );
    assert_all_finished(&summary, 30);
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    assert!(n("confirmed") >= 15, "most of the demo succeeds: {summary}");
    assert_eq!(
        n("confirmed") + n("compensated") + n("cancelled") + n("needs_operator") + n("rejected"),
        30,
        "{summary}"
    );

    // A second run: the secret holds the first run's token, which these new simulators never
    // issued, so `up` rotates again rather than leave its CRM worker refused.
    let (summary, said) = up_demo(&endpoint, &prefix, 5);
    assert!(
        said.contains("Memberson refused the token in the memberson-token secret: rotated it once"),
        "up replaces a token its simulators refuse: {said}"
    );
    assert_all_finished(&summary, 5);
}

#[test]
fn bench_on_aws_reports_api_calls_and_cost_per_saga() {
    let endpoint = testing::moto().endpoint.clone();
    let prefix = testing::unique_prefix("clibench");
    json_of(&como(
        &endpoint,
        &prefix,
        &["infra", "bootstrap", "--backend", "aws", "--json"],
    ));
    let report = json_of(&como(
        &endpoint,
        &prefix,
        &[
            "bench",
            "--backend",
            "aws",
            "--sagas",
            "20",
            "--concurrency",
            "10",
            "--json",
        ],
    ));
    assert_eq!(report["backend"], "aws", "{report}");
    assert_eq!(report["confirmed"], 20, "{report}");
    let per = &report["aws"]["per_saga"];
    let n = |k: &str| per[k].as_f64().unwrap_or(0.0);
    // Each saga sends 9 messages and writes itself 5 times, whatever the batching.
    assert!(n("sqs SendMessageBatch") >= 0.9, "{report}");
    assert!(n("dynamodb PutItem") >= 5.0, "{report}");
    let cost = &report["aws"]["cost"];
    let total = cost["total_dollars"].as_f64().unwrap();
    assert!(total > 5.0 && total < 30.0, "{cost}");
    assert_eq!(
        cost["events"].as_f64(),
        Some(1.0),
        "one outcome event a saga: {cost}"
    );
}

/// Runs `up --backend aws --demo N --exit-when-done --json`; returns the summary and what `up`
/// said on standard error.
fn up_demo(endpoint: &str, prefix: &str, n: usize) -> (Value, String) {
    let n = n.to_string();
    let out = como(
        endpoint,
        prefix,
        &[
            "up",
            "--backend",
            "aws",
            "--demo",
            &n,
            "--exit-when-done",
            "--json",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    (
        json_of(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_all_finished(summary: &Value, n: u64) {
    assert_eq!(summary["submitted"], n, "{summary}");
    assert_eq!(summary["in_flight"], 0, "every saga finished: {summary}");
    assert_eq!(
        summary["money_invariant_violations"],
        serde_json::json!([]),
        "{summary}"
    );
}

/// A fresh deployment on moto (`infra bootstrap` run as the command), new simulators, and a
/// connection to the deployment: endpoint, prefix, simulators, backend.
async fn bootstrapped(name: &str) -> (String, String, SimHandle, AwsBackend) {
    let endpoint = tokio::task::spawn_blocking(|| testing::moto().endpoint.clone())
        .await
        .unwrap();
    let prefix = testing::unique_prefix(name);
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
    (endpoint, prefix, sim, backend)
}

/// The deployment's ports with its data keys (the secret `infra bootstrap` made), as the roles
/// read them: what submits a booking seals its guest with them.
async fn keyed(backend: &AwsBackend) -> Backend {
    let ports = backend.ports();
    let keys = como_privacy::Keys::load(
        como_privacy::KeySource::Secret {
            store: ports.secrets.clone(),
            name: como_app::stack::DATA_KEYS_SECRET.to_owned(),
        },
        false,
    )
    .await
    .expect("infra bootstrap made the data keys");
    ports.with_vault(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_tokens_promotes_a_tested_new_token() {
    let (endpoint, prefix, sim, backend) = bootstrapped("rotate").await;
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

/// A role (`orchestrator`, `worker crm`, `worker sevenrooms`) as its own process on the AWS
/// backend, its output in `log`; killed when dropped.
struct AwsRole {
    child: Child,
    log: std::path::PathBuf,
}

impl AwsRole {
    /// The orchestrator and both workers.
    fn all(endpoint: &str, prefix: &str, sim: &SimHandle, dir: &Path) -> [AwsRole; 3] {
        [
            AwsRole::start(&["orchestrator"], endpoint, prefix, sim, dir),
            AwsRole::start(&["worker", "crm"], endpoint, prefix, sim, dir),
            AwsRole::start(&["worker", "sevenrooms"], endpoint, prefix, sim, dir),
        ]
    }

    fn start(args: &[&str], endpoint: &str, prefix: &str, sim: &SimHandle, dir: &Path) -> Self {
        let log = dir.join(format!("{}.log", args.join("-")));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env("COMO_SAGA_BACKEND", "aws")
            .env("COMO_SAGA_AWS_PREFIX", prefix)
            .env("COMO_SAGA_MEMBERSON_URL", sim.memberson_url())
            .env("COMO_SAGA_SEVENROOMS_URL", sim.sevenrooms_url())
            .env("COMO_SAGA_LOG", "warn")
            // The simulators' credentials and the demo venues.
            .env("COMO_SAGA_DEV_DEFAULTS", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start a role");
        AwsRole { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AwsRole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` bookings that all succeed: bulk members (ten million credits each) at the large venue.
fn sure_bookings(n: usize, tag: &str) -> Vec<BookingRequested> {
    let today = chrono::Utc::now().date_naive();
    (0..n)
        .map(|i| BookingRequested {
            schema_version: SchemaVersion::CURRENT,
            request_id: RequestId::parse(format!("{tag}-{i}")).unwrap(),
            member_no: MemberNo::parse(seed::bulk_member_no(i)).unwrap(),
            venue_id: VenueId::parse(seed::VENUE_LARGE).unwrap(),
            date: today.checked_add_days(Days::new(2 + i as u64)).unwrap(),
            time: SlotTime::parse("19:00").unwrap(),
            party_size: PartySize::new(2).unwrap(),
            quoted_credits: Credits::new(1_200).unwrap(),
            traceparent: None,
            availability_id: None,
            guest: GuestContact {
                first_name: PersonName::parse("Test").unwrap(),
                last_name: PersonName::parse(format!("Guest {tag} {i}")).unwrap(),
                phone: Phone::parse(format!("+6592{:06}", i)).unwrap(),
                email: None,
            }
            .into(),
        })
        .collect()
}

async fn submit_all(ports: &Backend, requests: &[BookingRequested]) -> Vec<SagaId> {
    let mut ids = Vec::new();
    for r in requests {
        ids.push(como_orchestrator::submit(ports, r).await.unwrap());
    }
    ids
}

/// Memberson's counters, read from its admin route as any outside checker would.
async fn memberson_stats(sim: &SimHandle) -> Value {
    reqwest::get(format!("{}/_sim/stats", sim.memberson_url()))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn stat(stats: &Value, path: &[&str]) -> u64 {
    let mut v = stats;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

/// Waits for `ids` to finish; asserts that every one was confirmed and that the money
/// invariant holds against the simulators' ledgers. The check reads the whole ledgers (an
/// effect of no listed saga is a violation), so `ids` are all the sagas of the test so far.
async fn assert_confirmed(ports: &Backend, sim: &SimHandle, ids: &[SagaId], what: &str) {
    let states = support::wait_all(ports, ids, Duration::from_secs(40)).await;
    let (counts, violations) = support::verdict(&states, &sim.ledger());
    assert_eq!(
        counts.get(StatusKind::Confirmed.as_str()),
        Some(&ids.len()),
        "{what}: every saga confirmed: {counts:?}"
    );
    assert!(violations.is_empty(), "{what}: {violations:?}");
}

async fn rotate(endpoint: &str, prefix: &str, sim: &SimHandle) -> Value {
    let (e, p, url) = (
        endpoint.to_owned(),
        prefix.to_owned(),
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
    json_of(&out)
}

/// The CRM worker on AWS takes its Memberson token from the secret and never mints one:
/// started before the first rotation, it says which secret is empty and which command fills it,
/// keeps running, and its commands wait; once `rotate-tokens` runs, they complete. After
/// Memberson revokes that token (the simulator's admin route), the worker's next call is
/// refused with 401; the next rotation lands, the worker reads the secret again, and the sagas
/// complete with the new token, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_worker_takes_its_token_from_the_secret_and_rereads_it_after_a_401() {
    let started = Instant::now();
    let (endpoint, prefix, sim, backend) = bootstrapped("tokens").await;
    let ports = keyed(&backend).await;

    let dir = tempfile::tempdir().unwrap();
    let mut crm = AwsRole::start(&["worker", "crm"], &endpoint, &prefix, &sim, dir.path());
    let _roles = [
        AwsRole::start(&["orchestrator"], &endpoint, &prefix, &sim, dir.path()),
        AwsRole::start(
            &["worker", "sevenrooms"],
            &endpoint,
            &prefix,
            &sim,
            dir.path(),
        ),
    ];

    // 1. No token yet: the worker says so, naming the secret and the command, and stays up.
    let secret = format!("{prefix}/memberson-token");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !crm.output().contains(&secret) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let said = crm.output();
    assert!(
        said.contains(&secret)
            && said.contains("no current version")
            && said.contains("como-saga rotate-tokens --backend aws"),
        "the worker names the empty secret and the command that fills it: {said}"
    );
    let early = submit_all(&ports, &sure_bookings(3, "early")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        crm.running(),
        "the worker waits, it does not exit: {}",
        crm.output()
    );
    for id in &early {
        let state = ports.store.get(*id).await.unwrap().map(|v| v.value);
        let kind = state.as_ref().map(|s| s.status.kind());
        assert!(
            kind.is_none_or(|k| !k.is_terminal()),
            "a saga waits for the token rather than ending: {kind:?}"
        );
    }
    let before = memberson_stats(&sim).await;
    assert_eq!(
        stat(&before, &["requests", "redeem"]),
        0,
        "nothing redeemed without a token: {before}"
    );

    // 2. The first rotation: the waiting sagas complete, with no restart.
    let first = rotate(&endpoint, &prefix, &sim).await;
    assert_eq!(first["promoted"], true, "{first}");
    assert_confirmed(&ports, &sim, &early, "after the first rotation").await;

    // 3. Memberson revokes that token: the worker is refused (401) and waits for a rotation.
    let stats = memberson_stats(&sim).await;
    let refused_before = stat(&stats, &["unauthorized"]);
    reqwest::Client::new()
        .post(format!("{}/_sim/tokens/expire", sim.memberson_url()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let revoked = submit_all(&ports, &sure_bookings(4, "revoked")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&memberson_stats(&sim).await, &["unauthorized"]) == refused_before {
        assert!(
            Instant::now() < deadline,
            "the revoked token was never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. The next rotation lands: the worker reads the secret again and the sagas complete.
    let second = rotate(&endpoint, &prefix, &sim).await;
    assert_eq!(second["promoted"], true, "{second}");
    assert_ne!(first["version_id"], second["version_id"]);
    let so_far = [early.clone(), revoked].concat();
    assert_confirmed(&ports, &sim, &so_far, "after the second rotation").await;

    // 5. From now on the worker calls with the new token: more sagas, and no more 401s.
    let after = memberson_stats(&sim).await;
    let more = submit_all(&ports, &sure_bookings(3, "after")).await;
    let so_far = [so_far, more].concat();
    assert_confirmed(&ports, &sim, &so_far, "with the new token").await;
    let end = memberson_stats(&sim).await;
    assert_eq!(
        stat(&end, &["unauthorized"]),
        stat(&after, &["unauthorized"]),
        "no 401 once the new token is read: {end}"
    );
    // Only the two rotations minted tokens (each with one authenticate call): the worker
    // never authenticated itself, so every call it made since step 4 carried the only token
    // Memberson still accepts, the second rotation's.
    assert_eq!(stat(&end, &["tokens_issued"]), 2, "{end}");
    assert_eq!(stat(&end, &["requests", "authenticate"]), 2, "{end}");
    assert!(crm.running());
    eprintln!(
        "token test took {:?}; the CRM worker said:\n{}",
        started.elapsed(),
        crm.output()
    );
    let _ = sim.shutdown().await;
}

/// A request id reused for another booking is refused on AWS as on the embedded backend
/// (`submit::submit_wait_refuses_a_reused_request_id_with_other_content`): `submit --wait`
/// answers 4 naming the conflict, the orchestrator dead-letters the request, the identical
/// repeat is a harmless duplicate, and the first saga is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_on_aws_refuses_a_reused_request_id_with_other_content() {
    let (endpoint, prefix, sim, backend) = bootstrapped("reuse").await;
    let ports = keyed(&backend).await;
    assert_eq!(rotate(&endpoint, &prefix, &sim).await["promoted"], true);
    let dir = tempfile::tempdir().unwrap();
    let _roles = AwsRole::all(&endpoint, &prefix, &sim, dir.path());
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| today.checked_add_days(Days::new(n)).unwrap().to_string();
    let booking = |venue: &str, date: String, party: &str, credits: &str| -> Vec<String> {
        [
            "submit",
            "--member",
            seed::MEMBER_RICH,
            "--venue",
            venue,
            "--date",
            &date,
            "--time",
            "19:30",
            "--party",
            party,
            "--credits",
            credits,
            "--request-id",
            "reused-aws",
            "--wait",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let submit = |args: Vec<String>| {
        let (e, p) = (endpoint.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = como(&e, &p, &args);
            let said = format!(
                "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out, said)
        })
    };
    let first = booking(seed::VENUE_LARGE, day(2), "2", "1200");
    let saga = SagaId::for_request(&RequestId::parse("reused-aws").unwrap());

    for _ in 0..2 {
        // The first time, and the identical request again: confirmed both times.
        let (out, said) = submit(first.clone()).await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{said}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("confirmed"),
            "{said}"
        );
    }
    let before = ports.store.get(saga).await.unwrap().unwrap();
    let history = ports.store.history(saga).await.unwrap().len();

    let (out, said) = submit(booking(seed::VENUE_SMALL, day(3), "3", "4500"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.contains(&format!(
            "REQUEST_ID_REUSED: request id reused-aws is already used by saga {saga} with \
             other content (venue_id, date, party_size, quoted_credits differ)"
        )),
        "{said}"
    );
    support::wait_for_dead_letter(&ports, como_ports::QueueName::Requests, "REQUEST_ID_REUSED")
        .await;
    let after = ports.store.get(saga).await.unwrap().unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.value, before.value);
    assert_eq!(ports.store.history(saga).await.unwrap().len(), history);
    let _ = sim.shutdown().await;
}

/// A SevenRooms outage on AWS spends no saga's attempts: SevenRooms answers 503 to everything
/// for 20 s while bookings that succeed in fair weather go through the roles as processes. The
/// sagas show that they wait for SevenRooms (with since when) rather than fail or retry; the
/// worker's circuit opens, its commands wait parked on SQS, and the worker processes share the
/// downstream's health through one DynamoDB item (`health/sevenrooms`). After the outage a probe
/// finds SevenRooms up, the record says so, and every saga confirms with one charged attempt
/// per step and no reconciliation; the simulators' ledgers hold no violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sevenrooms_outage_on_aws_makes_bookings_wait_then_confirm_without_spending_attempts() {
    const OUTAGE: Duration = Duration::from_secs(20);
    let started = Instant::now();
    let (endpoint, prefix, sim, backend) = bootstrapped("outage").await;
    let ports = keyed(&backend).await;
    assert_eq!(rotate(&endpoint, &prefix, &sim).await["promoted"], true);
    let dir = tempfile::tempdir().unwrap();
    let roles = AwsRole::all(&endpoint, &prefix, &sim, dir.path());
    let said = || {
        roles
            .iter()
            .map(|r| format!("--- {}\n{}", r.log.display(), r.output()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Fair weather first: one booking confirms, so the roles are up before the outage starts.
    let mut ids = submit_all(&ports, &sure_bookings(1, "fair")).await;
    assert_confirmed(&ports, &sim, &ids, "before the outage").await;

    // SevenRooms answers 503 to everything for 20 s, from now.
    reqwest::Client::new()
        .post(format!("{}/_sim/outage", sim.sevenrooms_url()))
        .json(&serde_json::json!({ "for_ms": OUTAGE.as_millis() as u64, "status": 503 }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the outage starts");
    let outage_ends = Instant::now() + OUTAGE;
    let during = submit_all(&ports, &sure_bookings(5, "outage")).await;
    ids.extend(during.iter().copied());

    // During the outage: nothing is booked, and sagas show that they wait for SevenRooms.
    let mut waiting: Option<(SagaId, SagaStatus)> = None;
    let mut most_waiting = 0;
    while Instant::now() + Duration::from_millis(500) < outage_ends {
        let mut now_waiting = 0;
        for id in &during {
            let Some(state) = ports.store.get(*id).await.unwrap().map(|v| v.value) else {
                continue;
            };
            assert!(
                !state.status.kind().is_terminal(),
                "saga {id} ended during the outage: {:?}",
                state.status
            );
            if let SagaStatus::WaitingForDownstream {
                downstream, since, ..
            } = &state.status
            {
                assert_eq!(downstream, "SevenRooms", "{:?}", state.status);
                assert!(since.is_some(), "waiting since when: {:?}", state.status);
                now_waiting += 1;
                waiting.get_or_insert((*id, state.status.clone()));
            }
        }
        most_waiting = most_waiting.max(now_waiting);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (waiter, shown) = waiting.unwrap_or_else(|| {
        panic!(
            "no saga showed waiting_for_downstream during the outage; the roles said:\n{}",
            said()
        )
    });
    assert_eq!(
        shown.kind().as_str(),
        "waiting_for_downstream",
        "{waiter}: {shown:?}"
    );

    // After it: every saga confirms, having spent one attempt a step and reconciled nothing.
    let states = support::wait_all(&ports, &ids, Duration::from_secs(120)).await;
    let after_outage = Instant::now().saturating_duration_since(outage_ends);
    let mut keys = Vec::new();
    for (id, state) in ids.iter().zip(&states) {
        let state = state
            .as_ref()
            .unwrap_or_else(|| panic!("saga {id} is missing"));
        assert_eq!(
            state.status,
            SagaStatus::Confirmed,
            "saga {id} confirms after the outage; the roles said:\n{}",
            said()
        );
        // Each step a worker runs was charged one attempt, the one that succeeded; the
        // orchestrator's own step (publishing the confirmation) sends no command.
        let definition = como_engine::como::lookup(&state.definition, state.definition_version)
            .expect("the saga's definition");
        assert_eq!(definition.steps.len(), state.steps.len());
        for (step, def) in state.steps.iter().zip(&definition.steps) {
            let charged = u32::from(def.action.worker().is_some());
            assert_eq!(
                (step.action.charged, step.reconcile.charged),
                (charged, 0),
                "saga {id}, step {}: {charged} charged action(s) and no reconciliation, whatever \
                 the outage (action {:?}, reconcile {:?})",
                step.name,
                step.action,
                step.reconcile
            );
        }
        keys.push(SagaKeys::of(state));
    }
    let resent: u32 = states
        .iter()
        .flatten()
        .flat_map(|s| &s.steps)
        .map(|s| s.action.sent.saturating_sub(s.action.charged))
        .sum();

    // The simulators' ledgers as a whole: no violation.
    let report = check(&sim.ledger(), &keys);
    assert!(report.holds(), "money invariant: {:?}", report.violations);

    // The worker's shared health record is in DynamoDB, and says SevenRooms is up.
    let record = ports
        .records
        .get("health/sevenrooms")
        .await
        .unwrap()
        .expect("a shared health record for SevenRooms");
    let health: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(health["up"], Value::Bool(true), "{record}");

    eprintln!(
        "outage test took {:?}: {} of {} sagas waiting at most at once (first {waiter}: \
         {shown:?}); all confirmed {after_outage:?} after the outage; {resent} uncharged \
         resends; health record {record}",
        started.elapsed(),
        most_waiting,
        during.len(),
    );
    let _ = sim.shutdown().await;
}

/// `chaos --backend aws --store-faults` against moto, small: two orchestrators, kills, and
/// every call of the roles through the AWS fault proxy (throttling, 5xx, slow answers, resets,
/// lost answers, partial batches); nothing lost, nothing doubled, every saga finished.
#[test]
fn chaos_on_aws_with_two_orchestrators_and_store_faults() {
    let endpoint = testing::moto().endpoint.clone();
    let prefix = testing::unique_prefix("clichaos");
    json_of(&como(
        &endpoint,
        &prefix,
        &["infra", "bootstrap", "--backend", "aws", "--json"],
    ));
    let out = como(
        &endpoint,
        &prefix,
        &[
            "chaos",
            "--store-faults",
            "--sagas",
            "60",
            "--seed",
            "5",
            "--duration",
            "30s",
            "--drain-timeout",
            "5m",
            "--allow-needs-operator",
            "--json",
        ],
    );
    let report = json_of(&out);
    eprintln!("{report}");
    assert_eq!(report["lost"], serde_json::json!([]));
    assert_eq!(report["unfinished"], serde_json::json!([]));
    assert_eq!(report["money_invariant_violations"], serde_json::json!([]));
    let kills = report["kills"].as_object().unwrap();
    assert!(
        kills.keys().any(|k| k.starts_with("orchestrator-")),
        "two orchestrators ran and were killed: {report}"
    );
    let injected: u64 = report["store_faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(injected > 0, "the proxy injected faults: {report}");
    assert!(
        report["token_rotations"].as_u64().unwrap_or(0)
            + report["token_rotations_failed"].as_u64().unwrap_or(0)
            > 0,
        "the token secret was rotated on a schedule: {report}"
    );
}
