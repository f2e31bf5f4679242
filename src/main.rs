//! The `goflow` binary: parse the command line, set up logging, run the subcommand, print the
//! error chain once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = goflow::cli::Cli::parse();
    goflow::cli::init_logging(&cli);
    match goflow::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("goflow: {e:#}");
            ExitCode::from(goflow::cmd::exit_code(&e))
        }
    }
}
