//! `goflow stats`: asks the running daemon's ops API for /stats and prints every histogram as a
//! percentile table (last minute and since start) with a bar chart of its distribution;
//! `--watch SECS` redraws until Ctrl-C, `--json` prints the raw JSON. On a terminal a redraw
//! clears the screen first; into a pipe or a file (or with `NO_COLOR` set, or `TERM=dumb`) each
//! refresh is one plain block under a `--- stats at ... ---` line, without escape sequences.

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
    /// The daemon's ops API: a URL (as the daemon logs it), HOST:PORT or a port (default:
    /// `api:` of the config, else 127.0.0.1:8880).
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
            let mut text = render::render_stats(&report);
            text.push_str(&kafka_section(&addr));
            text
        };
        let Some(secs) = opt.watch else {
            emit(&text)?;
            return Ok(ExitCode::SUCCESS);
        };
        emit(&watch_frame(&text, drawn, screen_control()))?;
        drawn += 1;
        if opt.count.is_some_and(|n| drawn >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(secs));
    }
}

/// The Kafka backends' producers (from /status): counters, delivery errors by reason and the
/// produce-to-ack distribution. Empty without Kafka backends or when /status cannot be read.
fn kafka_section(addr: &str) -> String {
    let Ok((200, body)) = client::get(addr, "/status") else {
        return String::new();
    };
    let Ok(st) = serde_json::from_str::<crate::ops::Status>(&body) else {
        return String::new();
    };
    let mut out = String::new();
    for b in &st.backends {
        if let Some(k) = &b.kafka {
            out.push_str(&format!("\nkafka producer [{}]\n", b.name));
            out.push_str(&render::render_kafka(k, "  "));
        }
    }
    out
}

/// Whether `--watch` may clear the screen: stdout is a terminal, `NO_COLOR` is unset (or empty)
/// and `TERM` is not `dumb`.
fn screen_control() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// One `--watch` refresh: clear and home, then the text (a terminal); or a separator line with
/// the time and the text (anything else).
fn watch_frame(text: &str, drawn: u64, clear: bool) -> String {
    if clear {
        return format!("\x1b[2J\x1b[H{text}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(0));
    let mut at = Vec::new();
    goflow_writers::json::write_rfc3339(now, &mut at);
    let at = String::from_utf8_lossy(&at);
    let sep = if drawn == 0 { "" } else { "\n" };
    format!("{sep}--- stats at {at} ---\n{text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frames_have_no_escapes() {
        let f = watch_frame("a\nb\n", 1, false);
        assert!(!f.contains('\x1b'), "{f:?}");
        assert!(f.starts_with("\n--- stats at "), "{f:?}");
        assert!(f.ends_with("---\na\nb\n"), "{f:?}");
        assert!(watch_frame("x", 0, true).starts_with("\x1b[2J\x1b[H"));
    }
}
