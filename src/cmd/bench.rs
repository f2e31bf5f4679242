//! `goflow bench` (being written).

use std::process::ExitCode;

/// Options of `goflow bench`.
#[derive(Debug, Default, clap::Args)]
pub struct BenchOpt {}

pub fn run(_opt: &BenchOpt) -> anyhow::Result<ExitCode> {
    anyhow::bail!("goflow bench is not built yet")
}
