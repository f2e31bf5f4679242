//! The PostgreSQL / TimescaleDB backend: binary COPY rows encoded straight from record views
//! ([`encode`], pure), shipped by a tokio-postgres session on the backend's own thread
//! ([`sink`]), over plain TCP or TLS (`tls`, rustls), into a table whose DDL, hypertable/BRIN
//! index and retention come from [`ddl`]. Queueing, flush policy and retry backoff belong to the
//! generic backend thread (`backend.rs`); this module only encodes, ships and classifies errors.

use std::fmt;
use std::path::PathBuf;

pub mod ddl;
pub mod encode;
pub mod sink;
mod tls;

pub use encode::{PgRowEncoder, encoder, encoder_for};
pub use sink::PgSink;

/// TLS use towards the server (`SQL_SSLMODE`), with libpq's meanings. Over a Unix socket every
/// mode means plain (PostgreSQL has no TLS there; libpq ignores sslmode too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (and the handshake succeeds), else plain TCP. The
    /// certificate is not checked.
    #[default]
    Prefer,
    /// TLS or no connection. The certificate is not checked (libpq's `require` without a root
    /// certificate): it stops a passive listener, not a machine in the middle.
    Require,
    /// TLS with the server's certificate chain checked up to a CA in `root_cert` (PEM) and the
    /// host name checked against its subjectAltName (`SQL_SSLROOTCERT`).
    VerifyFull { root_cert: PathBuf },
}

impl SslMode {
    /// The config-file spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull { .. } => "verify-full",
        }
    }
}

/// Where and how the sink connects. `password` is never logged, shown on status, or printed by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// Host name, address, or a Unix-socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Table name, optionally `schema.table`.
    pub table: String,
    pub sslmode: SslMode,
    /// Prune rows whose `last_switched` is older than this many days (at start, then daily);
    /// `None` or 0 keeps everything.
    pub max_age_days: Option<u32>,
    /// TimescaleDB: compress chunks wholly older than this many days (segment by exporter,
    /// order by time); `None` or 0 leaves chunks uncompressed. Ignored, with a warning, on a
    /// plain PostgreSQL table.
    pub compress_after_days: Option<u32>,
    /// The columns stored (`columns:`; the table gets only these, COPY names them).
    pub columns: crate::schema::ColumnSet,
    /// Whether the table becomes a TimescaleDB hypertable (`hypertable: auto | on | off`).
    pub hypertable: ddl::Hypertable,
    /// A btree index on (exporter, time) for per-router queries (`exporter_index`).
    pub exporter_index: bool,
    /// Keys per hour and dimension in the hourly top-K rollup `<table>_1h_top` (`top_keys`);
    /// 0: no top-K rollup.
    pub top_keys: u32,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            table: "goflow_records".into(),
            sslmode: SslMode::default(),
            max_age_days: None,
            compress_after_days: None,
            columns: crate::schema::ColumnSet::ALL,
            hypertable: ddl::Hypertable::Auto,
            exporter_index: true,
            top_keys: ddl::TOP_KEYS_DEFAULT,
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("table", &self.table)
            .field("sslmode", &self.sslmode)
            .field("max_age_days", &self.max_age_days)
            .field("compress_after_days", &self.compress_after_days)
            .field("hypertable", &self.hypertable)
            .field("exporter_index", &self.exporter_index)
            .field("top_keys", &self.top_keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = PgConfig {
            password: Some("hunter2".into()),
            ..PgConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
