//! `como-saga bench --views`: what viewing an experience costs. The two figures, each
//! measured as it is stated: "a cached view is answered in under 1 ms at p99 on this machine"
//! and "1,000 views a second of one venue cost SevenRooms at most one call per cache period".
//!
//! The API is served on loopback by this process, with the simulators (in-process, on
//! loopback too) as its SevenRooms and an embedded store on a temporary file; nothing else
//! runs (no orchestrator, no workers: a view only reads SevenRooms through the API's cache).
//! Every request is real HTTP over a keep-alive client, with a submitter's token.
//!
//! 1. **Cached views**: the availability of one venue, date and party is cached for an hour
//!    (and the venues' details for their usual hours); one view of each fills the cache, then
//!    `--queries` views of each are timed one after the other (interleaved, so that the
//!    machine's drift falls on both alike). SevenRooms is asked nothing meanwhile: the
//!    simulator's count of calls is read before and after.
//! 2. **Sustained load of one venue**: the API is served again with the availability cached
//!    for `--view-ttl` (a period P), and views of one venue, date and party are sent at a
//!    steady 1,000 a second for `--view-load-for` (D) by an open-loop pacer (what is due is
//!    computed from the time elapsed, so a late tick is caught up; up to 64 views in flight).
//!    The simulator's count of SevenRooms `availability` calls, before and after, gives the
//!    calls per cache period. The very first view fills an empty cache, so a run may honestly
//!    show one call more than it has periods: the check allows `periods + 1` calls, and no more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use como_api::auth::Role;
use como_app::App;
use como_app::settings::ExperienceTtls;
use como_simulators::{Downstream, SimConfig, SimHandle, Simulators};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::bench::BenchArgs;
use crate::settings::Settings;

/// The rate: views a second of one venue during the sustained load.
pub const VIEWS_PER_SECOND: u64 = 1_000;
/// Views in flight at once, at most, during the sustained load.
const IN_FLIGHT: usize = 64;
/// What a view asks for: the simulators' large venue, a week ahead, for two.
const VENUE: &str = como_simulators::seed::VENUE_LARGE;
const PARTY_SIZE: u32 = 2;
/// How long the availability stays fresh while cached views are timed: longer than any run.
const CACHED_TTL: Duration = Duration::from_secs(3_600);

/// What `bench --views --json` prints.
#[derive(Debug, Serialize)]
pub struct ViewsReport {
    pub venue_id: String,
    pub date: String,
    pub party_size: u32,
    pub cached: CachedFigures,
    pub load: LoadFigures,
    /// No view failed or was stale, SevenRooms was not called while the cache was fresh, and
    /// the load cost at most one call per period (one more for the first fill). The latency is
    /// reported, not checked: this is a benchmark, not a timed test.
    pub passed: bool,
}

/// Latency percentiles, in milliseconds, and how many views they are of.
#[derive(Debug, Clone, Serialize)]
pub struct ViewLatency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl ViewLatency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        ViewLatency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Phase 1: views answered from a fresh cache, one at a time.
#[derive(Debug, Serialize)]
pub struct CachedFigures {
    /// Views timed of each path.
    pub queries: usize,
    pub availability_path: String,
    pub availability_ms: ViewLatency,
    pub experiences_path: String,
    pub experiences_ms: ViewLatency,
    /// The views that filled the cache (each read SevenRooms), in milliseconds.
    pub first_availability_ms: f64,
    pub first_experiences_ms: f64,
    /// The figure: a cached availability view under 1 ms at p99.
    pub availability_p99_under_1ms: bool,
    /// SevenRooms calls (availability and venues) while the timed views ran: 0 expected.
    pub sevenrooms_calls: u64,
}

/// Phase 2: one venue viewed at a steady rate, the availability cached for a short period.
#[derive(Debug, Serialize)]
pub struct LoadFigures {
    /// The availability's cache period (its time to live), P.
    pub cache_period_seconds: f64,
    /// How long views were sent, D.
    pub duration_seconds: f64,
    pub target_views_per_second: u64,
    pub views_sent: u64,
    /// Answered 200 and fresh.
    pub views_ok: u64,
    /// Answered 200 but marked stale (SevenRooms could not be read): none expected.
    pub views_stale: u64,
    /// Not answered 200, or not at all.
    pub views_failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Views answered (ok or stale) over the time from the first send to the last answer.
    pub achieved_views_per_second: f64,
    /// The most views in flight at once (at most 64).
    pub max_in_flight: usize,
    /// SevenRooms `availability` calls the load cost.
    pub sevenrooms_calls: u64,
    /// ceil(D / P).
    pub cache_periods: u64,
    /// sevenrooms_calls / cache_periods: the issue asks for at most 1.
    pub calls_per_period: f64,
    /// What the check allows: 1 + 1 / cache_periods (the first fill of an empty cache).
    pub calls_per_period_limit: f64,
    pub latency_ms: ViewLatency,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn progress(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// SevenRooms calls the simulator has received, of the named operations.
fn sevenrooms_calls(sims: &SimHandle, operations: &[&str]) -> u64 {
    let stats = sims.stats(Downstream::SevenRooms);
    operations.iter().map(|op| stats.requests(op)).sum()
}

/// The API of `app` on a fresh loopback port, until `shutdown`: its base URL.
async fn serve(app: &App, shutdown: &CancellationToken) -> anyhow::Result<String> {
    let key = app.local_key()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    app.serve_api(listener, &key.auth_config(), None, shutdown)?;
    Ok(base)
}

/// One view: its status, its body, and the time to the body's last byte.
async fn view(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>, Duration)> {
    let started = Instant::now();
    let r = http.get(url).bearer_auth(token).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = started.elapsed();
    Ok((status, body.to_vec(), took))
}

/// A view that must succeed and be fresh (the warm-up): its time.
async fn fresh_view(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    stale_field: &str,
) -> anyhow::Result<Duration> {
    let (status, body, took) = view(http, url, token).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: {status}: not JSON"))?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status}: {json}");
    anyhow::ensure!(
        json[stale_field] == serde_json::Value::Bool(false),
        "GET {url}: not fresh ({stale_field} is {}): {json}",
        json[stale_field]
    );
    Ok(took)
}

pub async fn views(args: &BenchArgs, settings: Settings) -> anyhow::Result<ViewsReport> {
    let sims = Simulators::start(SimConfig {
        bulk_members: 0,
        ..SimConfig::default()
    })
    .await
    .context("cannot start the simulators")?;
    let settings = Settings::local(settings.database, &sims);
    let shutdown = CancellationToken::new();
    let app = App::build(settings)?
        .with_local_data_keys()
        .await?
        .with_experience_ttls(ExperienceTtls {
            availability: CACHED_TTL,
            ..ExperienceTtls::default()
        });
    // The venue catalogue is followed until the end (serve_api would tie it to its phase).
    let _ = app.catalogue(&shutdown, false);
    let token = app
        .local_key()?
        .mint("bench", &[Role::Submitter], Duration::from_secs(3_600))
        .map_err(anyhow::Error::msg)?;
    // Loopback only: no proxy, whatever the environment says.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(7))
        .format("%Y-%m-%d")
        .to_string();
    let availability_path =
        format!("/v1/experiences/{VENUE}/availability?date={date}&party_size={PARTY_SIZE}");
    let experiences_path = "/v1/experiences".to_owned();

    // ---- Phase 1: cached views, one at a time ----
    let phase = shutdown.child_token();
    let base = serve(&app, &phase).await?;
    let plan = [
        format!("{base}{availability_path}"),
        format!("{base}{experiences_path}"),
    ];
    // The first view of each fills the cache (and opens the client's connection).
    let first_availability = fresh_view(&http, &plan[0], &token, "stale").await?;
    let first_experiences = fresh_view(&http, &plan[1], &token, "degraded").await?;
    let n = args.queries.max(1);
    eprintln!(
        "timing {n} cached views of {availability_path} and of {experiences_path}, one at a time"
    );
    let before = sevenrooms_calls(&sims, &["availability", "venues"]);
    let mut hists = [histogram(), histogram()];
    let bar = progress(
        n as u64,
        "cached views {bar:40} {pos}/{len} rounds  eta {eta}",
    );
    for round in 0..n {
        for (url, h) in plan.iter().zip(hists.iter_mut()) {
            let (status, body, took) = view(&http, url, &token).await?;
            anyhow::ensure!(
                status.is_success(),
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let _ = h.record(micros(took));
        }
        if round % 256 == 0 {
            bar.set_position(round as u64);
        }
    }
    bar.finish_and_clear();
    let cached_calls = sevenrooms_calls(&sims, &["availability", "venues"]) - before;
    phase.cancel();
    let availability_ms = ViewLatency::of(&hists[0]);
    let cached = CachedFigures {
        queries: n,
        availability_path: availability_path.clone(),
        availability_p99_under_1ms: availability_ms.p99 < 1.0,
        availability_ms,
        experiences_path,
        experiences_ms: ViewLatency::of(&hists[1]),
        first_availability_ms: first_availability.as_secs_f64() * 1000.0,
        first_experiences_ms: first_experiences.as_secs_f64() * 1000.0,
        sevenrooms_calls: cached_calls,
    };

    // ---- Phase 2: one venue at a steady rate, cached for a short period ----
    let period = args.view_ttl.max(Duration::from_millis(1));
    let duration = args.view_load_for.max(Duration::from_millis(1));
    let app = app.with_experience_ttls(ExperienceTtls {
        availability: period,
        ..ExperienceTtls::default()
    });
    let phase = shutdown.child_token();
    // A new server: a new, empty cache with the short period.
    let base = serve(&app, &phase).await?;
    let url: Arc<str> = format!("{base}{availability_path}").into();
    let token: Arc<str> = token.into();
    let total = (VIEWS_PER_SECOND as f64 * duration.as_secs_f64()).round() as u64;
    eprintln!(
        "sending {total} views of {VENUE} at {VIEWS_PER_SECOND}/s for {:.1} s, the availability cached for {:.3} s",
        duration.as_secs_f64(),
        period.as_secs_f64()
    );
    let before = sevenrooms_calls(&sims, &["availability"]);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tally = Tally::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut max_in_flight = 0;
    let mut sent = 0u64;
    let bar = progress(
        total,
        "load {bar:40} {pos}/{len} views  {per_sec}  eta {eta}",
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        let _ = tick.tick().await;
        // Open loop: what is due by now, whatever the answers take (a late tick sends more).
        let due = ((started.elapsed().as_secs_f64() * VIEWS_PER_SECOND as f64) as u64).min(total);
        while sent < due {
            let permit = Arc::clone(&slots)
                .acquire_owned()
                .await
                .context("the semaphore closed")?;
            let (http, url, token) = (http.clone(), Arc::clone(&url), Arc::clone(&token));
            tasks.spawn(async move {
                let _permit = permit;
                view(&http, &url, &token).await
            });
            sent += 1;
            max_in_flight = max_in_flight.max(IN_FLIGHT - slots.available_permits());
        }
        while let Some(done) = tasks.try_join_next() {
            tally.add(done?);
        }
        bar.set_position(sent);
    }
    while let Some(done) = tasks.join_next().await {
        tally.add(done?);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let calls = sevenrooms_calls(&sims, &["availability"]) - before;
    let periods = (duration.as_secs_f64() / period.as_secs_f64() - 1e-9)
        .ceil()
        .max(1.0) as u64;
    let load = LoadFigures {
        cache_period_seconds: period.as_secs_f64(),
        duration_seconds: duration.as_secs_f64(),
        target_views_per_second: VIEWS_PER_SECOND,
        views_sent: sent,
        views_ok: tally.ok,
        views_stale: tally.stale,
        views_failed: tally.failed,
        first_failure: tally.first_failure,
        achieved_views_per_second: (tally.ok + tally.stale) as f64
            / elapsed.as_secs_f64().max(1e-9),
        max_in_flight,
        sevenrooms_calls: calls,
        cache_periods: periods,
        calls_per_period: calls as f64 / periods as f64,
        calls_per_period_limit: 1.0 + 1.0 / periods as f64,
        latency_ms: ViewLatency::of(&tally.latency),
    };

    drop(http);
    shutdown.cancel();
    app.close().await;
    if let Err(e) = sims.shutdown().await {
        tracing::warn!("the simulators did not stop cleanly: {e}");
    }
    let passed = cached.sevenrooms_calls == 0
        && load.views_failed == 0
        && load.views_stale == 0
        && load.views_ok == load.views_sent
        // Integers, not the ratio: at most one call a period, and one more for the first fill.
        && load.sevenrooms_calls <= load.cache_periods + 1;
    Ok(ViewsReport {
        venue_id: VENUE.to_owned(),
        date,
        party_size: PARTY_SIZE,
        cached,
        load,
        passed,
    })
}

/// The answers of the sustained load, as they come back.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    stale: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: histogram(),
            ok: 0,
            stale: 0,
            failed: 0,
            first_failure: None,
        }
    }

    fn add(&mut self, answer: anyhow::Result<(reqwest::StatusCode, Vec<u8>, Duration)>) {
        let failure = match answer {
            Ok((status, body, took)) if status.is_success() => {
                let _ = self.latency.record(micros(took));
                // Read after the clock stopped: whether SevenRooms could be read for it.
                let fresh = serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|json| json["stale"] == serde_json::Value::Bool(false));
                if fresh {
                    self.ok += 1;
                } else {
                    self.stale += 1;
                }
                return;
            }
            Ok((status, body, _)) => format!("{status}: {}", String::from_utf8_lossy(&body)),
            Err(e) => format!("{e:#}"),
        };
        self.failed += 1;
        self.first_failure.get_or_insert(failure);
    }
}

pub fn print(r: &ViewsReport) {
    let p = |x: &ViewLatency| {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms",
            x.p50, x.p90, x.p99, x.p99_9, x.max
        )
    };
    let c = &r.cached;
    println!(
        "cached views over HTTP on loopback, {} of each, one at a time ({} on {} for {}):",
        c.queries, r.venue_id, r.date, r.party_size
    );
    println!(
        "  availability  {}  (first view, filling the cache: {:.2} ms)",
        p(&c.availability_ms),
        c.first_availability_ms
    );
    println!(
        "  experiences   {}  (first view, filling the cache: {:.2} ms)",
        p(&c.experiences_ms),
        c.first_experiences_ms
    );
    println!(
        "  a cached view under 1 ms at p99: {}; SevenRooms calls while timed: {}",
        if c.availability_p99_under_1ms {
            "yes"
        } else {
            "no"
        },
        c.sevenrooms_calls
    );
    let l = &r.load;
    println!(
        "{} views a second of one venue for {:.1} s, the availability cached for {:.3} s:",
        l.target_views_per_second, l.duration_seconds, l.cache_period_seconds
    );
    println!(
        "  {} sent, {} ok, {} stale, {} failed; {:.0} views/s achieved, at most {} in flight",
        l.views_sent,
        l.views_ok,
        l.views_stale,
        l.views_failed,
        l.achieved_views_per_second,
        l.max_in_flight
    );
    if let Some(f) = &l.first_failure {
        println!("  first failure: {f}");
    }
    println!("  latency       {}", p(&l.latency_ms));
    println!(
        "  SevenRooms availability calls: {} over {} cache periods = {:.2} a period (allowed: {:.2}, one more for the first fill)",
        l.sevenrooms_calls, l.cache_periods, l.calls_per_period, l.calls_per_period_limit
    );
    println!("{}", if r.passed { "passed" } else { "FAILED" });
}
