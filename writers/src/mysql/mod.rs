//! The MySQL / MariaDB backend: `LOAD DATA LOCAL INFILE` text rows encoded straight from record
//! views ([`encode`], pure), streamed from memory by a mysql_async session on the backend's own
//! thread ([`sink`]), over TCP (plain or TLS with rustls) or a Unix socket, into a table whose
//! DDL, index, partitions and retention come from [`ddl`]. Queueing, flush policy and retry
//! backoff belong to the generic backend thread (`backend.rs`); this module only encodes, ships
//! and classifies errors.

use std::fmt;
use std::path::PathBuf;

pub mod ddl;
pub mod encode;
pub mod order;
pub mod sink;

pub use crate::pg::SslMode;
pub use encode::{MysqlRowEncoder, encoder, encoder_for};
pub use sink::MysqlSink;

/// Where and how the sink connects. `password` is never logged, shown on status, or printed by
/// `Debug`. `sslmode` has the PostgreSQL backend's meanings (`SQL_SSLMODE`); over a Unix socket
/// every mode means plain (the socket is local; MySQL clients skip TLS there too).
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlConfig {
    /// Host name or address (`SQL_SERVER`).
    pub host: String,
    pub port: u16,
    /// A Unix socket path (`SQL_SOCKET`); when set it is used instead of TCP.
    pub socket: Option<PathBuf>,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Table name (`SQL_TABLE`).
    pub table: String,
    pub sslmode: SslMode,
    /// Prune rows whose `last_switched` is older than this many days (at start, then daily);
    /// `None` or 0 keeps everything. A table goflow creates while this is set gets daily
    /// partitions (see [`ddl`]).
    pub max_age_days: Option<u32>,
    /// The columns stored (`columns:`; the table gets only these).
    pub columns: crate::schema::ColumnSet,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            host: "127.0.0.1".into(),
            port: 3306,
            socket: None,
            user: "root".into(),
            password: None,
            dbname: "test".into(),
            table: "goflow_records".into(),
            sslmode: SslMode::Disable,
            max_age_days: None,
            columns: crate::schema::ColumnSet::ALL,
        }
    }
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("table", &self.table)
            .field("sslmode", &self.sslmode)
            .field("max_age_days", &self.max_age_days)
            .finish()
    }
}

impl MysqlConfig {
    /// `user@host:port/db` or `user@unix:path/db` (never the password), for logs and status.
    pub fn server(&self) -> String {
        match &self.socket {
            Some(path) => format!("{}@unix:{}/{}", self.user, path.display(), self.dbname),
            None => format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = MysqlConfig {
            password: Some("hunter2".into()),
            ..MysqlConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(cfg.server(), "root@127.0.0.1:3306/test");
        let sock = MysqlConfig {
            socket: Some("/run/mysqld/mysqld.sock".into()),
            ..cfg
        };
        assert_eq!(sock.server(), "root@unix:/run/mysqld/mysqld.sock/test");
    }
}
