//! `como-saga bench`: load. Submits N bookings that all succeed against zero-latency simulators,
//! keeping C in flight (a closed loop), and reports sagas per second, end-to-end latency
//! percentiles, each step's latency and its orchestration overhead (the step's time less the
//! time its worker spent calling the downstream), and the process's peak memory.
//!
//! The simulators run as a child process, so that their ledgers (which grow with every
//! booking) do not count in the memory reported here; the HTTP round trips are the same
//! loopback calls either way.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Days;
use como_app::{App, Observers, Roles};
use como_engine::StatusKind;
use como_orchestrator::Applied;
use como_schemas::{
    BookingRequested, CommandId, Credits, GuestContact, MemberNo, PartySize, PersonName, Phone,
    RequestId, SagaId, SchemaVersion, SlotTime, VenueId,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Bookings to run.
    #[arg(long, default_value_t = 2_000)]
    pub sagas: usize,
    /// Bookings in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Print the results as one JSON object (the progress bar goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// Keep the database afterwards (by default a temporary file is used and removed).
    #[arg(long)]
    pub keep_database: bool,
    /// Measure the reads instead: fill the store with --sagas finished sagas (unless it holds
    /// that many: give --database FILE with --keep-database to measure one again), serve the
    /// API on loopback, and time each dashboard read over HTTP.
    #[arg(long)]
    pub reads: bool,
    /// With --reads: how many times each read is timed. With --views: how many cached views
    /// of each kind are timed (20,000 when not given).
    #[arg(
        long,
        default_value_t = 200,
        default_value_if("views", "true", "20000"),
        value_name = "N"
    )]
    pub queries: usize,
    /// Measure viewing experiences instead: serve the API on loopback with the simulators, time
    /// --queries cached views (availability and the experiences list) one at a time, then send
    /// 1,000 views a second of one venue for --view-load-for with the availability cached for
    /// --view-ttl, and count the SevenRooms calls they cost (at most one a cache period, and
    /// one more for the first fill; otherwise the exit status is 1).
    #[arg(long, conflicts_with = "reads")]
    pub views: bool,
    /// With --views: the availability's cache period during the sustained load.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::settings::parse_duration)]
    pub view_ttl: Duration,
    /// With --views: how long the sustained load of one venue lasts.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::settings::parse_duration)]
    pub view_load_for: Duration,
    /// While the bookings run, a dashboard polls the API on loopback: counts and the stuck list,
    /// each this many times a second (0: no polling). Its latencies are reported.
    #[arg(long, default_value_t = 0, value_name = "HZ")]
    pub poll: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepFigures {
    /// From the command's commit to its reply's commit.
    pub latency_ms: Percentiles,
    /// The same, less the time the worker spent calling the downstream.
    pub overhead_ms: Percentiles,
}

/// What `bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub backend: String,
    pub sagas: usize,
    pub concurrency: usize,
    pub elapsed_ms: u128,
    pub sagas_per_second: f64,
    pub confirmed: u64,
    pub not_confirmed: u64,
    pub end_to_end_ms: Percentiles,
    pub steps: BTreeMap<String, StepFigures>,
    pub overhead_per_step_ms: Percentiles,
    pub peak_rss_mib: f64,
    /// On the AWS backend: the API calls per saga by service and operation (and the write
    /// units DynamoDB bills), and what a saga costs at list prices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsFigures>,
    /// On the embedded backend: SQLite transactions committed per saga (each writes the WAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_per_saga: Option<f64>,
    /// With --poll: what the dashboard's reads took while the bookings ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollFigures>,
    /// When traces are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`): spans exported per saga, and
    /// spans dropped over the run (the collector slow or down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans_exported_per_saga: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans_dropped: Option<u64>,
}

/// A dashboard polling the API during the run.
#[derive(Debug, Clone, Serialize)]
pub struct PollFigures {
    /// Reads a second, of each kind.
    pub hz: u32,
    pub counts_requests: u64,
    pub counts_ms: Percentiles,
    pub stuck_requests: u64,
    pub stuck_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct AwsFigures {
    /// `"<service> <operation>"` → count per saga.
    pub per_saga: BTreeMap<String, f64>,
    pub cost: como_backend_aws::Cost,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits: fixed size whatever the run's length.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

/// Collects the figures as transitions are stored and commands are handled.
struct Recorder {
    in_flight: Mutex<HashMap<SagaId, (Instant, OwnedSemaphorePermit)>>,
    sent: Mutex<HashMap<CommandId, Instant>>,
    downstream: Mutex<HashMap<CommandId, Duration>>,
    figures: Mutex<Figures>,
}

struct Figures {
    end_to_end: Histogram<u64>,
    latency: BTreeMap<String, Histogram<u64>>,
    overhead: BTreeMap<String, Histogram<u64>>,
    overhead_all: Histogram<u64>,
    confirmed: u64,
    not_confirmed: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The step named in a command id: `<saga>:<step>:<kind>:<attempt>`.
fn step_of(id: &CommandId) -> String {
    id.as_str().split(':').nth(1).unwrap_or("?").to_owned()
}

impl Recorder {
    fn new() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            downstream: Mutex::new(HashMap::new()),
            figures: Mutex::new(Figures {
                end_to_end: histogram(),
                latency: BTreeMap::new(),
                overhead: BTreeMap::new(),
                overhead_all: histogram(),
                confirmed: 0,
                not_confirmed: 0,
            }),
        }
    }

    fn stored(&self, applied: &Applied) {
        let now = Instant::now();
        if !applied.sent.is_empty() {
            let mut sent = lock(&self.sent);
            for id in &applied.sent {
                sent.insert(id.clone(), now);
            }
        }
        if let Some(id) = &applied.replied {
            let t0 = lock(&self.sent).remove(id);
            let spent = lock(&self.downstream).remove(id).unwrap_or_default();
            if let Some(t0) = t0 {
                let latency = now - t0;
                let step = step_of(id);
                let mut f = lock(&self.figures);
                let _ = f
                    .latency
                    .entry(step.clone())
                    .or_insert_with(histogram)
                    .record(micros(latency));
                let overhead = micros(latency.saturating_sub(spent));
                let _ = f
                    .overhead
                    .entry(step)
                    .or_insert_with(histogram)
                    .record(overhead);
                let _ = f.overhead_all.record(overhead);
            }
        }
        let kind = applied.state.status.kind();
        let finished = kind.is_terminal() || kind == StatusKind::NeedsOperator;
        let entry = if finished {
            lock(&self.in_flight).remove(&applied.state.saga_id)
        } else {
            None
        };
        if let Some((start, permit)) = entry {
            let mut f = lock(&self.figures);
            let _ = f.end_to_end.record(micros(now - start));
            if kind == StatusKind::Confirmed {
                f.confirmed += 1;
            } else {
                f.not_confirmed += 1;
            }
            drop(permit);
        }
    }

    fn handled(&self, id: &CommandId, spent: Duration) {
        lock(&self.downstream).insert(id.clone(), spent);
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    // Before anything is started or made: what is wrong with the backend, in one line.
    stack::runtime()?.block_on(crate::aws_credentials::preflight(&settings))?;
    let tmp = tempfile_dir()?;
    if args.common.database.is_none() {
        settings.database = tmp.join("bench.sqlite");
    }
    if args.views {
        let report = stack::runtime()?.block_on(super::bench_views::views(&args, settings));
        if !args.keep_database {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let report = report?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            super::bench_views::print(&report);
        }
        return Ok(if report.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if args.reads {
        let report = stack::runtime()?.block_on(super::bench_reads::reads(&args, settings));
        if !args.keep_database {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let report = report?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            super::bench_reads::print(&report);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = stack::runtime()?.block_on(bench(&args, settings.clone()))?;
    if !args.keep_database {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.not_confirmed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("como-saga-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The simulators as a child process; killed when dropped.
struct ChildSims(Child);

impl Drop for ChildSims {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_simulators(bulk: usize) -> anyhow::Result<(ChildSims, String, String)> {
    let exe =
        std::env::current_exe().context("cannot find this program to start the simulators")?;
    let mut child = std::process::Command::new(exe)
        .args(["simulators", "--json", "--bulk-members", &bulk.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the simulators")?;
    let mut line = String::new();
    let stdout = child
        .stdout
        .take()
        .context("no output from the simulators")?;
    BufReader::new(stdout).read_line(&mut line)?;
    let sims = ChildSims(child);
    let urls: serde_json::Value =
        serde_json::from_str(&line).context("the simulators did not print their URLs")?;
    let url = |k: &str| {
        urls[k]
            .as_str()
            .map(str::to_owned)
            .context("a simulator URL is missing")
    };
    Ok((sims, url("memberson_url")?, url("sevenrooms_url")?))
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| unreachable!("bench values are valid: {e}"))
}

/// `n` bookings that all succeed: members with large balances, the venue that seats 200 a
/// slot, two guests, spread over a year of slots.
fn bookings(n: usize, run: &str, price_per_guest: u64) -> Vec<BookingRequested> {
    let today = chrono::Utc::now().date_naive();
    let times = [
        "12:00", "12:30", "13:00", "13:30", "14:00", "18:00", "18:30", "19:00", "19:30", "20:00",
        "20:30", "21:00", "21:30",
    ];
    (0..n)
        .map(|i| {
            let slot = i / 90; // 90 bookings of 2 in a slot of 200 covers
            BookingRequested {
                traceparent: None,
                availability_id: None,
                schema_version: SchemaVersion::CURRENT,
                request_id: must(RequestId::parse(format!("bench-{run}-{i}"))),
                member_no: must(MemberNo::parse(como_simulators::seed::bulk_member_no(
                    i % 5_000,
                ))),
                venue_id: must(VenueId::parse(como_simulators::seed::VENUE_LARGE)),
                date: today
                    .checked_add_days(Days::new(1 + (slot / times.len()) as u64))
                    .unwrap_or(today),
                time: must(SlotTime::parse(times[slot % times.len()])),
                party_size: must(PartySize::new(2)),
                quoted_credits: must(Credits::new(price_per_guest * 2)),
                guest: GuestContact {
                    first_name: must(PersonName::parse("Bench")),
                    last_name: must(PersonName::parse("Guest")),
                    phone: must(Phone::parse("+6591234567")),
                    email: None,
                }
                .into(),
            }
        })
        .collect()
}

async fn bench(args: &BenchArgs, mut settings: Settings) -> anyhow::Result<BenchReport> {
    let (_sims, memberson, sevenrooms) = start_simulators(5_000)?;
    settings.memberson.base_url = Some(memberson);
    settings.sevenrooms.base_url = Some(sevenrooms);
    // No limit of ours in the way: the benchmark measures the orchestration.
    let unlimited = crate::settings::RateLimitSetting {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    settings.memberson.rate_limit = unlimited;
    settings.sevenrooms.rate_limit = unlimited;
    let app = App::build(settings)?.with_local_data_keys().await?;
    let settings = app.settings().clone();
    let backend = app.backend();
    let ports = app.ports().clone();
    if settings.backend == crate::settings::BackendKind::Aws {
        // The CRM worker reads its Memberson token from the secret: one these simulators
        // issued.
        como_app::tokens::ensure_token(&settings, ports.secrets.as_ref())
            .await
            .context("cannot put a Memberson token in the secret store")?;
    }
    let recorder = Arc::new(Recorder::new());

    let shutdown = CancellationToken::new();
    let stored = Arc::clone(&recorder);
    let handled = Arc::clone(&recorder);
    let running = app.spawn(
        &Roles::all(),
        &shutdown,
        Observers {
            orchestrator: Some(Arc::new(move |a: &Applied| stored.stored(a))),
            workers: Some(Arc::new(move |id: &CommandId, d: Duration| {
                handled.handled(id, d)
            })),
        },
    )?;

    let poller = if args.poll > 0 {
        Some(Poller::start(&app, args.poll, &shutdown).await?)
    } else {
        None
    };

    let price = settings
        .venues
        .price(
            &VenueId::parse(como_simulators::seed::VENUE_LARGE).map_err(anyhow::Error::msg)?,
            PartySize::new(1).map_err(anyhow::Error::msg)?,
        )
        .context("the benchmark venue is not in the catalogue")?;
    let run_id = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let requests = bookings(args.sagas, &run_id, price);
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let bar = indicatif::ProgressBar::new(args.sagas as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sagas  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // What the start-up cost (connecting, the token) is not a saga's.
    backend.reset_aws_api_calls();
    let commits_before = backend.embedded_commits();
    let started = Instant::now();
    for request in &requests {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .context("the semaphore closed")?;
        lock(&recorder.in_flight).insert(request.saga_id(), (Instant::now(), permit));
        como_orchestrator::submit(&ports, request).await?;
        bar.set_position(lock(&recorder.figures).end_to_end.len());
    }
    // Wait for the last ones.
    let _ = slots
        .acquire_many(u32::try_from(args.concurrency.max(1)).unwrap_or(u32::MAX))
        .await;
    let elapsed = started.elapsed();
    let commits_per_saga = backend
        .embedded_commits()
        .zip(commits_before)
        .map(|(after, before)| after.saturating_sub(before) as f64 / args.sagas.max(1) as f64);
    let aws = backend.aws_api_calls().map(|calls| AwsFigures {
        per_saga: calls
            .iter()
            .map(|c| {
                (
                    format!("{} {}", c.service, c.operation),
                    c.count as f64 / args.sagas.max(1) as f64,
                )
            })
            .collect(),
        cost: como_backend_aws::Cost::per_saga(&calls, args.sagas),
    });
    bar.finish_and_clear();
    let polling = match poller {
        Some(p) => Some(p.stop().await),
        None => None,
    };
    shutdown.cancel();
    if let Err(e) = running.stopped(stack::SHUTDOWN_GRACE).await {
        tracing::warn!("{e:#}");
    }
    app.close().await;

    let spans = match como_app::telemetry::span_counts() {
        Some(counts) if como_ports::trace::enabled() => {
            tokio::task::spawn_blocking(como_app::telemetry::flush).await?;
            Some((
                counts.exported() as f64 / args.sagas.max(1) as f64,
                counts.dropped(),
            ))
        }
        _ => None,
    };
    let f = lock(&recorder.figures);
    let steps = f
        .latency
        .iter()
        .map(|(step, h)| {
            let overhead = f
                .overhead
                .get(step)
                .map_or_else(|| Percentiles::of(&histogram()), Percentiles::of);
            (
                step.clone(),
                StepFigures {
                    latency_ms: Percentiles::of(h),
                    overhead_ms: overhead,
                },
            )
        })
        .collect();
    Ok(BenchReport {
        spans_exported_per_saga: spans.map(|s| s.0),
        spans_dropped: spans.map(|s| s.1),
        backend: format!("{:?}", settings.backend).to_lowercase(),
        sagas: args.sagas,
        concurrency: args.concurrency,
        elapsed_ms: elapsed.as_millis(),
        sagas_per_second: args.sagas as f64 / elapsed.as_secs_f64().max(1e-9),
        confirmed: f.confirmed,
        not_confirmed: f.not_confirmed,
        end_to_end_ms: Percentiles::of(&f.end_to_end),
        steps,
        overhead_per_step_ms: Percentiles::of(&f.overhead_all),
        peak_rss_mib: peak_rss_mib(),
        aws,
        commits_per_saga,
        polling,
    })
}

/// A dashboard on loopback: the API served by this process, read `hz` times a second for the
/// counts and as often for the stuck list, as a viewer.
struct Poller {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<(u64, Histogram<u64>)>>,
    hz: u32,
}

impl Poller {
    async fn start(app: &App, hz: u32, shutdown: &CancellationToken) -> anyhow::Result<Poller> {
        let key = app.local_key()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        app.serve_api(listener, &key.auth_config(), None, shutdown)?;
        let token = key
            .mint(
                "bench-dashboard",
                &[como_api::auth::Role::Viewer],
                Duration::from_secs(24 * 3_600),
            )
            .map_err(anyhow::Error::msg)?;
        let stop = CancellationToken::new();
        let http = reqwest::Client::new();
        let tasks = ["/v1/counts", "/v1/stuck?older_than=5m"]
            .into_iter()
            .map(|path| {
                let (http, token, stop) = (http.clone(), token.clone(), stop.clone());
                let url = format!("{base}{path}");
                tokio::spawn(async move {
                    let mut h = histogram();
                    let mut n = 0;
                    let mut tick = tokio::time::interval(Duration::from_secs(1) / hz.max(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => {}
                        }
                        let started = Instant::now();
                        let ok = match http.get(&url).bearer_auth(&token).send().await {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            n += 1;
                            let _ = h.record(micros(started.elapsed()).max(1));
                        } else {
                            tracing::warn!(%url, "the dashboard's read failed");
                        }
                    }
                    (n, h)
                })
            })
            .collect();
        Ok(Poller { stop, tasks, hz })
    }

    async fn stop(self) -> PollFigures {
        self.stop.cancel();
        let mut done = Vec::new();
        for t in self.tasks {
            done.push(t.await.unwrap_or_else(|_| (0, histogram())));
        }
        let (counts, stuck) = (&done[0], &done[1]);
        PollFigures {
            hz: self.hz,
            counts_requests: counts.0,
            counts_ms: Percentiles::of(&counts.1),
            stuck_requests: stuck.0,
            stuck_ms: Percentiles::of(&stuck.1),
        }
    }
}

/// The process's peak resident memory (`VmHWM`), in MiB; 0 where /proc is not available.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn print_report(r: &BenchReport) {
    println!(
        "{} sagas at concurrency {} on the {} backend: {:.0} sagas/s ({} confirmed, {} not) in {:.1} s",
        r.sagas,
        r.concurrency,
        r.backend,
        r.sagas_per_second,
        r.confirmed,
        r.not_confirmed,
        r.elapsed_ms as f64 / 1000.0
    );
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2} ms",
            x.p50, x.p95, x.p99, x.max
        )
    };
    println!("end to end:             {}", p(&r.end_to_end_ms));
    for (step, s) in &r.steps {
        println!("{step:<16} latency:  {}", p(&s.latency_ms));
        println!("{:<16} overhead: {}", "", p(&s.overhead_ms));
    }
    println!("overhead per step:      {}", p(&r.overhead_per_step_ms));
    println!("peak memory:            {:.1} MiB", r.peak_rss_mib);
    if let Some(c) = r.commits_per_saga {
        println!("commits per saga:       {c:.2}");
    }
    if let (Some(per_saga), Some(dropped)) = (r.spans_exported_per_saga, r.spans_dropped) {
        println!("spans exported per saga: {per_saga:.1} ({dropped} dropped)");
    }
    if let Some(poll) = &r.polling {
        println!(
            "a dashboard polling {} Hz: counts {} reads, {}",
            poll.hz,
            poll.counts_requests,
            p(&poll.counts_ms)
        );
        println!(
            "                        stuck {} reads, {}",
            poll.stuck_requests,
            p(&poll.stuck_ms)
        );
    }
    if let Some(aws) = &r.aws {
        println!("AWS API calls per saga:");
        for (what, n) in &aws.per_saga {
            println!("  {what:<50} {n:>8.2}");
        }
        let c = &aws.cost;
        println!(
            "per million sagas at list prices: SQS ${:.2} + DynamoDB ${:.2} + EventBridge ${:.2} = ${:.2}",
            c.sqs_dollars, c.dynamodb_dollars, c.eventbridge_dollars, c.total_dollars
        );
    }
}
