//! `SQL_SSLMODE` against the real PostgreSQL (address from PGHOST/PGPORT/PGUSER/PGDATABASE,
//! default 127.0.0.1:5432 user postgres db test; the server has `ssl = on`), a fresh table per
//! test. Whether the sink's session is encrypted is read on the server (`pg_stat_ssl` of the
//! backend that runs the sink's COPY) and compared with the sink's own `tls` status.
//!
//! `verify-full` uses the server's own certificate file (`SHOW ssl_cert_file`, Debian's
//! self-signed snakeoil certificate for `localhost`) as the root, so those tests need the server
//! on this machine. A small proxy in front of the server stands in for a server without TLS
//! (it answers the TLS request with `N`) and for one whose TLS is broken (`S`, then junk).

mod pg_common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use goflow_writers::pg::{PgConfig, PgSink, SslMode};
use goflow_writers::sink::Sink;
use pg_common::*;

/// A CA that signed nothing the server has (P-256, CA:TRUE, made with openssl for this test).
const UNRELATED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUP66rSVxPkTYZCIJRd6eloBVlaHMwCgYIKoZIzj0EAwIw
LDEqMCgGA1UEAwwhZ29mbG93IHRlc3QgQ0EgKG5vdCB0aGUgc2VydmVyJ3MpMCAX
DTI2MTEyNzA3NTA0NloYDzIxMjYxMTAzMDc1MDQ2WjAsMSowKAYDVQQDDCFnb2Zs
b3cgdGVzdCBDQSAobm90IHRoZSBzZXJ2ZXIncykwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARvpipEn2hrQmRgdwVFhoB5BhsspiSIZ1PtmYSm7WSdXS5aF+RGyD97
og0oSlXMyJvO4xZnoPrsl21DWXbqwVLeo1MwUTAdBgNVHQ4EFgQUnAcODBhR3rHG
dxcmvRMDUkskWxkwHwYDVR0jBBgwFoAUnAcODBhR3rHGdxcmvRMDUkskWxkwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAmZqzQB8PTqyDfTmvDilY
Pk+JTW5Iftr5kvOtobVMc5MCIFuUMQjWuhskLLAnHC8R52uG58jESmLId+3qhLqc
J5uY
-----END CERTIFICATE-----
";

fn status_of(sink: &mut PgSink, key: &str) -> Option<String> {
    sink.status()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// What the server says about the TLS of the sink's session: `(ssl, version)` from
/// `pg_stat_ssl` of the one backend (not `db`'s own) whose current statement is a COPY into
/// `db.table`. Opens that COPY with one write, reads, then finishes the flush and checks the
/// rows arrived.
fn server_view(db: &Db, sink: &mut PgSink) -> (bool, Option<String>) {
    let (chunks, (rows, _, _)) = v5_chunks(1, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
    sink.write(&chunks[0]).expect("write (opens the COPY)");
    let seen = db.query(&format!(
        "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.pid <> pg_backend_pid() AND a.query LIKE 'COPY %' \
         AND position('{}' in a.query) > 0",
        db.table
    ));
    assert_eq!(seen.len(), 1, "one backend runs the sink's COPY");
    let view = (seen[0].get(0), seen[0].get(1));
    sink.flush().expect("flush");
    assert_eq!(db.count(), rows as i64);
    view
}

fn sink_with(table: &str, sslmode: SslMode) -> PgSink {
    let mut cfg: PgConfig = pg_config(table, None);
    cfg.sslmode = sslmode;
    PgSink::new(cfg)
}

#[test]
fn require_is_encrypted() {
    let table = random_table("tls_req");
    let db = Db::connect(&table);
    let mut sink = sink_with(&table, SslMode::Require);
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("null"));
    let (ssl, version) = server_view(&db, &mut sink);
    assert!(ssl, "the server sees a TLS session");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("true"));
    assert_eq!(
        status_of(&mut sink, "sslmode").as_deref(),
        Some("\"require\"")
    );
}

/// `prefer` against a server that offers TLS ends up encrypted (it used to mean plain TCP).
#[test]
fn prefer_is_encrypted_when_the_server_offers_tls() {
    let table = random_table("tls_pref");
    let db = Db::connect(&table);
    let mut sink = sink_with(&table, SslMode::Prefer);
    let (ssl, _) = server_view(&db, &mut sink);
    assert!(ssl, "the server sees a TLS session");
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("true"));
}

#[test]
fn disable_is_plaintext() {
    let table = random_table("tls_off");
    let db = Db::connect(&table);
    let mut sink = sink_with(&table, SslMode::Disable);
    let (ssl, _) = server_view(&db, &mut sink);
    assert!(!ssl, "the server sees a plain session");
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("false"));
}

/// The retention thread opens its own session with the same mode.
#[test]
fn retention_connects_with_require() {
    let table = random_table("tls_ret");
    let _db = Db::connect(&table);
    let mut cfg = pg_config(&table, None);
    cfg.sslmode = SslMode::Require;
    cfg.max_age_days = Some(3);
    let mut sink = PgSink::new(cfg);
    sink.connect().expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.retention_runs() == 0 {
        assert!(Instant::now() < deadline, "retention did not run");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status_of(&mut sink, "retention_last_error").as_deref(),
        Some("null")
    );
}

/// The server's certificate file as the server names it.
fn server_cert_file(db: &Db) -> PathBuf {
    let path: String = db.query("SHOW ssl_cert_file")[0].get(0);
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "the server's certificate {} must be readable here (the server runs on this machine)",
        path.display()
    );
    path
}

/// verify-full with the server's own (self-signed) certificate as the root and the name it was
/// made for: chain and name check out, the session is encrypted.
#[test]
fn verify_full_accepts_the_servers_certificate() {
    let table = random_table("tls_vf");
    let db = Db::connect(&table);
    let mut cfg = pg_config(&table, None);
    cfg.host = "localhost".into();
    cfg.sslmode = SslMode::VerifyFull {
        root_cert: server_cert_file(&db),
    };
    let mut sink = PgSink::new(cfg);
    let (ssl, _) = server_view(&db, &mut sink);
    assert!(ssl);
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("true"));
    assert_eq!(
        status_of(&mut sink, "sslmode").as_deref(),
        Some("\"verify-full\"")
    );
}

/// The right root, but the certificate is for `localhost`, not `127.0.0.1`: fatal, and the
/// message says why.
#[test]
fn verify_full_rejects_another_host_name() {
    let table = random_table("tls_vf_name");
    let db = Db::connect(&table);
    let mut cfg = pg_config(&table, None);
    cfg.host = "127.0.0.1".into();
    cfg.sslmode = SslMode::VerifyFull {
        root_cert: server_cert_file(&db),
    };
    let err = PgSink::new(cfg).connect().expect_err("name mismatch");
    assert!(!err.is_retriable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("127.0.0.1"),
        "{msg}"
    );
}

/// A root that signed nothing the server shows: fatal (a retry cannot help).
#[test]
fn verify_full_rejects_an_unknown_issuer() {
    let table = random_table("tls_vf_ca");
    let _db = Db::connect(&table);
    let dir = TempDir::new("ca");
    let ca = dir.0.join("other-ca.pem");
    std::fs::write(&ca, UNRELATED_CA_PEM).expect("write the CA file");
    let mut cfg = pg_config(&table, None);
    cfg.host = "localhost".into();
    cfg.sslmode = SslMode::VerifyFull { root_cert: ca };
    let err = PgSink::new(cfg).connect().expect_err("unknown issuer");
    assert!(!err.is_retriable(), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

/// A missing or empty root file is a fatal error that names the key and the path; nothing is
/// connected.
#[test]
fn verify_full_without_a_usable_root_file_is_fatal_and_named() {
    let dir = TempDir::new("noca");
    let missing = dir.0.join("missing.pem");
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").expect("write");
    for path in [missing, empty] {
        let mut cfg = pg_config(&random_table("tls_noca"), None);
        cfg.port = 1; // nothing listens there: the error must come before any connect
        cfg.sslmode = SslMode::VerifyFull {
            root_cert: path.clone(),
        };
        let err = PgSink::new(cfg).connect().expect_err("no root");
        assert!(!err.is_retriable(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("SQL_SSLROOTCERT") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }
}

/// Against a stand-in that offers no working TLS: `prefer` writes in the clear, `require` is a
/// fatal error whose message contains `why`.
fn prefer_falls_back_require_fails(mode: StandIn, name: &str, why: &str) {
    let proxy = TlsStandIn::start(mode);
    let table = random_table(name);
    let db = Db::connect(&table);
    let mut cfg = pg_config(&table, Some(proxy.port));
    cfg.sslmode = SslMode::Prefer;
    let mut sink = PgSink::new(cfg.clone());
    let (ssl, _) = server_view(&db, &mut sink);
    assert!(!ssl);
    assert_eq!(status_of(&mut sink, "tls").as_deref(), Some("false"));

    cfg.sslmode = SslMode::Require;
    let err = PgSink::new(cfg).connect().expect_err("require without TLS");
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains(why), "{err}");
}

/// A server without TLS (the proxy answers `N`).
#[test]
fn server_without_tls_prefer_falls_back_require_fails() {
    prefer_falls_back_require_fails(StandIn::NoTls, "tls_nossl", "does not support TLS");
}

/// A server whose TLS handshake fails (the proxy answers `S`, then junk): `prefer` connects
/// again without TLS, as libpq does.
#[test]
fn broken_tls_prefer_retries_plain_require_fails() {
    prefer_falls_back_require_fails(StandIn::BrokenTls, "tls_broken", "TLS handshake");
}

/// A connection lost in the middle of the handshake is worth retrying under `require` (unlike
/// a certificate or protocol failure); `prefer` connects again without TLS.
#[test]
fn lost_connection_during_the_handshake_is_retriable() {
    let proxy = TlsStandIn::start(StandIn::HangUp);
    let table = random_table("tls_hangup");
    let db = Db::connect(&table);
    let mut cfg = pg_config(&table, Some(proxy.port));
    cfg.sslmode = SslMode::Require;
    let err = PgSink::new(cfg.clone()).connect().expect_err("hang-up");
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");

    cfg.sslmode = SslMode::Prefer;
    let mut sink = PgSink::new(cfg);
    let (ssl, _) = server_view(&db, &mut sink);
    assert!(!ssl);
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(random_table(what));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the proxy answers a TLS request.
#[derive(Clone, Copy)]
enum StandIn {
    /// `N`: this server has no TLS; the client goes on in the clear on the same connection.
    NoTls,
    /// `S`, then bytes that are not TLS, then close.
    BrokenTls,
    /// `S`, then close: the connection is lost during the handshake.
    HangUp,
}

/// The 8-byte SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A proxy to the test server that answers TLS requests itself and forwards everything else.
struct TlsStandIn {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl TlsStandIn {
    fn start(how: StandIn) -> TlsStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(client) = client {
                    thread::spawn(move || {
                        let _ = serve(client, how);
                    });
                }
            }
        });
        TlsStandIn { port, stop }
    }
}

impl Drop for TlsStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, how: StandIn) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut first = [0u8; 8];
    client.read_exact(&mut first)?;
    let is_tls_request = first == SSL_REQUEST;
    if is_tls_request {
        match how {
            StandIn::NoTls => client.write_all(b"N")?,
            StandIn::BrokenTls => {
                client.write_all(b"Sthis is not a TLS server hello\n")?;
                return client.shutdown(Shutdown::Both);
            }
            StandIn::HangUp => {
                client.write_all(b"S")?;
                return client.shutdown(Shutdown::Both);
            }
        }
    }
    let mut server = TcpStream::connect((pg_host(), pg_port()))?;
    if !is_tls_request {
        server.write_all(&first)?;
    }
    client.set_read_timeout(None)?;
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}
