//! `como-saga keys`: the data keys that seal the guests' contact details (see `como-privacy`).
//! They live beside the store, never in it: the embedded backend's key file (made on first
//! start, mode 0600; `COMO_SAGA_DATA_KEY_FILE`), or the AWS deployment's secret
//! `<prefix>/data-keys`; `COMO_SAGA_DATA_KEYS` holds a keyring's text in place of either.
//!
//! - `init`: make the keys if there are none (once per AWS deployment, before its services).
//! - `show`: which keys there are and which one seals (never the key material).
//! - `rotate`: a new key seals from now on; the old ones still open what they sealed. Every
//!   process learns the new key within ten minutes, and at once from a value sealed with it.
//! - `reencrypt`: seal every saga's guest again with the key that seals now, so that an old
//!   key holds nothing any more. Safe while sagas run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use como_privacy::Keys;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make the data keys if there are none; does nothing when they are there.
    Init(KeysArgs),
    /// The data keys: where they are kept, their ids and which one seals.
    Show(KeysArgs),
    /// A new data key seals from now on; the old ones still open what they sealed.
    Rotate(KeysArgs),
    /// Seal every saga's guest again with the key that seals now (after `rotate`).
    Reencrypt(KeysArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let args = match &command {
        KeysCommand::Init(a)
        | KeysCommand::Show(a)
        | KeysCommand::Rotate(a)
        | KeysCommand::Reencrypt(a) => a,
    };
    let json = args.json;
    let settings = Settings::load(&args.common, &DownstreamArgs::default())?;
    stack::runtime()?.block_on(async move {
        crate::aws_credentials::check(&settings).await?;
        let mut backend = stack::open_backend(&settings)?;
        let source = stack::key_source(&settings, backend.ports.secrets.clone());
        let where_ = source.describe();
        let keys = match &command {
            KeysCommand::Init(_) => {
                let existed = source.read().await?.is_some();
                if !existed {
                    stack::refuse_new_keys_over_sealed_guests(&backend.ports, &source).await?;
                }
                let keys = Keys::load(source, true).await?;
                say(json, &keys, if existed { "already there" } else { "made" });
                backend.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            _ => Keys::load(source, false).await?,
        };
        match command {
            KeysCommand::Init(_) => unreachable!("handled above"),
            KeysCommand::Show(_) => say(json, &keys, "kept"),
            KeysCommand::Rotate(_) => {
                let id = keys.rotate().await?;
                say(json, &keys, "rotated");
                if !json {
                    println!(
                        "key {id} seals from now on (every process learns it within ten minutes); \
                         then `como-saga keys reencrypt` seals the stored guests with it"
                    );
                }
            }
            KeysCommand::Reencrypt(_) => {
                backend.ports.vault = keys.clone();
                let started = Instant::now();
                let mut said = Instant::now();
                let done = como_orchestrator::privacy::reencrypt(&backend.ports, |p| {
                    if !json && said.elapsed() >= Duration::from_secs(2) {
                        said = Instant::now();
                        eprintln!(
                            "{} sagas looked at, {} sealed again with {}",
                            p.sagas,
                            p.resealed,
                            keys.primary()
                        );
                    }
                })
                .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"primary": keys.primary(), "source": where_, "done": done})
                    );
                } else {
                    println!(
                        "{} sagas: {} sealed again with {}, {} were already, {} do not open with these keys ({:.1} s)",
                        done.sagas,
                        done.resealed,
                        keys.primary(),
                        done.current,
                        done.unreadable,
                        started.elapsed().as_secs_f64()
                    );
                }
                backend.close().await;
                return Ok(if done.unreadable > 0 {
                    crate::exit::code(crate::exit::FAILED)
                } else {
                    ExitCode::SUCCESS
                });
            }
        }
        backend.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn say(json: bool, keys: &Keys, what: &str) {
    let source = keys.source().describe();
    if json {
        println!(
            "{}",
            serde_json::json!({"source": source, "primary": keys.primary(), "keys": keys.key_ids(), "outcome": what})
        );
    } else {
        println!(
            "data keys {what}: {source}: {} (seals with {})",
            keys.key_ids().join(", "),
            keys.primary()
        );
    }
}
