//! PostgreSQL binary COPY encoding, pure: the 19-byte header, one row per record written straight
//! from the [`FlowRecord`] accessors that [`schema::COLUMNS`](crate::schema::COLUMNS) names, and
//! the trailer. No connection, no allocation per row (the output buffer grows by doubling).
//!
//! Wire format (PostgreSQL docs, "COPY ... Binary Format"): each row is an i16 field count, then
//! per field an i32 byte length (-1 for NULL) and the value in the type's binary `recv` format:
//! int2/int4/int8 big-endian, `inet` as `[family, bits, is_cidr, nbytes, addr...]` with
//! PGSQL_AF_INET = 2 and PGSQL_AF_INET6 = 3 (not the OS's AF_INET6), `timestamptz` as i64
//! microseconds since 2000-01-01T00:00:00Z.
//!
//! Policy for values the column type cannot hold (never wrapped silently):
//! - a u64 counter above `i64::MAX` (bigint's maximum) is written as `i64::MAX` and counted;
//! - a time outside timestamptz's range (4714 BC .. 294276 AD) is clamped to the range and
//!   counted, because the server rejects the whole COPY for one out-of-range value.
//!
//! Both counts are kept per encoder ([`PgRowEncoder::clamped_counters`]) and process-wide
//! ([`clamped_counters_total`], shown on the sink's status).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use goflow_codec::{FlowRecord, UnixMicros};

use crate::schema::{self, COLUMNS, ColumnSet, ColumnType, RowPlan, Value, flow_columns};
use crate::sink::RowEncoder;

/// Signature, flags field (no OIDs) and header-extension length: the 19 bytes every binary COPY
/// stream starts with.
pub const COPY_HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// A field count of -1 ends the stream.
pub const COPY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Unix microseconds of PostgreSQL's epoch, 2000-01-01T00:00:00Z.
pub const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// timestamptz's valid range in µs since the PostgreSQL epoch: `MIN_TIMESTAMP <= t <
/// END_TIMESTAMP` (src/include/datatype/timestamp.h).
const PG_TIMESTAMP_MIN: i64 = -211_813_488_000_000_000;
const PG_TIMESTAMP_END: i64 = 9_223_371_331_200_000_000;

/// PostgreSQL's own address-family codes in `inet` values.
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// The longest [`Value::Str`] a text column holds (the schema's labels are short words).
const TEXT_LEN_MAX: usize = 16;

const _: () = assert!(COLUMNS.len() <= i16::MAX as usize);

/// The longest a row can be: its field count plus each column's length prefix and widest value.
pub const ROW_LEN_MAX: usize = row_len_max();

const fn row_len_max() -> usize {
    let mut len = 2;
    let mut i = 0;
    while i < COLUMNS.len() {
        len += 4 + match COLUMNS[i].ty {
            ColumnType::Time => 8,
            ColumnType::Ip => 20,
            ColumnType::U8 => 2,
            ColumnType::U16 => 4,
            ColumnType::U32 | ColumnType::U64 => 8,
            ColumnType::Mac => 6,
            ColumnType::Text => TEXT_LEN_MAX,
        };
        i += 1;
    }
    len
}

static CLAMPED_COUNTERS_TOTAL: AtomicU64 = AtomicU64::new(0);
static CLAMPED_TIMES_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Integer values clamped to their column's maximum by every encoder of this process.
pub fn clamped_counters_total() -> u64 {
    CLAMPED_COUNTERS_TOTAL.load(Ordering::Relaxed)
}

/// Times clamped into timestamptz's range by every encoder of this process.
pub fn clamped_times_total() -> u64 {
    CLAMPED_TIMES_TOTAL.load(Ordering::Relaxed)
}

/// Appends the binary COPY header.
pub fn write_header(out: &mut BytesMut) {
    out.put_slice(&COPY_HEADER);
}

/// Appends the binary COPY trailer.
pub fn write_trailer(out: &mut BytesMut) {
    out.put_slice(&COPY_TRAILER);
}

/// Encodes records as binary COPY rows (no header or trailer: the sink frames each COPY).
/// One per worker; `Clone` gives a fresh copy with the same counts.
#[derive(Clone, Debug)]
pub struct PgRowEncoder {
    clamped_counters: u64,
    clamped_times: u64,
    /// The row being assembled: [`ROW_LEN_MAX`] bytes once used, reused so it is never zeroed
    /// per row.
    row: Vec<u8>,
    /// Fields per row: the column set's size.
    field_count: i16,
    /// The row code of the column set.
    rows: Rows,
}

impl Default for PgRowEncoder {
    fn default() -> Self {
        PgRowEncoder::new(ColumnSet::ALL)
    }
}

/// Writes one column's field.
type ColumnFn = fn(&mut PgRowEncoder, &FlowRecord<'_>, &mut RowWriter<'_>);

/// How a row's fields are written, chosen once per column set: straight-line code for all
/// columns and for the old collector's eight, a precomputed list of per-column writers for any
/// other set (the COPY statement names the same columns: [`super::ddl::copy_statement`]).
type Rows = RowPlan<ColumnFn>;

/// A fresh row encoder of every column.
pub fn encoder() -> PgRowEncoder {
    PgRowEncoder::default()
}

/// A fresh row encoder of the columns in `set`.
pub fn encoder_for(set: ColumnSet) -> PgRowEncoder {
    PgRowEncoder::new(set)
}

const ALL: u64 = ColumnSet::ALL.bits();
const LEGACY: u64 = ColumnSet::LEGACY.bits();

impl PgRowEncoder {
    /// An encoder of the columns in `set` (schema order).
    pub fn new(set: ColumnSet) -> Self {
        let rows = RowPlan::new(set, &COLUMN_FNS);
        PgRowEncoder {
            clamped_counters: 0,
            clamped_times: 0,
            row: Vec::new(),
            field_count: set.len() as i16,
            rows,
        }
    }

    /// Integer values this encoder clamped to their column's maximum.
    pub fn clamped_counters(&self) -> u64 {
        self.clamped_counters
    }

    /// Times this encoder clamped into timestamptz's range.
    pub fn clamped_times(&self) -> u64 {
        self.clamped_times
    }

    /// Appends one row for `rec`.
    #[inline]
    pub fn encode_row(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        // The row is assembled in a reused buffer that holds the longest row (no capacity
        // check per field, no zeroing per row), then appended with one copy.
        if self.row.len() != ROW_LEN_MAX {
            self.row = vec![0; ROW_LEN_MAX];
        }
        let mut row = std::mem::take(&mut self.row);
        let mut w = RowWriter {
            buf: &mut row,
            at: 0,
        };
        w.put(self.field_count.to_be_bytes());
        match &self.rows {
            Rows::All => self.put_columns::<ALL>(rec, &mut w),
            Rows::Legacy => self.put_columns::<LEGACY>(rec, &mut w),
            Rows::Plan(_) => {
                // Moved out for the walk (the writers take the encoder), then put back.
                if let Rows::Plan(plan) = std::mem::replace(&mut self.rows, Rows::All) {
                    for put in plan.iter() {
                        put(self, rec, &mut w);
                    }
                    self.rows = Rows::Plan(plan);
                }
            }
        }
        let len = w.at;
        out.extend_from_slice(row.get(..len).unwrap_or_default());
        self.row = row;
    }

    #[inline(always)]
    fn put_value(&mut self, ty: ColumnType, value: Value, w: &mut RowWriter<'_>) {
        match value {
            Value::Null => w.put((-1i32).to_be_bytes()),
            Value::Uint(v) => self.put_uint(ty, v, w),
            Value::Ip(ip) => put_inet(ip, w),
            Value::Time(t) => self.put_time(t, w),
            // macaddr's binary form is its 6 bytes.
            Value::Mac(m) => w.put_field(m),
            Value::Str(text) => w.put_text(text),
        }
    }

    #[inline(always)]
    fn put_uint(&mut self, ty: ColumnType, v: u64, w: &mut RowWriter<'_>) {
        match ty {
            ColumnType::U8 => {
                let v = self.clamp(v, i16::MAX as u64) as i16;
                w.put_field(v.to_be_bytes());
            }
            ColumnType::U16 => {
                let v = self.clamp(v, i32::MAX as u64) as i32;
                w.put_field(v.to_be_bytes());
            }
            // U32, U64 and (never, by the schema) a number in another column: bigint.
            ColumnType::U32
            | ColumnType::U64
            | ColumnType::Time
            | ColumnType::Ip
            | ColumnType::Mac
            | ColumnType::Text => {
                let v = self.clamp(v, i64::MAX as u64) as i64;
                w.put_field(v.to_be_bytes());
            }
        }
    }

    #[inline]
    fn clamp(&mut self, v: u64, max: u64) -> u64 {
        if v > max {
            self.clamped_counters += 1;
            CLAMPED_COUNTERS_TOTAL.fetch_add(1, Ordering::Relaxed);
            max
        } else {
            v
        }
    }

    #[inline]
    fn put_time(&mut self, t: UnixMicros, w: &mut RowWriter<'_>) {
        let mut pg = t.saturating_sub(PG_EPOCH_UNIX_US);
        if !(PG_TIMESTAMP_MIN..PG_TIMESTAMP_END).contains(&pg) {
            pg = pg.clamp(PG_TIMESTAMP_MIN, PG_TIMESTAMP_END - 1);
            self.clamped_times += 1;
            CLAMPED_TIMES_TOTAL.fetch_add(1, Ordering::Relaxed);
        }
        w.put_field(pg.to_be_bytes());
    }
}

/// A cursor over one row's bytes. `buf` holds ROW_LEN_MAX bytes, which no row exceeds, so the
/// checked writes below never fall short; if one did, it would be skipped, not panic.
struct RowWriter<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl RowWriter<'_> {
    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + N) {
            dst.copy_from_slice(&bytes);
            self.at += N;
        }
    }

    /// A text field (binary form: the bytes), cut at [`TEXT_LEN_MAX`] so the row fits.
    #[inline(always)]
    fn put_text(&mut self, text: &str) {
        let b = text.as_bytes();
        let b = b.get(..TEXT_LEN_MAX).unwrap_or(b);
        self.put((b.len() as i32).to_be_bytes());
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
            self.at += b.len();
        }
    }

    /// A length-prefixed field of N bytes.
    #[inline(always)]
    fn put_field<const N: usize>(&mut self, value: [u8; N]) {
        self.put((N as i32).to_be_bytes());
        self.put(value);
    }
}

/// An `inet` host address: full-length netmask, not CIDR.
#[inline]
fn put_inet(ip: IpAddr, w: &mut RowWriter<'_>) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            w.put_field([PGSQL_AF_INET, 32, 0, 4, o[0], o[1], o[2], o[3]]);
        }
        IpAddr::V6(v6) => {
            w.put((20i32).to_be_bytes());
            w.put([PGSQL_AF_INET6, 128, 0, 16]);
            w.put(v6.octets());
        }
    }
}

macro_rules! copy_columns {
    ($($name:ident: $ty:ident, $nullable:literal, $read:expr;)*) => {
        impl PgRowEncoder {
            /// The fields of the set `MASK`, in schema order, each accessor inlined.
            #[inline(always)]
            fn put_columns<const MASK: u64>(&mut self, rec: &FlowRecord<'_>, w: &mut RowWriter<'_>) {
                $(
                    if schema::in_mask(MASK, schema::Col::$name) {
                        self.put_value(ColumnType::$ty, schema::read(rec, $read), w);
                    }
                )*
            }
        }

        /// One writer per column, in schema order (for sets other than all and legacy).
        const COLUMN_FNS: [ColumnFn; COLUMNS.len()] = [
            $({
                fn put(e: &mut PgRowEncoder, rec: &FlowRecord<'_>, w: &mut RowWriter<'_>) {
                    e.put_value(ColumnType::$ty, schema::read(rec, $read), w);
                }
                put
            },)*
        ];
    };
}
flow_columns!(copy_columns);

impl RowEncoder for PgRowEncoder {
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        self.encode_row(rec, out);
    }
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

    /// A plan with only in_bytes (8 bytes at offset 0).
    fn counter_plan() -> Plan {
        Plan {
            record_len: 8,
            in_bytes: Slot::new(0, 8),
            ..Plan::EMPTY
        }
    }

    /// Splits an encoded row into its fields (None = NULL), checking the framing.
    fn fields(row: &[u8]) -> Vec<Option<&[u8]>> {
        let n = i16::from_be_bytes([row[0], row[1]]);
        assert_eq!(n as usize, COLUMNS.len());
        let mut rest = &row[2..];
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            rest = &rest[4..];
            if len < 0 {
                assert_eq!(len, -1);
                out.push(None);
            } else {
                out.push(Some(&rest[..len as usize]));
                rest = &rest[len as usize..];
            }
        }
        assert!(rest.is_empty(), "trailing bytes");
        out
    }

    fn field<'a>(fields: &[Option<&'a [u8]>], name: &str) -> Option<&'a [u8]> {
        let i = COLUMNS.iter().position(|c| c.name == name).expect("column");
        fields[i]
    }

    #[test]
    fn header_and_trailer_bytes() {
        let mut b = BytesMut::new();
        write_header(&mut b);
        write_trailer(&mut b);
        assert_eq!(
            &b[..],
            &[
                b'P', b'G', b'C', b'O', b'P', b'Y', b'\n', 0xff, b'\r', b'\n', 0, // signature
                0, 0, 0, 0, // flags: no OIDs
                0, 0, 0, 0, // header extension length
                0xff, 0xff, // trailer: field count -1
            ][..]
        );
    }

    #[test]
    fn absent_fields_are_null_and_times_are_pg_epoch_micros() {
        let plan = Plan::EMPTY;
        let c = ctx(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let rec = FlowRecord::new(&[], &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        let f = fields(&out);
        // 1_700_000_000_123_456 - 946_684_800_000_000 = 753_315_200_123_456 = 0x0002_AD22_DCE8_4240.
        let pg_t = 753_315_200_123_456i64.to_be_bytes();
        assert_eq!(pg_t, [0x00, 0x02, 0xad, 0x22, 0xdc, 0xe8, 0x42, 0x40]);
        // No time fields in the plan: first/last fall back to the export time.
        assert_eq!(field(&f, "first_switched"), Some(&pg_t[..]));
        assert_eq!(field(&f, "last_switched"), Some(&pg_t[..]));
        let recv = 753_315_200_123_457i64.to_be_bytes();
        assert_eq!(field(&f, "time_received"), Some(&recv[..]));
        for name in ["src_ip", "src_port", "in_bytes", "ip_version", "direction"] {
            assert_eq!(field(&f, name), None, "{name}");
        }
        // Unknown sampling is 1 (so SUM(in_bytes * sampling_rate) counts it), not NULL.
        assert_eq!(field(&f, "sampling_rate"), Some(&1i64.to_be_bytes()[..]));
        assert_eq!(field(&f, "sampling_source"), Some(&b"unknown"[..]));
        assert_eq!(out.len(), f.len() * 4 + 2 + 3 * 8 + 8 + 8 + 8 + 7);
    }

    #[test]
    fn null_is_minus_one_length() {
        let plan = Plan::EMPTY;
        let c = ctx(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let rec = FlowRecord::new(&[], &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        // The src_ip field starts after count(2) + 3 times(3*12) + exporter(12) +
        // observation_domain(12) + sampling_rate(12).
        let at = 2 + 36 + 12 + 12 + 12;
        assert_eq!(COLUMNS[6].name, "src_ip");
        assert_eq!(&out[at..at + 4], &[0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn inet_v4_and_v6_bytes() {
        let inet = |ip| {
            let mut buf = [0u8; 24];
            let mut w = RowWriter {
                buf: &mut buf,
                at: 0,
            };
            put_inet(ip, &mut w);
            let n = w.at;
            buf[..n].to_vec()
        };
        let out = inet(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(&out[..], &[0, 0, 0, 8, 2, 32, 0, 4, 10, 1, 2, 3]);

        let v6: Ipv6Addr = "2001:db8::1".parse().expect("v6");
        let out = inet(IpAddr::V6(v6));
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 20, // length
                3, 128, 0, 16, // PGSQL_AF_INET6, /128, not cidr, 16 bytes
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ][..]
        );
        // Same bytes as postgres-protocol's own encoder (after our length prefix).
        let mut theirs = BytesMut::new();
        postgres_protocol::types::inet_to_sql(IpAddr::V6(v6), 128, &mut theirs);
        assert_eq!(&out[4..], &theirs[..]);
    }

    #[test]
    fn v6_record_fields() {
        // src_ip (16) | dst_ip (4) | src_port (2) | protocol (1) | sampling via context.
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
        let f = fields(&out);
        assert_eq!(
            field(&f, "src_ip"),
            Some(
                &[
                    3, 128, 0, 16, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2
                ][..]
            )
        );
        assert_eq!(
            field(&f, "dst_ip"),
            Some(&[2, 32, 0, 4, 198, 51, 100, 7][..])
        );
        assert_eq!(
            field(&f, "exporter"),
            Some(
                &[
                    3, 128, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
                ][..]
            )
        );
        assert_eq!(field(&f, "src_port"), Some(&[0, 0, 1, 187][..])); // int4
        assert_eq!(field(&f, "protocol"), Some(&[0, 6][..])); // int2
        assert_eq!(
            field(&f, "sampling_rate"),
            Some(&[0, 0, 0, 0, 0, 0, 0, 100][..])
        ); // int8
        assert_eq!(
            field(&f, "observation_domain"),
            Some(&[0, 0, 0, 0, 0, 0, 0, 7][..])
        );
        assert_eq!(field(&f, "ip_version"), Some(&[0, 6][..]));
    }

    /// Fields of a row of any width.
    fn any_fields(row: &[u8]) -> Vec<Option<Vec<u8>>> {
        let n = i16::from_be_bytes([row[0], row[1]]);
        let mut rest = &row[2..];
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            rest = &rest[4..];
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(rest[..len as usize].to_vec()));
                rest = &rest[len as usize..];
            }
        }
        assert!(rest.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn column_sets_write_their_columns_of_the_full_row() {
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
        bytes.extend_from_slice(&[198, 51, 100, 7, 1, 187, 6]);
        let c = ctx(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let encode = |mut e: PgRowEncoder| {
            let mut out = BytesMut::new();
            e.encode_row(&rec, &mut out);
            any_fields(&out)
        };
        let full = encode(encoder());
        assert_eq!(full.len(), COLUMNS.len());
        let custom =
            ColumnSet::parse(&["etype", "time_received", "dst_port", "src_mac"]).expect("columns");
        for set in [ColumnSet::LEGACY, custom, ColumnSet::ALL] {
            let want: Vec<_> = COLUMNS
                .iter()
                .zip(&full)
                .filter(|(c, _)| set.contains(c.name))
                .map(|(_, f)| f.clone())
                .collect();
            assert_eq!(encode(encoder_for(set)), want, "{}", set.names());
        }
        // The per-column plan (used for other sets) writes what the straight-line code does.
        let mut planned = encoder_for(custom);
        planned.field_count = 8;
        planned.rows = Rows::Plan(RowPlan::writers(ColumnSet::LEGACY, &COLUMN_FNS));
        assert_eq!(encode(planned), encode(encoder_for(ColumnSet::LEGACY)));
    }

    #[test]
    fn counter_above_i64_max_is_clamped_and_counted() {
        let plan = counter_plan();
        let c = ctx(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let before = clamped_counters_total();
        let mut enc = encoder();

        let max = (i64::MAX as u64).to_be_bytes();
        let rec = FlowRecord::new(&max, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        enc.encode_row(&rec, &mut out);
        assert_eq!(field(&fields(&out), "in_bytes"), Some(&max[..]));
        assert_eq!(enc.clamped_counters(), 0, "i64::MAX itself fits");

        let over = (i64::MAX as u64 + 1).to_be_bytes();
        let rec = FlowRecord::new(&over, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        enc.encode_row(&rec, &mut out);
        assert_eq!(
            field(&fields(&out), "in_bytes"),
            Some(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..])
        );

        let all = u64::MAX.to_be_bytes();
        let rec = FlowRecord::new(&all, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        enc.encode_row(&rec, &mut out);
        assert_eq!(field(&fields(&out), "in_bytes"), Some(&max[..]), "not -1");
        assert_eq!(enc.clamped_counters(), 2);
        assert!(clamped_counters_total() >= before + 2);
    }

    #[test]
    fn times_outside_timestamptz_range_are_clamped_and_counted() {
        let plan = Plan {
            record_len: 8,
            last_switched: Slot::new(0, 8),
            last_kind: TimeKind::UnixSecs,
            ..Plan::EMPTY
        };
        let c = ctx(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // 2^63 seconds reads as i64::MIN µs (the codec saturates), far before 4714 BC.
        // (i64::MAX µs after 1970 is still inside the range: 294247 AD.)
        let secs = (1u64 << 63).to_be_bytes();
        let rec = FlowRecord::new(&secs, &plan, &c, Sampling::default());
        let mut enc = encoder();
        let mut out = BytesMut::new();
        enc.encode_row(&rec, &mut out);
        assert_eq!(
            field(&fields(&out), "last_switched"),
            Some(&PG_TIMESTAMP_MIN.to_be_bytes()[..])
        );
        assert_eq!(enc.clamped_times(), 1);
        assert_eq!(enc.clamped_counters(), 0);
    }

    #[test]
    fn row_len_max_bounds_a_full_v6_row() {
        // 2 + 3 times (12) + 4 addresses (24) + 2 int2... computed from the schema.
        let plan = Plan {
            record_len: 48,
            src_ip: Slot::new(0, 16),
            dst_ip: Slot::new(16, 16),
            next_hop: Slot::new(32, 16),
            in_bytes: Slot::new(0, 8),
            in_pkts: Slot::new(8, 8),
            src_port: Slot::new(0, 2),
            dst_port: Slot::new(2, 2),
            protocol: Slot::new(4, 1),
            tcp_flags: Slot::new(5, 2),
            tos: Slot::new(7, 1),
            input_if: Slot::new(8, 4),
            output_if: Slot::new(12, 4),
            src_as: Slot::new(16, 4),
            dst_as: Slot::new(20, 4),
            src_mask: Slot::new(24, 1),
            dst_mask: Slot::new(25, 1),
            direction: Slot::new(26, 1),
            ip_version: Slot::new(27, 1),
            out_bytes: Slot::new(0, 8),
            out_pkts: Slot::new(8, 8),
            fw_event: Slot::new(0, 1),
            icmp_type: Slot::new(0, 1),
            icmp_code: Slot::new(1, 1),
            vlan: Slot::new(0, 2),
            post_vlan: Slot::new(2, 2),
            src_mac: Slot::new(0, 6),
            dst_mac: Slot::new(6, 6),
            mpls_label: Slot::new(0, 3),
            bgp_next_hop: Slot::new(0, 16),
            post_nat_src_ip: Slot::new(0, 16),
            post_nat_dst_ip: Slot::new(16, 16),
            post_nat_src_port: Slot::new(0, 2),
            post_nat_dst_port: Slot::new(2, 2),
            ingress_vrf: Slot::new(0, 4),
            egress_vrf: Slot::new(4, 4),
            flow_end_reason: Slot::new(0, 1),
            forwarding_status: Slot::new(1, 1),
            etype: Slot::new(0, 2),
            ..Plan::EMPTY
        };
        let bytes = [1u8; 48];
        let c = ctx(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let mut out = BytesMut::new();
        encoder().encode_row(&rec, &mut out);
        assert!(fields(&out).iter().all(Option::is_some));
        // Every field at its widest but the text label ("unknown", 7 of TEXT_LEN_MAX bytes).
        assert_eq!(out.len() + TEXT_LEN_MAX - 7, ROW_LEN_MAX);
    }
}
