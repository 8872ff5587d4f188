//! `como-saga bench --reads`: what a dashboard's reads cost when the store is large. Fills the
//! store with `--sagas` finished sagas (unless it holds that many already: keep one with
//! `--database FILE --keep-database` and measure it again), serves the API on loopback, and
//! times each read a dashboard or `como-saga sagas` makes, over real HTTP, `--queries` times
//! each (interleaved, so that the machine's drift falls on all of them alike).
//!
//! The sagas are one real run of the engine per outcome (confirmed, compensated after a
//! refused redemption), each copied with its own request, member (10,000 of them), venue and
//! start time (spread over the last 30 days), its timestamps and history moved along with it.
//! A few are left needing an operator, and a few running, so that the lists of live sagas are
//! not empty.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use como_api::auth::Role;
use como_app::App;
use como_engine::state::{Activity, Phase};
use como_engine::{HistoryEntry, Input, SagaState, SagaStatus, como, transition};
use como_ports::{CreateOutcome, Effects};
use como_schemas::{
    CommandKind, MemberNo, OperationKind, ReplyOutcome, Timestamp, VenueId, WorkerCommand, examples,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::bench::{BenchArgs, Percentiles};
use crate::settings::Settings;

/// What `bench --reads --json` prints.
#[derive(Debug, Serialize)]
pub struct ReadsReport {
    pub backend: String,
    /// Sagas in the store when measured, by status.
    pub sagas: u64,
    pub by_status: Vec<(String, u64)>,
    /// Sagas written by this run (0 when the store held them already), and how long it took.
    pub filled: u64,
    pub fill_seconds: f64,
    pub queries_each: usize,
    /// Per read: its path and its latency over HTTP, in milliseconds.
    pub reads: Vec<ReadFigures>,
    pub database_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ReadFigures {
    pub name: String,
    pub path: String,
    pub latency_ms: Percentiles,
    /// Items the first answer held (a list's page), or 0.
    pub items: usize,
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| unreachable!("fixed values: {e}"))
}

/// A saga run by the engine to its end with every downstream answering at once (and the
/// redemption refused when `refuse_redeem`): its state and whole history.
fn template(refuse_redeem: bool) -> anyhow::Result<(SagaState, Vec<HistoryEntry>)> {
    let def = como::current();
    let date = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let request = examples::booking_request("bench-reads-template", date);
    let mut now = Timestamp::from_datetime(chrono::Utc::now());
    let d = transition(&def, None, &Input::Start { request }, now)?;
    let (mut state, mut history) = (d.state, d.history);
    let mut out: VecDeque<WorkerCommand> = d.commands.into();
    for _ in 0..100 {
        if state.status.kind().is_terminal() {
            break;
        }
        let input = match out.pop_front() {
            Some(cmd) => {
                now = now.plus_ms(150);
                let outcome = if refuse_redeem
                    && cmd.kind == CommandKind::Action
                    && cmd.operation.kind() == OperationKind::RedeemCredits
                {
                    ReplyOutcome::BusinessFailure {
                        code: "INSUFFICIENT_POINTS".into(),
                        message: "Insufficient points.".into(),
                    }
                } else {
                    examples::success(&cmd)
                };
                let mut reply = examples::reply(&cmd, outcome);
                reply.replied_at = now;
                Input::Reply { reply }
            }
            None => {
                now = state
                    .wake_at
                    .context("a live saga with nothing out waits")?;
                Input::Timer
            }
        };
        let d = transition(&def, Some(&state), &input, now)?;
        state = d.state;
        history.extend(d.history);
        out.extend(d.commands);
    }
    anyhow::ensure!(
        state.status.kind().is_terminal(),
        "the template saga did not finish: {:?}",
        state.status
    );
    Ok((state, history))
}

/// The template as saga number `i`: its own request, member, venue and start.
fn copy(
    template: &(SagaState, Vec<HistoryEntry>),
    i: u64,
    started_at: Timestamp,
    venues: &[VenueId],
) -> anyhow::Result<(SagaState, Vec<HistoryEntry>)> {
    let (mut state, mut history) = template.clone();
    let shift = started_at.as_millis() - state.started_at.as_millis();
    let moved = |t: Timestamp| Timestamp::from_millis(t.as_millis() + shift);
    state.request.request_id =
        como_schemas::RequestId::parse(format!("bench-reads-{i}")).map_err(anyhow::Error::msg)?;
    state.request.member_no =
        MemberNo::parse(format!("{}", 100_000_000 + i % 10_000)).map_err(anyhow::Error::msg)?;
    state.request.venue_id = venues[(i as usize) % venues.len()].clone();
    state.saga_id = state.request.saga_id();
    state.started_at = moved(state.started_at);
    state.updated_at = moved(state.updated_at);
    state.wake_at = state.wake_at.map(moved);
    for h in &mut history {
        h.at = moved(h.at);
    }
    Ok((state, history))
}

/// Writes `n` sagas, many at once (the embedded writer commits them in groups).
async fn fill(app: &App, n: u64) -> anyhow::Result<()> {
    let confirmed = Arc::new(template(false)?);
    let compensated = Arc::new(template(true)?);
    let venues: Arc<Vec<VenueId>> = Arc::new(
        como_simulators::seed::venues()
            .into_iter()
            .map(|v| must(VenueId::parse(v.id)))
            .collect(),
    );
    let now = chrono::Utc::now().timestamp_millis();
    let month = 30 * 24 * 3_600_000_i64;
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "filling {bar:40} {pos}/{len} sagas  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let slots = Arc::new(Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        // Started in order over the last month, newest last.
        let started = Timestamp::from_millis(now - month + (month / n.max(1) as i64) * i as i64);
        let template = if i % 12 == 5 {
            &compensated
        } else {
            &confirmed
        };
        let (state, history) = copy(template, i, started, &venues)?;
        let store = app.ports().store.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let effects = Effects {
                history,
                ..Effects::default()
            };
            let out = store.create(&state, effects).await;
            bar.inc(1);
            out
        });
        while let Some(done) = tasks.try_join_next() {
            match done?? {
                CreateOutcome::Created { .. } | CreateOutcome::Exists => {}
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    bar.finish_and_clear();
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

pub async fn reads(args: &BenchArgs, settings: Settings) -> anyhow::Result<ReadsReport> {
    let database = settings.database.clone();
    let backend = format!("{:?}", settings.backend).to_lowercase();
    let app = App::build(settings)?.with_local_data_keys().await?;
    let have: u64 = app
        .ports()
        .store
        .counts()
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let want = args.sagas as u64;
    let fill_started = Instant::now();
    let filled = want.saturating_sub(have);
    if filled > 0 {
        eprintln!("writing {filled} finished sagas (the store holds {have})");
        fill(&app, filled).await?;
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    // A few live sagas: needing an operator, and running (updated long ago: stuck).
    for i in 0..20u64 {
        let (mut state, history) = template(false)?;
        state.request.request_id = como_schemas::RequestId::parse(format!("bench-reads-live-{i}"))
            .map_err(anyhow::Error::msg)?;
        state.saga_id = state.request.saga_id();
        let hour_ago = Timestamp::from_datetime(chrono::Utc::now() - chrono::Duration::hours(1));
        state.started_at = hour_ago;
        state.updated_at = hour_ago;
        let must = |r: Result<como_schemas::StepName, String>| r.map_err(anyhow::Error::msg);
        if i % 2 == 0 {
            let reason = como_schemas::events::NeedsOperatorReason::CompensationRefused;
            state.phase = Phase::NeedsOperator {
                reason,
                step: 2,
                detail: "bench".into(),
                compensating: None,
            };
            state.status = SagaStatus::NeedsOperator {
                reason,
                step: must(como_schemas::StepName::parse("redeem_credits"))?,
                detail: "bench".into(),
            };
            state.wake_at = None;
        } else {
            state.phase = Phase::Forward {
                step: 1,
                activity: Activity::Awaiting {
                    kind: CommandKind::Action,
                    attempt: 1,
                    timeout_at: hour_ago.plus_ms(15_000),
                    waiting_for_downstream: false,
                },
            };
            state.status = SagaStatus::Running {
                step: must(como_schemas::StepName::parse("hold_slot"))?,
                attempt: 1,
                retry_at: None,
            };
            // No timer: nothing runs here to fire it; a stuck saga for the lists.
            state.wake_at = None;
        }
        let _ = app
            .ports()
            .store
            .create(
                &state,
                Effects {
                    history,
                    ..Effects::default()
                },
            )
            .await?;
    }
    let counts = app.ports().store.counts().await?;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();

    // The API on loopback, and a viewer's token.
    let shutdown = CancellationToken::new();
    let key = app.local_key()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    app.serve_api(listener, &key.auth_config(), None, &shutdown)?;
    let token = key
        .mint("bench", &[Role::Viewer], Duration::from_secs(3_600))
        .map_err(anyhow::Error::msg)?;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let token = token.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(&url).bearer_auth(token).send().await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await?;
            anyhow::ensure!(status.is_success(), "GET {url}: {status}: {body}");
            Ok::<_, anyhow::Error>(body)
        }
    };
    // A cursor 100 pages deep, for a page far down the list.
    let mut deep = None;
    for _ in 0..100 {
        let path = match &deep {
            Some(c) => format!("/v1/sagas?limit=50&cursor={c}"),
            None => "/v1/sagas?limit=50".to_owned(),
        };
        deep = get(path).await?["next_cursor"].as_str().map(str::to_owned);
    }
    let member = 100_000_000 + 4_242;
    let mut plan: Vec<(&str, String)> = vec![
        ("list, newest first", "/v1/sagas?limit=50".into()),
        (
            "list by status",
            "/v1/sagas?status=confirmed&limit=50".into(),
        ),
        ("counts by status and step", "/v1/counts".into()),
        ("stuck, longest first", "/v1/stuck?older_than=5m".into()),
        (
            "needs an operator",
            "/v1/sagas?status=needs_operator&limit=50".into(),
        ),
        ("by member", format!("/v1/sagas?member={member}&limit=50")),
        ("retrying with errors", "/v1/sagas?retrying=true".into()),
        // What the dashboard reads: the stuck list on each live event, and the overview (read
        // afresh at most every 2 s; between reads it is the last one).
        (
            "dashboard: stuck list",
            "/v1/stuck?older_than=0s&status=waiting_for_downstream,reconciling,needs_operator&limit=100"
                .into(),
        ),
        ("dashboard: overview", "/v1/overview".into()),
    ];
    if let Some(c) = &deep {
        plan.push(("list, page 101", format!("/v1/sagas?limit=50&cursor={c}")));
    }
    let mut hists: Vec<Histogram<u64>> = plan.iter().map(|_| histogram()).collect();
    let mut items = vec![0usize; plan.len()];
    let bar = indicatif::ProgressBar::new((args.queries * plan.len()) as u64);
    for round in 0..args.queries {
        for (i, (_, path)) in plan.iter().enumerate() {
            let started = Instant::now();
            let body = get(path.clone()).await?;
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = hists[i].record(us.max(1));
            if round == 0 {
                items[i] = body["items"].as_array().map_or(0, Vec::len);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    shutdown.cancel();
    app.close().await;
    Ok(ReadsReport {
        backend,
        sagas: total,
        by_status: counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.as_str().to_owned(), *n))
            .collect(),
        filled,
        fill_seconds,
        queries_each: args.queries,
        reads: plan
            .iter()
            .zip(hists.iter())
            .zip(items)
            .map(|(((name, path), h), items)| ReadFigures {
                name: (*name).to_owned(),
                path: path.clone(),
                latency_ms: Percentiles::of(h),
                items,
            })
            .collect(),
        database_mib: std::fs::metadata(&database)
            .ok()
            .map(|m| m.len() as f64 / (1024.0 * 1024.0)),
    })
}

pub fn print(r: &ReadsReport) {
    println!(
        "{} sagas on the {} backend ({}){}; each read {} times over HTTP:",
        r.sagas,
        r.backend,
        r.by_status
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.database_mib
            .map(|m| format!(", file {m:.0} MiB"))
            .unwrap_or_default(),
        r.queries_each
    );
    if r.filled > 0 {
        println!("  (wrote {} of them in {:.0} s)", r.filled, r.fill_seconds);
    }
    for x in &r.reads {
        let p = &x.latency_ms;
        println!(
            "  {:<28} p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2}  max {:>7.2} ms  ({} items)  {}",
            x.name, p.p50, p.p95, p.p99, p.max, x.items, x.path
        );
    }
}
