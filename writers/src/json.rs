//! JSON lines: one object per record, keys from the schema, addresses as strings, times as
//! RFC 3339 UTC with microseconds, counters as integers, absent fields as null. The `file`
//! backend and `goflow decode` both write exactly this.

use std::io::Write;

use goflow_codec::{FlowRecord, UnixMicros};

use crate::schema::{COLUMNS, Value};

/// Appends one record as a JSON object and a newline.
pub fn encode_line(rec: &FlowRecord<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, col) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(col.name.as_bytes());
        out.extend_from_slice(b"\":");
        match (col.read)(rec) {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Uint(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            Value::Ip(ip) => {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "\"{ip}\"");
            }
            Value::Time(t) => {
                out.push(b'"');
                write_rfc3339(t, out);
                out.push(b'"');
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for Unix microseconds (proleptic Gregorian, UTC).
pub fn write_rfc3339(t: UnixMicros, out: &mut Vec<u8>) {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
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
}
