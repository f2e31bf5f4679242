//! JSON lines: one object per record, keys from the schema, addresses as strings, times as
//! RFC 3339 UTC with microseconds, counters as integers, absent fields as null. The `file`
//! backend and `goflow decode` both write exactly this.

use std::net::IpAddr;

use bytes::BufMut;
use goflow_codec::{FlowRecord, UnixMicros};

use crate::schema::{self, COLUMNS, ColumnSet, RowPlan, Value, flow_columns};

/// Appends one record as a JSON object and a newline, to any buffer (`Vec<u8>`, `BytesMut`).
/// A convenience over a per-thread [`JsonLines`].
pub fn encode_line<B: BufMut + ?Sized>(rec: &FlowRecord<'_>, out: &mut B) {
    thread_local! {
        static LINES: std::cell::RefCell<JsonLines> = std::cell::RefCell::default();
    }
    LINES.with_borrow_mut(|lines| lines.encode(rec, out));
}

/// The longest value's text: a quoted IPv6 address with an IPv4 tail (47 bytes), or a u64.
const VALUE_MAX: usize = 48;

/// One line's bytes at most: every column's `,"name":` key and its longest value, and the
/// closing `}\n`. A line is assembled in a reused buffer and appended with one copy.
const LINE_CAP: usize = line_cap();

const fn line_cap() -> usize {
    let mut len = 2;
    let mut i = 0;
    while i < COLUMNS.len() {
        len += COLUMNS[i].name.len() + 4 + VALUE_MAX;
        i += 1;
    }
    len
}

/// A line being assembled: a buffer of [`LINE_CAP`] bytes and a cursor. Writes past the end
/// are dropped rather than panicking (LINE_CAP makes that impossible; a test checks the worst
/// case).
struct Line<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Line<'_> {
    /// Copies all `N` bytes of `block` but advances by `used` only: the slack is overwritten by
    /// what follows. Fixed-size copies compile to plain moves.
    #[inline(always)]
    fn put_block<const N: usize>(&mut self, block: &[u8; N], used: usize) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + N) {
            dst.copy_from_slice(block);
            self.len += used.min(N);
        }
    }

    /// The next `N` bytes of the buffer, to be written in place (the caller advances `len`).
    #[inline(always)]
    fn window<const N: usize>(&mut self) -> Option<&mut [u8; N]> {
        self.buf
            .get_mut(self.len..self.len + N)
            .and_then(|w| w.try_into().ok())
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }
}

/// The JSON-lines encoder with its small cache: the last two days formatted as `YYYY-MM-DD`
/// (a record's three timestamps, and consecutive records, almost always share one), so a
/// timestamp costs a few multiplications and digit pairs.
#[derive(Clone, Debug, Default)]
pub struct JsonLines {
    /// `"YYYY-MM-DDT` blocks (see [`day_block`]) as 16-byte words, so each is one store.
    days: [Option<(i64, u128)>; 2],
    /// The line buffer, [`LINE_CAP`] bytes once used; reused so it is not zeroed per record.
    line: Vec<u8>,
    /// The row code of the encoder's column set.
    rows: Rows,
}

/// Writes one column as `,"name":value`.
type ColumnFn = fn(&mut JsonLines, &FlowRecord<'_>, &mut Line<'_>);

/// How a line's columns are written: chosen once per column set. The two common sets are
/// straight-line code (every accessor inlined, membership decided at compile time); any other
/// set walks a precomputed list of per-column writers.
type Rows = RowPlan<ColumnFn>;

macro_rules! json_columns {
    ($($name:ident: $ty:ident, $nullable:literal, $read:expr;)*) => {
        impl JsonLines {
            /// The columns of the set `MASK` as `,"name":value`, in schema order, each
            /// accessor inlined (the caller turns the first `,` into `{`).
            #[inline(always)]
            fn put_columns<const MASK: u64>(&mut self, rec: &FlowRecord<'_>, line: &mut Line<'_>) {
                $(
                    if schema::in_mask(MASK, schema::Col::$name) {
                        line.put(concat!(",\"", stringify!($name), "\":").as_bytes());
                        self.put_value(schema::read(rec, $read), line);
                    }
                )*
            }
        }

        /// One writer per column, in schema order (for sets other than all and legacy).
        const COLUMN_FNS: [ColumnFn; COLUMNS.len()] = [
            $({
                fn put(e: &mut JsonLines, rec: &FlowRecord<'_>, line: &mut Line<'_>) {
                    line.put(concat!(",\"", stringify!($name), "\":").as_bytes());
                    e.put_value(schema::read(rec, $read), line);
                }
                put
            },)*
        ];
    };
}
flow_columns!(json_columns);

const ALL: u64 = ColumnSet::ALL.bits();
const LEGACY: u64 = ColumnSet::LEGACY.bits();

impl JsonLines {
    /// An encoder of the columns in `set` (schema order).
    pub fn new(set: ColumnSet) -> Self {
        let rows = RowPlan::new(set, &COLUMN_FNS);
        JsonLines {
            rows,
            ..JsonLines::default()
        }
    }

    /// Appends one record as a JSON object and a newline.
    pub fn encode<B: BufMut + ?Sized>(&mut self, rec: &FlowRecord<'_>, out: &mut B) {
        if self.line.len() != LINE_CAP {
            self.line = vec![0; LINE_CAP];
        }
        let mut buf = std::mem::take(&mut self.line);
        let mut line = Line {
            buf: &mut buf,
            len: 0,
        };
        match &self.rows {
            Rows::All => self.put_columns::<ALL>(rec, &mut line),
            Rows::Legacy => self.put_columns::<LEGACY>(rec, &mut line),
            Rows::Plan(_) => {
                // Moved out for the walk (the writers take the encoder), then put back.
                if let Rows::Plan(plan) = std::mem::take(&mut self.rows) {
                    for put in plan.iter() {
                        put(self, rec, &mut line);
                    }
                    self.rows = Rows::Plan(plan);
                }
            }
        }
        line.put_block(b"}\n", 2);
        let len = line.len;
        if let Some(first) = buf.first_mut() {
            *first = b'{';
        }
        out.put_slice(buf.get(..len).unwrap_or_default());
        self.line = buf;
    }

    #[inline(always)]
    fn put_value(&mut self, value: Value, line: &mut Line<'_>) {
        match value {
            Value::Null => line.put_block(b"null", 4),
            Value::Uint(v) => put_uint(line, v),
            Value::Ip(IpAddr::V4(v4)) => put_ipv4_quoted(line, v4),
            Value::Ip(IpAddr::V6(v6)) => put_ipv6_quoted(line, v6),
            Value::Time(t) => {
                if let Some(w) = line.window::<29>() {
                    self.put_time(t, w);
                    line.len += 29;
                }
            }
            Value::Mac(m) => put_mac_quoted(line, m),
            Value::Str(text) => {
                // Labels from a closed set of plain words: nothing to escape.
                line.put(b"\"");
                line.put(text.as_bytes());
                line.put(b"\"");
            }
        }
    }

    /// Writes `t` as a quoted RFC 3339 string, `"YYYY-MM-DDTHH:MM:SS.ffffffZ"`, into `w`: the
    /// cached day block, then the time of day and the fraction as one 8-byte word each (single
    /// byte stores were the encoder's hottest spot).
    #[inline(always)]
    fn put_time(&mut self, t: UnixMicros, w: &mut [u8; 29]) {
        // Unsigned arithmetic for the usual case (after 1970): divisions by constants are a
        // multiplication each.
        let (day, sod, us) = match u64::try_from(t) {
            Ok(t) => {
                let secs = t / 1_000_000;
                ((secs / 86_400) as i64, secs % 86_400, t % 1_000_000)
            }
            Err(_) => {
                let secs = t.div_euclid(1_000_000);
                (
                    secs.div_euclid(86_400),
                    secs.rem_euclid(86_400) as u64,
                    t.rem_euclid(1_000_000) as u64,
                )
            }
        };
        // Two days cached, by parity: around midnight a record's times straddle two days.
        let slot = &mut self.days[(day & 1) as usize];
        let block = match *slot {
            Some((d, block)) if d == day => block,
            _ => {
                let block = u128::from_le_bytes(day_block(day));
                *slot = Some((day, block));
                block
            }
        };
        let hms = pair_word(sod / 3600)
            | u64::from(b':') << 16
            | pair_word(sod / 60 % 60) << 24
            | u64::from(b':') << 40
            | pair_word(sod % 60) << 48;
        let frac = u64::from(b'.')
            | pair_word(us / 10_000) << 8
            | pair_word(us / 100 % 100) << 24
            | pair_word(us % 100) << 40
            | u64::from(b'Z') << 56;
        // Constant ranges of a 29-byte array: checked at compile time.
        w[..16].copy_from_slice(&block.to_le_bytes());
        w[12..20].copy_from_slice(&hms.to_le_bytes());
        w[20..28].copy_from_slice(&frac.to_le_bytes());
        w[28] = b'"';
    }
}

/// A MAC address as `"aa:bb:cc:dd:ee:ff"` (19 bytes with the quotes).
#[inline]
fn put_mac_quoted(line: &mut Line<'_>, m: [u8; 6]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b':'; 19];
    out[0] = b'"';
    out[18] = b'"';
    for (i, b) in m.iter().enumerate() {
        out[1 + 3 * i] = HEX[usize::from(b >> 4)];
        out[2 + 3 * i] = HEX[usize::from(b & 0xf)];
    }
    line.put_block(&out, 19);
}

/// Two decimal digits of `v % 100` as a little-endian 16-bit word, widened.
#[inline(always)]
fn pair_word(v: u64) -> u64 {
    u64::from(u16::from_le_bytes(pair(v)))
}

/// `v` in decimal, written in place. Most flow fields (ports, protocol, masks, interface
/// indexes, AS numbers, packet counts) are below 10 000: those take one or two table lookups;
/// larger values go through `itoa`.
#[inline(always)]
fn put_uint(line: &mut Line<'_>, v: u64) {
    if v >= 10_000 {
        line.put(itoa::Buffer::new().format(v).as_bytes());
        return;
    }
    let Some(w) = line.window::<4>() else {
        return;
    };
    let (hi, lo) = (pair(v / 100), pair(v));
    let len = if v < 10 {
        w[0] = lo[1];
        1
    } else if v < 100 {
        [w[0], w[1]] = lo;
        2
    } else if v < 1000 {
        [w[0], w[1], w[2]] = [hi[1], lo[0], lo[1]];
        3
    } else {
        *w = [hi[0], hi[1], lo[0], lo[1]];
        4
    };
    line.len += len;
}

/// The two decimal digits of every number below 100.
static PAIRS: [[u8; 2]; 100] = pairs();

const fn pairs() -> [[u8; 2]; 100] {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
}

/// Two decimal digits of `v % 100`.
#[inline(always)]
fn pair(v: u64) -> [u8; 2] {
    PAIRS[(v % 100) as usize]
}

/// `"YYYY-MM-DDT` of a day number and 4 bytes of slack (years clamped to 0..=9999 to keep the
/// fixed form).
fn day_block(days: i64) -> [u8; 16] {
    let (y, m, d) = civil_from_days(days);
    let mut b = [0u8; 16];
    b[0] = b'"';
    put_digits(&mut b[1..5], y.clamp(0, 9999) as u64);
    b[5] = b'-';
    put_digits(&mut b[6..8], u64::from(m));
    b[8] = b'-';
    put_digits(&mut b[9..11], u64::from(d));
    b[11] = b'T';
    b
}

/// Each octet's decimal text, left-aligned, with its length in the last byte.
static OCTET_TEXT: [[u8; 4]; 256] = octet_text();

const fn octet_text() -> [[u8; 4]; 256] {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        t[i] = if o >= 100 {
            [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, 3]
        } else if o >= 10 {
            [b'0' + o / 10, b'0' + o % 10, 0, 2]
        } else {
            [b'0' + o, 0, 0, 1]
        };
        i += 1;
    }
    t
}

/// An IPv4 address in quotes (`"192.0.2.1"`), written in place: four table lookups, no
/// divisions.
#[inline(always)]
fn put_ipv4_quoted(line: &mut Line<'_>, ip: std::net::Ipv4Addr) {
    put_ipv4(line, ip, b'"');
}

/// An IPv4 address, `open` (a quote, or the ':' of `::ffff:`) before it and a quote after.
#[inline(always)]
fn put_ipv4(line: &mut Line<'_>, ip: std::net::Ipv4Addr, open: u8) {
    // `"255.255.255.255"` is 17 bytes; each octet's 4-byte table entry is copied whole (its
    // slack is overwritten by what follows), so the window is 20.
    let Some(w) = line.window::<20>() else {
        return;
    };
    let mut n = 0;
    for octet in ip.octets() {
        // `n` is at most 12 here.
        let text = OCTET_TEXT[usize::from(octet)];
        if let Some([dot, digits @ ..]) = w.get_mut(n..n + 5) {
            *dot = b'.';
            digits.copy_from_slice(&text);
        }
        n += 1 + usize::from(text[3]);
    }
    // The first '.' becomes the opening byte; the closing quote follows the last digit.
    w[0] = open;
    if let Some(q) = w.get_mut(n) {
        *q = b'"';
    }
    line.len += n + 1;
}

/// An IPv6 address in quotes, in the text form `Display` gives (RFC 5952: lowercase hex
/// without leading zeros, the longest run of two or more zero groups, the first of equal runs,
/// as `::`; `::ffff:a.b.c.d` for IPv4-mapped addresses), written in place. By hand because
/// `Display` through `fmt` costs more than the rest of the line. Kept out of line: inlined at
/// every address column it slowed the IPv4 path.
#[inline(never)]
fn put_ipv6_quoted(line: &mut Line<'_>, ip: std::net::Ipv6Addr) {
    if let Some(v4) = ip.to_ipv4_mapped() {
        line.put(b"\"::ffff");
        put_ipv4(line, v4, b':');
        return;
    }
    let groups = ip.segments();
    // The longest run of zero groups (the first of equal length); runs of one stay.
    let (mut best_at, mut best_len, mut run_at, mut run_len) = (0, 0, 0, 0);
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            if run_len == 0 {
                run_at = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best_at, best_len) = (run_at, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    let skip = if best_len >= 2 {
        best_at..best_at + best_len
    } else {
        8..8
    };
    // 8 groups of 4 digits, 7 separators and 2 quotes are 41 bytes; a group is written as 4
    // bytes whatever its length, so the window is 48.
    let Some(w) = line.window::<48>() else {
        return;
    };
    let mut n = 1;
    let mut i = 0;
    while i < 8 {
        if i == skip.start {
            if let Some(d) = w.get_mut(n..n + 2) {
                d.copy_from_slice(b"::");
            }
            n += 2;
            i = skip.end;
            continue;
        }
        if i > 0 && i != skip.end {
            if let Some(d) = w.get_mut(n) {
                *d = b':';
            }
            n += 1;
        }
        let (digits, len) = hex_group(groups.get(i).copied().unwrap_or(0));
        if let Some(d) = w.get_mut(n..n + 4) {
            d.copy_from_slice(&digits);
        }
        n += len;
        i += 1;
    }
    w[0] = b'"';
    if let Some(q) = w.get_mut(n) {
        *q = b'"';
    }
    line.len += n + 1;
}

/// Every byte as two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = hex_pairs();

const fn hex_pairs() -> [[u8; 2]; 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
}

/// One IPv6 group in lowercase hex without leading zeros: 4 bytes (left-aligned) and how many
/// are used. Two table lookups and a shift.
#[inline(always)]
fn hex_group(g: u16) -> ([u8; 4], usize) {
    let [hi, lo] = g.to_be_bytes();
    let [a, b] = HEX_PAIRS[usize::from(hi)];
    let [c, d] = HEX_PAIRS[usize::from(lo)];
    let skip = (g.leading_zeros() / 4).min(3);
    // Little-endian: dropping the leading digits is a right shift by a byte per digit.
    let word = u32::from_le_bytes([a, b, c, d]) >> (8 * skip);
    (word.to_le_bytes(), 4 - skip as usize)
}

/// `s` as a JSON string literal (for sinks' status values).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for Unix microseconds (proleptic Gregorian, UTC).
pub fn write_rfc3339<B: BufMut + ?Sized>(t: UnixMicros, out: &mut B) {
    let mut b = [0u8; 29];
    JsonLines::default().put_time(t, &mut b);
    out.put_slice(&b[1..28]);
}

/// Writes `v` as exactly `dst.len()` decimal digits (zero-padded, high digits dropped).
fn put_digits(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `put` writes into a fresh line, as text.
    fn written(put: impl FnOnce(&mut Line<'_>)) -> String {
        let mut buf = [0u8; 64];
        let mut line = Line {
            buf: &mut buf,
            len: 0,
        };
        put(&mut line);
        let len = line.len;
        String::from_utf8(buf[..len].to_vec()).expect("ascii")
    }

    fn fmt(t: UnixMicros) -> String {
        let mut v = Vec::new();
        write_rfc3339(t, &mut v);
        String::from_utf8(v).expect("ascii")
    }

    #[test]
    fn column_sets_write_their_keys_of_the_full_line() {
        use goflow_codec::{PacketContext, Plan, Sampling, Slot};
        let plan = Plan {
            record_len: 7,
            dst_ip: Slot::new(0, 4),
            src_port: Slot::new(4, 2),
            protocol: Slot::new(6, 1),
            ..Plan::EMPTY
        };
        let bytes = [198, 51, 100, 7, 1, 187, 6];
        let c = PacketContext {
            exporter: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            observation_domain: 7,
            version: 10,
            export_time_us: 1_700_000_000_123_456,
            sys_uptime_ms: 0,
            received_us: 1_700_000_000_123_457,
            system_init_ms: None,
        };
        let rec = FlowRecord::new(&bytes, &plan, &c, Sampling::default());
        let line = |mut e: JsonLines| {
            let mut out = Vec::new();
            e.encode(&rec, &mut out);
            let v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&out).expect("a JSON object");
            (v, String::from_utf8(out).expect("utf-8"))
        };
        let (full, _) = line(JsonLines::default());
        assert_eq!(full.len(), COLUMNS.len());
        let custom = ColumnSet::parse(&["etype", "time_received", "dst_port"]).expect("set");
        for set in [ColumnSet::LEGACY, custom] {
            let (got, text) = line(JsonLines::new(set));
            let mut keys: Vec<&str> = got.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let want: Vec<&str> = set.columns().map(|c| c.name).collect();
            // Written in schema order.
            let at: Vec<usize> = want
                .iter()
                .map(|k| text.find(&format!("\"{k}\":")).expect("key"))
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
            let mut sorted = want.clone();
            sorted.sort_unstable();
            assert_eq!(keys, sorted);
            for (k, v) in &got {
                assert_eq!(Some(v), full.get(k), "{k}");
            }
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(fmt(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(fmt(-1_000_000), "1969-12-31T23:59:59.000000Z");
        assert_eq!(fmt(-86_400_000_000), "1969-12-31T00:00:00.000000Z");
        assert_eq!(fmt(-86_400_000_001), "1969-12-30T23:59:59.999999Z");
        assert_eq!(fmt(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn addresses_match_display() {
        for ip in [
            "0.0.0.0",
            "192.0.2.1",
            "255.255.255.255",
            "10.20.3.40",
            "1.100.99.9",
            "2001:db8::1",
            "::",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::1",
            "1::",
            "1:0:1::",
            "1:0:0:1:0:0:1:0",
            "0:1:0:1:0:1:0:1",
            "::ffff:0.0.0.0",
            "::1.2.3.4",
            "fe80::1:0:0:0",
            "2001:db8:0:0:1:0:0:1",
            "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            let text = match ip {
                IpAddr::V4(v4) => written(|l| put_ipv4_quoted(l, v4)),
                IpAddr::V6(v6) => written(|l| put_ipv6_quoted(l, v6)),
            };
            assert_eq!(text, format!("\"{ip}\""));
        }
    }

    #[test]
    fn the_day_cache_follows_the_date() {
        let mut enc = JsonLines::default();
        for t in [
            0,
            86_399_999_999,
            86_400_000_000,
            1_700_000_000_123_456,
            -1,
            951_782_400_000_000,
        ] {
            let mut a = [0u8; 29];
            enc.put_time(t, &mut a);
            let mut b = [0u8; 29];
            JsonLines::default().put_time(t, &mut b);
            assert_eq!(a, b, "{t}");
        }
        assert_eq!(fmt(86_400_000_000), "1970-01-02T00:00:00.000000Z");
    }

    #[test]
    fn the_longest_value_fits() {
        // LINE_CAP reserves VALUE_MAX per column: the longest addresses, u64::MAX, a quoted
        // time and null all fit.
        let v6: std::net::Ipv6Addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            .parse()
            .expect("v6");
        assert!(written(|l| put_ipv6_quoted(l, v6)).len() <= VALUE_MAX);
        let mapped: std::net::Ipv6Addr = "::ffff:255.255.255.255".parse().expect("v6");
        assert!(written(|l| put_ipv6_quoted(l, mapped)).len() <= VALUE_MAX);
        assert!(written(|l| put_uint(l, u64::MAX)).len() <= VALUE_MAX);
        assert!(written(|l| put_ipv4_quoted(l, std::net::Ipv4Addr::BROADCAST)).len() <= VALUE_MAX);
    }

    #[test]
    fn integers_match_display() {
        for v in (0..=10_001).chain([99_999, 100_000, u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(written(|l| put_uint(l, v)), v.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_ipv6_matches_display(bits: u128, zero_mask: u8) {
            // Zero some groups so runs of zeros of every length and position occur.
            let mut groups = std::net::Ipv6Addr::from(bits).segments();
            for (i, g) in groups.iter_mut().enumerate() {
                if zero_mask & (1 << i) != 0 {
                    *g = 0;
                }
            }
            let ip = std::net::Ipv6Addr::from(groups);
            proptest::prop_assert_eq!(written(|l| put_ipv6_quoted(l, ip)), format!("\"{ip}\""));
        }

        #[test]
        fn any_ipv4_matches_display(bits: u32) {
            let ip = std::net::Ipv4Addr::from(bits);
            proptest::prop_assert_eq!(written(|l| put_ipv4_quoted(l, ip)), format!("\"{ip}\""));
        }
    }
}
