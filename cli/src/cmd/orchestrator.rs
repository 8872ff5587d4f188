//! `como-saga orchestrator`: the orchestrator as its own process. Several may run against one
//! store; the store's conditional writes keep each saga serial.

use std::process::ExitCode;

use como_app::{Observers, Roles};
use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Required, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct OrchestratorArgs {
    /// Serve GET /healthz here (200 while the orchestrator's loops run), for a container's
    /// health check (`como-saga healthcheck http://ADDR/healthz`).
    #[arg(long, env = "COMO_SAGA_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,
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
        let app = crate::aws_credentials::open_app(settings)
            .await?
            .with_data_keys()
            .await?;
        println!("orchestrator: {}", app.settings().store_location());
        let shutdown = CancellationToken::new();
        stack::cancel_on_signal(shutdown.clone());
        let running = app.spawn(&Roles::orchestrator(), &shutdown, Observers::default())?;
        let stats = running.orchestrator.clone();
        if let Some(addr) = args.health_listen {
            super::health::serve(addr, running.liveness(), shutdown.clone()).await?;
        }
        super::health::heartbeat("orchestrator", &shutdown);
        shutdown.cancelled().await;
        if let Err(e) = running.stopped(stack::SHUTDOWN_GRACE).await {
            tracing::warn!("{e:#}");
        }
        app.close().await;
        if let Some(stats) = stats {
            println!(
                "orchestrator: stopped {}",
                serde_json::to_string(&stats.snapshot())?
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
