//! `como-saga rotate-tokens`: rotate the Memberson service token kept in the secret store
//! (see `como_app::tokens` for the four steps and how the workers read it).

use std::process::ExitCode;

use como_app::tokens::rotate_once;
use como_backend_aws::names;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The member whose summary the new token reads as its test.
    #[arg(long, value_name = "MEMBER_NO", default_value = como_simulators::seed::MEMBER_RICH)]
    pub test_member: String,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub downstreams: DownstreamArgs,
}

pub fn run(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.common, &args.downstreams)?;
    stack::runtime()?.block_on(rotate(args, settings))
}

async fn rotate(args: RotateArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    crate::aws_credentials::check(&settings).await?;
    let backend = stack::open_backend(&settings)?;
    let rotated = rotate_once(&settings, backend.ports.secrets.as_ref(), &args.test_member).await;
    backend.close().await;
    let version = rotated?;
    let name = names::MEMBERSON_TOKEN_SECRET;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"secret": name, "version_id": version, "promoted": true})
        );
    } else {
        println!("rotated {name}: version {version} is current");
    }
    Ok(ExitCode::SUCCESS)
}
