//! The rows of one flush in `last_switched` order, pure. InnoDB inserts a LOAD's rows into the
//! time index (`last_switched_idx`) one at a time; flows arrive out of order within the
//! exporters' timeouts, so unsorted rows land all over the index's newest pages and split them
//! in the middle. Rows in key order append at one place and split at the insertion point (the
//! page's own "sequential insert" hint). Measured with the mariadb client on MariaDB 10.11 at
//! its defaults, 1 M bench rows, 100 k-row sorted blocks: the server's CPU per row fell from
//! 7.4-8.7 to 5.0-5.4 µs (perf/README.md, "MySQL / MariaDB").
//!
//! Rows are LOAD DATA text lines (see [`super::encode`]): a raw TAB or LF never occurs inside a
//! field (both are escaped), so lines split at LF and fields at TAB. The key is the field's
//! first [`KEY_BYTES`] bytes compared as bytes, which for `YYYY-MM-DD HH:MM:SS.ffffff` is time
//! order (to 100 µs). The order is only an optimization: any order stores the same rows, and
//! rows without the field keep their place at the front.

use bytes::{Bytes, BytesMut};

use super::ddl::TIME_COLUMN;
use crate::schema::{COLUMNS, ColumnSet};

/// Bytes of the key field that take part in the order.
pub const KEY_BYTES: usize = 24;

/// The 0-based field of a LOAD row (the columns of `set` in schema order) that holds
/// `last_switched`, if `set` stores it.
pub fn time_field(set: ColumnSet) -> Option<usize> {
    COLUMNS
        .iter()
        .filter(|c| set.contains(c.name))
        .position(|c| c.name == TIME_COLUMN)
}

/// One row: its key and where its line is.
struct Row {
    key: [u64; 3],
    chunk: u32,
    start: u32,
    len: u32,
}

/// The rows of `chunks` (whole lines, each ending with LF) sorted by field `field` (0-based),
/// as one buffer; `None` (leave them as they are) when there is nothing to gain (fewer than two
/// rows), a chunk does not end with a whole line, or a chunk is too large to index (4 GiB).
pub fn sorted_by_field(chunks: &[Bytes], field: usize) -> Option<Bytes> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut rows = Vec::with_capacity(total / 64);
    for (ci, chunk) in chunks.iter().enumerate() {
        let chunk_idx = u32::try_from(ci).ok()?;
        u32::try_from(chunk.len()).ok()?;
        if chunk.last().is_some_and(|&b| b != b'\n') {
            return None;
        }
        let mut at = 0;
        while at < chunk.len() {
            let end = memchr::memchr(b'\n', &chunk[at..]).map_or(chunk.len(), |i| at + i + 1);
            let line = &chunk[at..end];
            rows.push(Row {
                key: key_of(line, field),
                chunk: chunk_idx,
                // Both fit: the chunk's length does.
                start: at as u32,
                len: (end - at) as u32,
            });
            at = end;
        }
    }
    if rows.len() < 2 {
        return None;
    }
    rows.sort_unstable_by_key(|r| r.key);
    let mut out = BytesMut::with_capacity(total);
    for r in &rows {
        let start = r.start as usize;
        out.extend_from_slice(&chunks[r.chunk as usize][start..start + r.len as usize]);
    }
    Some(out.freeze())
}

/// The first [`KEY_BYTES`] bytes of field `field` of `line` as big-endian words (shorter fields
/// padded with zeros, so they order as byte strings do); all zeros when the line has no such
/// field.
fn key_of(line: &[u8], field: usize) -> [u64; 3] {
    let mut start = 0;
    for _ in 0..field {
        match memchr::memchr(b'\t', &line[start..]) {
            Some(i) => start += i + 1,
            None => return [0; 3],
        }
    }
    let rest = &line[start..];
    let end = memchr::memchr2(b'\t', b'\n', rest).unwrap_or(rest.len());
    let mut bytes = [0u8; KEY_BYTES];
    let n = end.min(KEY_BYTES);
    bytes[..n].copy_from_slice(&rest[..n]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_be_bytes(w)
    };
    [word(0), word(1), word(2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(b: &[u8]) -> Vec<Vec<u8>> {
        b.split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn sorts_rows_across_chunks_by_the_field() {
        let a = Bytes::from_static(
            b"x\t2026-12-04 10:00:02.000000\t1\nx\t2026-12-04 10:00:00.500000\t2\n",
        );
        let b = Bytes::from_static(b"y\t2026-12-04 09:59:59.999999\t3\n");
        let got = sorted_by_field(&[a, b], 1).expect("three rows");
        assert_eq!(
            lines(&got),
            vec![
                b"y\t2026-12-04 09:59:59.999999\t3\n".to_vec(),
                b"x\t2026-12-04 10:00:00.500000\t2\n".to_vec(),
                b"x\t2026-12-04 10:00:02.000000\t1\n".to_vec(),
            ]
        );
    }

    #[test]
    fn escaped_bytes_and_short_lines_keep_every_row() {
        // An escaped TAB and LF inside a field (`\t`, `\n` as two bytes each) and a row
        // without the key field.
        let a = Bytes::from_static(b"a\\tb\t2026-01-02 00:00:00.000000\nshort\n");
        let b = Bytes::from_static(b"c\\nd\t2026-01-01 00:00:00.000000\n");
        let got = sorted_by_field(&[a.clone(), b.clone()], 1).expect("three rows");
        assert_eq!(
            lines(&got),
            vec![
                b"short\n".to_vec(),
                b"c\\nd\t2026-01-01 00:00:00.000000\n".to_vec(),
                b"a\\tb\t2026-01-02 00:00:00.000000\n".to_vec(),
            ]
        );
        // A chunk that does not end with a whole line is left alone (its rest belongs to the
        // next chunk's first line in the stream).
        let cut = Bytes::from_static(b"c\\nd\t2026-01-01");
        assert!(sorted_by_field(&[a, cut], 1).is_none());
    }

    #[test]
    fn the_time_field_follows_the_column_set() {
        // All columns: time_received, first_switched, last_switched, ...
        assert_eq!(time_field(ColumnSet::ALL), Some(2));
        let two = ColumnSet::parse(&["last_switched", "exporter"]).expect("columns");
        assert_eq!(time_field(two), Some(0));
        let none = ColumnSet::parse(&["exporter", "in_bytes"]).expect("columns");
        assert_eq!(time_field(none), None);
    }

    #[test]
    fn one_row_is_left_alone() {
        assert!(sorted_by_field(&[Bytes::from_static(b"a\tb\n")], 1).is_none());
        assert!(sorted_by_field(&[], 0).is_none());
    }

    proptest! {
        /// Sorting keeps exactly the rows (as a multiset) and orders them by the key field.
        #[test]
        fn a_permutation_in_key_order(
            rows in proptest::collection::vec((0u32..5000, "[a-z]{0,5}"), 2..60),
            split in 0usize..60,
        ) {
            let mut text = Vec::new();
            for (t, other) in &rows {
                text.extend_from_slice(format!("{other}\t2026-12-04 10:{:02}:{:02}.{:06}\t{other}\n",
                    t / 600 % 60, t / 10 % 60, t % 10 * 100).as_bytes());
            }
            let all = lines(&text);
            let cut = split.min(all.len());
            let first: Vec<u8> = all[..cut].concat();
            let second: Vec<u8> = all[cut..].concat();
            let got = sorted_by_field(&[Bytes::from(first), Bytes::from(second)], 1).expect("rows");
            let mut got_lines = lines(&got);
            let keys: Vec<Vec<u8>> = got_lines
                .iter()
                .map(|l| l.split(|&c| c == b'\t').nth(1).map(<[u8]>::to_vec).unwrap_or_default())
                .collect();
            prop_assert!(keys.windows(2).all(|w| w[0] <= w[1]));
            let mut want = all.clone();
            want.sort();
            got_lines.sort();
            prop_assert_eq!(got_lines, want);
        }
    }
}
