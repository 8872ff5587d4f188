//! `como-saga up`: the whole system in one process (on the embedded backend unless `--backend`
//! says otherwise): both simulators,
//! the orchestrator and both workers; with `--demo N` it submits N sample bookings and prints
//! progress; with `--exit-when-done` it waits until every one of them is finished or needs an
//! operator, checks the money invariant against the simulators' ledgers, and prints a summary.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use como_api::auth::Role;
use como_app::{App, Observers, Roles};
use como_engine::StatusKind;
use como_schemas::SagaId;
use como_simulators::{SimConfig, Simulators};
use tokio_util::sync::CancellationToken;

use crate::demo;
use crate::report::{self, Summary};
use crate::settings::{BackendKind, CommonArgs, DownstreamArgs, Settings};
use crate::stack;
use como_app::tokens::TokenCheck;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Submit this many sample bookings (most succeed, some must compensate).
    #[arg(long, value_name = "N")]
    pub demo: Option<usize>,
    /// Exit when every sample booking is finished or needs an operator, printing a summary.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Print the summary as one JSON object (progress goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// With --exit-when-done: exit 0 even if some sagas stopped for an operator (they are
    /// still listed with their reasons). Without it such a run exits 1.
    #[arg(long)]
    pub allow_needs_operator: bool,
    /// Seed of the sample bookings and of the simulators' faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the simulators without injected faults.
    #[arg(long, conflicts_with = "faults")]
    pub no_faults: bool,
    /// The simulators' faults from this file instead of the demo's (see simulators/README.md).
    #[arg(long, value_name = "FILE.json")]
    pub faults: Option<std::path::PathBuf>,
    /// The address the API serves on (port 0: any free port; the address is printed).
    #[arg(long, env = "COMO_SAGA_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    stack::runtime()?.block_on(up(args, settings))
}

async fn up(args: UpArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Before the simulators start and the database is claimed: what is wrong with the backend
    // is then the one line said.
    crate::aws_credentials::preflight(&settings).await?;
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let sim = Simulators::start(SimConfig {
        seed: args.seed,
        faults: match (&args.faults, args.no_faults) {
            (Some(path), _) => crate::cmd::simulators::read_faults(path)?,
            (None, true) => Default::default(),
            (None, false) => demo::faults(),
        },
        ..SimConfig::default()
    })
    .await
    .context("cannot start the simulators")?;
    settings.memberson.base_url = Some(sim.memberson_url().to_owned());
    settings.sevenrooms.base_url = Some(sim.sevenrooms_url().to_owned());
    // One `up` per database: a second one would run its own simulators against the first one's
    // sagas, and report their ledgers as broken. Held until this process ends.
    let _lock = claim_database(&settings)?;
    let app = App::build(settings)?.with_local_data_keys().await?;
    let settings = app.settings().clone();
    let ports = app.ports().clone();
    if settings.backend == BackendKind::Aws {
        // The CRM worker reads its Memberson token from the secret, never mints one: fill the
        // secret first when it holds no token these (new) simulators accept.
        let check = como_app::tokens::ensure_token(&settings, ports.secrets.as_ref())
            .await
            .context("cannot put a Memberson token in the secret store")?;
        let secret = como_backend_aws::names::MEMBERSON_TOKEN_SECRET;
        say(match check {
            TokenCheck::Current => format!("the {secret} secret holds a token Memberson accepts"),
            TokenCheck::RotatedNone { version_id } => format!(
                "the {secret} secret had no token yet: rotated it once (version {version_id} is current)"
            ),
            TokenCheck::RotatedRefused { version_id } => format!(
                "Memberson refused the token in the {secret} secret: rotated it once (version {version_id} is current)"
            ),
        });
    }

    let shutdown = CancellationToken::new();
    stack::cancel_on_signal(shutdown.clone());
    let running = app.spawn(&Roles::all(), &shutdown, Observers::default())?;
    let stats = running
        .orchestrator
        .clone()
        .context("the orchestrator did not start")?;
    let workers = running.workers.clone();

    say(format!(
        "como-saga is up on the {} backend ({})",
        format!("{:?}", settings.backend).to_lowercase(),
        settings.store_location()
    ));
    say(format!(
        "  Memberson simulator:  {}  (ledger: {0}/_sim/ledger)",
        sim.memberson_url()
    ));
    say(format!(
        "  SevenRooms simulator: {}  (ledger: {0}/_sim/ledger)",
        sim.sevenrooms_url()
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot serve the API on {}: choose another address with --listen ADDR (port 0 for any free one)",
                args.listen
            )
        })?;
    let address = listener.local_addr()?;
    let key = app.local_key()?;
    let api = app.serve_api(
        listener,
        &key.auth_config(),
        Some(running.metrics()),
        &shutdown,
    )?;
    say(format!(
        "  API:                  http://{address}  (OpenAPI: http://{address}/openapi.json)"
    ));
    say(format!(
        "  Dashboard:            http://{address}/dashboard/  (sign in with a token below)"
    ));
    match settings.rotate_tokens_every {
        Some(every) => {
            app.schedule_token_rotation(every, &shutdown);
            say(format!(
                "  Token rotation:       every {} (COMO_SAGA_ROTATE_TOKENS_EVERY; `off` for never)",
                como_schemas::time::format_duration(every)
            ));
        }
        None => say("  Token rotation:       off (COMO_SAGA_ROTATE_TOKENS_EVERY)".to_owned()),
    }
    say(format!(
        "  API tokens (12 h; more with `como-saga token --role R --database {}`):",
        settings.database.display()
    ));
    for role in Role::ALL {
        let token = key
            .mint(
                "local-operator",
                &[role],
                std::time::Duration::from_secs(12 * 3600),
            )
            .map_err(anyhow::Error::msg)?;
        say(format!("    {:<9} {token}", role.as_str()));
    }

    let baseline = finished(&ports).await?;
    let mut submitted: Vec<SagaId> = Vec::new();
    if let Some(n) = args.demo {
        let today = chrono::Utc::now().date_naive();
        let run_id = format!("{:x}", chrono::Utc::now().timestamp_millis());
        for request in demo::bookings(n, today, &settings.venues, args.seed, &run_id) {
            submitted.push(como_orchestrator::submit(&ports, &request).await?);
        }
        say(format!("submitted {n} sample bookings"));
    }
    if !args.exit_when_done {
        say("press Ctrl-C to stop".into());
    }

    let mut ticker = tokio::time::interval(demo::PROGRESS_EVERY);
    ticker.tick().await;
    let mut done = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let counts = counts(&ports).await?;
        let now_finished = finished_of(&counts);
        let rejected = stats.snapshot().rejected;
        let progress = now_finished.saturating_sub(baseline) + rejected;
        say(format!(
            "[{:>6.1}s] {}  rejected {rejected}{}",
            started.elapsed().as_secs_f64(),
            counts
                .iter()
                .map(|(k, n)| format!("{} {n}", k.as_str()))
                .collect::<Vec<_>>()
                .join("  "),
            workers
                .iter()
                .filter_map(|(w, r)| crate::cmd::worker::outage_note(*w, &r.snapshot()))
                .map(|note| format!("  | {note}"))
                .collect::<String>()
        ));
        if args.exit_when_done && progress >= submitted.len() as u64 {
            done = true;
            break;
        }
    }
    shutdown.cancel();
    if let Err(e) = running.stopped(stack::SHUTDOWN_GRACE).await {
        tracing::warn!("{e:#}");
    }

    let mut code = ExitCode::SUCCESS;
    if done || !submitted.is_empty() {
        let mut summary: Summary = report::summarise(&ports, &submitted, &sim.ledger()).await?;
        summary.rejected = stats.snapshot().rejected;
        summary.elapsed_ms = started.elapsed().as_millis();
        summary.sagas_per_second =
            submitted.len() as f64 / started.elapsed().as_secs_f64().max(0.001);
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!(
                "summary: {} submitted, {} confirmed, {} compensated, {} cancelled, {} need an operator, {} in flight, {} rejected at the edge; {:.1} s",
                summary.submitted,
                summary.confirmed,
                summary.compensated,
                summary.cancelled,
                summary.needs_operator,
                summary.in_flight,
                summary.rejected,
                summary.elapsed_ms as f64 / 1000.0
            );
            for n in &summary.needs_operator_sagas {
                println!("needs an operator: saga {}: {}", n.saga_id, n.reason);
            }
            if summary.live_holds.live > 0 {
                println!(
                    "live holds: {} (their answers were lost; the last expires at {})",
                    summary.live_holds.live,
                    summary
                        .live_holds
                        .latest_expiry
                        .map_or("-".to_owned(), |t| t.to_rfc3339())
                );
            }
            if summary.money_invariant_violations.is_empty() {
                println!(
                    "money invariant: holds for every saga (checked against the simulators' ledgers)"
                );
            } else {
                for v in &summary.money_invariant_violations {
                    println!("money invariant VIOLATED: saga {}: {}", v.saga_id, v.rule);
                }
            }
        }
        if !summary.money_invariant_violations.is_empty()
            || (args.exit_when_done
                && !args.allow_needs_operator
                && !summary.needs_operator_sagas.is_empty())
        {
            code = ExitCode::from(1);
        }
    }
    let _ = api.await;
    app.close().await;
    let _ = sim.shutdown().await;
    Ok(code)
}

async fn counts(ports: &como_ports::Backend) -> anyhow::Result<Vec<(StatusKind, u64)>> {
    Ok(ports.store.counts().await?)
}

fn finished_of(counts: &[(StatusKind, u64)]) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| k.is_terminal() || *k == StatusKind::NeedsOperator)
        .map(|(_, n)| n)
        .sum()
}

async fn finished(ports: &como_ports::Backend) -> anyhow::Result<u64> {
    Ok(finished_of(&counts(ports).await?))
}

/// The lock that makes `up` the only one on its database: `<database>.up.lock`, holding the
/// process id of its holder. Released when the process ends, however it ends.
fn claim_database(settings: &Settings) -> anyhow::Result<Option<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if settings.backend != BackendKind::Embedded {
        return Ok(None);
    }
    let mut path = settings.database.as_os_str().to_owned();
    path.push(".up.lock");
    let path = std::path::PathBuf::from(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The owner's alone whatever the umask, like the database beside it: another account that
    // could open it could hold the lock and keep `up` from starting.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another `como-saga up` (process {}) is running on {}: stop it, or give this one its own file with --database PATH",
                holder.trim(),
                settings.database.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
