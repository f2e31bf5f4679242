//! The embedded backends that need no server: `file` (JSON lines appended to a file, or to
//! standard output for `-`), `dump` (the same on standard output) and `null` (count and
//! discard). [`JsonEncoder`] writes exactly the lines `goflow decode` prints
//! ([`crate::json::encode_line`]); [`NullEncoder`] writes nothing, so the `null` backend measures
//! receive and decode alone.
//!
//! [`FileSink`] writes each chunk through as it arrives (nothing of a flush is held in this
//! process beyond what the backend keeps for a retry, and at most [`direct::DIRECT_WRITE_BYTES`]
//! staged) and `flush` ends the flush: every line is in the file, no fsync, except for a flush
//! holding positioned chunks (spool replay, Kafka messages: see `sink.rs`): it keeps no
//! positions, so it fsyncs before saying the rows are stored (the stream advances after that:
//! at-least-once). How bytes reach the
//! file is a [`FileIo`]: by default `O_DIRECT` in whole blocks ([`direct`]), falling back to the
//! page cache with drop-behind where the file system has no direct I/O. A failed flush is rolled
//! back by truncating the file to where the flush began, so the backend's retry of the same
//! chunks never duplicates lines. On standard output a partial write cannot be taken back; a
//! closed pipe is a fatal error.

mod direct;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use goflow_codec::FlowRecord;

use crate::json;
use crate::sink::{Chunk, RowEncoder, Sink, SinkError};
use direct::DirectFile;

/// The JSON-lines row encoder: one object and a newline per record.
#[derive(Clone, Debug, Default)]
pub struct JsonEncoder {
    lines: json::JsonLines,
}

impl JsonEncoder {
    /// An encoder of the columns in `set` (`columns:`).
    pub fn new(set: crate::schema::ColumnSet) -> Self {
        JsonEncoder {
            lines: json::JsonLines::new(set),
        }
    }
}

impl RowEncoder for JsonEncoder {
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut) {
        self.lines.encode(rec, out);
    }
}

/// The `null` backend's encoder: writes nothing (the batch's row count still travels in the
/// chunk, so the backend counts the records).
#[derive(Clone, Copy, Debug, Default)]
pub struct NullEncoder;

impl RowEncoder for NullEncoder {
    fn encode(&mut self, _rec: &FlowRecord<'_>, _out: &mut BytesMut) {}
}

/// Count and discard.
#[derive(Debug, Default)]
pub struct NullSink {
    rows: u64,
}

impl Sink for NullSink {
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        self.rows += chunk.count;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn status(&mut self) -> Vec<(&'static str, String)> {
        vec![("rows_discarded", self.rows.to_string())]
    }
}

/// Every this many bytes written, the pages behind the writer are dropped from the page cache.
const DROP_EVERY: u64 = 16 << 20;
/// The newest this many bytes stay cached (for readers tailing the file).
pub const DROP_LAG: u64 = 32 << 20;
/// How far back each drop reaches (pages still being written back at one drop are dropped at
/// a later one).
const DROP_SPAN: u64 = 512 << 20;

/// Asks the kernel to write back and drop the file's pages from `DROP_SPAN + DROP_LAG` to
/// `DROP_LAG` bytes behind `len` (`posix_fadvise(DONTNEED)`: dirty pages are queued for
/// writeback, clean ones freed). A collector appends gigabytes a day that nobody rereads from
/// memory; left cached, they push out everything else on the host, and each new line lands in
/// a page the kernel has to find and zero (on a VM, one the hypervisor has to back: that cost
/// doubled the file backend's CPU per flow in perf/collector.sh).
fn drop_written_pages(file: &File, len: u64) -> io::Result<()> {
    let Some(end) = len.checked_sub(DROP_LAG) else {
        return Ok(());
    };
    let start = end.saturating_sub(DROP_SPAN);
    rustix::fs::fadvise(
        file,
        start,
        std::num::NonZeroU64::new(end - start),
        rustix::fs::Advice::DontNeed,
    )?;
    Ok(())
}

/// How a [`FileSink`] gets its bytes into the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileIo {
    /// `O_DIRECT` where the file system supports it, else [`FileIo::DropBehind`]: the default.
    Direct,
    /// Through the page cache, dropping written pages behind the writer.
    DropBehind,
    /// Through the page cache, left cached (`keep_page_cache: true`).
    PageCache,
}

enum Target {
    Direct(DirectFile),
    File {
        file: File,
        /// The file's length as far as this sink knows (it only appends).
        len: u64,
        /// Length when the current flush's first write happened (the rollback point).
        flush_start: Option<u64>,
        /// Drop written pages from the page cache behind the writer.
        drop_behind: bool,
    },
    Stdout,
}

/// Appends JSON lines to a file (created if missing) or writes them to standard output.
pub struct FileSink {
    target: Target,
    /// The path as configured (`-` for standard output), for status and errors.
    path: PathBuf,
    bytes_written: u64,
    rows_written: u64,
    /// Times the file was reopened after a rotation.
    reopens: u64,
    /// Bytes and rows of the current flush (counted as written when it ends).
    flush_bytes: u64,
    flush_rows: u64,
    /// The current flush holds positioned chunks: fsync before it succeeds.
    flush_positioned: bool,
}

impl Target {
    /// Appends through the page cache (`O_APPEND`).
    fn buffered(path: &Path, drop_behind: bool) -> io::Result<Target> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Target::File {
            file,
            len,
            flush_start: None,
            drop_behind,
        })
    }

    /// How this target writes, for status.
    fn io(&self) -> &'static str {
        match self {
            Target::Direct(_) => "direct",
            Target::File {
                drop_behind: true, ..
            } => "page cache, drop-behind",
            Target::File { .. } | Target::Stdout => "page cache",
        }
    }
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("bytes_written", &self.bytes_written)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Opens `path` for appending (created with mode 0644 if missing); `-` is standard output.
    /// Fails when the file cannot be opened (a missing directory, no permission), so a bad path
    /// stops the daemon at start rather than at the first flush.
    pub fn open(path: &Path, io: FileIo) -> io::Result<FileSink> {
        if path.as_os_str() == "-" {
            return Ok(FileSink::stdout());
        }
        let target = match io {
            FileIo::Direct => match DirectFile::open(path)? {
                Some(f) => Target::Direct(f),
                None => {
                    log::info!(
                        "{}: no direct I/O on this file system; writing through the page cache",
                        path.display()
                    );
                    Target::buffered(path, true)?
                }
            },
            FileIo::DropBehind => Target::buffered(path, true)?,
            FileIo::PageCache => Target::buffered(path, false)?,
        };
        Ok(FileSink {
            target,
            path: path.to_path_buf(),
            bytes_written: 0,
            rows_written: 0,
            reopens: 0,
            flush_bytes: 0,
            flush_rows: 0,
            flush_positioned: false,
        })
    }

    /// Writes to standard output (the `dump` backend).
    pub fn stdout() -> FileSink {
        FileSink {
            target: Target::Stdout,
            path: PathBuf::from("-"),
            bytes_written: 0,
            rows_written: 0,
            reopens: 0,
            flush_bytes: 0,
            flush_rows: 0,
            flush_positioned: false,
        }
    }

    /// After each flush, follows what logrotate (or an operator) did to the file: when `path` no
    /// longer names the open file (moved away with `create`, or deleted), the sink reopens `path`,
    /// creating it, so new lines go to the new file; when the open file got shorter than this sink
    /// wrote (`copytruncate`), its length is the new end (the direct writer checks that itself,
    /// before every write). A stat or two per flush; a failed reopen keeps writing to the old file
    /// and is tried again after the next flush.
    fn follow_rotation(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let open = match &self.target {
            Target::Direct(f) => f.file().metadata(),
            Target::File { file, .. } => file.metadata(),
            Target::Stdout => return,
        };
        let Ok(open) = open else {
            return;
        };
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|named| named.dev() == open.dev() && named.ino() == open.ino());
        if same {
            if let Target::File { len, .. } = &mut self.target
                && open.len() < *len
            {
                log::info!(
                    "{} was truncated to {} bytes (copytruncate?); appending from there",
                    self.path.display(),
                    open.len()
                );
                *len = open.len();
            }
            return;
        }
        match self.reopen_target() {
            Ok(()) => {
                self.reopens += 1;
                log::info!(
                    "{} was moved or removed (rotated?); reopened it",
                    self.path.display()
                );
            }
            Err(e) => log::warn!(
                "{} was moved or removed, and reopening it failed: {e}; still writing to the old file",
                self.path.display()
            ),
        }
    }

    /// Opens `path` again (creating it) in place of the open file, keeping the I/O mode.
    fn reopen_target(&mut self) -> io::Result<()> {
        match &mut self.target {
            Target::Direct(f) => match f.reopen(&self.path) {
                Ok(true) => Ok(()),
                // The new file is on a file system without direct I/O.
                Ok(false) => Target::buffered(&self.path, true).map(|t| self.target = t),
                Err(e) => Err(e),
            },
            Target::File { drop_behind, .. } => {
                Target::buffered(&self.path, *drop_behind).map(|t| self.target = t)
            }
            Target::Stdout => Ok(()),
        }
    }

    /// After a failed direct write: when the kernel refused it as invalid (a file system that
    /// reports direct-I/O alignment but will not take it), takes back the current flush and goes
    /// on through the page cache; the backend's retry of the flush then writes it that way.
    fn leave_direct_io(&mut self, e: &io::Error) {
        let Target::Direct(f) = &mut self.target else {
            return;
        };
        if e.raw_os_error() != Some(rustix::io::Errno::INVAL.raw_os_error()) {
            return;
        }
        if let Err(e) = f.rollback() {
            log::warn!("cannot roll back {}: {e}", self.path.display());
        }
        match Target::buffered(&self.path, true) {
            Ok(t) => {
                self.target = t;
                log::warn!(
                    "{}: the file system refused a direct write ({e}); writing through the page cache from now on",
                    self.path.display()
                );
            }
            Err(e) => log::warn!("cannot reopen {}: {e}", self.path.display()),
        }
    }

    fn error(&self, what: &str, e: &io::Error) -> SinkError {
        let msg = format!("{what} {}: {e}", self.display_path());
        match (&self.target, e.kind()) {
            // Nobody reads standard output any more: retrying cannot help.
            (Target::Stdout, io::ErrorKind::BrokenPipe) => SinkError::fatal(msg),
            (_, io::ErrorKind::PermissionDenied) => SinkError::fatal(msg),
            // A full or failing disk may recover; the backend retries with backoff.
            _ => SinkError::retriable(msg),
        }
    }

    fn display_path(&self) -> String {
        match self.target {
            Target::Stdout => "standard output".to_owned(),
            Target::File { .. } | Target::Direct(_) => self.path.display().to_string(),
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        let result = match &mut self.target {
            Target::Direct(f) => f.append(&chunk.rows),
            Target::File {
                file,
                len,
                flush_start,
                drop_behind,
            } => {
                flush_start.get_or_insert(*len);
                let r = file.write_all(&chunk.rows);
                if r.is_ok() {
                    let before = *len;
                    *len += chunk.rows.len() as u64;
                    if *drop_behind && before / DROP_EVERY != *len / DROP_EVERY {
                        // Advice only: a file system without it loses nothing.
                        let _ = drop_written_pages(file, *len);
                    }
                }
                r
            }
            Target::Stdout => io::stdout().lock().write_all(&chunk.rows),
        };
        match result {
            Ok(()) => {
                self.flush_bytes += chunk.rows.len() as u64;
                self.flush_rows += chunk.count;
                self.flush_positioned |= chunk.position.is_some();
                Ok(())
            }
            Err(e) => {
                self.leave_direct_io(&e);
                Err(self.error("cannot write to", &e))
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let result = match &mut self.target {
            Target::Direct(f) => f.commit(),
            // Unbuffered: every write already reached the kernel.
            Target::File { flush_start, .. } => {
                *flush_start = None;
                Ok(())
            }
            Target::Stdout => io::stdout().lock().flush(),
        };
        let result = result.and_then(|()| {
            if !std::mem::take(&mut self.flush_positioned) {
                return Ok(());
            }
            match &self.target {
                Target::Direct(f) => f.file().sync_data(),
                Target::File { file, .. } => file.sync_data(),
                Target::Stdout => Ok(()),
            }
        });
        match result {
            Ok(()) => {
                self.follow_rotation();
                self.bytes_written += self.flush_bytes;
                self.rows_written += self.flush_rows;
                self.flush_bytes = 0;
                self.flush_rows = 0;
                Ok(())
            }
            Err(e) => {
                self.leave_direct_io(&e);
                Err(self.error("cannot flush", &e))
            }
        }
    }

    fn abort(&mut self) {
        self.flush_bytes = 0;
        self.flush_rows = 0;
        self.flush_positioned = false;
        if let Target::Direct(f) = &mut self.target {
            // Take back the partial flush; if that fails, the next write tries again first.
            if let Err(e) = f.rollback() {
                log::warn!("cannot roll back {}: {e}", self.path.display());
            }
        } else if let Target::File {
            file,
            len,
            flush_start,
            ..
        } = &mut self.target
            && let Some(start) = flush_start.take()
        {
            // Take back the partial flush so the retry does not duplicate lines. If even this
            // fails the retry appends after the partial lines (at-least-once).
            if let Err(e) = file.set_len(start) {
                log::warn!(
                    "cannot roll back {} to {start} bytes: {e}",
                    self.path.display()
                );
            } else {
                *len = start;
            }
        }
    }

    /// Reopens the file by its path (SIGHUP from logrotate's `postrotate`), whether or not it
    /// was moved: the old descriptor is closed, so a rotated file is not held open while no
    /// rows arrive. Standard output is left alone.
    fn reopen(&mut self) {
        if matches!(self.target, Target::Stdout) {
            return;
        }
        match self.reopen_target() {
            Ok(()) => {
                self.reopens += 1;
                log::info!("{}: reopened (SIGHUP)", self.path.display());
            }
            Err(e) => log::warn!(
                "{}: cannot reopen it ({e}); still writing to the open file",
                self.path.display()
            ),
        }
    }

    fn status(&mut self) -> Vec<(&'static str, String)> {
        vec![
            ("path", json::json_string(&self.display_path())),
            ("bytes_written", self.bytes_written.to_string()),
            ("rows_written", self.rows_written.to_string()),
            ("reopens", self.reopens.to_string()),
            ("io", json::json_string(self.target.io())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk(s: &str, count: u64) -> Chunk {
        Chunk {
            rows: Bytes::copy_from_slice(s.as_bytes()),
            count,
            oldest_received_us: 0,
            position: None,
        }
    }

    /// A path under the target directory: a disk file system, where `/tmp` may be tmpfs.
    fn temp_path(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!("goflow-file-{}-{name}", std::process::id()))
    }

    const ALL_IO: [FileIo; 3] = [FileIo::Direct, FileIo::DropBehind, FileIo::PageCache];

    fn io_status(sink: &mut FileSink) -> String {
        let status = sink.status();
        let io = status
            .iter()
            .find(|(k, _)| *k == "io")
            .expect("io in status");
        serde_json::from_str(&io.1).expect("a JSON string")
    }

    #[test]
    fn appends_and_rolls_back_an_aborted_flush() {
        for io in ALL_IO {
            appends_and_rolls_back(io);
        }
    }

    fn appends_and_rolls_back(io: FileIo) {
        let path = temp_path(&format!("rollback-{io:?}.jsonl"));
        std::fs::write(&path, b"old\n").expect("write");
        let mut sink = FileSink::open(&path, io).expect("open");
        sink.write(&chunk("a\n", 1)).expect("write a");
        sink.flush().expect("flush");
        sink.write(&chunk("b\n", 1)).expect("write b");
        sink.abort();
        sink.write(&chunk("b\n", 1)).expect("write b again");
        sink.write(&chunk("c\n", 1)).expect("write c");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "old\na\nb\nc\n");
        let status = sink.status();
        assert!(
            status.contains(&("rows_written", "3".to_owned())),
            "{status:?}"
        );
        let _ = std::fs::remove_file(&path);
    }

    /// Bytes of `path` in the page cache, from util-linux's `fincore`.
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a byte count")
    }

    #[test]
    fn written_lines_leave_the_page_cache_behind_the_writer_and_stay_intact() {
        let path = temp_path("drop-behind.jsonl");
        let _ = std::fs::remove_file(&path);
        let line = format!("{{\"x\":\"{}\"}}\n", "y".repeat(1000));
        let block = line.repeat(256);
        // Writes a little over DROP_LAG + 4 drops' worth through a sink and flushes; the bytes.
        let fill = |sink: &mut FileSink| {
            let mut written = 0;
            while written < DROP_LAG + 4 * DROP_EVERY {
                sink.write(&chunk(&block, 256)).expect("write");
                written += block.len() as u64;
            }
            sink.flush().expect("flush");
            written
        };
        let mut sink = FileSink::open(&path, FileIo::DropBehind).expect("open");
        let written = fill(&mut sink);
        // Dirty pages are only queued for writeback by the advice; once they are on disk the
        // next drop frees them.
        if let Target::File { file, len, .. } = &sink.target {
            file.sync_data().expect("sync");
            drop_written_pages(file, *len).expect("fadvise");
        }
        let cached = cached_bytes(&path);
        assert!(
            cached <= DROP_LAG + DROP_EVERY,
            "{cached} of {written} bytes still cached"
        );
        // Nothing lost or reordered.
        let text = std::fs::read(&path).expect("read");
        assert_eq!(text.len() as u64, written);
        assert!(text.chunks(line.len()).all(|l| l == line.as_bytes()));

        // keep_page_cache: nothing dropped.
        let kept = temp_path("kept.jsonl");
        let _ = std::fs::remove_file(&kept);
        let written = fill(&mut FileSink::open(&kept, FileIo::PageCache).expect("open"));
        // Whole pages: the last one is partly written.
        assert!(cached_bytes(&kept) >= written);

        // Direct: nothing but the partial last block went through the page cache.
        let direct = temp_path("direct.jsonl");
        let _ = std::fs::remove_file(&direct);
        let mut sink = FileSink::open(&direct, FileIo::Direct).expect("open");
        if io_status(&mut sink) == "direct" {
            let written = fill(&mut sink);
            let cached = cached_bytes(&direct);
            assert!(cached <= 1 << 16, "{cached} of {written} bytes cached");
            let text = std::fs::read(&direct).expect("read");
            assert_eq!(text.len() as u64, written);
            assert!(text.chunks(line.len()).all(|l| l == line.as_bytes()));
        } else {
            eprintln!(
                "no direct I/O under {}: that part skipped",
                direct.display()
            );
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&kept);
        let _ = std::fs::remove_file(&direct);
    }

    #[test]
    fn reopen_moves_to_a_new_file_at_once_and_keeps_every_line() {
        for io in ALL_IO {
            let path = temp_path(&format!("reopen-{io:?}.jsonl"));
            let rotated = temp_path(&format!("reopen-{io:?}.jsonl.1"));
            let _ = std::fs::remove_file(&path);
            let mut sink = FileSink::open(&path, io).expect("open");
            sink.write(&chunk("a\n", 1)).expect("write");
            sink.flush().expect("flush");
            std::fs::rename(&path, &rotated).expect("rename");
            // SIGHUP: the new file exists at once, before any further row.
            sink.reopen();
            assert_eq!(std::fs::read_to_string(&path).expect("new file"), "");
            sink.write(&chunk("b\n", 1)).expect("write");
            sink.flush().expect("flush");
            assert_eq!(std::fs::read_to_string(&rotated).expect("read"), "a\n");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "b\n");
            // Reopening the same file appends after what it holds.
            sink.reopen();
            sink.write(&chunk("c\n", 1)).expect("write");
            sink.flush().expect("flush");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "b\nc\n");
            assert!(
                sink.status().contains(&("reopens", "2".to_owned())),
                "{io:?}"
            );
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&rotated);
        }
    }

    #[test]
    fn follows_logrotate_create_and_copytruncate() {
        for io in ALL_IO {
            follows_logrotate(io);
        }
    }

    fn follows_logrotate(io: FileIo) {
        let path = temp_path(&format!("rotate-{io:?}.jsonl"));
        let rotated = temp_path(&format!("rotate-{io:?}.jsonl.1"));
        let _ = std::fs::remove_file(&path);
        let mut sink = FileSink::open(&path, io).expect("open");
        sink.write(&chunk("a\n", 1)).expect("write");
        sink.flush().expect("flush");

        // logrotate `create`: the file is moved away; lines after the next flush go to a new
        // file at the old path.
        std::fs::rename(&path, &rotated).expect("rename");
        sink.write(&chunk("b\n", 1)).expect("write");
        sink.flush().expect("flush");
        sink.write(&chunk("c\n", 1)).expect("write");
        sink.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(&rotated).expect("read"), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "c\n");
        assert!(sink.status().contains(&("reopens", "1".to_owned())));

        // logrotate `copytruncate`: the file is emptied in place; an aborted flush must roll
        // back to the new end, not extend the file with zeros up to the old one.
        std::fs::write(&path, b"").expect("truncate");
        sink.write(&chunk("d\n", 1)).expect("write");
        sink.flush().expect("flush");
        sink.write(&chunk("e\n", 1)).expect("write");
        sink.abort();
        sink.write(&chunk("e\n", 1)).expect("write");
        sink.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "d\ne\n");

        // copytruncate of a file longer than the staging area: the next lines go to the start
        // of the emptied file, not after a hole of zeros where the old end was.
        let big = "x".repeat(999) + "\n";
        for _ in 0..3000 {
            sink.write(&chunk(&big, 1)).expect("write");
        }
        sink.flush().expect("flush");
        assert!(std::fs::metadata(&path).expect("stat").len() > 3_000_000);
        std::fs::write(&path, b"").expect("truncate");
        sink.write(&chunk("f\n", 1)).expect("write");
        for _ in 0..2000 {
            sink.write(&chunk(&big, 1)).expect("write");
        }
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 2 + 2000 * big.len(), "{io:?}");
        assert!(text.starts_with("f\nxxx"), "{io:?}");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache_without_losing_lines() {
        let path = temp_path("refused.jsonl");
        std::fs::write(&path, b"old\n").expect("write");
        let mut sink = FileSink::open(&path, FileIo::Direct).expect("open");
        let Target::Direct(f) = &mut sink.target else {
            eprintln!("skipped: no direct I/O under {}", path.display());
            return;
        };
        // Blocks smaller than any device's sector: the first direct write is refused (EINVAL).
        f.force_align(256);
        let line = "y".repeat(299) + "\n";
        sink.write(&chunk("a\n", 1)).expect("write");
        sink.flush().expect("flush");
        sink.write(&chunk(&line, 1)).expect("staged");
        let e = sink.flush().expect_err("the direct write is refused");
        assert!(e.is_retriable(), "{e}");
        assert_eq!(io_status(&mut sink), "page cache, drop-behind");
        // The backend's retry of the flush.
        sink.abort();
        sink.write(&chunk(&line, 1)).expect("write");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("old\na\n{line}"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn open_fails_for_a_missing_directory() {
        let path = temp_path("no/such/dir/flows.jsonl");
        for io in ALL_IO {
            assert!(FileSink::open(&path, io).is_err());
        }
    }

    #[test]
    fn null_sink_counts() {
        let mut sink = NullSink::default();
        sink.write(&chunk("", 7)).expect("write");
        sink.flush().expect("flush");
        assert_eq!(sink.status(), vec![("rows_discarded", "7".to_owned())]);
    }

    #[test]
    fn json_string_escapes() {
        let s = "a\"b\\c\n";
        let back: String = serde_json::from_str(&json::json_string(s)).expect("valid JSON");
        assert_eq!(back, s);
    }
}
