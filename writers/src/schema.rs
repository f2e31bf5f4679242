//! THE flow schema: one table of columns. DDL (PostgreSQL, MySQL) and every encoder (binary
//! COPY, JSON lines, ...) derive from [`COLUMNS`]; column names follow the old Go collector where
//! it had them (`last_switched`, `src_ip`, `in_bytes`, ...), and goflow2's otherwise (`etype`).
//!
//! New columns go at the end: an existing table is extended with `ADD COLUMN` at start.
//! `sampling_rate` is never 0 (1 when no rate is known); `sampling_source` says where it came
//! from (`unknown`, `v5_header`, `record`, `sampler`, `exporter`, `config`).

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
    /// A MAC address (6 bytes).
    Mac,
    /// A short label from a closed set (e.g. `sampling_source`).
    Text,
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
            ColumnType::Mac => "macaddr",
            ColumnType::Text => "text",
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
            ColumnType::Mac => "CHAR(17)",
            ColumnType::Text => "VARCHAR(16)",
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
    /// A MAC address (JSON and MySQL: `aa:bb:cc:dd:ee:ff`).
    Mac([u8; 6]),
    /// A label from a closed set of plain ASCII words (never needs escaping).
    Str(&'static str),
}

impl Value {
    #[inline(always)]
    pub(crate) fn opt<T: Into<u64>>(v: Option<T>) -> Value {
        v.map_or(Value::Null, |v| Value::Uint(v.into()))
    }

    #[inline(always)]
    pub(crate) fn ip(v: Option<IpAddr>) -> Value {
        v.map_or(Value::Null, Value::Ip)
    }

    #[inline(always)]
    pub(crate) fn mac(v: Option<[u8; 6]>) -> Value {
        v.map_or(Value::Null, Value::Mac)
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

/// The flow table, in storage order, one line per column: `name: Type, nullable, accessor;`.
/// This list is the schema's one definition. [`COLUMNS`] is built from it for code that walks
/// the columns at run time (DDL, tests); the hot encoders (JSON lines, binary COPY) expand it
/// with a macro of their own, so each column's accessor is inlined into straight-line code
/// instead of being called through a function pointer per column.
macro_rules! flow_columns {
    ($then:ident) => {
        $then! {
            time_received: Time, false, |r| Value::Time(r.time_received());
            first_switched: Time, false, |r| Value::Time(r.first_switched());
            last_switched: Time, false, |r| Value::Time(r.last_switched());
            exporter: Ip, false, |r| Value::Ip(r.exporter());
            observation_domain: U32, false, |r| Value::Uint(r.observation_domain().into());
            sampling_rate: U32, false, |r| Value::Uint(r.sampling_rate().into());
            src_ip: Ip, true, |r| r.src_ip().map_or(Value::Null, Value::Ip);
            dst_ip: Ip, true, |r| r.dst_ip().map_or(Value::Null, Value::Ip);
            next_hop: Ip, true, |r| r.next_hop().map_or(Value::Null, Value::Ip);
            src_port: U16, true, |r| Value::opt(r.src_port());
            dst_port: U16, true, |r| Value::opt(r.dst_port());
            protocol: U8, true, |r| Value::opt(r.protocol());
            in_bytes: U64, true, |r| Value::opt(r.in_bytes());
            in_pkts: U64, true, |r| Value::opt(r.in_pkts());
            tcp_flags: U16, true, |r| Value::opt(r.tcp_flags());
            tos: U8, true, |r| Value::opt(r.tos());
            input_if: U32, true, |r| Value::opt(r.input_if());
            output_if: U32, true, |r| Value::opt(r.output_if());
            src_as: U32, true, |r| Value::opt(r.src_as());
            dst_as: U32, true, |r| Value::opt(r.dst_as());
            src_mask: U8, true, |r| Value::opt(r.src_mask());
            dst_mask: U8, true, |r| Value::opt(r.dst_mask());
            direction: U8, true, |r| Value::opt(r.direction());
            ip_version: U8, true, |r| Value::opt(r.ip_version());
            sampling_source: Text, true, |r| Value::Str(r.sampling_source().as_str());
            out_bytes: U64, true, |r| Value::opt(r.out_bytes());
            out_pkts: U64, true, |r| Value::opt(r.out_pkts());
            fw_event: U8, true, |r| Value::opt(r.fw_event());
            icmp_type: U8, true, |r| Value::opt(r.icmp_type());
            icmp_code: U8, true, |r| Value::opt(r.icmp_code());
            vlan: U16, true, |r| Value::opt(r.vlan());
            post_vlan: U16, true, |r| Value::opt(r.post_vlan());
            src_mac: Mac, true, |r| Value::mac(r.src_mac());
            dst_mac: Mac, true, |r| Value::mac(r.dst_mac());
            mpls_label: U32, true, |r| Value::opt(r.mpls_label());
            bgp_next_hop: Ip, true, |r| Value::ip(r.bgp_next_hop());
            post_nat_src_ip: Ip, true, |r| Value::ip(r.post_nat_src_ip());
            post_nat_dst_ip: Ip, true, |r| Value::ip(r.post_nat_dst_ip());
            post_nat_src_port: U16, true, |r| Value::opt(r.post_nat_src_port());
            post_nat_dst_port: U16, true, |r| Value::opt(r.post_nat_dst_port());
            ingress_vrf: U32, true, |r| Value::opt(r.ingress_vrf());
            egress_vrf: U32, true, |r| Value::opt(r.egress_vrf());
            flow_end_reason: U8, true, |r| Value::opt(r.flow_end_reason());
            forwarding_status: U8, true, |r| Value::opt(r.forwarding_status());
            etype: U16, true, |r| Value::opt(r.etype());
        }
    };
}
pub(crate) use flow_columns;

/// Calls a column's accessor from [`flow_columns!`] directly (generic, so it is inlined).
#[inline(always)]
pub(crate) fn read<F: Fn(&FlowRecord<'_>) -> Value>(rec: &FlowRecord<'_>, accessor: F) -> Value {
    accessor(rec)
}

macro_rules! column_table {
    ($($name:ident: $ty:ident, $nullable:literal, $read:expr;)*) => {
        /// The flow table, in storage order.
        pub const COLUMNS: &[Column] = &[
            $(col(stringify!($name), ColumnType::$ty, $nullable, $read),)*
        ];

        /// Each column's position in [`COLUMNS`] (and its bit in a [`ColumnSet`]).
        #[allow(non_camel_case_types, reason = "the columns' own names")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Col {
            $($name,)*
        }
    };
}
flow_columns!(column_table);

const _: () = assert!(COLUMNS.len() <= 64, "a ColumnSet is a 64-bit mask");

/// How an encoder writes a row's columns, chosen once per [`ColumnSet`]: `All` and `Legacy` are
/// the encoder's straight-line code (membership decided at compile time), `Plan` a precomputed
/// list of the encoder's per-column writers `F` (one per column of the set, in schema order).
#[derive(Clone, Debug, Default)]
pub enum RowPlan<F> {
    #[default]
    All,
    Legacy,
    Plan(std::sync::Arc<[F]>),
}

impl<F: Copy> RowPlan<F> {
    /// The plan of `set`, from the encoder's writer for each of [`COLUMNS`].
    pub fn new(set: ColumnSet, writers: &[F; COLUMNS.len()]) -> Self {
        match set {
            ColumnSet::ALL => RowPlan::All,
            ColumnSet::LEGACY => RowPlan::Legacy,
            _ => RowPlan::Plan(Self::writers(set, writers)),
        }
    }

    /// The per-column writers of `set` (what `Plan` holds; tests compare it with the
    /// straight-line code of the two common sets).
    pub fn writers(set: ColumnSet, writers: &[F; COLUMNS.len()]) -> std::sync::Arc<[F]> {
        COLUMNS
            .iter()
            .zip(writers)
            .filter(|(c, _)| set.contains(c.name))
            .map(|(_, f)| *f)
            .collect()
    }
}

/// The column by name.
pub fn column(name: &str) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.name == name)
}

/// The old Go collector's eight columns (the `legacy` shorthand of `columns:`).
pub const LEGACY_COLUMNS: [&str; 8] = [
    "last_switched",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "in_bytes",
    "in_pkts",
    "protocol",
];

/// The columns one backend stores (its `columns:` setting), always in schema order: a bit per
/// column of [`COLUMNS`]. DDL, COPY / LOAD DATA column lists and every encoder follow it; the
/// encoders pick their row code once per set (a straight-line expansion for [`ColumnSet::ALL`]
/// and [`ColumnSet::LEGACY`], a precomputed list of per-column writers for any other set), so
/// no record tests a column's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColumnSet(u64);

impl Default for ColumnSet {
    fn default() -> Self {
        ColumnSet::ALL
    }
}

impl ColumnSet {
    /// Every column (the default).
    pub const ALL: ColumnSet = ColumnSet(if COLUMNS.len() == 64 {
        u64::MAX
    } else {
        (1u64 << COLUMNS.len()) - 1
    });
    /// The old collector's eight columns.
    pub const LEGACY: ColumnSet = ColumnSet(
        Col::last_switched.bit()
            | Col::src_ip.bit()
            | Col::dst_ip.bit()
            | Col::src_port.bit()
            | Col::dst_port.bit()
            | Col::in_bytes.bit()
            | Col::in_pkts.bit()
            | Col::protocol.bit(),
    );

    /// The set's bits (bit `i` = `COLUMNS[i]`).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// A set from column names and the shorthands `all` and `legacy` (order and repeats do not
    /// matter: the table keeps schema order). An unknown name is an error naming it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<ColumnSet, String> {
        let mut bits = 0u64;
        for n in names {
            let n = n.as_ref().trim();
            bits |= match n {
                "all" => ColumnSet::ALL.0,
                "legacy" => ColumnSet::LEGACY.0,
                _ => match COLUMNS.iter().position(|c| c.name == n) {
                    Some(i) => 1 << i,
                    None => {
                        return Err(format!(
                            "unknown column {n:?} (the columns: {}; or all, legacy)",
                            COLUMNS
                                .iter()
                                .map(|c| c.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                },
            };
        }
        if bits == 0 {
            return Err("no columns (leave the key out for all of them)".to_owned());
        }
        Ok(ColumnSet(bits))
    }

    pub fn contains(self, name: &str) -> bool {
        COLUMNS
            .iter()
            .position(|c| c.name == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn is_all(self) -> bool {
        self == ColumnSet::ALL
    }

    /// Columns in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set's columns in schema order.
    pub fn columns(self) -> impl Iterator<Item = &'static Column> {
        COLUMNS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, c)| c)
    }

    /// The set's column names, comma-separated (for logs, /status and the spool format).
    pub fn names(self) -> String {
        self.columns().map(|c| c.name).collect::<Vec<_>>().join(",")
    }

    /// The longest row this set can take: `len_of` is a column's widest encoding.
    pub fn max_len(self, len_of: impl Fn(&Column) -> usize) -> usize {
        self.columns().map(len_of).sum()
    }
}

impl Col {
    /// The column's bit in a [`ColumnSet`].
    pub const fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// Whether a column (by its [`Col`] bit) is in a compile-time set mask: the encoders' const
/// generic row functions test this, and the branch folds away.
#[inline(always)]
pub(crate) const fn in_mask(mask: u64, col: Col) -> bool {
    mask & col.bit() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_sets() {
        assert_eq!(ColumnSet::ALL.len(), COLUMNS.len());
        assert_eq!(ColumnSet::LEGACY.len(), 8);
        let legacy: Vec<_> = ColumnSet::LEGACY.columns().map(|c| c.name).collect();
        let mut want = LEGACY_COLUMNS.to_vec();
        want.sort_by_key(|n| COLUMNS.iter().position(|c| c.name == *n));
        assert_eq!(legacy, want);
        assert_eq!(ColumnSet::parse(&["legacy"]), Ok(ColumnSet::LEGACY));
        assert_eq!(ColumnSet::parse(&["all", "src_ip"]), Ok(ColumnSet::ALL));
        let s = ColumnSet::parse(&["dst_port", "time_received", "dst_port"]);
        assert_eq!(
            s.map(|s| s.names()),
            Ok("time_received,dst_port".to_owned())
        );
        let e = ColumnSet::parse(&["src_ip", "srcip"]).expect_err("unknown");
        assert!(e.contains("\"srcip\"") && e.contains("legacy"), "{e}");
        assert!(ColumnSet::parse::<&str>(&[]).is_err());
        for (i, c) in COLUMNS.iter().enumerate() {
            assert!(ColumnSet(1 << i).contains(c.name));
        }
    }

    #[test]
    fn names_are_unique_and_include_the_old_collectors() {
        let mut names: Vec<_> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        for old in LEGACY_COLUMNS {
            assert!(column(old).is_some(), "{old}");
        }
    }
}
