//! `como-saga schemas`: the message contracts as files, and a check of one message against
//! them, so that a producer can test what it will send before it sends it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use como_schemas::export::{SCHEMA_FILES, checked_in_dir, export_all};
use como_schemas::{InvalidInput, WorkerCommand, WorkerReply};

#[derive(Debug, clap::Subcommand)]
pub enum SchemasCommand {
    /// Write the JSON Schema files of every message (default: the repository's `schemas/json`).
    Export {
        /// Directory to write into.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Parse one message the way como-saga does at its edge; print what is wrong, if anything.
    Check {
        /// What the message is.
        #[arg(long = "type", value_enum)]
        message: MessageType,
        /// The file holding the JSON message; `-` reads standard input.
        file: PathBuf,
    },
    /// List the message types and their schema files.
    List,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MessageType {
    BookingRequested,
    WorkerCommand,
    WorkerReply,
}

pub fn run(cmd: SchemasCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemasCommand::Export { dir } => {
            let dir = dir.unwrap_or_else(|| checked_in_dir().to_path_buf());
            let changed = export_all(&dir)
                .with_context(|| format!("writing schema files to {}", dir.display()))?;
            if changed.is_empty() {
                println!(
                    "{} schema files in {} are up to date",
                    SCHEMA_FILES.len(),
                    dir.display()
                );
            } else {
                for name in changed {
                    println!("wrote {}", dir.join(name).display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::List => {
            for file in SCHEMA_FILES {
                println!("{}", file.file_name);
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Check { message, file } => {
            let bytes = read_input(&file)?;
            let today = chrono::Utc::now().date_naive();
            let result = match message {
                MessageType::BookingRequested => como_schemas::parse_booking_request(&bytes, today)
                    .map(|r| {
                        format!(
                            "valid booking request {} (saga {})",
                            r.request_id,
                            r.saga_id()
                        )
                    }),
                MessageType::WorkerCommand => InvalidInput::parse_json::<WorkerCommand>(&bytes)
                    .map(|c| format!("valid command {}", c.command_id)),
                MessageType::WorkerReply => InvalidInput::parse_json::<WorkerReply>(&bytes)
                    .map(|r| format!("valid reply to {}", r.command_id)),
            };
            match result {
                Ok(line) => {
                    println!("{line}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("{err}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn read_input(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    }
}
