//! The ops API's HTTP server, far from the receive path. Requests only read what
//! [`OpsSource`] publishes (atomics, snapshots, the histogram hub), so a scrape never stalls a
//! worker. Routing is a pure function ([`respond`]) so it is tested without sockets.
//!
//! One thread ("goflow-ops") accepts connections and reads requests from all of them at once
//! (non-blocking sockets under `poll`), so a client that connects and sends nothing holds no
//! thread: at most [`MAX_CONNECTIONS`] connections are read at a time (a new one pushes out the
//! one that has waited longest), and a request not complete within [`REQUEST_TIMEOUT`] gets 408
//! and its connection is closed. `/healthz` is answered on that thread at once; every other
//! request goes to a pool of [`WORKERS`] threads through a queue of [`QUEUE`] requests (503
//! when it is full), so a slow scrape, a large page or a slow reader delays neither /healthz nor
//! more than one of the others. Large documents (/status, /templates) are serialised straight
//! onto the socket, one bounded page at a time. Every answer closes its connection (there is no
//! keep-alive to hold). [`OpsServer::stop`] ends the threads and joins them.

use std::io::{BufWriter, Read as _, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Serialize;

use super::metrics;
use super::status::{
    OpsSource, STATUS_EXPORTERS_DEFAULT, Status, TEMPLATES_PAGE_DEFAULT, TemplatesQuery,
    TemplatesReport,
};

/// Threads that answer requests (everything but /healthz).
pub const WORKERS: usize = 4;
/// Requests waiting for a worker; beyond it the answer is 503.
pub const QUEUE: usize = 32;
/// Connections whose request is still being read.
pub const MAX_CONNECTIONS: usize = 256;
/// A request (head and body) must arrive within this long after the connection opened.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing one answer may block this long at a time (a client that stops reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head (request line and headers).
const HEAD_MAX_BYTES: usize = 16 << 10;
/// How often the accept thread looks at the stop flag and the timeouts.
const TICK: Duration = Duration::from_millis(100);

/// A running ops API. Dropping it stops it too.
pub struct OpsServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Starts the ops API on `addr` (e.g. `127.0.0.1:8880`; port 0 picks a free one).
/// A bind failure is an error naming the address.
pub fn serve(addr: &str, source: Arc<dyn OpsSource>) -> anyhow::Result<OpsServer> {
    let listener =
        TcpListener::bind(addr).map_err(|e| anyhow!("cannot bind ops API on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| anyhow!("cannot bind ops API on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| anyhow!("cannot bind ops API on {addr}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let grafana_busy = Arc::new(AtomicBool::new(false));
    let mut server = OpsServer {
        stop: Arc::clone(&stop),
        threads: Vec::new(),
        addr: bound,
    };
    for i in 0..WORKERS {
        let rx = Arc::clone(&rx);
        let source = Arc::clone(&source);
        let busy = Arc::clone(&grafana_busy);
        let t = std::thread::Builder::new()
            .name(format!("goflow-ops-{i}"))
            .spawn(move || worker(&rx, source.as_ref(), &busy))
            .map_err(|e| anyhow!("cannot start the ops API threads: {e}"))?;
        server.threads.push(t);
    }
    let t = std::thread::Builder::new()
        .name("goflow-ops".into())
        .spawn(move || accept_loop(&listener, &tx, source.as_ref(), &stop))
        .map_err(|e| anyhow!("cannot start the ops API thread: {e}"))?;
    server.threads.push(t);
    log::info!("ops API on http://{bound}/ (/status /stats /metrics /templates /healthz)");
    Ok(server)
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

    /// Stops accepting, ends the server threads and waits for them (a worker in the middle
    /// of an answer finishes it first, at most [`WRITE_TIMEOUT`] per blocked write).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The accept thread goes first: it holds the queue's sender, and the workers end
        // when it is dropped.
        while let Some(t) = self.threads.pop() {
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

/// One request, read whole.
#[derive(Debug)]
struct Request {
    method: String,
    url: String,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

type Job = (TcpStream, Request);

/// A connection whose request is still arriving.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
}

/// What the bytes read so far amount to.
enum Parsed {
    More,
    Done(Request),
    Bad(Reply),
}

fn accept_loop(
    listener: &TcpListener,
    tx: &SyncSender<Job>,
    source: &dyn OpsSource,
    stop: &AtomicBool,
) {
    let mut conns: Vec<Pending> = Vec::new();
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: i64::try_from(TICK.as_nanos()).unwrap_or(100_000_000),
    };
    while !stop.load(Ordering::Relaxed) {
        let (listen_ready, ready) = {
            use rustix::event::{PollFd, PollFlags};
            let mut fds = Vec::with_capacity(conns.len() + 1);
            fds.push(PollFd::new(listener, PollFlags::IN));
            for c in &conns {
                fds.push(PollFd::new(&c.stream, PollFlags::IN));
            }
            if let Err(e) = rustix::event::poll(&mut fds, Some(&tick))
                && e != rustix::io::Errno::INTR
            {
                log::warn!("ops API: poll failed: {e}");
                std::thread::sleep(TICK);
                continue;
            }
            let ready: Vec<bool> = fds[1..].iter().map(|f| !f.revents().is_empty()).collect();
            (!fds[0].revents().is_empty(), ready)
        };
        // Read what arrived; finished requests leave the list.
        let mut keep = Vec::with_capacity(conns.len());
        for (mut c, r) in conns.drain(..).zip(ready) {
            if !r {
                keep.push(c);
                continue;
            }
            // A client may close its sending side once the request is out: answer it still.
            // One that closed or failed before a whole request came gets nothing.
            let open = read_more(&mut c).unwrap_or(false);
            match parse(&c.buf, c.stream.peer_addr().ok()) {
                Parsed::More if open => keep.push(c),
                Parsed::More => {}
                Parsed::Done(req) => dispatch(c.stream, req, tx, source),
                Parsed::Bad(reply) => answer_now(c.stream, "GET", &reply),
            }
        }
        conns = keep;
        // Requests too slow to arrive.
        let now = Instant::now();
        let (late, on_time): (Vec<_>, Vec<_>) = conns
            .drain(..)
            .partition(|c| now.saturating_duration_since(c.since) >= REQUEST_TIMEOUT);
        conns = on_time;
        for c in late {
            answer_now(
                c.stream,
                "GET",
                &error(408, "the request did not arrive in time"),
            );
        }
        if listen_ready {
            accept_all(listener, &mut conns);
        }
    }
}

/// Accepts every waiting connection; when [`MAX_CONNECTIONS`] are being read, the one that has
/// waited longest is closed to make room (a client that sends its request at once is never the
/// oldest for long).
fn accept_all(listener: &TcpListener, conns: &mut Vec<Pending>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if conns.len() >= MAX_CONNECTIONS {
                    let oldest = conns.remove(0);
                    answer_now(
                        oldest.stream,
                        "GET",
                        &error(503, "too many connections; this one waited longest"),
                    );
                }
                conns.push(Pending {
                    stream,
                    buf: Vec::new(),
                    since: Instant::now(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: try again at the next tick.
                log::debug!("ops API: accept failed: {e}");
                return;
            }
        }
    }
}

/// Reads what the socket holds; false when the peer closed or the socket failed.
fn read_more(c: &mut Pending) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                if c.buf.len() > HEAD_MAX_BYTES + GRAFANA_BODY_MAX_BYTES {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses a request once its head (and, for POST, its body) is complete.
fn parse(buf: &[u8], peer: Option<SocketAddr>) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > HEAD_MAX_BYTES {
            Parsed::Bad(error(431, "request head too large"))
        } else {
            Parsed::More
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(url), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad(error(400, "not an HTTP request line"));
    };
    if !version.starts_with("HTTP/1.") || !url.starts_with('/') {
        return Parsed::Bad(error(400, "not an HTTP/1.x request"));
    }
    let mut length = 0u64;
    for h in lines {
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            match v.trim().parse::<u64>() {
                Ok(n) => length = n,
                Err(_) => return Parsed::Bad(error(400, "bad Content-Length")),
            }
        }
    }
    // Only POST /grafana reads a body; other requests' bodies are ignored (the connection
    // closes after the answer).
    let wants_body = method == "POST" && path_of(url) == GRAFANA_PATH;
    let body_start = end + 4;
    let body = if wants_body {
        if length > GRAFANA_BODY_MAX_BYTES as u64 {
            return Parsed::Bad(error(413, "request body too large"));
        }
        let have = buf.len() - body_start;
        let want = usize::try_from(length).unwrap_or(usize::MAX);
        if have < want {
            return Parsed::More;
        }
        buf[body_start..body_start + want].to_vec()
    } else {
        Vec::new()
    };
    Parsed::Done(Request {
        method: method.to_owned(),
        url: url.to_owned(),
        body,
        peer,
    })
}

/// /healthz here and now; everything else to the pool (503 when its queue is full).
fn dispatch(stream: TcpStream, req: Request, tx: &SyncSender<Job>, source: &dyn OpsSource) {
    if path_of(&req.url) == "/healthz" && (req.method == "GET" || req.method == "HEAD") {
        let health = source.health();
        let reply = json(if health.healthy { 200 } else { 503 }, &health);
        answer_now(stream, &req.method, &reply);
        return;
    }
    match tx.try_send((stream, req)) {
        Ok(()) => {}
        Err(TrySendError::Full((stream, req))) => answer_now(
            stream,
            &req.method,
            &error(503, "the ops API is busy; try again"),
        ),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// A small answer written from the accept thread: it fits in the socket's send buffer, and a
/// client that does not read it cannot hold the thread for more than a moment.
fn answer_now(stream: TcpStream, method: &str, reply: &Reply) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let mut stream = stream;
    if let Err(e) = write_reply(&mut stream, method, reply) {
        log::debug!("ops API: writing a response failed: {e}");
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, source: &dyn OpsSource, grafana_busy: &AtomicBool) {
    loop {
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((stream, req)) = job else {
            return;
        };
        if stream.set_nonblocking(false).is_err()
            || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            continue;
        }
        let reply = if path_of(&req.url) == GRAFANA_PATH {
            grafana_request(&req, source, grafana_busy)
        } else {
            respond(source, &req.method, &req.url)
        };
        let mut out = BufWriter::with_capacity(64 << 10, stream);
        let written = write_reply(&mut out, &req.method, &reply).and_then(|()| out.flush());
        if let Err(e) = written {
            log::debug!("ops API: writing a response failed: {e}");
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes the status line, the headers and (unless HEAD) the body. Text bodies carry a
/// Content-Length; documents are serialised as they are written and end with the connection.
fn write_reply(out: &mut dyn Write, method: &str, reply: &Reply) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nConnection: close\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.content_type
    )?;
    if let Body::Text(t) = &reply.body {
        write!(out, "Content-Length: {}\r\n", t.len())?;
    }
    out.write_all(b"\r\n")?;
    if method == "HEAD" {
        return Ok(());
    }
    let doc = |out: &mut dyn Write, r: serde_json::Result<()>| {
        r.map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    };
    match &reply.body {
        Body::Text(t) => out.write_all(t.as_bytes()),
        Body::Status(s) => {
            let r = serde_json::to_writer_pretty(&mut *out, s.as_ref());
            doc(out, r)
        }
        Body::Templates(t) => {
            let r = serde_json::to_writer_pretty(&mut *out, t.as_ref());
            doc(out, r)
        }
    }
}

fn path_of(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or("");
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

/// POST /grafana: `goflow configure-grafana` asks the daemon to provision Grafana.
pub const GRAFANA_PATH: &str = "/grafana";
/// Largest POST /grafana body (the dashboards are about 100 KiB).
const GRAFANA_BODY_MAX_BYTES: usize = 16 << 20;

/// Serves POST /grafana (on a pool thread, one at a time: provisioning makes several requests
/// to Grafana). Only loopback clients may ask (the answer is made with the backends'
/// passwords, and the request carries a Grafana key).
fn grafana_request(req: &Request, source: &dyn OpsSource, busy: &AtomicBool) -> Reply {
    let loopback = req.peer.is_some_and(|a| match a.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    });
    if !loopback {
        return error(403, "POST /grafana is served to loopback clients only");
    }
    if req.method != "POST" {
        return error(405, "use POST /grafana (goflow configure-grafana)");
    }
    if busy.swap(true, Ordering::AcqRel) {
        return error(
            409,
            "configure-grafana is already running; try again when it ends",
        );
    }
    let reply = match std::str::from_utf8(&req.body) {
        Err(e) => error(400, &format!("cannot read the request: {e}")),
        Ok(body) => grafana_reply(source, body),
    };
    busy.store(false, Ordering::Release);
    reply
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

/// An HTTP reply before it meets the socket.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

/// A reply's body: text, or a document serialised as it is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Text(String),
    Status(Box<Status>),
    Templates(Box<TemplatesReport>),
}

impl Reply {
    /// The body as the client receives it.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        let _ = write_reply(&mut out, "GET", self);
        let s = String::from_utf8_lossy(&out).into_owned();
        s.split_once("\r\n\r\n")
            .map_or_else(String::new, |(_, b)| b.to_owned())
    }
}

const JSON: &str = "application/json";

fn json<T: Serialize>(status: u16, value: &T) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            Reply {
                status,
                content_type: JSON,
                body: Body::Text(body),
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
        body: Body::Text(format!("{body}\n")),
    }
}

/// The `key=value` pairs of a URL's query (no percent-decoding: every value goflow reads is
/// a number or an address).
fn query(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""))
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `offset` and `limit` of a paged document (the default limit when not given).
fn page_params(url: &str, default_limit: u64) -> Result<(u64, u64), Reply> {
    let (mut offset, mut limit) = (0, default_limit);
    for (k, v) in query(url) {
        let n = || {
            v.parse::<u64>()
                .map_err(|_| error(400, &format!("{k}={v:?} is not a non-negative integer")))
        };
        match k {
            "offset" => offset = n()?,
            "limit" => limit = n()?,
            _ => {}
        }
    }
    Ok((offset, limit))
}

/// Routes one request (not /grafana).
pub fn respond(source: &dyn OpsSource, method: &str, url: &str) -> Reply {
    let path = path_of(url);
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
    let doc = |body| Reply {
        status: 200,
        content_type: JSON,
        body,
    };
    match path {
        "/status" => match page_params(url, STATUS_EXPORTERS_DEFAULT) {
            Err(r) => r,
            Ok((offset, limit)) => {
                let mut st = source.status_page(offset, limit);
                if st.msg.is_empty() {
                    st.msg = st.summary_paragraph();
                }
                doc(Body::Status(Box::new(st)))
            }
        },
        "/stats" => json(200, &source.histograms().report(Instant::now())),
        "/metrics" => {
            let status = status_with_msg(source);
            let stats = source.histograms().report(Instant::now());
            Reply {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: Body::Text(metrics::render(&status, &stats)),
            }
        }
        "/templates" => match page_params(url, TEMPLATES_PAGE_DEFAULT) {
            Err(r) => r,
            Ok((offset, limit)) => {
                let mut exporter = None;
                for (k, v) in query(url) {
                    if k == "exporter" {
                        match v.parse::<IpAddr>() {
                            Ok(a) => exporter = Some(a),
                            Err(_) => {
                                return error(400, &format!("exporter={v:?} is not an IP address"));
                            }
                        }
                    }
                }
                let q = TemplatesQuery {
                    offset,
                    limit,
                    exporter,
                };
                doc(Body::Templates(Box::new(source.templates(&q))))
            }
        },
        _ => {
            let health = source.health();
            json(if health.healthy { 200 } else { 503 }, &health)
        }
    }
}

fn status_with_msg(source: &dyn OpsSource) -> Status {
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
    use crate::ops::status::{BackendStatus, ReceiverStatus};

    struct Fixed {
        status: Status,
        hub: HistogramHub,
    }

    impl OpsSource for Fixed {
        fn status(&self) -> Status {
            self.status.clone()
        }
        fn templates(&self, q: &TemplatesQuery) -> TemplatesReport {
            TemplatesReport {
                offset: q.offset,
                limit: q.limit,
                ..TemplatesReport::default()
            }
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
            r.text().contains("\"Msg\": \"goflow 0.1.0 up 0s"),
            "{}",
            r.text()
        );
        assert_eq!(respond(&src, "GET", "/status/?x=1").status, 200);
        assert_eq!(respond(&src, "GET", "/stats").status, 200);
        assert_eq!(respond(&src, "GET", "/templates").status, 200);
        let m = respond(&src, "GET", "/metrics");
        assert_eq!(m.content_type, metrics::CONTENT_TYPE);
        assert!(metrics::parse(&m.text()).is_ok());
        assert_eq!(respond(&src, "GET", "/healthz").status, 200);
        assert_eq!(respond(&fixed(false), "GET", "/healthz").status, 503);
        let nf = respond(&src, "GET", "/nope");
        assert_eq!((nf.status, nf.content_type), (404, JSON));
        assert!(nf.text().contains("\"error\""));
        assert_eq!(respond(&src, "POST", "/status").status, 405);
        // Paging parameters: defaults, given values, and bad ones refused by name.
        let t = respond(&src, "GET", "/templates");
        assert!(t.text().contains("\"limit\": 100"), "{}", t.text());
        let t = respond(&src, "GET", "/templates?offset=7&limit=3&exporter=10.0.0.1");
        assert!(t.text().contains("\"offset\": 7"), "{}", t.text());
        let bad = respond(&src, "GET", "/templates?limit=x");
        assert_eq!(bad.status, 400);
        assert!(bad.text().contains("limit=\\\"x\\\""), "{}", bad.text());
        assert_eq!(respond(&src, "GET", "/templates?exporter=nope").status, 400);
        let st = respond(&src, "GET", "/status?offset=0&limit=5");
        assert!(
            st.text().contains("\"exporters_total\": 0"),
            "{}",
            st.text()
        );
        assert_eq!(respond(&src, "GET", "/status?offset=-1").status, 400);
    }

    #[test]
    fn parses_requests() {
        let done = |raw: &[u8]| match parse(raw, None) {
            Parsed::Done(r) => Some((r.method, r.url, r.body)),
            _ => None,
        };
        assert_eq!(
            done(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET".into(), "/healthz".into(), Vec::new()))
        );
        assert!(matches!(
            parse(b"GET /healthz HTTP/1.1\r\nHost", None),
            Parsed::More
        ));
        let post = b"POST /grafana HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        assert!(matches!(parse(post, None), Parsed::More));
        let post = b"POST /grafana HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcde";
        assert_eq!(done(post).map(|r| r.2), Some(b"abcde".to_vec()));
        let bad = |raw: &[u8]| match parse(raw, None) {
            Parsed::Bad(r) => r.status,
            _ => 0,
        };
        assert_eq!(bad(b"hello\r\n\r\n"), 400);
        assert_eq!(bad(b"GET x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(&vec![b'a'; HEAD_MAX_BYTES + 1]), 431);
        assert_eq!(
            bad(b"POST /grafana HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
    }

    /// Many idle connections hold no thread and do not delay /healthz or /status; a
    /// request that never completes is closed with 408.
    #[test]
    fn idle_connections_do_not_block_answers() -> anyhow::Result<()> {
        use std::io::{Read as _, Write as _};
        let srv = serve("127.0.0.1:0", Arc::new(fixed(true)))?;
        let addr = srv.local_addr();
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 50 {
            let mut s = TcpStream::connect(addr)?;
            // Half send part of a request head, half nothing at all.
            if idle.len() % 2 == 0 {
                s.write_all(b"GET /status HTTP/1.1\r\n")?;
            }
            idle.push(s);
        }
        for _ in 0..20 {
            let (code, body) = crate::ops::client::get(&addr.to_string(), "/healthz")?;
            assert_eq!(code, 200, "{body}");
            let (code, body) = crate::ops::client::get(&addr.to_string(), "/status")?;
            assert_eq!(code, 200, "{body}");
        }
        // The oldest idle connections were closed to make room (503), and one that is still
        // open is answered 408 once REQUEST_TIMEOUT has passed.
        let mut first = idle.remove(0);
        first.set_read_timeout(Some(REQUEST_TIMEOUT * 3))?;
        let mut got = String::new();
        first.read_to_string(&mut got)?;
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        let mut last = idle.pop().ok_or_else(|| anyhow!("no connection"))?;
        last.set_read_timeout(Some(REQUEST_TIMEOUT * 3))?;
        let mut got = String::new();
        last.read_to_string(&mut got)?;
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        srv.stop();
        Ok(())
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
