//! One module per subcommand, each with its `Opt` and `run`.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub mod bench;
pub mod check;
pub mod configure_grafana;
pub mod decode;
pub mod fields;
pub mod run;
pub mod stats;
pub mod status;
pub mod templates;
pub mod version;

/// Runs the chosen subcommand (the daemon when none is given).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.version {
        status::emit(&version::text())?;
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        None => run::run(&cli, &run::RunOpt::default()),
        Some(Command::Run(ref opt)) => run::run(&cli, opt),
        Some(Command::Decode(ref opt)) => decode::run(opt),
        Some(Command::Bench(ref opt)) => bench::run(&cli, opt),
        Some(Command::Status(ref opt)) => status::run(&cli, opt),
        Some(Command::Stats(ref opt)) => stats::run(&cli, opt),
        Some(Command::ConfigureGrafana(ref opt)) => configure_grafana::run(&cli, opt),
        Some(Command::Fields(ref opt)) => fields::run(opt),
        Some(Command::Templates(ref opt)) => templates::run(&cli, opt),
    }
}

/// Exit code for an error that reached `main` (see [`crate::exit`]).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    crate::exit::code_of(e)
}
