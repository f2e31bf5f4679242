//! `goflow configure-grafana URL KEY [DIR]`: sends the Grafana URL, the key and the dashboards
//! (DIR's `*.json` and `mysql/*.json`, else the ones compiled into the binary) to the running
//! daemon's POST /grafana, which provisions Grafana with the backends it knows (see
//! [`crate::grafana`]), and prints what was done. A failed step is one line naming it and exit
//! code 1. Neither the key nor a password is ever printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::Cli;
use crate::grafana::{GrafanaReport, GrafanaRequest, StepError, load_dashboards};
use crate::ops::client;
use crate::ops::server::GRAFANA_PATH;

/// How long the daemon may take for all of Grafana's steps.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(180);

/// Options of `goflow configure-grafana`.
#[derive(Debug, clap::Args)]
pub struct ConfigureGrafanaOpt {
    /// Grafana's root URL (http:// or https://), e.g. http://127.0.0.1:3000
    pub url: String,
    /// A service-account token or API key with the Admin role (sent as Authorization: Bearer).
    pub key: String,
    /// Directory of dashboard JSON files (default: the dashboards built into goflow).
    pub dir: Option<PathBuf>,
    /// Address of the daemon's ops API (default: `api:` of the config, else 127.0.0.1:8880).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// URL of a Prometheus that scrapes goflow's /metrics: adds its datasource and the
    /// Collector health dashboard.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Accept any TLS certificate from Grafana (self-signed lab servers).
    #[arg(long)]
    pub insecure: bool,
    /// Database user for the SQL datasources (a SELECT-only one; password from
    /// GRAFANA_SQL_PASSWORD) instead of the backend's own user and SQL_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub reader: Option<String>,
}

pub fn run(cli: &Cli, opt: &ConfigureGrafanaOpt) -> anyhow::Result<ExitCode> {
    let addr = client::resolve_api(opt.api.as_deref(), cli.config.as_deref())?;
    let dashboards = load_dashboards(opt.dir.as_deref())?;
    let reader_password = match &opt.reader {
        Some(user) => Some(std::env::var("GRAFANA_SQL_PASSWORD").map_err(|_| {
            anyhow::anyhow!("--reader {user}: set its password in GRAFANA_SQL_PASSWORD")
        })?),
        None => None,
    };
    let req = GrafanaRequest {
        url: opt.url.clone(),
        key: opt.key.clone(),
        insecure: opt.insecure,
        prometheus: opt.prometheus.clone(),
        reader: opt.reader.clone(),
        reader_password,
        dashboards,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(DAEMON_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}{GRAFANA_PATH}");
    let mut resp = match agent.post(&url).send_json(&req) {
        Ok(r) => r,
        Err(ureq::Error::Io(_))
        | Err(ureq::Error::ConnectionFailed)
        | Err(ureq::Error::HostNotFound) => {
            eprintln!("{}", client::unreachable_message(&addr));
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(anyhow::anyhow!("the ops API at {addr}: {e}")),
    };
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .with_context(|| format!("the ops API at {addr}: cannot read the answer"))?;
    match status {
        200 => {
            let report: GrafanaReport = serde_json::from_str(&body).with_context(|| {
                format!("the ops API at {addr} sent an answer goflow cannot read")
            })?;
            let mut text = String::new();
            for s in &report.steps {
                text.push_str(s);
                text.push('\n');
            }
            super::status::emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        502 => {
            let e: StepError = serde_json::from_str(&body).unwrap_or(StepError {
                step: "provision".into(),
                message: body.trim().to_owned(),
            });
            eprintln!("configure-grafana failed at step {e}");
            Ok(ExitCode::from(1))
        }
        404 => {
            anyhow::bail!("the daemon at {addr} has no {GRAFANA_PATH} endpoint (an older goflow?)")
        }
        code => {
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_owned());
            anyhow::bail!("the ops API at {addr} answered {code}: {msg}")
        }
    }
}
