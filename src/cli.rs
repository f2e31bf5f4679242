//! The command line: one enum of subcommands, each with its own `Opt` in `cmd/`.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::cmd;

/// goflow: a NetFlow v5/v9 and IPFIX collector for PostgreSQL/TimescaleDB, MySQL, Kafka and files.
#[derive(Debug, Parser)]
#[command(
    name = "goflow",
    version,
    propagate_version = true,
    after_help = crate::exit::EXIT_CODES_HELP
)]
pub struct Cli {
    /// Configuration file (default: $GOFLOW_CONFIG, else ./config.yml, else built-in defaults).
    #[arg(long, global = true, env = "GOFLOW_CONFIG")]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            // The server's NOTICEs (tokio_postgres logs them at info: "relation already
            // exists, skipping" at every start) only with -v.
            0 => "info,tokio_postgres::connection=warn",
            1 => "debug",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector daemon (the default).
    Run(cmd::run::RunOpt),
    /// Decode NetFlow/IPFIX datagrams from pcap/pcapng files and print JSON lines.
    Decode(cmd::decode::DecodeOpt),
    /// Send synthetic NetFlow/IPFIX at an exact rate (a load generator).
    Bench(cmd::bench::BenchOpt),
    /// Show the running daemon's state: receiver, totals, drops, backends, exporters.
    Status(cmd::status::StatusOpt),
    /// Show the running daemon's latency and size histograms (percentiles and bar charts).
    Stats(cmd::stats::StatsOpt),
    /// Provision Grafana through the running daemon: folder, datasources, dashboards.
    ConfigureGrafana(cmd::configure_grafana::ConfigureGrafanaOpt),
}
