//! `como-saga token --role R`: mint a bearer token for the API with the local signing key next
//! to the database (the one `up` and a local `api` check tokens with). Local use only: a
//! deployment's tokens come from its identity provider (Cognito).

use std::process::ExitCode;
use std::time::Duration;

use como_api::auth::Role;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The role: `viewer` (reads), `operator` (reads and acts), `submitter` (submits bookings).
    #[arg(long, value_parser = ["viewer", "operator", "submitter"])]
    pub role: Vec<String>,
    /// Who the token names (recorded with every action taken with it).
    #[arg(long, default_value = "local-operator")]
    pub user: String,
    /// How long the token is valid (`30m`, `12h`).
    #[arg(long, default_value = "12h", value_parser = crate::settings::parse_duration)]
    pub ttl: Duration,
    /// Print one JSON object on stdout: `{"token", "user", "roles", "expires_in_seconds"}`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    if args.role.is_empty() {
        anyhow::bail!("say which role the token carries: --role viewer|operator|submitter");
    }
    let settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    let key = como_app::local_key(&settings)?;
    let roles: Vec<Role> = args.role.iter().filter_map(|r| Role::parse(r)).collect();
    let token = key
        .mint(&args.user, &roles, args.ttl)
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "token": token,
                "user": args.user,
                "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "expires_in_seconds": args.ttl.as_secs(),
            })
        );
    } else {
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}
