//! `como-saga worker crm|sevenrooms`: one kind of worker as its own process.

use std::process::ExitCode;

use como_schemas::Worker;
use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Which worker: `crm` (Memberson) or `sevenrooms`.
    #[arg(value_enum)]
    pub kind: WorkerKind,
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
    let settings = Settings::load(&args.common, &args.downstreams)?;
    let worker = Worker::from(args.kind);
    stack::runtime()?.block_on(async {
        let backend = stack::open_backend(&settings)?;
        let handler = stack::handler(&settings, worker, &backend.ports)?;
        println!(
            "worker {worker}: database {}, calling {}",
            settings.database.display(),
            worker.downstream()
        );
        let shutdown = CancellationToken::new();
        stack::cancel_on_signal(shutdown.clone());
        let runtime = stack::worker(&backend.ports, handler);
        let stats = runtime.stats();
        runtime.run(shutdown).await;
        backend.close().await;
        println!(
            "worker {worker}: stopped {}",
            serde_json::to_string(&stats.snapshot())?
        );
        Ok(ExitCode::SUCCESS)
    })
}
