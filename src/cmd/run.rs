//! `goflow run` (being written).

use std::process::ExitCode;

/// Options of `goflow run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunOpt {}

pub fn run(_cli: &crate::cli::Cli, _opt: &RunOpt) -> anyhow::Result<ExitCode> {
    anyhow::bail!("goflow run is not built yet")
}
