//! `como-saga schemas`: the message contracts as files, and a check of one message against
//! them, so that a producer can test what it will send before it sends it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use como_schemas::export::{SCHEMA_FILES, checked_in_dir, export_all};
use como_schemas::{InvalidInput, WorkerCommand, WorkerReply};

#[derive(Debug, clap::Subcommand)]
pub enum SchemasCommand {
    /// Write the JSON Schema files of every message (default: the repository's `schemas/json`).
    Export {
        /// Directory to write into.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object on stdout: `{"dir", "written"}` (the files that changed).
        #[arg(long)]
        json: bool,
    },
    /// Parse one message the way como-saga does at its edge; print what is wrong, if anything.
    Check {
        /// What the message is.
        #[arg(long = "type", value_enum)]
        message: MessageType,
        /// The file holding the JSON message; `-` reads standard input.
        file: PathBuf,
        /// Print one JSON object on stdout: `{"valid": true, ...}` with the message's ids, or
        /// `{"valid": false, "field", "reason"}` (the exit code is 1 all the same).
        #[arg(long)]
        json: bool,
    },
    /// List the message types and their schema files.
    List {
        /// Print the file names as one JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MessageType {
    BookingRequested,
    WorkerCommand,
    WorkerReply,
}

pub fn run(cmd: SchemasCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemasCommand::Export { dir, json } => {
            let dir = dir.unwrap_or_else(|| checked_in_dir().to_path_buf());
            let changed = export_all(&dir)
                .with_context(|| format!("writing schema files to {}", dir.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "dir": dir.display().to_string(),
                        "written": changed.iter().map(|n| dir.join(n).display().to_string()).collect::<Vec<_>>(),
                    })
                );
            } else if changed.is_empty() {
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
        SchemasCommand::List { json } => {
            if json {
                let names: Vec<_> = SCHEMA_FILES.iter().map(|f| f.file_name).collect();
                println!("{}", serde_json::to_string(&names)?);
            } else {
                for file in SCHEMA_FILES {
                    println!("{}", file.file_name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Check {
            message,
            file,
            json,
        } => {
            let bytes = read_input(&file)?;
            let today = chrono::Utc::now().date_naive();
            // What a valid message is, as a line and as JSON.
            let result = match message {
                MessageType::BookingRequested => como_schemas::parse_booking_request(&bytes, today)
                    .map(|r| {
                        (
                            format!(
                                "valid booking request {} (saga {})",
                                r.request_id,
                                r.saga_id()
                            ),
                            serde_json::json!({"request_id": r.request_id, "saga_id": r.saga_id()}),
                        )
                    }),
                MessageType::WorkerCommand => InvalidInput::parse_json::<WorkerCommand>(&bytes)
                    .map(|c| {
                        (
                            format!("valid command {}", c.command_id),
                            serde_json::json!({"command_id": c.command_id}),
                        )
                    }),
                MessageType::WorkerReply => {
                    InvalidInput::parse_json::<WorkerReply>(&bytes).map(|r| {
                        (
                            format!("valid reply to {}", r.command_id),
                            serde_json::json!({"command_id": r.command_id}),
                        )
                    })
                }
            };
            let kind = message
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            match result {
                Ok((line, mut ids)) => {
                    if json {
                        ids["valid"] = true.into();
                        ids["type"] = kind.into();
                        println!("{ids}");
                    } else {
                        println!("{line}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "valid": false,
                                "type": kind,
                                "field": err.field,
                                "reason": err.reason,
                            })
                        );
                    } else {
                        eprintln!("{err}");
                    }
                    Ok(crate::exit::code(crate::exit::FAILED))
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
