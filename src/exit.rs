//! The process exit codes, in one place: every subcommand and `main` take them from here, and
//! `--help` and the README list them (the table in [`EXIT_CODES_HELP`]).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | runtime failure: the daemon ran and then failed, or lost rows (the final summary says where); a client command that could not talk to the daemon |
//! | 2 | configuration or command-line error (the message names the key, the file and the line) |
//! | 3 | start failure: the configuration is valid but cannot run here (a port in use, a path not creatable, a backend type not built, a backend unreachable under `run --check`) |
//! | 4 | `goflow status`: the daemon answered and reports itself unhealthy (its /healthz is 503; the reasons are printed) |
//!
//! An error is a start failure when it was wrapped with [`start`] (or [`StartContext`]) on its
//! way up, a configuration error when its chain holds a [`crate::config::ConfigError`]; any
//! other error that reaches `main` is a runtime failure.

use std::fmt;
use std::process::ExitCode;

/// Success.
pub const SUCCESS: u8 = 0;
/// The daemon failed while running (or lost rows); a client command failed.
pub const RUNTIME: u8 = 1;
/// A configuration or command-line error (clap's usage errors exit 2 as well).
pub const CONFIG: u8 = 2;
/// A valid configuration that cannot start here (ports, paths, backends).
pub const START: u8 = 3;
/// `goflow status`: the daemon is running but reports itself unhealthy.
pub const UNHEALTHY: u8 = 4;

/// The exit-code table for `--help` (after the options).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  runtime failure (the daemon failed or lost rows; a client could not reach the daemon)
  2  configuration or command-line error (names the key, the file and the line)
  3  start failure (port in use, path not creatable, backend not built or unreachable; \
`run --check` found a problem)
  4  `goflow status`: the daemon runs but reports itself unhealthy (/healthz 503)";

/// Marks an error as a start failure (exit code [`START`]). Displays as the wrapped error's
/// whole chain, so `main`'s `{:#}` prints every cause once.
#[derive(Debug)]
pub struct StartError(pub anyhow::Error);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for StartError {}

/// `e` as a start failure.
pub fn start(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    if is_start(&e) {
        return e;
    }
    anyhow::Error::new(StartError(e))
}

fn is_start(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StartError>())
}

/// `.start_failure()` on results: the error as a start failure.
pub trait StartContext<T> {
    fn start_failure(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> StartContext<T> for Result<T, E> {
    fn start_failure(self) -> anyhow::Result<T> {
        self.map_err(start)
    }
}

/// The exit code for an error that reached `main`.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<crate::config::ConfigError>()) {
        CONFIG
    } else if is_start(e) {
        START
    } else {
        RUNTIME
    }
}

/// `code` as an [`ExitCode`].
pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_kind() {
        let config = anyhow::Error::new(crate::config::ConfigError("bad key".into()));
        assert_eq!(code_of(&config), CONFIG);
        // Context on top keeps the kind.
        let config = config.context("loading");
        assert_eq!(code_of(&config), CONFIG);

        let start_err = start(anyhow::anyhow!("port in use"));
        assert_eq!(code_of(&start_err), START);
        let wrapped = start_err.context("listening");
        assert_eq!(code_of(&wrapped), START);

        assert_eq!(code_of(&anyhow::anyhow!("worker died")), RUNTIME);
    }

    #[test]
    fn start_error_prints_the_chain_once() {
        let inner = anyhow::Error::new(std::io::Error::other("Address in use"))
            .context("cannot listen on 0.0.0.0:2055");
        let e = start(inner);
        assert_eq!(
            format!("{e:#}"),
            "cannot listen on 0.0.0.0:2055: Address in use"
        );
        // Wrapping twice does not nest.
        let again = start(e);
        assert_eq!(
            format!("{again:#}"),
            "cannot listen on 0.0.0.0:2055: Address in use"
        );
        let r: anyhow::Result<()> = Err(std::io::Error::other("x")).start_failure();
        assert_eq!(r.map_err(|e| code_of(&e)), Err(START));
    }
}
