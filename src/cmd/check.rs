//! `goflow run --check`: everything that can be verified without receiving, one line per item
//! (`ok`, `FAIL` or `note`), exit 0 when every item passed and 3 (a start failure) otherwise.
//! Checked: the configuration (a config error exits 2 before this runs), `state_dir` (created
//! if missing and locked for a moment, so "in use" is found), the UDP listen address and the
//! ops API address (bound for a moment), each backend (its type is in this build; a file's
//! path can be appended to or created; a database or broker is reached with the configured
//! credentials and its table set up or found compatible, through the sink's own
//! [`Sink::connect`](goflow_writers::sink::Sink::connect), the call `run` makes at start).
//! Backends defined but named by no frontend are listed as notes.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{BackendConfig, BackendKind, RunConfig};

/// The outcome of one item.
enum Item {
    Ok(String),
    Fail(String),
    Note(String),
}

/// Runs every check, prints one line per item, returns the exit code.
pub fn run(cfg: &RunConfig) -> ExitCode {
    let mut items = vec![Item::Ok(format!("configuration {}", cfg.source_name()))];
    items.push(check_state_dir(&cfg.state_dir));
    if cfg.netflow.is_some() {
        items.push(check_udp(cfg.receiver.bind));
    }
    if let Some(api) = cfg.api {
        items.push(check_api(api));
    }
    for b in &cfg.backends {
        items.push(check_backend(b));
    }
    for name in &cfg.unused_backends {
        items.push(Item::Note(format!(
            "backend {name} is defined but no frontend names it: it is not started"
        )));
    }
    let mut failed = 0;
    for i in &items {
        match i {
            Item::Ok(s) => println!("ok    {s}"),
            Item::Fail(s) => {
                failed += 1;
                println!("FAIL  {s}");
            }
            Item::Note(s) => println!("note  {s}"),
        }
    }
    if failed > 0 {
        println!(
            "{failed} {} failed: goflow would not start (or not write) with this configuration",
            if failed == 1 { "check" } else { "checks" }
        );
        crate::exit::exit(crate::exit::START)
    } else {
        println!("all checks passed");
        ExitCode::SUCCESS
    }
}

fn check_state_dir(path: &Path) -> Item {
    match crate::state::StateDir::open(path) {
        Ok(_) => Item::Ok(format!(
            "state_dir {}: writable and not in use",
            path.display()
        )),
        Err(e) => Item::Fail(format!("{e:#}")),
    }
}

fn check_udp(bind: std::net::SocketAddr) -> Item {
    match std::net::UdpSocket::bind(bind) {
        Ok(_) => Item::Ok(format!("listen udp {bind}: free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Item::Fail(format!(
            "listen udp {bind}: already in use (is another collector running?)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Item::Fail(format!(
            "listen udp {bind}: {e} (a port below 1024 needs CAP_NET_BIND_SERVICE; the systemd \
             unit grants it)"
        )),
        Err(e) => Item::Fail(format!("listen udp {bind}: {e}")),
    }
}

fn check_api(api: std::net::SocketAddr) -> Item {
    match std::net::TcpListener::bind(api) {
        Ok(_) => Item::Ok(format!("ops API {api}: free")),
        Err(e) => {
            let mut other = api;
            other.set_port(api.port().wrapping_add(1).max(1));
            Item::Fail(format!(
                "ops API {api}: {e}; set `api: {other}` (another address) or `api: off` in the \
                 config"
            ))
        }
    }
}

fn check_backend(b: &BackendConfig) -> Item {
    let what = format!("backend {} ({})", b.name, b.kind.type_name());
    match &b.kind {
        BackendKind::File { path, .. } if path.as_os_str() == "-" => {
            Item::Ok(format!("{what}: standard output"))
        }
        BackendKind::File { path, .. } => check_file(&what, path),
        BackendKind::Dump => Item::Ok(format!("{what}: standard output")),
        BackendKind::Null => Item::Ok(format!("{what}: counts and discards")),
        _ => {
            // The same plan `run` builds; no retention at a check.
            let plan = match super::run::plan_backend(b, None) {
                Ok(p) => p,
                Err(e) => return Item::Fail(format!("{e:#}")),
            };
            let Some(mut sink) = plan.sinks.into_iter().next() else {
                return Item::Fail(format!("{what}: no sink"));
            };
            match sink.connect() {
                Ok(()) => Item::Ok(format!(
                    "{what}: {} reachable with the configured credentials, table ready",
                    b.kind.target()
                )),
                Err(e) => Item::Fail(format!("{what}: {e}")),
            }
        }
    }
}

/// A file backend's path: an existing file must open for appending; else its directory must
/// exist and be writable (nothing is created).
fn check_file(what: &str, path: &Path) -> Item {
    if path.exists() {
        return match OpenOptions::new().append(true).open(path) {
            Ok(_) => Item::Ok(format!(
                "{what}: {} exists and is appendable",
                path.display()
            )),
            Err(e) => Item::Fail(format!("{what}: cannot append to {}: {e}", path.display())),
        };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Item::Fail(format!(
            "{what}: cannot create {}: directory {} does not exist (create it, or change the \
             path)",
            path.display(),
            dir.display()
        ));
    }
    match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        Ok(()) => Item::Ok(format!("{what}: {} can be created", path.display())),
        Err(e) => Item::Fail(format!(
            "{what}: cannot create {}: directory {} is not writable ({e})",
            path.display(),
            dir.display()
        )),
    }
}
