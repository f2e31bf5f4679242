//! The `goflow` binary: parse the command line, set up logging, run the subcommand, print the
//! error chain once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = goflow::cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_level()))
        .format_target(false)
        .init();
    match goflow::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("goflow: {e:#}");
            ExitCode::from(goflow::cmd::exit_code(&e))
        }
    }
}
