//! The command line: one enum of subcommands, each with its own `Opt` in `cmd/`.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;

/// goflow: a NetFlow v5/v9 and IPFIX collector for PostgreSQL/TimescaleDB, MySQL, Kafka and files.
#[derive(Debug, Parser)]
#[command(
    name = "goflow",
    disable_version_flag = true,
    after_help = crate::exit::EXIT_CODES_HELP
)]
pub struct Cli {
    /// Print the version, the commit, the backends this build has and whether io_uring is
    /// usable here.
    #[arg(short = 'V', long)]
    pub version: bool,

    /// Configuration file (default: $GOFLOW_CONFIG, else ./config.yml, else built-in defaults).
    #[arg(long, global = true, env = "GOFLOW_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `n` and the noun, singular or plural: `1 packet`, `2 packets`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `RUST_LOG`: env_logger's filter; when set it decides alone (no `-v`, no `log_level`).
pub const RUST_LOG_ENV: &str = "RUST_LOG";

/// Sets up logging: `RUST_LOG` when set; otherwise every record passes env_logger and the
/// level is the global maximum (`-v`, later the config's `log_level`, which a SIGHUP can
/// change without a restart; see [`set_log_level`]).
pub fn init_logging(cli: &Cli) {
    // RUST_LOG and RUST_LOG_STYLE as env_logger reads them.
    let mut b = env_logger::Builder::from_env(env_logger::Env::default());
    b.format_target(false);
    let by_env = std::env::var_os(RUST_LOG_ENV).is_some_and(|v| !v.is_empty());
    if !by_env {
        b.filter_level(log::LevelFilter::Trace);
        if cli.verbose == 0 {
            // The server's NOTICEs (tokio_postgres logs them at info: "relation already
            // exists, skipping" at every start) only with -v.
            b.filter_module("tokio_postgres::connection", log::LevelFilter::Warn);
        }
    }
    b.init();
    if !by_env {
        log::set_max_level(match cli.verbose {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
    }
}

/// Applies the config's `log_level` unless `-v` or `RUST_LOG` decide. Returns the level now
/// in force when the config's applies.
pub fn set_log_level(cli_verbose: u8, level: Option<log::LevelFilter>) -> Option<log::LevelFilter> {
    if cli_verbose > 0 || std::env::var_os(RUST_LOG_ENV).is_some_and(|v| !v.is_empty()) {
        return None;
    }
    let level = level.unwrap_or(log::LevelFilter::Info);
    log::set_max_level(level);
    Some(level)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector daemon (the default).
    Run(cmd::run::RunOpt),
    /// Decode NetFlow/IPFIX datagrams from pcap/pcapng files and print JSON lines.
    Decode(cmd::decode::DecodeOpt),
    /// Send synthetic NetFlow/IPFIX at an exact rate (a load generator).
    Bench(cmd::bench::BenchOpt),
    /// Show the running daemon's state: receiver, totals, drops, backends, exporters. Exits 0
    /// when the daemon reports itself healthy, 4 when unhealthy, 1 when it cannot be reached.
    Status(cmd::status::StatusOpt),
    /// Show the running daemon's latency and size histograms (percentiles and bar charts).
    Stats(cmd::stats::StatsOpt),
    /// Provision Grafana through the running daemon: folder, datasources, dashboards.
    ConfigureGrafana(cmd::configure_grafana::ConfigureGrafanaOpt),
    /// List every column of the flow table: its type in each backend and the information
    /// elements that fill it.
    Fields(cmd::fields::FieldsOpt),
    /// Show the templates the running daemon holds, per exporter and domain.
    Templates(cmd::templates::TemplatesOpt),
}
