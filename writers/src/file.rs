//! The embedded backends that need no server: `file` (JSON lines appended to a file, or to
//! standard output for `-`), `dump` (the same on standard output) and `null` (count and
//! discard). [`JsonEncoder`] writes exactly the lines `goflow decode` prints
//! ([`crate::json::encode_line`]); [`NullEncoder`] writes nothing, so the `null` backend measures
//! receive and decode alone.
//!
//! [`FileSink`] writes each chunk through to the file as it arrives (nothing of a flush is held in
//! this process beyond what the backend keeps for a retry) and `flush` only ends the flush: the
//! data is in the page cache, no fsync. A failed flush is rolled back by truncating the file to
//! where the flush began, so the backend's retry of the same chunks never duplicates lines. On
//! standard output a partial write cannot be taken back; a closed pipe is a fatal error.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use goflow_codec::FlowRecord;

use crate::json;
use crate::sink::{Chunk, RowEncoder, Sink, SinkError};

/// The JSON-lines row encoder: one object and a newline per record.
#[derive(Clone, Debug, Default)]
pub struct JsonEncoder {
    lines: json::JsonLines,
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

enum Target {
    File {
        file: File,
        /// The file's length as far as this sink knows (it only appends).
        len: u64,
        /// Length when the current flush's first write happened (the rollback point).
        flush_start: Option<u64>,
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
    /// Bytes and rows of the current flush (counted as written when it ends).
    flush_bytes: u64,
    flush_rows: u64,
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
    pub fn open(path: &Path) -> io::Result<FileSink> {
        if path.as_os_str() == "-" {
            return Ok(FileSink::stdout());
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSink {
            target: Target::File {
                file,
                len,
                flush_start: None,
            },
            path: path.to_path_buf(),
            bytes_written: 0,
            rows_written: 0,
            flush_bytes: 0,
            flush_rows: 0,
        })
    }

    /// Writes to standard output (the `dump` backend).
    pub fn stdout() -> FileSink {
        FileSink {
            target: Target::Stdout,
            path: PathBuf::from("-"),
            bytes_written: 0,
            rows_written: 0,
            flush_bytes: 0,
            flush_rows: 0,
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
            Target::File { .. } => self.path.display().to_string(),
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError> {
        let result = match &mut self.target {
            Target::File {
                file,
                len,
                flush_start,
            } => {
                flush_start.get_or_insert(*len);
                let r = file.write_all(&chunk.rows);
                if r.is_ok() {
                    *len += chunk.rows.len() as u64;
                }
                r
            }
            Target::Stdout => io::stdout().lock().write_all(&chunk.rows),
        };
        match result {
            Ok(()) => {
                self.flush_bytes += chunk.rows.len() as u64;
                self.flush_rows += chunk.count;
                Ok(())
            }
            Err(e) => Err(self.error("cannot write to", &e)),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let result = match &mut self.target {
            // Unbuffered: every write already reached the kernel.
            Target::File { flush_start, .. } => {
                *flush_start = None;
                Ok(())
            }
            Target::Stdout => io::stdout().lock().flush(),
        };
        match result {
            Ok(()) => {
                self.bytes_written += self.flush_bytes;
                self.rows_written += self.flush_rows;
                self.flush_bytes = 0;
                self.flush_rows = 0;
                Ok(())
            }
            Err(e) => Err(self.error("cannot flush", &e)),
        }
    }

    fn abort(&mut self) {
        self.flush_bytes = 0;
        self.flush_rows = 0;
        if let Target::File {
            file,
            len,
            flush_start,
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

    fn status(&mut self) -> Vec<(&'static str, String)> {
        vec![
            ("path", json::json_string(&self.display_path())),
            ("bytes_written", self.bytes_written.to_string()),
            ("rows_written", self.rows_written.to_string()),
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
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("goflow-file-{}-{name}", std::process::id()))
    }

    #[test]
    fn appends_and_rolls_back_an_aborted_flush() {
        let path = temp_path("rollback.jsonl");
        std::fs::write(&path, b"old\n").expect("write");
        let mut sink = FileSink::open(&path).expect("open");
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

    #[test]
    fn open_fails_for_a_missing_directory() {
        let path = temp_path("no/such/dir/flows.jsonl");
        assert!(FileSink::open(&path).is_err());
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
