//! THE flow schema: one table of columns. DDL (PostgreSQL, MySQL) and every encoder (binary
//! COPY, JSON lines, ...) derive from [`COLUMNS`]; column names follow the old Go collector where
//! it had them (`last_switched`, `src_ip`, `in_bytes`, ...).

use std::net::IpAddr;

use goflow_codec::{FlowRecord, UnixMicros};

/// A column's logical type; each backend maps it to its own SQL or wire type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Microsecond timestamp (UTC).
    Time,
    /// IPv4 or IPv6 address.
    Ip,
    /// Unsigned integers of the given width.
    U8,
    U16,
    U32,
    U64,
}

impl ColumnType {
    /// PostgreSQL type. Unsigned values get the next wider signed type; U64 counters use bigint,
    /// and a value above i64::MAX is stored as i64::MAX and counted (`counters_clamped` on the
    /// sink's status; see pg::encode), never wrapped into a negative number.
    pub fn pg_type(self) -> &'static str {
        match self {
            ColumnType::Time => "timestamptz",
            ColumnType::Ip => "inet",
            ColumnType::U8 => "smallint",
            ColumnType::U16 => "integer",
            ColumnType::U32 => "bigint",
            ColumnType::U64 => "bigint",
        }
    }

    /// MySQL/MariaDB type.
    pub fn mysql_type(self) -> &'static str {
        match self {
            ColumnType::Time => "DATETIME(6)",
            ColumnType::Ip => "VARBINARY(16)",
            ColumnType::U8 => "TINYINT UNSIGNED",
            ColumnType::U16 => "SMALLINT UNSIGNED",
            ColumnType::U32 => "INT UNSIGNED",
            ColumnType::U64 => "BIGINT UNSIGNED",
        }
    }
}

/// One column's value for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Uint(u64),
    Ip(IpAddr),
    Time(UnixMicros),
}

impl Value {
    fn opt<T: Into<u64>>(v: Option<T>) -> Value {
        v.map_or(Value::Null, |v| Value::Uint(v.into()))
    }
}

/// One column of the flow table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// SQL column name and JSON key.
    pub name: &'static str,
    pub ty: ColumnType,
    /// Whether a record may lack the value (SQL NULL, JSON null).
    pub nullable: bool,
    /// How to read the value from a record.
    pub read: fn(&FlowRecord<'_>) -> Value,
}

const fn col(
    name: &'static str,
    ty: ColumnType,
    nullable: bool,
    read: fn(&FlowRecord<'_>) -> Value,
) -> Column {
    Column {
        name,
        ty,
        nullable,
        read,
    }
}

use ColumnType as T;

/// The flow table, in storage order.
pub const COLUMNS: &[Column] = &[
    col("time_received", T::Time, false, |r| {
        Value::Time(r.time_received())
    }),
    col("first_switched", T::Time, false, |r| {
        Value::Time(r.first_switched())
    }),
    col("last_switched", T::Time, false, |r| {
        Value::Time(r.last_switched())
    }),
    col("exporter", T::Ip, false, |r| Value::Ip(r.exporter())),
    col("observation_domain", T::U32, false, |r| {
        Value::Uint(r.observation_domain().into())
    }),
    col("sampling_rate", T::U32, false, |r| {
        Value::Uint(r.sampling_rate().into())
    }),
    col("src_ip", T::Ip, true, |r| {
        r.src_ip().map_or(Value::Null, Value::Ip)
    }),
    col("dst_ip", T::Ip, true, |r| {
        r.dst_ip().map_or(Value::Null, Value::Ip)
    }),
    col("next_hop", T::Ip, true, |r| {
        r.next_hop().map_or(Value::Null, Value::Ip)
    }),
    col("src_port", T::U16, true, |r| Value::opt(r.src_port())),
    col("dst_port", T::U16, true, |r| Value::opt(r.dst_port())),
    col("protocol", T::U8, true, |r| Value::opt(r.protocol())),
    col("in_bytes", T::U64, true, |r| Value::opt(r.in_bytes())),
    col("in_pkts", T::U64, true, |r| Value::opt(r.in_pkts())),
    col("tcp_flags", T::U16, true, |r| Value::opt(r.tcp_flags())),
    col("tos", T::U8, true, |r| Value::opt(r.tos())),
    col("input_if", T::U32, true, |r| Value::opt(r.input_if())),
    col("output_if", T::U32, true, |r| Value::opt(r.output_if())),
    col("src_as", T::U32, true, |r| Value::opt(r.src_as())),
    col("dst_as", T::U32, true, |r| Value::opt(r.dst_as())),
    col("src_mask", T::U8, true, |r| Value::opt(r.src_mask())),
    col("dst_mask", T::U8, true, |r| Value::opt(r.dst_mask())),
    col("direction", T::U8, true, |r| Value::opt(r.direction())),
    col("ip_version", T::U8, true, |r| Value::opt(r.ip_version())),
];

/// The column by name.
pub fn column(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_include_the_old_collectors() {
        let mut names: Vec<_> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        for old in [
            "last_switched",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "in_bytes",
            "in_pkts",
            "protocol",
        ] {
            assert!(column(old).is_some(), "{old}");
        }
    }
}
