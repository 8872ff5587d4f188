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

/// Where a role's heartbeat metric goes: `COMO_SAGA_EMF_NAMESPACE` (none: no heartbeat) and the
/// service it counts for, `COMO_SAGA_EMF_SERVICE` (default: the role's name).
pub const EMF_NAMESPACE_ENV: &str = "COMO_SAGA_EMF_NAMESPACE";
pub const EMF_SERVICE_ENV: &str = "COMO_SAGA_EMF_SERVICE";

/// How often a task beats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// One heartbeat in CloudWatch's embedded metric format: a log line that CloudWatch Logs turns
/// into one sample of `RunningTaskBeats` (1) for `service`.
pub fn heartbeat_line(namespace: &str, service: &str, at_ms: i64) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Service"]],
                "Metrics": [{"Name": "RunningTaskBeats", "Unit": "Count"}],
            }],
        },
        "Service": service,
        "RunningTaskBeats": 1,
    })
    .to_string()
}

/// While `shutdown` is not cancelled, prints a heartbeat on standard output every
/// [`HEARTBEAT_EVERY`] when `COMO_SAGA_EMF_NAMESPACE` is set: on ECS the log driver sends it to
/// CloudWatch Logs, which counts each task's beats, so that a service's running tasks are its
/// beats a minute divided by six without Container Insights (what the autoscaling's backlog per
/// task divides by; see infra/modules/compute/autoscaling.tf).
pub fn heartbeat(role: &str, shutdown: &CancellationToken) {
    let Some(namespace) = std::env::var(EMF_NAMESPACE_ENV)
        .ok()
        .filter(|n| !n.trim().is_empty())
    else {
        return;
    };
    let service = std::env::var(EMF_SERVICE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| role.to_owned());
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            println!(
                "{}",
                heartbeat_line(&namespace, &service, chrono::Utc::now().timestamp_millis())
            );
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_heartbeat_is_one_embedded_metric_sample_of_its_service() {
        let line: serde_json::Value = serde_json::from_str(&super::heartbeat_line(
            "como-saga",
            "worker-crm",
            1_700_000_000_000,
        ))
        .unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        assert_eq!(directive["Namespace"], "como-saga");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Service"]]));
        let name = directive["Metrics"][0]["Name"].as_str().unwrap();
        assert_eq!(line[name], 1);
        assert_eq!(line["Service"], "worker-crm");
    }
}
