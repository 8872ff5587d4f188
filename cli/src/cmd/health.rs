//! Health of a process that serves no API (the orchestrator, a worker): `--health-listen ADDR`
//! serves `GET /healthz` (200 while every role's loop runs, 503 once one has ended), and
//! `como-saga healthcheck URL` asks it, exiting 0 only on a 2xx within 2 s: a container's
//! health check needs no curl in the image.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Serves `/healthz` on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    alive: Arc<dyn Fn() -> bool + Send + Sync>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the health check on {addr}"))?;
    let app = Router::new().route(
        "/healthz",
        get(move || {
            let up = alive();
            async move {
                match up {
                    true => (StatusCode::OK, "up\n"),
                    false => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "a role's loop has stopped\n",
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the health check endpoint stopped");
        }
    });
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The health endpoint, e.g. http://127.0.0.1:9090/healthz (a role's --health-listen) or
    /// the API's http://127.0.0.1:8080/healthz.
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = como_schemas::time::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(args.timeout).build()?;
        match client.get(&args.url).send().await {
            Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
            Ok(r) => {
                eprintln!("healthcheck: {} answered {}", args.url, r.status());
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("healthcheck: {}: {e}", args.url);
                Ok(ExitCode::from(1))
            }
        }
    })
}
