//! `como-saga members forget M`: a data-protection request, through the API (operator role):
//! the member's personal data (the guest's name, phone and e-mail on each booking) is erased
//! from every saga of theirs; finished sagas at once, running ones when they finish. The
//! money facts and the history stay; the audit list records who asked and why.

use std::process::ExitCode;

use serde_json::json;

use super::operate::{ApiClientArgs, Client};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    pub command: MembersCommand,
    #[command(flatten)]
    pub client: ApiClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum MembersCommand {
    /// Erase a member's personal data from every saga of theirs (idempotent: repeating it
    /// erases what is left and reports the rest as done).
    Forget {
        /// The Memberson member number.
        member_no: String,
        /// Why: the data-protection request it answers (kept in the audit list).
        #[arg(long)]
        reason: String,
    },
}

pub fn run(args: MembersArgs) -> anyhow::Result<ExitCode> {
    let client = Client::for_role(&args.client, "operator")?;
    let json = args.client.json;
    stack::runtime()?.block_on(async move {
        match args.command {
            MembersCommand::Forget { member_no, reason } => {
                let done = client
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/members/{member_no}/forget"),
                        Some(json!({ "reason": reason })),
                    )
                    .await?;
                if json {
                    println!("{done}");
                } else {
                    println!(
                        "member {member_no}: {} sagas erased now, {} when they finish, {} had nothing left to erase{}",
                        done["erased"],
                        done["when_done"],
                        done["already"],
                        if done["compacted"] == json!(false) {
                            " (older copies in the database's log go at its next checkpoint)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
