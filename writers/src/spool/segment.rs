//! The spool's segment files: append-only, one encoded [`Chunk`](crate::sink::Chunk) per record,
//! each record carrying its own id, length and a CRC-32 (STYLE.md principle 10), so a torn tail
//! (a crash mid-append) or a damaged record is detected, counted and skipped without losing the
//! records around it: the reader looks for the next record magic whose checksum holds.
//!
//! A segment is `<first id, 20 digits>.seg`:
//! - header: `GFSPOOL1`, u16 length of the *format* string, the format string (what encoder wrote
//!   the rows: a segment written by another schema is not replayed into this one);
//! - records: u32 magic `0x5350_4C52` ("SPLR"), u32 payload length, u64 record id, u64 row
//!   count, i64 oldest receive time (Unix µs), u32 CRC-32 of the 28 bytes after the magic and of
//!   the payload, then the payload (the chunk's rows). Little-endian.
//!
//! Record ids are global for a backend's spool and only grow; a replayed chunk's position is its
//! record id + 1, so where a stream resumes never depends on how records are counted in a file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The first bytes of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"GFSPOOL1";
/// The first bytes of a record.
pub const RECORD_MAGIC: u32 = 0x5350_4C52;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 36;
/// The longest payload a record may claim (a chunk is ~256 KiB; anything far beyond is damage).
pub const RECORD_PAYLOAD_MAX_BYTES: u32 = 64 << 20;
/// Segment file name suffix.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// A record's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub id: u64,
    pub count: u64,
    pub oldest_us: i64,
}

/// The segment header bytes for `format`.
pub fn segment_header(format: &str) -> Vec<u8> {
    let f = format.as_bytes();
    let n = f.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(10 + n);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&f[..n]);
    out
}

/// Appends one record (header and payload) to `out`.
pub fn encode_record(h: &RecordHeader, payload: &[u8], out: &mut Vec<u8>) {
    let mut head = [0u8; RECORD_HEADER_BYTES];
    head[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    head[4..8].copy_from_slice(&h.len.to_le_bytes());
    head[8..16].copy_from_slice(&h.id.to_le_bytes());
    head[16..24].copy_from_slice(&h.count.to_le_bytes());
    head[24..32].copy_from_slice(&h.oldest_us.to_le_bytes());
    let crc = checksum(&head[4..32], payload);
    head[32..36].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(head);
    c.update(payload);
    c.finalize()
}

/// Parses a record header; `None` when the magic or the length is wrong.
fn parse_header(head: &[u8; RECORD_HEADER_BYTES]) -> Option<(RecordHeader, u32)> {
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if u32_at(0) != RECORD_MAGIC {
        return None;
    }
    let len = u32_at(4);
    if len > RECORD_PAYLOAD_MAX_BYTES {
        return None;
    }
    Some((
        RecordHeader {
            len,
            id: u64_at(8),
            count: u64_at(16),
            oldest_us: u64_at(24) as i64,
        },
        u32_at(32),
    ))
}

/// Reads a segment's header: its format string and where its records start. `Ok(None)` when
/// the file is not a segment (or its header is cut short).
pub fn read_segment_header(file: &File) -> io::Result<Option<(String, u64)>> {
    let mut head = [0u8; 10];
    if !read_at_full(file, &mut head, 0)? || head[..8] != SEGMENT_MAGIC {
        return Ok(None);
    }
    let n = usize::from(u16::from_le_bytes([head[8], head[9]]));
    let mut f = vec![0u8; n];
    if !read_at_full(file, &mut f, 10)? {
        return Ok(None);
    }
    Ok(Some((
        String::from_utf8_lossy(&f).into_owned(),
        10 + n as u64,
    )))
}

/// Reads exactly `buf.len()` bytes at `offset`; false when the file ends first.
fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`read_record`] found at an offset.
#[derive(Debug)]
pub enum Read {
    /// A whole, checked record, and the offset after it.
    Record {
        header: RecordHeader,
        payload: Vec<u8>,
        end: u64,
    },
    /// Damage from `offset`: the next good record starts at `resume` (or none does before
    /// `limit`: `resume == limit`). `bytes` were skipped.
    Damaged { resume: u64, bytes: u64 },
    /// Nothing more before `limit`.
    End,
}

/// Reads the record at `offset`, not looking at bytes at or after `limit` (the durable end of a
/// segment being written, or its length). Damage is skipped by scanning for the next record
/// magic whose checksum holds.
pub fn read_record(file: &File, offset: u64, limit: u64) -> io::Result<Read> {
    if offset >= limit {
        return Ok(Read::End);
    }
    if let Some(r) = try_record(file, offset, limit)? {
        return Ok(r);
    }
    // Damaged (or torn): find the next offset where a whole, checked record starts.
    let mut at = offset + 1;
    let mut window = vec![0u8; 64 << 10];
    while at + RECORD_HEADER_BYTES as u64 <= limit {
        let n = usize::try_from((limit - at).min(window.len() as u64)).unwrap_or(window.len());
        let buf = &mut window[..n];
        file.read_exact_at(buf, at)?;
        let magic = RECORD_MAGIC.to_le_bytes();
        let mut found = None;
        for i in 0..n.saturating_sub(3) {
            if buf[i..i + 4] == magic && try_record(file, at + i as u64, limit)?.is_some() {
                found = Some(at + i as u64);
                break;
            }
        }
        if let Some(resume) = found {
            return Ok(Read::Damaged {
                resume,
                bytes: resume - offset,
            });
        }
        // Overlap by 3 bytes so a magic across the window edge is seen.
        at += n.saturating_sub(3).max(1) as u64;
    }
    Ok(Read::Damaged {
        resume: limit,
        bytes: limit - offset,
    })
}

fn try_record(file: &File, offset: u64, limit: u64) -> io::Result<Option<Read>> {
    let mut head = [0u8; RECORD_HEADER_BYTES];
    if offset + RECORD_HEADER_BYTES as u64 > limit || !read_at_full(file, &mut head, offset)? {
        return Ok(None);
    }
    let Some((header, crc)) = parse_header(&head) else {
        return Ok(None);
    };
    let end = offset + RECORD_HEADER_BYTES as u64 + u64::from(header.len);
    if end > limit {
        return Ok(None);
    }
    let mut payload = vec![0u8; header.len as usize];
    if !read_at_full(file, &mut payload, offset + RECORD_HEADER_BYTES as u64)? {
        return Ok(None);
    }
    if checksum(&head[4..32], &payload) != crc {
        return Ok(None);
    }
    Ok(Some(Read::Record {
        header,
        payload,
        end,
    }))
}

/// The segment file name for a first record id.
pub fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}{SEGMENT_SUFFIX}")
}

/// The first record id from a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn segment(records: &[(u64, &[u8])]) -> (tempfile_dir::Dir, File, u64) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.0.join(segment_name(records.first().map_or(0, |r| r.0)));
        let mut bytes = segment_header("pg:a,b");
        for (id, p) in records {
            let h = RecordHeader {
                len: p.len() as u32,
                id: *id,
                count: 1,
                oldest_us: 7,
            };
            encode_record(&h, p, &mut bytes);
        }
        let mut f = File::create(&path).expect("create");
        f.write_all(&bytes).expect("write");
        let f = File::open(&path).expect("open");
        (dir, f, bytes.len() as u64)
    }

    /// A temporary directory without the tempfile crate (writers has no dev-dependency on it).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU64, Ordering};
                static N: AtomicU64 = AtomicU64::new(0);
                let p = std::env::temp_dir().join(format!(
                    "goflow-seg-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).expect("dir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn ids(f: &File, start: u64, limit: u64) -> (Vec<u64>, u64) {
        let mut out = Vec::new();
        let mut skipped = 0;
        let mut at = start;
        loop {
            match read_record(f, at, limit).expect("read") {
                Read::Record { header, end, .. } => {
                    out.push(header.id);
                    at = end;
                }
                Read::Damaged { resume, bytes } => {
                    skipped += bytes;
                    at = resume;
                }
                Read::End => return (out, skipped),
            }
        }
    }

    #[test]
    fn reads_back_and_skips_damage_and_torn_tails() {
        let (_d, f, len) = segment(&[(5, b"one"), (6, b"two two"), (7, b"three")]);
        let (format, start) = read_segment_header(&f).expect("io").expect("header");
        assert_eq!(format, "pg:a,b");
        assert_eq!(ids(&f, start, len), (vec![5, 6, 7], 0));
        // Torn tail: the last record cut short is skipped (and counted), the rest read.
        assert_eq!(ids(&f, start, len - 2), (vec![5, 6], 36 + 5 - 2));
        // A durable limit mid-record reads only what is before it.
        assert_eq!(ids(&f, start, start + 36 + 3), (vec![5], 0));
        assert_eq!(segment_name(5), "00000000000000000005.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("5.seg"), None);
    }

    #[test]
    fn a_flipped_byte_costs_one_record() {
        let (d, _f, len) = segment(&[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")]);
        let path = d.0.join(segment_name(1));
        let mut bytes = std::fs::read(&path).expect("read");
        let start = segment_header("pg:a,b").len();
        // Second record's payload.
        let at = start + 36 + 4 + 36 + 1;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let f = File::open(&path).expect("open");
        let (got, skipped) = ids(&f, start as u64, len);
        assert_eq!(got, vec![1, 3]);
        assert_eq!(skipped, 36 + 4);
        // A damaged header too.
        bytes[at] ^= 0xff;
        bytes[start + 36 + 4 + 5] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let f = File::open(&path).expect("open");
        assert_eq!(ids(&f, start as u64, len).0, vec![1, 3]);
    }
}
