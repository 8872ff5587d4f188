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
                if done["done"] == json!(false) {
                    // Still erasing (a large store): its audit entry says when it has ended.
                    let ended = wait_for(&client, &done["action_id"], json).await?;
                    if json {
                        println!("{ended}");
                    } else {
                        println!(
                            "member {member_no}: {} ({})",
                            ended["detail"].as_str().unwrap_or_default(),
                            ended["outcome"].as_str().unwrap_or_default()
                        );
                    }
                    return Ok(if ended["outcome"] == json!("applied") {
                        ExitCode::SUCCESS
                    } else {
                        crate::exit::code(crate::exit::FAILED)
                    });
                }
                if json {
                    println!("{done}");
                } else {
                    println!(
                        "member {member_no}: {} sagas erased now, {} when they finish, {} had nothing left to erase; {} dead letters erased{}",
                        done["erased"],
                        done["when_done"],
                        done["already"],
                        done["dead_letters"],
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

/// The audit entry of the erasure `action_id` once it has ended, saying every 10 s that it
/// goes on.
async fn wait_for(
    client: &Client,
    action_id: &serde_json::Value,
    quiet: bool,
) -> anyhow::Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let mut said = std::time::Instant::now();
    loop {
        let page = client
            .call(
                reqwest::Method::GET,
                "/v1/audit?action=forget_member&limit=100",
                None,
            )
            .await?;
        let entry = page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|e| &e["action_id"] == action_id))
            .cloned();
        if let Some(e) = entry.filter(|e| e["outcome"] != json!("pending")) {
            return Ok(e);
        }
        if !quiet && said.elapsed() >= std::time::Duration::from_secs(10) {
            said = std::time::Instant::now();
            eprintln!(
                "still erasing ({} s); the audit list's entry {action_id} will say how it ended",
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}
