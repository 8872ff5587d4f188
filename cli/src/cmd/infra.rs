//! `como-saga infra bootstrap`: create the resources of a deployment through the SDK,
//! idempotently (queues with their dead-letter queues, the table with its indexes and TTL, the
//! bus with the booking rule, the secrets), for a local AWS-compatible server or a quick
//! account; a production deployment uses the Terraform under `infra/` (modules, `envs/prod`), which follows
//! the same names. The service credentials from the settings seed the credential secrets
//! that have no value yet.

use std::process::ExitCode;

use anyhow::Context;

use como_backend_aws::{bootstrap, names};
use como_workers::clients::memberson::ExposeSecret;

use crate::settings::{BackendKind, CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Subcommand)]
pub enum InfraCommand {
    /// Create every resource the backend needs (safe to run again).
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Print what was created and found as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(command: InfraCommand) -> anyhow::Result<ExitCode> {
    let InfraCommand::Bootstrap(args) = command;
    let settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    if settings.backend == BackendKind::Embedded {
        // Its file is its infrastructure, made on first use.
        stack::runtime()?.block_on(async {
            let existed = settings.database.exists();
            let backend = stack::open_backend(&settings)?;
            backend.close().await;
            if args.json {
                // The AWS report's shape: what was created, what was found.
                let file = format!("SQLite file {}", settings.database.display());
                let mut report = bootstrap::BootstrapReport::default();
                if existed {
                    report.found.push(file);
                } else {
                    report.created.push(file);
                }
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "the embedded backend's file {} is ready",
                    settings.database.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        })
    } else {
        stack::runtime()?.block_on(bootstrap_aws(&settings, args.json))
    }
}

async fn bootstrap_aws(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    crate::aws_credentials::check(settings).await?;
    let config = stack::aws_config(settings);
    let sdk = config.sdk_config().await;
    let m = &settings.memberson.credentials;
    let s = &settings.sevenrooms.credentials;
    let seed = [
        (
            names::MEMBERSON_CREDENTIALS_SECRET,
            serde_json::json!({
                "svc_auth": m.svc_auth.expose_secret(),
                "username": m.username,
                "password": m.password.expose_secret(),
            })
            .to_string(),
        ),
        (
            names::SEVENROOMS_CREDENTIALS_SECRET,
            serde_json::json!({
                "client_id": s.client_id,
                "client_secret": s.client_secret.expose_secret(),
            })
            .to_string(),
        ),
    ];
    let mut report = bootstrap::bootstrap(&sdk, &config, &seed).await?;
    // The data keys that seal the guests' contact details (what `keys init` does): made once,
    // kept by every later bootstrap.
    let backend = stack::open_backend(settings)?;
    let source = stack::key_source(settings, backend.ports.secrets.clone());
    let described = source.describe();
    let existed = source
        .read()
        .await
        .with_context(|| format!("cannot read the data keys ({described})"))?
        .is_some();
    if !existed {
        stack::refuse_new_keys_over_sealed_guests(&backend.ports, &source).await?;
    }
    como_privacy::Keys::load(source, true)
        .await
        .with_context(|| format!("cannot make the data keys ({described})"))?;
    if existed {
        report.found.push(format!("{described} (data keys)"));
    } else {
        report.created.push(format!("{described} (data keys)"));
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("infra bootstrap (prefix {}):", config.prefix);
        for line in &report.created {
            println!("  created  {line}");
        }
        for line in &report.found {
            println!("  found    {line}");
        }
        for line in &report.skipped {
            println!("  skipped  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
