//! MySQL / MariaDB `LOAD DATA` text rows, pure: one line per record written straight from the
//! [`FlowRecord`] accessors that [`schema::COLUMNS`](crate::schema::COLUMNS) names, in schema
//! order, for the statement [`super::ddl::load_statement`] builds:
//!
//! ```text
//! LOAD DATA LOCAL INFILE '...' INTO TABLE t CHARACTER SET binary
//!   FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' (col, col, ...)
//! ```
//!
//! Format (MySQL reference manual, "LOAD DATA Statement", field and line handling): fields are
//! separated by TAB, rows end with LF, NULL is `\N`. With `ESCAPED BY '\\'` the server turns
//! `\0` into NUL, `\t` TAB, `\n` LF, `\r` CR, `\\` backslash and `\Z` Ctrl-Z (0x1A); those six
//! bytes are escaped wherever they occur in a raw address (`VARBINARY(16)`: 4 bytes for IPv4,
//! 16 for IPv6, so `INET6_NTOA()` reads both). `CHARACTER SET binary` keeps the server from
//! converting the address bytes. Integers are decimal; times are `YYYY-MM-DD HH:MM:SS.ffffff`
//! UTC for `DATETIME(6)`.
//!
//! Policy for values the column type cannot hold (never wrapped, never left to the server's
//! silent truncation): a number above its column's unsigned maximum is written as the maximum
//! and counted; a time outside DATETIME's range (1000-01-01 .. 9999-12-31) is clamped into it
//! and counted. Both counts are per encoder and process-wide ([`clamped_counters_total`],
//! [`clamped_times_total`], shown on the sink's status). BIGINT UNSIGNED holds every u64, so
//! the 64-bit counters are stored exactly.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use goflow_codec::{FlowRecord, UnixMicros};

use crate::json::civil_from_days;

use crate::schema::{self, COLUMNS, ColumnSet, ColumnType, RowPlan, Value, flow_columns};
use crate::sink::RowEncoder;

/// DATETIME's range in Unix microseconds: 1000-01-01 00:00:00 ..= 9999-12-31 23:59:59.999999.
pub const DATETIME_MIN_US: UnixMicros = -30_610_224_000_000_000;
pub const DATETIME_MAX_US: UnixMicros = 253_402_300_799_999_999;

/// Bytes one time field takes: `YYYY-MM-DD HH:MM:SS.ffffff`.
const TIME_LEN: usize = 26;

/// The longest a row can be: every column at its widest (an IPv6 address whose 16 bytes all
/// need an escape), the separators and the line end.
pub const ROW_LEN_MAX: usize = row_len_max();

const fn row_len_max() -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < COLUMNS.len() {
        len += 1 + match COLUMNS[i].ty {
            ColumnType::Time => TIME_LEN,
            ColumnType::Ip => 32,
            ColumnType::U8 => 3,
            ColumnType::U16 => 5,
            ColumnType::U32 => 10,
            ColumnType::U64 => 20,
            ColumnType::Mac => 17,
            ColumnType::Text => 16,
        };
        i += 1;
    }
    len
}

/// For every byte, the letter that follows the backslash in its escape, or 0 when the byte is
/// written as it is.
const ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[0x00] = b'0';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0d] = b'r';
    t[0x1a] = b'Z';
    t[0x5c] = b'\\';
    t
};

static CLAMPED_COUNTERS_TOTAL: AtomicU64 = AtomicU64::new(0);
static CLAMPED_TIMES_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Numbers clamped to their column's maximum by every encoder of this process.
pub fn clamped_counters_total() -> u64 {
    CLAMPED_COUNTERS_TOTAL.load(Ordering::Relaxed)
}

/// Times clamped into DATETIME's range by every encoder of this process.
pub fn clamped_times_total() -> u64 {
    CLAMPED_TIMES_TOTAL.load(Ordering::Relaxed)
}

/// Encodes records as LOAD DATA lines. One per worker; `Clone` gives a copy with the same
/// counts.
#[derive(Clone, Debug, Default)]
pub struct MysqlRowEncoder {
    clamped_counters: u64,
    clamped_times: u64,
    /// The `YYYY-MM-DD ` of the last two days seen, by day parity (around midnight a record's
    /// times straddle two days).
    days: [Option<(i64, [u8; 11])>; 2],
    /// The row code of the column set.
    rows: Rows,
}

/// Writes one column's field and its TAB.
type ColumnFn = fn(&mut MysqlRowEncoder, &FlowRecord<'_>, &mut BytesMut);

/// How a line's fields are written, chosen once per column set: straight-line code for all
/// columns and for the old collector's eight, a precomputed list of per-column writers for any
/// other set (LOAD DATA names the same columns: [`super::ddl::plan_columns_for`]).
type Rows = RowPlan<ColumnFn>;

const ALL: u64 = ColumnSet::ALL.bits();
const LEGACY: u64 = ColumnSet::LEGACY.bits();

/// A fresh row encoder of every column.
pub fn encoder() -> MysqlRowEncoder {
    MysqlRowEncoder::default()
}

/// A fresh row encoder of the columns in `set`.
pub fn encoder_for(set: ColumnSet) -> MysqlRowEncoder {
    let rows = RowPlan::new(set, &COLUMN_FNS);
    MysqlRowEncoder {
        rows,
        ..MysqlRowEncoder::default()
    }
}

impl MysqlRowEncoder {
    /// Numbers this encoder clamped to their column's maximum.
    pub fn clamped_counters(&self) -> u64 {
        self.clamped_counters
    }

    /// Times this encoder clamped into DATETIME's range.
    pub fn clamped_times(&self) -> u64 {
        self.clamped_times
    }

    /// Appends one line for `rec`.
    #[inline]
    pub fn encode_row(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        out.reserve(ROW_LEN_MAX);
        match &self.rows {
            Rows::All => self.put_columns::<ALL>(rec, out),
            Rows::Legacy => self.put_columns::<LEGACY>(rec, out),
            Rows::Plan(_) => {
                // Moved out for the walk (the writers take the encoder), then put back.
                if let Rows::Plan(plan) = std::mem::take(&mut self.rows) {
                    for put in plan.iter() {
                        put(self, rec, out);
                    }
                    self.rows = Rows::Plan(plan);
                }
            }
        }
        // Every field was followed by a TAB: the last one becomes the line end.
        if let Some(last) = out.last_mut() {
            *last = b'\n';
        }
    }

    #[inline(always)]
    fn put_value(&mut self, ty: ColumnType, value: Value, out: &mut BytesMut) {
        match value {
            Value::Null => out.put_slice(b"\\N"),
            Value::Uint(v) => {
                let max = match ty {
                    ColumnType::U8 => u64::from(u8::MAX),
                    ColumnType::U16 => u64::from(u16::MAX),
                    ColumnType::U32 => u64::from(u32::MAX),
                    ColumnType::U64
                    | ColumnType::Time
                    | ColumnType::Ip
                    | ColumnType::Mac
                    | ColumnType::Text => u64::MAX,
                };
                let v = if v > max {
                    self.clamped_counters += 1;
                    CLAMPED_COUNTERS_TOTAL.fetch_add(1, Ordering::Relaxed);
                    max
                } else {
                    v
                };
                out.put_slice(itoa::Buffer::new().format(v).as_bytes());
            }
            Value::Ip(IpAddr::V4(v4)) => put_escaped(&v4.octets(), out),
            Value::Ip(IpAddr::V6(v6)) => put_escaped(&v6.octets(), out),
            Value::Time(t) => self.put_time(t, out),
            // `aa:bb:cc:dd:ee:ff` and the schema's plain-word labels: nothing to escape.
            Value::Mac(m) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut b = [b':'; 17];
                for (i, x) in m.iter().enumerate() {
                    b[3 * i] = HEX[usize::from(x >> 4)];
                    b[3 * i + 1] = HEX[usize::from(x & 0xf)];
                }
                out.put_slice(&b);
            }
            Value::Str(text) => out.put_slice(text.as_bytes().get(..16).unwrap_or(text.as_bytes())),
        }
        out.put_u8(b'\t');
    }

    /// Appends `t` as a DATETIME(6) literal's text (for SQL that compares times).
    pub fn encode_time(&mut self, t: UnixMicros, out: &mut BytesMut) {
        self.put_time(t, out);
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff`, UTC, clamped into DATETIME's range.
    #[inline]
    fn put_time(&mut self, t: UnixMicros, out: &mut BytesMut) {
        let t = if (DATETIME_MIN_US..=DATETIME_MAX_US).contains(&t) {
            t
        } else {
            self.clamped_times += 1;
            CLAMPED_TIMES_TOTAL.fetch_add(1, Ordering::Relaxed);
            t.clamp(DATETIME_MIN_US, DATETIME_MAX_US)
        };
        let secs = t.div_euclid(1_000_000);
        let us = t.rem_euclid(1_000_000) as u32;
        let day = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let slot = &mut self.days[(day & 1) as usize];
        let date = match *slot {
            Some((d, date)) if d == day => date,
            _ => {
                let date = date_prefix(day);
                *slot = Some((day, date));
                date
            }
        };
        let mut b = [0u8; TIME_LEN];
        b[..11].copy_from_slice(&date);
        put_two(&mut b[11..13], sod / 3600);
        b[13] = b':';
        put_two(&mut b[14..16], sod / 60 % 60);
        b[16] = b':';
        put_two(&mut b[17..19], sod % 60);
        b[19] = b'.';
        put_two(&mut b[20..22], us / 10_000);
        put_two(&mut b[22..24], us / 100 % 100);
        put_two(&mut b[24..26], us % 100);
        out.put_slice(&b);
    }
}

/// `YYYY-MM-DD ` of a day since 1970-01-01 (years 1000..=9999 after clamping).
fn date_prefix(day: i64) -> [u8; 11] {
    let (y, m, d) = civil_from_days(day);
    let y = y.clamp(0, 9999) as u32;
    let mut b = *b"0000-00-00 ";
    put_two(&mut b[0..2], y / 100);
    put_two(&mut b[2..4], y % 100);
    put_two(&mut b[5..7], m);
    put_two(&mut b[8..10], d);
    b
}

/// Two decimal digits of `v` (0..=99) into `dst` (two bytes).
#[inline(always)]
fn put_two(dst: &mut [u8], v: u32) {
    if let [hi, lo] = dst {
        *hi = b'0' + (v / 10 % 10) as u8;
        *lo = b'0' + (v % 10) as u8;
    }
}

/// Raw bytes with LOAD DATA's escapes (see the module docs).
#[inline]
fn put_escaped(bytes: &[u8], out: &mut BytesMut) {
    if bytes.iter().all(|b| ESCAPES[usize::from(*b)] == 0) {
        out.put_slice(bytes);
        return;
    }
    for &b in bytes {
        match ESCAPES[usize::from(b)] {
            0 => out.put_u8(b),
            letter => out.put_slice(&[b'\\', letter]),
        }
    }
}

macro_rules! load_columns {
    ($($name:ident: $ty:ident, $nullable:literal, $read:expr;)*) => {
        impl MysqlRowEncoder {
            /// The fields of the set `MASK`, each with a TAB, in schema order, each accessor
            /// inlined.
            #[inline(always)]
            fn put_columns<const MASK: u64>(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
                $(
                    if schema::in_mask(MASK, schema::Col::$name) {
                        self.put_value(ColumnType::$ty, schema::read(rec, $read), out);
                    }
                )*
            }
        }

        /// One writer per column, in schema order (for sets other than all and legacy).
        const COLUMN_FNS: [ColumnFn; COLUMNS.len()] = [
            $({
                fn put(e: &mut MysqlRowEncoder, rec: &FlowRecord<'_>, out: &mut BytesMut) {
                    e.put_value(ColumnType::$ty, schema::read(rec, $read), out);
                }
                put
            },)*
        ];
    };
}
flow_columns!(load_columns);

impl RowEncoder for MysqlRowEncoder {
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        self.encode_row(rec, out);
    }
}

/// Undoes LOAD DATA's escaping of one field (`None` for `\N`): the reading the server does, for
/// tests and tools.
pub fn unescape_field(field: &[u8]) -> Option<Vec<u8>> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut it = field.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'0') => out.push(0),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'Z') => out.push(0x1a),
            Some(b'b') => out.push(0x08),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use goflow_codec::{PacketContext, Plan, Sampling, SamplingSource, Slot, TimeKind};

    use super::*;

    /// 2023-11-14T22:13:20.123456Z.
    const T: UnixMicros = 1_700_000_000_123_456;

    fn ctx(exporter: IpAddr) -> PacketContext {
        PacketContext {
            exporter,
            observation_domain: 7,
            version: 10,
            export_time_us: T,
            sys_uptime_ms: 0,
            received_us: T + 1,
            system_init_ms: None,
        }
    }

    /// Splits one encoded line into its raw fields, checking the framing.
    fn fields(line: &[u8]) -> Vec<&[u8]> {
        assert_eq!(line.last(), Some(&b'\n'), "line end");
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "no raw LF inside a line");
        let f: Vec<&[u8]> = body.split(|b| *b == b'\t').collect();
        assert_eq!(f.len(), COLUMNS.len());
        f
    }

    fn field<'a>(fields: &[&'a [u8]], name: &str) -> &'a [u8] {
        let i = COLUMNS.iter().position(|c| c.name == name).expect("column");
        fields[i]
    }

    fn time_text(t: UnixMicros) -> String {
        let mut out = BytesMut::new();
        encoder().put_time(t, &mut out);
        String::from_utf8(out.to_vec()).expect("ascii")
    }

    #[test]
    fn column_sets_write_their_fields_of_the_full_line() {
        let plan = Plan {
            record_len: 7,
            dst_ip: Slot::new(0, 4),
            src_port: Slot::new(4, 2),
            protocol: Slot::new(6, 1),
            ..Plan::EMPTY
        };
        let bytes = [198, 51, 100, 7, 1, 187, 6];
        let c = ctx(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let line = |mut e: MysqlRowEncoder| {
            let mut out = BytesMut::new();
            e.encode_row(&rec, &mut out);
            let body = out.strip_suffix(b"\n").expect("line end").to_vec();
            body.split(|b| *b == b'\t')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        let full = line(encoder());
        assert_eq!(full.len(), COLUMNS.len());
        let custom = ColumnSet::parse(&["etype", "last_switched", "dst_port"]).expect("set");
        for set in [ColumnSet::LEGACY, custom] {
            let want: Vec<_> = COLUMNS
                .iter()
                .zip(&full)
                .filter(|(c, _)| set.contains(c.name))
                .map(|(_, f)| f.clone())
                .collect();
            assert_eq!(line(encoder_for(set)), want, "{}", set.names());
        }
    }

    #[test]
    fn times_are_utc_datetime6() {
        assert_eq!(time_text(T), "2023-11-14 22:13:20.123456");
        assert_eq!(time_text(0), "1970-01-01 00:00:00.000000");
        assert_eq!(time_text(951_782_400_000_001), "2000-02-29 00:00:00.000001");
        assert_eq!(time_text(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(time_text(DATETIME_MAX_US), "9999-12-31 23:59:59.999999");
        assert_eq!(time_text(DATETIME_MIN_US), "1000-01-01 00:00:00.000000");
    }

    #[test]
    fn times_outside_datetime_are_clamped_and_counted() {
        let before = clamped_times_total();
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.put_time(i64::MIN, &mut out);
        enc.put_time(i64::MAX, &mut out);
        assert_eq!(
            &out[..],
            b"1000-01-01 00:00:00.0000009999-12-31 23:59:59.999999"
        );
        assert_eq!(enc.clamped_times(), 2);
        assert!(clamped_times_total() >= before + 2);
    }

    #[test]
    fn absent_fields_are_null_and_the_line_is_framed() {
        let plan = Plan::EMPTY;
        let c = ctx(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let rec = FlowRecord::new(&[], &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        let f = fields(&out);
        // No time fields in the plan: first/last fall back to the export time.
        assert_eq!(field(&f, "first_switched"), b"2023-11-14 22:13:20.123456");
        assert_eq!(field(&f, "last_switched"), b"2023-11-14 22:13:20.123456");
        assert_eq!(field(&f, "time_received"), b"2023-11-14 22:13:20.123457");
        assert_eq!(field(&f, "exporter"), b"\xc0\\0\x02\x01", "0x00 escaped");
        assert_eq!(field(&f, "observation_domain"), b"7");
        // Unknown sampling is 1 (so SUM(in_bytes * sampling_rate) counts it), not NULL.
        assert_eq!(field(&f, "sampling_rate"), b"1");
        assert_eq!(field(&f, "sampling_source"), b"unknown");
        for name in ["src_ip", "src_port", "in_bytes", "ip_version", "direction"] {
            assert_eq!(field(&f, name), b"\\N", "{name}");
        }
    }

    /// The exact bytes of a whole line (v6 addresses, a port, a protocol, a sampling rate).
    #[test]
    fn golden_v6_line() {
        let plan = Plan {
            record_len: 23,
            src_ip: Slot::new(0, 16),
            dst_ip: Slot::new(16, 4),
            src_port: Slot::new(20, 2),
            protocol: Slot::new(22, 1),
            ..Plan::EMPTY
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().expect("v6").octets());
        bytes.extend_from_slice(&[198, 51, 100, 7]);
        bytes.extend_from_slice(&443u16.to_be_bytes());
        bytes.push(6);
        let c = ctx(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let sampling = Sampling {
            rate: 100,
            source: SamplingSource::Record,
        };
        let rec = FlowRecord::new(&bytes, &plan, &c, sampling);
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        let mut want: Vec<u8> = Vec::new();
        let mut push = |name: &str, v: &[u8]| {
            assert_eq!(
                COLUMNS[want.iter().filter(|b| **b == b'\t').count()].name,
                name
            );
            want.extend_from_slice(v);
            want.push(b'\t');
        };
        push("time_received", b"2023-11-14 22:13:20.123457");
        push("first_switched", b"2023-11-14 22:13:20.123456");
        push("last_switched", b"2023-11-14 22:13:20.123456");
        // ::1 = fifteen NULs (each `\0`) and 0x01.
        let mut lo = b"\\0".repeat(15);
        lo.push(1);
        push("exporter", &lo);
        push("observation_domain", b"7");
        push("sampling_rate", b"100");
        // 2001:0db8:0000:...:0002: 0x0d is CR (`\r`), the zero bytes are `\0`.
        let mut src = vec![0x20, 0x01, b'\\', b'r', 0xb8];
        src.extend(b"\\0".repeat(10));
        src.extend([0x00, 0x02].iter().flat_map(|b| match b {
            0 => b"\\0".to_vec(),
            b => vec![*b],
        }));
        push("src_ip", &src);
        push("dst_ip", &[198, 51, 100, 7]);
        push("next_hop", b"\\N");
        push("src_port", b"443");
        push("dst_port", b"\\N");
        push("protocol", b"6");
        // The rest (counters and interface fields absent from the plan; ip_version 6 from the
        // address; whatever columns the schema adds later) as the schema reads them.
        for c in &COLUMNS[12..] {
            match (c.read)(&rec) {
                Value::Null => want.extend_from_slice(b"\\N"),
                Value::Uint(v) => want.extend_from_slice(v.to_string().as_bytes()),
                Value::Str(text) => want.extend_from_slice(text.as_bytes()),
                other => panic!("{}: {other:?}", c.name),
            }
            want.push(b'\t');
        }
        *want.last_mut().expect("line") = b'\n';
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(&out[..], &want[..]);
        assert_eq!(field(&fields(&out), "ip_version"), b"6");
    }

    /// Every byte LOAD DATA treats specially is escaped, everything else is raw, and the
    /// server's reading of the field gives back the address bytes.
    #[test]
    fn address_escapes_round_trip() {
        let mut out = BytesMut::new();
        put_escaped(&[0x00, 0x09, 0x0a, 0x0d, 0x1a, 0x5c, b'N', 0x08], &mut out);
        assert_eq!(&out[..], b"\\0\\t\\n\\r\\Z\\\\N\x08");
        for b in 0..=255u8 {
            let addr = [b, b'\\', b, 0x41];
            let mut out = BytesMut::new();
            put_escaped(&addr, &mut out);
            assert!(!out.contains(&b'\t') && !out.contains(&b'\n'), "{b:#x}");
            assert_eq!(unescape_field(&out).as_deref(), Some(&addr[..]), "{b:#x}");
        }
        // A v4 address that is exactly `\N` as bytes cannot read as NULL: the backslash is
        // escaped.
        let mut out = BytesMut::new();
        put_escaped(&[b'\\', b'N', 1, 2], &mut out);
        assert_eq!(
            unescape_field(&out).as_deref(),
            Some(&[b'\\', b'N', 1, 2][..])
        );
    }

    #[test]
    fn u64_maxima_are_exact_and_narrow_columns_clamp() {
        let plan = Plan {
            record_len: 16,
            in_bytes: Slot::new(0, 8),
            in_pkts: Slot::new(8, 8),
            ..Plan::EMPTY
        };
        let mut bytes = u64::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(i64::MAX as u64 + 1).to_be_bytes());
        let c = ctx(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.encode_row(&rec, &mut out);
        let f = fields(&out);
        assert_eq!(field(&f, "in_bytes"), b"18446744073709551615");
        assert_eq!(field(&f, "in_pkts"), b"9223372036854775808");
        assert_eq!(enc.clamped_counters(), 0);

        let mut out = BytesMut::new();
        enc.put_value(ColumnType::U8, Value::Uint(256), &mut out);
        enc.put_value(ColumnType::U16, Value::Uint(65_536), &mut out);
        enc.put_value(ColumnType::U32, Value::Uint(1 << 32), &mut out);
        enc.put_value(ColumnType::U32, Value::Uint(u64::from(u32::MAX)), &mut out);
        assert_eq!(&out[..], b"255\t65535\t4294967295\t4294967295\t");
        assert_eq!(enc.clamped_counters(), 3);
    }

    #[test]
    fn row_len_max_bounds_a_row_of_escaped_v6_addresses() {
        let plan = Plan {
            record_len: 48,
            src_ip: Slot::new(0, 16),
            dst_ip: Slot::new(16, 16),
            next_hop: Slot::new(32, 16),
            in_bytes: Slot::new(0, 8),
            in_pkts: Slot::new(8, 8),
            last_switched: Slot::new(0, 4),
            last_kind: TimeKind::UnixSecs,
            ..Plan::EMPTY
        };
        let bytes = [0x5cu8; 48];
        let c = ctx(IpAddr::V6(Ipv6Addr::new(0x0909, 0x0909, 0, 0, 0, 0, 0, 0)));
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        let f = fields(&out);
        assert_eq!(field(&f, "src_ip"), b"\\\\".repeat(16).as_slice());
        assert!(out.len() <= ROW_LEN_MAX, "{} > {ROW_LEN_MAX}", out.len());
    }
}
