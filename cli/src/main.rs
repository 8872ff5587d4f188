//! `como-saga`: every role of the system in one binary.
//!
//! Layout: one file per subcommand under `cmd/`; the application crate (`como-app`) resolves
//! the settings and assembles the roles; `demo` and `report` serve `up`; `aws_credentials`
//! checks the AWS backend's credentials before a command opens it; `exit` holds the exit codes
//! and how an error is printed. `main` only parses arguments, sets up logging and dispatches.

mod aws_credentials;
mod cmd;
mod demo;
mod exit;
mod report;

use como_app::{settings, stack};

use clap::{Parser, Subcommand};
use como_app::telemetry::{self, LogFormat};

/// See the workspace manifest for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Saga orchestrator for "pay with Como Credits, then book the experience".
#[derive(Debug, Parser)]
#[command(name = "como-saga", version, after_help = exit::HELP)]
struct Cli {
    /// How log lines on standard error are written: `human` (the default), or `json`, one
    /// object per line with the saga id and trace id of the work it belongs to.
    #[arg(
        long,
        global = true,
        env = "COMO_SAGA_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process (embedded backend by default): simulators, orchestrator, workers.
    Up(cmd::up::UpArgs),
    /// The orchestrator, as its own process.
    Orchestrator(cmd::orchestrator::OrchestratorArgs),
    /// One worker (`crm` or `sevenrooms`), as its own process.
    Worker(cmd::worker::WorkerArgs),
    /// The operator and monitoring HTTP API, as its own process.
    Api(cmd::api::ApiArgs),
    /// Operators' tools through the API: list, show, retry, compensate, cancel, resolve.
    Sagas(cmd::operate::SagasArgs),
    /// Dead letters through the API: list, redrive.
    Dlq(cmd::operate::DlqArgs),
    /// Mint a bearer token for the API with the local signing key (local use only).
    Token(cmd::token::TokenArgs),
    /// Submit one booking request.
    Submit(cmd::submit::SubmitArgs),
    /// Load: N bookings against zero-latency simulators; throughput and latency.
    Bench(cmd::bench::BenchArgs),
    /// N bookings under seeded faults, kills and duplicates; then checks the money invariant.
    Chaos(cmd::chaos::ChaosArgs),
    /// Run the Memberson and SevenRooms simulators.
    Simulators(cmd::simulators::SimulatorsArgs),
    /// Infrastructure: `infra bootstrap` creates the AWS resources through the SDK.
    #[command(subcommand)]
    Infra(cmd::infra::InfraCommand),
    /// Rotate the Memberson service token in the secret store (the four rotation steps).
    RotateTokens(cmd::rotate_tokens::RotateArgs),
    /// What a member sees before paying, through the API: the experiences, or a venue's
    /// availability (--date, --party).
    Experiences(cmd::operate::ExperiencesArgs),
    /// Exit 0 if a health endpoint answers 2xx within 2 s (a container's health check).
    Healthcheck(cmd::health::HealthcheckArgs),
    /// The venues bookable with Como Credits: list, set (price, SevenRooms settings), remove.
    #[command(subcommand)]
    Venues(cmd::venues::VenuesCommand),
    /// The data keys that seal the guests' contact details: init, show, rotate, reencrypt.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Members' personal data through the API: `forget` erases it from every saga of theirs.
    Members(cmd::members::MembersArgs),
    /// Message contracts: export the JSON Schema files, validate a message against them.
    #[command(subcommand)]
    Schemas(cmd::schemas::SchemasCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Flushes the spans still queued when the command is done.
    let _telemetry = telemetry::init(cli.log_format, role(&cli.command));
    let result = match cli.command {
        Command::Up(a) => cmd::up::run(a),
        Command::Orchestrator(a) => cmd::orchestrator::run(a),
        Command::Worker(a) => cmd::worker::run(a),
        Command::Api(a) => cmd::api::run(a),
        Command::Token(a) => cmd::token::run(a),
        Command::Sagas(a) => cmd::operate::run_sagas(a),
        Command::Dlq(a) => cmd::operate::run_dlq(a),
        Command::Submit(a) => cmd::submit::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Chaos(a) => cmd::chaos::run(a),
        Command::Simulators(a) => cmd::simulators::run(a),
        Command::Schemas(c) => cmd::schemas::run(c),
        Command::Infra(c) => cmd::infra::run(c),
        Command::RotateTokens(a) => cmd::rotate_tokens::run(a),
        Command::Venues(c) => cmd::venues::run(c),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Members(a) => cmd::members::run(a),
        Command::Healthcheck(a) => cmd::health::run(a),
        Command::Experiences(a) => cmd::operate::run_experiences(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", exit::error_line(&err));
            exit::code(exit::FAILED)
        }
    }
}

/// The process's role, as its spans name it (`como.role`).
fn role(command: &Command) -> &'static str {
    match command {
        Command::Up(_) => "up",
        Command::Orchestrator(_) => "orchestrator",
        Command::Worker(_) => "worker",
        Command::Api(_) => "api",
        Command::Bench(_) => "bench",
        Command::Chaos(_) => "chaos",
        Command::Simulators(_) => "simulators",
        _ => "cli",
    }
}
