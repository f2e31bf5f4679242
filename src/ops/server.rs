//! The ops API's HTTP server: tiny_http on its own thread, far from the receive path. Requests
//! only read what [`OpsSource`] publishes (atomics, snapshots, the histogram hub), so a scrape
//! never stalls a worker. Routing is a pure function ([`respond`]) so it is tested without
//! sockets. [`OpsServer::stop`] unblocks the accept loop and joins the thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::anyhow;
use serde::Serialize;

use super::metrics;
use super::status::OpsSource;

/// A running ops API. Dropping it stops it too.
pub struct OpsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Starts the ops API on `addr` (e.g. `127.0.0.1:8880`; port 0 picks a free one).
/// A bind failure is an error naming the address.
pub fn serve(addr: &str, source: Arc<dyn OpsSource>) -> anyhow::Result<OpsServer> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| anyhow!("cannot bind ops API on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("cannot bind ops API on {addr}: not an IP address"))?;
    let server = Arc::new(server);
    let thread = std::thread::Builder::new()
        .name("goflow-ops".into())
        .spawn({
            let server = Arc::clone(&server);
            move || accept_loop(&server, &source)
        })
        .map_err(|e| anyhow!("cannot start the ops API thread: {e}"))?;
    log::info!("ops API on http://{bound}/ (/status /stats /metrics /templates /healthz)");
    Ok(OpsServer {
        server,
        thread: Some(thread),
        addr: bound,
    })
}

impl std::fmt::Debug for OpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl OpsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the server thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.unblock();
            if t.join().is_err() {
                log::warn!("ops API thread panicked");
            }
        }
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(server: &tiny_http::Server, source: &Arc<dyn OpsSource>) {
    for req in server.incoming_requests() {
        if req.url().split(['?', '#']).next() == Some(GRAFANA_PATH) {
            grafana_request(req, source);
            continue;
        }
        let reply = respond(source.as_ref(), req.method().as_str(), req.url());
        let mut resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type) {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::debug!("ops API: writing a response failed: {e}");
        }
    }
}

/// POST /grafana: `goflow configure-grafana` asks the daemon to provision Grafana.
pub const GRAFANA_PATH: &str = "/grafana";
/// Largest POST /grafana body (the dashboards are about 100 KiB).
const GRAFANA_BODY_MAX_BYTES: u64 = 16 << 20;

/// Serves POST /grafana on its own thread: provisioning makes several requests to Grafana, and
/// scrapes of /metrics must not wait for them. Only loopback clients may ask (the answer is
/// made with the backends' passwords, and the request carries a Grafana key).
fn grafana_request(mut req: tiny_http::Request, source: &Arc<dyn OpsSource>) {
    let loopback = req.remote_addr().is_some_and(|a| match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    });
    let early = if !loopback {
        Some(error(
            403,
            "POST /grafana is served to loopback clients only",
        ))
    } else if req.method().as_str() != "POST" {
        Some(error(405, "use POST /grafana (goflow configure-grafana)"))
    } else {
        None
    };
    if let Some(reply) = early {
        send(req, reply);
        return;
    }
    let source = Arc::clone(source);
    let spawned = std::thread::Builder::new()
        .name("goflow-grafana".into())
        .spawn(move || {
            use std::io::Read as _;
            let mut body = String::new();
            let read = req
                .as_reader()
                .take(GRAFANA_BODY_MAX_BYTES)
                .read_to_string(&mut body);
            let reply = match read {
                Err(e) => error(400, &format!("cannot read the request: {e}")),
                Ok(_) => grafana_reply(source.as_ref(), &body),
            };
            send(req, reply);
        });
    if let Err(e) = spawned {
        log::warn!("ops API: cannot start the Grafana thread: {e}");
    }
}

/// The answer to one POST /grafana body: 200 with the steps, 400 for a body that is not a
/// request, 502 with the failed step when Grafana refused or could not be reached.
pub fn grafana_reply(source: &dyn OpsSource, body: &str) -> Reply {
    let req: crate::grafana::GrafanaRequest = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) => return error(400, &format!("not a configure-grafana request: {e}")),
    };
    let targets = source.grafana_targets();
    match crate::grafana::provision(&req, &targets) {
        Ok(report) => {
            log::info!(
                "configure-grafana: {} provisioned ({} steps)",
                req.url,
                report.steps.len()
            );
            json(200, &report)
        }
        Err(e) => {
            log::warn!("configure-grafana: {e}");
            json(502, &e)
        }
    }
}

fn send(req: tiny_http::Request, reply: Reply) {
    let mut resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type) {
        resp.add_header(h);
    }
    if let Err(e) = req.respond(resp) {
        log::debug!("ops API: writing a response failed: {e}");
    }
}

/// An HTTP reply before it meets the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const JSON: &str = "application/json";

fn json<T: Serialize>(status: u16, value: &T) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            Reply {
                status,
                content_type: JSON,
                body,
            }
        }
        Err(e) => error(500, &format!("cannot serialise: {e}")),
    }
}

fn error(status: u16, message: &str) -> Reply {
    let body = serde_json::json!({ "error": message, "status": status });
    Reply {
        status,
        content_type: JSON,
        body: format!("{body}\n"),
    }
}

/// Routes one request.
pub fn respond(source: &dyn OpsSource, method: &str, url: &str) -> Reply {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    const ROUTES: [&str; 5] = ["/status", "/stats", "/metrics", "/templates", "/healthz"];
    if !ROUTES.contains(&path) {
        return error(
            404,
            &format!(
                "no such path {path:?}; try /status, /stats, /metrics, /templates or /healthz"
            ),
        );
    }
    if method != "GET" && method != "HEAD" {
        return error(405, &format!("method {method} not allowed; use GET"));
    }
    match path {
        "/status" => json(200, &status_with_msg(source)),
        "/stats" => json(200, &source.histograms().report(Instant::now())),
        "/metrics" => {
            let status = status_with_msg(source);
            let stats = source.histograms().report(Instant::now());
            Reply {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: metrics::render(&status, &stats),
            }
        }
        "/templates" => json(200, &source.templates()),
        _ => {
            let health = source.status().health();
            json(if health.healthy { 200 } else { 503 }, &health)
        }
    }
}

fn status_with_msg(source: &dyn OpsSource) -> super::status::Status {
    let mut st = source.status();
    if st.msg.is_empty() {
        st.msg = st.summary_paragraph();
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::histogram::HistogramHub;
    use crate::ops::status::{BackendStatus, ReceiverStatus, Status, TemplatesReport};

    struct Fixed {
        status: Status,
        hub: HistogramHub,
    }

    impl OpsSource for Fixed {
        fn status(&self) -> Status {
            self.status.clone()
        }
        fn templates(&self) -> TemplatesReport {
            TemplatesReport::default()
        }
        fn histograms(&self) -> &HistogramHub {
            &self.hub
        }
    }

    fn fixed(healthy: bool) -> Fixed {
        Fixed {
            status: Status {
                version: "0.1.0".into(),
                receiver: ReceiverStatus {
                    kind: "mmsg".into(),
                    workers: 1,
                    running: 1,
                    ..ReceiverStatus::default()
                },
                backends: vec![BackendStatus {
                    name: "out".into(),
                    kind: "null".into(),
                    healthy,
                    ..BackendStatus::default()
                }],
                ..Status::default()
            },
            hub: HistogramHub::new(&["out"]),
        }
    }

    #[test]
    fn routes() {
        let src = fixed(true);
        let r = respond(&src, "GET", "/status");
        assert_eq!((r.status, r.content_type), (200, JSON));
        assert!(
            r.body.contains("\"Msg\": \"goflow 0.1.0 up 0s"),
            "{}",
            r.body
        );
        assert_eq!(respond(&src, "GET", "/status/?x=1").status, 200);
        assert_eq!(respond(&src, "GET", "/stats").status, 200);
        assert_eq!(respond(&src, "GET", "/templates").status, 200);
        let m = respond(&src, "GET", "/metrics");
        assert_eq!(m.content_type, metrics::CONTENT_TYPE);
        assert!(metrics::parse(&m.body).is_ok());
        assert_eq!(respond(&src, "GET", "/healthz").status, 200);
        assert_eq!(respond(&fixed(false), "GET", "/healthz").status, 503);
        let nf = respond(&src, "GET", "/nope");
        assert_eq!((nf.status, nf.content_type), (404, JSON));
        assert!(nf.body.contains("\"error\""));
        assert_eq!(respond(&src, "POST", "/status").status, 405);
    }

    #[test]
    fn serves_and_stops() -> anyhow::Result<()> {
        let srv = serve("127.0.0.1:0", Arc::new(fixed(true)))?;
        let addr = srv.local_addr().to_string();
        let (code, body) = crate::ops::client::get(&addr, "/healthz")?;
        assert_eq!(code, 200, "{body}");
        let (code, _) = crate::ops::client::get(&addr, "/x")?;
        assert_eq!(code, 404);
        // A second server on the same port fails with a clear message.
        let err = serve(&addr, Arc::new(fixed(true))).map(|_| ());
        let msg = format!("{:#}", err.err().unwrap_or_else(|| anyhow!("bound twice")));
        assert!(
            msg.starts_with(&format!("cannot bind ops API on {addr}: ")),
            "{msg}"
        );
        srv.stop();
        assert!(crate::ops::client::get(&addr, "/healthz").is_err());
        Ok(())
    }
}
