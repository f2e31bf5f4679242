//! The contract between the pipeline and a backend: a pure [`RowEncoder`] per worker turns
//! records into the backend's row bytes; a [`Sink`] on the backend's own thread ships [`Chunk`]s
//! of those rows. The backend thread (see `backend.rs`) owns the queue between them.

use std::fmt;

use bytes::{Bytes, BytesMut};
use goflow_codec::{FlowRecord, UnixMicros};

/// Encodes records into one backend's row format (COPY rows, JSON lines, ...). Pure: no I/O.
/// One per worker per backend.
pub trait RowEncoder: Send + 'static {
    /// Appends one row for `rec` to `out`.
    fn encode(&mut self, rec: &FlowRecord<'_>, out: &mut BytesMut);
}

/// Encoded rows handed from a worker to a backend's writer thread, one per batch.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    /// Concatenated rows, in the encoder's format, without any per-statement framing.
    pub rows: Bytes,
    /// Number of rows in `rows`.
    pub count: u64,
    /// Receive time of the oldest datagram whose records are in this chunk.
    pub oldest_received_us: UnixMicros,
}

/// Ships encoded rows somewhere durable. Runs on its backend's thread and may block.
pub trait Sink: Send + 'static {
    /// Adds a chunk to the current flush; may already send it.
    fn write(&mut self, chunk: &Chunk) -> Result<(), SinkError>;
    /// Makes everything written since the last flush durable. On error nothing of the current
    /// flush is assumed stored: the caller retries with the same chunks.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Drops whatever the current flush holds (after an error, before a retry).
    fn abort(&mut self) {}
    /// Backend-specific status fields for the ops API (e.g. table size), as JSON.
    fn status(&mut self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A sink failure, and whether retrying the same data can help.
#[derive(Debug)]
pub struct SinkError {
    retriable: bool,
    message: String,
}

impl SinkError {
    /// A failure a retry may cure (connection lost, server restarting).
    pub fn retriable(message: impl Into<String>) -> Self {
        SinkError {
            retriable: true,
            message: message.into(),
        }
    }

    /// A failure a retry of the same data cannot cure (incompatible table, bad credentials).
    pub fn fatal(message: impl Into<String>) -> Self {
        SinkError {
            retriable: false,
            message: message.into(),
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}
