//! The client side of the ops API for `goflow status` and `goflow stats`: one HTTP/1.0 GET over
//! a `TcpStream` with connect, read and write timeouts (no HTTP client dependency for three
//! localhost requests), and where the address comes from (`--api`, else the config's `api:`,
//! else [`DEFAULT_API`]).

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// The ops API address when neither `--api` nor the config names one.
pub const DEFAULT_API: &str = "127.0.0.1:8880";
/// Connect, read and write timeout of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses larger than this are cut off (a daemon with thousands of exporters stays far below).
const RESPONSE_MAX_BYTES: u64 = 64 << 20;

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing answered at the address (refused, unresolvable, timed out).
    Unreachable(std::io::Error),
    /// Something answered, but not with HTTP.
    BadResponse(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable(e) => write!(f, "unreachable: {e}"),
            ClientError::BadResponse(m) => write!(f, "bad response: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The message printed when the daemon does not answer.
pub fn unreachable_message(addr: &str) -> String {
    format!("goflow daemon not reachable at {addr} (is it running? see `api:` in the config)")
}

/// GET `path` from the ops API at `addr`: (status code, body).
pub fn get(addr: &str, path: &str) -> Result<(u16, String), ClientError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(ClientError::Unreachable)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, REQUEST_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(ClientError::Unreachable(last))?;
    let io = |e: std::io::Error| ClientError::Unreachable(e);
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io)?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: goflow/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(RESPONSE_MAX_BYTES)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_response(&raw)
}

/// Splits an HTTP/1.x response into status code and body.
fn parse_response(raw: &[u8]) -> Result<(u16, String), ClientError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse("no end of headers".into()))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let proto = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if proto.starts_with("HTTP/1.") => Ok((code, body.to_owned())),
        _ => Err(ClientError::BadResponse(format!(
            "status line {status_line:?}"
        ))),
    }
}

/// The ops API address: `--api`, else `api:` of the configuration [`crate::config::load`] finds
/// (`--config`/`$GOFLOW_CONFIG`, else `./config.yml`, else the built-in defaults). A config
/// that does not fully load (a client does not need its backends to be valid) still gives its
/// `api:` key when that one is readable.
pub fn resolve_api(api: Option<&str>, config: Option<&Path>) -> anyhow::Result<String> {
    if let Some(a) = api {
        return normalize_api(a);
    }
    match crate::config::load(config) {
        Ok(cfg) => match cfg.api {
            Some(addr) => Ok(addr.to_string()),
            None => anyhow::bail!(
                "the ops API is turned off in {} (api: off); pass --api ADDR",
                cfg.source_name()
            ),
        },
        Err(e) => {
            let path = config.unwrap_or(Path::new(crate::config::DEFAULT_CONFIG_PATH));
            let text = std::fs::read_to_string(path).map_err(|_| anyhow::Error::new(e))?;
            match api_from_yaml(&text) {
                Some(a) if a.eq_ignore_ascii_case("off") => anyhow::bail!(
                    "the ops API is turned off in {} (api: off); pass --api ADDR",
                    path.display()
                ),
                Some(a) => Ok(a),
                None => Ok(DEFAULT_API.to_owned()),
            }
        }
    }
}

/// `--api` as the daemon prints it or as typed: a URL (`http://127.0.0.1:18880/`), a
/// `host:port` or a bare port (on 127.0.0.1); returns `host:port`.
pub fn normalize_api(a: &str) -> anyhow::Result<String> {
    let t = a.trim();
    let t = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("HTTP://"))
        .unwrap_or(t);
    if t.starts_with("https://") {
        anyhow::bail!(
            "--api {a}: the ops API speaks plain HTTP; use http://HOST:PORT or HOST:PORT"
        );
    }
    // Drop a path (`/`, `/status`).
    let t = t.split('/').next().unwrap_or_default();
    if t.is_empty() {
        anyhow::bail!("--api {a}: expected a URL, HOST:PORT or a port");
    }
    if let Ok(port) = t.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    let has_port = match t.rsplit_once(':') {
        // `[::1]:8880` or `host:8880`; a bare IPv6 address has more colons and no brackets.
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (host.starts_with('[') || !host.contains(':'))
        }
        None => false,
    };
    if !has_port {
        anyhow::bail!("--api {a}: no port (expected a URL, HOST:PORT or a port)");
    }
    Ok(t.to_owned())
}

/// `api:` from a config file's text, if it has one. Only that key is read: the client does not
/// need the rest of the configuration to be valid.
pub fn api_from_yaml(text: &str) -> Option<String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).ok()?;
    match doc.get("api")? {
        serde_norway::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_forms() {
        for (given, want) in [
            ("http://127.0.0.1:18880/", "127.0.0.1:18880"),
            ("http://127.0.0.1:18880/status", "127.0.0.1:18880"),
            ("127.0.0.1:18880", "127.0.0.1:18880"),
            ("18880", "127.0.0.1:18880"),
            ("localhost:8880", "localhost:8880"),
            ("http://[::1]:8880/", "[::1]:8880"),
        ] {
            assert_eq!(normalize_api(given).ok().as_deref(), Some(want), "{given}");
        }
        for bad in [
            "",
            "http://",
            "127.0.0.1",
            "https://127.0.0.1:8880",
            "host:port",
        ] {
            assert!(normalize_api(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(r.ok(), Some((404, "{}".to_owned())));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn api_key_from_config() {
        let yaml = "backends:\n  x: {type: null}\napi: 127.0.0.1:9999\nutilities: {max_age: 1}\n";
        assert_eq!(api_from_yaml(yaml).as_deref(), Some("127.0.0.1:9999"));
        assert_eq!(api_from_yaml("backends: {}\n"), None);
        assert_eq!(api_from_yaml(": : :"), None);
        assert_eq!(
            resolve_api(Some("[::1]:1"), None).ok().as_deref(),
            Some("[::1]:1")
        );
    }

    #[test]
    fn unreachable_is_reported_as_such() {
        // Port 1 on loopback: nothing listens there in a test environment.
        match get("127.0.0.1:1", "/status") {
            Err(ClientError::Unreachable(_)) => {}
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert_eq!(
            unreachable_message("127.0.0.1:1"),
            "goflow daemon not reachable at 127.0.0.1:1 (is it running? see `api:` in the config)"
        );
    }
}
