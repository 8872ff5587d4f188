//! `como-saga simulators`: run the Memberson and SevenRooms simulators as one process, print
//! their base URLs, and stop gracefully on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use como_simulators::{
    FaultsFile, Listen, MembersonConfig, SevenRoomsConfig, SimConfig, Simulators,
};

#[derive(Debug, clap::Args)]
pub struct SimulatorsArgs {
    /// Serve both simulators on this one address, under `/memberson` and `/sevenrooms`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Memberson's own address (when `--listen` is not given).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        conflicts_with = "listen"
    )]
    pub memberson_listen: SocketAddr,
    /// SevenRooms' own address (when `--listen` is not given).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        conflicts_with = "listen"
    )]
    pub sevenrooms_listen: SocketAddr,
    /// Seed of every random fault decision: the same seed and request order give the same faults.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fault rules to install at start-up: `{"memberson": [...], "sevenrooms": [...]}` (see
    /// simulators/README.md). They can be changed at run time over `/_sim/faults`.
    #[arg(long, value_name = "FILE.json")]
    pub faults: Option<PathBuf>,
    /// Lifetime of a Memberson service token, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub memberson_token_lifetime: u64,
    /// Lifetime of a SevenRooms token, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub sevenrooms_token_lifetime: u64,
    /// Active members with large balances to add to the hand-made ones, for load tests.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub bulk_members: usize,
    /// Print the base URLs as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Read a faults file: `{"memberson": [...], "sevenrooms": [...]}`.
pub fn read_faults(path: &std::path::Path) -> anyhow::Result<FaultsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the faults file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid faults file {}", path.display()))
}

impl SimulatorsArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let faults = match &self.faults {
            None => FaultsFile::default(),
            Some(path) => read_faults(path)?,
        };
        let listen = match self.listen {
            Some(addr) => Listen::Shared(addr),
            None => Listen::Separate {
                memberson: self.memberson_listen,
                sevenrooms: self.sevenrooms_listen,
            },
        };
        Ok(SimConfig {
            listen,
            seed: self.seed,
            memberson: MembersonConfig {
                token_lifetime: Duration::from_secs(self.memberson_token_lifetime),
                ..MembersonConfig::default()
            },
            sevenrooms: SevenRoomsConfig {
                token_lifetime: Duration::from_secs(self.sevenrooms_token_lifetime),
                ..SevenRoomsConfig::default()
            },
            faults,
            bulk_members: self.bulk_members,
        })
    }
}

pub fn run(args: SimulatorsArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.json))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: SimConfig, json: bool) -> anyhow::Result<()> {
    let sim = Simulators::start(config)
        .await
        .context("cannot start the simulators")?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "memberson_url": sim.memberson_url(),
                "sevenrooms_url": sim.sevenrooms_url(),
            })
        );
    } else {
        println!("Memberson simulator:  {}", sim.memberson_url());
        println!("SevenRooms simulator: {}", sim.sevenrooms_url());
        println!(
            "Ledgers: {0}/_sim/ledger and {1}/_sim/ledger; faults: {0}/_sim/faults and {1}/_sim/faults",
            sim.memberson_url(),
            sim.sevenrooms_url()
        );
        println!("Press Ctrl-C to stop.");
    }
    stop_signal().await?;
    sim.shutdown()
        .await
        .context("the simulators did not stop cleanly")?;
    Ok(())
}

/// Waits for Ctrl-C, or SIGTERM where there is one (how container platforms stop a task).
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulatorsArgs,
    }

    #[test]
    fn one_listen_address_serves_both_and_excludes_the_separate_ones() {
        let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:9000", "--seed", "7"]);
        let config = cli.args.config().unwrap();
        assert_eq!(
            config.listen,
            Listen::Shared("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(config.seed, 7);
        assert!(
            Cli::try_parse_from([
                "x",
                "--listen",
                "127.0.0.1:9000",
                "--memberson-listen",
                "127.0.0.1:1"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_faults_file_is_read_at_start_up() {
        let path =
            std::env::temp_dir().join(format!("como-sim-faults-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"memberson":[{"kind":"commit_then_fail","status":500,"ops":["redeem"],"probability":0.1}]}"#,
        )
        .unwrap();
        let cli = Cli::parse_from(["x", "--faults", path.to_str().unwrap()]);
        let config = cli.args.config().unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(config.faults.memberson.len(), 1);
        assert!(config.faults.sevenrooms.is_empty());
    }
}
