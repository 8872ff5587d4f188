//! `como-saga chaos`: the claims "nothing lost, nobody charged twice" under fire. Runs the
//! simulators, the orchestrator and both workers as separate child processes on one database,
//! submits N bookings, and meanwhile injects seeded faults: every simulator fault kind (5xx, 429,
//! latency, hangs past the client's timeout, commit-then-fail, token expiry, outage windows),
//! duplicated and delayed deliveries, and `kill -9` of random child processes (restarted at
//! once). Late effects are mixed in: hung calls that land after the client gave up, `late`
//! faults that land 25-40 s after the call (past the step's deadline and its lookup, so only
//! the late-effect audit, run here 30 s and 60 s after each saga's end, can undo them), and a
//! redeem body that changes between attempts (each restart of the CRM worker is a "deploy"
//! with another `Description`); and SevenRooms replaying a booking after its saga was
//! compensated, as a downstream that works off a backlog after an incident would (the audit must
//! cancel it). Then it lets the system drain, audits included, and checks
//! against the simulators' whole ledgers the money invariant, that every request has a saga,
//! and that every saga is finished; sagas that need an operator are listed with their reasons.
//! It exits non-zero on any violation, and on a saga that needs an operator unless
//! `--allow-needs-operator`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Days;
use como_engine::{Phase, StatusKind};
use como_ports::{Backend, OutgoingMessage, QueueName};
use como_schemas::{
    BookingRequested, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone, RequestId,
    SagaId, SchemaVersion, SlotTime, VenueId, Worker,
};
use como_simulators::invariant::{HoldReport, SagaKeys, Violation, check};
use como_simulators::ledger::Ledger;
use como_simulators::seed;
use como_workers::clients::Deadline;
use como_workers::clients::sevenrooms::{BookRequest, SevenRoomsClient, SevenRoomsSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Bookings to submit.
    #[arg(long, default_value_t = 300)]
    pub sagas: usize,
    /// Seed of every random choice: bookings, faults, kills, duplicates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long faults are injected (the bookings are submitted over this time), e.g. `30s`,
    /// `2m`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long to wait for every saga to finish once the faults stop.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Write the simulators' final ledgers (both, as `GET /_sim/ledger` serves them) to this
    /// file, for a check of one's own.
    #[arg(long, value_name = "FILE.json")]
    pub ledger_out: Option<PathBuf>,
    /// Do not fail the run for sagas that stopped for an operator (they are still listed).
    #[arg(long)]
    pub allow_needs_operator: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

use crate::settings::parse_duration;

/// What `chaos --json` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub sagas: usize,
    /// Final status of every saga.
    pub outcomes: BTreeMap<String, usize>,
    /// Faults injected, by kind: the simulators' own counts plus kills, duplicates and delays.
    pub faults: BTreeMap<String, u64>,
    /// `kill -9` per role.
    pub kills: BTreeMap<String, u64>,
    /// Requests that never became a saga.
    pub lost: Vec<String>,
    /// Sagas not finished when the drain timed out.
    pub unfinished: Vec<String>,
    pub money_invariant_violations: Vec<Violation>,
    /// Sagas that need an operator, with the reason.
    pub needs_operator: Vec<(String, String)>,
    /// Calls whose effect was made to land after the client gave up (`hang` and `late`).
    pub late_effects_injected: u64,
    /// Effects the late-effect audit found live after their saga ended, and undid.
    pub late_effects_undone: u64,
    /// Holds still live at the end (SevenRooms gives no way to find a hold whose answer was
    /// lost; each expires after its hold time).
    pub live_holds: HoldReport,
    #[serde(skip)]
    pub allow_needs_operator: bool,
    pub elapsed_ms: u128,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.unfinished.is_empty()
            && self.money_invariant_violations.is_empty()
            && (self.allow_needs_operator || self.needs_operator.is_empty())
    }
}

pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    let dir = std::env::temp_dir().join(format!("como-saga-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if args.common.database.is_none() {
        settings.database = dir.join("chaos.sqlite");
    }
    let report = stack::runtime()?.block_on(chaos(&args, &settings, &dir));
    let report = report?;
    let _ = std::fs::remove_dir_all(&dir);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A child process of this program, killed when dropped.
struct Proc {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let mut p = Proc {
            name: name.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: env.to_vec(),
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find this program")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(exe)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`, then start again at once.
    fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn()
    }

    /// SIGTERM, and wait for the graceful stop.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A SevenRooms client with the stack's own credentials, for replaying bookings behind the
/// saga's back.
fn replayer(base_url: &str, settings: &Settings) -> SevenRoomsClient {
    SevenRoomsClient::connect(
        reqwest::Client::new(),
        SevenRoomsSettings::new(base_url, settings.sevenrooms.credentials.clone()),
    )
}

/// Books `r`'s slot under its saga's `external_id`, without a hold; true if it landed.
async fn replay_booking(client: &SevenRoomsClient, r: &BookingRequested) -> bool {
    let request = BookRequest {
        date: r.date,
        time: r.time.time(),
        party_size: u32::from(r.party_size.get()),
        first_name: "Replayed".into(),
        last_name: "Booking".into(),
        phone: "+6590000000".into(),
        email: None,
        reservation_hold_id: None,
        external_id: Some(r.saga_id().to_string()),
        loyalty_id: Some(r.member_no.to_string()),
        notes: None,
    };
    client
        .book(
            r.venue_id.as_str(),
            &request,
            Deadline::after(Duration::from_secs(10)),
        )
        .await
        .is_success()
}

/// The faults every downstream suffers, at start-up: each kind of the simulators'.
fn standing_faults() -> serde_json::Value {
    let common = |write_ops: &[&str], read_ops: &[&str]| {
        serde_json::json!([
            {"kind": "latency", "fixed_ms": 2, "jitter_ms": 30},
            {"kind": "server_error", "status": 503, "ops": read_ops, "probability": 0.03},
            {"kind": "server_error", "status": 500, "ops": write_ops, "probability": 0.02},
            {"kind": "rate_limited", "retry_after_secs": 1, "probability": 0.02},
            {"kind": "hang", "ms": 6000, "probability": 0.003},
            {"kind": "commit_then_fail", "status": 502, "ops": write_ops, "probability": 0.03},
            {"kind": "commit_then_fail", "lost_ms": 6000, "ops": write_ops, "probability": 0.01},
            {"kind": "token_expiry", "probability": 0.01},
            {"kind": "late", "ms": 8000, "ops": write_ops, "probability": 0.004},
            {"kind": "late", "ms": 25000, "ops": write_ops, "probability": 0.004},
            {"kind": "late", "ms": 40000, "ops": write_ops, "probability": 0.002}
        ])
    };
    let mut sevenrooms = common(
        &["hold", "book", "cancel", "release_hold"],
        &["availability", "search", "get"],
    );
    // A slot taken between hold and book: a saga that must undo a redemption.
    if let Some(list) = sevenrooms.as_array_mut() {
        list.push(serde_json::json!(
            {"kind": "refuse", "code": "SLOT_UNAVAILABLE", "ops": ["book"], "probability": 0.02}
        ));
    }
    serde_json::json!({
        "memberson": common(&["redeem", "void"], &["summary"]),
        "sevenrooms": sevenrooms,
    })
}

fn bookings(
    n: usize,
    seed_value: u64,
    catalogue: &como_orchestrator::VenueCatalogue,
) -> Vec<BookingRequested> {
    let mut rng = StdRng::seed_from_u64(seed_value);
    let today = chrono::Utc::now().date_naive();
    let must = |r: Result<RequestId, String>| r.unwrap_or_else(|e| unreachable!("{e}"));
    (0..n)
        .map(|i| {
            let roll: f64 = rng.random();
            let (member, venue) = if roll < 0.07 {
                (seed::MEMBER_LOW_BALANCE.to_owned(), seed::VENUE_LARGE)
            } else if roll < 0.17 {
                (
                    seed::bulk_member_no(rng.random_range(0..1000)),
                    seed::VENUE_SMALL,
                )
            } else {
                (
                    seed::bulk_member_no(rng.random_range(0..1000)),
                    seed::VENUE_LARGE,
                )
            };
            let venue_id = VenueId::parse(venue).unwrap_or_else(|e| unreachable!("{e}"));
            let party = PartySize::new(2).unwrap_or_else(|e| unreachable!("{e}"));
            let price = catalogue.price(&venue_id, party).unwrap_or(1_200);
            BookingRequested {
                schema_version: SchemaVersion::CURRENT,
                request_id: must(RequestId::parse(format!("chaos-{seed_value}-{i}"))),
                member_no: MemberNo::parse(member).unwrap_or_else(|e| unreachable!("{e}")),
                venue_id,
                date: today
                    .checked_add_days(Days::new(1 + rng.random_range(0..30)))
                    .unwrap_or(today),
                time: SlotTime::parse(["18:00", "19:00", "20:00"][rng.random_range(0..3)])
                    .unwrap_or_else(|e| unreachable!("{e}")),
                party_size: party,
                quoted_credits: Credits::new(price).unwrap_or_default(),
                guest: GuestContact {
                    first_name: PersonName::parse("Chaos").unwrap_or_else(|e| unreachable!("{e}")),
                    last_name: PersonName::parse(format!("Guest {i}"))
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    phone: Phone::parse(format!("+6598{:06}", i % 1_000_000))
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    email: None,
                },
            }
        })
        .collect()
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| url.clone())?;
    let text = resp.text().await.unwrap_or_default();
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Deliver a message twice: take one off `queue`, send a copy (sometimes delayed), and put the
/// original back (sometimes after a delay). Returns whether a message was there.
async fn duplicate_one(
    ports: &Backend,
    queue: QueueName,
    rng: &mut StdRng,
) -> anyhow::Result<(bool, bool)> {
    let got = ports
        .queue
        .receive(queue, 1, Duration::from_secs(5), Duration::ZERO)
        .await?;
    let Some(d) = got.into_iter().next() else {
        return Ok((false, false));
    };
    let delayed = rng.random_bool(0.5);
    let mut copy = OutgoingMessage::new(d.body.clone());
    copy.attributes = d.attributes.clone();
    if delayed {
        copy = copy.delayed(Duration::from_millis(rng.random_range(500..4_000)));
    }
    ports.queue.send(queue, vec![copy]).await?;
    let back = if delayed {
        Duration::from_secs(rng.random_range(1..4))
    } else {
        Duration::ZERO
    };
    // The receipt may have gone stale if the lease ran out meanwhile: then it is back anyway.
    let _ = ports.queue.change_visibility(queue, &d.receipt, back).await;
    Ok((true, delayed))
}

async fn ledger(
    http: &reqwest::Client,
    memberson: &str,
    sevenrooms: &str,
) -> anyhow::Result<Ledger> {
    let m = http
        .get(format!("{memberson}/_sim/ledger"))
        .send()
        .await?
        .text()
        .await?;
    let s = http
        .get(format!("{sevenrooms}/_sim/ledger"))
        .send()
        .await?
        .text()
        .await?;
    Ok(Ledger {
        memberson: serde_json::from_str(&m).context("the Memberson ledger")?,
        sevenrooms: serde_json::from_str(&s).context("the SevenRooms ledger")?,
    })
}

async fn chaos(args: &ChaosArgs, settings: &Settings, dir: &Path) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let http = reqwest::Client::new();
    let say = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };

    // The simulators, with their standing faults.
    let faults_file = dir.join("faults.json");
    std::fs::write(&faults_file, standing_faults().to_string())?;
    let exe = std::env::current_exe()?;
    let mut sims = Command::new(exe)
        .args([
            "simulators",
            "--json",
            "--seed",
            &args.seed.to_string(),
            "--memberson-token-lifetime",
            "60",
        ])
        .arg("--faults")
        .arg(&faults_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the simulators")?;
    let mut line = String::new();
    BufReader::new(
        sims.stdout
            .take()
            .context("no output from the simulators")?,
    )
    .read_line(&mut line)?;
    let sims = Proc {
        name: "simulators".into(),
        args: Vec::new(),
        env: Vec::new(),
        log: dir.join("simulators.log"),
        child: Some(sims),
    };
    let urls: serde_json::Value =
        serde_json::from_str(&line).context("the simulators did not print their URLs")?;
    let memberson = urls["memberson_url"]
        .as_str()
        .context("no Memberson URL")?
        .to_owned();
    let sevenrooms = urls["sevenrooms_url"]
        .as_str()
        .context("no SevenRooms URL")?
        .to_owned();
    say(format!("simulators: {memberson} {sevenrooms}"));

    let env = vec![
        (
            "COMO_SAGA_DATABASE".to_owned(),
            settings.database.display().to_string(),
        ),
        ("COMO_SAGA_MEMBERSON_URL".to_owned(), memberson.clone()),
        ("COMO_SAGA_SEVENROOMS_URL".to_owned(), sevenrooms.clone()),
        ("COMO_SAGA_LOG".to_owned(), "error".to_owned()),
        ("COMO_SAGA_AUDIT_AFTER".to_owned(), "30s,60s".to_owned()),
    ];
    let mut roles = vec![
        Proc::start("orchestrator", &["orchestrator"], &env, dir)?,
        Proc::start("worker-crm", &["worker", "crm"], &env, dir)?,
        Proc::start("worker-sevenrooms", &["worker", "sevenrooms"], &env, dir)?,
    ];
    let backend = stack::open_backend(settings)?;
    let ports = backend.ports.clone();

    let replayer = replayer(&sevenrooms, settings);
    let mut replayed = std::collections::HashSet::new();
    let requests = bookings(args.sagas, args.seed, &settings.venues);
    let ids: Vec<SagaId> = requests.iter().map(BookingRequested::saga_id).collect();
    let mut report = ChaosReport {
        seed: args.seed,
        sagas: args.sagas,
        allow_needs_operator: args.allow_needs_operator,
        ..ChaosReport::default()
    };
    let bump =
        |map: &mut BTreeMap<String, u64>, k: &str| *map.entry(k.to_owned()).or_insert(0) += 1;

    // The fault phase: submit the bookings over its length, and act every few hundred ms.
    let phase_end = Instant::now() + args.duration;
    let mut next_request = 0usize;
    while Instant::now() < phase_end || next_request < requests.len() {
        let due = if Instant::now() >= phase_end {
            requests.len()
        } else {
            let share = 1.0
                - (phase_end - Instant::now()).as_secs_f64()
                    / args.duration.as_secs_f64().max(1e-9);
            ((share * requests.len() as f64).ceil() as usize).min(requests.len())
        };
        while next_request < due {
            let r = &requests[next_request];
            como_orchestrator::submit(&ports, r).await?;
            if rng.random_bool(0.05) {
                como_orchestrator::submit(&ports, r).await?;
                bump(&mut report.faults, "duplicate_request");
            }
            next_request += 1;
        }
        if Instant::now() >= phase_end {
            break;
        }
        match rng.random_range(0..100) {
            0..=24 => {
                let i = rng.random_range(0..roles.len());
                if roles[i].name == "worker-crm" {
                    // A deploy that changes the redeem body: replays of a redemption sent
                    // before it now carry another `Description` (Memberson answers 409).
                    let kills = report.kills.get("worker-crm").copied().unwrap_or(0);
                    roles[i]
                        .env
                        .retain(|(k, _)| k != "COMO_SAGA_MEMBERSON_REDEEM_DESCRIPTION");
                    roles[i].env.push((
                        "COMO_SAGA_MEMBERSON_REDEEM_DESCRIPTION".to_owned(),
                        format!("Como experience, release {}", kills + 1),
                    ));
                    bump(&mut report.faults, "redeem_body_changed");
                }
                roles[i].crash_and_restart()?;
                bump(&mut report.kills, &roles[i].name.clone());
            }
            25..=69 => {
                let queue = [
                    QueueName::Replies,
                    QueueName::Commands(Worker::Crm),
                    QueueName::Commands(Worker::Sevenrooms),
                    QueueName::Requests,
                ][rng.random_range(0..4)];
                let (found, delayed) = duplicate_one(&ports, queue, &mut rng).await?;
                if found {
                    bump(
                        &mut report.faults,
                        if delayed {
                            "delayed_duplicate_delivery"
                        } else {
                            "duplicate_delivery"
                        },
                    );
                }
            }
            70..=79 => {
                let url = if rng.random_bool(0.5) {
                    &memberson
                } else {
                    &sevenrooms
                };
                admin(
                    &http,
                    reqwest::Method::POST,
                    format!("{url}/_sim/tokens/expire"),
                    None,
                )
                .await?;
                bump(&mut report.faults, "tokens_revoked");
            }
            85..=89 => {
                // SevenRooms replays a booking of a saga that has been compensated since.
                // Among the last thousand submitted: those that have just ended.
                let recent = next_request.saturating_sub(1_000)..next_request.max(1);
                for _ in 0..200 {
                    let r = &requests[rng.random_range(recent.clone())];
                    let Some(stored) = ports.store.get(r.saga_id()).await? else {
                        continue;
                    };
                    let s = stored.value;
                    if s.status.kind() == StatusKind::Compensated
                        && s.audit
                            .as_ref()
                            .is_some_and(|a| a.rounds == 0 && a.check.is_none())
                        && replayed.insert(s.saga_id)
                    {
                        if replay_booking(&replayer, r).await {
                            bump(&mut report.faults, "late_replay");
                        }
                        break;
                    }
                }
            }
            80..=84 => {
                let url = if rng.random_bool(0.5) {
                    &memberson
                } else {
                    &sevenrooms
                };
                let ms = rng.random_range(1_000..6_000);
                admin(
                    &http,
                    reqwest::Method::POST,
                    format!("{url}/_sim/outage"),
                    Some(serde_json::json!({"for_ms": ms, "after_ms": 0, "status": 503})),
                )
                .await?;
                bump(&mut report.faults, "outage_window");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    }
    say(format!(
        "fault phase over after {:.1} s; draining",
        started.elapsed().as_secs_f64()
    ));

    // Stop the faults and let everything finish.
    for url in [&memberson, &sevenrooms] {
        let stats = admin(
            &http,
            reqwest::Method::GET,
            format!("{url}/_sim/stats"),
            None,
        )
        .await?;
        if let Some(fired) = stats["faults_fired"].as_object() {
            for (k, v) in fired {
                *report.faults.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        admin(
            &http,
            reqwest::Method::DELETE,
            format!("{url}/_sim/faults"),
            None,
        )
        .await?;
    }
    let drain_end = Instant::now() + args.drain_timeout;
    let states = loop {
        let mut states = Vec::with_capacity(ids.len());
        for id in &ids {
            states.push(ports.store.get(*id).await?.map(|v| v.value));
        }
        // Finished, and any late-effect audit done (a finished saga keeps a timer only for it).
        let finished = states.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                let k = s.status.kind();
                (k.is_terminal() && s.wake_at.is_none()) || k == StatusKind::NeedsOperator
            })
        });
        if finished || Instant::now() > drain_end {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let ledger = ledger(&http, &memberson, &sevenrooms).await?;
    if let Some(path) = &args.ledger_out {
        std::fs::write(path, serde_json::to_vec(&ledger)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut keys = Vec::new();
    for (request, state) in requests.iter().zip(&states) {
        match state {
            None => report.lost.push(request.request_id.to_string()),
            Some(s) => {
                let kind = s.status.kind();
                *report.outcomes.entry(kind.as_str().to_owned()).or_insert(0) += 1;
                if let Phase::NeedsOperator { reason, detail, .. } = &s.phase {
                    report.needs_operator.push((
                        s.saga_id.to_string(),
                        format!("{}: {detail}", reason.as_str()),
                    ));
                } else if !kind.is_terminal() {
                    report.unfinished.push(s.saga_id.to_string());
                }
                report.late_effects_undone += u64::from(s.audit.as_ref().map_or(0, |a| a.undone));
                keys.push(SagaKeys::of(s));
            }
        }
    }
    report.late_effects_injected = ["late", "hang", "late_replay"]
        .iter()
        .map(|k| report.faults.get(*k).copied().unwrap_or(0))
        .sum();
    let invariant = check(&ledger, &keys);
    report.money_invariant_violations = invariant.violations;
    report.live_holds = invariant.live_holds;
    for r in &mut roles {
        r.stop();
    }
    drop(sims);
    backend.close().await;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

fn print_report(r: &ChaosReport) {
    println!(
        "chaos, seed {}: {} bookings in {:.1} s",
        r.seed,
        r.sagas,
        r.elapsed_ms as f64 / 1000.0
    );
    println!(
        "outcomes: {}",
        join(r.outcomes.iter().map(|(k, v)| format!("{k} {v}")))
    );
    println!(
        "faults injected: {}",
        join(r.faults.iter().map(|(k, v)| format!("{k} {v}")))
    );
    println!(
        "kill -9: {}",
        join(r.kills.iter().map(|(k, v)| format!("{k} {v}")))
    );
    println!(
        "late effects: {} injected (hung or late calls), {} undone by the late-effect audit",
        r.late_effects_injected, r.late_effects_undone
    );
    println!(
        "live holds at the end: {} ({} known to a saga), the last expiring at {}",
        r.live_holds.live,
        r.live_holds.by_saga_known,
        r.live_holds
            .latest_expiry
            .map_or("-".to_owned(), |t| t.to_rfc3339())
    );
    for (saga, why) in &r.needs_operator {
        println!("needs an operator: saga {saga}: {why}");
    }
    for id in &r.lost {
        println!("LOST: request {id} has no saga");
    }
    for id in &r.unfinished {
        println!("UNFINISHED: saga {id}");
    }
    for v in &r.money_invariant_violations {
        println!("MONEY INVARIANT VIOLATED: saga {}: {}", v.saga_id, v.rule);
    }
    if r.ok() {
        println!(
            "no violations: every request has a saga, every saga finished, the money invariant holds"
        );
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}
