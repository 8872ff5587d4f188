//! `como-saga orchestrator`: the orchestrator as its own process. Several may run against one
//! store; the store's conditional writes keep each saga serial.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Required, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: OrchestratorArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load_for_role(
        "orchestrator",
        &args.common,
        &DownstreamArgs::default(),
        &[Required::Venues],
    )?;
    stack::runtime()?.block_on(async {
        let backend = stack::open_backend(&settings)?;
        println!("orchestrator: database {}", settings.database.display());
        let shutdown = CancellationToken::new();
        stack::cancel_on_signal(shutdown.clone());
        let orchestrator = stack::orchestrator(&settings, &backend.ports);
        let stats = orchestrator.stats();
        orchestrator.run(shutdown).await;
        backend.close().await;
        println!(
            "orchestrator: stopped {}",
            serde_json::to_string(&stats.snapshot())?
        );
        Ok(ExitCode::SUCCESS)
    })
}
