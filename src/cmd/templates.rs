//! `goflow templates`: the templates the running daemon holds (its /templates), readable: per
//! exporter and observation domain, each template's id, kind, age and fields (element id,
//! name, length), every page fetched. `--json` prints the daemon's pages as they come.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Cli;
use crate::ops::TemplatesReport;
use crate::ops::client;

/// Most templates fetched (pages of 1000); beyond, the output says how many more there are.
const MAX_TEMPLATES: u64 = 20_000;
const PAGE: u64 = 1000;

/// Options of `goflow templates`.
#[derive(Debug, Default, clap::Args)]
pub struct TemplatesOpt {
    /// The daemon's ops API: a URL (as the daemon logs it), HOST:PORT or a port (default:
    /// `api:` of the config, else 127.0.0.1:8880).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Only this exporter's templates (its IP address).
    #[arg(long, value_name = "IP")]
    pub exporter: Option<std::net::IpAddr>,
    /// Print the raw JSON of /templates (every page, one document per line).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, opt: &TemplatesOpt) -> anyhow::Result<ExitCode> {
    let addr = client::resolve_api(opt.api.as_deref(), cli.config.as_deref())?;
    let mut pages = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut path = format!("/templates?offset={offset}&limit={PAGE}");
        if let Some(e) = opt.exporter {
            path.push_str(&format!("&exporter={e}"));
        }
        let body = match super::status::fetch(&addr, &path)? {
            Ok(b) => b,
            Err(code) => return Ok(code),
        };
        if opt.json {
            super::status::emit(&format!("{}\n", body.trim_end()))?;
        }
        let page: TemplatesReport = serde_json::from_str(&body).with_context(|| {
            format!("the ops API at {addr} sent a /templates this goflow cannot read")
        })?;
        let next = page.next;
        pages.push(page);
        match next {
            Some(n) if n > offset && n < MAX_TEMPLATES => offset = n,
            _ => break,
        }
    }
    if !opt.json {
        super::status::emit(&render(&pages))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The pages as text.
pub fn render(pages: &[TemplatesReport]) -> String {
    let mut out = String::new();
    let total = pages.first().map_or(0, |p| p.total);
    let shown: usize = pages
        .iter()
        .flat_map(|p| &p.exporters)
        .flat_map(|e| &e.domains)
        .map(|d| d.templates.len())
        .sum();
    let _ = writeln!(
        out,
        "{}",
        super::decode::count(total, "template", "templates")
    );
    let mut last: Option<(&str, u32)> = None;
    for e in pages.iter().flat_map(|p| &p.exporters) {
        for d in &e.domains {
            if last != Some((e.address.as_str(), d.domain)) {
                let _ = writeln!(out, "\nexporter {} domain {}", e.address, d.domain);
                last = Some((e.address.as_str(), d.domain));
            }
            for t in &d.templates {
                let mut flags = Vec::new();
                if t.restored {
                    flags.push("restored from state_dir".to_owned());
                }
                if !t.repeated_ies.is_empty() {
                    let ids: Vec<String> = t.repeated_ies.iter().map(u16::to_string).collect();
                    flags.push(format!("repeats {} (the last is read)", ids.join(", ")));
                }
                let _ = writeln!(
                    out,
                    "  template {} ({}, {}, announced {} ago){}",
                    t.id,
                    if t.options { "options" } else { "data" },
                    super::decode::count(t.fields.len() as u64, "field", "fields"),
                    crate::ops::status::human_duration(t.age_secs),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", flags.join("; "))
                    }
                );
                for f in &t.fields {
                    let id = match f.enterprise {
                        Some(pen) if pen != 0 => format!("{pen}/{}", f.id),
                        _ => f.id.to_string(),
                    };
                    let len = if f.length == u16::MAX {
                        "variable".to_owned()
                    } else {
                        format!("{} B", f.length)
                    };
                    let _ = writeln!(
                        out,
                        "    {id:>11}  {:<32} {len}",
                        f.name.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    if (shown as u64) < total {
        let _ = writeln!(
            out,
            "\n{} more not shown (use --exporter, or --json with the API's paging)",
            total - shown as u64
        );
    }
    out
}
