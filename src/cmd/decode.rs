//! `goflow decode` (being written).

use std::process::ExitCode;

/// Options of `goflow decode`.
#[derive(Debug, Default, clap::Args)]
pub struct DecodeOpt {}

pub fn run(_opt: &DecodeOpt) -> anyhow::Result<ExitCode> {
    anyhow::bail!("goflow decode is not built yet")
}
