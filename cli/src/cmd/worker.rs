//! `como-saga worker crm|sevenrooms`: one kind of worker as its own process.

use std::process::ExitCode;

use como_app::{Observers, Roles};
use como_schemas::Worker;
use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Required, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Which worker: `crm` (Memberson) or `sevenrooms`.
    #[arg(value_enum)]
    pub kind: WorkerKind,
    /// Serve GET /healthz here (200 while the worker's loops run), for a container's health
    /// check (`como-saga healthcheck http://ADDR/healthz`).
    #[arg(long, env = "COMO_SAGA_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub downstreams: DownstreamArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WorkerKind {
    Crm,
    Sevenrooms,
}

impl From<WorkerKind> for Worker {
    fn from(k: WorkerKind) -> Worker {
        match k {
            WorkerKind::Crm => Worker::Crm,
            WorkerKind::Sevenrooms => Worker::Sevenrooms,
        }
    }
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let worker = Worker::from(args.kind);
    let required = match args.kind {
        WorkerKind::Crm => Required::MembersonCredentials,
        WorkerKind::Sevenrooms => Required::SevenRoomsCredentials,
    };
    let settings = Settings::load_for_role(
        &format!("worker {worker}"),
        &args.common,
        &args.downstreams,
        &[required],
    )?;
    stack::runtime()?.block_on(async {
        let mut app = crate::aws_credentials::open_app(settings).await?;
        // Only the SevenRooms worker opens the guest's contact (to book); the CRM worker
        // never holds the data keys.
        if worker == Worker::Sevenrooms {
            app = app.with_data_keys().await?;
        }
        println!(
            "worker {worker}: {}, calling {}",
            app.settings().store_location(),
            worker.downstream()
        );
        let shutdown = CancellationToken::new();
        stack::cancel_on_signal(shutdown.clone());
        let running = app.spawn(&Roles::worker(worker), &shutdown, Observers::default())?;
        let runtime = running.workers[0].1.clone();
        if let Some(addr) = args.health_listen {
            super::health::serve(addr, running.liveness(), shutdown.clone()).await?;
        }
        super::health::heartbeat(&format!("worker-{worker}"), &shutdown);
        // While its downstream is down, say so every few seconds: how many commands wait, and
        // since when; then once more when it is back.
        let watch = runtime.clone();
        let stop_watch = shutdown.clone();
        tokio::spawn(async move {
            let mut was_down = false;
            loop {
                tokio::select! {
                    _ = stop_watch.cancelled() => return,
                    _ = tokio::time::sleep(OUTAGE_REPORT_EVERY) => {}
                }
                let snap = watch.snapshot();
                match outage_note(worker, &snap) {
                    Some(note) => {
                        was_down = true;
                        println!("worker {worker}: {note}");
                    }
                    None if was_down => {
                        was_down = false;
                        println!(
                            "worker {worker}: {} is back; {} commands still waiting",
                            worker.downstream(),
                            snap.waiting
                        );
                    }
                    None => {}
                }
            }
        });
        shutdown.cancelled().await;
        if let Err(e) = running.stopped(stack::SHUTDOWN_GRACE).await {
            tracing::warn!("{e:#}");
        }
        app.close().await;
        println!(
            "worker {worker}: stopped {}",
            serde_json::to_string(&runtime.snapshot())?
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// How often a worker whose downstream is down says so.
const OUTAGE_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// "SevenRooms circuit open for 12 s, 340 commands waiting (oldest 40 s)", or nothing while
/// the circuit is closed and nothing waits.
pub fn outage_note(
    worker: Worker,
    snap: &como_workers::runtime::WorkerStatsSnapshot,
) -> Option<String> {
    let breaker = snap.breaker.as_ref()?;
    let open = breaker.state != como_workers::breaker::BreakerState::Closed;
    if !open && snap.waiting == 0 {
        return None;
    }
    let circuit = if open {
        format!("circuit open for {} s", breaker.in_state_ms / 1_000)
    } else {
        "circuit closed".to_owned()
    };
    Some(format!(
        "{} {circuit}, {} commands waiting (oldest {} s)",
        worker.downstream(),
        snap.waiting,
        snap.oldest_waiting_ms / 1_000
    ))
}
