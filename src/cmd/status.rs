//! `goflow status`: asks the running daemon's ops API for /status and prints a human summary
//! (receiver, totals, drops, backends, exporters), or the raw JSON with `--json`.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::cli::Cli;
use crate::ops::client::{self, ClientError};
use crate::ops::{Status, render};

/// Options of `goflow status`.
#[derive(Debug, Default, clap::Args)]
pub struct StatusOpt {
    /// The daemon's ops API: a URL (as the daemon logs it), HOST:PORT or a port (default:
    /// `api:` of the config, else 127.0.0.1:8880).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Print the raw JSON of /status.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, opt: &StatusOpt) -> anyhow::Result<ExitCode> {
    let addr = client::resolve_api(opt.api.as_deref(), cli.config.as_deref())?;
    let body = match fetch(&addr, "/status")? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    // The daemon's own verdict decides the exit code (0 healthy, 4 unhealthy).
    let health = health(&addr)?;
    if opt.json {
        emit(&body)?;
        if !health.healthy {
            for r in &health.reasons {
                eprintln!("goflow: unhealthy: {r}");
            }
        }
    } else {
        let status: Status = serde_json::from_str(&body).with_context(|| {
            format!("the ops API at {addr} sent a /status this goflow cannot read")
        })?;
        let mut text = render::render_status(&status, now_us());
        // The daemon's reasons, when its verdict differs from the one read from /status (it
        // also knows what /status does not carry).
        if !health.healthy && !text.contains("NOT HEALTHY") {
            text.push_str("\nNOT HEALTHY:\n");
            for r in &health.reasons {
                text.push_str(&format!("  {r}\n"));
            }
        }
        emit(&text)?;
    }
    Ok(crate::exit::exit(if health.healthy {
        crate::exit::SUCCESS
    } else {
        crate::exit::UNHEALTHY
    }))
}

/// GET /healthz: 200 healthy, 503 unhealthy with its reasons.
fn health(addr: &str) -> anyhow::Result<crate::ops::status::Health> {
    match client::get(addr, "/healthz") {
        Ok((code @ (200 | 503), body)) => {
            let mut h: crate::ops::status::Health = serde_json::from_str(&body).unwrap_or_default();
            h.healthy = code == 200;
            if !h.healthy && h.reasons.is_empty() {
                h.reasons
                    .push("the daemon answered /healthz with 503".into());
            }
            Ok(h)
        }
        Ok((code, body)) => anyhow::bail!(
            "the ops API at {addr} answered /healthz with {code}: {}",
            body.trim()
        ),
        Err(e) => Err(anyhow::anyhow!("the ops API at {addr}: {e}")),
    }
}

/// GETs `path`; an unreachable daemon prints the one message and yields exit code 1.
pub(crate) fn fetch(addr: &str, path: &str) -> anyhow::Result<Result<String, ExitCode>> {
    match client::get(addr, path) {
        Ok((200, body)) => Ok(Ok(body)),
        Ok((code, body)) => anyhow::bail!(
            "the ops API at {addr} answered {path} with {code}: {}",
            body.trim()
        ),
        Err(ClientError::Unreachable(_)) => {
            eprintln!("{}", client::unreachable_message(addr));
            Ok(Err(crate::exit::exit(crate::exit::RUNTIME)))
        }
        Err(e) => Err(anyhow::anyhow!("the ops API at {addr}: {e}")),
    }
}

/// Writes to stdout; a closed pipe (`goflow status | head`) is an error, not a panic.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Now, as Unix microseconds.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
