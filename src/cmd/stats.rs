//! `goflow stats`: asks the running daemon's ops API for /stats and prints every histogram as a
//! percentile table (last minute and since start) with a bar chart of its distribution;
//! `--watch SECS` redraws until Ctrl-C, `--json` prints the raw JSON.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::Cli;
use crate::cmd::status::{emit, fetch};
use crate::ops::client;
use crate::ops::{StatsReport, render};

/// Options of `goflow stats`.
#[derive(Debug, Default, clap::Args)]
pub struct StatsOpt {
    /// Address of the daemon's ops API (default: `api:` of the config, else 127.0.0.1:8880).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Print the raw JSON of /stats.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds until interrupted (Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch: Option<u64>,
    /// With --watch: stop after this many redraws (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch", hide = true)]
    pub count: Option<u64>,
}

pub fn run(cli: &Cli, opt: &StatsOpt) -> anyhow::Result<ExitCode> {
    let addr = client::resolve_api(opt.api.as_deref(), cli.config.as_deref())?;
    let mut drawn: u64 = 0;
    loop {
        let body = match fetch(&addr, "/stats")? {
            Ok(body) => body,
            Err(code) => return Ok(code),
        };
        let text = if opt.json {
            body
        } else {
            let report: StatsReport = serde_json::from_str(&body).with_context(|| {
                format!("the ops API at {addr} sent a /stats this goflow cannot read")
            })?;
            render::render_stats(&report)
        };
        let Some(secs) = opt.watch else {
            emit(&text)?;
            return Ok(ExitCode::SUCCESS);
        };
        // Clear the screen and home the cursor, then draw.
        emit(&format!("\x1b[2J\x1b[H{text}"))?;
        drawn += 1;
        if opt.count.is_some_and(|n| drawn >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(secs));
    }
}
