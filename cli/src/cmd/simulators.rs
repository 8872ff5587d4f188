//! `como-saga simulators`: run the Memberson and SevenRooms simulators as one process.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimulatorsArgs {}

pub fn run(_args: SimulatorsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the simulators are not built yet")
}
