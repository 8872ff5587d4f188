//! `como-saga`: every role of the system in one binary.
//!
//! Layout: one file per subcommand under `cmd/`; `main` only parses arguments and dispatches.

mod cmd;

use clap::{Parser, Subcommand};

/// Saga orchestrator for "pay with Como Credits, then book the experience".
#[derive(Debug, Parser)]
#[command(name = "como-saga", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Message contracts: export the JSON Schema files, validate a message against them.
    #[command(subcommand)]
    Schemas(cmd::schemas::SchemasCommand),
    /// Run the Memberson and SevenRooms simulators.
    Simulators(cmd::simulators::SimulatorsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schemas(c) => cmd::schemas::run(c),
        Command::Simulators(a) => cmd::simulators::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
