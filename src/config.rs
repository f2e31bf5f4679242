//! The daemon's configuration: a YAML file in the old Go collector's structure (`backends`,
//! `frontends.netflow` and/or `frontends.kafka`, `api`, `utilities`), read in two stages. The raw structs below mirror the
//! file exactly (unknown keys are errors, every key has a doc comment); [`resolve`] turns them
//! into a [`RunConfig`] with defaults applied, values range-checked, environment overrides
//! (`SQL_PASSWORD`, the Kafka variables) applied and every backend name checked.
//!
//! Every error is a [`ConfigError`] naming the file, the key and the line (exit code 2). Backend
//! types that parse but are not built (`kafka`, or `mysql` without the `mysql` feature) are
//! *not* config errors: they fail when the daemon starts them, with "backend type X is not
//! available in this build".
//!
//! Search order ([`load`]): `--config`, else `$GOFLOW_CONFIG` (both arrive as `Cli::config`),
//! else `./config.yml`, else built-in defaults (listen 0.0.0.0:2055, JSON lines to
//! ./flows.jsonl, ops API on 127.0.0.1:8880).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use crate::ingest::{ReceiverChoice, ReceiverConfig};

/// The file read when neither `--config` nor `$GOFLOW_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config.yml";
/// Listen address without a config file (the NetFlow port).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 2055);
/// JSON-lines file written without a config file.
pub const DEFAULT_FILE_PATH: &str = "flows.jsonl";
/// Ops API address without a config file or `api` key.
pub const DEFAULT_API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8880);
/// Backend queue bound (encoded bytes waiting for the backend's thread) of database and Kafka
/// backends: room to ride out a server restart.
pub const DEFAULT_QUEUE_BYTES: u64 = 256 << 20;
/// Default bound of a backend's disk spool (`spool_bytes`): at 100 bytes per PostgreSQL row,
/// about 10 M rows (minutes of a large outage at 50 k flows/s).
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
/// Queue bound of the file, dump and null backends: they write straight through, so a queue
/// only builds up while the disk stalls or is slower than the input, and a smaller bound keeps
/// the process small (what cannot be queued is counted as dropped). Measured: 16 MiB keeps peak
/// RSS near 50 MiB even when the input outruns the disk; at 2.4 M flows/s (1.2 GB/s of JSON) a
/// 25-40 ms ext4 stall overflows it now and then, which 32 MiB rides out at up to 74 MiB peak.
pub const DEFAULT_FILE_QUEUE_BYTES: u64 = 16 << 20;
/// Rows per flush for database and Kafka backends.
pub const DEFAULT_SQL_FLUSH_ROWS: u64 = 100_000;
/// Rows per flush for the file and dump backends (kept small: the backend holds a flush's rows
/// in memory until the flush succeeds).
pub const DEFAULT_FILE_FLUSH_ROWS: u64 = 10_000;
/// Longest a row waits before its flush.
pub const DEFAULT_FLUSH_MS: u64 = 1000;
/// PostgreSQL port.
pub const DEFAULT_PG_PORT: u16 = 5432;
/// MySQL/MariaDB port.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// The flow table.
pub const DEFAULT_SQL_TABLE: &str = "goflow_records";
/// Parallel COPY connections of a PostgreSQL/TimescaleDB backend: two concurrent COPY streams
/// into one table store ~1.5x the rows/s of one on a 2-core server, and one connection idles
/// while each COPY commits.
pub const DEFAULT_PG_CONNECTIONS: u64 = 2;
/// Parallel LOAD DATA connections of a MySQL/MariaDB backend.
pub const DEFAULT_MYSQL_CONNECTIONS: u64 = 2;
/// Most COPY connections per PostgreSQL/TimescaleDB backend (and LOAD DATA connections per
/// MySQL/MariaDB backend).
pub const PG_CONNECTIONS_MAX: u64 = 16;
/// Most worker threads accepted.
pub const WORKERS_MAX: u64 = 256;
/// `state_dir` when neither the file nor systemd names one: relative to the working directory,
/// like the default JSON-lines file, so goflow runs anywhere without a config file.
pub const DEFAULT_STATE_DIR: &str = "goflow-state";
/// The environment variable systemd sets for `StateDirectory=` (the first of its
/// colon-separated paths is taken): the default `state_dir` under a unit.
pub const STATE_DIRECTORY_ENV: &str = "STATE_DIRECTORY";

/// A configuration error: names the key, the file and the line. Exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Stage 1: the file as written.
// ---------------------------------------------------------------------------------------------

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Named backends (where records go). Each frontend names one or more of them; the others
    /// are ignored with a warning.
    backends: BTreeMap<String, RawBackend>,
    /// Where records come from: `netflow` (NetFlow v5/v9 and IPFIX over UDP), `kafka` (a Kafka
    /// consumer), or both.
    frontends: RawFrontends,
    /// Ops API address (`host:port`), or `off`. Default 127.0.0.1:8880.
    #[serde(default)]
    api: Option<String>,
    /// Directory for what must survive a restart: the backends' disk spools, templates and
    /// sampling state. Created at start; one goflow instance per directory (a lock file).
    /// Default: `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `./goflow-state`.
    #[serde(default)]
    state_dir: Option<String>,
    /// Housekeeping.
    #[serde(default)]
    utilities: Option<RawUtilities>,
    /// Sampling rates for exporters that announce none: `{"192.0.2.1": 1000, default: 1}`.
    /// Keys are exporter addresses or `default`; a record takes the configured rate only when
    /// its exporter said nothing (v5 header 0, no options data), with `sampling_source`
    /// `config`.
    #[serde(default)]
    sampling: Option<BTreeMap<String, Num>>,
    /// Log level of the daemon: error, warn, info (default), debug or trace. `-v` and
    /// `RUST_LOG` win over it. Reloaded on SIGHUP.
    #[serde(default)]
    log_level: Option<String>,
}

/// One backend: `type` picks the kind, `config` holds that kind's keys (may be empty or absent).
#[derive(Debug)]
enum RawBackend {
    /// JSON lines appended to a file.
    File(Option<RawFileBackend>),
    /// JSON lines on standard output.
    Dump(Option<RawStreamBackend>),
    /// Count and discard (records are decoded but not encoded): measures the engine alone.
    Null(Option<RawStreamBackend>),
    /// TimescaleDB (PostgreSQL with a hypertable), binary COPY.
    Timescale(Option<RawSqlBackend>),
    /// Plain PostgreSQL, binary COPY.
    Postgres(Option<RawSqlBackend>),
    /// MySQL / MariaDB (not in this build).
    Mysql(Option<RawSqlBackend>),
    /// Apache Kafka (cargo feature `kafka`, on by default).
    Kafka(Option<RawKafkaBackend>),
}

/// The backend `type` names. `type: null` (a YAML null, not the string) also means `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendType {
    File,
    Dump,
    Null,
    Timescale,
    Postgres,
    Mysql,
    Kafka,
}

const BACKEND_TYPES: &[&str] = &[
    "file",
    "dump",
    "null",
    "timescale",
    "postgres",
    "mysql",
    "kafka",
];

impl<'de> Deserialize<'de> for BackendType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BackendType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a backend type ({})", BACKEND_TYPES.join(", "))
            }
            fn visit_unit<E: de::Error>(self) -> Result<BackendType, E> {
                Ok(BackendType::Null)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendType, E> {
                Ok(match v.trim().to_ascii_lowercase().as_str() {
                    "file" => BackendType::File,
                    "dump" => BackendType::Dump,
                    "null" => BackendType::Null,
                    "timescale" | "timescaledb" => BackendType::Timescale,
                    "postgres" | "postgresql" => BackendType::Postgres,
                    "mysql" | "mariadb" => BackendType::Mysql,
                    "kafka" => BackendType::Kafka,
                    _ => return Err(E::unknown_variant(v, BACKEND_TYPES)),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl BackendType {
    /// Reads this type's `config` value in place (errors keep their line).
    fn read_config<'de, A: de::MapAccess<'de>>(self, map: &mut A) -> Result<RawBackend, A::Error> {
        Ok(match self {
            BackendType::File => RawBackend::File(map.next_value()?),
            BackendType::Dump => RawBackend::Dump(map.next_value()?),
            BackendType::Null => RawBackend::Null(map.next_value()?),
            BackendType::Timescale => RawBackend::Timescale(map.next_value()?),
            BackendType::Postgres => RawBackend::Postgres(map.next_value()?),
            BackendType::Mysql => RawBackend::Mysql(map.next_value()?),
            BackendType::Kafka => RawBackend::Kafka(map.next_value()?),
        })
    }

    /// Converts a `config` value read before `type` was known (no line numbers then).
    fn read_value(self, v: serde_norway::Value) -> Result<RawBackend, serde_norway::Error> {
        use serde_norway::from_value as fv;
        Ok(match self {
            BackendType::File => RawBackend::File(fv(v)?),
            BackendType::Dump => RawBackend::Dump(fv(v)?),
            BackendType::Null => RawBackend::Null(fv(v)?),
            BackendType::Timescale => RawBackend::Timescale(fv(v)?),
            BackendType::Postgres => RawBackend::Postgres(fv(v)?),
            BackendType::Mysql => RawBackend::Mysql(fv(v)?),
            BackendType::Kafka => RawBackend::Kafka(fv(v)?),
        })
    }

    fn without_config(self) -> RawBackend {
        match self {
            BackendType::File => RawBackend::File(None),
            BackendType::Dump => RawBackend::Dump(None),
            BackendType::Null => RawBackend::Null(None),
            BackendType::Timescale => RawBackend::Timescale(None),
            BackendType::Postgres => RawBackend::Postgres(None),
            BackendType::Mysql => RawBackend::Mysql(None),
            BackendType::Kafka => RawBackend::Kafka(None),
        }
    }
}

/// The keys of a backend entry.
#[derive(Debug, Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum BackendKey {
    /// The backend type: file, dump, null, timescale, postgres, mysql or kafka.
    Type,
    /// The type's settings (see the structs below).
    Config,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend: {type: ..., config: {...}}")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawBackend, A::Error> {
                let mut ty: Option<BackendType> = None;
                let mut read: Option<RawBackend> = None;
                let mut early: Option<serde_norway::Value> = None;
                while let Some(key) = map.next_key::<BackendKey>()? {
                    match key {
                        BackendKey::Type if ty.is_some() => {
                            return Err(de::Error::duplicate_field("type"));
                        }
                        BackendKey::Type => ty = Some(map.next_value()?),
                        BackendKey::Config if read.is_some() || early.is_some() => {
                            return Err(de::Error::duplicate_field("config"));
                        }
                        BackendKey::Config => match ty {
                            Some(t) => read = Some(t.read_config(&mut map)?),
                            None => early = Some(map.next_value()?),
                        },
                    }
                }
                let ty = ty.ok_or_else(|| de::Error::missing_field("type"))?;
                match (read, early) {
                    (Some(b), _) => Ok(b),
                    (None, Some(v)) => ty.read_value(v).map_err(de::Error::custom),
                    (None, None) => Ok(ty.without_config()),
                }
            }
        }
        d.deserialize_map(V)
    }
}

/// `type: file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileBackend {
    /// File to append JSON lines to; `-` writes to standard output. Required.
    path: Option<String>,
    /// Flush after this many rows (default 10000).
    flush_rows: Option<Num>,
    /// Flush rows older than this many milliseconds (default 1000).
    flush_ms: Option<Num>,
    /// Bound of the queue in front of the writer, bytes (default 16 MiB).
    queue_bytes: Option<Num>,
    /// Bound of the disk spool under state_dir for rows the backend cannot take, bytes
    /// (default 1 GiB; 0 = no spool: such rows are dropped and counted).
    spool_bytes: Option<Num>,
    /// Leave written lines in the page cache (default false: dropped 32 MiB behind the end).
    keep_page_cache: Option<Flag>,
    /// The columns to store: a list of schema column names, or `all` (the default) or
    /// `legacy` (the old collector's eight), alone or in the list. Stored in schema order.
    columns: Option<OneOrMany>,
}

/// `type: dump` and `type: null`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamBackend {
    /// Flush after this many rows (default 10000).
    flush_rows: Option<Num>,
    /// Flush rows older than this many milliseconds (default 1000).
    flush_ms: Option<Num>,
    /// Bound of the queue in front of the writer, bytes (default 16 MiB).
    queue_bytes: Option<Num>,
    /// The columns to store: a list of schema column names, or `all` (the default) or
    /// `legacy` (the old collector's eight), alone or in the list. Stored in schema order.
    columns: Option<OneOrMany>,
}

/// `type: timescale`, `postgres` and `mysql`: the old collector's keys.
#[allow(non_snake_case, reason = "the old collector's key names")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlBackend {
    /// Server host name or address. Required.
    SQL_SERVER: Option<String>,
    /// User name. Required.
    SQL_USERNAME: Option<String>,
    /// Database name. Required.
    SQL_DB: Option<String>,
    /// Password; the environment variable SQL_PASSWORD wins over this key. Never logged.
    SQL_PASSWORD: Option<String>,
    /// Server port (default 5432 for PostgreSQL, 3306 for MySQL).
    SQL_PORT: Option<Num>,
    /// Flow table name (default goflow_records).
    SQL_TABLE: Option<String>,
    /// TLS: disable (default), prefer, require (certificate not checked) or verify-full.
    SQL_SSLMODE: Option<String>,
    /// CA certificate(s), a PEM file, that the server's chain must lead to. Used by (and
    /// required for) `SQL_SSLMODE: verify-full`, and refused with any other mode.
    SQL_SSLROOTCERT: Option<String>,
    /// Rows per flush (one COPY; default 100000). Each connection flushes its own rows.
    flush_rows: Option<Num>,
    /// Flush rows older than this many milliseconds (default 1000).
    flush_ms: Option<Num>,
    /// Bound of the queue in front of the writer, bytes (default 256 MiB).
    queue_bytes: Option<Num>,
    /// Bound of the disk spool under state_dir for rows the backend cannot take, bytes
    /// (default 1 GiB; 0 = no spool: such rows are dropped and counted).
    spool_bytes: Option<Num>,
    /// MySQL/MariaDB only: a Unix socket path (e.g. /run/mysqld/mysqld.sock); when set it is
    /// used instead of SQL_SERVER/SQL_PORT (the environment variable SQL_SOCKET wins).
    SQL_SOCKET: Option<String>,
    /// Parallel COPY / LOAD DATA connections, each a writer thread taking chunks from the one
    /// queue (1..=16, default 2).
    connections: Option<Num>,
    /// TimescaleDB only: compress chunks wholly older than this many days (segment by exporter,
    /// order by time; 0 or absent: no compression).
    compress_after_days: Option<Num>,
    /// PostgreSQL/TimescaleDB only: `auto` (a hypertable when TimescaleDB is available and
    /// preloaded, the default), `on` (required: setup fails without it) or `off` (plain).
    hypertable: Option<String>,
    /// PostgreSQL/TimescaleDB only: create the (exporter, time) index (default true).
    exporter_index: Option<bool>,
    /// PostgreSQL/TimescaleDB only: keys kept per hour and dimension (addresses, ports, AS,
    /// interfaces) in the hourly top-K rollup `<table>_1h_top` (default 1000; 0: none).
    top_keys: Option<Num>,
    /// The columns to store and create: a list of schema column names, or `all` (the
    /// default) or `legacy` (the old collector's eight); `last_switched` is required (time
    /// index, retention). Stored in schema order.
    columns: Option<OneOrMany>,
}

/// `type: kafka`: the old collector's keys (environment variables of the same names win).
#[allow(non_snake_case, reason = "the old collector's key names")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaBackend {
    /// Bootstrap servers, `host:port[,host:port]`.
    KAFKA_SERVER: Option<String>,
    /// Topic to publish to.
    KAFKA_TOPIC: Option<String>,
    /// SASL user name.
    SASL_USER: Option<String>,
    /// SASL password. Never logged.
    SASL_PASSWORD: Option<String>,
    /// Use TLS.
    SSL: Option<Flag>,
    /// Verify the server's certificate.
    SSL_VERIFY: Option<Flag>,
    /// SASL mechanism: PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512.
    sasl_mechanism: Option<String>,
    /// CA bundle (PEM) to verify the brokers' certificates with (default: the system's).
    ssl_ca_file: Option<String>,
    /// `protobuf` (goflow2's FlowMessage, default) or `json`.
    format: Option<String>,
    /// Message key: `exporter` (default), `flow` (5-tuple hash) or `none`.
    key: Option<String>,
    /// none, lz4 (default), zstd, snappy or gzip.
    compression: Option<String>,
    /// Flows per Kafka message (default 64; 1 = goflow2's one FlowMessage per message).
    flows_per_message: Option<Num>,
    /// librdkafka linger.ms (default 5).
    linger_ms: Option<Num>,
    /// librdkafka batch.size in bytes (default 1000000).
    batch_bytes: Option<Num>,
    /// Writer lanes sharing the one producer (default 1: an exporter's flows stay in order).
    lanes: Option<Num>,
    /// Flushes one lane keeps in flight while it fills the next (default 8; 1 = each flush
    /// waits for its acknowledgements before the next starts). Their rows count against
    /// queue_bytes until acknowledged.
    flushes_in_flight: Option<Num>,
    /// Any other librdkafka property (set last, overriding the above).
    rdkafka: Option<BTreeMap<String, serde_norway::Value>>,
    /// Records per flush (default 100000).
    flush_rows: Option<Num>,
    /// Flush records older than this many milliseconds (default 1000).
    flush_ms: Option<Num>,
    /// Bound of the queue in front of the writer, bytes (default 256 MiB).
    queue_bytes: Option<Num>,
    /// Bound of the disk spool under state_dir for rows the backend cannot take, bytes
    /// (default 1 GiB; 0 = no spool: such rows are dropped and counted).
    spool_bytes: Option<Num>,
    /// `format: json` only: the columns in each message (as for the file backend; protobuf
    /// messages are goflow2's FlowMessage and always carry its fields).
    columns: Option<OneOrMany>,
}

/// `frontends`: at least one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrontends {
    /// The NetFlow v5/v9 and IPFIX listener.
    #[serde(default)]
    netflow: Option<RawNetflow>,
    /// A Kafka consumer group member: flows published by goflow or goflow2, read from topics
    /// and written to the named backends (exactly once into SQL backends).
    #[serde(default)]
    kafka: Option<RawKafkaFrontend>,
}

/// `frontends.kafka`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaFrontend {
    /// Brokers, topics, group and message format.
    #[serde(default)]
    config: Option<RawKafkaConsume>,
    /// The backend (a name under `backends`) or a list of them: every flow goes to each.
    backend: OneOrMany,
}

/// `frontends.kafka.config`: the Kafka backend's connection keys (environment variables of the
/// same names win) and the consumer's own.
#[allow(non_snake_case, reason = "the old collector's key names")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaConsume {
    /// Bootstrap servers, `host:port[,host:port]`.
    KAFKA_SERVER: Option<String>,
    /// Topic(s) to read: a name, a list, or names separated by commas.
    KAFKA_TOPIC: Option<OneOrMany>,
    /// SASL user name.
    SASL_USER: Option<String>,
    /// SASL password. Never logged.
    SASL_PASSWORD: Option<String>,
    /// Use TLS.
    SSL: Option<Flag>,
    /// Verify the server's certificate.
    SSL_VERIFY: Option<Flag>,
    /// SASL mechanism: PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512.
    sasl_mechanism: Option<String>,
    /// CA bundle (PEM) to verify the brokers' certificates with (default: the system's).
    ssl_ca_file: Option<String>,
    /// Consumer group (default `goflow`): the processes of one group split the partitions;
    /// the stored offsets are kept per group.
    group_id: Option<String>,
    /// `protobuf` (goflow2's FlowMessage, varint-delimited, one or several per message;
    /// default) or `json` (goflow's JSON lines).
    format: Option<String>,
    /// librdkafka session.timeout.ms (default 10000): how long a dead member keeps its
    /// partitions before the group moves them.
    session_timeout_ms: Option<Num>,
    /// Where a partition without any stored offset starts: `earliest` (default) or `latest`.
    offset_reset: Option<String>,
    /// Any other librdkafka consumer property (set last, overriding the above).
    rdkafka: Option<BTreeMap<String, serde_norway::Value>>,
}

/// `frontends.netflow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetflow {
    /// Listener settings (may be empty: 0.0.0.0:2055, automatic receiver, one worker per CPU).
    #[serde(default)]
    config: Option<RawListen>,
    /// The backend (a name under `backends`) or a list of them: every record goes to each.
    backend: OneOrMany,
}

/// `frontends.netflow.config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    /// Address to listen on, IPv4 or IPv6 (default 0.0.0.0; `"::"` receives both).
    bindaddr: Option<String>,
    /// UDP port (default 2055).
    bindport: Option<Num>,
    /// Receive back-end: auto (io_uring when the kernel allows it, else recvmmsg), uring, mmsg.
    receiver: Option<String>,
    /// Worker threads, each with its own socket (default: number of CPUs).
    workers: Option<Num>,
    /// SO_RCVBUF request per socket, bytes (default 32 MiB; capped by net.core.rmem_max).
    rcvbuf: Option<Num>,
    /// Bytes per receive buffer; larger datagrams are counted as truncated (default 65535).
    buffer_size: Option<Num>,
    /// Most datagrams taken per wake-up (default 256, at most 1024).
    batch_max: Option<Num>,
    /// Bounds on what exporters can make a worker remember (per worker).
    limits: Option<RawLimits>,
}

/// `frontends.netflow.config.limits`: per worker (each exporter address reaches one worker).
/// Whatever is refused, evicted or expired is counted on /metrics and /status.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Exporters with per-exporter state (counters, sequence streams, sampler tables); datagrams
    /// of further ones are decoded but not tracked (default 16384).
    exporters: Option<Num>,
    /// Seconds of silence after which an exporter's state is forgotten (default 3600).
    exporter_idle: Option<Num>,
    /// Templates held (default 65536).
    templates: Option<Num>,
    /// Templates one exporter may hold across its domains (default 1024).
    templates_per_exporter: Option<Num>,
    /// Seconds a template lives without being re-announced (default 1800).
    template_ttl: Option<Num>,
    /// Bytes of data sets held while their template is unknown (default 8388608, 8 MiB;
    /// beyond it the oldest held sets make room; 0: nothing is held).
    held_bytes: Option<Num>,
    /// Bytes held per (exporter, observation domain, template id) (default 1048576, 1 MiB;
    /// beyond it that template's newest sets are not held).
    held_bytes_per_template: Option<Num>,
    /// Seconds a held set waits for its template before it is dropped (default 600).
    held_max_age: Option<Num>,
    /// NSEL connections remembered so teardown totals are stored minus what flow-update
    /// records already carried (default 262144, about 100 bytes each; 0: store every NSEL
    /// record's counters as sent).
    nsel_connections: Option<Num>,
}

/// `utilities`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUtilities {
    /// Delete flows older than this many days (database backends; 0 or absent: keep all).
    max_age: Option<Num>,
}

/// A backend name or a list of names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A non-negative integer written as a number (`2055`) or a string (`"2055"`), as the old
/// collector accepted both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Num(u64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer (a number or a string of digits)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                u64::try_from(v)
                    .map(Num)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse()
                    .map(Num)
                    .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean written as `true`/`false` or as a string of either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                parse_bool(v)
                    .map(Flag)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: the resolved run configuration.
// ---------------------------------------------------------------------------------------------

/// Everything `goflow run` needs, checked.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The file this came from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// Listener: bind address, workers, receive back-end, buffers.
    pub receiver: ReceiverConfig,
    /// Decoder bounds per worker (`frontends.netflow.config.limits`).
    pub decoder: goflow_codec::DecoderConfig,
    /// Every backend some frontend names, in the order they are first named.
    pub backends: Vec<BackendConfig>,
    /// `frontends.netflow`: the names of the backends it writes to; `None` when the file has
    /// no netflow frontend (a Kafka consumer only: no UDP socket is opened).
    pub netflow: Option<Vec<String>>,
    /// `frontends.kafka`: the Kafka consumer frontend.
    pub kafka: Option<KafkaFrontend>,
    /// Backends defined in the file but named by no frontend (not started).
    pub unused_backends: Vec<String>,
    /// Ops API address; `None` when `api: off`.
    pub api: Option<SocketAddr>,
    /// `utilities.max_age`: prune flows older than this many days (database backends).
    pub max_age_days: Option<u32>,
    /// Where state that survives a restart lives (`state_dir`, resolved; may be relative to the
    /// working directory).
    pub state_dir: PathBuf,
    /// `log_level`, when set.
    pub log_level: Option<log::LevelFilter>,
}

impl RunConfig {
    /// The configuration used without a config file.
    pub fn defaults() -> RunConfig {
        RunConfig {
            source: None,
            receiver: ReceiverConfig::new(DEFAULT_LISTEN),
            decoder: goflow_codec::DecoderConfig::default(),
            backends: vec![BackendConfig {
                name: "default".to_owned(),
                kind: BackendKind::File {
                    path: PathBuf::from(DEFAULT_FILE_PATH),
                    keep_page_cache: false,
                },
                flush: FlushConfig::file_defaults(),
                columns: goflow_writers::schema::ColumnSet::ALL,
            }],
            netflow: Some(vec!["default".to_owned()]),
            kafka: None,
            unused_backends: Vec::new(),
            api: Some(DEFAULT_API),
            max_age_days: None,
            state_dir: default_state_dir(&|k| std::env::var(k).ok()),
            log_level: None,
        }
    }

    /// `path` or "built-in defaults", for log lines.
    pub fn source_name(&self) -> String {
        self.source.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// `frontends.kafka`, resolved: a consumer group member reading flows from topics.
#[derive(Clone, Debug)]
pub struct KafkaFrontend {
    /// Brokers and the connection keys (TLS, SASL, `rdkafka` passthrough), environment
    /// applied; `topic` holds the topics joined with commas (for logs).
    pub kafka: KafkaConfig,
    /// The topics to subscribe to (at least one).
    pub topics: Vec<String>,
    /// The consumer group.
    pub group_id: String,
    /// How a message value is read.
    pub format: goflow_writers::kafka::Format,
    /// librdkafka session.timeout.ms.
    pub session_timeout_ms: u32,
    /// `earliest` or `latest`: where a partition with no stored offset starts.
    pub offset_reset: &'static str,
    /// The backends it writes to (names under `backends`).
    pub backends: Vec<String>,
}

/// Consumer group of a Kafka frontend without `group_id`.
pub const DEFAULT_GROUP_ID: &str = "goflow";
/// session.timeout.ms of a Kafka frontend by default: a dead consumer's partitions move to the
/// others after this long.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;

/// One configured backend.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Its name under `backends`.
    pub name: String,
    pub kind: BackendKind,
    pub flush: FlushConfig,
    /// The columns it stores (`columns:`, default all).
    pub columns: goflow_writers::schema::ColumnSet,
}

/// When a backend flushes and how much it may queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushConfig {
    /// Flush once this many rows are pending.
    pub rows: u64,
    /// Flush once the oldest pending row is this old.
    pub interval: Duration,
    /// Most encoded bytes queued (and held for retry) in front of the backend.
    pub queue_bytes: u64,
    /// Bound of the backend's disk spool (0 = none).
    pub spool_bytes: u64,
    /// Most flushes one lane keeps in flight (`flushes_in_flight`, Kafka only; 1 elsewhere).
    pub in_flight: usize,
}

impl FlushConfig {
    fn file_defaults() -> FlushConfig {
        FlushConfig {
            rows: DEFAULT_FILE_FLUSH_ROWS,
            interval: Duration::from_millis(DEFAULT_FLUSH_MS),
            queue_bytes: DEFAULT_FILE_QUEUE_BYTES,
            spool_bytes: DEFAULT_SPOOL_BYTES,
            in_flight: 1,
        }
    }

    fn sql_defaults() -> FlushConfig {
        FlushConfig {
            rows: DEFAULT_SQL_FLUSH_ROWS,
            interval: Duration::from_millis(DEFAULT_FLUSH_MS),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            spool_bytes: DEFAULT_SPOOL_BYTES,
            in_flight: 1,
        }
    }
}

/// What a backend is.
#[derive(Clone, Debug)]
pub enum BackendKind {
    /// JSON lines appended to `path` (`-` = standard output).
    File {
        path: PathBuf,
        /// Leave written lines in the page cache instead of dropping them behind the writer.
        keep_page_cache: bool,
    },
    /// JSON lines on standard output.
    Dump,
    /// Count and discard.
    Null,
    /// PostgreSQL, with TimescaleDB's hypertable when `timescale`, written through
    /// `connections` parallel COPY connections.
    Postgres {
        timescale: bool,
        sql: SqlConfig,
        connections: usize,
    },
    /// MySQL / MariaDB, written through `connections` parallel LOAD DATA connections, over
    /// TCP or the Unix socket `socket`.
    Mysql {
        sql: SqlConfig,
        socket: Option<PathBuf>,
        connections: usize,
    },
    /// Kafka (cargo feature `kafka`, on by default; without it the start fails).
    Kafka(KafkaConfig),
}

impl BackendKind {
    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendKind::File { .. } => "file",
            BackendKind::Dump => "dump",
            BackendKind::Null => "null",
            BackendKind::Postgres {
                timescale: true, ..
            } => "timescale",
            BackendKind::Postgres {
                timescale: false, ..
            } => "postgres",
            BackendKind::Mysql { .. } => "mysql",
            BackendKind::Kafka(_) => "kafka",
        }
    }

    /// Where it writes, for the start-up log line (no secrets).
    pub fn target(&self) -> String {
        match self {
            BackendKind::File { path, .. } if path.as_os_str() == "-" => "stdout".to_owned(),
            BackendKind::File { path, .. } => path.display().to_string(),
            BackendKind::Dump => "stdout".to_owned(),
            BackendKind::Null => "nowhere (count and discard)".to_owned(),
            BackendKind::Mysql {
                sql,
                socket: Some(path),
                ..
            } => format!(
                "{}@unix:{}/{} table {}",
                sql.user,
                path.display(),
                sql.dbname,
                sql.table
            ),
            BackendKind::Postgres { sql, .. } | BackendKind::Mysql { sql, .. } => format!(
                "{}@{}:{}/{} table {}",
                sql.user, sql.host, sql.port, sql.dbname, sql.table
            ),
            BackendKind::Kafka(k) => k.target(),
        }
    }
}

/// TLS mode of a SQL connection (`SQL_SSLMODE`); the PostgreSQL writer's own type.
pub use goflow_writers::pg::SslMode;

/// A SQL backend's connection settings: the PostgreSQL writer's own type (MySQL takes the
/// same keys). `Debug` never shows the password. `max_age_days` is left `None` here; the
/// daemon fills it from `utilities.max_age`.
pub use goflow_writers::pg::PgConfig as SqlConfig;

/// Kafka settings, environment applied: the Kafka writer's own type. `Debug` never shows the
/// password.
pub use goflow_writers::kafka::KafkaConfig;

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

/// Loads the configuration: `explicit` (from `--config` or `$GOFLOW_CONFIG`), else
/// `./config.yml` when it exists, else the built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<RunConfig, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            if !p.exists() {
                return Ok(RunConfig::defaults());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let mut cfg = parse(&text, &path.display().to_string(), &|k| {
        std::env::var(k).ok()
    })?;
    cfg.source = Some(path);
    Ok(cfg)
}

/// Parses and resolves `text` (named `file` in messages); `env` looks up environment overrides.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunConfig, ConfigError> {
    if is_empty_yaml(text) {
        // An empty file (blank, comments only, or a bare `---`) means the defaults, as no file.
        let mut cfg = RunConfig::defaults();
        cfg.state_dir = default_state_dir(env);
        return Ok(cfg);
    }
    let raw: RawConfig =
        serde_norway::from_str(text).map_err(|e| ConfigError(yaml_error(text, file, &e)))?;
    let ctx = Ctx { text, file };
    resolve(raw, &ctx, env)
}

/// True when `text` holds no YAML content: blank lines, comments and document markers only.
fn is_empty_yaml(text: &str) -> bool {
    text.lines().map(strip_comment).all(|l| {
        let l = l.trim();
        l.is_empty() || l == "---" || l == "..."
    })
}

/// A YAML/serde error as a message naming the file and a line. serde reports an unknown key of
/// a struct without a location; the key's line is then looked up in the text (for the top
/// level, where those errors have no line otherwise).
fn yaml_error(text: &str, file: &str, e: &serde_norway::Error) -> String {
    let msg = e.to_string();
    if msg.contains(" line ") {
        return format!("config file {file}: {msg}");
    }
    let quoted = |prefix: &str| {
        let rest = msg.strip_prefix(prefix)?;
        let end = rest.find('`')?;
        rest.get(..end)
    };
    if let Some(key) = quoted("unknown field `")
        && let Some(line) = find_line(text, &[key])
    {
        return format!("config file {file}: {msg} at line {line}");
    }
    if let Some(key) = quoted("missing field `") {
        return format!("config file {file}: {msg} (the top level of the file has no `{key}:`)");
    }
    format!("config file {file}: {msg}")
}

/// The file's text and name, for error messages.
struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    /// An error about the key at `path` (e.g. `["frontends", "netflow", "backend"]`).
    fn err(&self, path: &[&str], msg: impl fmt::Display) -> ConfigError {
        let key = path.join(".");
        match find_line(self.text, path) {
            Some(line) => ConfigError(format!(
                "config file {}: {key}: {msg} at line {line}",
                self.file
            )),
            None => ConfigError(format!("config file {}: {key}: {msg}", self.file)),
        }
    }

    fn num(
        &self,
        path: &[&str],
        v: Option<Num>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(Num(n)) if (min..=max).contains(&n) => Ok(n),
            Some(Num(n)) => Err(self.err(path, format_args!("{n} is out of range {min}..={max}"))),
        }
    }
}

fn resolve(
    raw: RawConfig,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunConfig, ConfigError> {
    let RawFrontends { netflow, kafka } = raw.frontends;
    if netflow.is_none() && kafka.is_none() {
        return Err(ctx.err(
            &["frontends"],
            "names no frontend (`netflow:` to receive NetFlow/IPFIX over UDP, `kafka:` to \
             consume flows from Kafka, or both)",
        ));
    }
    let (listen, netflow_names) = match netflow {
        Some(n) => (n.config.unwrap_or_default(), Some(n.backend)),
        None => (RawListen::default(), None),
    };
    let receiver = resolve_listen(&listen, ctx)?;
    let mut decoder = resolve_limits(listen.limits.as_ref(), ctx)?;
    decoder.sampling = resolve_sampling(raw.sampling.as_ref(), ctx)?;

    let mut raw_backends = raw.backends;
    let mut backends: Vec<BackendConfig> = Vec::new();
    // Resolves the names one frontend lists; a backend two frontends name is one backend.
    let mut take = |list: OneOrMany,
                    frontend: &'static str,
                    backends: &mut Vec<BackendConfig>|
     -> Result<Vec<String>, ConfigError> {
        let names = match list {
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(v) => v,
        };
        let backend_path = ["frontends", frontend, "backend"];
        if names.is_empty() {
            return Err(ctx.err(&backend_path, "names no backend"));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(ctx.err(
                    &backend_path,
                    format_args!("backend {name:?} is named twice"),
                ));
            }
            if backends.iter().any(|b| &b.name == name) {
                continue;
            }
            let Some(rb) = raw_backends.remove(name) else {
                let mut known: Vec<&str> = raw_backends.keys().map(String::as_str).collect();
                known.extend(backends.iter().map(|b: &BackendConfig| b.name.as_str()));
                known.sort_unstable();
                return Err(ctx.err(
                    &backend_path,
                    format_args!(
                        "unknown backend name {name:?} (defined under backends: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            backends.push(resolve_backend(name, rb, ctx, env)?);
        }
        Ok(names)
    };
    let netflow = match netflow_names {
        Some(list) => Some(take(list, "netflow", &mut backends)?),
        None => None,
    };
    let kafka = match kafka {
        Some(k) => {
            let names = take(k.backend, "kafka", &mut backends)?;
            Some(resolve_kafka_frontend(
                k.config.unwrap_or_default(),
                names,
                ctx,
                env,
            )?)
        }
        None => None,
    };
    // Unused backends are still checked, so a typo does not wait for the day they are used.
    let mut unused_backends = Vec::new();
    for (name, rb) in raw_backends {
        resolve_backend(&name, rb, ctx, env)?;
        unused_backends.push(name);
    }

    let api = match raw.api.as_deref().map(str::trim) {
        None | Some("") => Some(DEFAULT_API),
        Some(s) if matches!(s.to_ascii_lowercase().as_str(), "off" | "none" | "false") => None,
        Some(s) => Some(parse_api(s).ok_or_else(|| {
            ctx.err(
                &["api"],
                format_args!(
                    "{s:?} is not an address:port (e.g. 127.0.0.1:8880, localhost:8880) or off"
                ),
            )
        })?),
    };

    let max_age = raw.utilities.unwrap_or_default().max_age;
    let max_age_days = ctx.num(&["utilities", "max_age"], max_age, 0, 0, 36_500)?;
    let max_age_days = u32::try_from(max_age_days)
        .ok()
        .filter(|&d| d > 0 && max_age.is_some());

    let state_dir = match raw.state_dir.as_deref().map(str::trim) {
        None => default_state_dir(env),
        Some("") => {
            return Err(ctx.err(
                &["state_dir"],
                "is empty (a directory path, or leave the key out for the default)",
            ));
        }
        Some(s) => PathBuf::from(s),
    };

    let log_level = match raw.log_level.as_deref().map(str::trim) {
        None => None,
        Some(s) => Some(parse_log_level(s).ok_or_else(|| {
            ctx.err(
                &["log_level"],
                format_args!("{s:?} is not a log level (error, warn, info, debug or trace)"),
            )
        })?),
    };

    Ok(RunConfig {
        source: None,
        receiver,
        decoder,
        backends,
        netflow,
        kafka,
        unused_backends,
        api,
        max_age_days,
        state_dir,
        log_level,
    })
}

/// `error`, `warn`, `info`, `debug`, `trace` (or `off`), any case.
fn parse_log_level(s: &str) -> Option<log::LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" => Some(log::LevelFilter::Error),
        "warn" | "warning" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// The default `state_dir`: the first path of `$STATE_DIRECTORY` when systemd set it, else
/// [`DEFAULT_STATE_DIR`].
fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    env(STATE_DIRECTORY_ENV)
        .and_then(|v| {
            v.split(':')
                .map(str::trim)
                .find(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The `sampling:` map: exporter addresses and `default`, each a rate of 1..=2^32-1.
fn resolve_sampling(
    raw: Option<&BTreeMap<String, Num>>,
    ctx: &Ctx<'_>,
) -> Result<goflow_codec::SamplingConfig, ConfigError> {
    let mut out = goflow_codec::SamplingConfig::default();
    for (key, v) in raw.into_iter().flatten() {
        let path = ["sampling", key.as_str()];
        let rate = ctx.num(&path, Some(Num(v.0)), 1, 1, u64::from(u32::MAX))? as u32;
        if key == "default" {
            out.default = Some(rate);
            continue;
        }
        let ip: std::net::IpAddr = key.parse().map_err(|_| {
            ctx.err(
                &path,
                "is neither an exporter address (e.g. \"192.0.2.1\") nor `default`",
            )
        })?;
        out.exporters.insert(ip, rate);
    }
    Ok(out)
}

fn resolve_limits(
    l: Option<&RawLimits>,
    ctx: &Ctx<'_>,
) -> Result<goflow_codec::DecoderConfig, ConfigError> {
    let mut d = goflow_codec::DecoderConfig::default();
    let Some(l) = l else {
        return Ok(d);
    };
    let key = |k: &'static str| ["frontends", "netflow", "config", "limits", k];
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    d.max_exporters = size(ctx.num(
        &key("exporters"),
        l.exporters,
        d.max_exporters as u64,
        1,
        1 << 24,
    )?);
    d.exporter_idle_secs = ctx.num(
        &key("exporter_idle"),
        l.exporter_idle,
        d.exporter_idle_secs,
        1,
        86_400 * 365,
    )?;
    d.max_templates_total = size(ctx.num(
        &key("templates"),
        l.templates,
        d.max_templates_total as u64,
        1,
        1 << 24,
    )?);
    d.max_templates_per_exporter = size(ctx.num(
        &key("templates_per_exporter"),
        l.templates_per_exporter,
        d.max_templates_per_exporter as u64,
        1,
        65_536,
    )?);
    d.template_ttl_secs = ctx.num(
        &key("template_ttl"),
        l.template_ttl,
        d.template_ttl_secs,
        1,
        86_400 * 365,
    )?;
    d.held_bytes = size(ctx.num(
        &key("held_bytes"),
        l.held_bytes,
        d.held_bytes as u64,
        0,
        1 << 34,
    )?);
    d.held_bytes_per_template = size(ctx.num(
        &key("held_bytes_per_template"),
        l.held_bytes_per_template,
        d.held_bytes_per_template as u64,
        0,
        1 << 34,
    )?);
    d.held_max_age_secs = ctx.num(
        &key("held_max_age"),
        l.held_max_age,
        d.held_max_age_secs,
        1,
        86_400,
    )?;
    d.max_nsel_connections = size(ctx.num(
        &key("nsel_connections"),
        l.nsel_connections,
        d.max_nsel_connections as u64,
        0,
        1 << 26,
    )?);
    Ok(d)
}

fn resolve_listen(l: &RawListen, ctx: &Ctx<'_>) -> Result<ReceiverConfig, ConfigError> {
    let key = |k: &'static str| ["frontends", "netflow", "config", k];
    let ip = match l.bindaddr.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_LISTEN.ip(),
        Some(s) => s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| {
                ctx.err(
                    &key("bindaddr"),
                    format_args!("{s:?} is not an IPv4 or IPv6 address"),
                )
            })?,
    };
    let port = ctx.num(
        &key("bindport"),
        l.bindport,
        u64::from(DEFAULT_LISTEN.port()),
        1,
        65_535,
    )?;
    let mut cfg = ReceiverConfig::new(SocketAddr::new(ip, u16::try_from(port).unwrap_or(2055)));
    cfg.choice = match l.receiver.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        None => ReceiverChoice::Auto,
        Some(s) => match s.as_str() {
            "" | "auto" => ReceiverChoice::Auto,
            "uring" | "io_uring" => ReceiverChoice::Uring,
            "mmsg" | "recvmmsg" => ReceiverChoice::Mmsg,
            other => {
                return Err(ctx.err(
                    &key("receiver"),
                    format_args!("{other:?} is not one of auto, uring, mmsg"),
                ));
            }
        },
    };
    let cpus = cfg.workers as u64;
    cfg.workers =
        usize::try_from(ctx.num(&key("workers"), l.workers, cpus, 1, WORKERS_MAX)?).unwrap_or(1);
    let rcvbuf = ctx.num(&key("rcvbuf"), l.rcvbuf, cfg.rcvbuf as u64, 0, 1 << 31)?;
    cfg.rcvbuf = usize::try_from(rcvbuf).unwrap_or(cfg.rcvbuf);
    let buffer = ctx.num(
        &key("buffer_size"),
        l.buffer_size,
        cfg.buffer_size as u64,
        512,
        65_535,
    )?;
    cfg.buffer_size = usize::try_from(buffer).unwrap_or(cfg.buffer_size);
    let batch = ctx.num(
        &key("batch_max"),
        l.batch_max,
        cfg.batch_max as u64,
        1,
        1024,
    )?;
    cfg.batch_max = usize::try_from(batch).unwrap_or(cfg.batch_max);
    Ok(cfg)
}

fn resolve_flush(
    ctx: &Ctx<'_>,
    name: &str,
    defaults: FlushConfig,
    rows: Option<Num>,
    ms: Option<Num>,
    queue: Option<Num>,
    spool: Option<Num>,
) -> Result<FlushConfig, ConfigError> {
    let p = |k: &'static str| ["backends", name, "config", k];
    let rows = ctx.num(&p("flush_rows"), rows, defaults.rows, 1, 100_000_000)?;
    let ms = ctx.num(
        &p("flush_ms"),
        ms,
        defaults.interval.as_millis() as u64,
        1,
        3_600_000,
    )?;
    let queue_bytes = ctx.num(
        &p("queue_bytes"),
        queue,
        defaults.queue_bytes,
        1 << 16,
        1 << 40,
    )?;
    let spool_bytes = match spool {
        None => defaults.spool_bytes,
        Some(_) => ctx.num(&p("spool_bytes"), spool, defaults.spool_bytes, 0, 1 << 50)?,
    };
    if spool_bytes != 0 && spool_bytes < 1 << 16 {
        return Err(ctx.err(
            &p("spool_bytes"),
            format_args!("{spool_bytes} is too small (0 turns the spool off; else at least 65536)"),
        ));
    }
    Ok(FlushConfig {
        rows,
        interval: Duration::from_millis(ms),
        queue_bytes,
        spool_bytes,
        in_flight: defaults.in_flight,
    })
}

fn resolve_backend(
    name: &str,
    rb: RawBackend,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BackendConfig, ConfigError> {
    let is_dump = matches!(rb, RawBackend::Dump(_));
    let (kind, flush, columns) = match rb {
        RawBackend::File(c) => {
            let c = c.unwrap_or_default();
            let path = match c.path.as_deref().map(str::trim) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    return Err(ctx.err(
                        &["backends", name, "config", "path"],
                        "missing (the file to write JSON lines to, or - for stdout)",
                    ));
                }
            };
            let flush = resolve_flush(
                ctx,
                name,
                FlushConfig::file_defaults(),
                c.flush_rows,
                c.flush_ms,
                c.queue_bytes,
                c.spool_bytes,
            )?;
            let keep_page_cache = c.keep_page_cache.is_some_and(|f| f.0);
            let columns = resolve_columns(ctx, name, c.columns.as_ref(), false)?;
            (
                BackendKind::File {
                    path,
                    keep_page_cache,
                },
                flush,
                columns,
            )
        }
        RawBackend::Dump(c) | RawBackend::Null(c) => {
            let kind = if is_dump {
                BackendKind::Dump
            } else {
                BackendKind::Null
            };
            let c = c.unwrap_or_default();
            let flush = resolve_flush(
                ctx,
                name,
                FlushConfig::file_defaults(),
                c.flush_rows,
                c.flush_ms,
                c.queue_bytes,
                None,
            )?;
            let flush = FlushConfig {
                spool_bytes: 0,
                ..flush
            };
            let columns = resolve_columns(ctx, name, c.columns.as_ref(), false)?;
            (kind, flush, columns)
        }
        RawBackend::Timescale(c) => resolve_pg(name, c, true, ctx, env)?,
        RawBackend::Postgres(c) => resolve_pg(name, c, false, ctx, env)?,
        RawBackend::Mysql(c) => {
            if c.as_ref().is_some_and(|c| c.compress_after_days.is_some()) {
                return Err(ctx.err(
                    &["backends", name, "config", "compress_after_days"],
                    "only used by timescale backends (TimescaleDB native compression)",
                ));
            }
            for (key, set) in [
                (
                    "hypertable",
                    c.as_ref().is_some_and(|c| c.hypertable.is_some()),
                ),
                (
                    "exporter_index",
                    c.as_ref().is_some_and(|c| c.exporter_index.is_some()),
                ),
                ("top_keys", c.as_ref().is_some_and(|c| c.top_keys.is_some())),
            ] {
                if set {
                    return Err(ctx.err(
                        &["backends", name, "config", key],
                        "only used by postgres and timescale backends",
                    ));
                }
            }
            let connections = ctx.num(
                &["backends", name, "config", "connections"],
                c.as_ref().and_then(|c| c.connections),
                DEFAULT_MYSQL_CONNECTIONS,
                1,
                PG_CONNECTIONS_MAX,
            )?;
            let socket = env("SQL_SOCKET")
                .or_else(|| c.as_ref().and_then(|c| c.SQL_SOCKET.clone()))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            let (sql, flush) = resolve_sql(name, c, DEFAULT_MYSQL_PORT, ctx, env)?;
            let columns = sql.columns;
            (
                BackendKind::Mysql {
                    sql,
                    socket,
                    connections: usize::try_from(connections).unwrap_or(1),
                },
                flush,
                columns,
            )
        }
        RawBackend::Kafka(c) => {
            let c = c.unwrap_or_default();
            let k = resolve_kafka(name, &c, ctx, env)?;
            let in_flight = ctx.num(
                &["backends", name, "config", "flushes_in_flight"],
                c.flushes_in_flight,
                goflow_writers::kafka::DEFAULT_FLUSHES_IN_FLIGHT as u64,
                1,
                goflow_writers::kafka::FLUSHES_IN_FLIGHT_MAX as u64,
            )? as usize;
            let flush = resolve_flush(
                ctx,
                name,
                FlushConfig {
                    in_flight,
                    ..FlushConfig::sql_defaults()
                },
                c.flush_rows,
                c.flush_ms,
                c.queue_bytes,
                c.spool_bytes,
            )?;
            let columns = resolve_columns(ctx, name, c.columns.as_ref(), false)?;
            (BackendKind::Kafka(k), flush, columns)
        }
    };
    Ok(BackendConfig {
        name: name.to_owned(),
        kind,
        flush,
        columns,
    })
}

/// `backends.<name>.config.columns`: names, `all`, `legacy`; an unknown name, an empty list,
/// or (`sql`) a set without `last_switched` is an error naming the key.
fn resolve_columns(
    ctx: &Ctx<'_>,
    name: &str,
    v: Option<&OneOrMany>,
    sql: bool,
) -> Result<goflow_writers::schema::ColumnSet, ConfigError> {
    use goflow_writers::schema::ColumnSet;
    let path = ["backends", name, "config", "columns"];
    let set = match v {
        None => ColumnSet::ALL,
        Some(OneOrMany::One(s)) => {
            let names: Vec<&str> = s.split(',').collect();
            ColumnSet::parse(&names).map_err(|e| ctx.err(&path, e))?
        }
        Some(OneOrMany::Many(list)) => ColumnSet::parse(list).map_err(|e| ctx.err(&path, e))?,
    };
    if sql && !set.contains("last_switched") {
        return Err(ctx.err(
            &path,
            "must include last_switched (the table's time index, retention and partitions use it)",
        ));
    }
    Ok(set)
}

/// `type: kafka`: the old collector's keys with their environment variables (the variable wins
/// when it is set and not empty; SSL and SSL_VERIFY take true/false/1/0/yes/no/on/off), and
/// the producer's own keys.
/// A boolean from the environment variable `envname` when set (it wins), else the file's
/// value, else `default`.
fn env_flag(
    env: &dyn Fn(&str) -> Option<String>,
    envname: &str,
    v: Option<Flag>,
    default: bool,
) -> Result<bool, ConfigError> {
    match env(envname).filter(|s| !s.trim().is_empty()) {
        Some(s) => parse_bool(&s).ok_or_else(|| {
            ConfigError(format!(
                "environment variable {envname}={s:?} is not a boolean (true/false, 1/0, yes/no)"
            ))
        }),
        None => Ok(v.map_or(default, |f| f.0)),
    }
}

/// The Kafka `sasl_mechanism` key (producer and consumer): PLAIN by default.
fn sasl_mechanism(v: Option<&str>, ctx: &Ctx<'_>, path: &[&str]) -> Result<String, ConfigError> {
    match v.map(str::trim) {
        None | Some("") => Ok("PLAIN".to_owned()),
        Some(m) => match m.to_ascii_uppercase().as_str() {
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => Ok(m.to_ascii_uppercase()),
            _ => Err(ctx.err(
                path,
                format_args!("{m:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
            )),
        },
    }
}

/// The `rdkafka:` passthrough (producer and consumer): each librdkafka property as text.
fn rdkafka_properties(
    raw: Option<&BTreeMap<String, serde_norway::Value>>,
    ctx: &Ctx<'_>,
    path: &[&str],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut props = Vec::new();
    for (k, v) in raw.into_iter().flatten() {
        let v = match v {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Number(n) => n.to_string(),
            _ => {
                let key: Vec<&str> = path.iter().copied().chain([k.as_str()]).collect();
                return Err(ctx.err(
                    &key,
                    "must be a string, number or boolean (a librdkafka property value)",
                ));
            }
        };
        props.push((k.clone(), v));
    }
    Ok(props)
}

fn resolve_kafka(
    name: &str,
    c: &RawKafkaBackend,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KafkaConfig, ConfigError> {
    use goflow_writers::kafka::{self as kw, Compression, Format, KeyBy};
    let p = |k: &'static str| ["backends", name, "config", k];
    let pick = |envname: &str, v: &Option<String>| {
        env(envname).filter(|s| !s.is_empty()).or_else(|| v.clone())
    };
    let pick_flag =
        |envname: &'static str, v: Option<Flag>, default: bool| env_flag(env, envname, v, default);
    let choice = |key: &'static str, v: &str, what: &str| {
        ctx.err(&p(key), format_args!("{v:?} is not one of {what}"))
    };
    let format = match &c.format {
        None => Format::default(),
        Some(f) => match Format::parse(f) {
            Some(f) => f,
            None => return Err(choice("format", f, "protobuf, json")),
        },
    };
    let key = match &c.key {
        None => KeyBy::default(),
        Some(k) => match KeyBy::parse(k) {
            Some(k) => k,
            None => return Err(choice("key", k, "exporter, flow, none")),
        },
    };
    let compression = match &c.compression {
        None => Compression::default(),
        Some(v) => match Compression::parse(v) {
            Some(v) => v,
            None => return Err(choice("compression", v, "none, lz4, zstd, snappy, gzip")),
        },
    };
    let sasl_mechanism = sasl_mechanism(c.sasl_mechanism.as_deref(), ctx, &p("sasl_mechanism"))?;
    let num = |key: &'static str, v: Option<Num>, default: u64, min: u64, max: u64| {
        ctx.num(&p(key), v, default, min, max)
    };
    let flows_per_message = num(
        "flows_per_message",
        c.flows_per_message,
        kw::DEFAULT_FLOWS_PER_MESSAGE as u64,
        1,
        kw::FLOWS_PER_MESSAGE_MAX as u64,
    )? as usize;
    let linger_ms = num(
        "linger_ms",
        c.linger_ms,
        kw::DEFAULT_LINGER_MS.into(),
        0,
        900_000,
    )? as u32;
    let batch_bytes = num(
        "batch_bytes",
        c.batch_bytes,
        kw::DEFAULT_BATCH_BYTES.into(),
        1,
        2_147_483_647,
    )? as u32;
    let lanes = num("lanes", c.lanes, 1, 1, 16)? as usize;
    let rdkafka = rdkafka_properties(
        c.rdkafka.as_ref(),
        ctx,
        &["backends", name, "config", "rdkafka"],
    )?;
    Ok(KafkaConfig {
        server: pick("KAFKA_SERVER", &c.KAFKA_SERVER).unwrap_or_default(),
        topic: pick("KAFKA_TOPIC", &c.KAFKA_TOPIC).unwrap_or_default(),
        sasl_user: pick("SASL_USER", &c.SASL_USER),
        sasl_password: pick("SASL_PASSWORD", &c.SASL_PASSWORD),
        sasl_mechanism,
        ssl: pick_flag("SSL", c.SSL, false)?,
        ssl_verify: pick_flag("SSL_VERIFY", c.SSL_VERIFY, true)?,
        ssl_ca_file: c
            .ssl_ca_file
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        format,
        key,
        compression,
        flows_per_message,
        linger_ms,
        batch_bytes,
        lanes,
        rdkafka,
    })
}

/// `frontends.kafka`: the Kafka backend's connection keys with their environment variables
/// (`KAFKA_SERVER`, `KAFKA_TOPIC`, `SASL_USER`, `SASL_PASSWORD`, `SSL`, `SSL_VERIFY` win when
/// set and not empty), and the consumer's own keys.
fn resolve_kafka_frontend(
    c: RawKafkaConsume,
    backends: Vec<String>,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KafkaFrontend, ConfigError> {
    use goflow_writers::kafka::Format;
    let p = |k: &'static str| ["frontends", "kafka", "config", k];
    let pick = |envname: &str, v: &Option<String>| {
        env(envname)
            .filter(|s| !s.trim().is_empty())
            .or_else(|| v.clone())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let pick_flag =
        |envname: &'static str, v: Option<Flag>, default: bool| env_flag(env, envname, v, default);
    let Some(server) = pick("KAFKA_SERVER", &c.KAFKA_SERVER) else {
        return Err(ctx.err(
            &p("KAFKA_SERVER"),
            "missing (the brokers to read from, host:port[,host:port]; or set $KAFKA_SERVER)",
        ));
    };
    let topic_text = match env("KAFKA_TOPIC").filter(|s| !s.trim().is_empty()) {
        Some(t) => vec![t],
        None => match c.KAFKA_TOPIC {
            None => Vec::new(),
            Some(OneOrMany::One(t)) => vec![t],
            Some(OneOrMany::Many(v)) => v,
        },
    };
    let mut topics: Vec<String> = Vec::new();
    for t in topic_text.iter().flat_map(|t| t.split(',')) {
        let t = t.trim();
        if t.is_empty() || topics.iter().any(|x| x == t) {
            continue;
        }
        if t.len() > 249
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ctx.err(
                &p("KAFKA_TOPIC"),
                format_args!(
                    "{t:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most \
                     249)"
                ),
            ));
        }
        topics.push(t.to_owned());
    }
    if topics.is_empty() {
        return Err(ctx.err(
            &p("KAFKA_TOPIC"),
            "missing (the topic to read, or a list of them; or set $KAFKA_TOPIC)",
        ));
    }
    let group_id = match c.group_id.as_deref().map(str::trim) {
        None => DEFAULT_GROUP_ID.to_owned(),
        Some("") => return Err(ctx.err(&p("group_id"), "is empty")),
        Some(g) => g.to_owned(),
    };
    let format = match &c.format {
        None => Format::default(),
        Some(f) => Format::parse(f).ok_or_else(|| {
            ctx.err(
                &p("format"),
                format_args!("{f:?} is not one of protobuf, json"),
            )
        })?,
    };
    let offset_reset = match c.offset_reset.as_deref().map(str::trim) {
        None => "earliest",
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "earliest" | "beginning" | "smallest" => "earliest",
            "latest" | "end" | "largest" => "latest",
            _ => {
                return Err(ctx.err(
                    &p("offset_reset"),
                    format_args!("{v:?} is not one of earliest, latest"),
                ));
            }
        },
    };
    let session_timeout_ms = ctx.num(
        &p("session_timeout_ms"),
        c.session_timeout_ms,
        DEFAULT_SESSION_TIMEOUT_MS,
        1000,
        3_600_000,
    )? as u32;
    let sasl_mechanism = sasl_mechanism(c.sasl_mechanism.as_deref(), ctx, &p("sasl_mechanism"))?;
    let rdkafka = rdkafka_properties(
        c.rdkafka.as_ref(),
        ctx,
        &["frontends", "kafka", "config", "rdkafka"],
    )?;
    let kafka = KafkaConfig {
        server,
        topic: topics.join(","),
        sasl_user: pick("SASL_USER", &c.SASL_USER),
        sasl_password: pick("SASL_PASSWORD", &c.SASL_PASSWORD),
        sasl_mechanism,
        ssl: pick_flag("SSL", c.SSL, false)?,
        ssl_verify: pick_flag("SSL_VERIFY", c.SSL_VERIFY, true)?,
        ssl_ca_file: c
            .ssl_ca_file
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        format,
        rdkafka,
        ..KafkaConfig::default()
    };
    Ok(KafkaFrontend {
        kafka,
        topics,
        group_id,
        format,
        session_timeout_ms,
        offset_reset,
        backends,
    })
}

/// `type: postgres` and `type: timescale`: the SQL keys plus `connections`.
fn resolve_pg(
    name: &str,
    c: Option<RawSqlBackend>,
    timescale: bool,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(BackendKind, FlushConfig, goflow_writers::schema::ColumnSet), ConfigError> {
    if c.as_ref().is_some_and(|c| c.SQL_SOCKET.is_some()) {
        return Err(ctx.err(
            &["backends", name, "config", "SQL_SOCKET"],
            "only used by mysql backends (for PostgreSQL, give the socket directory as \
             SQL_SERVER)",
        ));
    }
    let connections = ctx.num(
        &["backends", name, "config", "connections"],
        c.as_ref().and_then(|c| c.connections),
        DEFAULT_PG_CONNECTIONS,
        1,
        PG_CONNECTIONS_MAX,
    )?;
    let compress = ctx.num(
        &["backends", name, "config", "compress_after_days"],
        c.as_ref().and_then(|c| c.compress_after_days),
        0,
        0,
        36_500,
    )?;
    let hypertable = match c
        .as_ref()
        .and_then(|c| c.hypertable.as_deref())
        .map(str::trim)
    {
        None | Some("auto") => goflow_writers::pg::ddl::Hypertable::Auto,
        Some("on" | "true") => goflow_writers::pg::ddl::Hypertable::On,
        Some("off" | "false") => goflow_writers::pg::ddl::Hypertable::Off,
        Some(other) => {
            return Err(ctx.err(
                &["backends", name, "config", "hypertable"],
                format_args!("{other:?} is not auto, on or off"),
            ));
        }
    };
    let exporter_index = c.as_ref().and_then(|c| c.exporter_index).unwrap_or(true);
    let top_keys = ctx.num(
        &["backends", name, "config", "top_keys"],
        c.as_ref().and_then(|c| c.top_keys),
        u64::from(goflow_writers::pg::ddl::TOP_KEYS_DEFAULT),
        0,
        1_000_000,
    )?;
    let (mut sql, flush) = resolve_sql(name, c, DEFAULT_PG_PORT, ctx, env)?;
    sql.compress_after_days = u32::try_from(compress).ok().filter(|d| *d > 0);
    sql.hypertable = hypertable;
    sql.exporter_index = exporter_index;
    sql.top_keys = u32::try_from(top_keys).unwrap_or(goflow_writers::pg::ddl::TOP_KEYS_DEFAULT);
    let columns = sql.columns;
    let kind = BackendKind::Postgres {
        timescale,
        sql,
        connections: usize::try_from(connections).unwrap_or(1),
    };
    Ok((kind, flush, columns))
}

fn resolve_sql(
    name: &str,
    c: Option<RawSqlBackend>,
    default_port: u16,
    ctx: &Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SqlConfig, FlushConfig), ConfigError> {
    let c = c.unwrap_or_default();
    let columns = resolve_columns(ctx, name, c.columns.as_ref(), true)?;
    let p = |k: &'static str| ["backends", name, "config", k];
    let required = |k: &'static str, v: Option<String>| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ctx.err(&p(k), "missing (required for this backend type)"))
    };
    let host = required("SQL_SERVER", c.SQL_SERVER)?;
    let user = required("SQL_USERNAME", c.SQL_USERNAME)?;
    let dbname = required("SQL_DB", c.SQL_DB)?;
    let port = ctx.num(
        &p("SQL_PORT"),
        c.SQL_PORT,
        u64::from(default_port),
        1,
        65_535,
    )?;
    let table = c.SQL_TABLE.unwrap_or_else(|| DEFAULT_SQL_TABLE.to_owned());
    let table_ok = !table.is_empty()
        && table.len() <= 63
        && table
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !table.starts_with(|ch: char| ch.is_ascii_digit());
    if !table_ok {
        return Err(ctx.err(
            &p("SQL_TABLE"),
            format_args!("{table:?} is not a plain table name (letters, digits, _; at most 63)"),
        ));
    }
    let sslmode = match c
        .SQL_SSLMODE
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => SslMode::Disable,
        Some(s) => match s.as_str() {
            "" | "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-full" => match c.SQL_SSLROOTCERT.as_deref().map(str::trim) {
                Some(path) if !path.is_empty() => SslMode::VerifyFull {
                    root_cert: PathBuf::from(path),
                },
                _ => {
                    return Err(ctx.err(
                        &p("SQL_SSLROOTCERT"),
                        "missing (the CA file, required with SQL_SSLMODE: verify-full)",
                    ));
                }
            },
            other => {
                return Err(ctx.err(
                    &p("SQL_SSLMODE"),
                    format_args!("{other:?} is not one of disable, prefer, require, verify-full"),
                ));
            }
        },
    };
    if c.SQL_SSLROOTCERT.is_some() && !matches!(sslmode, SslMode::VerifyFull { .. }) {
        // libpq would quietly verify the chain under require; here the mode says what is checked.
        return Err(ctx.err(
            &p("SQL_SSLROOTCERT"),
            format_args!(
                "only used with SQL_SSLMODE: verify-full (SQL_SSLMODE is {})",
                sslmode.as_str()
            ),
        ));
    }
    let password = env("SQL_PASSWORD")
        .filter(|s| !s.is_empty())
        .or(c.SQL_PASSWORD);
    let flush = resolve_flush(
        ctx,
        name,
        FlushConfig::sql_defaults(),
        c.flush_rows,
        c.flush_ms,
        c.queue_bytes,
        c.spool_bytes,
    )?;
    let sql = SqlConfig {
        host,
        port: u16::try_from(port).unwrap_or(default_port),
        user,
        password,
        dbname,
        table,
        sslmode,
        max_age_days: None,
        compress_after_days: None,
        columns,
        hypertable: goflow_writers::pg::ddl::Hypertable::Auto,
        exporter_index: true,
        top_keys: goflow_writers::pg::ddl::TOP_KEYS_DEFAULT,
    };
    Ok((sql, flush))
}

/// Finds the 1-based line of the key at `path` by walking the YAML text by indentation (block
/// style) and within a line (flow style, `{a: {b: 1}}`). Good enough for error messages; `None`
/// when the key is not written (a missing key then points at its parent).
fn find_line(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().map(strip_comment).collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    // The key found last: (line index, column after it, its line's indentation).
    let mut at: Option<(usize, usize, usize)> = None;
    let mut found_line = None;
    for key in path {
        let (start, col, parent_indent) = match at {
            None => (0, 0, None),
            Some((l, c, ind)) => (l, c, Some(ind)),
        };
        // Direct children sit at the indentation of the first content line below the parent.
        let child_indent = lines
            .iter()
            .skip(if at.is_some() { start + 1 } else { 0 })
            .find(|l| !l.trim().is_empty())
            .map(|l| indent_of(l));
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            if line.trim().is_empty() {
                continue;
            }
            let indent = indent_of(line);
            let same_line = at.is_some() && i == start;
            if same_line {
                // Flow style: `parent: {key: ...}` on the parent's own line.
                if let Some(pos) = find_key(line, key, col) {
                    hit = Some((i, pos + key.len() + 1, indent));
                    break;
                }
                continue;
            }
            if parent_indent.is_some_and(|pi| indent <= pi) {
                break;
            }
            if Some(indent) != child_indent {
                continue;
            }
            if let Some(pos) = find_key(line, key, indent) {
                hit = Some((i, pos + key.len() + 1, indent));
                break;
            }
        }
        match hit {
            Some(h) => {
                at = Some(h);
                found_line = Some(h.0 + 1);
            }
            // Point at the deepest key found (the parent of a missing key).
            None => return found_line,
        }
    }
    found_line
}

/// The line without a trailing `# comment` (a `#` at the start or after a space).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b.get(i - 1).is_some_and(|p| p.is_ascii_whitespace())) {
            return line.get(..i).unwrap_or(line);
        }
    }
    line
}

/// Position of `key:` in `line` at or after `from`, as a whole key (preceded by the line start,
/// a space, `{` or `,`; optionally quoted).
fn find_key(line: &str, key: &str, from: usize) -> Option<usize> {
    let hay = line.get(from..)?;
    let mut search = 0;
    while let Some(rel) = hay.get(search..).and_then(|h| h.find(key)) {
        let pos = search + rel;
        let before = hay.get(..pos).and_then(|s| s.chars().last());
        let before_ok = match before {
            None => true,
            Some(c) => c.is_whitespace() || c == '{' || c == ',' || c == '"' || c == '\'',
        };
        let after = hay.get(pos + key.len()..).unwrap_or("");
        let after = after.trim_start_matches(['"', '\'']);
        if before_ok && after.starts_with(':') {
            return Some(from + pos);
        }
        search = pos + key.len();
    }
    None
}

/// `api:` as an address: `IP:PORT`, `localhost:PORT` (127.0.0.1, whatever the resolver
/// prefers), or `HOST:PORT` resolved now (its first address).
pub fn parse_api(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.eq_ignore_ascii_case("localhost") {
        return Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
    }
    if host.is_empty() {
        return None;
    }
    use std::net::ToSocketAddrs as _;
    (host, port).to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_ok(text: &str) -> RunConfig {
        match parse(text, "test.yml", &no_env) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse(text, "test.yml", &no_env) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.0,
        }
    }

    /// The repository's example documents every key; it must load as written.
    #[test]
    fn repo_example_loads() {
        let text = include_str!("../config_example.yml");
        let cfg = parse(text, "config_example.yml", &|k| {
            (k == "SQL_PASSWORD").then(|| "pw".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.backends.is_empty());
        assert_eq!(cfg.receiver.bind.port(), 2055);
        assert_eq!(cfg.api, Some(DEFAULT_API));
        let yes = parse(
            &text.replace("keep_page_cache: false", "keep_page_cache: true"),
            "config_example.yml",
            &|_| None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kept = |c: &RunConfig| {
            c.backends.iter().find_map(|b| match b.kind {
                BackendKind::File {
                    keep_page_cache, ..
                } => Some(keep_page_cache),
                _ => None,
            })
        };
        assert_eq!((kept(&cfg), kept(&yes)), (Some(false), Some(true)));
    }

    /// The held-data and NSEL bounds under `limits:`: defaults, set values, and errors that name
    /// the key.
    #[test]
    fn held_and_nsel_limits() {
        let d = parse_ok("").decoder;
        assert_eq!(
            (
                d.held_bytes,
                d.held_bytes_per_template,
                d.held_max_age_secs,
                d.max_nsel_connections
            ),
            (
                goflow_codec::decoder::HELD_BYTES,
                goflow_codec::decoder::HELD_BYTES_PER_TEMPLATE,
                goflow_codec::decoder::HELD_MAX_AGE_SECS,
                goflow_codec::decoder::NSEL_CONNECTIONS
            )
        );
        let limits = |body: &str| {
            format!(
                "backends:\n  pg:\n    type: postgres\n    config:\n      \
                 SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                 frontends:\n  netflow:\n    backend: pg\n    config:\n      limits:\n        \
                 {body}\n"
            )
        };
        let d = parse_ok(&limits(
            "held_bytes: 1000\n        held_bytes_per_template: 100\n        held_max_age: 30\n        nsel_connections: 0",
        ))
        .decoder;
        assert_eq!(
            (
                d.held_bytes,
                d.held_bytes_per_template,
                d.held_max_age_secs,
                d.max_nsel_connections
            ),
            (1000, 100, 30, 0)
        );
        let e = parse_err(&limits("held_max_age: 0"));
        assert!(
            e.contains("test.yml") && e.contains("limits.held_max_age"),
            "{e}"
        );
        let e = parse_err(&limits("held_bytes: lots"));
        assert!(e.contains("held_bytes"), "{e}");
    }

    /// `columns:` per backend: default all, `legacy`, a list (schema order kept), a comma
    /// string; an unknown column or (SQL) a set without last_switched names the key and file.
    #[test]
    fn backend_columns() {
        use goflow_writers::schema::ColumnSet;
        let base = "backends:\n  pg:\n    type: postgres\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with = |extra: &str| {
            base.replace(
                "SQL_DB: goflow\n",
                &format!("SQL_DB: goflow\n      columns: {extra}\n"),
            )
        };
        let cols = |c: &RunConfig| c.backends[0].columns;
        assert_eq!(cols(&parse_ok(base)), ColumnSet::ALL);
        assert_eq!(cols(&parse_ok(&with("legacy"))), ColumnSet::LEGACY);
        let c = parse_ok(&with("[in_bytes, last_switched, exporter]"));
        assert_eq!(cols(&c).names(), "last_switched,exporter,in_bytes");
        match &c.backends[0].kind {
            BackendKind::Postgres { sql, .. } => assert_eq!(sql.columns, cols(&c)),
            other => panic!("{other:?}"),
        }
        assert_eq!(cols(&parse_ok(&with("\"legacy, sampling_rate\""))).len(), 9);
        let e = parse_err(&with("[last_switched, srcaddr]"));
        assert!(
            e.contains("test.yml")
                && e.contains("backends.pg.config.columns")
                && e.contains("unknown column \"srcaddr\""),
            "{e}"
        );
        let e = parse_err(&with("[src_ip, dst_ip]"));
        assert!(
            e.contains("backends.pg.config.columns") && e.contains("last_switched"),
            "{e}"
        );
        // A file backend may store any set.
        let f = parse_ok(
            "backends:\n  f:\n    type: file\n    config:\n      path: /tmp/x.json\n      \
             columns: [src_ip]\nfrontends:\n  netflow:\n    backend: f\n",
        );
        assert_eq!(cols(&f).names(), "src_ip");
    }

    /// The old Go collector's example loads unchanged; mysql is resolved (it fails only at start).
    #[test]
    fn original_example_loads() {
        let text = include_str!("../tests/data/original-config_example.yml");
        let cfg = parse_ok(text);
        assert_eq!(cfg.backends.len(), 1);
        let b = &cfg.backends[0];
        assert_eq!(b.name, "rdssql");
        assert_eq!(b.kind.type_name(), "mysql");
        match &b.kind {
            BackendKind::Mysql { sql, .. } => {
                assert_eq!(sql.host, "your-sql-server.com");
                assert_eq!(sql.user, "your-sql-username");
                assert_eq!(sql.dbname, "your-database-name");
                assert_eq!(sql.port, DEFAULT_MYSQL_PORT);
                assert_eq!(sql.password, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cfg.unused_backends,
            vec!["dumper".to_owned(), "kafka".to_owned()]
        );
        assert_eq!(cfg.receiver.bind, DEFAULT_LISTEN);
        assert_eq!(cfg.api, Some(DEFAULT_API));
        assert_eq!(cfg.max_age_days, Some(180));
    }

    /// `state_dir`: as written, else systemd's `$STATE_DIRECTORY` (its first path), else
    /// ./goflow-state; an empty value is an error naming the key and line.
    #[test]
    fn state_dir_default_env_and_key() {
        let base = "backends:\n  out: {type: null}\nfrontends:\n  netflow: {backend: out}\n";
        assert_eq!(parse_ok(base).state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let systemd = |k: &str| {
            (k == STATE_DIRECTORY_ENV).then(|| "/var/lib/goflow:/var/lib/other".to_owned())
        };
        let cfg = parse(base, "test.yml", &systemd).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/goflow"));
        let text = format!("{base}state_dir: /srv/goflow\n");
        let cfg = parse(&text, "test.yml", &systemd).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.state_dir, PathBuf::from("/srv/goflow"));
        let e = parse_err(&format!("{base}state_dir: \"\"\n"));
        assert!(e.contains("state_dir") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn issue_format_with_strings_for_numbers() {
        let cfg = parse_ok(
            "backends:\n  out: {type: file, config: {path: /tmp/x.jsonl, flush_rows: \"1000\"}}\n\
             frontends:\n  netflow:\n    config: {bindaddr: 127.0.0.1, bindport: \"9995\", receiver: mmsg,\n\
             \x20            workers: 2, rcvbuf: 33554432}\n    backend: out\n\
             api: off\nutilities: {max_age: \"30\"}\n",
        );
        assert_eq!(
            cfg.receiver.bind,
            "127.0.0.1:9995".parse().unwrap_or(DEFAULT_LISTEN)
        );
        assert_eq!(cfg.receiver.choice, ReceiverChoice::Mmsg);
        assert_eq!(cfg.receiver.workers, 2);
        assert_eq!(cfg.receiver.rcvbuf, 33_554_432);
        assert_eq!(cfg.backends[0].flush.rows, 1000);
        assert_eq!(cfg.api, None);
        assert_eq!(cfg.max_age_days, Some(30));
    }

    #[test]
    fn backend_list_and_password_from_env() {
        let text = "backends:\n  a: {type: null}\n  pg:\n    type: timescale\n    config:\n      \
                    SQL_SERVER: 127.0.0.1\n      SQL_USERNAME: postgres\n      SQL_DB: test\n      \
                    SQL_PASSWORD: fromfile\n      SQL_PORT: \"5433\"\n      SQL_SSLMODE: prefer\n\
                    frontends:\n  netflow:\n    backend: [pg, a]\n";
        let cfg = parse(text, "t.yml", &|k| {
            (k == "SQL_PASSWORD").then(|| "fromenv".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.backends.len(), 2);
        match &cfg.backends[0].kind {
            BackendKind::Postgres {
                timescale: true,
                sql,
                connections,
            } => {
                assert_eq!(*connections, 2, "the default");
                assert_eq!(sql.password.as_deref(), Some("fromenv"));
                assert_eq!(sql.port, 5433);
                assert_eq!(sql.sslmode, SslMode::Prefer);
                assert!(!format!("{sql:?}").contains("fromenv"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cfg.backends[0].flush.rows, DEFAULT_SQL_FLUSH_ROWS);
        assert_eq!(cfg.backends[1].kind.type_name(), "null");
        let cfg = parse_ok(text);
        match &cfg.backends[0].kind {
            BackendKind::Postgres { sql, .. } => {
                assert_eq!(sql.password.as_deref(), Some("fromfile"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// The old collector's Kafka variables win over wrong file values; the boolean forms of
    /// SSL/SSL_VERIFY; the producer keys and the `rdkafka:` passthrough.
    #[test]
    fn kafka_env_wins_and_producer_keys() {
        use goflow_writers::kafka::{Compression, Format, KeyBy};
        let text = "backends:\n  k:\n    type: kafka\n    config:\n      \
                    KAFKA_SERVER: wrong:1\n      KAFKA_TOPIC: wrongtopic\n      \
                    SASL_USER: fileuser\n      SASL_PASSWORD: filepw\n      SSL: \"no\"\n      \
                    SSL_VERIFY: true\n      sasl_mechanism: scram-sha-512\n      \
                    ssl_ca_file: /etc/ca.pem\n      format: json\n      key: flow\n      \
                    compression: zstd\n      flows_per_message: 1\n      \
                    rdkafka: {client.id: me, socket.keepalive.enable: true, retries: 7}\n\
                    frontends:\n  netflow:\n    backend: k\n";
        let env = |k: &str| {
            match k {
                "KAFKA_SERVER" => Some("127.0.0.1:19092"),
                "KAFKA_TOPIC" => Some("flows"),
                "SASL_USER" => Some("envuser"),
                "SASL_PASSWORD" => Some("envpw"),
                "SSL" => Some("YES"),
                "SSL_VERIFY" => Some("0"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let cfg = parse(text, "t.yml", &env).unwrap_or_else(|e| panic!("{e}"));
        let BackendKind::Kafka(k) = &cfg.backends[0].kind else {
            panic!("{:?}", cfg.backends[0].kind);
        };
        assert_eq!(k.server, "127.0.0.1:19092");
        assert_eq!(k.topic, "flows");
        assert_eq!(k.sasl_user.as_deref(), Some("envuser"));
        assert_eq!(k.sasl_password.as_deref(), Some("envpw"));
        assert!(k.ssl);
        assert!(!k.ssl_verify);
        assert_eq!(k.sasl_mechanism, "SCRAM-SHA-512");
        assert_eq!(k.ssl_ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            (k.format, k.key, k.compression, k.flows_per_message),
            (Format::Json, KeyBy::Flow, Compression::Zstd, 1)
        );
        assert!(
            k.rdkafka
                .contains(&("client.id".to_owned(), "me".to_owned()))
        );
        assert!(k.rdkafka.contains(&("retries".to_owned(), "7".to_owned())));
        assert!(
            k.rdkafka
                .contains(&("socket.keepalive.enable".to_owned(), "true".to_owned()))
        );
        assert!(!format!("{cfg:?}").contains("envpw"));
        assert_eq!(cfg.backends[0].kind.target(), "127.0.0.1:19092 topic flows");
        assert_eq!(
            cfg.backends[0].flush.in_flight,
            goflow_writers::kafka::DEFAULT_FLUSHES_IN_FLIGHT
        );

        // Without the environment: the file's values, and its "no" for SSL.
        let cfg = parse_ok(text);
        let BackendKind::Kafka(k) = &cfg.backends[0].kind else {
            panic!();
        };
        assert_eq!(
            (k.server.as_str(), k.ssl, k.ssl_verify),
            ("wrong:1", false, true)
        );

        // A bad value names the key and the line; a bad boolean in the environment names it.
        let bad = text.replace("key: flow", "key: tuple");
        let e = parse(&bad, "t.yml", &no_env)
            .expect_err("bad key")
            .to_string();
        assert!(
            e.contains("backends.k.config.key") && e.contains("line 14"),
            "{e}"
        );
        let e = parse(text, "t.yml", &|k| (k == "SSL").then(|| "maybe".to_owned()))
            .expect_err("bad SSL")
            .to_string();
        assert!(e.contains("SSL") && e.contains("maybe"), "{e}");
        let bad = text.replace("flows_per_message: 1", "flows_per_message: 0");
        assert!(parse(&bad, "t.yml", &no_env).is_err());
        let three = text.replace(
            "flows_per_message: 1",
            "flows_per_message: 1\n      flushes_in_flight: 3",
        );
        assert_eq!(parse_ok(&three).backends[0].flush.in_flight, 3);
        let bad = text.replace(
            "flows_per_message: 1",
            "flows_per_message: 1\n      flushes_in_flight: 0",
        );
        assert!(parse(&bad, "t.yml", &no_env).is_err());
    }

    /// verify-full takes its CA file from SQL_SSLROOTCERT; without it, or with the key under
    /// another mode (where libpq would quietly verify), the error names the key and the file.
    #[test]
    fn sslmode_verify_full_and_root_cert() {
        let base = "backends:\n  pg:\n    type: postgres\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with =
            |extra: &str| base.replace("SQL_DB: goflow\n", &format!("SQL_DB: goflow\n{extra}"));
        let cfg = parse_ok(&with(
            "      SQL_SSLMODE: Verify-Full\n      SQL_SSLROOTCERT: /etc/goflow/ca.pem\n",
        ));
        match &cfg.backends[0].kind {
            BackendKind::Postgres { sql, .. } => assert_eq!(
                sql.sslmode,
                SslMode::VerifyFull {
                    root_cert: PathBuf::from("/etc/goflow/ca.pem")
                }
            ),
            other => panic!("{other:?}"),
        }
        let e = parse_err(&with("      SQL_SSLMODE: verify-full\n"));
        assert!(
            e.contains("test.yml") && e.contains("backends.pg.config.SQL_SSLROOTCERT"),
            "{e}"
        );
        let e = parse_err(&with(
            "      SQL_SSLMODE: require\n      SQL_SSLROOTCERT: ca.pem\n",
        ));
        assert!(
            e.contains("test.yml")
                && e.contains("SQL_SSLROOTCERT")
                && e.contains("verify-full")
                && e.contains("line 9"),
            "{e}"
        );
        let e = parse_err(&with("      SQL_SSLMODE: verify-ca\n"));
        assert!(e.contains("SQL_SSLMODE") && e.contains("verify-ca"), "{e}");
    }

    /// `connections` (postgres and timescale): 1..=16, default 2; out of range, or on a mysql
    /// backend, it is an error naming the key, the file and the line.
    #[test]
    fn hypertable_and_exporter_index() {
        use goflow_writers::pg::ddl::Hypertable;
        let base = "backends:\n  pg:\n    type: postgres\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with =
            |extra: &str| base.replace("SQL_DB: goflow\n", &format!("SQL_DB: goflow\n{extra}"));
        let mode = |c: &RunConfig| match &c.backends[0].kind {
            BackendKind::Postgres { sql, .. } => (sql.hypertable, sql.exporter_index),
            other => panic!("{other:?}"),
        };
        assert_eq!(mode(&parse_ok(base)), (Hypertable::Auto, true));
        assert_eq!(
            mode(&parse_ok(&with(
                "      hypertable: on\n      exporter_index: false\n"
            ))),
            (Hypertable::On, false)
        );
        assert_eq!(
            mode(&parse_ok(&with("      hypertable: off\n"))).0,
            Hypertable::Off
        );
        let e = parse_err(&with("      hypertable: maybe\n"));
        assert!(
            e.contains("backends.pg.config.hypertable") && e.contains("auto, on or off"),
            "{e}"
        );
        let e = parse_err(&with("      hypertable: on\n").replace("type: postgres", "type: mysql"));
        assert!(e.contains("backends.pg.config.hypertable"), "{e}");
    }

    #[test]
    fn top_keys() {
        let base = "backends:\n  pg:\n    type: postgres\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with =
            |extra: &str| base.replace("SQL_DB: goflow\n", &format!("SQL_DB: goflow\n{extra}"));
        let keys = |c: &RunConfig| match &c.backends[0].kind {
            BackendKind::Postgres { sql, .. } => sql.top_keys,
            other => panic!("{other:?}"),
        };
        assert_eq!(keys(&parse_ok(base)), 1000);
        assert_eq!(keys(&parse_ok(&with("      top_keys: 50\n"))), 50);
        assert_eq!(keys(&parse_ok(&with("      top_keys: 0\n"))), 0);
        let e = parse_err(&with("      top_keys: 2000000\n"));
        assert!(e.contains("backends.pg.config.top_keys"), "{e}");
        let e = parse_err(&with("      top_keys: 5\n").replace("type: postgres", "type: mysql"));
        assert!(e.contains("backends.pg.config.top_keys"), "{e}");
    }

    #[test]
    fn compress_after_days() {
        let base = "backends:\n  pg:\n    type: timescale\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with =
            |extra: &str| base.replace("SQL_DB: goflow\n", &format!("SQL_DB: goflow\n{extra}"));
        let days = |c: &RunConfig| match &c.backends[0].kind {
            BackendKind::Postgres { sql, .. } => sql.compress_after_days,
            other => panic!("{other:?}"),
        };
        assert_eq!(days(&parse_ok(base)), None);
        assert_eq!(
            days(&parse_ok(&with("      compress_after_days: 7\n"))),
            Some(7)
        );
        assert_eq!(
            days(&parse_ok(&with("      compress_after_days: 0\n"))),
            None
        );
        let e = parse_err(&with("      compress_after_days: 99999\n"));
        assert!(e.contains("backends.pg.config.compress_after_days"), "{e}");
        let e = parse_err(
            &with("      compress_after_days: 7\n").replace("type: timescale", "type: mysql"),
        );
        assert!(
            e.contains("backends.pg.config.compress_after_days") && e.contains("timescale"),
            "{e}"
        );
    }

    #[test]
    fn pg_connections() {
        let base = "backends:\n  pg:\n    type: postgres\n    config:\n      \
                    SQL_SERVER: db.example\n      SQL_USERNAME: goflow\n      SQL_DB: goflow\n\
                    frontends:\n  netflow:\n    backend: pg\n";
        let with =
            |extra: &str| base.replace("SQL_DB: goflow\n", &format!("SQL_DB: goflow\n{extra}"));
        let connections = |c: &RunConfig| match &c.backends[0].kind {
            BackendKind::Postgres { connections, .. } => *connections,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            connections(&parse_ok(base)),
            DEFAULT_PG_CONNECTIONS as usize
        );
        assert_eq!(connections(&parse_ok(&with("      connections: 1\n"))), 1);
        assert_eq!(
            connections(&parse_ok(&with("      connections: \"16\"\n"))),
            16
        );
        let ts =
            parse_ok(&with("      connections: 3\n").replace("type: postgres", "type: timescale"));
        assert_eq!(ts.backends[0].kind.type_name(), "timescale");
        assert_eq!(connections(&ts), 3);
        for bad in ["0", "17"] {
            let e = parse_err(&with(&format!("      connections: {bad}\n")));
            assert!(
                e.contains("test.yml")
                    && e.contains("backends.pg.config.connections")
                    && e.contains(&format!("{bad} is out of range 1..=16"))
                    && e.contains("line 8"),
                "{e}"
            );
        }
        // MySQL: the same key (default 2), and SQL_SOCKET, which PostgreSQL refuses.
        let my = |text: &str| match parse_ok(&text.replace("type: postgres", "type: mysql"))
            .backends[0]
            .kind
            .clone()
        {
            BackendKind::Mysql {
                connections,
                socket,
                sql,
            } => (connections, socket, sql.port),
            other => panic!("{other:?}"),
        };
        assert_eq!(my(base), (2, None, DEFAULT_MYSQL_PORT));
        let sock = with("      connections: 3\n      SQL_SOCKET: /run/mysqld/mysqld.sock\n");
        assert_eq!(
            my(&sock),
            (3, Some(PathBuf::from("/run/mysqld/mysqld.sock")), 3306)
        );
        let e = parse_err(&with("      SQL_SOCKET: /tmp/s\n"));
        assert!(
            e.contains("backends.pg.config.SQL_SOCKET") && e.contains("only used by mysql"),
            "{e}"
        );
    }

    #[test]
    fn sampling_rates_per_exporter_and_default() {
        let base = "backends:\n  out:\n    type: file\n    config:\n      path: x\n\
                    frontends:\n  netflow:\n    backend: out\n";
        let text = format!(
            "{base}sampling:\n  \"192.0.2.1\": 1000\n  \"2001:db8::1\": \"64\"\n  default: 1\n"
        );
        let cfg = parse(&text, "test.yml", &no_env).map_err(|e| e.0);
        let s = cfg.map(|c| c.decoder.sampling).unwrap_or_default();
        assert_eq!(s.default, Some(1));
        let ip = |t: &str| {
            t.parse::<std::net::IpAddr>()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        };
        assert_eq!(s.exporters.get(&ip("192.0.2.1")), Some(&1000));
        assert_eq!(s.exporters.get(&ip("2001:db8::1")), Some(&64));
        let e = parse_err(&format!("{base}sampling:\n  router1: 100\n"));
        assert!(
            e.contains("sampling.router1") && e.contains("line 10"),
            "{e}"
        );
        let e = parse_err(&format!("{base}sampling:\n  default: 0\n"));
        assert!(
            e.contains("sampling.default") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn log_level_key() {
        let base = "backends:\n  out:\n    type: file\n    config:\n      path: x\n\
                    frontends:\n  netflow:\n    backend: out\n";
        assert_eq!(parse_ok(base).log_level, None);
        let cfg = parse_ok(&format!("{base}log_level: Debug\n"));
        assert_eq!(cfg.log_level, Some(log::LevelFilter::Debug));
        let e = parse_err(&format!("{base}log_level: loud\n"));
        assert!(e.contains("log_level") && e.contains("line 9"), "{e}");
    }

    #[test]
    fn errors_name_key_file_and_line() {
        let base = "backends:\n  out:\n    type: file\n    config:\n      path: x\n\
                    frontends:\n  netflow:\n    config:\n      bindport: 2055\n    backend: out\n";
        // Unknown key.
        let e = parse_err(&base.replace("path: x", "path: x\n      bogus: 1"));
        assert!(
            e.contains("test.yml") && e.contains("bogus") && e.contains("line 6"),
            "{e}"
        );
        // Wrong type.
        let e = parse_err(&base.replace("bindport: 2055", "bindport: [1]"));
        assert!(
            e.contains("test.yml") && e.contains("bindport") && e.contains("line 9"),
            "{e}"
        );
        // Not a number in a string.
        let e = parse_err(&base.replace("bindport: 2055", "bindport: \"20x5\""));
        assert!(e.contains("bindport") && e.contains("line 9"), "{e}");
        // Out of range (a semantic error: the line is found afterwards).
        let e = parse_err(&base.replace("bindport: 2055", "bindport: 70000"));
        assert!(
            e.contains("frontends.netflow.config.bindport") && e.contains("line 9"),
            "{e}"
        );
        // Missing key.
        let e = parse_err(&base.replace("    backend: out\n", ""));
        assert!(
            e.contains("missing field `backend`") && e.contains("line 8"),
            "{e}"
        );
        let e = parse_err(&base.replace("      path: x\n", ""));
        assert!(
            e.contains("backends.out.config.path") && e.contains("missing"),
            "{e}"
        );
        // Unknown backend name.
        let e = parse_err(&base.replace("backend: out", "backend: nope"));
        assert!(
            e.contains("unknown backend name \"nope\"") && e.contains("line 10"),
            "{e}"
        );
        // Unknown backend type.
        let e = parse_err(&base.replace("type: file", "type: sqlite"));
        assert!(e.contains("sqlite") && e.contains("line 3"), "{e}");
        // Bad value.
        let e = parse_err(&base.replace("bindport: 2055", "bindport: 2055\n      receiver: fast"));
        assert!(
            e.contains("receiver") && e.contains("\"fast\"") && e.contains("line 10"),
            "{e}"
        );
        let e = parse_err(&format!("{base}api: localhost\n"));
        assert!(e.contains("api") && e.contains("line 11"), "{e}");
        // Host names with a port are accepted; localhost is loopback IPv4.
        assert_eq!(
            parse_api("localhost:8880"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8880)))
        );
        assert_eq!(
            parse_api("LOCALHOST:1"),
            Some(SocketAddr::from(([127, 0, 0, 1], 1)))
        );
        assert_eq!(
            parse_api("[::1]:9"),
            Some(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 9)))
        );
        assert_eq!(parse_api(":8880"), None);
        assert_eq!(parse_api("localhost:x"), None);
    }

    #[test]
    fn kafka_frontend_alone_and_beside_netflow() {
        let text = "backends:\n  db:\n    type: postgres\n    config: {SQL_SERVER: h, SQL_USERNAME: u, SQL_DB: d}\n\
                    frontends:\n  kafka:\n    config:\n      KAFKA_SERVER: 127.0.0.1:19092\n      \
                    KAFKA_TOPIC: [flows-a, flows-b]\n      group_id: goflow-db\n      \
                    format: json\n      session_timeout_ms: 6000\n      \
                    rdkafka: {fetch.min.bytes: 1000}\n    backend: db\n";
        let cfg = parse_ok(text);
        assert!(
            cfg.netflow.is_none(),
            "a consumer-only config has no netflow frontend"
        );
        let k = cfg.kafka.as_ref().expect("kafka frontend");
        assert_eq!(k.topics, ["flows-a", "flows-b"]);
        assert_eq!(k.group_id, "goflow-db");
        assert_eq!(k.format, goflow_writers::kafka::Format::Json);
        assert_eq!(k.session_timeout_ms, 6000);
        assert_eq!(k.offset_reset, "earliest");
        assert_eq!(k.backends, ["db"]);
        assert_eq!(k.kafka.server, "127.0.0.1:19092");
        assert_eq!(
            k.kafka.rdkafka,
            [("fetch.min.bytes".to_owned(), "1000".to_owned())]
        );
        assert_eq!(cfg.backends.len(), 1);

        // Both frontends; a backend both name is one backend; env wins for the connection.
        let text = "backends:\n  db: {type: null}\n  f: {type: file, config: {path: x}}\n\
                    frontends:\n  netflow:\n    backend: [db, f]\n  kafka:\n    \
                    config: {KAFKA_SERVER: file:1, KAFKA_TOPIC: t}\n    backend: db\n";
        let env = |k: &str| match k {
            "KAFKA_TOPIC" => Some("a, b,a".to_owned()),
            "KAFKA_SERVER" => Some("env:2".to_owned()),
            _ => None,
        };
        let cfg = parse(text, "t.yml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.netflow.as_deref(),
            Some(&["db".to_owned(), "f".to_owned()][..])
        );
        let k = cfg.kafka.as_ref().expect("kafka frontend");
        assert_eq!(k.topics, ["a", "b"]);
        assert_eq!(k.kafka.server, "env:2");
        assert_eq!(k.group_id, DEFAULT_GROUP_ID);
        assert_eq!(k.format, goflow_writers::kafka::Format::Protobuf);
        assert_eq!(
            cfg.backends
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["db", "f"]
        );
        assert!(cfg.unused_backends.is_empty());
    }

    #[test]
    fn kafka_frontend_errors_name_the_key() {
        let base = "backends:\n  db: {type: null}\nfrontends:\n";
        let e = parse_err(&format!("{base}  {{}}\n"));
        assert!(e.contains("names no frontend"), "{e}");
        let e = parse_err(&format!(
            "{base}  kafka:\n    config: {{KAFKA_SERVER: h:1}}\n    backend: db\n"
        ));
        assert!(
            e.contains("frontends.kafka.config.KAFKA_TOPIC: missing"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{base}  kafka:\n    config: {{KAFKA_TOPIC: t}}\n    backend: db\n"
        ));
        assert!(
            e.contains("frontends.kafka.config.KAFKA_SERVER: missing"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{base}  kafka:\n    config: {{KAFKA_SERVER: h:1, KAFKA_TOPIC: t, format: xml}}\n    \
             backend: db\n"
        ));
        assert!(
            e.contains("frontends.kafka.config.format") && e.contains("xml"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{base}  kafka:\n    config: {{KAFKA_SERVER: h:1, KAFKA_TOPIC: \"bad topic\"}}\n    \
             backend: db\n"
        ));
        assert!(e.contains("not a Kafka topic name"), "{e}");
        let e = parse_err(&format!(
            "{base}  kafka:\n    config: {{KAFKA_SERVER: h:1, KAFKA_TOPIC: t}}\n    backend: nope\n"
        ));
        assert!(
            e.contains("frontends.kafka.backend") && e.contains("unknown backend name"),
            "{e}"
        );
    }

    #[test]
    fn find_line_walks_blocks_and_flow_maps() {
        let t = "a:\n  b: 1\n  c:\n    d: 2 # d: no\nb:\n  x: {y: 1, d: 3}\n";
        assert_eq!(find_line(t, &["a", "b"]), Some(2));
        assert_eq!(find_line(t, &["a", "c", "d"]), Some(4));
        assert_eq!(find_line(t, &["b", "x", "d"]), Some(6));
        assert_eq!(find_line(t, &["b", "q"]), Some(5));
        assert_eq!(find_line(t, &["zz"]), None);
    }

    #[test]
    fn defaults_without_a_file() {
        let cfg = RunConfig::defaults();
        assert_eq!(cfg.receiver.bind, DEFAULT_LISTEN);
        assert_eq!(cfg.api, Some(DEFAULT_API));
        assert_eq!(cfg.backends[0].kind.target(), DEFAULT_FILE_PATH);
    }
}
