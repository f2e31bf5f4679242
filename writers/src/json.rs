//! JSON lines: one object per record, keys from the schema, addresses as strings, times as
//! RFC 3339 UTC with microseconds, counters as integers, absent fields as null. The `file`
//! backend and `goflow decode` both write exactly this.

use std::net::IpAddr;
use std::sync::OnceLock;

use bytes::BufMut;
use goflow_codec::{FlowRecord, UnixMicros};

use crate::schema::{COLUMNS, Value};

/// Appends one record as a JSON object and a newline, to any buffer (`Vec<u8>`, `BytesMut`).
/// A convenience over a per-thread [`JsonLines`].
pub fn encode_line<B: BufMut + ?Sized>(rec: &FlowRecord<'_>, out: &mut B) {
    thread_local! {
        static LINES: std::cell::RefCell<JsonLines> = std::cell::RefCell::default();
    }
    LINES.with_borrow_mut(|lines| lines.encode(rec, out));
}

/// Longest key prefix (`,"observation_domain":` is 22 bytes); keys are copied as fixed 32-byte
/// blocks so the copy is a couple of register moves, not a `memcpy` call.
const KEY_BLOCK: usize = 32;

/// One line's bytes at most: every column's key block plus its longest value (a quoted IPv6
/// address with an IPv4 tail, 47 bytes), and the closing `}\n`. A line is assembled on the
/// stack and appended with one copy.
const LINE_CAP: usize = COLUMNS.len() * (KEY_BLOCK + 48) + 2;

/// `{"name":` for the first column and `,"name":` for the others, built once, each padded to a
/// [`KEY_BLOCK`] with its real length beside it.
fn key_blocks() -> &'static [([u8; KEY_BLOCK], usize)] {
    static KEYS: OnceLock<Vec<([u8; KEY_BLOCK], usize)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut k = Vec::with_capacity(KEY_BLOCK);
                k.push(if i == 0 { b'{' } else { b',' });
                k.push(b'"');
                k.extend_from_slice(c.name.as_bytes());
                k.extend_from_slice(b"\":");
                let len = k.len().min(KEY_BLOCK);
                let mut block = [0u8; KEY_BLOCK];
                block[..len].copy_from_slice(&k[..len]);
                (block, len)
            })
            .collect()
    })
}

/// A line being assembled: a fixed stack buffer and a cursor. Writes past the end are
/// dropped rather than panicking (LINE_CAP makes that impossible; a test checks the worst case).
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

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }
}

/// The JSON-lines encoder with its small cache: the last day formatted as `YYYY-MM-DD` (a
/// record's three timestamps, and consecutive records, almost always share it), so a timestamp
/// costs a few divisions and digit pairs.
#[derive(Clone, Debug, Default)]
pub struct JsonLines {
    day: Option<(i64, [u8; 10])>,
    /// The line buffer, [`LINE_CAP`] bytes once used; reused so it is not zeroed per record.
    line: Vec<u8>,
}

impl JsonLines {
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
        for (col, (key, key_len)) in COLUMNS.iter().zip(key_blocks()) {
            line.put_block(key, *key_len);
            match (col.read)(rec) {
                Value::Null => line.put_block(b"null", 4),
                Value::Uint(v) => line.put(itoa::Buffer::new().format(v).as_bytes()),
                Value::Ip(ip) => {
                    let (text, len) = ip_quoted(ip);
                    line.put_block(&text, len);
                }
                Value::Time(t) => {
                    let mut b = [0u8; 29];
                    b[0] = b'"';
                    self.rfc3339(t, &mut b[1..28]);
                    b[28] = b'"';
                    line.put_block(&b, 29);
                }
            }
        }
        line.put_block(b"}\n", 2);
        let len = line.len;
        out.put_slice(buf.get(..len).unwrap_or_default());
        self.line = buf;
    }

    /// Writes the 27-byte form of `t` into `b[..27]`.
    fn rfc3339(&mut self, t: UnixMicros, b: &mut [u8]) {
        let secs = t.div_euclid(1_000_000);
        let day = secs.div_euclid(86_400);
        let date = match self.day {
            Some((d, text)) if d == day => text,
            _ => {
                let text = date_text(day);
                self.day = Some((day, text));
                text
            }
        };
        let Some(b) = b.get_mut(..27) else {
            return;
        };
        b[..10].copy_from_slice(&date);
        let sod = secs.rem_euclid(86_400) as u64;
        b[10] = b'T';
        put_pair(&mut b[11..13], sod / 3600);
        b[13] = b':';
        put_pair(&mut b[14..16], sod / 60 % 60);
        b[16] = b':';
        put_pair(&mut b[17..19], sod % 60);
        b[19] = b'.';
        let us = t.rem_euclid(1_000_000) as u64;
        put_pair(&mut b[20..22], us / 10_000);
        put_pair(&mut b[22..24], us / 100 % 100);
        put_pair(&mut b[24..26], us % 100);
        b[26] = b'Z';
    }
}

/// Two decimal digits of `v` (0..=99) into `dst[..2]`.
#[inline]
fn put_pair(dst: &mut [u8], v: u64) {
    if let [hi, lo, ..] = dst {
        *hi = b'0' + (v / 10 % 10) as u8;
        *lo = b'0' + (v % 10) as u8;
    }
}

/// `YYYY-MM-DD` of a day number (years clamped to 0..=9999 to keep the fixed form).
fn date_text(days: i64) -> [u8; 10] {
    let (y, m, d) = civil_from_days(days);
    let mut b = [0u8; 10];
    put_digits(&mut b[0..4], y.clamp(0, 9999) as u64);
    b[4] = b'-';
    put_digits(&mut b[5..7], u64::from(m));
    b[7] = b'-';
    put_digits(&mut b[8..10], u64::from(d));
    b
}

/// An address in quotes, in its usual text form (`"192.0.2.1"`, `"2001:db8::1"`), in a fixed
/// block with its length. IPv4 by hand (the common case, on the hot path); IPv6 through
/// `Display`.
fn ip_quoted(ip: IpAddr) -> ([u8; 48], usize) {
    // 45 bytes is the longest IPv6 text form (with an embedded IPv4 tail), plus quotes.
    let mut buf = [0u8; 48];
    let mut n = 1;
    buf[0] = b'"';
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cur = std::io::Cursor::new(&mut buf[1..47]);
            if write!(cur, "{v6}").is_ok() {
                n += usize::try_from(cur.position()).unwrap_or(0);
            }
        }
    }
    if let Some(q) = buf.get_mut(n) {
        *q = b'"';
        n += 1;
    }
    (buf, n)
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
    let mut b = [0u8; 27];
    JsonLines::default().rfc3339(t, &mut b);
    out.put_slice(&b);
}

/// Writes `v` as exactly `dst.len()` decimal digits (zero-padded, high digits dropped).
fn put_digits(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

    fn fmt(t: UnixMicros) -> String {
        let mut v = Vec::new();
        write_rfc3339(t, &mut v);
        String::from_utf8(v).expect("ascii")
    }

    #[test]
    fn rfc3339() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(fmt(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999Z");
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
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            let (text, len) = ip_quoted(ip);
            assert_eq!(&text[..len], format!("\"{ip}\"").as_bytes());
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
            let mut a = [0u8; 27];
            enc.rfc3339(t, &mut a);
            let mut b = [0u8; 27];
            JsonLines::default().rfc3339(t, &mut b);
            assert_eq!(a, b, "{t}");
        }
        assert_eq!(fmt(86_400_000_000), "1970-01-02T00:00:00.000000Z");
    }

    #[test]
    fn the_longest_line_fits() {
        // Every column at its longest: IPv6 addresses with an IPv4 tail, u64::MAX counters.
        let longest = COLUMNS.len() * (KEY_BLOCK + 48) + 2;
        assert_eq!(LINE_CAP, longest);
        for (c, (_, len)) in COLUMNS.iter().zip(key_blocks()) {
            assert_eq!(*len, c.name.len() + 4, "{} fits its key block", c.name);
        }
        let (_, v6_len) = ip_quoted(
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .expect("v6"),
        );
        assert!(v6_len <= 48 && itoa::Buffer::new().format(u64::MAX).len() <= 48);
    }
}
