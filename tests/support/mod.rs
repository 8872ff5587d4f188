//! Helpers for tests that run como-saga's roles as real processes on one SQLite file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use como_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use como_engine::{SagaState, StatusKind};
use como_ports::{Backend, SystemClock};
use como_schemas::{
    BookingRequested, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone, RequestId,
    SagaId, SchemaVersion, SlotTime, VenueId,
};
use como_simulators::invariant::{SagaKeys, Violation, check_money_invariant};
use como_simulators::ledger::Ledger;
use como_simulators::seed;

pub const BIN: &str = env!("CARGO_BIN_EXE_como-saga");

/// The simulators as their own process.
pub struct Sims {
    pub child: Child,
    pub memberson: String,
    pub sevenrooms: String,
}

impl Sims {
    pub fn start(dir: &Path, faults: Option<&str>) -> Sims {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "simulators",
            "--json",
            "--seed",
            "11",
            "--bulk-members",
            "1000",
        ]);
        if let Some(f) = faults {
            let path = dir.join("faults.json");
            std::fs::write(&path, f).unwrap();
            cmd.arg("--faults").arg(path);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulators");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let urls: serde_json::Value =
            serde_json::from_str(&line).expect("the simulators print their URLs");
        Sims {
            child,
            memberson: urls["memberson_url"].as_str().unwrap().to_owned(),
            sevenrooms: urls["sevenrooms_url"].as_str().unwrap().to_owned(),
        }
    }

    /// Both ledgers, read over HTTP as any outside checker would.
    pub async fn ledger(&self) -> Ledger {
        let get = |url: String| async move {
            reqwest::get(&url)
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .text()
                .await
                .unwrap()
        };
        let m = get(format!("{}/_sim/ledger", self.memberson)).await;
        let s = get(format!("{}/_sim/ledger", self.sevenrooms)).await;
        Ledger {
            memberson: serde_json::from_str(&m).expect("Memberson ledger"),
            sevenrooms: serde_json::from_str(&s).expect("SevenRooms ledger"),
        }
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One role (`orchestrator`, `worker crm`, `worker sevenrooms`) as its own process.
pub struct Role {
    pub args: Vec<String>,
    /// Environment beyond the database and the simulators' addresses.
    pub env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub restarts: usize,
}

impl Role {
    pub fn start(args: &[&str], db: &Path, sims: &Sims, log: PathBuf) -> Role {
        Role::start_with(args, &[], db, sims, log)
    }

    pub fn start_with(
        args: &[&str],
        env: &[(&str, &str)],
        db: &Path,
        sims: &Sims,
        log: PathBuf,
    ) -> Role {
        let mut role = Role {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            log,
            restarts: 0,
        };
        role.spawn(db, sims);
        role
    }

    pub fn spawn(&mut self, db: &Path, sims: &Sims) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env("COMO_SAGA_DATABASE", db)
            .env("COMO_SAGA_MEMBERSON_URL", &sims.memberson)
            .env("COMO_SAGA_SEVENROOMS_URL", &sims.sevenrooms)
            .env("COMO_SAGA_LOG", "warn")
            // The simulators' credentials and the demo venues.
            .env("COMO_SAGA_DEV_DEFAULTS", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a role");
        self.child = Some(child);
    }

    /// `kill -9`, then start again.
    pub fn crash_and_restart(&mut self, db: &Path, sims: &Sims) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.restarts += 1;
        self.spawn(db, sims);
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
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

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The orchestrator and both workers, each its own process with `env` beyond the defaults,
/// logging to `dir`.
pub fn roles(db: &Path, sims: &Sims, dir: &Path, env: &[(&str, &str)]) -> Vec<Role> {
    [
        ("orchestrator.log", &["orchestrator"][..]),
        ("worker-crm.log", &["worker", "crm"][..]),
        ("worker-sevenrooms.log", &["worker", "sevenrooms"][..]),
    ]
    .into_iter()
    .map(|(log, args)| Role::start_with(args, env, db, sims, dir.join(log)))
    .collect()
}

/// The database at `db`, with the data keys the roles use on it (the key file beside it, made
/// if there is none yet), so that what the test submits is sealed as the API would seal it.
pub fn open(db: &Path) -> (EmbeddedBackend, Backend) {
    let backend = EmbeddedBackend::open(db, EmbeddedConfig::default(), Arc::new(SystemClock))
        .expect("open the database");
    // A key file is read and made without the runtime's help.
    let keys = futures::executor::block_on(como_privacy::Keys::load(
        como_privacy::KeySource::File(db.with_extension("keys")),
        true,
    ))
    .expect("the data keys beside the database");
    let ports = backend.ports().with_vault(keys);
    (backend, ports)
}

/// `n` valid bookings: mostly rich members at the large venue, some short of credits, some at
/// the small venue whose slots fill.
pub fn bookings(n: usize, tag: &str) -> Vec<BookingRequested> {
    let today = chrono::Utc::now().date_naive();
    (0..n)
        .map(|i| {
            let (member, venue, per_guest) = match i % 10 {
                0 => (seed::MEMBER_LOW_BALANCE.to_owned(), seed::VENUE_LARGE, 600),
                1 | 2 => (seed::bulk_member_no(i % 1000), seed::VENUE_SMALL, 1_500),
                _ => (seed::bulk_member_no(i % 1000), seed::VENUE_LARGE, 600),
            };
            let date: NaiveDate = today
                .checked_add_days(Days::new(1 + (i % 3) as u64))
                .unwrap();
            BookingRequested {
                traceparent: None,
                availability_id: None,
                schema_version: SchemaVersion::CURRENT,
                request_id: RequestId::parse(format!("{tag}-{i}")).unwrap(),
                member_no: MemberNo::parse(member).unwrap(),
                venue_id: VenueId::parse(venue).unwrap(),
                date,
                time: SlotTime::parse(["19:00", "19:30", "20:00"][i % 3]).unwrap(),
                party_size: PartySize::new(2).unwrap(),
                quoted_credits: Credits::new(per_guest * 2).unwrap(),
                guest: GuestContact {
                    first_name: PersonName::parse("Test").unwrap(),
                    last_name: PersonName::parse(format!("Guest {i}")).unwrap(),
                    phone: Phone::parse(format!("+6591{:06}", i)).unwrap(),
                    email: None,
                }
                .into(),
            }
        })
        .collect()
}

/// Wait until every saga is finished (or needs an operator), or `timeout` passes. Returns the
/// sagas' states (a missing saga is `None`).
pub async fn wait_all(
    ports: &Backend,
    ids: &[SagaId],
    timeout: Duration,
) -> Vec<Option<SagaState>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            states.push(ports.store.get(*id).await.unwrap().map(|v| v.value));
        }
        let done = states.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                let k = s.status.kind();
                k.is_terminal() || k == StatusKind::NeedsOperator
            })
        });
        if done || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counts by final status, and the money invariant against the ledger.
pub fn verdict(
    states: &[Option<SagaState>],
    ledger: &Ledger,
) -> (std::collections::BTreeMap<String, usize>, Vec<Violation>) {
    let mut counts = std::collections::BTreeMap::new();
    let mut keys_all = Vec::new();
    for s in states {
        match s {
            None => *counts.entry("missing".to_owned()).or_insert(0) += 1,
            Some(s) => {
                *counts
                    .entry(s.status.kind().as_str().to_owned())
                    .or_insert(0) += 1;
                keys_all.push(SagaKeys::of(s));
            }
        }
    }
    (counts, check_money_invariant(ledger, &keys_all))
}

/// Waits (30 s at most) for a dead letter on `queue` whose reason contains `needle`.
pub async fn wait_for_dead_letter(ports: &Backend, queue: como_ports::QueueName, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = ports.queue.dead_letters(queue, 10).await.unwrap();
        if dead.iter().any(|d| d.reason.contains(needle)) {
            return;
        }
        assert!(Instant::now() < deadline, "no dead letter: {dead:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
