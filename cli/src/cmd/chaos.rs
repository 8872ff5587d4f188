//! `como-saga chaos`: the claims "nothing lost, nobody charged twice" under fire. Runs the
//! simulators, the orchestrator and both workers as separate child processes on one database,
//! submits N bookings, and meanwhile injects seeded faults: every simulator fault kind (5xx, 429,
//! latency, hangs past the client's timeout, commit-then-fail, token expiry, outage windows),
//! duplicated and delayed deliveries, and `kill -9` of random child processes (restarted at
//! once). Each downstream also goes down for long: outages longer than a step's retry budget
//! (60-90 s when the run is 150 s or more; see [`long_outages`]) and shorter than the saga's
//! forward deadline, which sagas must wait out without compensating. Late effects are mixed
//! in: hung calls that land after the client gave up, `late`
//! faults that land 25-40 s after the call (past the step's deadline and its lookup, so only
//! the late-effect audit, run here 30 s and 60 s after each saga's end, can undo them), and a
//! redeem body that changes between attempts (each restart of the CRM worker is a "deploy"
//! with another `Description`); and SevenRooms replaying a booking after its saga was
//! compensated, as a downstream that works off a backlog after an incident would (the audit must
//! cancel it). Then it lets the system drain, audits included, and checks
//! against the simulators' whole ledgers the money invariant, that every request has a saga,
//! and that every saga is finished; sagas that need an operator are listed with their reasons.
//! From the sagas' histories it reports degraded service: the sagas that waited for a
//! downstream, the longest wait, and those compensated because of an outage (see
//! [`summarise_waits`]); such a compensation is a violation when the outages the saga lived
//! through were shorter than its forward deadline.
//! It exits non-zero on any violation, and on a saga that needs an operator unless
//! `--allow-needs-operator`.
//!
//! On the AWS backend (`--backend aws`, after `infra bootstrap`) the roles run on the same
//! deployment, two orchestrators by default (`--orchestrators`), and the Memberson token secret
//! is rotated every [`ROTATE_EVERY`] as the deployment's schedule does (the workers there read
//! the token and never mint one). A role that stops by itself is started again and counted; one
//! that keeps stopping right after its start (it cannot reach the backend, say) stops the run
//! with the end of its log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Days;
use como_engine::{HistoryEntry, HistoryKind, Phase, StatusKind};
use como_ports::{Backend, OutgoingMessage, QueueName};
use como_schemas::{
    BookingRequested, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone, RequestId,
    SagaId, SchemaVersion, SlotTime, Timestamp, VenueId, Worker,
};
use como_simulators::invariant::{HoldReport, SagaKeys, Violation, check};
use como_simulators::ledger::Ledger;
use como_simulators::seed;
use como_workers::clients::Deadline;
use como_workers::clients::sevenrooms::{BookRequest, SevenRoomsClient, SevenRoomsSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::settings::{BackendKind, CommonArgs, DEV_DEFAULTS_ENV, DownstreamArgs, Settings};
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
    /// Orchestrator processes run side by side, each killed at random like the others (the
    /// store's conditional writes keep every saga serial). Default: 2 on the AWS backend, 1 on
    /// the embedded one (one SQLite writer at a time; a second process only waits for it).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub orchestrators: Option<u8>,
    /// Break the ground under the roles too. Embedded backend: the database goes on a tmpfs
    /// of its own (mounting it needs root or CAP_SYS_ADMIN), filled to the last byte for 2-6 s
    /// now and then; another connection holds the write lock for 6-8 s (past the 5 s busy
    /// timeout) now and then; the roles' writers hold each transaction open 5 ms, so that kills
    /// land inside them. The run's own submissions retry while the store refuses them, as an
    /// edge client would. AWS backend (with `AWS_ENDPOINT_URL`, a local AWS-compatible server):
    /// the roles reach it through a fault-injecting proxy that throttles DynamoDB, answers SQS
    /// and EventBridge with 500 and 503, answers slowly past the SDK's timeouts, resets
    /// connections, loses the answers of writes that took effect, and fails some entries of
    /// batches.
    #[arg(long)]
    pub store_faults: bool,
    /// The roles' log level (their logs are in the run's directory, kept when the run finds a
    /// violation), e.g. `info` to follow a saga through them.
    #[arg(long, default_value = "error")]
    pub role_log: String,
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
    /// The forward deadline of sagas started now (the deployment's, or the definition's own),
    /// in ms.
    pub deadline_ms: u64,
    /// The outages injected: the long ones scheduled at the start, and the short random ones.
    pub outages: Vec<OutageWindow>,
    /// The longest of them, in ms.
    pub longest_outage_ms: u64,
    /// Sagas whose history holds a `waiting_for_downstream` entry.
    pub waited_for_downstream: usize,
    /// Of those, the sagas that waited longer at once than a step's retry budget (the time
    /// limit of a step's action retries, 60 s for the Como booking).
    pub waited_longer_than_retry_budget: usize,
    /// Of those, the sagas that ended confirmed.
    pub confirmed_after_waiting: usize,
    /// The longest single wait for a downstream (the time a saga's status stayed
    /// `waiting_for_downstream`), in ms, and whose it was.
    pub longest_wait_ms: u64,
    pub longest_wait_saga: Option<String>,
    /// Sagas compensated because of an outage (see [`summarise_waits`]).
    pub compensated_by_outage: usize,
    /// Each of them; those whose outages were shorter than its deadline are violations.
    pub outage_compensations: Vec<OutageCompensation>,
    /// Roles that stopped by themselves (not killed by chaos) and were started again, by role.
    pub role_exits: BTreeMap<String, u64>,
    /// With `--store-faults`: the faults of the ground injected, by kind, and how many times
    /// the store refused one of this run's submissions (each retried until accepted).
    pub store_faults: BTreeMap<String, u64>,
    /// AWS backend: rotations of the Memberson token secret run on the deployment's schedule
    /// (every [`ROTATE_EVERY`]), and those that failed (Memberson down, say).
    pub token_rotations: u64,
    pub token_rotations_failed: u64,
    #[serde(skip)]
    pub allow_needs_operator: bool,
    pub elapsed_ms: u128,
}

/// How often chaos on the AWS backend rotates the Memberson token secret, as the deployment's
/// scheduled `rotate-tokens` does (the simulators' tokens live 60 s here).
pub const ROTATE_EVERY: Duration = Duration::from_secs(20);

/// A role that stops by itself this many times, each within [`EARLY_EXIT`] of its start, is
/// not going to run: chaos stops and says why.
const EARLY_EXITS: u32 = 3;
const EARLY_EXIT: Duration = Duration::from_secs(10);

/// An outage chaos injected: every call to `downstream` (the probes' reads included) answered
/// 503 for `length_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutageWindow {
    /// `memberson` or `sevenrooms`.
    pub downstream: String,
    /// `long` (scheduled, see [`long_outages`]) or `short` (1-6 s, at random).
    pub kind: String,
    /// From the start of the run.
    pub start_ms: u64,
    pub length_ms: u64,
    /// When it starts, in ms since the Unix epoch (the sagas' clock).
    #[serde(skip)]
    pub from_epoch_ms: i64,
}

impl OutageWindow {
    fn end_epoch_ms(&self) -> i64 {
        self.from_epoch_ms
            .saturating_add(i64::try_from(self.length_ms).unwrap_or(i64::MAX))
    }
}

/// A saga compensated because of an outage.
#[derive(Debug, Clone, Serialize)]
pub struct OutageCompensation {
    pub saga_id: String,
    /// `DEADLINE_PASSED` or `RETRIES_EXHAUSTED`.
    pub code: String,
    /// The step the compensation began at.
    pub step: String,
    /// Why, as the saga's history says.
    pub reason: String,
    /// Whether it was still waiting for a downstream when it began compensating.
    pub while_waiting: bool,
    /// Otherwise, how long after the end of its last wait it began.
    pub after_wait_ms: u64,
    /// How long that wait lasted (until the compensation, if it was still waiting).
    pub wait_ms: u64,
    /// How long any injected outage was active between the saga's start and its compensation.
    pub outage_ms: u64,
    /// The saga's forward deadline, from its start.
    pub deadline_ms: u64,
    /// The outages were shorter than the deadline: the saga should have waited them out.
    pub violation: bool,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.unfinished.is_empty()
            && self.money_invariant_violations.is_empty()
            && self.outage_compensations.iter().all(|c| !c.violation)
            && (self.allow_needs_operator || self.needs_operator.is_empty())
    }
}

pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    // Before anything is started or made: what is wrong with the backend, in one line.
    stack::runtime()?.block_on(crate::aws_credentials::preflight(&settings))?;
    let dir = std::env::temp_dir().join(format!("como-saga-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if args.common.database.is_none() {
        settings.database = dir.join("chaos.sqlite");
    }
    let tmpfs = if args.store_faults && settings.backend == BackendKind::Embedded {
        if args.common.database.is_some() {
            anyhow::bail!(
                "--store-faults puts the database on a tmpfs of its own (to fill it); leave out --database"
            );
        }
        let fs = super::store_faults::Tmpfs::mount(&dir.join("store"))?;
        settings.database = fs.path().join("chaos.sqlite");
        Some(fs)
    } else {
        None
    };
    let report = stack::runtime()?.block_on(chaos(&args, &settings, &dir, tmpfs.as_ref()));
    let keep = report.as_ref().map_or(true, |r| !r.ok());
    if keep && let Some(fs) = &tmpfs {
        // The database goes with the tmpfs: keep a copy with the logs.
        for suffix in ["", "-wal"] {
            let from = fs.path().join(format!("chaos.sqlite{suffix}"));
            let _ = std::fs::copy(&from, dir.join(format!("chaos.sqlite{suffix}")));
        }
    }
    drop(tmpfs);
    if keep {
        eprintln!(
            "the roles' logs and the database are kept in {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = report?;
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
    started: Instant,
    /// Exits by itself within [`EARLY_EXIT`] of a start, in a row.
    early_exits: u32,
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
            started: Instant::now(),
            early_exits: 0,
        };
        p.spawn()?;
        Ok(p)
    }

    /// If the process stopped by itself: start it again and say so (`Ok(true)`); an error
    /// naming the role and the end of its log when it keeps stopping right after its start
    /// (it cannot reach the backend, say).
    fn restart_if_exited(&mut self) -> anyhow::Result<bool> {
        let Some(child) = self.child.as_mut() else {
            return Ok(false);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(false);
        };
        self.child = None;
        if self.started.elapsed() < EARLY_EXIT {
            self.early_exits += 1;
        } else {
            self.early_exits = 0;
        }
        if self.early_exits >= EARLY_EXITS {
            anyhow::bail!(
                "the {} process keeps stopping right after it starts ({status}); its log {} ends with: {}",
                self.name,
                self.log.display(),
                self.last_words()
            );
        }
        self.spawn()?;
        Ok(true)
    }

    /// The last few lines of the process's log, on one line.
    fn last_words(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() {
            "(nothing)".to_owned()
        } else {
            tail
        }
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
        self.started = Instant::now();
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

/// The downstreams as the report names them.
const DOWNSTREAMS: [&str; 2] = ["memberson", "sevenrooms"];

/// A call's own retries give up within this (the clients' `max_elapsed`); a long outage lasts
/// longer, so that no call can ride it out.
const CALL_RETRIES: Duration = Duration::from_secs(20);
/// A step's retry budget (the Como booking's action retries: 5 attempts within 60 s); a long
/// outage lasts longer when the run is long enough.
const STEP_RETRY_BUDGET: Duration = Duration::from_secs(60);
/// The most a long outage lasts.
const LONGEST_OUTAGE: Duration = Duration::from_secs(90);
/// The length of the fault phase that holds one long outage per downstream.
const OUTAGE_SLOT: Duration = Duration::from_secs(150);

/// A long outage: `downstream` (an index into [`DOWNSTREAMS`]) is down from `start` (after the
/// fault phase begins) for `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LongOutage {
    downstream: usize,
    start: Duration,
    length: Duration,
}

/// The long outages of a fault phase of `duration`. Each downstream gets one in each slot of
/// the phase (as many slots as 150 s fit in it, at least one), 40-60 % of the slot long and
/// starting 10-40 % into it, so that two of a downstream never touch. From a 150 s phase on, a
/// slot is 150 s or more and an outage 60-90 s: longer than a step's retry budget, which the
/// saga must not spend on it. A shorter phase's outage is proportional to it but at least 25 s,
/// longer than a call's own retries; it then runs on past the fault phase into the drain (the
/// chaos run keeps it up until it ends). Every outage stays under half the forward `deadline`,
/// so that a saga can wait it out and still have time to finish. Drawn from its own stream of
/// `seed`, so that the other faults of a seed stay what they were.
fn long_outages(duration: Duration, deadline: Duration, seed: u64) -> Vec<LongOutage> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6f75_7461_6765); // "outage"
    let slots = (duration.as_millis() / OUTAGE_SLOT.as_millis()).max(1) as u32;
    let slot = duration / slots;
    let shortest = CALL_RETRIES + Duration::from_secs(5);
    let mut out = Vec::new();
    for downstream in 0..DOWNSTREAMS.len() {
        for k in 0..slots {
            let length = slot
                .mul_f64(rng.random_range(0.4..=0.6))
                .clamp(shortest, LONGEST_OUTAGE)
                .min(deadline / 2);
            let start = slot * k + slot.mul_f64(rng.random_range(0.1..=0.4));
            out.push(LongOutage {
                downstream,
                start: Duration::from_millis(start.as_millis() as u64),
                length: Duration::from_millis(length.as_millis() as u64),
            });
        }
    }
    out
}

/// Codes a saga compensates with when an outage may be the cause: its deadline passed, or its
/// retries ran out.
const OUTAGE_CODES: [&str; 2] = ["DEADLINE_PASSED", "RETRIES_EXHAUSTED"];

/// What a saga's history says about its waits for a downstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WaitSummary {
    /// An entry of kind `waiting_for_downstream` is there.
    waited: bool,
    /// The longest single wait, in ms: from the first transition after which the saga's status
    /// is `waiting_for_downstream` to the next after which it is not (or to the last entry).
    longest_ms: u64,
    /// Set when the saga began compensating because of an outage.
    by_outage: Option<ByOutage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ByOutage {
    code: String,
    step: String,
    reason: String,
    at: Timestamp,
    /// `None` when it was still waiting; otherwise how long after its last wait ended.
    after_wait_ms: Option<u64>,
    /// How long that wait lasted (until `at` if it was still waiting).
    wait_ms: u64,
}

/// Reads a saga's `history` (oldest first; entries of one transition share its status, the
/// status after it). The saga was compensated **because of an outage** when its compensation
/// began (the first `compensation_started` entry) with `DEADLINE_PASSED` or
/// `RETRIES_EXHAUSTED`, and either
/// - the saga was waiting for a downstream then (the status after the transition before was
///   `waiting_for_downstream`): only the deadline ends such a wait, so the outage (with the
///   backlog behind it) outlasted the deadline; or
/// - its last wait had ended less than `retry_budget_ms(step)` before (the step's action retry
///   time limit): a wait restarts the step's retry budget, so retries that ran out within one
///   budget of the wait's end were spent on the downstream's recovery, which the promise of
///   degraded service counts as the outage's.
///
/// Whether the saga then ended compensated is for the caller to check.
fn summarise_waits(history: &[HistoryEntry], retry_budget_ms: impl Fn(&str) -> u64) -> WaitSummary {
    let mut out = WaitSummary::default();
    let mut since: Option<Timestamp> = None;
    let mut last_wait: Option<(Timestamp, Timestamp)> = None;
    let mut status_before: Option<StatusKind> = None;
    let mut compensation_seen = false;
    for group in history.chunk_by(|a, b| a.transition == b.transition) {
        let at = group[0].at;
        let status = group[0].status;
        out.waited |= group
            .iter()
            .any(|e| e.kind == HistoryKind::WaitingForDownstream);
        if !compensation_seen
            && let Some(c) = group
                .iter()
                .find(|e| e.kind == HistoryKind::CompensationStarted)
        {
            compensation_seen = true;
            let code = c.detail.clone().unwrap_or_default();
            let step = c
                .step
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            if OUTAGE_CODES.contains(&code.as_str()) {
                let waiting = status_before == Some(StatusKind::WaitingForDownstream);
                let found = match (waiting, since, last_wait) {
                    (true, Some(from), _) => Some((None, at.millis_since(from))),
                    (false, _, Some((from, to)))
                        if at.millis_since(to) < retry_budget_ms(&step) =>
                    {
                        Some((Some(at.millis_since(to)), to.millis_since(from)))
                    }
                    _ => None,
                };
                out.by_outage = found.map(|(after_wait_ms, wait_ms)| ByOutage {
                    code,
                    step,
                    reason: c.error.clone().unwrap_or_default(),
                    at,
                    after_wait_ms,
                    wait_ms,
                });
            }
        }
        match (status == StatusKind::WaitingForDownstream, since) {
            (true, None) => since = Some(at),
            (false, Some(from)) => {
                out.longest_ms = out.longest_ms.max(at.millis_since(from));
                last_wait = Some((from, at));
                since = None;
            }
            _ => {}
        }
        status_before = Some(status);
    }
    if let (Some(from), Some(last)) = (since, history.last()) {
        out.longest_ms = out.longest_ms.max(last.at.millis_since(from));
    }
    out
}

/// How long, in ms, any of `outages` was active between `from` and `to` (epoch ms).
fn outage_overlap_ms(outages: &[OutageWindow], from: i64, to: i64) -> u64 {
    let mut spans: Vec<(i64, i64)> = outages
        .iter()
        .map(|w| (w.from_epoch_ms.max(from), w.end_epoch_ms().min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort_unstable();
    let mut total = 0u64;
    let mut current: Option<(i64, i64)> = None;
    for (a, b) in spans {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += u64::try_from(cb - ca).unwrap_or(0);
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = current {
        total += u64::try_from(cb - ca).unwrap_or(0);
    }
    total
}

fn epoch_ms_now() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
                traceparent: None,
                availability_id: None,
                guest: GuestContact {
                    first_name: PersonName::parse("Chaos").unwrap_or_else(|e| unreachable!("{e}")),
                    last_name: PersonName::parse(format!("Guest {i}"))
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    phone: Phone::parse(format!("+6598{:06}", i % 1_000_000))
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    email: None,
                }
                .into(),
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

async fn chaos(
    args: &ChaosArgs,
    settings: &Settings,
    dir: &Path,
    tmpfs: Option<&super::store_faults::Tmpfs>,
) -> anyhow::Result<ChaosReport> {
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
        started: Instant::now(),
        early_exits: 0,
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

    // The roles run on the backend this command opens (whether --backend, the environment or
    // the settings file chose it).
    let mut env = vec![
        (
            "COMO_SAGA_BACKEND".to_owned(),
            format!("{:?}", settings.backend).to_lowercase(),
        ),
        (
            "COMO_SAGA_AWS_PREFIX".to_owned(),
            settings.aws_prefix.clone(),
        ),
        (
            "COMO_SAGA_DATABASE".to_owned(),
            settings.database.display().to_string(),
        ),
        ("COMO_SAGA_MEMBERSON_URL".to_owned(), memberson.clone()),
        ("COMO_SAGA_SEVENROOMS_URL".to_owned(), sevenrooms.clone()),
        ("COMO_SAGA_LOG".to_owned(), args.role_log.clone()),
        ("COMO_SAGA_AUDIT_AFTER".to_owned(), "30s,60s".to_owned()),
        // The roles run against the simulators: their credentials and the demo venues.
        (DEV_DEFAULTS_ENV.to_owned(), "1".to_owned()),
    ];
    if let Some(config) = &args.common.config {
        env.push(("COMO_SAGA_CONFIG".to_owned(), config.display().to_string()));
    }
    let proxy = if args.store_faults && settings.backend == BackendKind::Aws {
        let upstream = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
            anyhow::anyhow!(
                "--store-faults on the AWS backend puts a fault-injecting proxy in front of a local AWS-compatible server: set AWS_ENDPOINT_URL to it"
            )
        })?;
        let proxy = como_simulators::aws_proxy::AwsFaultProxy::start(&upstream, args.seed)
            .await
            .context("cannot start the AWS fault proxy")?;
        proxy.set_rules(aws_store_faults());
        say(format!(
            "AWS fault proxy: {} in front of {upstream} (the roles' AWS_ENDPOINT_URL)",
            proxy.endpoint()
        ));
        env.push(("AWS_ENDPOINT_URL".to_owned(), proxy.endpoint()));
        Some(proxy)
    } else {
        None
    };
    let mut ground = tmpfs.map(|fs| {
        env.push((
            como_app::stack::COMMIT_DELAY_ENV.to_owned(),
            super::store_faults::COMMIT_DELAY_MS.to_owned(),
        ));
        super::store_faults::GroundFaults::new(&settings.database, fs)
    });
    let mut backend = stack::open_backend(settings)?;
    backend.ports.vault = stack::data_keys(settings, &backend.ports, true).await?;
    let ports = backend.ports.clone();
    let rotations = if settings.backend == BackendKind::Aws {
        // The workers read the Memberson token from the secret and never mint one: a token
        // these simulators accept first, then a rotation on a schedule, as deployed.
        let mut with_sims = settings.clone();
        with_sims.memberson.base_url = Some(memberson.clone());
        como_app::tokens::ensure_token(&with_sims, ports.secrets.as_ref())
            .await
            .context("cannot put a Memberson token in the secret store")?;
        Some(rotate_on_schedule(with_sims, ports.secrets.clone()))
    } else {
        None
    };
    let orchestrators = args.orchestrators.unwrap_or(match settings.backend {
        BackendKind::Aws => 2,
        BackendKind::Embedded => 1,
    });
    let mut roles = Vec::new();
    for i in 1..=orchestrators {
        let name = if orchestrators == 1 {
            "orchestrator".to_owned()
        } else {
            format!("orchestrator-{i}")
        };
        roles.push(Proc::start(&name, &["orchestrator"], &env, dir)?);
    }
    roles.push(Proc::start("worker-crm", &["worker", "crm"], &env, dir)?);
    roles.push(Proc::start(
        "worker-sevenrooms",
        &["worker", "sevenrooms"],
        &env,
        dir,
    )?);
    say(format!(
        "roles: {} on the {}",
        join(roles.iter().map(|r| r.name.clone())),
        settings.store_location()
    ));

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
    let urls = [&memberson, &sevenrooms];

    // The long outages, installed now as windows: each simulator starts and ends them itself.
    let deadline_ms = como_orchestrator::advance::current_definition().deadline_ms;
    report.deadline_ms = deadline_ms;
    for o in long_outages(args.duration, Duration::from_millis(deadline_ms), args.seed) {
        let (start_ms, length_ms) = (o.start.as_millis() as u64, o.length.as_millis() as u64);
        let (installed_ms, installed_epoch) =
            (started.elapsed().as_millis() as u64, epoch_ms_now());
        admin(
            &http,
            reqwest::Method::POST,
            format!("{}/_sim/outage", urls[o.downstream]),
            Some(serde_json::json!({"for_ms": length_ms, "after_ms": start_ms, "status": 503})),
        )
        .await?;
        bump(&mut report.faults, "long_outage");
        report.outages.push(OutageWindow {
            downstream: DOWNSTREAMS[o.downstream].to_owned(),
            kind: "long".to_owned(),
            start_ms: installed_ms + start_ms,
            length_ms,
            from_epoch_ms: installed_epoch + start_ms as i64,
        });
    }
    say(format!(
        "long outages: {}",
        join(report.outages.iter().map(|w| format!(
            "{} {:.0} s from {:.0} s",
            w.downstream,
            w.length_ms as f64 / 1000.0,
            w.start_ms as f64 / 1000.0
        )))
    ));

    // The fault phase: submit the bookings over its length, and act every few hundred ms.
    let phase_start = Instant::now();
    let mut next_request = 0usize;
    loop {
        // Whether the phase is over is decided before what is due: once it is, every booking
        // is, and all of them are submitted before the loop ends.
        let elapsed = phase_start.elapsed();
        let over = elapsed >= args.duration;
        let due = due_by(requests.len(), elapsed, args.duration);
        while next_request < due {
            let r = &requests[next_request];
            submit(&ports, r, &mut report).await?;
            if rng.random_bool(0.05) {
                submit(&ports, r, &mut report).await?;
                bump(&mut report.faults, "duplicate_request");
            }
            next_request += 1;
        }
        if over {
            break;
        }
        restart_exited(&mut roles, &mut report)?;
        if let Some(g) = ground.as_mut() {
            g.tick(&mut rng);
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
                // A refused receive or send is the ground's fault, not the run's: the message
                // stays on its queue.
                let (found, delayed) = match duplicate_one(&ports, queue, &mut rng).await {
                    Ok(r) => r,
                    Err(_) if ground.is_some() => (false, false),
                    Err(e) => return Err(e),
                };
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
                let d = usize::from(!rng.random_bool(0.5));
                let ms = rng.random_range(1_000..6_000);
                admin(
                    &http,
                    reqwest::Method::POST,
                    format!("{}/_sim/outage", urls[d]),
                    Some(serde_json::json!({"for_ms": ms, "after_ms": 0, "status": 503})),
                )
                .await?;
                bump(&mut report.faults, "outage_window");
                report.outages.push(OutageWindow {
                    downstream: DOWNSTREAMS[d].to_owned(),
                    kind: "short".to_owned(),
                    start_ms: started.elapsed().as_millis() as u64,
                    length_ms: ms,
                    from_epoch_ms: epoch_ms_now(),
                });
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    }
    // Every booking counted was submitted: a request that chaos never sent is not one the
    // system lost.
    anyhow::ensure!(
        next_request == requests.len(),
        "chaos submitted {next_request} of its {} bookings",
        requests.len()
    );
    if let Some(g) = ground.as_mut() {
        g.stop();
        for (k, v) in &g.injected {
            *report.store_faults.entry(k.clone()).or_insert(0) += v;
        }
    }
    if let Some(p) = &proxy {
        p.clear();
        for (k, v) in p.fired() {
            *report.store_faults.entry(k).or_insert(0) += v;
        }
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
    // An outage is not over because the fault phase is: what is left of one goes on.
    let now = epoch_ms_now();
    for w in &report.outages {
        if w.end_epoch_ms() > now {
            let url = urls[usize::from(w.downstream != DOWNSTREAMS[0])];
            admin(
                &http,
                reqwest::Method::POST,
                format!("{url}/_sim/outage"),
                Some(serde_json::json!({
                    "for_ms": w.end_epoch_ms() - w.from_epoch_ms.max(now),
                    "after_ms": (w.from_epoch_ms - now).max(0),
                    "status": 503,
                })),
            )
            .await?;
        }
    }
    report.longest_outage_ms = report
        .outages
        .iter()
        .map(|w| w.length_ms)
        .max()
        .unwrap_or(0);
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
        restart_exited(&mut roles, &mut report)?;
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
            None => report.lost.push(format!(
                "{} ({})",
                request.request_id,
                whereabouts(&ports, request).await
            )),
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
    degraded_service(&ports, &states, &mut report).await?;
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
    if let Some((task, counts)) = rotations {
        task.abort();
        report.token_rotations = counts.0.load(Ordering::Relaxed);
        report.token_rotations_failed = counts.1.load(Ordering::Relaxed);
    }
    drop(sims);
    backend.close().await;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// How many of `total` bookings are due `elapsed` into a fault phase of `length`: spread
/// evenly over it, and all of them once it is over.
fn due_by(total: usize, elapsed: Duration, length: Duration) -> usize {
    if elapsed >= length {
        return total;
    }
    let share = elapsed.as_secs_f64() / length.as_secs_f64().max(1e-9);
    ((share * total as f64).ceil() as usize).min(total)
}

/// Submits `r`, again and again while the store refuses it (a full disk, a held lock), as an
/// edge client retries a 503; counts the refusals.
async fn submit(
    ports: &Backend,
    r: &BookingRequested,
    report: &mut ChaosReport,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        match como_orchestrator::submit(ports, r).await {
            Ok(_) => return Ok(()),
            Err(como_orchestrator::RuntimeError::Port(como_ports::PortError::Unavailable(_)))
                if Instant::now() < give_up =>
            {
                *report
                    .store_faults
                    .entry("submission_refused".to_owned())
                    .or_insert(0) += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the AWS fault proxy does to the roles' calls during the fault phase: a share of every
/// kind of fault, on every service the roles use.
fn aws_store_faults() -> Vec<como_simulators::aws_proxy::Rule> {
    use como_simulators::aws_proxy::{Fault, Rule};
    vec![
        Rule::new("dynamodb", None, Fault::ProvisionedThroughputExceeded).probability(0.02),
        Rule::new("dynamodb", None, Fault::Throttling).probability(0.01),
        Rule::new("dynamodb", Some("PutItem"), Fault::LostAnswer).probability(0.01),
        Rule::new("dynamodb", Some("GetItem"), Fault::Slow { ms: 4_000 }).probability(0.003),
        Rule::new("sqs", None, Fault::ServerError { status: 503 }).probability(0.02),
        Rule::new("sqs", None, Fault::ServerError { status: 500 }).probability(0.01),
        Rule::new("sqs", Some("SendMessageBatch"), Fault::PartialBatch).probability(0.02),
        Rule::new("sqs", Some("SendMessageBatch"), Fault::LostAnswer).probability(0.005),
        Rule::new(
            "events",
            Some("PutEvents"),
            Fault::ServerError { status: 500 },
        )
        .probability(0.05),
        Rule::new("*", None, Fault::Reset).probability(0.005),
    ]
}

/// Where a request that has no saga is: dead-lettered (with the reason), still on the
/// request queue, or nowhere.
async fn whereabouts(ports: &Backend, r: &BookingRequested) -> String {
    let id = format!("\"{}\"", r.request_id);
    match ports.queue.dead_letters(QueueName::Requests, 10_000).await {
        Ok(dead) => {
            if let Some(d) = dead.iter().find(|d| d.body.contains(&id)) {
                return format!("dead-lettered: {}", d.reason);
            }
        }
        Err(e) => return format!("cannot read the dead letters: {e}"),
    }
    match ports.queue.depth(QueueName::Requests).await {
        Ok(depth) if depth.visible + depth.not_visible > 0 => {
            format!("not in the dead letters; the request queue holds {depth:?}")
        }
        Ok(_) => "not in the dead letters, and the request queue is empty".to_owned(),
        Err(e) => format!("cannot read the request queue: {e}"),
    }
}

/// Starts again each role that stopped by itself, counting it.
fn restart_exited(roles: &mut [Proc], report: &mut ChaosReport) -> anyhow::Result<()> {
    for r in roles {
        if r.restart_if_exited()? {
            *report.role_exits.entry(r.name.clone()).or_insert(0) += 1;
        }
    }
    Ok(())
}

type RotationCounts = Arc<(AtomicU64, AtomicU64)>;

/// Rotates the Memberson token secret every [`ROTATE_EVERY`] until aborted, as the
/// deployment's schedule does; counts the rotations and the failures.
fn rotate_on_schedule(
    settings: Settings,
    secrets: Arc<dyn como_ports::SecretStore>,
) -> (tokio::task::JoinHandle<()>, RotationCounts) {
    let counts: RotationCounts = Arc::default();
    let c = counts.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ROTATE_EVERY).await;
            let member = como_simulators::seed::MEMBER_RICH;
            match como_app::tokens::rotate_once(&settings, secrets.as_ref(), member).await {
                Ok(_) => c.0.fetch_add(1, Ordering::Relaxed),
                Err(_) => c.1.fetch_add(1, Ordering::Relaxed),
            };
        }
    });
    (task, counts)
}

/// Reads every saga's history for its waits for a downstream, and finds those compensated
/// because of an outage (see [`summarise_waits`]).
async fn degraded_service(
    ports: &Backend,
    states: &[Option<como_engine::SagaState>],
    report: &mut ChaosReport,
) -> anyhow::Result<()> {
    for s in states.iter().flatten() {
        let def = como_engine::como::lookup(&s.definition, s.definition_version);
        let step_budget = |step: &str| {
            def.as_ref()
                .and_then(|d| d.steps.iter().find(|x| x.name.as_str() == step))
                .map_or(STEP_RETRY_BUDGET.as_millis() as u64, |x| {
                    x.retry.max_total_ms
                })
        };
        let budget = def
            .as_ref()
            .and_then(|d| d.steps.iter().map(|x| x.retry.max_total_ms).max())
            .unwrap_or(STEP_RETRY_BUDGET.as_millis() as u64);
        let mut history = ports.store.history(s.saga_id).await?;
        history.sort_by_key(|e| e.transition);
        let waits = summarise_waits(&history, step_budget);
        if waits.waited {
            report.waited_for_downstream += 1;
            if s.status.kind() == StatusKind::Confirmed {
                report.confirmed_after_waiting += 1;
            }
        }
        if waits.longest_ms > budget {
            report.waited_longer_than_retry_budget += 1;
        }
        if waits.longest_ms > report.longest_wait_ms {
            report.longest_wait_ms = waits.longest_ms;
            report.longest_wait_saga = Some(s.saga_id.to_string());
        }
        if let Some(b) = waits.by_outage
            && s.status.kind() == StatusKind::Compensated
        {
            let outage_ms =
                outage_overlap_ms(&report.outages, s.started_at.as_millis(), b.at.as_millis());
            let deadline_ms = s.deadline.millis_since(s.started_at);
            report.outage_compensations.push(OutageCompensation {
                saga_id: s.saga_id.to_string(),
                code: b.code,
                step: b.step,
                reason: b.reason,
                while_waiting: b.after_wait_ms.is_none(),
                after_wait_ms: b.after_wait_ms.unwrap_or(0),
                wait_ms: b.wait_ms,
                outage_ms,
                deadline_ms,
                violation: outage_ms < deadline_ms,
            });
        }
    }
    report.compensated_by_outage = report.outage_compensations.len();
    Ok(())
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
    if !r.store_faults.is_empty() {
        println!(
            "store faults: {}",
            join(r.store_faults.iter().map(|(k, v)| format!("{k} {v}")))
        );
    }
    if !r.role_exits.is_empty() {
        println!(
            "roles that stopped by themselves (started again): {}",
            join(r.role_exits.iter().map(|(k, v)| format!("{k} {v}")))
        );
    }
    if r.token_rotations + r.token_rotations_failed > 0 {
        println!(
            "Memberson token rotations: {} ({} failed)",
            r.token_rotations, r.token_rotations_failed
        );
    }
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
    let (long, short): (Vec<&OutageWindow>, Vec<&OutageWindow>) =
        r.outages.iter().partition(|w| w.kind == "long");
    println!(
        "outages: {} long ({}), {} short; the longest {:.0} s, the forward deadline {:.0} s",
        long.len(),
        join(long.iter().map(|w| format!(
            "{} {:.0} s at {:.0} s",
            w.downstream,
            w.length_ms as f64 / 1000.0,
            w.start_ms as f64 / 1000.0
        ))),
        short.len(),
        r.longest_outage_ms as f64 / 1000.0,
        r.deadline_ms as f64 / 1000.0
    );
    println!(
        "degraded service: {} sagas waited for a downstream ({} longer than a step's retry \
         budget, {} confirmed), the longest wait {:.1} s{}; {} compensated because of an outage",
        r.waited_for_downstream,
        r.waited_longer_than_retry_budget,
        r.confirmed_after_waiting,
        r.longest_wait_ms as f64 / 1000.0,
        r.longest_wait_saga
            .as_ref()
            .map_or(String::new(), |s| format!(" (saga {s})")),
        r.compensated_by_outage
    );
    for c in &r.outage_compensations {
        let when = if c.while_waiting {
            format!("while waiting ({:.1} s)", c.wait_ms as f64 / 1000.0)
        } else {
            format!(
                "{:.1} s after a wait of {:.1} s",
                c.after_wait_ms as f64 / 1000.0,
                c.wait_ms as f64 / 1000.0
            )
        };
        println!(
            "{}: saga {} compensated {} at {} {when}; outages {:.1} s of its deadline {:.0} s: {}",
            if c.violation {
                "DEGRADED SERVICE VIOLATED"
            } else {
                "compensated by an outage longer than its deadline"
            },
            c.saga_id,
            c.code,
            c.step,
            c.outage_ms as f64 / 1000.0,
            c.deadline_ms as f64 / 1000.0,
            c.reason
        );
    }
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
            "no violations: every request has a saga, every saga finished, the money invariant \
             holds, no saga compensated because of an outage shorter than its deadline"
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

#[cfg(test)]
mod tests {
    use super::*;
    use como_schemas::StepName;

    #[test]
    fn the_bookings_are_spread_over_the_phase_and_all_due_at_its_end() {
        let length = Duration::from_secs(120);
        assert_eq!(due_by(300, Duration::ZERO, length), 0);
        assert_eq!(due_by(300, Duration::from_secs(60), length), 150);
        // Just before the end, a few are still to come; at and after it, every one is due.
        assert_eq!(due_by(300, Duration::from_millis(118_000), length), 295);
        assert_eq!(due_by(300, length, length), 300);
        assert_eq!(due_by(300, Duration::from_secs(500), length), 300);
        let mut last = 0;
        for ms in (0..=120_000).step_by(250) {
            let due = due_by(300, Duration::from_millis(ms), length);
            assert!(due >= last && due <= 300);
            last = due;
        }
        assert_eq!(last, 300);
    }

    const T0: i64 = 1_767_225_600_000;

    fn entry(
        transition: u64,
        at_s: i64,
        kind: HistoryKind,
        status: StatusKind,
        detail: Option<&str>,
    ) -> HistoryEntry {
        HistoryEntry {
            transition,
            at: Timestamp::from_millis(T0 + at_s * 1000),
            kind,
            step: Some(StepName::parse("redeem_credits").unwrap()),
            command: None,
            attempt: None,
            status,
            detail: detail.map(str::to_owned),
            error: None,
            operator: None,
            reason: None,
        }
    }

    use HistoryKind as K;
    use StatusKind as S;

    /// Started, then waited from 10 s (the transition's two entries share it) to 80 s.
    fn waited_from_10_to_80() -> Vec<HistoryEntry> {
        vec![
            entry(1, 0, K::Started, S::Running, None),
            entry(2, 10, K::ReplyReceived, S::WaitingForDownstream, None),
            entry(
                2,
                10,
                K::WaitingForDownstream,
                S::WaitingForDownstream,
                None,
            ),
            entry(3, 40, K::CommandSent, S::WaitingForDownstream, None),
            entry(4, 80, K::ReplyReceived, S::Running, None),
        ]
    }

    fn budget(_: &str) -> u64 {
        60_000
    }

    #[test]
    fn a_wait_that_ends_in_a_confirmation_is_measured_and_blames_nothing() {
        let mut h = waited_from_10_to_80();
        h.push(entry(5, 81, K::Confirmed, S::Confirmed, None));
        let w = summarise_waits(&h, budget);
        assert!(w.waited);
        assert_eq!(w.longest_ms, 70_000);
        assert_eq!(w.by_outage, None);
        let none = summarise_waits(&h[..1], budget);
        assert_eq!(none, WaitSummary::default());
    }

    #[test]
    fn a_deadline_that_passes_while_waiting_is_the_outages() {
        let mut h = waited_from_10_to_80();
        h.truncate(4);
        h.push(entry(
            4,
            900,
            K::CompensationStarted,
            S::Compensating,
            Some("DEADLINE_PASSED"),
        ));
        let w = summarise_waits(&h, budget)
            .by_outage
            .expect("by the outage");
        assert_eq!(
            (w.code.as_str(), w.after_wait_ms, w.wait_ms),
            ("DEADLINE_PASSED", None, 890_000)
        );
    }

    #[test]
    fn retries_exhausted_within_a_budget_of_a_wait_are_the_outages_and_later_ones_not() {
        let mut h = waited_from_10_to_80();
        h.push(entry(
            5,
            130,
            K::CompensationStarted,
            S::Compensating,
            Some("RETRIES_EXHAUSTED"),
        ));
        let w = summarise_waits(&h, budget)
            .by_outage
            .expect("by the outage");
        assert_eq!((w.after_wait_ms, w.wait_ms), (Some(50_000), 70_000));

        let mut h = waited_from_10_to_80();
        h.push(entry(
            5,
            140,
            K::CompensationStarted,
            S::Compensating,
            Some("RETRIES_EXHAUSTED"),
        ));
        assert_eq!(summarise_waits(&h, budget).by_outage, None);
    }

    #[test]
    fn a_business_refusal_after_a_wait_is_not_the_outages() {
        let mut h = waited_from_10_to_80();
        h.push(entry(
            5,
            81,
            K::CompensationStarted,
            S::Compensating,
            Some("SLOT_UNAVAILABLE"),
        ));
        // A wait during the compensation is measured, and does not make it the outage's.
        h.push(entry(
            6,
            82,
            K::WaitingForDownstream,
            S::WaitingForDownstream,
            None,
        ));
        h.push(entry(7, 182, K::StepCompensated, S::Compensated, None));
        let w = summarise_waits(&h, budget);
        assert_eq!((w.by_outage, w.longest_ms), (None, 100_000));
    }

    #[test]
    fn outages_overlapping_a_saga_are_counted_once() {
        let w = |from_s: i64, len_s: u64| OutageWindow {
            length_ms: len_s * 1000,
            from_epoch_ms: T0 + from_s * 1000,
            ..OutageWindow::default()
        };
        let outages = [w(0, 60), w(30, 60), w(200, 10), w(500, 10)];
        // 0-90 s merged, 200-210 s; the saga lived from 20 s to 205 s.
        assert_eq!(
            outage_overlap_ms(&outages, T0 + 20_000, T0 + 205_000),
            75_000
        );
        assert_eq!(outage_overlap_ms(&outages, T0 + 300_000, T0 + 400_000), 0);
    }

    #[test]
    fn long_outages_outlast_a_steps_retry_budget_when_the_run_allows() {
        let deadline = Duration::from_secs(15 * 60);
        let run = Duration::from_secs(300);
        let outages = long_outages(run, deadline, 2026);
        assert_eq!(outages.len(), 4, "two per downstream: {outages:?}");
        for d in 0..2 {
            let mine: Vec<_> = outages.iter().filter(|o| o.downstream == d).collect();
            assert_eq!(mine.len(), 2);
            assert!(mine[0].start + mine[0].length < mine[1].start, "{mine:?}");
        }
        for o in &outages {
            assert!(
                o.length > STEP_RETRY_BUDGET && o.length <= LONGEST_OUTAGE,
                "{o:?}"
            );
            assert!(o.start + o.length <= run, "{o:?}");
        }
        // A CI-size run: one per downstream, longer than a call's own retries.
        let outages = long_outages(Duration::from_secs(15), deadline, 7);
        assert_eq!(outages.len(), 2);
        assert!(outages.iter().all(|o| o.length > CALL_RETRIES));
        // Always well within the deadline.
        let outages = long_outages(run, Duration::from_secs(60), 1);
        assert!(outages.iter().all(|o| o.length <= Duration::from_secs(30)));
    }
}
